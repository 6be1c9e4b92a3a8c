-- name: segment_counts
-- description: Golden customers per segment (customer type, value tier, lifecycle stage) in the latest score run on or before a date, with their premium over 36 months and average churn risk
-- param: as_of date default today
-- roles: analyst
SELECT customer_type, value_tier, lifecycle_stage,
       count(*) AS customers,
       sum(premium_3y) AS premium_3y,
       round(avg(churn_risk), 2) AS avg_churn_risk
FROM customer_score
WHERE as_of = (SELECT max(as_of) FROM customer_score WHERE as_of <= $as_of)
GROUP BY customer_type, value_tier, lifecycle_stage
ORDER BY customer_type, value_tier, lifecycle_stage
