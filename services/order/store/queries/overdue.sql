SELECT order_id, status, traceparent FROM orders
WHERE deadline_at <= $3 AND status = ANY($1) AND order_id <> ALL($2)
ORDER BY deadline_at LIMIT 1 FOR UPDATE SKIP LOCKED
