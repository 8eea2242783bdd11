//! The outbox relay against the real PostgreSQL and Kafka: two relay
//! instances keep every key's order, a stopped relay loses nothing, rows are
//! marked sent only after the broker acknowledged them, and a row the broker
//! can never accept holds back only its own saga; a relay that finds the
//! publishing lock taken publishes nothing; marking a batch stays a lookup by
//! id however many published rows the outbox keeps.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use saga_contract::OutboxRecord;
use saga_process::shutdown::Shutdown;
use saga_runtime::health::Health;
use saga_runtime::outbox::{self, Relay, RelayConfig};
use uuid::Uuid;

async fn create_topic(brokers: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = saga_runtime::kafka::client(brokers).create().expect("admin");
    let new = NewTopic::new(topic, 4, TopicReplication::Fixed(1));
    for r in admin.create_topics([&new], &AdminOptions::new()).await.expect("create") {
        r.expect("topic");
    }
}

fn message(key: &str, seq: u32) -> OutboxRecord {
    OutboxRecord {
        event_id: Uuid::now_v7(),
        topic: "events".into(),
        partition_key: key.into(),
        event_type: "test.event".into(),
        payload: format!("{key}:{seq}").into_bytes(),
        headers: vec![("event-type".into(), "test.event".into())],
    }
}

