//! The wire format: Avro single-object encoding round trips, schema fingerprints, schema
//! evolution, decoding by topic.

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use saga_generated::envelope::{HEADER_LEN, SINGLE_OBJECT_MARKER, SchemaVersion};
use saga_generated::topics::{InventoryEvents, OrderEvents, PaymentEvents, TopicMessage};
use saga_generated::types::{CancelReason, OrderItem, PaymentFailure, SagaContext, StockFailure};
use saga_generated::*;
use uuid::Uuid;

fn ts(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).expect("in range")
}

fn item(n: u8) -> OrderItem {
    OrderItem { product_id: Uuid::from_bytes([n; 16]), quantity: i32::from(n) }
}

/// Avro `timestamp-micros` keeps microseconds, so test data uses them.
fn order_created() -> Envelope<OrderCreated> {
    Envelope::new(
        Uuid::now_v7(),
        OrderCreated {
            user_id: Uuid::now_v7(),
            items: vec![item(1), item(2)],
            created_at: ts(Utc::now().timestamp_micros()),
        },
    )
    .with_trace(TraceContext {
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        tracestate: None,
    })
}

fn round_trip<E: Event>(e: Envelope<E>) {
    let bytes = e.encode().expect("encodes");
    assert_eq!(bytes[..2], SINGLE_OBJECT_MARKER);
    assert_eq!(bytes[2..HEADER_LEN], E::FINGERPRINT);
    let back = Envelope::<E>::decode(&bytes).expect("decodes");
    assert_eq!(back, e);
    let msg = TopicMessage::decode(E::TOPIC, &bytes).expect("decodes by topic");
    let record = e.to_outbox().expect("outbox record");
    assert_eq!(record.topic, E::TOPIC);
    assert_eq!(record.event_type, E::EVENT_TYPE);
    assert_eq!(record.partition_key, e.order_id.to_string());
    assert_eq!(TopicMessage::decode(&record.topic, &record.payload).expect("decodes"), msg);
}

#[test]
fn every_event_round_trips() {
    let key = Uuid::now_v7();
    let user = Uuid::now_v7();
    round_trip(order_created());
    round_trip(Envelope::new(key, StockReductionSuccess { user_id: user, amount: Money(500) }));
    round_trip(Envelope::new(
        key,
        StockReductionFail { reason: StockFailure::InsufficientStock, product_id: Some(Uuid::now_v7()) },
    ));
    round_trip(Envelope::new(key, StockReductionFail { reason: StockFailure::UnknownProduct, product_id: None }));
    round_trip(Envelope::new(key, StockReleased { items: vec![] }));
    round_trip(Envelope::new(key, PaymentCompleted { user_id: user, amount: Money(-1) }));
    round_trip(Envelope::new(
        key,
        PaymentFail { reason: PaymentFailure::InsufficientBalance, detail: "balance 3 < 5".into() },
    ));
    round_trip(Envelope::new(key, PaymentRefunded { user_id: user, amount: Money(i64::MAX) }));
    round_trip(Envelope::new(key, OrderCompleted { completed_at: ts(0) }));
    round_trip(Envelope::new(
        key,
        OrderCancelled { reason: CancelReason::TimedOut, status_at_cancel: "created".into() },
    ));
}

#[test]
fn topic_enum_picks_the_event_by_fingerprint() {
    let e = order_created();
    let bytes = e.encode().expect("encodes");
    match OrderEvents::decode(&bytes).expect("decodes") {
        OrderEvents::OrderCreated(back) => assert_eq!(back, e),
        other => panic!("wrong event {other:?}"),
    }
    // An order-events message is not an inventory-events message.
    assert!(matches!(InventoryEvents::decode(&bytes), Err(DecodeError::UnknownFingerprint { .. })));
    assert!(matches!(PaymentEvents::decode(&bytes[..5]), Err(DecodeError::TooShort { len: 5 })));
    let mut bad = bytes.clone();
    bad[0] = 0;
    assert!(matches!(OrderEvents::decode(&bad), Err(DecodeError::NotSingleObject)));
    assert!(matches!(TopicMessage::decode("nope", &bytes), Err(DecodeError::UnknownTopic(_))));
}

