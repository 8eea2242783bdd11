//! The broker enforces the permissions generated from the spec, tried
//! against the stack's broker as someone on the internal network would: a
//! client that does not sign in gets nothing; the user service, signed in as
//! itself, cannot publish a forged `stock.reduction.success` (the product
//! service's event) nor join another service's consumer group; the product
//! service cannot publish on the order service's topic. What each may do, it
//! can (the whole saga runs on these principals in every other test).

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use saga_runtime::kafka::client_as;
use saga_stack::kafka_access::credentials;
use saga_tests::stack;

const TIMEOUT: Duration = Duration::from_secs(10);

/// A producer signed in as `principal`, which gives up after a few seconds
/// (a refused write is not retried).
fn producer_as(principal: &str) -> FutureProducer {
    let stack = stack();
    let credentials = credentials(&stack, principal).expect("credentials");
    client_as(&stack.kafka_brokers(), Some(&credentials))
        .set("message.timeout.ms", "10000")
        .set("log_level", "3")
        .create()
        .expect("producer")
}

/// What the broker answers `principal` publishing a `stock.reduction.success` on `topic`.
async fn publish(principal: &str, topic: &str) -> Result<(), KafkaError> {
    let producer = producer_as(principal);
    let headers = OwnedHeaders::new().insert(Header { key: "event_type", value: Some("stock.reduction.success") });
    let order = uuid::Uuid::new_v4().to_string();
    let record = FutureRecord::to(topic).key(&order).payload("forged: reserved, amount 0").headers(headers);
    producer.send(record, TIMEOUT).await.map(drop).map_err(|(error, _)| error)
}

fn refused(result: Result<(), KafkaError>) -> bool {
    matches!(result, Err(KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed)))
}

#[tokio::test]
async fn a_forged_stock_reply_from_the_user_service_is_refused() {
    let forged = publish("user", "inventory-events").await;
    assert!(refused(forged.clone()), "the broker took a forged stock reply from the user service: {forged:?}");
    let forged = publish("product", "order-events").await;
    assert!(refused(forged.clone()), "the product service wrote on the order service's topic: {forged:?}");
    let forged = publish("console", "inventory-events.dlq").await;
    assert!(refused(forged.clone()), "the console wrote a dead letter: {forged:?}");
}

#[tokio::test]
async fn a_client_that_does_not_sign_in_gets_nothing() {
    let stack = stack();
    let anonymous: BaseConsumer =
        client_as(&stack.kafka_brokers(), None).set("log_level", "0").create().expect("client");
    let metadata = tokio::task::spawn_blocking(move || anonymous.fetch_metadata(None, Duration::from_secs(5)))
        .await
        .expect("joined");
    assert!(metadata.is_err(), "a client without credentials read the metadata: {:?}", metadata.map(|_| ()));

    let mut wrong = credentials(&stack, "user").expect("credentials");
    wrong.password.push('x');
    let impostor: BaseConsumer =
        client_as(&stack.kafka_brokers(), Some(&wrong)).set("log_level", "0").create().expect("client");
    let metadata = tokio::task::spawn_blocking(move || impostor.fetch_metadata(None, Duration::from_secs(5)))
        .await
        .expect("joined");
    assert!(metadata.is_err(), "a wrong password was let in");
}

#[tokio::test]
async fn a_service_reads_its_own_topics_with_its_own_group_and_no_one_elses() {
    let stack = stack();
    let user = credentials(&stack, "user").expect("credentials");
    // Its own group on a topic it consumes: the broker gives the committed offsets.
    let own: BaseConsumer = client_as(&stack.kafka_brokers(), Some(&user))
        .set("group.id", "order_fulfillment.user")
        .set("log_level", "0")
        .create()
        .expect("consumer");
    let mut partitions = rdkafka::TopicPartitionList::new();
    partitions.add_partition("inventory-events", 0);
    let committed = own.committed_offsets(partitions.clone(), TIMEOUT);
    assert!(committed.is_ok(), "the user service's own group: {committed:?}");

    // The product service's group, from the user service: refused.
    let theirs: BaseConsumer = client_as(&stack.kafka_brokers(), Some(&user))
        .set("group.id", "order_fulfillment.product")
        .set("log_level", "0")
        .create()
        .expect("consumer");
    let committed = theirs.committed_offsets(partitions, TIMEOUT);
    assert!(committed.is_err(), "the user service read the product service's group: {committed:?}");

    // A topic it neither consumes nor publishes: its messages are not its to read.
    let mut other = rdkafka::TopicPartitionList::new();
    other.add_partition_offset("order-events.dlq", 0, rdkafka::Offset::Beginning).expect("partition");
    own.assign(&other).expect("assign");
    let read = own.poll(Duration::from_secs(5));
    assert!(
        matches!(read, Some(Err(_))),
        "the user service read dead letters it has no grant for: {:?}",
        read.map(|r| r.map(|m| rdkafka::Message::offset(&m)))
    );
}

/// Every service registers the schemas it writes on the schema topic as
/// itself, and reads back what the others registered (what a consumer built
/// before a version does with a fingerprint it does not know); a principal
/// that publishes nothing, the console, cannot register a schema.
#[tokio::test]
async fn each_service_registers_its_writer_schemas_and_reads_the_others() {
    use saga_generated::topology::{ORDER_SERVICE, PRODUCT_SERVICE, SCHEMA_TOPIC, SHIPPING_SERVICE, USER_SERVICE};
    use saga_runtime::schema_registry::{SchemaReader, register};

    let stack = stack();
    let client = |principal: &str| {
        let credentials = credentials(&stack, principal).expect("credentials");
        client_as(&stack.kafka_brokers(), Some(&credentials))
    };
    let writes = [
        ("order", ORDER_SERVICE.writes, ORDER_SERVICE.schema_group),
        ("product", PRODUCT_SERVICE.writes, PRODUCT_SERVICE.schema_group),
        ("user", USER_SERVICE.writes, USER_SERVICE.schema_group),
        ("shipping", SHIPPING_SERVICE.writes, SHIPPING_SERVICE.schema_group),
    ];
    for (principal, writes, _) in writes {
        let registered = register(client(principal), SCHEMA_TOPIC, writes.iter().map(|history| history())).await;
        assert!(matches!(registered, Ok(n) if n > 0), "{principal} registers what it writes: {registered:?}");
    }
    for (principal, _, group) in writes {
        let reader = SchemaReader::new(client(principal), SCHEMA_TOPIC, group).expect("reader");
        let read = tokio::time::timeout(Duration::from_secs(30), reader.catch_up()).await.expect("caught up in time");
        assert!(read.is_ok(), "{principal} reads the schema topic: {read:?}");
        for (_, writes, _) in writes {
            for version in writes.iter().flat_map(|history| history().versions()) {
                let learned = saga_wire::learned::learned(&version.fingerprint);
                assert!(learned.is_some(), "{principal} learned {}", version.json.lines().nth(3).unwrap_or_default());
            }
        }
    }
    let forged = register(client("console"), SCHEMA_TOPIC, ORDER_SERVICE.writes.iter().map(|history| history())).await;
    assert!(
        matches!(
            forged,
            Err(saga_runtime::schema_registry::RegistryError::Kafka(KafkaError::MessageProduction(
                RDKafkaErrorCode::TopicAuthorizationFailed
            )))
        ),
        "the console registered a schema: {forged:?}"
    );
}
