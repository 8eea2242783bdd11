-- Every dead letter the console put back on its topic: who, when, and what. The primary key
-- makes a redrive idempotent: a dead letter is redriven once, however often it is asked for.
CREATE TABLE redrive_audit (
    dlq_topic     TEXT        NOT NULL,
    dlq_partition INT         NOT NULL,
    dlq_offset    BIGINT      NOT NULL,
    target_topic  TEXT        NOT NULL,
    saga_key      TEXT,
    event_type    TEXT        NOT NULL,
    admin         TEXT        NOT NULL,
    redriven_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (dlq_topic, dlq_partition, dlq_offset)
);
CREATE INDEX redrive_audit_recent ON redrive_audit (redriven_at DESC);
