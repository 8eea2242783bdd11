-- An outbox row the producer can never send (larger than any message it may
-- send) is marked failed with its error instead of blocking the relay for good. Rows of
-- other sagas keep flowing; later rows of the same saga key wait behind it, so
-- a saga's events are never published out of order.
ALTER TABLE outbox ADD COLUMN failed_at TIMESTAMPTZ, ADD COLUMN failure TEXT;
CREATE INDEX outbox_failed ON outbox (partition_key) WHERE failed_at IS NOT NULL AND published_at IS NULL;
