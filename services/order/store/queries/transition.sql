WITH old AS (
  SELECT updated_at, created_at FROM orders WHERE order_id = $1
), moved AS (
  UPDATE orders o SET status = $3, updated_at = now(), deadline_at = $4,
    total_minor = coalesce($5, o.total_minor), failure_reason = coalesce($6, o.failure_reason)
  FROM old
  WHERE o.order_id = $1
  RETURNING extract(epoch FROM now() - old.updated_at)::float8 AS in_from_seconds,
    extract(epoch FROM now() - old.created_at)::float8 AS since_created_seconds,
    o.order_id, o.user_id, o.status, o.total_minor, o.failure_reason, o.idempotency_key, o.created_at, o.updated_at
), history AS (
  INSERT INTO order_status_history (order_id, from_status, to_status, event_id, event_type, reason)
  SELECT order_id, $2::text, $3::text, $7::uuid, $8::text, $9::text FROM moved
  RETURNING at, (SELECT count(*) FROM order_status_history h WHERE h.order_id = $1) + 1 AS position
)
SELECT m.in_from_seconds AS "in_from_seconds!", m.since_created_seconds AS "since_created_seconds!",
  m.order_id AS "order_id!", m.user_id AS "user_id!", m.status AS "status!", m.total_minor AS "total_minor?",
  m.failure_reason AS "failure_reason?", m.idempotency_key AS "idempotency_key!", m.created_at AS "created_at!",
  m.updated_at AS "updated_at!", h.at AS "at!", h.position AS "position!"
FROM moved m CROSS JOIN history h
