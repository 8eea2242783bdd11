INSERT INTO order_status_history (order_id, from_status, to_status, event_id, event_type, reason)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING at, (SELECT count(*) FROM order_status_history h WHERE h.order_id = $1) + 1 AS "position!"
