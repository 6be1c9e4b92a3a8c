-- name: policy_term
-- dimension: validity
-- table: policy
-- field: expiry_date
-- team: t.owning_team
-- description: a policy expires after it takes effect
--
-- One row per policy with both dates; passed is false when the expiry
-- date is on or before the effective date.
SELECT t.policy_no AS record_key,
       {team} AS owning_team,
       CAST(t.expiry_date AS VARCHAR) AS value,
       t.expiry_date > t.effective_date AS passed
FROM policy t
WHERE t.effective_date IS NOT NULL AND t.expiry_date IS NOT NULL
