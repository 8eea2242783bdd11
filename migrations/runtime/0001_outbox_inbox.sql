-- Saga plumbing every service database carries.

-- Transactional outbox: an event is inserted in the same transaction as the
-- state change it announces; the relay publishes it and only then sets
-- published_at, so nothing is lost and nothing is announced that did not commit.
CREATE TABLE outbox (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id      UUID        NOT NULL UNIQUE,
    topic         TEXT        NOT NULL,
    partition_key TEXT        NOT NULL,
    event_type    TEXT        NOT NULL,
    payload       BYTEA       NOT NULL,
    headers       JSONB       NOT NULL DEFAULT '{}'::jsonb,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at  TIMESTAMPTZ
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

-- Inbox: ids of the events already handled, written in the handler's
-- transaction, so a redelivered event changes nothing.
CREATE TABLE inbox (
    event_id     UUID        PRIMARY KEY,
    event_type   TEXT        NOT NULL,
    topic        TEXT        NOT NULL,
    partition    INTEGER     NOT NULL,
    "offset"     BIGINT      NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
