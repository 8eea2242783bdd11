//! Tests that need Kafka (and PostgreSQL): the runtime's consumers and relay against the
//! real broker, its access control, and the stack's broker itself. Each test uses topics
//! and groups of its own.

mod kafka_acl;
mod runtime_consumer;
mod runtime_rebalance;
mod runtime_relay;
mod runtime_tx_consumer;
mod stack_kafka;
