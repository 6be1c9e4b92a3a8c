-- name: customer_by_phone
-- description: Source customer records with a phone number, in any spelling (normalised to +86...)
-- param: phone string
-- roles: analyst, steward, telesales
SELECT source_system, source_id, customer_type, name, phone, email, address
FROM source_customer
WHERE phone = normalize_phone($phone)
ORDER BY source_system, source_id
