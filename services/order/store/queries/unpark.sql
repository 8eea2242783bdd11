DELETE FROM parked_events WHERE event_id = $1
