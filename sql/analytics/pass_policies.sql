-- name: pass_policies
-- description: The policies started on or before D of one scoring pass's source records (pass_xref), computed once per pass and held for its joins
-- param: as_of date default today
-- roles: analyst
--
-- Read after `pass_xref` (pass_xref.sql) and kept in memory as the table
-- `pass_policies`: the pass's contracts, first premiums, renewals and
-- product lines all start from them (score.sql's `mine`), and each of
-- those would otherwise join the whole policy table to the pass's records
-- again. Only the columns score.sql reads, with the golden customer.
SELECT p.policy_no, p.source_key, p.product_line, p.status,
       p.effective_date, p.expiry_date, p.cancelled_date, x.customer_id
FROM pass_xref x
JOIN policy p ON p.source_key = x.source_key
WHERE p.effective_date <= $as_of
