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
-- Each policy of a line `has` whose customer holds no policy of its
-- partner `lacks`, once per such pair.
offers AS (
  SELECT h.customer_id, h.policy_no, h.expiry_date, h.premium, pr.lacks
  FROM held h JOIN cross_sell_pairs pr ON pr.has = h.product_line
  -- Only customers telesales may call, before the offers are gathered.
  JOIN reachable r ON r.customer_id = h.customer_id
  WHERE ($product_line = '*' OR pr.lacks = $product_line)
    AND NOT EXISTS (SELECT 1 FROM held o
                    WHERE o.customer_id = h.customer_id AND o.product_line = pr.lacks)
),
-- One row per policy (policy_no is policy's key) with the lines it is the
-- basis of, so a policy offering two lines counts its premium once.
basis AS (
  SELECT customer_id, policy_no, min(expiry_date) AS expiry_date, min(premium) AS premium,
         array_agg(lacks) AS lacks
  FROM offers GROUP BY customer_id, policy_no
),
-- Offers and basis in one pass over `offers` (a CTE named twice is
-- computed twice).
offered AS (
  SELECT customer_id,
         array_to_string(array_sort(array_distinct(flatten(array_agg(lacks)))), ',') AS detail,
         array_to_string(array_sort(array_agg(policy_no)), ',') AS policies,
         min(expiry_date) AS earliest_expiry,
         sum(premium) AS total_premium
  FROM basis GROUP BY customer_id
)
SELECT c.customer_id, c.name, c.phone, o.policies, o.earliest_expiry, o.total_premium,
       s.value_score, s.value_tier, s.churn_risk, s.lifecycle_stage,
       o.detail, c.owning_team AS team, c.region
FROM offered o
JOIN customer c ON c.customer_id = o.customer_id
JOIN scores s ON s.customer_id = o.customer_id AND s.lifecycle_stage = 'active'
WHERE ($team = '*' OR c.owning_team = $team)
  AND ($region = '*' OR c.region = $region)
