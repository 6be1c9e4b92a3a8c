-- name: claim_in_cover
-- dimension: consistency
-- table: claim
-- field: loss_date
-- team: p.owning_team
-- description: a claim's loss date falls within the cover of its policy, which the policy system knows
--
-- One row per claim with a loss date and a policy number; passed is false
-- when no policy has that number or the loss date is outside its
-- effective..expiry dates. The work order goes to the policy's team.
SELECT t.claim_no AS record_key,
       {team} AS owning_team,
       CAST(t.loss_date AS VARCHAR) AS value,
       coalesce(t.loss_date BETWEEN p.effective_date AND p.expiry_date, false) AS passed
FROM claim t
LEFT JOIN policy p ON p.policy_no = t.policy_no
WHERE t.loss_date IS NOT NULL AND t.policy_no IS NOT NULL
