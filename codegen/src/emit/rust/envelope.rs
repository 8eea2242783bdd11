//! Emits `envelope.rs`: the envelope (whose saga key the spec names) and the `Event` trait
//! (whose kinds the spec lists). Everything spec-independent, from Money to the schema
//! history, is the `saga-wire` crate, re-exported here.

use proc_macro2::TokenStream;
use quote::quote;

use super::names;
use crate::ir::Saga;

pub(super) fn module(saga: &Saga) -> TokenStream {
    let key = names::verbatim(&saga.key);
    let key_str = &saga.key;
    let key_doc = format!(" Saga key (`{}`): identifies the saga instance and is the Kafka partition key.", saga.key);
    // With a `context:`, the envelope carries it: set by the entry command, copied by replies.
    let has_context = saga.context.is_some();
    let context_field = has_context.then(|| {
        quote! {
            /// The saga context (`context:` in the spec): what the command that started the
            /// saga said, copied by every reply; `None` on an event a timeout emits.
            pub context: Option<super::types::SagaContext>,
        }
    });
    let copy_context = has_context.then(|| quote!(context: self.context.clone(),));
    let no_context = has_context.then(|| quote!(context: None,));
    let with_context = has_context.then(|| {
        quote! {
            /// The saga context this event carries (the entry event's, from its command).
            pub fn with_context(mut self, context: super::types::SagaContext) -> Self {
                self.context = Some(context);
                self
            }
        }
    });
    let context_to_avro = has_context.then(|| quote!(("context".to_string(), self.context.to_avro()),));
    let context_from_avro =
        has_context.then(|| quote!(context: Option::from_avro(take_field(&mut f, at, "context")?, "context")?,));
    quote! {
        //! The envelope every event travels in, and the `Event` trait of this saga's events.
        //!
        //! The wire format, the schema history and the Avro conversions are the `saga-wire`
        //! crate's (re-exported here): Avro single-object encoding with the standard
        //! fingerprint of the writer schema, any published version of which decodes.

        use apache_avro::types::Value;
        use chrono::{DateTime, Utc};
        use saga_contract::OutboxRecord;
        use uuid::Uuid;

        pub use saga_wire::{
            AvroValue, DecodeError, EncodeError, HEADER_LEN, Money, SINGLE_OBJECT_MARKER, SchemaHistory, SchemaVersion,
            TraceContext, fingerprint_of, record_fields, take_field,
        };

        use super::events::EventType;

        /// One event of the saga: its payload struct plus what the spec says about it.
        pub trait Event: AvroValue + Clone + std::fmt::Debug + PartialEq + Send + Sync + 'static {
            /// The spec's name, e.g. `order.created`.
            const EVENT_TYPE: &'static str;
            const KIND: EventType;
            const TOPIC: &'static str;
            const PUBLISHER: &'static str;
            /// CRC-64-AVRO fingerprint of the Parsing Canonical Form of the schema messages are
            /// written with (the newest of `schemas()`).
            const FINGERPRINT: [u8; 8];
            /// Every published version of the event's schema (`.avro/<event>/v<N>.avsc`).
            fn schemas() -> &'static SchemaHistory;
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
            #context_field
            pub payload: E,
        }

        impl<E> Envelope<E> {
            /// An event published in reply: same saga key and trace, new id and time; no
            /// deadline (the status owner sets the next one when the reply reaches it).
            pub fn reply<R: Event>(&self, payload: R) -> Envelope<R> {
                Envelope {
                    event_id: Uuid::now_v7(),
                    #key: self.#key,
                    occurred_at: saga_wire::now_micros(),
                    trace: self.trace.clone(),
                    deadline: None,
                    #copy_context
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
                    #copy_context
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
                    occurred_at: saga_wire::now_micros(),
                    trace: TraceContext::default(),
                    deadline: None,
                    #no_context
                    payload,
                }
            }

            pub fn with_trace(mut self, trace: TraceContext) -> Self {
                self.trace = trace;
                self
            }

            /// The deadline of the answer to this event (truncated to what `timestamp-micros` keeps).
            pub fn with_deadline(mut self, deadline: Option<DateTime<Utc>>) -> Self {
                self.deadline = deadline.map(saga_wire::to_micros);
                self
            }

            #with_context

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
                    #context_to_avro
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
                    #context_from_avro
                    payload: E::from_avro(take_field(&mut f, at, "payload")?, at)?,
                })
            }

            /// Avro single-object encoding with the newest schema: marker, fingerprint, datum.
            pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
                E::schemas().encode(self.to_avro_value())
            }

            /// Decodes a message written with any published version of this event's schema.
            pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
                Self::from_avro_value(E::schemas().decode(bytes)?)
            }

            /// Kafka headers: for humans and tools; consumers decode from the payload alone.
            pub fn headers(&self) -> Vec<(String, String)> {
                saga_wire::headers(E::EVENT_TYPE, self.event_id, &self.trace, self.deadline)
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
    }
}
