-- name: audit_denials
-- description: Every refused request (no or bad credential, action not permitted, over the rate) since a day
-- param: since date default 2000-01-01
-- roles: auditor
SELECT at, principal, role, action, object, status, code, client, request_id
FROM audit_log
WHERE day >= CAST($since AS VARCHAR) AND outcome = 'denied'
ORDER BY at
