//! Emits `events.rs`: the `EventType` enum, and per event its payload struct and `Event` impl.

use proc_macro2::{Literal, TokenStream};
use quote::quote;

use super::names;
use super::{doc, record};
use crate::emit::avro::EventSchema;
use crate::ir::{Saga, pascal};

pub(super) fn module(saga: &Saga, schemas: &[EventSchema]) -> TokenStream {
    let kinds: Vec<_> = saga.events.iter().map(|e| names::type_of(&e.name)).collect();
    let names: Vec<_> = saga.events.iter().map(|e| e.name.as_str()).collect();
    let items = saga.events.iter().zip(schemas).map(|(e, s)| {
        let id = names::type_of(&e.name);
        let mut text = e.doc.clone().unwrap_or_default();
        let subs: Vec<_> = e.subscribers.iter().map(|s| format!("`{}`", s.service)).collect();
        text.push_str(&format!(
            "\n\n`{}` on topic `{}`, published by `{}`, consumed by {}.",
            e.name,
            e.topic,
            e.publisher,
            if subs.is_empty() { "services outside the saga".to_string() } else { subs.join(", ") }
        ));
        let rec = record(&id, &format!("{}Payload", pascal(&e.name)), doc(&text), &e.fields);
        let (ev, topic, publisher) = (&e.name, &e.topic, &e.publisher);
        let fp = bytes(&s.fingerprint);
        let versions = s.versions.iter().map(|v| {
            let (version, fingerprint, json) = (v.version, bytes(&v.fingerprint), v.json.to_string());
            quote! { wire::SchemaVersion { version: #version, fingerprint: #fingerprint, json: #json }, }
        });
        quote! {
            #rec

            impl wire::Event for #id {
                const EVENT_TYPE: &'static str = #ev;
                const KIND: EventType = EventType::#id;
                const TOPIC: &'static str = #topic;
                const PUBLISHER: &'static str = #publisher;
                const FINGERPRINT: [u8; 8] = #fp;
                fn schemas() -> &'static wire::SchemaHistory {
                    static HISTORY: wire::SchemaHistory = wire::SchemaHistory::new(#ev, &[#(#versions)*]);
                    &HISTORY
                }
            }
        }
    });
    quote! {
        //! One struct per event: the payload. Wrap it in an `Envelope` to send it.

        use ::apache_avro::types::Value;

        use super::envelope as wire;

        /// Every event type of the saga.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventType { #(#kinds,)* }

        impl EventType {
            pub const ALL: &'static [EventType] = &[#(EventType::#kinds,)*];

            /// The spec's name, e.g. `order.created`.
            pub fn as_str(self) -> &'static str {
                match self { #(EventType::#kinds => #names,)* }
            }

            pub fn from_name(name: &str) -> Option<Self> {
                match name { #(#names => Some(EventType::#kinds),)* _ => None }
            }
        }

        impl std::fmt::Display for EventType {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        #(#items)*
    }
}

/// `[b0, b1, ...]`: a fingerprint as a Rust array literal.
pub(super) fn bytes(fingerprint: &[u8; 8]) -> TokenStream {
    let b = fingerprint.iter().map(|b| Literal::u8_unsuffixed(*b));
    quote!([#(#b),*])
}
