//! The transactional consumer against the real PostgreSQL: a batch of
//! messages commits all of them or none, duplicates inside and across
//! batches change nothing, an undecodable message fails the batch before
//! anything is written, and an outage of the database under a stream of
//! messages is waited out with nothing dead-lettered.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use saga_contract::{Classify, Dispatch, EventMeta, FailureClass, Inbound, OutboxRecord, RetryPolicy};
use saga_process::shutdown::Shutdown;
use saga_runtime::consumer::{ConsumerConfig, Failure, Processed, Processor, Received, TxConsumer};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// The handler: records each event in a table of its own.
struct Recording;

#[derive(Debug, thiserror::Error)]
enum HandlerError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("the handler refused this event")]
    Refused,
}

impl Classify for HandlerError {
    fn class(&self) -> FailureClass {
        match self {
            HandlerError::Db(e) => saga_runtime::db::class_of(e),
            HandlerError::Refused => FailureClass::Permanent,
        }
    }
}

/// Payload `<event id>|<body>`; a body `fail` makes the handler fail after
/// it wrote its row, as a constraint violation deep in a handler would.
struct Event {
    id: Uuid,
    body: String,
}

impl Inbound for Event {
    fn decode(_topic: &str, payload: &[u8]) -> Result<Option<Event>, String> {
        let text = std::str::from_utf8(payload).map_err(|e| e.to_string())?;
        let (id, body) = text.split_once('|').ok_or_else(|| format!("no event id in {text:?}"))?;
        Ok(Some(Event { id: id.parse().map_err(|e| format!("{e}"))?, body: body.to_owned() }))
    }

    fn meta(&self) -> EventMeta {
        EventMeta { event_id: self.id, event_type: "test.event", saga_key: self.id, traceparent: None }
    }
}

impl Dispatch<Recording> for Event {
    type Ctx = PgConnection;
    type Error = HandlerError;

    async fn dispatch<'a>(
        self,
        _handler: &'a Recording,
        conn: &'a mut PgConnection,
    ) -> Result<Option<OutboxRecord>, HandlerError> {
        sqlx::query("INSERT INTO handled (event_id, body) VALUES ($1, $2)")
            .bind(self.id)
            .bind(&self.body)
            .execute(&mut *conn)
            .await?;
        if self.body == "fail" {
            return Err(HandlerError::Refused);
        }
        Ok(Some(OutboxRecord {
            event_id: Uuid::now_v7(),
            topic: "replies".into(),
            partition_key: self.id.to_string(),
            event_type: "test.reply".into(),
            payload: self.body.into_bytes(),
            headers: Vec::new(),
        }))
    }
}

fn received(offset: i64, payload: String) -> Received {
    Received {
        topic: "events".into(),
        partition: 0,
        offset,
        key: None,
        payload: payload.into_bytes(),
        headers: vec![],
        produced_at: None,
        received_at: None,
    }
}

fn event(offset: i64, id: Uuid, body: &str) -> Received {
    received(offset, format!("{id}|{body}"))
}

/// Rows in (handled, inbox, outbox).
async fn counts(pool: &PgPool) -> (i64, i64, i64) {
    let count = |table: &'static str| async move {
        sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM {table}")).fetch_one(pool).await.expect("count")
    };
    (count("handled").await, count("inbox").await, count("outbox").await)
}

#[tokio::test]
async fn a_batch_commits_all_its_messages_or_none() {
    let stack = saga_tests::stack();
    let (pool, db) = saga_tests::scratch_database(&stack).await;
    sqlx::query("CREATE TABLE handled (event_id uuid NOT NULL, body text NOT NULL)")
        .execute(&pool)
        .await
        .expect("table");
    let consumer = TxConsumer::<Recording, Event>::new(pool.clone(), Recording);
    let [a, b, c, d, f] = [(); 5].map(|()| Uuid::now_v7());

    // A handler failure on the third message rolls back the first two as well.
    let failed = consumer.process_batch(&[event(0, a, "a"), event(1, b, "b"), event(2, f, "fail")]).await;
    assert!(matches!(failed, Err(Failure::Permanent(ref e)) if e.contains("refused")), "{failed:?}");
    assert_eq!(counts(&pool).await, (0, 0, 0));

    // The same messages without the failing one: one commit, every row.
    consumer.process_batch(&[event(0, a, "a"), event(1, b, "b")]).await.expect("batch");
    assert_eq!(counts(&pool).await, (2, 2, 2));

    // A redelivered event and one twice in the same batch: handled once.
    consumer.process_batch(&[event(0, a, "a"), event(3, c, "c"), event(4, c, "c")]).await.expect("batch");
    assert_eq!(counts(&pool).await, (3, 3, 3));
    assert_eq!(consumer.process(&event(0, a, "a")).await.expect("single"), Processed::Duplicate);

    // An undecodable message fails the batch before anything is written.
    let undecodable = consumer.process_batch(&[event(5, d, "d"), received(6, "no id".into())]).await;
    assert!(matches!(undecodable, Err(Failure::Undecodable(_))), "{undecodable:?}");
    assert_eq!(counts(&pool).await, (3, 3, 3));
    assert_eq!(consumer.process(&event(5, d, "d")).await.expect("single"), Processed::Handled);
    assert_eq!(counts(&pool).await, (4, 4, 4));

    let bodies: Vec<String> =
        sqlx::query_scalar("SELECT body FROM handled ORDER BY body").fetch_all(&pool).await.expect("bodies");
    assert_eq!(bodies, ["a", "b", "c", "d"]);
    saga_tests::drop_scratch_database(&stack, pool, &db).await;
}

