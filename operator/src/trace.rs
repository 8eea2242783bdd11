//! One saga's timeline across the services (`cargo xtask saga trace <order-id>` and the
//! console's saga page), read from what the platform keeps anyway: the order's status history and parked events (the order
//! database), each event published (the publisher's outbox row) and consumed (each
//! consumer's inbox row: topic, partition, offset, when), its dead letters (the DLQ topics),
//! and the trace id. Printed for a terminal (coloured when stdout is one), or as JSON
//! (`--json`), which also carries each event's bytes, so a scenario can replay the saga.

use std::collections::BTreeMap;

use base64::Engine;
use chrono::{DateTime, Utc};
use rdkafka::Message;
use saga_generated::{EventType, OrderStatus};
use serde::{Deserialize, Serialize};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::Sources;

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("no order {0} in the order service's database")]
    UnknownOrder(Uuid),
    #[error("{service} database: {source}")]
    Database { service: &'static str, source: sqlx::Error },
    #[error("reading the dead letters: {0}")]
    DeadLetters(String),
}

/// One saga, as `saga trace` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    pub order_id: Uuid,
    pub status: String,
    /// When the current status times out; `None` once it is terminal.
    pub deadline: Option<DateTime<Utc>>,
    /// The W3C trace id every event of the saga carries.
    pub trace_id: Option<String>,
    /// What the status machine allows next.
    pub next: Vec<Next>,
    /// Everything that happened, oldest first.
    pub timeline: Vec<Entry>,
    /// Every event of the saga, with its bytes as published (base64).
    pub events: Vec<RecordedEvent>,
}

/// A way out of the current status: an event, or the timeout with the time left.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Next {
    /// The event that moves it, or `None` for the timeout.
    pub on: Option<String>,
    pub to: String,
    /// For the timeout: milliseconds left (negative: overdue).
    pub in_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    /// The order's status changed (a row of its status history).
    Transition { at: DateTime<Utc>, from: Option<String>, to: String, event_type: String, event_id: Uuid },
    /// A service wrote the event to its outbox; the relay published it at `published_at`.
    Published {
        at: DateTime<Utc>,
        service: String,
        event_type: String,
        event_id: Uuid,
        topic: String,
        published_at: Option<DateTime<Utc>>,
        /// Where the broker acknowledged it (none for rows published before the relay
        /// recorded it).
        partition: Option<i32>,
        offset: Option<i64>,
        /// Why the relay gave up on it, if it did.
        failed: Option<String>,
    },
    /// A service's consumer group handled the event (its inbox row).
    Consumed {
        at: DateTime<Utc>,
        service: String,
        event_type: String,
        event_id: Uuid,
        topic: String,
        partition: i32,
        offset: i64,
    },
    /// The status owner keeps the event until a status accepts it.
    Parked { at: DateTime<Utc>, event_type: String, event_id: Uuid },
    /// A message of the saga in a dead-letter topic, with why.
    DeadLettered {
        at: Option<String>,
        topic: String,
        partition: i32,
        offset: i64,
        event_type: String,
        reason: String,
        group: String,
        error: String,
    },
}

impl Entry {
    /// When, for ordering: a dead letter without a time sorts last.
    fn at(&self) -> Option<DateTime<Utc>> {
        match self {
            Entry::Transition { at, .. }
            | Entry::Published { at, .. }
            | Entry::Consumed { at, .. }
            | Entry::Parked { at, .. } => Some(*at),
            Entry::DeadLettered { at, .. } => {
                at.as_deref().and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(Into::into)
            }
        }
    }
}

/// An event of the saga as its publisher wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub topic: String,
    pub publisher: String,
    /// The encoded event (single-object Avro), base64.
    pub payload: String,
}

impl RecordedEvent {
    pub fn bytes(&self) -> Result<Vec<u8>, base64::DecodeError> {
        base64::engine::general_purpose::STANDARD.decode(&self.payload)
    }
}

/// event id, type, topic, bytes, written, published, why it failed.
/// One outbox row of the saga, as the trace reads it.
#[derive(sqlx::FromRow)]
struct OutboxRow {
    event_id: Uuid,
    event_type: String,
    topic: String,
    payload: Vec<u8>,
    #[sqlx(rename = "created_at")]
    at: DateTime<Utc>,
    published_at: Option<DateTime<Utc>>,
    #[sqlx(rename = "published_partition")]
    partition: Option<i32>,
    #[sqlx(rename = "published_offset")]
    offset: Option<i64>,
    #[sqlx(rename = "failure")]
    failed: Option<String>,
}

