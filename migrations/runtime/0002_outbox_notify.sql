-- Relay wake-up for this service's outbox.

-- Wakes the outbox relay as soon as a transaction with new events commits
-- (NOTIFY is delivered at commit), so it need not poll quickly.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('saga_outbox', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
