WITH inserted AS (
  INSERT INTO orders (order_id, user_id, status, idempotency_key, request_hash, traceparent)
  VALUES ($1, $2, $3, $4, $5, $6)
  RETURNING order_id
)
INSERT INTO order_items (order_id, line_no, product_id, quantity)
SELECT inserted.order_id, (item.n - 1)::int, item.product_id, item.quantity
FROM inserted, unnest($7::uuid[], $8::int[]) WITH ORDINALITY AS item(product_id, quantity, n)
