-- name: claim_reported_after_loss
-- dimension: validity
-- table: claim
-- field: report_date
-- team: s.owning_team
-- description: a claim is reported on or after its loss date
--
-- One row per claim with both dates; the work order goes to the team of
-- the customer's source record.
SELECT t.claim_no AS record_key,
       {team} AS owning_team,
       CAST(t.report_date AS VARCHAR) AS value,
       t.report_date >= t.loss_date AS passed
FROM claim t
LEFT JOIN source_customer s ON s.source_key = t.source_key
WHERE t.loss_date IS NOT NULL AND t.report_date IS NOT NULL
