SELECT event_id, event_type, topic, payload FROM parked_events WHERE order_id = $1 ORDER BY parked_at
