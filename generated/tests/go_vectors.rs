//! Shared test vectors for the Go package of the saga (`generated/go/`): every event, as
//! written with every published version of its schema, and as this crate reads it into the
//! current version and writes it again. The Go package's conformance test decodes each
//! `written` message and must encode exactly `current`: the two implementations (apache-avro
//! here, hamba/avro there) agree on decoding, resolution, the typed mapping and encoding.
//!
//! Beside them, the status machine as this crate answers it, status by status and event by
//! event: the Go package's tables, run by `runtime-go/status`, must answer the same.
//!
//! The vectors are committed (`generated/go/conformance/testdata/vectors.json`) so the Go
//! test needs no Rust; this test fails when they are stale. `UPDATE_GO_VECTORS=1` rewrites
//! them.

use chrono::{DateTime, Utc};
use saga_generated::types::{CancelReason, OrderItem, PaymentFailure, SagaContext, ShippingFailure, StockFailure};
use saga_generated::*;
use serde_json::{Value, json};
use uuid::Uuid;

const VECTORS: &str = "go/conformance/testdata/vectors.json";

fn at(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(1_764_000_000_000_000 + micros).expect("in range")
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + n)
}

/// A fixed envelope, so the committed file changes only when the encoding does: every
/// optional envelope field set, to exercise them all.
fn envelope<E: Event>(n: u128, payload: E) -> Envelope<E> {
    let mut e = Envelope::new(id(1000 + n), payload)
        .with_trace(TraceContext {
            traceparent: Some(format!("00-{:032x}-{:016x}-01", n + 1, n + 2)),
            tracestate: Some("vendor=value".into()),
        })
        .with_deadline(Some(at(30_000_000)))
        .with_context(SagaContext { items: vec![item(1), item(2)] });
    e.event_id = id(n);
    e.occurred_at = at(n as i64);
    e
}

fn item(n: u8) -> OrderItem {
    OrderItem { product_id: id(500 + u128::from(n)), quantity: i32::from(n) * 3 }
}

/// The same without trace, deadline or context: the null branch of every union.
fn bare<E: Event>(n: u128, payload: E) -> Envelope<E> {
    let mut e = Envelope::new(id(1000 + n), payload);
    e.event_id = id(n);
    e.occurred_at = at(n as i64);
    e
}

/// Every published version of `message`'s event, each as a vector.
fn vectors_of<E: Event>(message: Envelope<E>) -> Vec<Value> {
    vectors_since(1, message)
}

/// The published versions of `message`'s event from `since` on, each as a vector (an older
/// one cannot write a value with, say, an enum symbol added later).
fn vectors_since<E: Event>(since: u32, message: Envelope<E>) -> Vec<Value> {
    let history = E::schemas();
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    history
        .versions()
        .iter()
        .filter(|version| version.version >= since)
        .map(|version| {
            let written = if version.version == history.latest().version {
                message.encode().expect("encodes")
            } else {
                saga_wire::testing::encoded_with(version, message.to_avro_value())
                    .unwrap_or_else(|e| panic!("{} as v{}: {e:?}", E::EVENT_TYPE, version.version))
            };
            let current = Envelope::<E>::decode(&written)
                .unwrap_or_else(|e| panic!("{} v{}: {e}", E::EVENT_TYPE, version.version))
                .encode()
                .expect("encodes");
            json!({ "event": E::EVENT_TYPE, "version": version.version, "written": hex(&written), "current": hex(&current) })
        })
        .collect()
}

