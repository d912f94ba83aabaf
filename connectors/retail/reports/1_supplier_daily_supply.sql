-- Supplier-wise daily supply: deliveries and units received per supplier and day.
SELECT
    toDate(e.received_at) AS day,
    e.supplier_id AS supplier_id,
    any(s.name) AS supplier,
    count() AS deliveries,
    sum(e.quantity) AS units
FROM {database}.retail_store_stock_events AS e
LEFT JOIN (SELECT supplier_id, name FROM {database}.retail_supplier_state_last FINAL) AS s
    ON s.supplier_id = e.supplier_id
WHERE e.event_type = 'SupplyReceived'
GROUP BY day, supplier_id
ORDER BY day, supplier_id
