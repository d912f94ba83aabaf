-- Current stock per store and item (the latest state of every store_stock aggregate).
-- @param store_id = ''
SELECT store_id, item_id, on_hand, sold_amount
FROM {database}.retail_store_stock_state_last FINAL
WHERE ({tenant:String} = '' OR tenant = {tenant:String})
    AND ({store_id:String} = '' OR store_id = {store_id:String})
ORDER BY store_id, item_id
