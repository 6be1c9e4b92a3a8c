-- name: renewals
-- description: The renewal list's candidates: one line per golden customer with active policies expiring in [D, D + within_days] that nothing renews yet, among the customers telesales may call
-- param: as_of date default today
-- param: within_days int default 30 range 0..366
-- param: product_line string default *
-- param: team string default *
-- param: region string default *
-- roles: analyst
--
-- A policy expires unrenewed when its status is active, it has no
-- cancelled_date, its expiry_date is in [D, D + within_days] and no policy
-- names it in renewal_of. `reachable` is reachable.sql at D; `scores` is
-- the customer_score run the list ranks by. A product_line, team or
-- region of * means all. The window is written as bounds on expiry_date
-- itself (D + within_days is a date), so that a scan can skip the files
-- and row groups whose expiry dates all fall outside it.
-- The join to customer_xref is on the two strings, not on source_key:
-- customer_xref is stored in (source_system, source_id) order, so the
-- join's filter from the smaller side skips most of its row groups by
-- their statistics, which a hashed key cannot (measured 2026-12-08: the
-- lists took 8-22 % longer joined on source_key).
WITH expiring AS (
  SELECT x.customer_id, p.policy_no, p.expiry_date, p.premium
  FROM policy p
  JOIN customer_xref x ON x.source_system = p.source_system AND x.source_id = p.source_customer_id
  WHERE p.status = 'active' AND p.cancelled_date IS NULL
    AND p.expiry_date >= $as_of
    AND p.expiry_date <= $as_of + $within_days
    AND ($product_line = '*' OR p.product_line = $product_line)
    AND NOT EXISTS (SELECT 1 FROM policy r WHERE r.renewal_of = p.policy_no)
),
per_customer AS (
  SELECT customer_id,
         array_to_string(array_sort(array_agg(policy_no)), ',') AS policies,
         min(expiry_date) AS earliest_expiry,
         sum(premium) AS total_premium
  FROM expiring GROUP BY customer_id
)
SELECT c.customer_id, c.name, c.phone, e.policies, e.earliest_expiry, e.total_premium,
       s.value_score, s.value_tier, s.churn_risk, s.lifecycle_stage,
       CAST(NULL AS VARCHAR) AS detail, c.owning_team AS team, c.region
FROM per_customer e
JOIN customer c ON c.customer_id = e.customer_id
JOIN reachable r ON r.customer_id = e.customer_id
LEFT JOIN scores s ON s.customer_id = e.customer_id
WHERE ($team = '*' OR c.owning_team = $team)
  AND ($region = '*' OR c.region = $region)
