-- name: data_health
-- title: Customer data health
-- description: Every data-quality dimension's score, run by run up to the period's end: passed / checked cells of every field checked, by owning team. The last point of each line is the period's scorecard.
-- chart: line
-- x: run
-- series: dimension
-- ratio: passed / checked
-- team: owning_team
SELECT to_char(run_at, '%Y-%m-%d %H:%M') AS run,
       dimension,
       owning_team,
       CAST(sum(checked) AS BIGINT) AS checked,
       CAST(sum(passed) AS BIGINT) AS passed,
       round(100.0 * sum(passed) / sum(checked), 2) AS score
FROM quality_metric
WHERE rule <> 'overall' AND checked > 0 AND CAST(run_at AS DATE) < $period_end
GROUP BY 1, 2, 3
ORDER BY run, dimension, owning_team
