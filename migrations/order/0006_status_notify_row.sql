-- The change feed's notification carries the change itself, so a follower
-- (the gateway's event streams) can send it without reading the order
-- again: the history row, its position in the order's history (from 1) and
-- the order's columns the transition sets. A JSON object; the feed
-- (services/order/src/feed.rs) turns it into `OrderChanged`.
--
-- Position: the rows of one order are written one transaction at a time
-- (the order's row is locked by each transition), so counting the rows up
-- to this one is its place in what `GetOrder` returns. The orders row is
-- read after the transition's UPDATE, in the same statement or transaction.
CREATE OR REPLACE FUNCTION order_status_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('order_status', json_build_object(
        'order_id', NEW.order_id,
        'position', (SELECT count(*) FROM order_status_history h WHERE h.order_id = NEW.order_id AND h.id <= NEW.id),
        'from_status', NEW.from_status,
        'to_status', NEW.to_status,
        'event_id', NEW.event_id,
        'event_type', NEW.event_type,
        'reason', NEW.reason,
        'at', NEW.at,
        'total_minor', o.total_minor,
        'failure_reason', o.failure_reason,
        'updated_at', o.updated_at)::text)
    FROM orders o WHERE o.order_id = NEW.order_id;
    RETURN NULL;
END;
$$;