/// Reads the saga of `order_id` from the services' databases and dead-letter topics.
pub async fn collect(sources: &Sources, order_id: Uuid) -> Result<Trace, TraceError> {
    let mut timeline = Vec::new();
    let mut events = Vec::new();
    let mut connections = Vec::new();
    for (service, url) in &sources.databases {
        let service = *service;
        let db = |source| TraceError::Database { service, source };
        let mut conn = PgConnection::connect(url).await.map_err(db)?;
        // The saga key is the partition key of every event of the saga.
        let rows: Vec<OutboxRow> = sqlx::query_as(
            "SELECT event_id, event_type, topic, payload, created_at, published_at, published_partition, \
             published_offset, failure FROM outbox \
             WHERE partition_key = $1 ORDER BY id",
        )
        .bind(order_id.to_string())
        .fetch_all(&mut conn)
        .await
        .map_err(db)?;
        for OutboxRow { event_id, event_type, topic, payload, at, published_at, partition, offset, failed } in rows {
            timeline.push(Entry::Published {
                at,
                service: service.to_owned(),
                event_type: event_type.clone(),
                event_id,
                topic: topic.clone(),
                published_at,
                partition,
                offset,
                failed,
            });
            let payload = base64::engine::general_purpose::STANDARD.encode(payload);
            events.push(RecordedEvent { event_id, event_type, topic, publisher: service.to_owned(), payload });
        }
        connections.push((service, conn));
    }
    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    let mut order = None;
    for (service, conn) in &mut connections {
        let db = |source| TraceError::Database { service, source };
        let consumed: Vec<(Uuid, String, String, i32, i64, DateTime<Utc>)> = sqlx::query_as(
            "SELECT event_id, event_type, topic, partition, \"offset\", processed_at FROM inbox WHERE event_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
        for (event_id, event_type, topic, partition, offset, at) in consumed {
            timeline.push(Entry::Consumed {
                at,
                service: (*service).to_owned(),
                event_type,
                event_id,
                topic,
                partition,
                offset,
            });
        }
        if *service == saga_generated::topology::ORDER_SERVICE.name {
            order = Some(owner_side(conn, order_id, &mut timeline).await.map_err(db)?);
        }
    }
    for (_, conn) in connections {
        let _ = conn.close().await;
    }
    let (status, deadline, traceparent) = order.flatten().ok_or(TraceError::UnknownOrder(order_id))?;
    timeline.extend(dead_letters(sources, order_id).await?);
    timeline.sort_by_key(|e| (e.at().is_none(), e.at()));
    Ok(Trace {
        order_id,
        next: next(&status, deadline),
        status,
        deadline,
        trace_id: traceparent.as_deref().and_then(saga_process::trace::trace_id).map(str::to_owned),
        timeline,
        events,
    })
}

/// The order row, its status history and parked events.
async fn owner_side(
    conn: &mut PgConnection,
    order_id: Uuid,
    timeline: &mut Vec<Entry>,
) -> Result<Option<(String, Option<DateTime<Utc>>, Option<String>)>, sqlx::Error> {
    let order = order_store::saga_state(&mut *conn, order_id).await?.map(|o| (o.status, o.deadline_at, o.traceparent));
    for h in order_store::history(&mut *conn, order_id).await? {
        timeline.push(Entry::Transition {
            at: h.at,
            from: h.from_status,
            to: h.to_status,
            event_type: h.event_type,
            event_id: h.event_id,
        });
    }
    for (event_id, event_type, at) in order_store::parked_summary(&mut *conn, order_id).await? {
        timeline.push(Entry::Parked { at, event_type, event_id });
    }
    Ok(order)
}

/// The saga's messages in every dead-letter topic (keyed by the saga key).
async fn dead_letters(sources: &Sources, order_id: Uuid) -> Result<Vec<Entry>, TraceError> {
    let brokers = sources.brokers.clone();
    let prefix = sources.prefix.clone();
    let key = order_id.to_string();
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for (_, dlq) in crate::dlq::topics(&prefix) {
            let messages =
                crate::dlq::read(&brokers, &dlq, None).map_err(|e| TraceError::DeadLetters(e.to_string()))?;
            for m in messages.iter().filter(|m| m.key() == Some(key.as_bytes())) {
                let letter = crate::dlq::DeadLetter::of(m);
                out.push(Entry::DeadLettered {
                    at: letter.failed_at,
                    topic: letter.topic,
                    partition: letter.partition,
                    offset: letter.offset,
                    event_type: letter.event_type,
                    reason: letter.reason,
                    group: letter.group,
                    error: letter.error,
                });
            }
        }
        Ok(out)
    })
    .await
    .map_err(|e| TraceError::DeadLetters(e.to_string()))?
}

