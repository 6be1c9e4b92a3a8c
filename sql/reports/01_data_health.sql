-- name: data_health
-- title: Customer data health
-- description: Every data-quality dimension's score, day by day (the latest run of each as-of date) up to the period's end: passed / checked cells of every field checked, by owning team. The last point of each line is the period's scorecard.
-- chart: line
-- x: as_of
-- series: dimension
-- ratio: passed / checked
-- team: owning_team
WITH runs AS (
  SELECT run_id,
         row_number() OVER (PARTITION BY as_of ORDER BY run_at DESC, run_id DESC) AS rn
  FROM (SELECT DISTINCT run_id, run_at, as_of FROM quality_metric WHERE as_of < $period_end) r
)
SELECT CAST(as_of AS VARCHAR) AS as_of,
       dimension,
       owning_team,
       CAST(sum(checked) AS BIGINT) AS checked,
       CAST(sum(passed) AS BIGINT) AS passed,
       round(100.0 * sum(passed) / sum(checked), 2) AS score
FROM quality_metric
WHERE run_id IN (SELECT run_id FROM runs WHERE rn = 1) AND rule <> 'overall' AND checked > 0
GROUP BY 1, 2, 3
ORDER BY as_of, dimension, owning_team
