-- name: value_distribution
-- title: Customer value distribution
-- description: Golden customers by value score band of 10 (the last holds 100) in the latest score run on or before the report date, with their value tier, premium over 36 months and churn risk, by owning team.
-- chart: bar
-- x: band
-- y: customers
-- team: owning_team
SELECT lpad(CAST(CAST(least(floor(s.value_score / 10), 9) * 10 AS BIGINT) AS VARCHAR), 2, '0')
         || '-' || CAST(CAST(least(floor(s.value_score / 10), 9) * 10 + 10 AS BIGINT) AS VARCHAR) AS band,
       c.owning_team,
       count(*) AS customers,
       round(sum(s.premium_3y), 2) AS premium_3y,
       round(avg(s.churn_risk), 2) AS avg_churn_risk
FROM customer_score s LEFT JOIN customer c ON c.customer_id = s.customer_id
WHERE s.as_of = (SELECT max(as_of) FROM customer_score WHERE as_of <= $report_date)
GROUP BY 1, 2
ORDER BY 1, 2
