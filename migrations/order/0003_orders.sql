-- Orders, their items and the status history of each saga.

CREATE TABLE orders (
    order_id        UUID        PRIMARY KEY,
    user_id         UUID        NOT NULL,
    -- The spec's status name (saga_generated::OrderStatus::as_str).
    status          TEXT        NOT NULL,
    -- Minor units; priced by the product service at reservation, so NULL until then.
    total_minor     BIGINT      CHECK (total_minor >= 0),
    failure_reason  TEXT,
    idempotency_key TEXT        NOT NULL,
    -- Hash of (user, items) of the first request, to reject a reused key with other content.
    request_hash    TEXT        NOT NULL,
    traceparent     TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- When the current status times out; NULL once the status is terminal.
    deadline_at     TIMESTAMPTZ,
    CONSTRAINT orders_idempotency_key UNIQUE (user_id, idempotency_key)
);
CREATE INDEX orders_of_user ON orders (user_id, created_at DESC, order_id DESC);
CREATE INDEX orders_due ON orders (deadline_at) WHERE deadline_at IS NOT NULL;

CREATE TABLE order_items (
    order_id   UUID    NOT NULL REFERENCES orders (order_id),
    line_no    INTEGER NOT NULL,
    product_id UUID    NOT NULL,
    quantity   INTEGER NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, line_no)
);

-- One row per status transition, including the initial one.
CREATE TABLE order_status_history (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id    UUID        NOT NULL REFERENCES orders (order_id),
    from_status TEXT,
    to_status   TEXT        NOT NULL,
    event_id    UUID        NOT NULL,
    event_type  TEXT        NOT NULL,
    reason      TEXT,
    at          TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX order_status_history_of_order ON order_status_history (order_id, id);
