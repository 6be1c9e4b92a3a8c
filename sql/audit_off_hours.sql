-- name: audit_off_hours
-- description: Activity outside working hours (before start_hour or from end_hour, UTC, or at weekends) since a day
-- param: since date default 2000-01-01
-- param: start_hour int default 1 range 0..23
-- param: end_hour int default 11 range 1..24
-- roles: auditor
SELECT at, principal, role, action, object, outcome, rows, client
FROM audit_log
WHERE day >= CAST($since AS VARCHAR)
  AND (date_part('hour', at) < $start_hour OR date_part('hour', at) >= $end_hour
       OR date_part('dow', at) IN (0, 6))
ORDER BY at
