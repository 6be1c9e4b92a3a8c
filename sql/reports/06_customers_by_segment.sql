-- name: customers_by_segment
-- title: Customers by type, lifecycle stage and value tier
-- description: Golden customers in the latest score run on or before the report date, by customer type, lifecycle stage and value tier, by owning team.
-- chart: bar
-- x: lifecycle_stage
-- series: customer_type
-- y: customers
-- team: owning_team
SELECT s.customer_type, s.lifecycle_stage, s.value_tier, c.owning_team,
       count(*) AS customers
FROM customer_score s LEFT JOIN customer c ON c.customer_id = s.customer_id
WHERE s.as_of = (SELECT max(as_of) FROM customer_score WHERE as_of <= $report_date)
GROUP BY 1, 2, 3, 4
ORDER BY 1, 2, 3, 4
