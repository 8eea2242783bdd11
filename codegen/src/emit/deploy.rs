//! Emits what a Kubernetes deployment takes from the spec: a Strimzi
//! `KafkaTopic` per topic and per dead-letter twin, with the spec's partition
//! count, replicated three times with `min.insync.replicas` 2 (what the local
//! replicated stack runs too), dead letters kept [`DLQ_RETENTION_MS`]; and a
//! Strimzi `KafkaUser` per service and for the console, signing in with
//! SCRAM-SHA-512, with the ACLs the spec grants it ([`Saga::kafka_grants`]).

use std::fmt::Write as _;

use crate::ir::Saga;

/// How long a dead letter is kept: explicit, not the broker's default, and
/// long enough for an operator to look at it and redrive it (30 days).
pub const DLQ_RETENTION_MS: &str = "2592000000";

/// Replicas of every topic in a deployment, and how many must have a write
/// before it is acknowledged (producers use `acks=all`): one broker may die
/// without losing an acknowledged event.
pub const REPLICAS: u32 = 3;
pub const MIN_INSYNC_REPLICAS: u32 = 2;

/// The Strimzi cluster the topics belong to (`deploy/kubernetes/kafka.yaml`).
pub const KAFKA_CLUSTER: &str = "saga";

/// `KafkaTopic` resources for every topic of `saga`, as one YAML stream.
pub fn kafka_topics(saga: &Saga, header: &str) -> String {
    let mut out = String::from(header);
    for topic in &saga.topics {
        let dlq = format!("{}{}", topic.name, saga.dlq_suffix);
        for (name, retention) in [(&topic.name, None), (&dlq, Some(DLQ_RETENTION_MS))] {
            // Resource names are DNS labels: the topic's own name goes in `topicName`.
            let resource: String =
                name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
            let _ = write!(
                out,
                "---\napiVersion: kafka.strimzi.io/v1beta2\nkind: KafkaTopic\nmetadata:\n  name: {resource}\n  \
                 labels:\n    strimzi.io/cluster: {KAFKA_CLUSTER}\nspec:\n  topicName: {name}\n  partitions: {}\n  \
                 replicas: {REPLICAS}\n  config:\n    min.insync.replicas: {MIN_INSYNC_REPLICAS}\n",
                topic.partitions
            );
            if let Some(ms) = retention {
                let _ = writeln!(out, "    retention.ms: {ms}");
            }
        }
    }
    out
}

/// `KafkaUser` resources for every principal of `saga`, as one YAML stream.
/// The User Operator keeps each one's password in a Secret of its name (key
/// `password`), which the deployments read.
pub fn kafka_users(saga: &Saga, header: &str) -> String {
    let mut out = String::from(header);
    let grants = saga.kafka_grants();
    let mut principals: Vec<&str> = grants.iter().map(|g| g.principal.as_str()).collect();
    principals.dedup();
    for principal in principals {
        let _ = write!(
            out,
            "---\napiVersion: kafka.strimzi.io/v1beta2\nkind: KafkaUser\nmetadata:\n  name: {principal}\n  labels:\n    \
             strimzi.io/cluster: {KAFKA_CLUSTER}\nspec:\n  authentication:\n    type: scram-sha-512\n  authorization:\n    \
             type: simple\n    acls:\n"
        );
        for grant in grants.iter().filter(|g| g.principal == principal) {
            let pattern = if grant.prefixed { "prefix" } else { "literal" };
            let _ = write!(
                out,
                "      - resource:\n          type: {}\n          name: {}\n          patternType: {pattern}\n        \
                 operations: [{}]\n        host: \"*\"\n",
                grant.resource.name(),
                grant.name,
                grant.operations.join(", ")
            );
        }
    }
    out
}
