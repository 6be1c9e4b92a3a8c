-- name: pass_xref
-- description: The source records of one scoring pass's golden customers (from_id <= customer_id <= to_id), computed once per pass and held for its joins
-- param: from_id string default -
-- param: to_id string default -
-- roles: analyst
--
-- `custlake score` scores a large book in passes of consecutive golden
-- ids (see score.sql). Each pass's source records are read from
-- customer_xref once, kept in memory as the table `pass_xref`, and every
-- join of the pass reads them there rather than scanning customer_xref
-- again (it is sorted by source key, so an id range prunes little of it).
SELECT source_key, customer_id
FROM customer_xref
WHERE customer_id >= $from_id AND customer_id <= $to_id
