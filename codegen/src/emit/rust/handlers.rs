//! Emits `handlers.rs`: per service a handler trait with one method per subscribed event,
//! the reply enums, and the inbound enum the runtime's consumer dispatches.

use std::collections::BTreeMap;

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::doc;
use crate::ir::{Saga, pascal, snake};

pub(super) fn module(saga: &Saga) -> TokenStream {
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
