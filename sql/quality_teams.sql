-- name: quality_teams
-- description: Owning teams ranked by their overall data-quality score in their latest run, the bottom team flagged, with how many runs in a row each has scored below the threshold (escalated at escalate_after)
-- param: threshold float default 90 range 0..100
-- param: escalate_after int default 3 range 1..1000
-- roles: analyst, steward
--
-- A team's overall score is the weighted mean of its dimensions' scores
-- (quality_metric rows with rule 'overall', table '*' and source '*').
-- runs_below counts the team's most recent runs, newest first, up to the
-- first one at or above the threshold.
WITH team_runs AS (
  SELECT owning_team, run_id, run_at, score,
         row_number() OVER (PARTITION BY owning_team ORDER BY run_at DESC, run_id DESC) AS recent
  FROM quality_metric
  WHERE rule = 'overall' AND table_name = '*' AND source_system = '*' AND owning_team <> '*'
),
streaks AS (
  SELECT owning_team,
         min(CASE WHEN score >= $threshold THEN recent END) AS first_ok,
         count(*) AS runs
  FROM team_runs GROUP BY owning_team
),
latest AS (
  SELECT t.owning_team, t.score, t.run_id, t.run_at,
         CAST(coalesce(s.first_ok - 1, s.runs) AS BIGINT) AS runs_below
  FROM team_runs t JOIN streaks s ON s.owning_team = t.owning_team
  WHERE t.recent = 1
)
SELECT CAST(rank() OVER (ORDER BY score DESC) AS BIGINT) AS rank,
       owning_team, score, runs_below,
       runs_below >= $escalate_after AS escalated,
       score = min(score) OVER () AND count(*) OVER () > 1 AS bottom,
       run_id, run_at
FROM latest
ORDER BY rank, owning_team
