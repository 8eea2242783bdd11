UPDATE orders o SET status = $2, updated_at = now(), deadline_at = $3,
  total_minor = coalesce($4, o.total_minor), failure_reason = coalesce($5, o.failure_reason)
FROM (SELECT updated_at, created_at FROM orders WHERE order_id = $1) old
WHERE o.order_id = $1
RETURNING extract(epoch FROM now() - old.updated_at)::float8 AS "in_from_seconds!",
  extract(epoch FROM now() - old.created_at)::float8 AS "since_created_seconds!",
  o.order_id, o.user_id, o.status, o.total_minor, o.failure_reason, o.idempotency_key, o.created_at, o.updated_at
