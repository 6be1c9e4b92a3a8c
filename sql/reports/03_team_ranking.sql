-- name: team_ranking
-- title: Data quality ranking of the owning teams
-- description: Each owning team's overall score in its latest run as of the period (the dimensions weighted as [quality.weights]), ranked; the bottom team is flagged, and a team below the threshold escalate_after runs in a row is escalated.
-- chart: bar
-- x: owning_team
-- y: score
-- flag: bottom
-- team: owning_team
WITH team_runs AS (
  SELECT owning_team, run_id, run_at, score,
         row_number() OVER (PARTITION BY owning_team ORDER BY as_of DESC, run_at DESC, run_id DESC) AS recent
  FROM quality_metric
  WHERE rule = 'overall' AND table_name = '*' AND source_system = '*' AND owning_team <> '*'
    AND as_of < $period_end
),
streaks AS (
  SELECT owning_team,
         min(CASE WHEN score >= $threshold THEN recent END) AS first_ok,
         count(*) AS runs
  FROM team_runs GROUP BY owning_team
),
latest AS (
  SELECT t.owning_team, t.score, t.run_id,
         CAST(coalesce(s.first_ok - 1, s.runs) AS BIGINT) AS runs_below
  FROM team_runs t JOIN streaks s ON s.owning_team = t.owning_team
  WHERE t.recent = 1
)
SELECT CAST(rank() OVER (ORDER BY score DESC) AS BIGINT) AS rank,
       owning_team,
       round(score, 2) AS score,
       runs_below,
       runs_below >= $escalate_after AS escalated,
       score = min(score) OVER () AND count(*) OVER () > 1 AS bottom,
       run_id
FROM latest
ORDER BY rank, owning_team
