//! Rust emitter: IR -> token streams -> prettyplease. Knows nothing of YAML.

use std::collections::BTreeMap;

use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote};

use super::avro::EventSchema;
use super::rust_support;
use crate::ir::{Field, Saga, Type, TypeKind, pascal, snake};

fn doc(text: &str) -> TokenStream {
    let lines = text.lines().map(|l| format!(" {l}"));
    quote! { #( #[doc = #lines] )* }
}

fn opt_doc(text: &Option<String>) -> TokenStream {
    text.as_deref().map(doc).unwrap_or_default()
}

fn rust_type(t: &Type) -> TokenStream {
    match t {
        Type::Uuid => quote!(::uuid::Uuid),
        Type::String => quote!(String),
        Type::Bool => quote!(bool),
        Type::Int => quote!(i32),
        Type::Long => quote!(i64),
        Type::Double => quote!(f64),
        Type::Money => quote!(super::envelope::Money),
        Type::Timestamp => quote!(::chrono::DateTime<::chrono::Utc>),
        Type::Record(n) | Type::Enum(n) => {
            let id = format_ident!("{}", n);
            quote!(super::types::#id)
        }
        Type::Array(inner) => {
            let i = rust_type(inner);
            quote!(Vec<#i>)
        }
        Type::Optional(inner) => {
            let i = rust_type(inner);
            quote!(Option<#i>)
        }
    }
}

/// Struct fields plus the `AvroValue` impl of a record with these fields.
fn record(name: &syn::Ident, avro_name: &str, docs: TokenStream, fields: &[Field]) -> TokenStream {
    let decl = fields.iter().map(|f| {
        let id = format_ident!("{}", f.name);
        let ty = rust_type(&f.ty);
        let d = match (&f.doc, &f.ty) {
            (Some(d), _) => doc(d),
            (None, Type::Money) => doc("Money in integer minor units."),
            _ => quote!(),
        };
        quote! { #d pub #id: #ty, }
    });
    let to = fields.iter().map(|f| {
        let id = format_ident!("{}", f.name);
        let n = &f.name;
        quote! { (#n.to_string(), wire::AvroValue::to_avro(&self.#id)), }
    });
    let from = fields.iter().map(|f| {
        let id = format_ident!("{}", f.name);
        let n = &f.name;
        quote! {
            #id: wire::AvroValue::from_avro(wire::take_field(&mut f, #avro_name, #n)?, #n)?,
        }
    });
    let fvar_bind = if fields.is_empty() { quote!(let _f = ) } else { quote!(let mut f = ) };
    quote! {
        #docs
        #[derive(Debug, Clone, PartialEq)]
        pub struct #name { #(#decl)* }

        impl wire::AvroValue for #name {
            fn to_avro(&self) -> Value {
                Value::Record(Vec::from([#(#to)*]))
            }
            fn from_avro(value: Value, _at: &'static str) -> Result<Self, wire::DecodeError> {
                #fvar_bind wire::record_fields(value, #avro_name)?;
                Ok(#name { #(#from)* })
            }
        }
    }
}

fn types_module(saga: &Saga) -> TokenStream {
    let items = saga.types.iter().map(|t| {
        let id = format_ident!("{}", t.name);
        let docs = opt_doc(&t.doc);
        match &t.kind {
            TypeKind::Record(fields) => record(&id, &t.name, docs, fields),
            TypeKind::Enum(symbols) => {
                let variants: Vec<_> = symbols.iter().map(|s| format_ident!("{}", pascal(s))).collect();
                let idx = (0..symbols.len()).map(|i| Literal::u32_unsuffixed(i as u32));
                let name = &t.name;
                quote! {
                    #docs
                    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
                    pub enum #id { #(#variants,)* }

                    impl #id {
                        pub const ALL: &'static [#id] = &[#(#id::#variants,)*];

                        /// The spec's (and Avro's) symbol.
                        pub fn as_str(self) -> &'static str {
                            match self { #(#id::#variants => #symbols,)* }
                        }

                        pub fn from_symbol(symbol: &str) -> Option<Self> {
                            match symbol { #(#symbols => Some(#id::#variants),)* _ => None }
                        }
                    }

                    impl std::fmt::Display for #id {
                        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                            f.write_str(self.as_str())
                        }
                    }

                    impl wire::AvroValue for #id {
                        fn to_avro(&self) -> Value {
                            let index = match self { #(#id::#variants => #idx,)* };
                            Value::Enum(index, self.as_str().to_string())
                        }
                        fn from_avro(value: Value, at: &'static str) -> Result<Self, wire::DecodeError> {
                            match value {
                                Value::Enum(_, symbol) | Value::String(symbol) => {
                                    Self::from_symbol(&symbol).ok_or(wire::DecodeError::UnknownSymbol { enum_name: #name, symbol })
                                }
                                other => Err(wire::DecodeError::Mismatch { at, expected: "enum", found: format!("{other:?}") }),
                            }
                        }
                    }
                }
            }
        }
    });
    let imports = if saga.types.is_empty() {
        quote!()
    } else {
        quote! {
            use ::apache_avro::types::Value;

            use super::envelope as wire;
        }
    };
    quote! {
        //! Named types of the spec (records and enums) used inside event payloads.
        #imports
        #(#items)*
    }
}

fn events_module(saga: &Saga, schemas: &[EventSchema]) -> TokenStream {
    let kinds: Vec<_> = saga.events.iter().map(|e| format_ident!("{}", pascal(&e.name))).collect();
    let names: Vec<_> = saga.events.iter().map(|e| e.name.as_str()).collect();
    let items = saga.events.iter().zip(schemas).map(|(e, s)| {
        let id = format_ident!("{}", pascal(&e.name));
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
        let (ev, topic, publisher, json) = (&e.name, &e.topic, &e.publisher, &s.compact);
        let fp = s.fingerprint.iter().map(|b| Literal::u8_unsuffixed(*b));
        quote! {
            #rec

            impl wire::Event for #id {
                const EVENT_TYPE: &'static str = #ev;
                const KIND: EventType = EventType::#id;
                const TOPIC: &'static str = #topic;
                const PUBLISHER: &'static str = #publisher;
                const SCHEMA_JSON: &'static str = #json;
                const FINGERPRINT: [u8; 8] = [#(#fp),*];
                fn schema() -> &'static ::apache_avro::Schema {
                    static SCHEMA: std::sync::LazyLock<::apache_avro::Schema> = std::sync::LazyLock::new(|| {
                        ::apache_avro::Schema::parse_str(<#id as wire::Event>::SCHEMA_JSON)
                            .expect("the generator parsed this schema before emitting it")
                    });
                    &SCHEMA
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

fn topics_module(saga: &Saga) -> TokenStream {
    let enums = saga.topics.iter().map(|t| {
        let id = format_ident!("{}", pascal(&t.name));
        let name = &t.name;
        let evs: Vec<_> = saga.topic_events(&t.name).map(|e| format_ident!("{}", pascal(&e.name))).collect();
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

                /// Decodes a message, choosing the event by the schema fingerprint on the wire.
                pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
                    let fingerprint = fingerprint_of(bytes)?;
                    #(
                        if fingerprint == <super::events::#evs as Event>::FINGERPRINT {
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
    let tids: Vec<_> = saga.topics.iter().map(|t| format_ident!("{}", pascal(&t.name))).collect();
    let tnames: Vec<_> = saga.topics.iter().map(|t| t.name.as_str()).collect();
    quote! {
        //! One enum per topic over the events it carries, decoded by schema fingerprint.

        use super::envelope::{DecodeError, EncodeError, Envelope, Event, OutboxRecord, fingerprint_of};
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

fn status_module(saga: &Saga) -> TokenStream {
    let Some(sm) = &saga.status else {
        return quote! { //! The spec declares no status machine.
        };
    };
    let id = format_ident!("{}Status", pascal(&sm.owner));
    let vs: Vec<_> = sm.states.iter().map(|s| format_ident!("{}", pascal(&s.name))).collect();
    let names: Vec<_> = sm.states.iter().map(|s| s.name.as_str()).collect();
    let initial = format_ident!("{}", pascal(&sm.initial));
    let terminal: Vec<_> =
        sm.states.iter().filter(|s| s.terminal).map(|s| format_ident!("{}", pascal(&s.name))).collect();
    let arms = sm.transitions.iter().map(|t| {
        let (f, e, to) = (
            format_ident!("{}", pascal(&t.from)),
            format_ident!("{}", pascal(&t.on)),
            format_ident!("{}", pascal(&t.to)),
        );
        quote! { (#id::#f, EventType::#e) => Ok(#id::#to), }
    });
    let timeout_arms = sm.states.iter().filter_map(|s| {
        let t = s.timeout.as_ref()?;
        let from = format_ident!("{}", pascal(&s.name));
        let to = format_ident!("{}", pascal(&t.to));
        let ms = Literal::u64_unsuffixed(t.after_ms);
        let emits = match &t.emits {
            Some(e) => {
                let e = format_ident!("{}", pascal(e));
                quote!(Some(EventType::#e))
            }
            None => quote!(None),
        };
        Some(quote! {
            #id::#from => Some(StatusTimeout { after: Duration::from_millis(#ms), to: #id::#to, emits: #emits }),
        })
    });
    let mut trigger_names: Vec<&str> = sm.transitions.iter().map(|t| t.on.as_str()).collect();
    trigger_names.sort_unstable();
    trigger_names.dedup();
    let triggers: Vec<_> = trigger_names.iter().map(|t| format_ident!("{}", pascal(t))).collect();
    let is_trigger = if triggers.is_empty() {
        quote! { let _ = event; false }
    } else {
        quote! { matches!(event, #(EventType::#triggers)|*) }
    };
    let owner = &sm.owner;
    let docs = doc(&format!("Status of a saga instance, owned by the `{owner}` service."));
    let err = format!("illegal transition: `{owner}` status `{{from}}` has no transition on `{{event}}`");
    quote! {
        //! The status machine. Transitions are keyed by event; anything else is a typed error.

        use std::time::Duration;

        use super::events::EventType;

        #docs
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum #id { #(#vs,)* }

        /// What happens when a saga stays too long in a state.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct StatusTimeout {
            pub after: Duration,
            pub to: #id,
            /// The event the owner publishes on timeout (its handler builds the payload).
            pub emits: Option<EventType>,
        }

        /// An event arrived that the status machine does not accept in the current state.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
        #[error(#err)]
        pub struct IllegalTransition {
            pub from: #id,
            pub event: EventType,
        }

        /// A status name that is not in the spec.
        #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
        #[error("unknown status `{0}`")]
        pub struct UnknownStatus(pub String);

        impl #id {
            pub const INITIAL: #id = #id::#initial;
            pub const ALL: &'static [#id] = &[#(#id::#vs,)*];

            /// The spec's name, as stored in the database.
            pub fn as_str(self) -> &'static str {
                match self { #(#id::#vs => #names,)* }
            }

            pub fn is_terminal(self) -> bool {
                matches!(self, #(#id::#terminal)|*)
            }

            /// The state an event moves this one to.
            #[allow(clippy::match_single_binding)]
            pub fn on_event(self, event: EventType) -> Result<#id, IllegalTransition> {
                match (self, event) {
                    #(#arms)*
                    (from, event) => Err(IllegalTransition { from, event }),
                }
            }

            /// Whether any transition is keyed by `event`. Events that never move the status are
            /// only recorded; the others must be legal in the current state.
            pub fn is_trigger(event: EventType) -> bool {
                #is_trigger
            }

            /// The timeout of this state; `None` exactly for terminal states.
            pub fn timeout(self) -> Option<StatusTimeout> {
                match self {
                    #(#timeout_arms)*
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for #id {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for #id {
            type Err = UnknownStatus;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    #(#names => Ok(#id::#vs),)*
                    other => Err(UnknownStatus(other.to_string())),
                }
            }
        }
    }
}

fn handlers_module(saga: &Saga) -> TokenStream {
    let mut items = Vec::new();
    for svc in &saga.services {
        let subs: Vec<_> = saga.subscriptions(&svc.name).collect();
        let owns_timeouts =
            saga.status.as_ref().is_some_and(|s| s.owner == svc.name && s.states.iter().any(|st| st.timeout.is_some()));
        if subs.is_empty() && !owns_timeouts {
            continue;
        }
        let sp = pascal(&svc.name);
        let trait_id = format_ident!("{}Handler", sp);
        let inbound = format_ident!("{}Inbound", sp);
        let mut methods = Vec::new();
        let mut variants = Vec::new();
        let mut handle_arms = Vec::new();
        let mut decode_topics: BTreeMap<&str, Vec<syn::Ident>> = BTreeMap::new();
        for (e, sub) in &subs {
            let ev = format_ident!("{}", pascal(&e.name));
            let reply = format_ident!("{}On{}", sp, pascal(&e.name));
            let method = format_ident!("on_{}", snake(&e.name));
            let rv: Vec<_> = sub.replies.iter().map(|r| format_ident!("{}", pascal(r))).collect();
            let mut text = format!("`{}` received `{}` (topic `{}`).", svc.name, e.name, e.topic);
            if rv.is_empty() {
                text.push_str(" The spec allows no reply.");
            } else {
                let rs: Vec<_> = sub.replies.iter().map(|r| format!("`{r}`")).collect();
                text.push_str(&format!(" The spec allows these replies: {}.", rs.join(", ")));
            }
            for c in saga.compensations.iter().filter(|c| c.service == svc.name && c.on == e.name) {
                text.push_str(&format!("\n\nCompensation: undo `{}`.", c.undoes));
            }
            let mdoc = doc(&text);
            let rdoc = doc(&format!(
                "What `{}` may publish after `{}`: exactly the replies the spec lists, or nothing.",
                svc.name, e.name
            ));
            // Without replies the parent is unused; the name says so instead of an allow.
            let parent = if rv.is_empty() { format_ident!("_parent") } else { format_ident!("parent") };
            items.push(quote! {
                #rdoc
                #[derive(Debug, Clone, PartialEq)]
                pub enum #reply {
                    #( #rv(super::events::#rv), )*
                    /// Handled; publish nothing (e.g. a duplicate or a late event).
                    NoReply,
                }

                impl #reply {
                    /// The reply as an outbox row, keyed and traced like the event it answers.
                    pub fn into_outbox<P>(self, #parent: &Envelope<P>) -> Result<Option<OutboxRecord>, EncodeError> {
                        match self {
                            #( #reply::#rv(p) => parent.reply(p).to_outbox().map(Some), )*
                            #reply::NoReply => Ok(None),
                        }
                    }
                }
            });
            methods.push(quote! {
                #mdoc
                fn #method(
                    &self,
                    ctx: &mut Self::Ctx,
                    event: Envelope<super::events::#ev>,
                ) -> impl Future<Output = Result<#reply, Self::Error>> + Send;
            });
            variants.push(quote! { #ev(Envelope<super::events::#ev>), });
            handle_arms.push(quote! {
                #inbound::#ev(e) => {
                    let parent = e.meta();
                    let reply = handler.#method(ctx, e).await.map_err(HandleError::Handler)?;
                    reply.into_outbox(&parent).map_err(HandleError::Encode)
                }
            });
            decode_topics.entry(e.topic.as_str()).or_default().push(ev);
        }
        let mut timeout_item = quote!();
        if owns_timeouts && let Some(sm) = &saga.status {
            let status = format_ident!("{}Status", pascal(&sm.owner));
            let reply = format_ident!("{}TimeoutReply", sp);
            let mut emits: Vec<&str> = sm.states.iter().filter_map(|s| s.timeout.as_ref()?.emits.as_deref()).collect();
            emits.sort_unstable();
            emits.dedup();
            let rv: Vec<_> = emits.iter().map(|r| format_ident!("{}", pascal(r))).collect();
            let key = format_ident!("{}", saga.key);
            methods.push(quote! {
                /// A saga stayed in `from` past its timeout; the status is moving to `to`. Return the
                /// event the spec says the timeout emits (with compensation following from it).
                fn on_timeout(
                    &self,
                    ctx: &mut Self::Ctx,
                    #key: ::uuid::Uuid,
                    from: super::status::#status,
                    to: super::status::#status,
                ) -> impl Future<Output = Result<#reply, Self::Error>> + Send;
            });
            let run = format_ident!("run_{}_timeout", snake(&svc.name));
            let timed_out = format_ident!("{}TimedOut", sp);
            let run_doc = doc(&format!(
                "Resolves a saga that stayed in `from` past its deadline (the timeout sweeper calls this \
                 inside its transaction): asks `{}` for the event to publish and returns the new status \
                 with the outbox row. `None` when `from` has no timeout (a terminal state).",
                svc.name
            ));
            timeout_item = quote! {
                /// The outcome of a timeout: the status to store and the event to publish.
                #[derive(Debug, Clone, PartialEq)]
                pub struct #timed_out {
                    pub to: super::status::#status,
                    pub reply: Option<OutboxRecord>,
                }

                #run_doc
                pub async fn #run<H: #trait_id>(
                    handler: &H,
                    ctx: &mut H::Ctx,
                    #key: ::uuid::Uuid,
                    from: super::status::#status,
                    trace: TraceContext,
                ) -> Result<Option<#timed_out>, HandleError<H::Error>> {
                    let Some(rule) = from.timeout() else { return Ok(None) };
                    let reply = handler.on_timeout(ctx, #key, from, rule.to).await.map_err(HandleError::Handler)?;
                    let reply = reply.into_outbox(#key, trace).map_err(HandleError::Encode)?;
                    Ok(Some(#timed_out { to: rule.to, reply }))
                }

                /// What the status owner may publish when a saga times out.
                #[derive(Debug, Clone, PartialEq)]
                pub enum #reply {
                    #( #rv(super::events::#rv), )*
                    /// Publish nothing.
                    NoReply,
                }

                impl #reply {
                    /// The event as an outbox row of the saga `key`.
                    pub fn into_outbox(self, key: ::uuid::Uuid, trace: TraceContext) -> Result<Option<OutboxRecord>, EncodeError> {
                        match self {
                            #( #reply::#rv(p) => Envelope::new(key, p).with_trace(trace).to_outbox().map(Some), )*
                            #reply::NoReply => Ok(None),
                        }
                    }
                }
            };
        }
        let tdoc = doc(&format!(
            "Everything `{}` reacts to. Each method's return type allows exactly the events the spec lets `{}` publish in reply, so publishing an undeclared event does not compile.",
            svc.name, svc.name
        ));
        let idoc = doc(&format!("An event `{}` subscribes to, decoded.", svc.name));
        let topic_arms = decode_topics.iter().map(|(topic, evs)| {
            let te = format_ident!("{}", pascal(topic));
            quote! {
                #topic => match super::topics::#te::decode(bytes)? {
                    #( super::topics::#te::#evs(e) => Ok(Some(#inbound::#evs(e))), )*
                    #[allow(unreachable_patterns)]
                    _ => Ok(None),
                },
            }
        });
        let evs: Vec<_> = subs.iter().map(|(e, _)| format_ident!("{}", pascal(&e.name))).collect();
        let inbound_items = if subs.is_empty() {
            quote!()
        } else {
            quote! {
                #idoc
                #[derive(Debug, Clone, PartialEq)]
                pub enum #inbound { #(#variants)* }

                impl #inbound {
                    /// Decodes a Kafka message. `Ok(None)`: an event on a consumed topic this service
                    /// does not subscribe to (acknowledge and skip it).
                    pub fn decode(topic: &str, bytes: &[u8]) -> Result<Option<Self>, DecodeError> {
                        match topic {
                            #(#topic_arms)*
                            other => Err(DecodeError::UnknownTopic(other.to_string())),
                        }
                    }

                    pub fn event_type(&self) -> EventType {
                        match self { #( #inbound::#evs(_) => EventType::#evs, )* }
                    }

                    pub fn event_id(&self) -> ::uuid::Uuid {
                        match self { #( #inbound::#evs(e) => e.event_id, )* }
                    }

                    pub fn saga_key(&self) -> ::uuid::Uuid {
                        match self { #( #inbound::#evs(e) => e.saga_key(), )* }
                    }

                    pub fn trace(&self) -> &TraceContext {
                        match self { #( #inbound::#evs(e) => &e.trace, )* }
                    }

                    /// Runs the handler method for this event and returns its reply as an outbox row.
                    pub async fn handle<H: #trait_id>(self, handler: &H, ctx: &mut H::Ctx) -> Result<Option<OutboxRecord>, HandleError<H::Error>> {
                        match self { #(#handle_arms)* }
                    }
                }

                impl saga_contract::Inbound for #inbound {
                    fn decode(topic: &str, payload: &[u8]) -> Result<Option<Self>, String> {
                        #inbound::decode(topic, payload).map_err(|e| e.to_string())
                    }

                    fn meta(&self) -> saga_contract::EventMeta {
                        saga_contract::EventMeta {
                            event_id: self.event_id(),
                            event_type: self.event_type().as_str(),
                            saga_key: self.saga_key(),
                            traceparent: self.trace().traceparent.clone(),
                        }
                    }
                }

                /// How the runtime's transactional consumer runs a handler for these events.
                impl<H: #trait_id> saga_contract::Dispatch<H> for #inbound {
                    type Ctx = H::Ctx;
                    type Error = HandleError<H::Error>;

                    fn dispatch<'a>(
                        self,
                        handler: &'a H,
                        ctx: &'a mut H::Ctx,
                    ) -> impl Future<Output = Result<Option<OutboxRecord>, HandleError<H::Error>>> + Send + 'a {
                        self.handle(handler, ctx)
                    }
                }
            }
        };
        items.push(quote! {
            #tdoc
            pub trait #trait_id: Send + Sync {
                /// Per-delivery context, e.g. the database transaction the inbox row and the
                /// handler's writes share.
                type Ctx: Send;
                type Error: std::error::Error + Send + Sync + 'static;
                #(#methods)*
            }

            #timeout_item
            #inbound_items
        });
    }
    quote! {
        //! Per service, a handler trait with one method per subscribed event, and the enum of
        //! its inbound events, which decodes a Kafka message and runs the handler for it
        //! (`saga_contract::Inbound` and `Dispatch`, driven by the runtime's consumer).

        use std::future::Future;

        use super::envelope::{DecodeError, EncodeError, Envelope, OutboxRecord, TraceContext};
        use super::events::EventType;

        /// A handler run failed.
        #[derive(Debug, thiserror::Error)]
        pub enum HandleError<E: std::error::Error + 'static> {
            #[error("handler failed: {0}")]
            Handler(#[source] E),
            #[error(transparent)]
            Encode(EncodeError),
        }

        #(#items)*
    }
}

fn commands_module(saga: &Saga) -> TokenStream {
    let mut items = Vec::new();
    let mut by_service: BTreeMap<&str, Vec<&crate::ir::Command>> = BTreeMap::new();
    for c in &saga.commands {
        by_service.entry(c.service.as_str()).or_default().push(c);
    }
    let key = format_ident!("{}", saga.key);
    for c in &saga.commands {
        let id = format_ident!("{}", c.name);
        let fields = c.fields.iter().map(|f| {
            let fid = format_ident!("{}", f.name);
            let ty = rust_type(&f.ty);
            let d = opt_doc(&f.doc);
            quote! { #d pub #fid: #ty, }
        });
        let docs = doc(&format!(
            "{}\n\nEntry command on `{}`; emits `{}`.",
            c.doc.clone().unwrap_or_default(),
            c.service,
            c.emits
        ));
        let into = format_ident!("Into{}", c.name);
        let into_fn = format_ident!("into_{}", snake(&c.name));
        let ev = format_ident!("{}", pascal(&c.emits));
        let from = format_ident!("From{}", pascal(&c.emits));
        let from_fn = format_ident!("from_{}", snake(&c.emits));
        let run = format_ident!("run_{}", snake(&c.name));
        let trait_id = format_ident!("{}Commands", pascal(&c.service));
        let method = format_ident!("{}", snake(&c.name));
        let into_doc = doc(&format!(
            "Implemented by the `{}` service for its gRPC request type: proto -> `{}`.",
            c.service, c.name
        ));
        let from_doc = doc(&format!(
            "Implemented by the `{}` service for its gRPC response type: `{}` -> proto.",
            c.service, c.emits
        ));
        let run_doc = doc(&format!(
            "Runs `{}`: allocates the saga key, calls the service, and writes `{}` to the outbox in the caller's transaction (`ctx`).",
            c.name, c.emits
        ));
        items.push(quote! {
            #docs
            #[derive(Debug, Clone, PartialEq)]
            pub struct #id { #(#fields)* }

            #into_doc
            pub trait #into {
                type Error;
                fn #into_fn(self) -> Result<#id, Self::Error>;
            }

            #from_doc
            pub trait #from: Sized {
                fn #from_fn(event: &Envelope<super::events::#ev>) -> Self;
            }

            #run_doc
            pub async fn #run<H>(
                handler: &H,
                ctx: &mut H::Ctx,
                command: #id,
                trace: TraceContext,
            ) -> Result<Envelope<super::events::#ev>, CommandError<H::Error, <H::Ctx as Outbox>::Error>>
            where
                H: #trait_id,
                H::Ctx: Outbox,
            {
                let #key = ::uuid::Uuid::now_v7();
                let payload = handler.#method(ctx, #key, command).await.map_err(CommandError::Handler)?;
                let event = Envelope::new(#key, payload).with_trace(trace);
                let record = event.to_outbox().map_err(CommandError::Encode)?;
                ctx.insert(record).await.map_err(CommandError::Outbox)?;
                Ok(event)
            }
        });
        let _ = by_service.get(c.service.as_str());
    }
    for (svc, cmds) in &by_service {
        let trait_id = format_ident!("{}Commands", pascal(svc));
        let methods = cmds.iter().map(|c| {
            let id = format_ident!("{}", c.name);
            let method = format_ident!("{}", snake(&c.name));
            let ev = format_ident!("{}", pascal(&c.emits));
            let d =
                doc(&format!("Executes `{}` for a new saga; returns the `{}` payload to publish.", c.name, c.emits));
            quote! {
                #d
                fn #method(&self, ctx: &mut Self::Ctx, #key: ::uuid::Uuid, command: #id)
                    -> impl Future<Output = Result<super::events::#ev, Self::Error>> + Send;
            }
        });
        let d = doc(&format!("The entry commands `{svc}` executes."));
        items.push(quote! {
            #d
            pub trait #trait_id: Send + Sync {
                type Ctx: Send;
                type Error: std::error::Error + Send + Sync + 'static;
                #(#methods)*
            }
        });
    }
    quote! {
        //! Entry commands that start a saga, with the glue a gRPC service needs.

        use std::future::Future;

        use super::envelope::{EncodeError, Envelope, Outbox, TraceContext};

        /// A command helper failed.
        #[derive(Debug, thiserror::Error)]
        pub enum CommandError<H: std::error::Error + 'static, O: std::error::Error + 'static> {
            #[error("command rejected: {0}")]
            Handler(#[source] H),
            #[error(transparent)]
            Encode(EncodeError),
            #[error("outbox insert failed: {0}")]
            Outbox(#[source] O),
        }

        #(#items)*
    }
}

fn topology_module(saga: &Saga, schemas: &[EventSchema]) -> TokenStream {
    let topics = saga.topics.iter().map(|t| {
        let (n, p, dlq) = (&t.name, t.partitions, format!("{}{}", t.name, saga.dlq_suffix));
        quote! { Topic { name: #n, partitions: #p, dlq: #dlq }, }
    });
    let groups = saga.services.iter().filter(|s| saga.subscriptions(&s.name).next().is_some()).map(|s| {
        let (svc, gid) = (&s.name, format!("{}.{}", saga.name, s.name));
        let ts: Vec<_> = saga.consumed_topics(&s.name).iter().map(|t| t.name.clone()).collect();
        let (ma, ib, mb) = (s.retry.max_attempts, s.retry.initial_backoff_ms, s.retry.max_backoff_ms);
        let batch = Literal::usize_unsuffixed(s.max_batch as usize);
        quote! {
            ConsumerGroup {
                service: #svc,
                group_id: #gid,
                topics: &[#(#ts),*],
                retry: RetryPolicy {
                    max_attempts: #ma,
                    initial_backoff: Duration::from_millis(#ib),
                    max_backoff: Duration::from_millis(#mb),
                },
                max_batch: #batch,
            },
        }
    });
    let subs = saga.events.iter().flat_map(|e| {
        e.subscribers.iter().map(move |s| {
            let (svc, ev, topic, rs) = (&s.service, &e.name, &e.topic, &s.replies);
            quote! { Subscription { service: #svc, event_type: #ev, topic: #topic, replies: &[#(#rs),*] }, }
        })
    });
    let events = saga.events.iter().zip(schemas).map(|(e, s)| {
        let (n, t, p, ext) = (&e.name, &e.topic, &e.publisher, e.external);
        let fp = s.fingerprint.iter().map(|b| Literal::u8_unsuffixed(*b));
        quote! { EventInfo { event_type: #n, topic: #t, publisher: #p, external: #ext, fingerprint: [#(#fp),*] }, }
    });
    let comps = saga.compensations.iter().map(|c| {
        let (on, svc, undoes) = (&c.on, &c.service, &c.undoes);
        quote! { Compensation { on: #on, service: #svc, undoes: #undoes }, }
    });
    let services: Vec<_> = saga.services.iter().map(|s| s.name.as_str()).collect();
    let (name, key, suffix) = (&saga.name, &saga.key, &saga.dlq_suffix);
    quote! {
        //! Kafka topology of the saga: topics, their partition counts and dead-letter twins,
        //! consumer groups with their retry policy, subscriptions and compensations.

        use std::time::Duration;

        /// Name of the saga.
        pub const SAGA: &str = #name;
        /// Name of the saga key every event carries (the Kafka partition key).
        pub const SAGA_KEY: &str = #key;
        /// Suffix of every dead-letter topic.
        pub const DLQ_SUFFIX: &str = #suffix;
        /// The services of the saga.
        pub const SERVICES: &[&str] = &[#(#services),*];

        /// One Kafka topic the saga uses.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct Topic {
            pub name: &'static str,
            pub partitions: i32,
            /// Where messages that cannot be processed go.
            pub dlq: &'static str,
        }

        pub const TOPICS: &[Topic] = &[#(#topics)*];

        /// A consumer group and its retry policy: shared with the runtime, which configures its
        /// consumers from them.
        pub use saga_contract::{ConsumerGroup, RetryPolicy};

        pub const CONSUMER_GROUPS: &[ConsumerGroup] = &[#(#groups)*];

        /// A service receiving an event, and what it may publish in reply.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct Subscription {
            pub service: &'static str,
            pub event_type: &'static str,
            pub topic: &'static str,
            pub replies: &'static [&'static str],
        }

        pub const SUBSCRIPTIONS: &[Subscription] = &[#(#subs)*];

        /// An event: where it goes, who publishes it, its schema fingerprint.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct EventInfo {
            pub event_type: &'static str,
            pub topic: &'static str,
            pub publisher: &'static str,
            /// Also consumed outside the saga.
            pub external: bool,
            pub fingerprint: [u8; 8],
        }

        pub const EVENTS: &[EventInfo] = &[#(#events)*];

        /// On `on`, `service` undoes the local effect of its earlier event `undoes`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct Compensation {
            pub on: &'static str,
            pub service: &'static str,
            pub undoes: &'static str,
        }

        pub const COMPENSATIONS: &[Compensation] = &[#(#comps)*];

        pub fn topic(name: &str) -> Option<&'static Topic> {
            TOPICS.iter().find(|t| t.name == name)
        }

        pub fn consumer_group(service: &str) -> Option<&'static ConsumerGroup> {
            CONSUMER_GROUPS.iter().find(|g| g.service == service)
        }

        pub fn event_info(event_type: &str) -> Option<&'static EventInfo> {
            EVENTS.iter().find(|e| e.event_type == event_type)
        }
    }
}

/// The crate root, written as text already in rustfmt's style: the modules below are
/// `#[rustfmt::skip]`, so `cargo fmt` leaves the generated files exactly as emitted.
fn lib_rs(saga: &Saga, header: &str) -> String {
    let mut s = String::from(header);
    s.push_str(&format!(
        "//! Typed code of saga `{}`{}\n//!\n//! Generated from the saga spec; change the spec and run `cargo xtask gen`.\n\n",
        saga.name,
        saga.doc.as_deref().map(|d| format!(": {d}")).unwrap_or_else(|| ".".into())
    ));
    for m in ["commands", "envelope", "events", "handlers", "status", "topics", "topology", "types"] {
        s.push_str(&format!("#[rustfmt::skip]\npub mod {m};\n"));
    }
    s.push_str(
        "\npub use envelope::{DecodeError, EncodeError, Envelope, Event, Money, Outbox, OutboxRecord, TraceContext};\n",
    );
    s.push_str("pub use events::*;\n");
    if let Some(sm) = &saga.status {
        // rustfmt sorts the names of a `use` list; sort the same way so `cargo fmt` changes nothing.
        let mut names = [format!("{}Status", pascal(&sm.owner)), "IllegalTransition".into(), "StatusTimeout".into()];
        names.sort();
        s.push_str(&format!("pub use status::{{{}}};\n", names.join(", ")));
    }
    s
}

/// Formats a module; the token streams are built here, so a parse failure is a generator bug.
fn render(tokens: TokenStream, header: &str) -> Result<String, syn::Error> {
    let mut file: syn::File = syn::parse2(tokens)?;
    // Enum and variant names come from the spec (`BookingEvents::BookingRequested`); the
    // generated code cannot rename them to please a style lint.
    let allow: syn::File = syn::parse2(quote! {
        #![allow(clippy::enum_variant_names, reason = "names come from the saga spec")]
    })?;
    file.attrs.extend(allow.attrs);
    Ok(format!("{header}{}", spaced(&prettyplease::unparse(&file))))
}

/// prettyplease leaves no blank line between items; add one after each top-level item and
/// after the imports, for readers. Only lines at column 0 are considered, so no string
/// literal or nested code is touched.
fn spaced(code: &str) -> String {
    let lines: Vec<&str> = code.lines().collect();
    let mut out = String::with_capacity(code.len() + lines.len());
    for (i, line) in lines.iter().enumerate() {
        out.push_str(line);
        out.push('\n');
        let Some(next) = lines.get(i + 1) else { continue };
        let ends_item = *line == "}" || *line == "};" || (line.ends_with(';') && !line.starts_with(' '));
        let starts_use = |l: &str| l.starts_with("use ") || l.starts_with("pub use ");
        let both_use = starts_use(line) && starts_use(next);
        let item_head = !line.starts_with(' ') && !line.starts_with("//") && !line.starts_with('#');
        if ends_item && item_head && !both_use && !next.is_empty() && !next.starts_with(' ') {
            out.push('\n');
        }
        if line.starts_with("#![") && !next.is_empty() {
            out.push('\n');
        }
    }
    out
}

/// All Rust files of the generated crate's `src/`, by file name.
pub fn files(saga: &Saga, schemas: &[EventSchema], header: &str) -> Result<BTreeMap<String, String>, syn::Error> {
    let mut out = BTreeMap::new();
    out.insert("lib.rs".into(), lib_rs(saga, header));
    out.insert("envelope.rs".into(), render(rust_support::envelope_module(saga), header)?);
    out.insert("types.rs".into(), render(types_module(saga), header)?);
    out.insert("events.rs".into(), render(events_module(saga, schemas), header)?);
    out.insert("topics.rs".into(), render(topics_module(saga), header)?);
    out.insert("status.rs".into(), render(status_module(saga), header)?);
    out.insert("handlers.rs".into(), render(handlers_module(saga), header)?);
    out.insert("commands.rs".into(), render(commands_module(saga), header)?);
    out.insert("topology.rs".into(), render(topology_module(saga, schemas), header)?);
    Ok(out)
}
