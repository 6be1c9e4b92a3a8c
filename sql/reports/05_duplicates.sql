-- name: duplicates
-- title: Duplicates and merge activity
-- description: Merges, splits and undos by month over the twelve months to the period's end, and suspected duplicate groups found by month with their status, by the owning team of the customer concerned.
-- chart: bar
-- x: month
-- series: activity
-- y: events
-- team: owning_team
SELECT to_char(m.at, '%Y-%m') AS month,
       m.event_type AS activity,
       c.owning_team,
       count(*) AS events
FROM merge_event m LEFT JOIN customer c ON c.customer_id = m.surviving_id
WHERE CAST(m.at AS DATE) < $period_end AND CAST(m.at AS DATE) >= $year_start
GROUP BY 1, 2, 3
UNION ALL
SELECT to_char(g.created_at, '%Y-%m') AS month,
       'suspects ' || g.status AS activity,
       c.owning_team,
       count(DISTINCT g.group_id) AS events
FROM suspect_group g LEFT JOIN customer c ON c.customer_id = g.customer_id
WHERE CAST(g.created_at AS DATE) < $period_end AND CAST(g.created_at AS DATE) >= $year_start
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
