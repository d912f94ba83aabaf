-- Purchase orders per supplier: raised, still open, delivered, late (reordered), cancelled.
-- @param supplier_id = ''
SELECT
    o.supplier_id AS supplier_id,
    any(s.name) AS supplier,
    count() AS orders,
    countIf(o.status = 'open') AS open,
    countIf(o.status = 'delivered') AS delivered,
    countIf(o.reorders > 0) AS late,
    countIf(o.status = 'cancelled') AS cancelled,
    sumIf(o.quantity, o.status = 'delivered') AS units_delivered
FROM {database}.retail_purchase_order_state_last AS o FINAL
LEFT JOIN (
    SELECT supplier_id, name FROM {database}.retail_supplier_state_last FINAL
    WHERE {tenant:String} = '' OR tenant = {tenant:String}
) AS s ON s.supplier_id = o.supplier_id
WHERE ({tenant:String} = '' OR o.tenant = {tenant:String})
    AND ({supplier_id:String} = '' OR o.supplier_id = {supplier_id:String})
GROUP BY supplier_id
ORDER BY supplier_id
