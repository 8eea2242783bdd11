SELECT o.order_id, o.user_id, o.status, o.total_minor, o.failure_reason, o.idempotency_key,
       o.created_at, o.updated_at,
       ARRAY(SELECT i.product_id FROM order_items i WHERE i.order_id = o.order_id ORDER BY i.line_no)
         AS "item_products!",
       ARRAY(SELECT i.quantity FROM order_items i WHERE i.order_id = o.order_id ORDER BY i.line_no)
         AS "item_quantities!",
       (SELECT coalesce(json_agg(json_build_object('from_status', h.from_status,
         'to_status', h.to_status, 'event_id', h.event_id, 'event_type', h.event_type,
         'reason', h.reason, 'at', h.at) ORDER BY h.id), '[]')::text
         FROM order_status_history h WHERE h.order_id = o.order_id) AS "history!"
FROM orders o WHERE o.order_id = $1
