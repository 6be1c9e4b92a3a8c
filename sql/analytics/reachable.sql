-- name: reachable
-- description: The golden customers telesales may call on a date D: current consent to telesales calls, not terminated, not a minor
-- param: as_of date default today
-- roles: analyst
--
-- Consent: over all of the customer's source records, the latest consent
-- record with purpose telesales_call recorded on or before the end of D
-- (UTC) is a grant. A withdrawal takes effect the same day and wins a tie
-- with a grant recorded at the same instant. ("On or before the end of D"
-- is written recorded_at < D + 1 day: the timestamps compared as they are
-- stored, which their files' statistics can answer, rather than each cast
-- to a date.)
-- Not terminated or historical: no steward termination in effect on D.
-- Not a minor: an individual whose 18th birthday (birth_date + 18 years;
-- from 29 February, 28 February) is after D is left out (no birth date:
-- the age is unknown and the customer stays). Only someone born in the
-- 19 years before D can be one: that bound is a constant, tested first,
-- so the date arithmetic runs for those rows alone.
-- The join to customer_xref is on the two strings, not on source_key:
-- customer_xref is stored in (source_system, source_id) order, so the
-- join's filter from the smaller side skips most of its row groups by
-- their statistics, which a hashed key cannot (measured 2026-12-08: the
-- lists took 8-22 % longer joined on source_key).
WITH consent_now AS (
  -- The latest record is a grant: a grant later than every withdrawal
  -- (a withdrawal at the same instant wins).
  SELECT x.customer_id
  FROM consent c
  JOIN customer_xref x ON x.source_system = c.source_system AND x.source_id = c.source_customer_id
  WHERE c.purpose = 'telesales_call' AND c.recorded_at < CAST($as_of AS DATE) + INTERVAL '1 day'
  GROUP BY x.customer_id
  HAVING max(c.recorded_at) FILTER (WHERE c.action = 'grant') IS NOT NULL
     AND (max(c.recorded_at) FILTER (WHERE c.action = 'withdraw') IS NULL
          OR max(c.recorded_at) FILTER (WHERE c.action = 'grant')
             > max(c.recorded_at) FILTER (WHERE c.action = 'withdraw'))
),
decision AS (
  SELECT customer_id, action FROM (
    SELECT customer_id, action,
           row_number() OVER (PARTITION BY customer_id ORDER BY effective_date DESC, decided_at DESC, event_id DESC) AS rn
    FROM lifecycle_event WHERE effective_date <= $as_of
  ) WHERE rn = 1
)
SELECT c.customer_id
FROM customer c
JOIN consent_now k ON k.customer_id = c.customer_id
LEFT JOIN decision d ON d.customer_id = c.customer_id
WHERE c.status = 'active'
  AND (d.action IS NULL OR d.action <> 'terminate')
  AND NOT (c.customer_type = 'individual' AND c.birth_date IS NOT NULL
           AND c.birth_date > CAST($as_of AS DATE) - INTERVAL '19 years'
           AND c.birth_date + INTERVAL '18 years' > $as_of)
