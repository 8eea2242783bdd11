-- Tells the order service's change feed (WatchOrders, which the gateway's
-- event streams wait on) that an order entered a status. NOTIFY is delivered
-- when the transition's transaction commits, and not at all if it rolls back.
-- Payload: '<order id> <status>'.
CREATE FUNCTION order_status_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('order_status', NEW.order_id::text || ' ' || NEW.to_status);
    RETURN NULL;
END;
$$;
CREATE TRIGGER order_status_notify AFTER INSERT ON order_status_history
    FOR EACH ROW EXECUTE FUNCTION order_status_notify();
