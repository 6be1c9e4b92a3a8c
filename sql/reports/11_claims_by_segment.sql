-- name: claims_by_segment
-- title: Claims by customer segment
-- description: Claims reported in the twelve months to the period's end, by the customer's segment (type / value tier / lifecycle stage) in the latest score run on or before the report date: claims, amounts claimed and paid, by owning team.
-- chart: bar
-- x: segment
-- y: claims
-- team: owning_team
SELECT coalesce(s.segment, 'unscored') AS segment,
       c.owning_team,
       count(*) AS claims,
       round(sum(k.claimed_amount), 2) AS claimed,
       round(sum(k.paid_amount), 2) AS paid
FROM customer_claim k
LEFT JOIN customer c ON c.customer_id = k.customer_id
LEFT JOIN customer_score s ON s.customer_id = k.customer_id
  AND s.as_of = (SELECT max(as_of) FROM customer_score WHERE as_of <= $report_date)
WHERE k.report_date >= $year_start AND k.report_date < $period_end
GROUP BY 1, 2
ORDER BY 1, 2
