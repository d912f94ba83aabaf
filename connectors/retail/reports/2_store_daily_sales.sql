-- Daily sales per store: number of sales, units and amount.
SELECT
    toDate(sold_at) AS day,
    store_id,
    count() AS sales,
    sum(quantity) AS units,
    sum(amount) AS amount
FROM {database}.retail_store_stock_events
WHERE event_type = 'SaleRecorded'
GROUP BY day, store_id
ORDER BY day, store_id