#[test]
fn truncated_or_garbage_payload_is_an_error_not_a_panic() {
    let bytes = order_created().encode().expect("encodes");
    for cut in HEADER_LEN..bytes.len() {
        assert!(Envelope::<OrderCreated>::decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
}

/// Every version the generated code knows is the committed `.avro/<event>/v<N>.avsc` with
/// the standard fingerprint, the newest is the one written, and `index.json` lists them all.
#[test]
fn the_schema_history_matches_the_committed_files() {
    let avro = format!("{}/../.avro", env!("CARGO_MANIFEST_DIR"));
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{avro}/index.json")).expect("index exists"))
            .expect("JSON");
    let indexed = index["schemas"].as_array().expect("a list of schemas");
    fn check<E: Event>(avro: &str, indexed: &[serde_json::Value]) {
        let versions = E::schemas().versions();
        for (v, number) in versions.iter().zip(1..) {
            assert_eq!(v.version, number, "{} versions are numbered from 1", E::EVENT_TYPE);
            // The fingerprint of the specification's Parsing Canonical Form (not apache-avro's).
            let embedded: serde_json::Value = serde_json::from_str(v.json).expect("schema is JSON");
            assert_eq!(saga_wire::canonical::fingerprint(&embedded).ok(), Some(v.fingerprint), "{}", E::EVENT_TYPE);
            let path = format!("{avro}/{}/v{}.avsc", E::EVENT_TYPE, v.version);
            let file: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).expect("avsc file exists")).expect("JSON");
            assert_eq!(
                saga_wire::canonical::canonical_form(&file).ok(),
                saga_wire::canonical::canonical_form(&embedded).ok()
            );
            let hex: String = v.fingerprint.iter().map(|b| format!("{b:02x}")).collect();
            let entry = indexed.iter().find(|e| e["fingerprint"] == hex.as_str()).expect("indexed");
            assert_eq!(entry["event"], E::EVENT_TYPE);
            assert_eq!(entry["written"], v.version == E::schemas().latest().version, "{path}");
        }
        assert_eq!(E::schemas().latest().fingerprint, E::FINGERPRINT);
        let info = topology::event_info(E::EVENT_TYPE).expect("listed in topology");
        assert_eq!(info.fingerprint, E::FINGERPRINT);
        assert_eq!(info.topic, E::TOPIC);
    }
    check::<OrderCreated>(&avro, indexed);
    check::<OrderCompleted>(&avro, indexed);
    check::<OrderCancelled>(&avro, indexed);
    check::<StockReductionSuccess>(&avro, indexed);
    check::<StockReductionFail>(&avro, indexed);
    check::<StockReleased>(&avro, indexed);
    check::<PaymentCompleted>(&avro, indexed);
    check::<PaymentFail>(&avro, indexed);
    check::<PaymentRefunded>(&avro, indexed);
    assert_eq!(topology::EVENTS.len(), EventType::ALL.len());
}

/// A message written with any earlier published version of its event's schema decodes,
/// through its topic, into the current types. Fields added since (the envelope's `deadline`,
/// `product_id` of a stock failure) get their defaults; removed ones (`unit_price`) are skipped.
#[test]
fn every_earlier_schema_version_decodes() {
    fn check<E: Event>(message: Envelope<E>, decode: fn(&[u8]) -> Result<(), DecodeError>) -> usize {
        let versions = E::schemas().versions();
        for version in &versions[..versions.len() - 1] {
            let bytes = saga_wire::testing::encoded_with(version, message.to_avro_value())
                .expect("encodes as the older version");
            let back =
                Envelope::<E>::decode(&bytes).unwrap_or_else(|e| panic!("{} v{}: {e}", E::EVENT_TYPE, version.version));
            assert_eq!((back.event_id, back.order_id, back.deadline), (message.event_id, message.order_id, None));
            decode(&bytes).unwrap_or_else(|e| panic!("{} v{} by topic: {e}", E::EVENT_TYPE, version.version));
        }
        versions.len() - 1
    }
    let key = Uuid::now_v7();
    let failure = StockReductionFail { reason: StockFailure::UnknownProduct, product_id: Some(Uuid::now_v7()) };
    let older = check(order_created(), |b| OrderEvents::decode(b).map(drop))
        + check(Envelope::new(key, failure), |b| InventoryEvents::decode(b).map(drop))
        + check(Envelope::new(key, StockReleased { items: vec![item(3)] }), |b| InventoryEvents::decode(b).map(drop))
        + check(Envelope::new(key, PaymentCompleted { user_id: Uuid::now_v7(), amount: Money(120) }), |b| {
            PaymentEvents::decode(b).map(drop)
        });
    assert!(older >= 5, "the committed history has earlier versions to check");
}

/// A message whose fingerprint is no published version of its event is refused (and goes to
/// the dead-letter topic): a schema the history does not hold cannot be resolved.
#[test]
fn a_version_missing_from_the_history_is_refused() {
    let mut json: serde_json::Value =
        serde_json::from_str(<StockReductionFail as Event>::schemas().latest().json).expect("schema is JSON");
    json["fields"].as_array_mut().expect("envelope fields").retain(|f| f["name"] != "tracestate");
    let fingerprint = saga_wire::canonical::fingerprint(&json).expect("canonical form");
    let unknown = SchemaVersion { version: 99, fingerprint, json: Box::leak(json.to_string().into_boxed_str()) };
    let failure = StockReductionFail { reason: StockFailure::InsufficientStock, product_id: None };
    let bytes = saga_wire::testing::encoded_with(&unknown, Envelope::new(Uuid::now_v7(), failure).to_avro_value())
        .expect("encodes");
    assert!(matches!(Envelope::<StockReductionFail>::decode(&bytes), Err(DecodeError::FingerprintMismatch { .. })));
    assert!(matches!(InventoryEvents::decode(&bytes), Err(DecodeError::UnknownFingerprint { .. })));
}

fn arb_item() -> impl Strategy<Value = OrderItem> {
    (any::<[u8; 16]>(), any::<i32>())
        .prop_map(|(id, quantity)| OrderItem { product_id: Uuid::from_bytes(id), quantity })
}

