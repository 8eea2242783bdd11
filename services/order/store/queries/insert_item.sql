INSERT INTO order_items (order_id, line_no, product_id, quantity) VALUES ($1, $2, $3, $4)
