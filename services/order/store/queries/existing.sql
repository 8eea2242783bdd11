SELECT order_id, request_hash FROM orders WHERE user_id = $1 AND idempotency_key = $2