fn vectors() -> Value {
    let mut all = Vec::new();
    all.extend(vectors_of(envelope(
        1,
        OrderCreated { user_id: id(600), items: vec![item(1), item(2)], created_at: at(-5) },
    )));
    all.extend(vectors_of(envelope(2, StockReductionSuccess { user_id: id(600), amount: Money(12_345) })));
    all.extend(vectors_of(envelope(
        3,
        StockReductionFail { reason: StockFailure::UnknownProduct, product_id: Some(id(501)) },
    )));
    all.extend(vectors_of(envelope(4, StockReleased { items: vec![item(3)] })));
    all.extend(vectors_of(envelope(5, PaymentCompleted { user_id: id(600), amount: Money(-7) })));
    all.extend(vectors_of(envelope(
        6,
        PaymentFail { reason: PaymentFailure::InsufficientBalance, detail: "needs 12345, has 12 \"€\"".into() },
    )));
    all.extend(vectors_of(envelope(7, PaymentRefunded { user_id: id(600), amount: Money(i64::MAX) })));
    all.extend(vectors_of(envelope(8, ShipmentBooked { tracking: "PCL-0000000000000001".into() })));
    all.extend(vectors_of(envelope(9, ShipmentFailed { reason: ShippingFailure::ParcelTooLarge })));
    all.extend(vectors_of(envelope(10, ShipmentCancelled {})));
    all.extend(vectors_of(envelope(11, OrderCompleted { completed_at: at(11) })));
    all.extend(vectors_of(envelope(
        12,
        OrderCancelled { reason: CancelReason::TimedOut, status_at_cancel: "paid".into() },
    )));
    all.extend(vectors_of(bare(13, PaymentCompleted { user_id: id(601), amount: Money(0) })));
    let latest = <StockReductionFail as Event>::schemas().latest().version;
    all.extend(vectors_since(
        latest,
        bare(14, StockReductionFail { reason: StockFailure::DeadlinePassed, product_id: None }),
    ));
    json!({
        "@generated": "by `cargo test -p saga-generated --test go_vectors` (UPDATE_GO_VECTORS=1); do not edit",
        "vectors": all,
        "status": status_machine(),
    })
}

/// Every question a status owner asks its machine, and this crate's answer: for each status,
/// whether it ends the saga, its timeout, and where each event of the saga moves it (null:
/// an illegal transition); for each event, whether it triggers a transition and may park;
/// and every path from the initial status to an end that the scenarios walk.
fn status_machine() -> Value {
    let statuses: Vec<Value> = OrderStatus::ALL
        .iter()
        .map(|s| {
            let next: serde_json::Map<String, Value> = EventType::ALL
                .iter()
                .map(|e| (e.as_str().to_string(), s.on_event(*e).map(|to| json!(to.as_str())).unwrap_or(Value::Null)))
                .collect();
            json!({
                "status": s.as_str(),
                "terminal": s.is_terminal(),
                "timeout": s.timeout().map(|t| json!({
                    "after_ms": t.after.as_millis() as u64,
                    "to": t.to.as_str(),
                    "emits": t.emits.map(EventType::as_str),
                })),
                "next": next,
            })
        })
        .collect();
    let events: Vec<Value> = EventType::ALL
        .iter()
        .map(
            |e| json!({ "event": e.as_str(), "trigger": OrderStatus::is_trigger(*e), "parks": OrderStatus::parks(*e) }),
        )
        .collect();
    // Every path a scenario walks, each step as [event or null for a timeout, status].
    let paths: Vec<Value> = scenario::PATHS
        .iter()
        .map(|path| {
            path.iter()
                .map(|step| match step {
                    scenario::OrderPathStep::Event(e, to) => json!([e.as_str(), to.as_str()]),
                    scenario::OrderPathStep::Timeout(to) => json!([null, to.as_str()]),
                })
                .collect()
        })
        .collect();
    json!({ "initial": OrderStatus::INITIAL.as_str(), "statuses": statuses, "events": events, "paths": paths })
}

#[test]
fn the_go_vectors_are_what_this_crate_writes_and_reads() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(VECTORS);
    let fresh = serde_json::to_string_pretty(&vectors()).expect("serialises") + "\n";
    if std::env::var_os("UPDATE_GO_VECTORS").is_some() {
        std::fs::create_dir_all(path.parent().expect("has a folder")).expect("creates the folder");
        std::fs::write(&path, &fresh).expect("writes the vectors");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "{} is stale: rerun this test with UPDATE_GO_VECTORS=1 and commit the file",
        path.display()
    );
}

#[test]
fn every_event_has_a_vector_for_every_version() {
    let vectors = vectors();
    let count = vectors["vectors"].as_array().map(Vec::len).unwrap_or(0);
    let published: usize = topology::EVENTS.len();
    assert_eq!(published, 12, "a new event needs a sample above");
    assert!(count > published, "older versions are in the vectors: {count}");
}
