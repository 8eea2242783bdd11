INSERT INTO orders (order_id, user_id, status, idempotency_key, request_hash, traceparent)
VALUES ($1, $2, $3, $4, $5, $6)
