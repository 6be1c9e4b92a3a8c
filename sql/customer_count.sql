-- name: customer_count
-- description: Golden customers by type: everything for an analyst, only the agent's own customers for a telesales agent, only the team's for a steward
-- roles: analyst, steward, telesales
SELECT customer_type, count(*) AS customers
FROM customer
GROUP BY customer_type
ORDER BY customer_type
