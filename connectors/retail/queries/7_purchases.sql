-- Customer purchases: their status, the invoice's and the delivery's (shipped, returned, not shipped).
-- @param status = ''
SELECT
    p.purchase_id AS purchase_id,
    p.customer_id AS customer_id,
    p.store_id AS store_id,
    p.item_id AS item_id,
    p.quantity AS quantity,
    p.amount AS amount,
    p.status AS status,
    p.reason AS reason,
    i.status AS invoice,
    if(sh.purchase_id = '', 'not shipped', if(p.status = 'cancelled', 'returned', 'shipped'))
        AS delivery
FROM {database}.retail_purchase_state_last AS p FINAL
LEFT JOIN (
    SELECT purchase_id, status FROM {database}.retail_invoice_state_last FINAL
    WHERE {tenant:String} = '' OR tenant = {tenant:String}
) AS i ON i.purchase_id = p.purchase_id
LEFT JOIN (
    SELECT DISTINCT assumeNotNull(purchase_id) AS purchase_id
    FROM {database}.retail_store_stock_events
    WHERE event_type = 'PurchaseShipped' AND ({tenant:String} = '' OR tenant = {tenant:String})
) AS sh ON sh.purchase_id = p.purchase_id
WHERE ({tenant:String} = '' OR p.tenant = {tenant:String})
    AND ({status:String} = '' OR p.status = {status:String})
ORDER BY purchase_id
