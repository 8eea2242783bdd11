//! Fingerprints as every Avro implementation computes them.
//!
//! `payment.completed` as published before its envelope got a `deadline`
//! (version 1 in the schema history):
//! the issue that found our fingerprints unreadable elsewhere measured its
//! CRC-64-AVRO fingerprint with fastavro (and Java's `SchemaNormalization`
//! agrees) as `29 a5 a8 e5 2e 67 af a8`, where `apache-avro`'s own canonical
//! form gave `e2 07 f8 dd 95 43 f4 66`. The live check against fastavro of
//! every current schema is `tests/tests/stack/wire_fastavro.rs`.

use saga_wire::canonical::{canonical_form, fingerprint};

#[test]
fn payment_completed_has_the_fingerprint_other_implementations_compute() {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../.avro/payment.completed/v1.avsc")).expect("JSON");
    assert_eq!(fingerprint(&schema).expect("fingerprint"), [0x29, 0xa5, 0xa8, 0xe5, 0x2e, 0x67, 0xaf, 0xa8]);
    let canonical = canonical_form(&schema).expect("canonical form");
    assert!(canonical.starts_with(
        r#"{"name":"platform.saga.order_fulfillment.PaymentCompleted","type":"record","fields":[{"name":"event_id","type":"string"},"#
    ));
}