async fn produce(producer: &FutureProducer, topic: &str, ids: &[Uuid]) {
    for id in ids {
        let payload = format!("{id}|{id}");
        producer
            .send(FutureRecord::to(topic).key("k").payload(&payload), Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }
}

async fn handled(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(DISTINCT event_id) FROM handled").fetch_one(pool).await.expect("count")
}

/// The database goes away (connections cut, new ones refused) for longer
/// than the retry policy's whole budget, while messages keep arriving: every
/// message is handled exactly once when it is back, in order, and nothing
/// reaches the DLQ.
#[tokio::test]
async fn a_database_outage_is_waited_out_and_dead_letters_nothing() {
    let stack = saga_tests::stack();
    let (admin_pool, db) = saga_tests::scratch_database(&stack).await;
    sqlx::query(
        "CREATE TABLE handled (event_id uuid NOT NULL, body text NOT NULL, at timestamptz DEFAULT clock_timestamp())",
    )
    .execute(&admin_pool)
    .await
    .expect("table");
    let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], stack.ports.postgres));
    let proxy = saga_tests::proxy::Proxy::start(upstream).await;
    let url = stack
        .postgres_admin_url(&db)
        .replace(&format!(":{}/", stack.ports.postgres), &format!(":{}/", proxy.addr().port()));
    let session = saga_runtime::db::SessionSettings::default();
    let pool =
        saga_runtime::db::connect(&url, 3, saga_runtime::db::WORK_ACQUIRE_TIMEOUT, &session, Duration::from_secs(10))
            .await
            .expect("pool through the proxy");

    let brokers = stack.kafka_brokers();
    let prefix = format!("{}.", saga_tests::unique("outage"));
    let (topic, dlq) = saga_tests::topic_and_dlq(&brokers, &prefix, 1).await;
    let config = ConsumerConfig {
        brokers: brokers.clone(),
        group_id: "group".into(),
        topics: vec!["events".into()],
        topic_prefix: prefix.clone(),
        dlq_suffix: ".dlq".into(),
        // Five tries within about a second: the old rule dead-lettered after them.
        retry: RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
        },
        max_batch: 4,
        workers: saga_runtime::consumer::WORKERS,
        instance_id: None,
    };
    let (trigger, shutdown) = Shutdown::manual();
    let consumer = TxConsumer::<Recording, Event>::new(pool.clone(), Recording);
    let health = saga_runtime::health::Health::new(Duration::from_secs(60), shutdown.clone());
    let running = tokio::spawn(saga_runtime::consumer::run(config, consumer, shutdown, health));
    let producer = saga_tests::producer(&brokers);

    // More arrive during the outage than a worker's queue holds: the
    // receiving loop pauses the partition instead of blocking, and resumes it.
    let ids: Vec<Uuid> = (0..200).map(|_| Uuid::now_v7()).collect();
    produce(&producer, &topic, &ids[..20]).await;
    wait_for(&admin_pool, 20).await;

    proxy.cut();
    produce(&producer, &topic, &ids[20..170]).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(handled(&admin_pool).await, 20, "nothing is handled while the database is away");
    proxy.restore();
    produce(&producer, &topic, &ids[170..]).await;
    wait_for(&admin_pool, 200).await;

    trigger.trigger();
    running.await.expect("task").expect("consumer");
    let rows: Vec<Uuid> =
        sqlx::query_scalar("SELECT event_id FROM handled ORDER BY at").fetch_all(&admin_pool).await.expect("rows");
    assert_eq!(rows, ids, "every message once, in order");
    let watermarks: BaseConsumer = saga_runtime::kafka::client(&brokers).create().expect("consumer");
    let (_, dead) = watermarks.fetch_watermarks(&dlq, 0, Duration::from_secs(10)).expect("DLQ watermarks");
    assert_eq!(dead, 0, "an outage is not poison: nothing in the DLQ");
    pool.close().await;
    drop(proxy);
    saga_tests::drop_scratch_database(&stack, admin_pool, &db).await;
}

async fn wait_for(pool: &PgPool, count: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while handled(pool).await < count {
        assert!(tokio::time::Instant::now() < deadline, "only {} of {count} handled", handled(pool).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
