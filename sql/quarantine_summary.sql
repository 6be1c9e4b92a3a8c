-- name: quarantine_summary
-- description: Rejected rows by source system, entity and reason code
-- param: source string default all
-- roles: analyst, steward
SELECT source_system, entity, reason, count(*) AS rows
FROM quarantine
WHERE $source = 'all' OR source_system = $source
GROUP BY source_system, entity, reason
ORDER BY source_system, entity, rows DESC
