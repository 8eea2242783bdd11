//! The wire format: Avro single-object encoding round trips, schema fingerprints, schema
//! evolution, decoding by topic.

use apache_avro::Schema;
use apache_avro::rabin::Rabin;
use apache_avro::types::Value;
use chrono::{DateTime, Utc};
use proptest::prelude::*;
use saga_generated::envelope::{AvroValue, HEADER_LEN, SINGLE_OBJECT_MARKER};
use saga_generated::topics::{InventoryEvents, OrderEvents, PaymentEvents, TopicMessage};
use saga_generated::types::{CancelReason, OrderItem, PaymentFailure, StockFailure};
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

#[test]
fn fingerprints_and_schemas_match_the_committed_avsc_files() {
    fn check<E: Event>() {
        // The fingerprint of the specification's Parsing Canonical Form (not apache-avro's).
        let json: serde_json::Value = serde_json::from_str(E::SCHEMA_JSON).expect("schema is JSON");
        let computed = saga_codegen::emit::canonical::fingerprint(&json).expect("canonical form");
        assert_eq!(computed, E::FINGERPRINT, "{}", E::EVENT_TYPE);
        let path = format!("{}/../.avro/{}.avsc", env!("CARGO_MANIFEST_DIR"), E::EVENT_TYPE);
        let text = std::fs::read_to_string(&path).expect("avsc file exists");
        let file = Schema::parse_str(&text).expect("avsc parses");
        assert_eq!(file.canonical_form(), E::schema().canonical_form(), "{path}");
        let info = topology::event_info(E::EVENT_TYPE).expect("listed in topology");
        assert_eq!(info.fingerprint, E::FINGERPRINT);
        assert_eq!(info.topic, E::TOPIC);
    }
    check::<OrderCreated>();
    check::<OrderCompleted>();
    check::<OrderCancelled>();
    check::<StockReductionSuccess>();
    check::<StockReductionFail>();
    check::<StockReleased>();
    check::<PaymentCompleted>();
    check::<PaymentFail>();
    check::<PaymentRefunded>();
    assert_eq!(topology::EVENTS.len(), EventType::ALL.len());
}

/// Data written before a field was added decodes with the new schema: the field gets its
/// default. Here the old `stock.reduction.fail` lacked the optional `product_id`, and its
/// envelope the `deadline`.
#[test]
fn adding_a_field_with_a_default_decodes_old_data() {
    let mut json: serde_json::Value =
        serde_json::from_str(<StockReductionFail as Event>::SCHEMA_JSON).expect("schema is JSON");
    let payload_fields = json["fields"]
        .as_array_mut()
        .and_then(|f| f.iter_mut().find(|f| f["name"] == "payload"))
        .and_then(|p| p["type"]["fields"].as_array_mut())
        .expect("payload record");
    payload_fields.retain(|f| f["name"] != "product_id");
    json["fields"].as_array_mut().expect("envelope fields").retain(|f| f["name"] != "deadline");
    let old = Schema::parse_str(&json.to_string()).expect("old schema parses");
    let old_fp = old.fingerprint::<Rabin>().bytes;
    assert_ne!(old_fp, StockReductionFail::FINGERPRINT.to_vec());

    let key = Uuid::now_v7();
    let event_id = Uuid::now_v7();
    let old_value = Value::Record(vec![
        ("event_id".into(), Value::Uuid(event_id)),
        ("order_id".into(), Value::Uuid(key)),
        ("occurred_at".into(), Value::TimestampMicros(1_700_000_000_000_000)),
        ("traceparent".into(), None::<String>.to_avro()),
        ("tracestate".into(), None::<String>.to_avro()),
        ("payload".into(), Value::Record(vec![("reason".into(), StockFailure::UnknownProduct.to_avro())])),
    ]);
    let mut bytes = SINGLE_OBJECT_MARKER.to_vec();
    bytes.extend_from_slice(&old_fp);
    bytes.extend(apache_avro::to_avro_datum(&old, old_value).expect("old data encodes"));

    // The current schema alone cannot read it (different fingerprint)...
    assert!(matches!(Envelope::<StockReductionFail>::decode(&bytes), Err(DecodeError::FingerprintMismatch { .. })));
    // ...resolved against the writer's schema it can, with the default filled in.
    let back = Envelope::<StockReductionFail>::decode_with_writer_schema(&bytes, &old).expect("resolves");
    assert_eq!(back.event_id, event_id);
    assert_eq!(back.order_id, key);
    assert_eq!(back.deadline, None);
    assert_eq!(back.payload, StockReductionFail { reason: StockFailure::UnknownProduct, product_id: None });
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
    ) {
        let e = Envelope {
            event_id: Uuid::from_bytes(id),
            order_id: Uuid::from_bytes(key),
            occurred_at,
            trace,
            deadline,
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
