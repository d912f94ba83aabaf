-- Daily sales per store: number of sales, units and amount.
-- @param day_from = 1970-01-01
-- @param day_to = 2999-12-31
-- @param store_id = ''
SELECT
    toDate(sold_at) AS day,
    store_id,
    count() AS sales,
    sum(quantity) AS units,
    sum(amount) AS amount
FROM {database}.retail_store_stock_events
WHERE event_type = 'SaleRecorded'
    AND ({tenant:String} = '' OR tenant = {tenant:String})
    AND toDate(sold_at) BETWEEN {day_from:Date} AND {day_to:Date}
    AND ({store_id:String} = '' OR store_id = {store_id:String})
GROUP BY day, store_id
ORDER BY day, store_id
