//! The transactional consumer against the real PostgreSQL: a batch of
//! messages commits all of them or none, duplicates inside and across
//! batches change nothing, and an undecodable message fails the batch before
//! anything is written.

use saga_contract::{Dispatch, EventMeta, Inbound, OutboxRecord};
use saga_runtime::consumer::{Failure, Processed, Processor, Received, TxConsumer};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// The handler: records each event in a table of its own.
struct Recording;

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
    type Error = sqlx::Error;

    async fn dispatch<'a>(
        self,
        _handler: &'a Recording,
        conn: &'a mut PgConnection,
    ) -> Result<Option<OutboxRecord>, sqlx::Error> {
        sqlx::query("INSERT INTO handled (event_id, body) VALUES ($1, $2)")
            .bind(self.id)
            .bind(&self.body)
            .execute(&mut *conn)
            .await?;
        if self.body == "fail" {
            return Err(sqlx::Error::Protocol("the handler refused this event".into()));
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
    Received { topic: "events".into(), partition: 0, offset, key: None, payload: payload.into_bytes(), headers: vec![] }
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
    assert!(matches!(failed, Err(Failure::Transient(ref e)) if e.contains("refused")), "{failed:?}");
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
