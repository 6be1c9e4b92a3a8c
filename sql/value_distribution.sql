-- name: value_distribution
-- description: Value scores in bands of 10 (the last band holds 100) in the latest score run on or before a date: customers, their tier, premium over 36 months and average churn risk per band
-- param: as_of date default today
-- roles: analyst
-- One band column grouped (its upper bound added after): a second
-- computed key made the aggregate a third slower.
SELECT score_from, score_from + 10 AS score_to,
       count(*) AS customers,
       sum(premium_3y) AS premium_3y,
       round(avg(churn_risk), 2) AS avg_churn_risk
FROM (SELECT CAST(least(floor(value_score / 10), 9) * 10 AS BIGINT) AS score_from,
             premium_3y, churn_risk
      FROM customer_score
      WHERE as_of = (SELECT max(as_of) FROM customer_score WHERE as_of <= $as_of))
GROUP BY score_from
ORDER BY score_from
