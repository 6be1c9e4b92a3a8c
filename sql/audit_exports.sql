-- name: audit_exports
-- description: Bulk exports: every result of at least min_rows rows (or in a file format) since a day, largest first
-- param: since date default 2000-01-01
-- param: min_rows int default 10000 range 0..1000000000
-- roles: auditor
SELECT at, principal, role, action, object, format, rows, bytes, tables, client, request_id
FROM audit_log
WHERE day >= CAST($since AS VARCHAR)
  AND action LIKE '%.end'
  AND (rows >= $min_rows OR format IN ('csv', 'parquet', 'arrow'))
ORDER BY rows DESC NULLS LAST, at
