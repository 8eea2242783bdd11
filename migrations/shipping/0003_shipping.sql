-- The shipping service's own tables (the runtime's inbox and outbox come first:
-- saga_runtime::db::migrate). Numbered after them; add one file per change.

-- One row per order the shipping service heard of: a booked parcel, a refusal, or the
-- tombstone of a cancellation that came before the payment it cancels (it makes that
-- payment book nothing when it comes). The primary key makes each order's first
-- decision its only one, whichever of its events is handled first.
CREATE TABLE shipments (
    order_id     uuid PRIMARY KEY,
    status       text NOT NULL CHECK (status IN ('booked', 'failed', 'cancelled')),
    -- Units in the parcel: the sum of the order's quantities (0 for a tombstone; null
    -- for a saga begun before the shipping step, whose items it was not told).
    units        bigint CHECK (units >= 0),
    tracking     text UNIQUE,
    -- Why it was refused (`failed`) or cancelled before it was booked.
    reason       text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    cancelled_at timestamptz,
    CHECK (status <> 'booked' OR tracking IS NOT NULL)
);
