-- When a handled event was produced (its Kafka timestamp, the producer's
-- CreateTime) and when this service's consumer received it. With the row's
-- processed_at (its transaction's start) and the commit time PostgreSQL keeps
-- (track_commit_timestamp), a delivery splits into hops: broker, wait for a
-- worker, transaction. `cargo xtask bench` reports them. NULL for rows
-- claimed before this migration.
ALTER TABLE inbox ADD COLUMN produced_at TIMESTAMPTZ, ADD COLUMN received_at TIMESTAMPTZ;
