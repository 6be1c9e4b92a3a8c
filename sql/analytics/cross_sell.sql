-- name: cross_sell
-- description: The cross-sell list's candidates: active customers holding a product line of a configured pair and none of its partner, among the customers telesales may call
-- param: as_of date default today
-- param: product_line string default *
-- param: team string default *
-- param: region string default *
-- roles: analyst
--
-- `cross_sell_pairs` (has, lacks) is [[analytics.cross_sell]] of the
-- config. A customer holding a policy in force on D of line `has` and none
-- of line `lacks` is offered `lacks` (detail: the lines offered, sorted);
-- the line's policies are their in-force policies of the `has` lines. The
-- customer's stage in `scores` must be active. product_line restricts the
-- lines offered.
WITH held AS (
  -- in_force.sql at D: the policies in force with their golden customers.
  SELECT customer_id, product_line, policy_no, expiry_date, premium FROM in_force
),
offers AS (
  SELECT DISTINCT h.customer_id, pr.has, pr.lacks
  FROM held h JOIN cross_sell_pairs pr ON pr.has = h.product_line
  WHERE ($product_line = '*' OR pr.lacks = $product_line)
    AND NOT EXISTS (SELECT 1 FROM held o
                    WHERE o.customer_id = h.customer_id AND o.product_line = pr.lacks)
),
offered AS (
  SELECT customer_id, array_to_string(array_sort(array_distinct(array_agg(lacks))), ',') AS detail
  FROM offers GROUP BY customer_id
),
basis AS (
  SELECT h.customer_id,
         array_to_string(array_sort(array_agg(h.policy_no)), ',') AS policies,
         min(h.expiry_date) AS earliest_expiry,
         sum(h.premium) AS total_premium
  FROM held h
  WHERE EXISTS (SELECT 1 FROM offers o WHERE o.customer_id = h.customer_id AND o.has = h.product_line)
  GROUP BY h.customer_id
)
SELECT c.customer_id, c.name, c.phone, b.policies, b.earliest_expiry, b.total_premium,
       s.value_score, s.value_tier, s.churn_risk, s.lifecycle_stage,
       o.detail, c.owning_team AS team, c.region
FROM offered o
JOIN basis b ON b.customer_id = o.customer_id
JOIN customer c ON c.customer_id = o.customer_id
JOIN reachable r ON r.customer_id = o.customer_id
JOIN scores s ON s.customer_id = o.customer_id AND s.lifecycle_stage = 'active'
WHERE ($team = '*' OR c.owning_team = $team)
  AND ($region = '*' OR c.region = $region)
