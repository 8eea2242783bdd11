-- The change feed is fed by the order service itself once a transition
-- commits (services/order/src/feed.rs), no longer by this trigger's NOTIFY:
-- PostgreSQL serializes the commits of all transactions that notify,
-- cluster-wide, through their WAL flush, and three of a saga's commits in
-- this database notified. Without them (and the outbox trigger, runtime
-- migration 1000003) pgbench ran one saga's SQL in this database 1.7 times
-- as often per second (BENCHMARKS.md, 2026-12-03).
DROP TRIGGER IF EXISTS order_status_notify ON order_status_history;
DROP FUNCTION IF EXISTS order_status_notify();
