//! The Kafka broker is real: topics from the spec exist, and a message makes
//! the whole trip through a consumer group with a committed offset.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset};
use saga_generated::topology::TOPICS;
use saga_tests::{stack, unique};

const TIMEOUT: Duration = Duration::from_secs(30);

fn client_config() -> ClientConfig {
    saga_runtime::kafka::client(&stack().kafka_brokers())
}

fn admin() -> AdminClient<DefaultClientContext> {
    client_config().create().expect("admin client")
}

fn consumer(group: &str) -> StreamConsumer {
    client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer")
}

async fn receive(consumer: &StreamConsumer, count: usize) -> Vec<(i32, i64, String)> {
    let mut received = Vec::new();
    while received.len() < count {
        let message = tokio::time::timeout(TIMEOUT, consumer.recv()).await.expect("message in time").expect("message");
        let payload = String::from_utf8(message.payload().expect("payload").to_vec()).expect("utf-8");
        received.push((message.partition(), message.offset(), payload));
        consumer.commit_message(&message, CommitMode::Sync).expect("commit");
    }
    received
}

#[tokio::test]
async fn every_spec_topic_and_its_dead_letter_twin_exist() {
    let metadata = admin().inner().fetch_metadata(None, TIMEOUT).expect("metadata");
    let partitions: BTreeMap<&str, usize> =
        metadata.topics().iter().map(|t| (t.name(), t.partitions().len())).collect();
    assert!(!TOPICS.is_empty());
    for topic in TOPICS {
        for name in [topic.name, topic.dlq] {
            assert_eq!(partitions.get(name).copied(), Some(topic.partitions as usize), "topic {name}");
        }
    }
    // Dead letters are kept for an explicit time, not the broker's default.
    let resources: Vec<ResourceSpecifier> = TOPICS.iter().map(|t| ResourceSpecifier::Topic(t.dlq)).collect();
    for result in admin().describe_configs(&resources, &AdminOptions::new()).await.expect("describe") {
        let resource = result.expect("config");
        let retention = resource.get("retention.ms").and_then(|e| e.value.clone());
        assert_eq!(retention.as_deref(), Some(saga_stack::DLQ_RETENTION_MS), "{:?}", resource.specifier);
    }
}

#[tokio::test]
async fn produce_consume_and_commit_through_a_consumer_group() {
    let topic = unique("it-roundtrip");
    let admin = admin();
    let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let created =
        admin.create_topics(&[NewTopic::new(&topic, 3, TopicReplication::Fixed(1))], &options).await.expect("create");
    assert!(created.iter().all(Result::is_ok), "{created:?}");

    // An idempotent producer waiting for all replicas, as the outbox relay will use.
    let producer: FutureProducer =
        client_config().set("enable.idempotence", "true").set("acks", "all").create().expect("producer");
    let mut delivered = BTreeMap::new();
    for i in 0..10 {
        let payload = format!("message-{i}");
        let key = format!("key-{}", i % 4);
        let delivery = producer
            .send(FutureRecord::to(&topic).key(&key).payload(&payload), TIMEOUT)
            .await
            .map_err(|(error, _)| error)
            .expect("delivered");
        delivered.insert(payload, (delivery.partition, delivery.offset));
    }

    let group = unique("it-group");
    let first = consumer(&group);
    first.subscribe(&[&topic]).expect("subscribe");
    let received = receive(&first, delivered.len()).await;
    let payloads: BTreeSet<String> = received.iter().map(|(_, _, p)| p.clone()).collect();
    assert_eq!(payloads, delivered.keys().cloned().collect());
    for (partition, offset, payload) in &received {
        assert_eq!(delivered[payload], (*partition, *offset), "{payload} arrived where it was delivered");
    }

    // The committed offset of each partition is one past its last message.
    let mut next_by_partition: BTreeMap<i32, i64> = BTreeMap::new();
    for (partition, offset) in delivered.values() {
        let next = next_by_partition.entry(*partition).or_default();
        *next = (*next).max(offset + 1);
    }
    {
        // Scoped: a partition list from `committed` holds references into the
        // client, and librdkafka cannot destroy a consumer while one lives.
        let committed = first.committed(TIMEOUT).expect("committed offsets");
        for (partition, next) in &next_by_partition {
            let element = committed.find_partition(&topic, *partition).expect("partition in committed list");
            assert_eq!(element.offset(), Offset::Offset(*next), "partition {partition}");
        }
    }
    drop(first);

    // A new member of the same group resumes after the commit: it sees only the new message.
    producer
        .send(FutureRecord::to(&topic).key("key-0").payload("after-commit"), TIMEOUT)
        .await
        .map_err(|(error, _)| error)
        .expect("delivered");
    let second = consumer(&group);
    second.subscribe(&[&topic]).expect("subscribe");
    let resumed = receive(&second, 1).await;
    assert_eq!(resumed[0].2, "after-commit");
    drop(second);

    admin.delete_topics(&[&topic], &options).await.expect("delete topic");
}
