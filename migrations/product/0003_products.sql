-- Catalogue, stock and reservations.

CREATE TABLE products (
    product_id  UUID        PRIMARY KEY,
    name        TEXT        NOT NULL CHECK (name <> ''),
    description TEXT        NOT NULL DEFAULT '',
    price_minor BIGINT      NOT NULL CHECK (price_minor >= 0),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The CHECKs are the last line of defence: stock can never go negative,
-- whatever the code does under concurrency.
CREATE TABLE stock (
    product_id UUID        PRIMARY KEY REFERENCES products (product_id),
    available  BIGINT      NOT NULL CHECK (available >= 0),
    reserved   BIGINT      NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per order the product service has seen. `released` exactly once:
-- the status moves reserved -> released only; `rejected` reserved nothing;
-- `cancelled` is a tombstone for an order cancelled before it was reserved.
CREATE TABLE reservations (
    order_id    UUID        PRIMARY KEY,
    user_id     UUID        NOT NULL,
    status      TEXT        NOT NULL CHECK (status IN ('reserved', 'released', 'rejected', 'cancelled')),
    total_minor BIGINT      NOT NULL DEFAULT 0 CHECK (total_minor >= 0),
    reason      TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    released_at TIMESTAMPTZ
);

-- What was reserved, at which price (the price at reservation time).
CREATE TABLE reservation_items (
    order_id         UUID   NOT NULL REFERENCES reservations (order_id),
    product_id       UUID   NOT NULL REFERENCES products (product_id),
    quantity         BIGINT NOT NULL CHECK (quantity > 0),
    unit_price_minor BIGINT NOT NULL CHECK (unit_price_minor >= 0),
    PRIMARY KEY (order_id, product_id)
);

-- Manual stock adjustments, idempotent on their reference.
CREATE TABLE stock_adjustments (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    product_id   UUID        NOT NULL REFERENCES products (product_id),
    delta        BIGINT      NOT NULL,
    reference_id TEXT        UNIQUE,
    at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
