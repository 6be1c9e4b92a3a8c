-- name: customer_golden
-- description: A golden customer record by its customer id (a retired id shows the id it was merged into)
-- param: id string
-- roles: analyst, steward, telesales
SELECT customer_id, customer_type, name, gender, birth_date, id_type, id_number, uscc, phone, email,
       address, province, owning_team, region, agent_id, status, merged_into
FROM customer
WHERE customer_id = $id
