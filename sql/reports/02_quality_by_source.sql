-- name: quality_by_source
-- title: Data quality by source system
-- description: The latest quality run as of the period (by its as-of date), per source system and dimension: passed / checked cells of every field checked, by owning team.
-- chart: bar
-- x: source_system
-- series: dimension
-- ratio: passed / checked
-- team: owning_team
WITH latest AS (
  SELECT run_id FROM quality_metric
  WHERE as_of < $period_end
  ORDER BY as_of DESC, run_at DESC, run_id DESC LIMIT 1
)
SELECT source_system,
       dimension,
       owning_team,
       CAST(sum(checked) AS BIGINT) AS checked,
       CAST(sum(passed) AS BIGINT) AS passed,
       round(100.0 * sum(passed) / sum(checked), 2) AS score
FROM quality_metric
WHERE run_id IN (SELECT run_id FROM latest) AND rule <> 'overall' AND checked > 0
GROUP BY 1, 2, 3
ORDER BY source_system, dimension, owning_team
