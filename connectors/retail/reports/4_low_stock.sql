-- Low-stock items: fewer than 5 units on hand, with the item's name from the catalogue.
SELECT s.store_id AS store_id, s.item_id AS item_id, i.name AS item, s.on_hand AS on_hand
FROM {database}.retail_store_stock_state_last AS s FINAL
LEFT JOIN (SELECT item_id, name FROM {database}.retail_item_state_last FINAL) AS i
    ON i.item_id = s.item_id
WHERE s.on_hand < 5
ORDER BY on_hand, store_id, item_id
