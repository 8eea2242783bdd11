SELECT status FROM orders WHERE order_id = $1 FOR UPDATE