/// Reads `expected` messages (or fails after a generous deadline); returns per-key sequences.
async fn read_all(brokers: &str, topic: &str, expected: usize) -> BTreeMap<String, Vec<u32>> {
    let consumer: StreamConsumer = saga_runtime::kafka::client(brokers)
        .set("group.id", saga_tests::unique("relay-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut seen: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut count = 0;
    while count < expected {
        let m = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .expect("all messages within the deadline")
            .expect("message");
        let text = String::from_utf8(m.payload().expect("payload").to_vec()).expect("utf8");
        let (key, seq) = text.split_once(':').expect("key:seq");
        assert_eq!(m.key(), Some(key.as_bytes()), "the Kafka key is the partition key");
        seen.entry(key.to_owned()).or_default().push(seq.parse().expect("seq"));
        count += 1;
    }
    consumer.unsubscribe();
    seen
}

fn health(shutdown: &Shutdown) -> Health {
    Health::new(Duration::from_secs(60), shutdown.clone())
}

#[tokio::test]
async fn two_relays_publish_everything_in_per_key_order_and_mark_it_sent() {
    let stack = saga_tests::stack();
    let brokers = stack.kafka_brokers();
    let (pool, db) = saga_tests::scratch_database(&stack).await;
    let prefix = format!("{}.", saga_tests::unique("relay"));
    create_topic(&brokers, &format!("{prefix}events")).await;

    let (trigger, shutdown) = Shutdown::manual();
    let config = RelayConfig { topic_prefix: prefix.clone(), batch_size: 7, poll_interval: Duration::from_secs(5) };
    let mut relays = Vec::new();
    for _ in 0..2 {
        let relay =
            Relay::new(pool.clone(), &brokers, saga_runtime::kafka::DEFAULT_LINGER_MS, config.clone()).expect("relay");
        relays.push(tokio::spawn(relay.run(shutdown.clone(), health(&shutdown))));
    }
    // Interleaved writers, one transaction per event, while the relays run.
    let keys: Vec<String> = (0..8).map(|i| format!("key-{i}")).collect();
    for seq in 0..25u32 {
        for key in &keys {
            let mut tx = pool.begin().await.expect("begin");
            outbox::insert(&mut tx, &message(key, seq)).await.expect("insert");
            tx.commit().await.expect("commit");
            outbox::committed();
        }
    }
    let seen = read_all(&brokers, &format!("{prefix}events"), 200).await;
    for key in &keys {
        let got = &seen[key];
        assert_eq!(got, &(0..25).collect::<Vec<u32>>(), "order of {key}");
    }
    // Marked sent only after the acknowledgement: all of them, eventually.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let unsent: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(&pool)
            .await
            .expect("count");
        if unsent == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{unsent} rows never marked sent");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Each row records where the broker took it: a position of its own, and a key's rows
    // in one partition at increasing offsets.
    let positions: Vec<(String, i32, i64)> =
        sqlx::query_as("SELECT partition_key, published_partition, published_offset FROM outbox ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("every published row has its partition and offset");
    let distinct: std::collections::BTreeSet<(i32, i64)> = positions.iter().map(|(_, p, o)| (*p, *o)).collect();
    assert_eq!(distinct.len(), positions.len(), "one position per row");
    for key in &keys {
        let of_key: Vec<_> = positions.iter().filter(|(k, ..)| k == key).collect();
        assert!(of_key.windows(2).all(|w| w[0].1 == w[1].1 && w[0].2 < w[1].2), "{key}: {of_key:?}");
    }
    trigger.trigger();
    for relay in relays {
        relay.await.expect("relay stops");
    }
    saga_tests::drop_scratch_database(&stack, pool, &db).await;
}

#[tokio::test]
async fn a_relay_restarted_midway_loses_nothing() {
    let stack = saga_tests::stack();
    let brokers = stack.kafka_brokers();
    let (pool, db) = saga_tests::scratch_database(&stack).await;
    let prefix = format!("{}.", saga_tests::unique("relay"));
    create_topic(&brokers, &format!("{prefix}events")).await;
    for seq in 0..50u32 {
        let mut tx = pool.begin().await.expect("begin");
        outbox::insert(&mut tx, &message("only-key", seq)).await.expect("insert");
        tx.commit().await.expect("commit");
        outbox::committed();
    }
    let config = RelayConfig { topic_prefix: prefix.clone(), batch_size: 5, poll_interval: Duration::from_secs(1) };

    // First relay: stopped as soon as it has published something.
    let (trigger, shutdown) = Shutdown::manual();
    let relay =
        Relay::new(pool.clone(), &brokers, saga_runtime::kafka::DEFAULT_LINGER_MS, config.clone()).expect("relay");
    let first = tokio::spawn(relay.run(shutdown.clone(), health(&shutdown)));
    loop {
        let sent: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL")
            .fetch_one(&pool)
            .await
            .expect("count");
        if sent > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    trigger.trigger();
    first.await.expect("first relay stops");

    // A new relay takes over where it stopped.
    let (trigger, shutdown) = Shutdown::manual();
    let relay = Relay::new(pool.clone(), &brokers, saga_runtime::kafka::DEFAULT_LINGER_MS, config).expect("relay");
    let second = tokio::spawn(relay.run(shutdown.clone(), health(&shutdown)));
    let seen = read_all(&brokers, &format!("{prefix}events"), 50).await;
    assert_eq!(seen["only-key"], (0..50).collect::<Vec<u32>>());
    trigger.trigger();
    second.await.expect("second relay stops");
    saga_tests::drop_scratch_database(&stack, pool, &db).await;
}

/// While another connection holds the publishing lock, a relay publishes and
/// marks nothing; once the lock is free it publishes every row, and a try on
/// an empty outbox publishes none.
#[tokio::test]
async fn a_relay_publishes_nothing_while_another_holds_the_lock() {
    let stack = saga_tests::stack();
    let brokers = stack.kafka_brokers();
    let (pool, db) = saga_tests::scratch_database(&stack).await;
    let prefix = format!("{}.", saga_tests::unique("relay"));
    create_topic(&brokers, &format!("{prefix}events")).await;
    for seq in 0..3u32 {
        let mut tx = pool.begin().await.expect("begin");
        outbox::insert(&mut tx, &message("k", seq)).await.expect("insert");
        tx.commit().await.expect("commit");
    }
    let config = RelayConfig { topic_prefix: prefix.clone(), batch_size: 10, poll_interval: Duration::from_secs(60) };
    let relay = Relay::new(pool.clone(), &brokers, saga_runtime::kafka::DEFAULT_LINGER_MS, config).expect("relay");
    let unsent = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(&pool)
            .await
            .expect("count")
    };

    let mut other = pool.begin().await.expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(outbox::RELAY_LOCK_KEY)
        .execute(&mut *other)
        .await
        .expect("lock");
    assert_eq!(relay.publish_batch().await.expect("a try while locked"), 0);
    assert_eq!(unsent().await, 3, "nothing is published or marked while another relay holds the lock");
    other.rollback().await.expect("release");

    assert_eq!(relay.publish_batch().await.expect("a try once free"), 3);
    assert_eq!(unsent().await, 0);
    assert_eq!(relay.publish_batch().await.expect("a try on an empty outbox"), 0);
    let seen = read_all(&brokers, &format!("{prefix}events"), 3).await;
    assert_eq!(seen["k"], [0, 1, 2], "published in order");
    drop(relay);
    saga_tests::drop_scratch_database(&stack, pool, &db).await;
}

/// Published rows stay in the outbox (for `saga trace` and the benchmark's hops), so it only
/// grows. The relay's marking of a batch looks its rows up by id however big it grew: a
/// prepared statement's generic plan, chosen in the first batches while the outbox was
/// nearly empty, kept joining the ids by a sequential scan of every row (1.6 ms a batch at
/// 9,000 rows, the costliest statement of a saga under load).
#[tokio::test]
async fn marking_a_batch_reads_only_its_rows_however_big_the_outbox_grew() {
    let stack = saga_tests::stack();
    let brokers = stack.kafka_brokers();
    let (pool, db) = saga_tests::scratch_database(&stack).await;
    let prefix = format!("{}.", saga_tests::unique("relay"));
    create_topic(&brokers, &format!("{prefix}events")).await;
    let config = RelayConfig { topic_prefix: prefix.clone(), batch_size: 10, poll_interval: Duration::from_secs(60) };
    let relay = Relay::new(pool.clone(), &brokers, saga_runtime::kafka::DEFAULT_LINGER_MS, config).expect("relay");
    let publish_one = |seq: u32| {
        let (pool, relay) = (&pool, &relay);
        async move {
            let mut tx = pool.begin().await.expect("begin");
            outbox::insert(&mut tx, &message("k", seq)).await.expect("insert");
            tx.commit().await.expect("commit");
            assert_eq!(relay.publish_batch().await.expect("publish"), 1);
        }
    };
    // The first batches, on a nearly empty outbox (PostgreSQL settles on a generic plan
    // after five executions of a prepared statement).
    for seq in 0..8 {
        publish_one(seq).await;
    }
    // Then the outbox holds many published rows (before autovacuum analyzed it again).
    const PUBLISHED: i64 = 20_000;
    sqlx::query(
        "INSERT INTO outbox (event_id, topic, partition_key, event_type, payload, published_at) \
         SELECT gen_random_uuid(), 'events', 'old', 'test.event', '\\x00', now() FROM generate_series(1, $1)",
    )
    .bind(PUBLISHED)
    .execute(&pool)
    .await
    .expect("published rows");
    for seq in 8..16 {
        publish_one(seq).await;
    }
    // Every connection closed, so each session's table statistics are reported.
    drop(relay);
    pool.close().await;
    let pool = sqlx::PgPool::connect(&stack.postgres_admin_url(&db)).await.expect("connect");
    let read: i64 = sqlx::query_scalar("SELECT seq_tup_read FROM pg_stat_user_tables WHERE relname = 'outbox'")
        .fetch_one(&pool)
        .await
        .expect("statistics");
    assert!(
        read < PUBLISHED,
        "the relay's batches read {read} outbox rows by sequential scan: a batch read all {PUBLISHED} published rows"
    );
    saga_tests::drop_scratch_database(&stack, pool, &db).await;
}

/// A row the broker can never accept (larger than any message it takes) is
/// marked failed with its error: the other sagas' rows flow, the later rows
/// of its own saga wait behind it, and the relay stays healthy.
#[tokio::test]
async fn a_row_the_broker_can_never_accept_is_marked_failed_and_holds_back_only_its_saga() {
    let stack = saga_tests::stack();
    let brokers = stack.kafka_brokers();
    let (pool, db) = saga_tests::scratch_database(&stack).await;
    let prefix = format!("{}.", saga_tests::unique("relay"));
    create_topic(&brokers, &format!("{prefix}events")).await;
    let mut huge = message("stuck", 0);
    huge.payload = vec![b'x'; 2 * 1024 * 1024];
    for record in [message("a", 0), huge, message("stuck", 1), message("b", 0), message("a", 1)] {
        let mut tx = pool.begin().await.expect("begin");
        outbox::insert(&mut tx, &record).await.expect("insert");
        tx.commit().await.expect("commit");
        outbox::committed();
    }
    let config = RelayConfig { topic_prefix: prefix.clone(), batch_size: 10, poll_interval: Duration::from_secs(1) };
    let (trigger, shutdown) = Shutdown::manual();
    let relay = Relay::new(pool.clone(), &brokers, saga_runtime::kafka::DEFAULT_LINGER_MS, config).expect("relay");
    let health = health(&shutdown);
    let running = tokio::spawn(relay.run(shutdown.clone(), health.clone()));

    let seen = read_all(&brokers, &format!("{prefix}events"), 3).await;
    assert_eq!(seen.get("a").map(Vec::as_slice), Some(&[0, 1][..]));
    assert_eq!(seen.get("b").map(Vec::as_slice), Some(&[0][..]));
    let mut conn = pool.acquire().await.expect("connection");
    let failed = outbox::failed_rows(&mut conn).await.expect("failed rows");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!((failed[0].partition_key.as_str(), failed[0].waiting), ("stuck", 1));
    assert!(failed[0].failure.to_lowercase().contains("too large"), "{}", failed[0].failure);
    let unpublished: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE published_at IS NULL AND failed_at IS NULL AND partition_key = 'stuck'",
    )
    .fetch_one(&mut *conn)
    .await
    .expect("count");
    assert_eq!(unpublished, 1, "the saga's later event waits behind the failed one");
    let verdict = health.verdict(tokio::time::Instant::now() + Duration::from_secs(3600));
    assert!(verdict.values().all(Option::is_none), "a row that can never be published is no outage: {verdict:?}");
    drop(conn);
    trigger.trigger();
    running.await.expect("relay stops");
    saga_tests::drop_scratch_database(&stack, pool, &db).await;
}
