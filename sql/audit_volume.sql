-- name: audit_volume
-- description: Per principal since a day: requests, denials, rows and bytes returned, tables read
-- param: since date default 2000-01-01
-- roles: auditor
SELECT principal, role,
       count(*) FILTER (WHERE action NOT LIKE '%.end') AS requests,
       count(*) FILTER (WHERE outcome = 'denied') AS denied,
       sum(rows) FILTER (WHERE action LIKE '%.end') AS rows_returned,
       sum(bytes) FILTER (WHERE action LIKE '%.end') AS bytes_returned,
       array_to_string(array_agg(DISTINCT tables) FILTER (WHERE tables IS NOT NULL), ' ') AS tables_read
FROM audit_log
WHERE day >= CAST($since AS VARCHAR)
GROUP BY principal, role
ORDER BY rows_returned DESC NULLS LAST, principal
