//! Emits `topics.rs`: per topic an enum over the events it carries, decoded by schema
//! fingerprint, and `TopicMessage` over all topics.

use proc_macro2::TokenStream;
use quote::quote;

use super::doc;
use super::names;
use crate::ir::Saga;

pub(super) fn module(saga: &Saga) -> TokenStream {
    let enums = saga.topics.iter().map(|t| {
        let id = names::type_of(&t.name);
        let name = &t.name;
        let evs: Vec<_> = saga.topic_events(&t.name).map(|e| names::type_of(&e.name)).collect();
        let docs = doc(&format!(
            "A message on topic `{}`.{}",
            t.name,
            t.doc.as_deref().map(|d| format!(" {d}")).unwrap_or_default()
        ));
        if evs.is_empty() {
            return quote! {
                #docs
                #[derive(Debug, Clone, PartialEq)]
                pub enum #id {}
            };
        }
        quote! {
            #docs
            #[derive(Debug, Clone, PartialEq)]
            pub enum #id { #( #evs(Envelope<super::events::#evs>), )* }

            impl #id {
                pub const TOPIC: &'static str = #name;

                /// Decodes a message, choosing the event by the schema fingerprint on the wire: the
                /// fingerprint of any published version of the event's schema.
                pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
                    let fingerprint = fingerprint_of(bytes)?;
                    #(
                        if <super::events::#evs as Event>::schemas().knows(&fingerprint) {
                            return Envelope::decode(bytes).map(#id::#evs);
                        }
                    )*
                    Err(DecodeError::UnknownFingerprint { topic: #name.to_string(), fingerprint })
                }

                pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
                    match self { #( #id::#evs(e) => e.encode(), )* }
                }

                pub fn to_outbox(&self) -> Result<OutboxRecord, EncodeError> {
                    match self { #( #id::#evs(e) => e.to_outbox(), )* }
                }

                pub fn event_type(&self) -> EventType {
                    match self { #( #id::#evs(_) => EventType::#evs, )* }
                }

                pub fn event_id(&self) -> ::uuid::Uuid {
                    match self { #( #id::#evs(e) => e.event_id, )* }
                }

                pub fn saga_key(&self) -> ::uuid::Uuid {
                    match self { #( #id::#evs(e) => e.saga_key(), )* }
                }
            }
        }
    });
    let tids: Vec<_> = saga.topics.iter().map(|t| names::type_of(&t.name)).collect();
    let tnames: Vec<_> = saga.topics.iter().map(|t| t.name.as_str()).collect();
    quote! {
        //! One enum per topic over the events it carries, decoded by schema fingerprint.

        use saga_contract::OutboxRecord;

        use super::envelope::{DecodeError, EncodeError, Envelope, Event, fingerprint_of};
        use super::events::EventType;

        #(#enums)*

        /// A message on any topic of the saga.
        #[derive(Debug, Clone, PartialEq)]
        pub enum TopicMessage { #( #tids(#tids), )* }

        impl TopicMessage {
            /// Decodes a Kafka message by topic name and schema fingerprint.
            pub fn decode(topic: &str, bytes: &[u8]) -> Result<Self, DecodeError> {
                match topic {
                    #( #tnames => #tids::decode(bytes).map(TopicMessage::#tids), )*
                    other => Err(DecodeError::UnknownTopic(other.to_string())),
                }
            }
        }
    }
}
