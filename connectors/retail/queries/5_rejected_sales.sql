-- Rejected-sales audit: sales the domain refused, per store and reason (detail: retail_commands).
-- @param code = ''
SELECT
    JSONExtractString(payload, 'store_id') AS store_id,
    code,
    count() AS rejected,
    sum(JSONExtractInt(payload, 'quantity')) AS units,
    uniqExact(principal) AS principals,
    min(issued_at) AS first_at,
    max(issued_at) AS last_at
FROM {database}.retail_commands
WHERE command_type = 'RecordSale' AND outcome = 'rejected'
    AND ({tenant:String} = '' OR tenant = {tenant:String})
    AND ({code:String} = '' OR code = {code:String})
GROUP BY store_id, code
ORDER BY store_id, code
