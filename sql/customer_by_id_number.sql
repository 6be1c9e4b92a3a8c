-- name: customer_by_id_number
-- description: Source customer records with an identity document number, in any spelling (a resident id in its 18-digit form, spaces and case ignored); only a role that reads id_number in clear finds any, as a masked column cannot be searched
-- param: id_number string
-- roles: admin
SELECT source_system, source_id, customer_type, name, id_type, id_number, phone, email, address
FROM source_customer
WHERE id_number = normalize_id_number($id_number)
ORDER BY source_system, source_id
