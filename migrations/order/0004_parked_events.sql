-- Saga events that arrived before the status they need. They travel on
-- different topics (stock replies, payment replies), which Kafka does not
-- order against each other, so a payment.completed can overtake the
-- stock.reduction.success it answers. Such an event is parked here, in the
-- transaction that claimed it in the inbox, and applied in the transaction
-- that moves the order into the status it needs.
CREATE TABLE parked_events (
    event_id   UUID        PRIMARY KEY,
    order_id   UUID        NOT NULL REFERENCES orders (order_id),
    event_type TEXT        NOT NULL,
    topic      TEXT        NOT NULL,
    payload    BYTEA       NOT NULL,
    parked_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX parked_events_by_order ON parked_events (order_id, parked_at);
