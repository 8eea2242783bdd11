-- The audit of one saga (`GET .../dlq/audit?saga_key=`), newest first, without a scan of
-- every redrive.
CREATE INDEX redrive_audit_by_saga ON redrive_audit (saga_key, redriven_at DESC);
