-- name: policies_expiring
-- description: Active policies expiring within the next N days after a date, with the holder's contact fields, soonest first
-- param: as_of date default today
-- param: days int default 30 range 0..36600
-- roles: analyst, telesales
SELECT p.policy_no, p.product_line, p.expiry_date, p.premium, p.agent_id,
       c.name, c.phone, c.email, c.address
FROM policy p
JOIN source_customer c
  ON c.source_key = p.source_key
WHERE p.status = 'active'
  AND p.expiry_date >= $as_of
  AND p.expiry_date < $as_of + CAST(CAST($days AS VARCHAR) || ' days' AS INTERVAL)
ORDER BY p.expiry_date, p.policy_no
