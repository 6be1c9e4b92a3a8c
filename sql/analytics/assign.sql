-- name: assign
-- description: A list's lines in priority order, each assigned to a telesales agent of the customer's team in proportion to the agents' capacity
-- roles: analyst
--
-- `candidates` is a list's candidates (renewals.sql, cross_sell.sql or
-- churn.sql). Lines are ordered by value score, then churn risk (both
-- descending, unknown last), then customer id. Within a team, the k-th
-- line goes to the k-th slot: each active agent of the team with capacity
-- c has slots 1..c, and slot s of such an agent comes at s / c (ties by
-- agent id), so agents fill in proportion to their capacity and a list
-- shorter than the team's capacity is spread over all of them. Lines
-- beyond the team's capacity, or of a team without an active agent, stay
-- on the list unassigned (agent_id NULL).
WITH ranked AS (
  SELECT *, row_number() OVER (
    ORDER BY value_score DESC NULLS LAST, churn_risk DESC NULLS LAST, customer_id) AS line
  FROM candidates
),
team_ranked AS (
  SELECT *, row_number() OVER (PARTITION BY team ORDER BY line) AS k FROM ranked
),
slots AS (
  SELECT agent_id, team,
         row_number() OVER (PARTITION BY team ORDER BY CAST(slot AS DOUBLE) / capacity, agent_id) AS k
  FROM (SELECT agent_id, team, capacity, unnest(generate_series(1, capacity)) AS slot
        FROM agent WHERE active AND capacity > 0)
)
SELECT r.line, r.customer_id, r.name, r.phone, r.policies, r.earliest_expiry,
       r.total_premium, r.value_score, r.value_tier, r.churn_risk, r.lifecycle_stage,
       r.detail, r.team, r.region, s.agent_id
FROM team_ranked r
LEFT JOIN slots s ON s.team = r.team AND s.k = r.k
ORDER BY r.line
