-- Supplier-wise daily supply: deliveries and units received per supplier and day.
-- @param day_from = 1970-01-01
-- @param day_to = 2999-12-31
-- @param supplier_id = ''
SELECT
    toDate(e.received_at) AS day,
    e.supplier_id AS supplier_id,
    any(s.name) AS supplier,
    count() AS deliveries,
    sum(e.quantity) AS units
FROM {database}.retail_store_stock_events AS e
LEFT JOIN (
    SELECT supplier_id, name FROM {database}.retail_supplier_state_last FINAL
    WHERE {tenant:String} = '' OR tenant = {tenant:String}
) AS s ON s.supplier_id = e.supplier_id
WHERE e.event_type = 'SupplyReceived'
    AND ({tenant:String} = '' OR e.tenant = {tenant:String})
    AND toDate(e.received_at) BETWEEN {day_from:Date} AND {day_to:Date}
    AND ({supplier_id:String} = '' OR e.supplier_id = {supplier_id:String})
GROUP BY day, supplier_id
ORDER BY day, supplier_id
