INSERT INTO parked_events (event_id, order_id, event_type, topic, payload) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (event_id) DO NOTHING
