-- name: quality_work_orders
-- description: Open rectification work orders: records scoring below the threshold in the latest run that checked them, by owning team, oldest first, with every failing field
-- param: team string default *
-- param: threshold float default 90 range 0..100
-- roles: analyst, steward
--
-- Each record field and rule's latest row among completed runs (runs that
-- stored their metrics); open ones of records whose score is below the
-- threshold make the work order. age_days counts from the run that first
-- found the oldest of its failures.
-- A run that checked a rule on every record (sample rate 1) wrote a row
-- for each of that rule's work orders, so rows before the oldest of the
-- rules' latest such runs are never the latest and are not read (when
-- every rule has had one).
WITH cuts AS (
  SELECT max(CASE WHEN sample_rate >= 1.0 THEN run_at END) AS cut
  FROM quality_metric
  WHERE sample_rate IS NOT NULL
  GROUP BY table_name, field, rule
),
latest AS (
  SELECT table_name, record_key, field, rule, dimension, source_system, owning_team,
         agent_id, record_score, status, first_seen_at,
         row_number() OVER (PARTITION BY table_name, record_key, field, rule ORDER BY run_at DESC) AS rn
  FROM quality_issue
  WHERE run_id IN (SELECT DISTINCT run_id FROM quality_metric)
    AND run_at >= coalesce((SELECT CASE WHEN count(*) = count(cut) THEN min(cut) END FROM cuts),
                           CAST('1970-01-01T00:00:00Z' AS TIMESTAMP))
)
SELECT owning_team, table_name, record_key, source_system, agent_id,
       min(record_score) AS record_score,
       array_to_string(array_sort(array_agg(field || ' ' || rule)), ', ') AS failing,
       min(first_seen_at) AS first_seen_at,
       CAST(date_part('day', now() - min(first_seen_at)) AS BIGINT) AS age_days
FROM latest
WHERE rn = 1 AND status = 'open' AND record_score < $threshold
  AND ($team = '*' OR owning_team = $team)
GROUP BY owning_team, table_name, record_key, source_system, agent_id
ORDER BY owning_team, age_days DESC, record_score, table_name, record_key
