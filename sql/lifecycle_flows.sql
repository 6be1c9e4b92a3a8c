-- name: lifecycle_flows
-- description: Customers moving between lifecycle stages from one score run to a later one (the latest runs on or before each date); (none) is a customer not scored in that run (new, or merged away)
-- param: from date
-- param: to date default today
-- roles: analyst
WITH a AS (
  SELECT customer_id, lifecycle_stage FROM customer_score
  WHERE as_of = (SELECT max(as_of) FROM customer_score WHERE as_of <= $from)
),
b AS (
  SELECT customer_id, lifecycle_stage FROM customer_score
  WHERE as_of = (SELECT max(as_of) FROM customer_score WHERE as_of <= $to)
)
SELECT coalesce(a.lifecycle_stage, '(none)') AS from_stage,
       coalesce(b.lifecycle_stage, '(none)') AS to_stage,
       count(*) AS customers
FROM a FULL OUTER JOIN b ON a.customer_id = b.customer_id
GROUP BY 1, 2
ORDER BY 1, 2
