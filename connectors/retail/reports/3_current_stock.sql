-- Current stock per store and item (the latest state of every store_stock aggregate).
SELECT store_id, item_id, on_hand, sold_amount
FROM {database}.retail_store_stock_state_last FINAL
ORDER BY store_id, item_id
