-- name: renewal_pipeline
-- title: Renewal pipeline and renewal rate
-- description: Policies expiring in the period and the three months after it, by month and product line: how many, how many a later policy already renews, and the renewal rate, by owning team.
-- chart: bar
-- x: month
-- series: product_line
-- y: expiring
-- team: owning_team
WITH renewed AS (
  SELECT DISTINCT renewal_of AS policy_no FROM policy WHERE renewal_of IS NOT NULL
)
SELECT to_char(p.expiry_date, '%Y-%m') AS month,
       p.product_line,
       p.owning_team,
       count(*) AS expiring,
       count(r.policy_no) AS renewed,
       round(100.0 * count(r.policy_no) / count(*), 2) AS renewal_rate
FROM policy p LEFT JOIN renewed r ON r.policy_no = p.policy_no
WHERE p.expiry_date >= $period_start AND p.expiry_date < $pipeline_end
  AND p.status <> 'cancelled'
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
