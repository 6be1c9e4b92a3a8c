-- name: score
-- description: Lifecycle stage, value score and tier, churn risk, segment and product lines of every golden customer as of a date D. `custlake score` writes it to customer_score; the weights and caps are [analytics] in the config.
-- param: as_of date default today
-- param: grace_days int range 0..366
-- param: premium_cap float range 1..1000000000
-- param: tenure_cap_years float range 0.1..100
-- param: lines_cap float range 1..20
-- param: w_premium float range 0..1000
-- param: w_tenure float range 0..1000
-- param: w_lines float range 0..1000
-- param: w_regularity float range 0..1000
-- param: w_loss float range 0..1000
-- param: r_recency float range 0..1000
-- param: r_lapsed float range 0..1000
-- param: r_complaints float range 0..1000
-- param: r_decline float range 0..1000
-- param: r_rejected float range 0..1000
-- param: r_expiring float range 0..1000
-- param: whole bool default true
-- param: from_id string default -
-- param: to_id string default -
-- roles: analyst
--
-- Every source record of a customer counts for its golden customer
-- (customer_xref maps a retired id's records to its survivor). Only facts
-- dated on or before D count (an interaction's instant before the end of D,
-- UTC: event_at < D + 1 day). "(D - N months, D]" starts on the same day N
-- months earlier, clamped to the month's end.
--
-- Lifecycle, the first rule that holds:
--   historical  the steward's termination in effect is more than 24 months before D
--   terminated  a steward's termination is in effect on D (lifecycle_event)
--   potential   no policy with effective_date <= D
--   churned     no activity of any kind (contract, premium, service, any
--               interaction) in (D - 24 months, D]
--   silent      no contract, premium payment or service (inquiry,
--               complaint, visit) in (D - 12 months, D]
--   active      otherwise
-- stage_since is the first day of the current stage: the termination day;
-- for historical the first day more than 24 months after it; for silent and
-- churned the first day the 12- or 24-month window no longer holds the last
-- activity; for active the first contract or the first key activity after
-- the last silent spell; for potential the earliest registration. After a
-- reactivation no stage starts before it.
--
-- Value score 0-100 = 100 x weighted mean of five components in [0, 1]:
--   premium     ln(1 + premium paid in (D - 36 months, D]) / ln(1 + premium_cap), at most 1
--   tenure      days since the first policy's start / (365.25 x tenure_cap_years), at most 1
--   lines       product lines of the policies in force on D / lines_cap, at most 1
--   regularity  policies started in (D - 36 months, D] whose first premium was
--               paid by start + grace_days, over those policies (0 when none)
--   loss        1 - claims paid / premium paid, both over 36 months, floored
--               at 0 (0 without premium)
-- Tier A >= 80, B >= 60, C >= 40, else D.
--
-- Churn risk 0-100 = 100 x weighted mean of six signals in [0, 1]:
--   recency     days since the last activity of any kind / 730, at most 1 (1 with none)
--   lapsed      policies cancelled or lapsed in (D - 12 months, D] / 2, at most 1
--   complaints  complaints in (D - 12 months, D] / 3, at most 1
--   decline     1 - premium of the last 12 months / premium of the 12 before, floored at 0
--   rejected    claims reported in (D - 12 months, D] and rejected / 2, at most 1
--   expiring    1 when a policy in force expires in [D, D + 60 days] and no policy renews it
--
-- A policy is in force on D when it started on or before D, expires on or
-- after D, is not pending and was not cancelled on or before D.
--
-- One pass: with whole = false only the golden customers with
-- from_id <= customer_id <= to_id are scored, and only their source
-- records' facts are read (a policy's first premium and renewal are looked
-- up among all payments and policies). `custlake score` scores a large book
-- in such passes (analytics.score_pass_customers), each the same as its
-- rows of a whole run. A pass's source records and their policies are
-- computed once before it (pass_xref.sql, pass_policies.sql) and read here
-- as the tables `pass_xref` and `pass_policies`. Each pass-only branch
-- below (NOT $whole) is written with the pass's few rows first: a pass is
-- planned with joins in the order written, the first side held in memory.
WITH
xref AS (
  SELECT source_key, customer_id FROM customer_xref WHERE $whole
  UNION ALL
  SELECT source_key, customer_id FROM pass_xref WHERE NOT $whole
),
-- The policies started on or before D, premium payments, interactions and
-- claims of the pass's source records (all of them with whole = true).
mine AS (
  SELECT policy_no, source_key, product_line, status,
         effective_date, expiry_date, cancelled_date
  FROM policy WHERE $whole AND effective_date <= CAST($as_of AS DATE)
  UNION ALL
  SELECT policy_no, source_key, product_line, status,
         effective_date, expiry_date, cancelled_date
  FROM pass_policies WHERE NOT $whole
),
pay AS (
  SELECT source_key, policy_no, CAST(amount AS DOUBLE) AS amount, paid_date
  FROM payment
  WHERE $whole AND payment_type = 'premium' AND paid_date <= CAST($as_of AS DATE)
  UNION ALL
  SELECT y.source_key, y.policy_no, CAST(y.amount AS DOUBLE) AS amount, y.paid_date
  FROM xref x
  JOIN payment y ON y.source_key = x.source_key
  WHERE NOT $whole AND y.payment_type = 'premium' AND y.paid_date <= CAST($as_of AS DATE)
),
events AS (
  SELECT * FROM interaction WHERE $whole
  UNION ALL
  SELECT i.* FROM xref x
  JOIN interaction i ON i.source_key = x.source_key
  WHERE NOT $whole
),
claims AS (
  SELECT * FROM claim WHERE $whole
  UNION ALL
  SELECT l.* FROM xref x
  JOIN claim l ON l.source_key = x.source_key
  WHERE NOT $whole
),
renewed AS (
  SELECT DISTINCT renewal_of AS policy_no FROM policy WHERE $whole AND renewal_of IS NOT NULL
  UNION ALL
  SELECT DISTINCT r.renewal_of AS policy_no FROM (SELECT DISTINCT policy_no FROM mine) m
  JOIN policy r ON r.renewal_of = m.policy_no
  WHERE NOT $whole
),
first_paid AS (
  SELECT policy_no, min(paid_date) AS first_paid FROM payment
  WHERE $whole AND payment_type = 'premium' AND paid_date <= CAST($as_of AS DATE)
  GROUP BY policy_no
  UNION ALL
  SELECT y.policy_no, min(y.paid_date) AS first_paid FROM (SELECT DISTINCT policy_no FROM mine) m
  JOIN payment y ON y.policy_no = m.policy_no
  WHERE NOT $whole AND y.payment_type = 'premium' AND y.paid_date <= CAST($as_of AS DATE)
  GROUP BY y.policy_no
),
-- Every fact on or before D, one stream keyed by its source record:
-- contracts (with what each says about regularity, lapses and expiry),
-- premium payments, interactions (their type as the kind) and claims
-- (kind claim). It is mapped to golden customers once.
source_facts AS (
  SELECT p.source_key, 'contract' AS kind, p.effective_date AS day,
         0.0 AS amount, p.product_line AS line,
         p.status <> 'pending' AND p.expiry_date >= CAST($as_of AS DATE)
           AND (p.cancelled_date IS NULL OR p.cancelled_date > CAST($as_of AS DATE)) AS in_force,
         true AS is_key,
         p.effective_date > CAST($as_of AS DATE) - INTERVAL '36 months' AS due,
         p.effective_date > CAST($as_of AS DATE) - INTERVAL '36 months'
           AND p.first_paid - p.effective_date <= $grace_days AS on_time,
         p.cancelled_date > CAST($as_of AS DATE) - INTERVAL '12 months' AND p.cancelled_date <= CAST($as_of AS DATE) AS lapsed,
         p.status <> 'pending' AND p.expiry_date >= CAST($as_of AS DATE)
           AND (p.cancelled_date IS NULL OR p.cancelled_date > CAST($as_of AS DATE))
           AND p.expiry_date <= CAST($as_of AS DATE) + INTERVAL '60 days' AND rn.policy_no IS NULL AS expiring,
         CAST(NULL AS VARCHAR) AS status
  -- Each policy with its first premium and whether a policy renews it;
  -- written with those (one row a policy at most) first, so that a pass
  -- holds them rather than its policies.
  FROM renewed rn
  RIGHT JOIN (SELECT m.*, f.first_paid FROM first_paid f RIGHT JOIN mine m ON f.policy_no = m.policy_no) p
    ON rn.policy_no = p.policy_no
  UNION ALL
  SELECT source_key, 'premium', paid_date, amount, NULL, false, true,
         false, false, false, false, NULL
  FROM pay
  UNION ALL
  SELECT source_key, event_type, CAST(event_at AS DATE), 0.0, NULL, false,
         event_type IN ('inquiry', 'complaint', 'visit'), false, false, false, false, NULL
  FROM events
  WHERE event_at < CAST($as_of AS DATE) + INTERVAL '1 day'
  UNION ALL
  SELECT source_key, 'claim', report_date,
         CAST(coalesce(paid_amount, 0) AS DOUBLE), NULL, false, false, false, false, false, false, status
  FROM claims
  WHERE report_date <= CAST($as_of AS DATE)
),
-- What each source record's facts add up to; a golden customer's are the
-- sums and extremes over its records.
per_record AS (
  SELECT source_key,
         min(day) FILTER (WHERE kind = 'contract') AS first_contract,
         max(day) FILTER (WHERE is_key) AS last_key,
         max(day) FILTER (WHERE kind <> 'claim') AS last_any,
         count(*) FILTER (WHERE in_force) AS active_policies,
         count(*) FILTER (WHERE due) AS due,
         count(*) FILTER (WHERE on_time) AS on_time,
         count(*) FILTER (WHERE lapsed) AS lapsed_1y,
         max(CASE WHEN expiring THEN 1 ELSE 0 END) AS expiring,
         sum(amount) FILTER (WHERE kind = 'premium' AND day > CAST($as_of AS DATE) - INTERVAL '36 months') AS premium_3y,
         sum(amount) FILTER (WHERE kind = 'premium' AND day > CAST($as_of AS DATE) - INTERVAL '12 months') AS premium_1y,
         sum(amount) FILTER (WHERE kind = 'premium' AND day > CAST($as_of AS DATE) - INTERVAL '24 months'
                               AND day <= CAST($as_of AS DATE) - INTERVAL '12 months') AS premium_prev_1y,
         count(*) FILTER (WHERE kind = 'complaint' AND day > CAST($as_of AS DATE) - INTERVAL '12 months') AS complaints_1y,
         sum(amount) FILTER (WHERE kind = 'claim' AND day > CAST($as_of AS DATE) - INTERVAL '36 months') AS claims_3y,
         count(*) FILTER (WHERE kind = 'claim' AND status = 'rejected'
                            AND day > CAST($as_of AS DATE) - INTERVAL '12 months') AS rejected_1y,
         -- The key days (contract, premium or service), each with the last
         -- day before it that leaves the customer silent the day before:
         -- a key day whose previous one is on or before that starts a run.
         array_agg(named_struct('day', day,
                                'breaks_after', CAST(day - INTERVAL '1 day' - INTERVAL '12 months' AS DATE)))
           FILTER (WHERE is_key) AS key_days
  FROM source_facts GROUP BY source_key
),
summary AS (
  SELECT x.customer_id,
         min(r.first_contract) AS first_contract, max(r.last_key) AS last_key,
         max(r.last_any) AS last_any, sum(r.active_policies) AS active_policies,
         sum(r.due) AS due, sum(r.on_time) AS on_time, sum(r.lapsed_1y) AS lapsed_1y,
         max(r.expiring) AS expiring, sum(r.premium_3y) AS premium_3y,
         sum(r.premium_1y) AS premium_1y, sum(r.premium_prev_1y) AS premium_prev_1y,
         sum(r.complaints_1y) AS complaints_1y, sum(r.claims_3y) AS claims_3y,
         sum(r.rejected_1y) AS rejected_1y,
         -- The start of the customer's last unbroken run of key activity
         -- over all its records.
         last_run_start(flatten(array_agg(r.key_days) FILTER (WHERE r.key_days IS NOT NULL))) AS run_start
  FROM xref x
  JOIN per_record r ON r.source_key = x.source_key
  GROUP BY x.customer_id
),
-- The product lines of the policies in force on D.
held AS (
  SELECT customer_id, array_agg(DISTINCT product_line) AS lines_held
  FROM (
    SELECT x.customer_id, p.product_line, p.status, p.expiry_date, p.cancelled_date
    FROM customer_xref x
    JOIN policy p ON p.source_key = x.source_key
    WHERE $whole AND p.effective_date <= CAST($as_of AS DATE)
    UNION ALL
    -- A pass's policies carry their golden customer.
    SELECT customer_id, product_line, status, expiry_date, cancelled_date
    FROM pass_policies WHERE NOT $whole
  ) p
  WHERE p.status <> 'pending'
    AND p.expiry_date >= CAST($as_of AS DATE)
    AND (p.cancelled_date IS NULL OR p.cancelled_date > CAST($as_of AS DATE))
  GROUP BY customer_id
),
decision AS (
  SELECT customer_id, action, effective_date FROM (
    SELECT customer_id, action, effective_date,
           row_number() OVER (PARTITION BY customer_id ORDER BY effective_date DESC, decided_at DESC, event_id DESC) AS rn
    FROM lifecycle_event WHERE effective_date <= CAST($as_of AS DATE)
  ) WHERE rn = 1
),
registered AS (
  SELECT x.customer_id, min(s.registered_at) AS registered
  FROM xref x
  JOIN source_customer s ON s.source_key = x.source_key
  WHERE s.registered_at <= CAST($as_of AS DATE)
  GROUP BY x.customer_id
),
base AS (
  SELECT c.customer_id, c.customer_type,
         d.action, d.effective_date AS decided,
         CASE WHEN d.action = 'reactivate' THEN d.effective_date END AS reactivated,
         m.first_contract, coalesce(m.active_policies, 0) AS active_policies,
         coalesce(array_length(h.lines_held), 0) AS lines,
         array_to_string(array_sort(h.lines_held), ',') AS product_lines,
         coalesce(m.due, 0) AS due, coalesce(m.on_time, 0) AS on_time,
         coalesce(m.lapsed_1y, 0) AS lapsed_1y, coalesce(m.expiring, 0) AS expiring,
         m.last_key, m.run_start, m.last_any,
         coalesce(m.premium_3y, 0) AS premium_3y, coalesce(m.premium_1y, 0) AS premium_1y,
         coalesce(m.premium_prev_1y, 0) AS premium_prev_1y,
         coalesce(m.complaints_1y, 0) AS complaints_1y,
         coalesce(m.claims_3y, 0) AS claims_3y, coalesce(m.rejected_1y, 0) AS rejected_1y,
         r.registered
  FROM customer c
  LEFT JOIN summary m ON m.customer_id = c.customer_id
  LEFT JOIN held h ON h.customer_id = c.customer_id
  LEFT JOIN decision d ON d.customer_id = c.customer_id
  LEFT JOIN registered r ON r.customer_id = c.customer_id
  WHERE c.status = 'active'
    AND ($whole OR (c.customer_id >= $from_id AND c.customer_id <= $to_id))
),
staged AS (
  SELECT *,
    CASE
      WHEN action = 'terminate' AND decided < CAST($as_of AS DATE) - INTERVAL '24 months' THEN 'historical'
      WHEN action = 'terminate' THEN 'terminated'
      WHEN first_contract IS NULL THEN 'potential'
      WHEN last_any IS NULL OR last_any <= CAST($as_of AS DATE) - INTERVAL '24 months' THEN 'churned'
      WHEN last_key IS NULL OR last_key <= CAST($as_of AS DATE) - INTERVAL '12 months' THEN 'silent'
      ELSE 'active'
    END AS lifecycle_stage,
    -- The first day D' with D' - 24 months >= last_any (one day later when
    -- adding the months was clamped to a month's end), likewise for 12.
    CASE WHEN last_any + INTERVAL '24 months' - INTERVAL '24 months' < last_any
         THEN last_any + INTERVAL '24 months' + INTERVAL '1 day'
         ELSE last_any + INTERVAL '24 months' END AS churned_from,
    CASE WHEN last_key + INTERVAL '12 months' - INTERVAL '12 months' < last_key
         THEN last_key + INTERVAL '12 months' + INTERVAL '1 day'
         ELSE last_key + INTERVAL '12 months' END AS silent_from,
    CASE WHEN decided + INTERVAL '1 day' + INTERVAL '24 months' - INTERVAL '24 months'
              < decided + INTERVAL '1 day'
         THEN decided + INTERVAL '1 day' + INTERVAL '24 months' + INTERVAL '1 day'
         ELSE decided + INTERVAL '1 day' + INTERVAL '24 months' END AS historical_from,
    least(1.0, ln(1.0 + premium_3y) / ln(1.0 + $premium_cap)) AS v_premium,
    CASE WHEN first_contract IS NULL THEN 0.0
         ELSE least(1.0, (CAST($as_of AS DATE) - first_contract) / (365.25 * $tenure_cap_years)) END AS v_tenure,
    least(1.0, lines / $lines_cap) AS v_lines,
    CASE WHEN due = 0 THEN 0.0 ELSE CAST(on_time AS DOUBLE) / due END AS v_regularity,
    CASE WHEN premium_3y > 0 THEN greatest(0.0, 1.0 - claims_3y / premium_3y) ELSE 0.0 END AS v_loss,
    CASE WHEN last_any IS NULL THEN 1.0 ELSE least(1.0, (CAST($as_of AS DATE) - last_any) / 730.0) END AS c_recency,
    least(1.0, lapsed_1y / 2.0) AS c_lapsed,
    least(1.0, complaints_1y / 3.0) AS c_complaints,
    CASE WHEN premium_prev_1y > 0 THEN greatest(0.0, 1.0 - premium_1y / premium_prev_1y)
         ELSE 0.0 END AS c_decline,
    least(1.0, rejected_1y / 2.0) AS c_rejected,
    CAST(expiring AS DOUBLE) AS c_expiring
  FROM base
),
scored AS (
  SELECT *,
    round(100.0 * ($w_premium * v_premium + $w_tenure * v_tenure + $w_lines * v_lines
                   + $w_regularity * v_regularity + $w_loss * v_loss)
          / ($w_premium + $w_tenure + $w_lines + $w_regularity + $w_loss), 2) AS value_score,
    round(100.0 * ($r_recency * c_recency + $r_lapsed * c_lapsed + $r_complaints * c_complaints
                   + $r_decline * c_decline + $r_rejected * c_rejected + $r_expiring * c_expiring)
          / ($r_recency + $r_lapsed + $r_complaints + $r_decline + $r_rejected + $r_expiring), 2)
      AS churn_risk
  FROM staged
)
SELECT customer_id,
       CAST($as_of AS DATE) AS as_of,
       customer_type,
       lifecycle_stage,
       CAST(CASE lifecycle_stage
         WHEN 'historical' THEN CAST(historical_from AS DATE)
         WHEN 'terminated' THEN decided
         WHEN 'potential' THEN greatest(registered, reactivated)
         WHEN 'churned' THEN greatest(CAST(churned_from AS DATE), reactivated)
         WHEN 'silent' THEN greatest(CAST(silent_from AS DATE), reactivated)
         ELSE greatest(first_contract, run_start, reactivated)
       END AS DATE) AS stage_since,
       value_score,
       CASE WHEN value_score >= 80 THEN 'A' WHEN value_score >= 60 THEN 'B'
            WHEN value_score >= 40 THEN 'C' ELSE 'D' END AS value_tier,
       churn_risk,
       customer_type || '/' ||
         CASE WHEN value_score >= 80 THEN 'A' WHEN value_score >= 60 THEN 'B'
              WHEN value_score >= 40 THEN 'C' ELSE 'D' END
         || '/' || lifecycle_stage AS segment,
       coalesce(product_lines, '') AS product_lines,
       CAST(premium_3y AS DECIMAL(18, 2)) AS premium_3y,
       active_policies
FROM scored
ORDER BY customer_id
