-- The relay is woken in its own process once a transaction that inserted
-- outbox rows commits (saga_runtime::outbox::insert asks for it through
-- saga_runtime::db::after_commit), not by a NOTIFY from this trigger:
-- PostgreSQL serializes the commits of all transactions that notify,
-- cluster-wide, through their WAL flush, so every saga step's commit waited
-- for the others' (see saga_runtime::db::AfterCommit).
DROP TRIGGER IF EXISTS outbox_notify ON outbox;
DROP FUNCTION IF EXISTS outbox_notify();
