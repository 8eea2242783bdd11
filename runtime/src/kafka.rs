//! Kafka client settings shared by the relay, the consumer and the DLQ.

use rdkafka::ClientConfig;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;

/// An idempotent producer (acks=all, at most 5 in flight): retries never
/// duplicate or reorder messages within a partition, which keeps every saga's
/// events in order.
pub fn producer(brokers: &str) -> Result<FutureProducer, KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        .set("message.timeout.ms", "30000")
        .set("linger.ms", "5")
        .set("log_level", "4")
        .create()
}

/// A consumer of `group` that never commits on its own: offsets are stored
/// only after the message's transaction committed (or it was dead-lettered),
/// and auto-commit then commits the stored offsets.
pub fn consumer(brokers: &str, group: &str) -> Result<StreamConsumer, KafkaError> {
    let mut config = ClientConfig::new();
    // librdkafka debug contexts (e.g. `cgrp,fetch`) for diagnosing group issues.
    if let Ok(debug) = std::env::var("KAFKA_DEBUG") {
        config.set("debug", debug).set("log_level", "7");
    }
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .create()
}