// Timestamps within chrono's range, at the microsecond precision Avro keeps.
fn arb_time() -> impl Strategy<Value = DateTime<Utc>> {
    (-8_000_000_000_000_000i64..8_000_000_000_000_000i64).prop_map(ts)
}

fn arb_trace() -> impl Strategy<Value = TraceContext> {
    (proptest::option::of(".{0,60}"), proptest::option::of(".{0,30}"))
        .prop_map(|(traceparent, tracestate)| TraceContext { traceparent, tracestate })
}

proptest! {
    #[test]
    fn order_created_round_trips(
        key in any::<[u8; 16]>(),
        id in any::<[u8; 16]>(),
        user in any::<[u8; 16]>(),
        items in proptest::collection::vec(arb_item(), 0..8),
        created_at in arb_time(),
        occurred_at in arb_time(),
        trace in arb_trace(),
        deadline in proptest::option::of(arb_time()),
        context in proptest::option::of(proptest::collection::vec(arb_item(), 0..8)),
    ) {
        let e = Envelope {
            event_id: Uuid::from_bytes(id),
            order_id: Uuid::from_bytes(key),
            occurred_at,
            trace,
            deadline,
            context: context.map(|items| SagaContext { items }),
            payload: OrderCreated { user_id: Uuid::from_bytes(user), items, created_at },
        };
        let bytes = e.encode().expect("encodes");
        prop_assert_eq!(Envelope::<OrderCreated>::decode(&bytes).expect("decodes"), e);
    }

    #[test]
    fn payment_fail_round_trips(detail in ".*", insufficient in any::<bool>(), key in any::<[u8; 16]>()) {
        let reason = if insufficient { PaymentFailure::InsufficientBalance } else { PaymentFailure::UnknownUser };
        let e = Envelope::new(Uuid::from_bytes(key), PaymentFail { reason, detail });
        let bytes = e.encode().expect("encodes");
        prop_assert_eq!(Envelope::<PaymentFail>::decode(&bytes).expect("decodes"), e);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = TopicMessage::decode("order-events", &bytes);
        let mut framed = SINGLE_OBJECT_MARKER.to_vec();
        framed.extend_from_slice(&OrderCreated::FINGERPRINT);
        framed.extend_from_slice(&bytes);
        let _ = OrderEvents::decode(&framed);
    }
}

/// An event of a later version of the saga that this build does not know at all (a new
/// event on a topic it reads): while its schema is unknown it is undecodable; once the
/// schema is learned from the schema topic, a consumer skips it, as its own spec
/// subscribes to nothing of the kind. A newer version of an event it knows decodes.
#[test]
fn a_registered_event_this_build_does_not_know_is_skipped_and_a_newer_version_decodes() {
    use saga_generated::handlers::{ProductInbound, UserInbound};

    let gift = serde_json::json!({
        "type": "record", "name": "GiftWrapped", "namespace": "platform.saga.order_fulfillment",
        "fields": [{"name": "order_id", "type": "string"}]
    });
    let fingerprint = saga_wire::canonical::fingerprint(&gift).expect("canonical");
    let schema = apache_avro::Schema::parse(&gift).expect("schema");
    let record = apache_avro::types::Value::Record(vec![("order_id".into(), "o-1".into())]);
    let mut bytes = SINGLE_OBJECT_MARKER.to_vec();
    bytes.extend_from_slice(&fingerprint);
    bytes.extend(apache_avro::to_avro_datum(&schema, record).expect("encodes"));
    assert!(ProductInbound::decode("order-events", &bytes).is_err(), "unknown before it is learned");
    saga_wire::learned::learn(fingerprint, &gift.to_string()).expect("learned");
    assert!(matches!(ProductInbound::decode("order-events", &bytes), Ok(None)), "skipped once learned");

    // `stock.reduction.success` of a later version, with a field this build lacks.
    let mut next: serde_json::Value =
        serde_json::from_str(StockReductionSuccess::schemas().latest().json).expect("JSON");
    next["fields"].as_array_mut().expect("fields").push(serde_json::json!(
        {"name": "warehouse", "type": "string", "default": "main"}
    ));
    let fingerprint = saga_wire::canonical::fingerprint(&next).expect("canonical");
    let json: &'static str = Box::leak(next.to_string().into_boxed_str());
    let version = SchemaVersion { version: 99, fingerprint, json };
    let reply = Envelope::new(Uuid::now_v7(), StockReductionSuccess { user_id: Uuid::now_v7(), amount: Money(1_250) });
    let bytes = saga_wire::testing::encoded_with(&version, reply.to_avro_value()).expect("encodes");
    assert!(UserInbound::decode("inventory-events", &bytes).is_err(), "unknown before it is learned");
    saga_wire::learned::learn(fingerprint, json).expect("learned");
    match UserInbound::decode("inventory-events", &bytes) {
        Ok(Some(UserInbound::StockReductionSuccess(decoded))) => assert_eq!(decoded.payload, reply.payload),
        other => panic!("the newer version decodes as the event it is: {other:?}"),
    }
}
