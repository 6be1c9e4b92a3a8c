-- name: work_orders
-- title: Open rectification work orders by team and age
-- description: Records scoring below the threshold in the latest run as of the period that checked them, still open, by owning team and how long ago their oldest failure was first found (at the report date).
-- chart: bar
-- x: owning_team
-- series: age
-- y: orders
-- team: owning_team
-- A run that checked a rule on every record (sample rate 1) wrote a row
-- for each of that rule's work orders, open again or fixed, so no older
-- row of the rule is the latest: rows before the oldest of the rules'
-- latest such runs are not read (when every rule has had one), and the
-- report does not grow with the history.
WITH cuts AS (
  SELECT max(CASE WHEN sample_rate >= 1.0 THEN run_at END) AS cut
  FROM quality_metric
  WHERE sample_rate IS NOT NULL AND as_of < $period_end
  GROUP BY table_name, field, rule
),
latest AS (
  SELECT table_name, record_key, owning_team, record_score, status, first_seen_at,
         row_number() OVER (PARTITION BY table_name, record_key, field, rule ORDER BY run_at DESC) AS rn
  FROM quality_issue
  WHERE run_id IN (SELECT DISTINCT run_id FROM quality_metric WHERE as_of < $period_end)
    AND run_at >= coalesce((SELECT CASE WHEN count(*) = count(cut) THEN min(cut) END FROM cuts),
                           CAST('1970-01-01T00:00:00Z' AS TIMESTAMP))
),
orders AS (
  SELECT owning_team, table_name, record_key,
         min(record_score) AS record_score,
         CAST(min(first_seen_at) AS DATE) AS first_seen
  FROM latest
  WHERE rn = 1 AND status = 'open' AND record_score < $threshold
  GROUP BY owning_team, table_name, record_key
),
aged AS (
  SELECT *, greatest(CAST(date_part('day', CAST($report_date AS TIMESTAMP) - CAST(first_seen AS TIMESTAMP)) AS BIGINT), 0) AS age_days
  FROM orders
)
SELECT owning_team,
       CASE WHEN age_days <= 7 THEN '0-7 days' WHEN age_days <= 30 THEN '8-30 days'
            WHEN age_days <= 90 THEN '31-90 days' ELSE 'over 90 days' END AS age,
       count(*) AS orders,
       round(min(record_score), 2) AS lowest_score,
       CAST(max(age_days) AS BIGINT) AS oldest_days
FROM aged
GROUP BY 1, 2
ORDER BY owning_team, min(age_days)
