//! Emits `envelope.rs`, the spec-independent part of the generated crate: envelope, event
//! trait, Avro helpers, outbox record, errors. Emitted (not a dependency) so the generated
//! crate is self-contained; only the saga key's name varies.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use crate::ir::Saga;

pub(super) fn module(saga: &Saga) -> TokenStream {
    let key = format_ident!("{}", saga.key);
    let key_str = &saga.key;
    let key_doc = format!(" Saga key (`{}`): identifies the saga instance and is the Kafka partition key.", saga.key);
    quote! {
        //! Envelope, event trait and Avro single-object encoding shared by every event.
        //!
        //! Wire format: Avro single-object encoding, `C3 01`, the 8-byte little-endian CRC-64-AVRO
        //! fingerprint of the writer schema, then the Avro binary datum. It needs no schema registry
        //! service: the fingerprint is derived from the schema itself, and the schemas are committed
        //! beside the code, so producer and consumer agree by construction.

        use apache_avro::Schema;
        use saga_contract::OutboxRecord;
        use apache_avro::types::Value;
        use chrono::{DateTime, Utc};
        use uuid::Uuid;

        use super::events::EventType;

        /// First two bytes of every message: the Avro single-object encoding marker.
        pub const SINGLE_OBJECT_MARKER: [u8; 2] = [0xC3, 0x01];

        /// Length of the single-object header: marker plus 8-byte fingerprint.
        pub const HEADER_LEN: usize = 10;

        /// An amount of money in integer minor units (e.g. cents); never a float.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct Money(pub i64);

        impl Money {
            pub const ZERO: Money = Money(0);

            pub const fn from_minor(minor: i64) -> Self {
                Money(minor)
            }

            pub const fn minor(self) -> i64 {
                self.0
            }

            pub fn checked_add(self, other: Money) -> Option<Money> {
                self.0.checked_add(other.0).map(Money)
            }

            pub fn checked_mul(self, factor: i64) -> Option<Money> {
                self.0.checked_mul(factor).map(Money)
            }
        }

        /// W3C trace context, carried with every event so one trace spans the whole saga.
        #[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
        pub struct TraceContext {
            pub traceparent: Option<String>,
            pub tracestate: Option<String>,
        }

        /// Why bytes could not become an event. Permanent: retrying will not help, so the
        /// message belongs in the dead-letter topic.
        #[derive(Debug, thiserror::Error)]
        pub enum DecodeError {
            #[error("message shorter than the single-object header ({len} bytes)")]
            TooShort { len: usize },
            #[error("message does not start with the Avro single-object marker C3 01")]
            NotSingleObject,
            #[error("no event on topic `{topic}` has schema fingerprint {fingerprint:02x?}")]
            UnknownFingerprint { topic: String, fingerprint: [u8; 8] },
            #[error("schema fingerprint {found:02x?} is not the one of `{event_type}` ({expected:02x?})")]
            FingerprintMismatch { event_type: &'static str, expected: [u8; 8], found: [u8; 8] },
            #[error("topic `{0}` is not consumed here")]
            UnknownTopic(String),
            #[error("Avro: {0}")]
            Avro(#[from] apache_avro::Error),
            #[error("`{record}` has no field `{field}`")]
            MissingField { record: &'static str, field: &'static str },
            #[error("expected {expected} in `{at}`, found {found}")]
            Mismatch { at: &'static str, expected: &'static str, found: String },
            #[error("`{symbol}` is not a symbol of enum `{enum_name}`")]
            UnknownSymbol { enum_name: &'static str, symbol: String },
        }

        /// Why an event could not be encoded (a value the schema rejects).
        #[derive(Debug, thiserror::Error)]
        #[error("cannot encode `{event_type}`: {source}")]
        pub struct EncodeError {
            pub event_type: &'static str,
            #[source]
            pub source: apache_avro::Error,
        }

        /// Conversion between a Rust value and an Avro value, per field type.
        pub trait AvroValue: Sized {
            fn to_avro(&self) -> Value;
            fn from_avro(value: Value, at: &'static str) -> Result<Self, DecodeError>;
        }

        fn mismatch(at: &'static str, expected: &'static str, found: &Value) -> DecodeError {
            DecodeError::Mismatch { at, expected, found: format!("{found:?}") }
        }

        impl AvroValue for Uuid {
            fn to_avro(&self) -> Value {
                Value::Uuid(*self)
            }
            fn from_avro(value: Value, at: &'static str) -> Result<Self, DecodeError> {
                match value {
                    Value::Uuid(u) => Ok(u),
                    Value::String(ref s) => Uuid::parse_str(s).map_err(|_| mismatch(at, "uuid", &value)),
                    other => Err(mismatch(at, "uuid", &other)),
                }
            }
        }

        impl AvroValue for String {
            fn to_avro(&self) -> Value {
                Value::String(self.clone())
            }
            fn from_avro(value: Value, at: &'static str) -> Result<Self, DecodeError> {
                match value {
                    Value::String(s) => Ok(s),
                    other => Err(mismatch(at, "string", &other)),
                }
            }
        }

        impl AvroValue for bool {
            fn to_avro(&self) -> Value {
                Value::Boolean(*self)
            }
            fn from_avro(value: Value, at: &'static str) -> Result<Self, DecodeError> {
                match value {
                    Value::Boolean(b) => Ok(b),
                    other => Err(mismatch(at, "boolean", &other)),
                }
            }
        }

        impl AvroValue for i32 {
            fn to_avro(&self) -> Value {
                Value::Int(*self)
            }
            fn from_avro(value: Value, at: &'static str) -> Result<Self, DecodeError> {
                match value {
                    Value::Int(i) => Ok(i),
                    other => Err(mismatch(at, "int", &other)),
                }
            }
        }

        impl AvroValue for i64 {
            fn to_avro(&self) -> Value {
                Value::Long(*self)
            }
            fn from_avro(value: Value, at: &'static str) -> Result<Self, DecodeError> {
                match value {
                    Value::Long(i) => Ok(i),
                    // Schema resolution may promote an int writer to a long reader.
                    Value::Int(i) => Ok(i64::from(i)),
                    other => Err(mismatch(at, "long", &other)),
                }
            }
        }

        impl AvroValue for f64 {
            fn to_avro(&self) -> Value {
                Value::Double(*self)
            }
            fn from_avro(value: Value, at: &'static str) -> Result<Self, DecodeError> {
                match value {
                    Value::Double(d) => Ok(d),
                    other => Err(mismatch(at, "double", &other)),
                }
            }
        }

        impl AvroValue for Money {
            fn to_avro(&self) -> Value {
                Value::Long(self.0)
            }
            fn from_avro(value: Value, at: &'static str) -> Result<Self, DecodeError> {
                i64::from_avro(value, at).map(Money)
            }
        }

        impl AvroValue for DateTime<Utc> {
            fn to_avro(&self) -> Value {
                Value::TimestampMicros(self.timestamp_micros())
            }
            fn from_avro(value: Value, at: &'static str) -> Result<Self, DecodeError> {
                match value {
                    Value::TimestampMicros(us) | Value::Long(us) => {
                        DateTime::from_timestamp_micros(us).ok_or_else(|| mismatch(at, "timestamp in range", &value))
                    }
                    other => Err(mismatch(at, "timestamp-micros", &other)),
                }
            }
        }

        impl<T: AvroValue> AvroValue for Vec<T> {
            fn to_avro(&self) -> Value {
                Value::Array(self.iter().map(AvroValue::to_avro).collect())
            }
            fn from_avro(value: Value, at: &'static str) -> Result<Self, DecodeError> {
                match value {
                    Value::Array(items) => items.into_iter().map(|v| T::from_avro(v, at)).collect(),
                    other => Err(mismatch(at, "array", &other)),
                }
            }
        }

        impl<T: AvroValue> AvroValue for Option<T> {
            fn to_avro(&self) -> Value {
                // Optional fields are the union ["null", T].
                match self {
                    None => Value::Union(0, Box::new(Value::Null)),
                    Some(v) => Value::Union(1, Box::new(v.to_avro())),
                }
            }
            fn from_avro(value: Value, at: &'static str) -> Result<Self, DecodeError> {
                match value {
                    Value::Null => Ok(None),
                    Value::Union(_, inner) => match *inner {
                        Value::Null => Ok(None),
                        v => T::from_avro(v, at).map(Some),
                    },
                    v => T::from_avro(v, at).map(Some),
                }
            }
        }

        /// Removes a named field from a decoded record.
        pub fn take_field(
            fields: &mut Vec<(String, Value)>,
            record: &'static str,
            field: &'static str,
        ) -> Result<Value, DecodeError> {
            match fields.iter().position(|(n, _)| n == field) {
                Some(i) => Ok(fields.swap_remove(i).1),
                None => Err(DecodeError::MissingField { record, field }),
            }
        }

        /// The fields of a decoded record.
        pub fn record_fields(value: Value, record: &'static str) -> Result<Vec<(String, Value)>, DecodeError> {
            match value {
                Value::Record(fields) => Ok(fields),
                other => Err(mismatch(record, "record", &other)),
            }
        }

        /// One event of the saga: its payload struct plus what the spec says about it.
        pub trait Event: AvroValue + Clone + std::fmt::Debug + PartialEq + Send + Sync + 'static {
            /// The spec's name, e.g. `order.created`.
            const EVENT_TYPE: &'static str;
            const KIND: EventType;
            const TOPIC: &'static str;
            const PUBLISHER: &'static str;
            /// The writer schema as JSON (same as the committed `.avsc`).
            const SCHEMA_JSON: &'static str;
            /// CRC-64-AVRO fingerprint of the schema's parsing canonical form.
            const FINGERPRINT: [u8; 8];
            /// The parsed schema (parsed once).
            fn schema() -> &'static Schema;
        }

        /// An event as it travels: metadata common to all events plus the typed payload.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Envelope<E> {
            /// Unique per event; the inbox deduplicates on it.
            pub event_id: Uuid,
            #[doc = #key_doc]
            pub #key: Uuid,
            pub occurred_at: DateTime<Utc>,
            pub trace: TraceContext,
            /// When the status owner gives up on the saga unless it has the answer to this
            /// event; `None` when no answer is awaited by a deadline.
            pub deadline: Option<DateTime<Utc>>,
            pub payload: E,
        }

        /// Truncates to what `timestamp-micros` keeps, so an envelope equals its decoded copy.
        fn now_micros() -> DateTime<Utc> {
            let now = Utc::now();
            DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
        }

        impl<E> Envelope<E> {
            /// An event published in reply: same saga key and trace, new id and time; no
            /// deadline (the status owner sets the next one when the reply reaches it).
            pub fn reply<R: Event>(&self, payload: R) -> Envelope<R> {
                Envelope {
                    event_id: Uuid::now_v7(),
                    #key: self.#key,
                    occurred_at: now_micros(),
                    trace: self.trace.clone(),
                    deadline: None,
                    payload,
                }
            }

            /// The saga key, whatever the spec names it.
            pub fn saga_key(&self) -> Uuid {
                self.#key
            }

            /// The metadata without the payload (what a reply needs from its cause).
            pub fn meta(&self) -> Envelope<()> {
                Envelope {
                    event_id: self.event_id,
                    #key: self.#key,
                    occurred_at: self.occurred_at,
                    trace: self.trace.clone(),
                    deadline: self.deadline,
                    payload: (),
                }
            }
        }

        impl<E: Event> Envelope<E> {
            /// A new event of a saga: fresh time-ordered id, the current time, no trace context.
            pub fn new(#key: Uuid, payload: E) -> Self {
                Envelope {
                    event_id: Uuid::now_v7(),
                    #key,
                    occurred_at: now_micros(),
                    trace: TraceContext::default(),
                    deadline: None,
                    payload,
                }
            }

            pub fn with_trace(mut self, trace: TraceContext) -> Self {
                self.trace = trace;
                self
            }

            /// The deadline of the answer to this event (truncated to what `timestamp-micros` keeps).
            pub fn with_deadline(mut self, deadline: Option<DateTime<Utc>>) -> Self {
                self.deadline = deadline.map(|d| DateTime::from_timestamp_micros(d.timestamp_micros()).unwrap_or(d));
                self
            }

            pub fn event_type(&self) -> &'static str {
                E::EVENT_TYPE
            }

            /// The Kafka partition key: the saga key, hyphenated.
            pub fn partition_key(&self) -> String {
                self.#key.hyphenated().to_string()
            }

            /// The whole message as an Avro record value.
            pub fn to_avro_value(&self) -> Value {
                Value::Record(Vec::from([
                    ("event_id".to_string(), self.event_id.to_avro()),
                    (#key_str.to_string(), self.#key.to_avro()),
                    ("occurred_at".to_string(), self.occurred_at.to_avro()),
                    ("traceparent".to_string(), self.trace.traceparent.to_avro()),
                    ("tracestate".to_string(), self.trace.tracestate.to_avro()),
                    ("deadline".to_string(), self.deadline.to_avro()),
                    ("payload".to_string(), self.payload.to_avro()),
                ]))
            }

            /// Rebuilds an envelope from a decoded Avro record.
            pub fn from_avro_value(value: Value) -> Result<Self, DecodeError> {
                let mut f = record_fields(value, E::EVENT_TYPE)?;
                let at = E::EVENT_TYPE;
                Ok(Envelope {
                    event_id: Uuid::from_avro(take_field(&mut f, at, "event_id")?, "event_id")?,
                    #key: Uuid::from_avro(take_field(&mut f, at, #key_str)?, #key_str)?,
                    occurred_at: DateTime::from_avro(take_field(&mut f, at, "occurred_at")?, "occurred_at")?,
                    trace: TraceContext {
                        traceparent: Option::from_avro(take_field(&mut f, at, "traceparent")?, "traceparent")?,
                        tracestate: Option::from_avro(take_field(&mut f, at, "tracestate")?, "tracestate")?,
                    },
                    deadline: Option::from_avro(take_field(&mut f, at, "deadline")?, "deadline")?,
                    payload: E::from_avro(take_field(&mut f, at, "payload")?, at)?,
                })
            }

            /// Avro single-object encoding: marker, fingerprint, datum.
            pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
                let datum = apache_avro::to_avro_datum(E::schema(), self.to_avro_value())
                    .map_err(|source| EncodeError { event_type: E::EVENT_TYPE, source })?;
                let mut out = Vec::with_capacity(HEADER_LEN + datum.len());
                out.extend_from_slice(&SINGLE_OBJECT_MARKER);
                out.extend_from_slice(&E::FINGERPRINT);
                out.extend_from_slice(&datum);
                Ok(out)
            }

            /// Decodes a message written with this event's current schema.
            pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
                let found = fingerprint_of(bytes)?;
                if found != E::FINGERPRINT {
                    return Err(DecodeError::FingerprintMismatch { event_type: E::EVENT_TYPE, expected: E::FINGERPRINT, found });
                }
                let mut datum = &bytes[HEADER_LEN..];
                let value = apache_avro::from_avro_datum(E::schema(), &mut datum, None)?;
                Self::from_avro_value(value)
            }

            /// Decodes a message written with an older (or newer) schema of this event, resolving
            /// it into the current one: fields added with a default get the default.
            pub fn decode_with_writer_schema(bytes: &[u8], writer: &Schema) -> Result<Self, DecodeError> {
                fingerprint_of(bytes)?;
                let mut datum = &bytes[HEADER_LEN..];
                let value = apache_avro::from_avro_datum(writer, &mut datum, Some(E::schema()))?;
                Self::from_avro_value(value)
            }

            /// Kafka headers: for humans and tools; consumers decode from the payload alone.
            pub fn headers(&self) -> Vec<(String, String)> {
                let mut h = Vec::from([
                    ("event-type".to_string(), E::EVENT_TYPE.to_string()),
                    ("event-id".to_string(), self.event_id.to_string()),
                    ("content-type".to_string(), "application/vnd.apache.avro+binary".to_string()),
                ]);
                if let Some(tp) = &self.trace.traceparent {
                    h.push(("traceparent".to_string(), tp.clone()));
                }
                if let Some(ts) = &self.trace.tracestate {
                    h.push(("tracestate".to_string(), ts.clone()));
                }
                if let Some(deadline) = &self.deadline {
                    h.push(("saga-deadline".to_string(), deadline.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)));
                }
                h
            }

            /// The row the transactional outbox stores for this event.
            pub fn to_outbox(&self) -> Result<OutboxRecord, EncodeError> {
                Ok(OutboxRecord {
                    event_id: self.event_id,
                    topic: E::TOPIC.to_string(),
                    partition_key: self.partition_key(),
                    event_type: E::EVENT_TYPE.to_string(),
                    payload: self.encode()?,
                    headers: self.headers(),
                })
            }
        }

        /// The schema fingerprint in a single-object encoded message.
        pub fn fingerprint_of(bytes: &[u8]) -> Result<[u8; 8], DecodeError> {
            if bytes.len() < HEADER_LEN {
                return Err(DecodeError::TooShort { len: bytes.len() });
            }
            if bytes[..2] != SINGLE_OBJECT_MARKER {
                return Err(DecodeError::NotSingleObject);
            }
            let mut fp = [0u8; 8];
            fp.copy_from_slice(&bytes[2..HEADER_LEN]);
            Ok(fp)
        }
    }
}
