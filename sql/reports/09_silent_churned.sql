-- name: silent_churned
-- title: Silent and churned customers
-- description: Golden customers who are silent or churned in the latest score run on or before the report date, by owning team and value tier, with their premium over 36 months (what is at stake).
-- chart: bar
-- x: owning_team
-- series: lifecycle_stage
-- y: customers
-- team: owning_team
SELECT c.owning_team, s.lifecycle_stage, s.value_tier,
       count(*) AS customers,
       round(sum(s.premium_3y), 2) AS premium_3y,
       round(avg(s.churn_risk), 2) AS avg_churn_risk
FROM customer_score s LEFT JOIN customer c ON c.customer_id = s.customer_id
WHERE s.as_of = (SELECT max(as_of) FROM customer_score WHERE as_of <= $report_date)
  AND s.lifecycle_stage IN ('silent', 'churned')
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
