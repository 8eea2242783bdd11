-- Where the relay published each row: the partition and offset the broker acknowledged,
-- so an operator can follow an event from its outbox row to the topic. Rows published
-- before this migration keep NULL.
ALTER TABLE outbox ADD COLUMN published_partition INT, ADD COLUMN published_offset BIGINT;
