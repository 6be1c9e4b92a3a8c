-- name: new_customers
-- title: New customers by month and channel
-- description: Golden customers by the month of their first policy's start, over the twelve months to the period's end, by the channel that policy was sold through, by owning team.
-- chart: bar
-- x: month
-- series: channel
-- y: customers
-- team: owning_team
WITH first_policy AS (
  SELECT customer_id, effective_date, channel,
         row_number() OVER (PARTITION BY customer_id ORDER BY effective_date, policy_no) AS rn
  FROM customer_policy
  WHERE customer_id IS NOT NULL
)
SELECT to_char(f.effective_date, '%Y-%m') AS month,
       coalesce(f.channel, 'unknown') AS channel,
       c.owning_team,
       count(*) AS customers
FROM first_policy f JOIN customer c ON c.customer_id = f.customer_id
WHERE f.rn = 1 AND f.effective_date >= $year_start AND f.effective_date < $period_end
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
