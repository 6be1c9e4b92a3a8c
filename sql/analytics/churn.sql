-- name: churn
-- description: The churn list's candidates: value tier A or B customers who are silent or whose churn risk is at least the threshold, among the customers telesales may call
-- param: as_of date default today
-- param: churn_threshold float range 0..100
-- param: product_line string default *
-- param: team string default *
-- param: region string default *
-- roles: analyst
--
-- Stage, tier and risk come from `scores`; detail says why (silent, risk,
-- or both). The line's policies are those in force on D (none for a
-- silent customer whose cover ended); product_line keeps customers holding
-- that line in force.
WITH flagged AS (
  SELECT * FROM scores s
  WHERE s.value_tier IN ('A', 'B')
    AND (s.lifecycle_stage = 'silent' OR s.churn_risk >= $churn_threshold)
    AND s.lifecycle_stage NOT IN ('terminated', 'historical')
),
held AS (
  -- in_force.sql at D: the policies in force with their golden customers,
  -- of the flagged customers only (the policies of the others are never
  -- listed).
  SELECT customer_id, product_line, policy_no, expiry_date, premium FROM in_force
  WHERE customer_id IN (SELECT customer_id FROM flagged)
),
per_customer AS (
  SELECT customer_id,
         array_to_string(array_sort(array_agg(policy_no)), ',') AS policies,
         min(expiry_date) AS earliest_expiry,
         sum(premium) AS total_premium,
         max(CASE WHEN product_line = $product_line THEN 1 ELSE 0 END) AS has_line
  FROM held GROUP BY customer_id
)
SELECT c.customer_id, c.name, c.phone, h.policies, h.earliest_expiry, h.total_premium,
       s.value_score, s.value_tier, s.churn_risk, s.lifecycle_stage,
       CASE WHEN s.lifecycle_stage = 'silent' AND s.churn_risk >= $churn_threshold THEN 'silent,risk'
            WHEN s.lifecycle_stage = 'silent' THEN 'silent'
            ELSE 'risk' END AS detail,
       c.owning_team AS team, c.region
FROM flagged s
JOIN customer c ON c.customer_id = s.customer_id
JOIN reachable r ON r.customer_id = s.customer_id
LEFT JOIN per_customer h ON h.customer_id = s.customer_id
WHERE ($product_line = '*' OR h.has_line = 1)
  AND ($team = '*' OR c.owning_team = $team)
  AND ($region = '*' OR c.region = $region)