/// What the spec's status machine allows from `status`: each transition, and the timeout
/// with the time left before `deadline`.
fn next(status: &str, deadline: Option<DateTime<Utc>>) -> Vec<Next> {
    let Some(current) = OrderStatus::ALL.iter().copied().find(|s| s.as_str() == status) else { return Vec::new() };
    let mut out: Vec<Next> = EventType::ALL
        .iter()
        .filter_map(|e| {
            Some(Next {
                on: Some(e.as_str().to_owned()),
                to: current.on_event(*e).ok()?.as_str().to_owned(),
                in_ms: None,
            })
        })
        .collect();
    if let Some(rule) = current.timeout() {
        let left = deadline.map(|d| (d - Utc::now()).num_milliseconds());
        out.push(Next { on: None, to: rule.to.as_str().to_owned(), in_ms: left });
    }
    out
}

/// The trace for a terminal: one line per entry, coloured when `color`.
pub fn render(trace: &Trace, color: bool) -> String {
    let paint = |code: &str, text: &str| if color { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_owned() };
    let mut out = format!(
        "order {}  status {}  trace {}\n",
        trace.order_id,
        paint("1", &trace.status),
        trace.trace_id.as_deref().unwrap_or("-")
    );
    let services: BTreeMap<Uuid, &str> = trace.events.iter().map(|e| (e.event_id, e.publisher.as_str())).collect();
    for entry in &trace.timeline {
        let when = entry.at().map(|t| t.format("%H:%M:%S%.3f").to_string()).unwrap_or_else(|| "?".repeat(12));
        let line = match entry {
            Entry::Transition { from, to, event_type, .. } => {
                paint("1;32", &format!("status     {} -> {to}  on {event_type}", from.as_deref().unwrap_or("(start)")))
            }
            Entry::Published { service, event_type, topic, published_at, partition, offset, failed, .. } => {
                let state = match (published_at, failed) {
                    (_, Some(error)) => paint("31", &format!("FAILED: {error}")),
                    (Some(at), None) => match (partition, offset) {
                        (Some(p), Some(o)) => format!("published {} ({topic}/{p}@{o})", at.format("%H:%M:%S%.3f")),
                        _ => format!("published {}", at.format("%H:%M:%S%.3f")),
                    },
                    (None, None) => paint("33", "not published yet"),
                };
                format!("{} {service:<8} {event_type} -> {topic}  {state}", paint("36", "publish"))
            }
            Entry::Consumed { service, event_type, topic, partition, offset, event_id, .. } => format!(
                "{} {service:<8} {event_type} from {} ({topic}/{partition}@{offset})",
                paint("34", "consume"),
                services.get(event_id).copied().unwrap_or("?")
            ),
            Entry::Parked { event_type, .. } => {
                paint("33", &format!("parked     {event_type}: waits for a status that accepts it"))
            }
            Entry::DeadLettered { topic, partition, offset, event_type, reason, group, error, .. } => paint(
                "1;31",
                &format!("DEAD LETTER {event_type} in {topic}/{partition}@{offset} by {group}: {reason}: {error}"),
            ),
        };
        out.push_str(&format!("  {when}  {line}\n"));
    }
    if trace.next.is_empty() {
        out.push_str("  next: nothing (the saga ended)\n");
    }
    for n in &trace.next {
        let what = match (&n.on, n.in_ms) {
            (Some(on), _) => format!("on {on} -> {}", n.to),
            (None, Some(ms)) if ms >= 0 => format!("timeout -> {} in {:.1} s", n.to, ms as f64 / 1000.0),
            (None, Some(ms)) => format!("timeout -> {} overdue by {:.1} s", n.to, -ms as f64 / 1000.0),
            (None, None) => format!("timeout -> {}", n.to),
        };
        out.push_str(&format!("  next: {what}\n"));
    }
    out
}
