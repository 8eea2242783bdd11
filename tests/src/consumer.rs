//! The runtime's Kafka consumer set up for tests of its own: one topic
//! (`events`), quick retries, no static membership.

use std::time::Duration;

use saga_contract::RetryPolicy;
use saga_process::shutdown::Shutdown;
use saga_runtime::consumer::ConsumerConfig;
use saga_runtime::health::Health;

/// A consumer of `<prefix>events` in group `group`, handling up to
/// `max_batch` messages of a partition at once.
pub fn config(brokers: &str, prefix: &str, max_batch: usize) -> ConsumerConfig {
    ConsumerConfig {
        brokers: brokers.to_owned(),
        group_id: "group".into(),
        topics: vec!["events".into()],
        topic_prefix: prefix.to_owned(),
        dlq_suffix: ".dlq".into(),
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
        },
        max_batch,
        workers: saga_runtime::consumer::WORKERS,
        instance_id: None,
    }
}

/// Health that never calls a loop stuck within a test.
pub fn health(shutdown: &Shutdown) -> Health {
    Health::new(Duration::from_secs(60), shutdown.clone())
}
