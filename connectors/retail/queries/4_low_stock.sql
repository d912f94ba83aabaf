-- Low-stock items: fewer than `threshold` units on hand, with the item's name from the catalogue.
-- @param threshold = 5
SELECT s.store_id AS store_id, s.item_id AS item_id, i.name AS item, s.on_hand AS on_hand
FROM {database}.retail_store_stock_state_last AS s FINAL
LEFT JOIN (
    SELECT item_id, name FROM {database}.retail_item_state_last FINAL
    WHERE {tenant:String} = '' OR tenant = {tenant:String}
) AS i ON i.item_id = s.item_id
WHERE s.on_hand < {threshold:Int64}
    AND ({tenant:String} = '' OR s.tenant = {tenant:String})
ORDER BY on_hand, store_id, item_id
