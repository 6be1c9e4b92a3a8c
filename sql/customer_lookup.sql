-- name: customer_lookup
-- description: A source customer record by source system and source id
-- param: system string default core
-- param: id string
-- roles: analyst, steward, telesales
SELECT source_system, source_id, customer_type, name, gender, birth_date, id_type, id_number,
       uscc, phone, email, address, owning_team, region, agent_id, registered_at, updated_at
FROM source_customer
WHERE source_system = $system AND source_id = $id
