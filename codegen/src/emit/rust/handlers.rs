//! Emits `handlers.rs`: per service a handler trait with one method per subscribed event,
//! the reply enums, and the inbound enum the runtime's consumer dispatches.

use std::collections::BTreeMap;

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::doc;
use super::names;
use crate::ir::Saga;

pub(super) fn module(saga: &Saga) -> TokenStream {
    let mut items = Vec::new();
    for svc in &saga.services {
        let subs: Vec<_> = saga.subscriptions(&svc.name).collect();
        // The status owner's handlers run after the status machine (`owner.rs`): each is told
        // what the machine did with its event.
        let owner = saga.status.as_ref().filter(|s| s.owner == svc.name);
        let owns_timeouts = owner.is_some_and(|s| s.states.iter().any(|st| st.timeout.is_some()));
        if subs.is_empty() && !owns_timeouts {
            continue;
        }
        let n = names::service(&svc.name);
        let step = owner.map(|_| n.step());
        let (step_param, step_arg) = match &step {
            Some(step) => (quote!(step: super::owner::#step,), quote!(step,)),
            None => (quote!(), quote!()),
        };
        let trait_id = n.handler();
        let inbound = n.inbound();
        let mut methods = Vec::new();
        let mut variants = Vec::new();
        let mut handle_arms = Vec::new();
        let mut decode_topics: BTreeMap<&str, Vec<syn::Ident>> = BTreeMap::new();
        for (e, sub) in &subs {
            let ev = names::type_of(&e.name);
            let reply = n.reply(&e.name);
            let method = names::on_event(&e.name);
            let rv: Vec<_> = sub.replies.iter().map(|r| names::type_of(r)).collect();
            let mut text = format!("`{}` received `{}` (topic `{}`).", svc.name, e.name, e.topic);
            if owner.is_some() {
                text.push_str(" `step` says what the status machine made of it.");
            }
            if saga.reads_context(&svc.name, &e.name) {
                text.push_str(
                    " `context` is the saga context the entry command set; `None` only for a saga begun before the spec declared it.",
                );
            }
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
            // A handler that reads the saga context gets it as an argument: `None` only for a
            // saga begun before the spec had its `context:` (the generator proves that every
            // saga this version starts carries it), which the handler must still answer.
            let reads = saga.reads_context(&svc.name, &e.name);
            let (context_param, context_arg, take_context) = if reads {
                (
                    quote!(context: Option<super::types::SagaContext>,),
                    quote!(context,),
                    quote!(let context = e.context.clone();),
                )
            } else {
                (quote!(), quote!(), quote!())
            };
            methods.push(quote! {
                #mdoc
                fn #method(
                    &self,
                    ctx: &mut Self::Ctx,
                    event: Envelope<super::events::#ev>,
                    #context_param
                    #step_param
                ) -> impl Future<Output = Result<#reply, Self::Error>> + Send;
            });
            variants.push(quote! { #ev(Envelope<super::events::#ev>), });
            handle_arms.push(quote! {
                #inbound::#ev(e) => {
                    #take_context
                    let parent = e.meta();
                    let reply = handler.#method(ctx, e, #context_arg #step_arg).await.map_err(HandleError::Handler)?;
                    reply.into_outbox(&parent).map_err(HandleError::Encode)
                }
            });
            decode_topics.entry(e.topic.as_str()).or_default().push(ev);
        }
        let mut timeout_item = quote!();
        if owns_timeouts && let Some(sm) = &saga.status {
            let status = names::service(&sm.owner).status();
            let reply = n.timeout_reply();
            let mut emits: Vec<&str> = sm.states.iter().filter_map(|s| s.timeout.as_ref()?.emits.as_deref()).collect();
            emits.sort_unstable();
            emits.dedup();
            let rv: Vec<_> = emits.iter().map(|r| names::type_of(r)).collect();
            let key = names::verbatim(&saga.key);
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
            timeout_item = quote! {
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
            let te = names::type_of(topic);
            quote! {
                #topic => match super::topics::#te::decode(bytes) {
                    #( Ok(super::topics::#te::#evs(e)) => Ok(Some(#inbound::#evs(e))), )*
                    #[allow(unreachable_patterns)]
                    Ok(_) => Ok(None),
                    Err(e) if e.is_unknown_event_of_a_later_version() => Ok(None),
                    Err(e) => Err(e),
                },
            }
        });
        let evs: Vec<_> = subs.iter().map(|(e, _)| names::type_of(&e.name)).collect();
        // The owner's events go through its status machine first, which may park one that
        // arrived before the status it needs; everyone else's go straight to the handler.
        let (owner_items, dispatch) = match &owner {
            Some(_) => {
                let store = n.store();
                let items = quote! {
                    /// The event as it is parked until the status it needs is reached.
                    pub fn to_parked(&self) -> Result<saga_contract::ParkedEvent, EncodeError> {
                        let record = match self { #( #inbound::#evs(e) => e.to_outbox()?, )* };
                        Ok(saga_contract::ParkedEvent {
                            event_id: record.event_id,
                            event_type: record.event_type,
                            topic: record.topic,
                            payload: record.payload,
                        })
                    }
                };
                let dispatch = quote! {
                    /// How the runtime's transactional consumer runs these events: through the status
                    /// machine (`owner.rs`), then the handler.
                    impl<H> saga_contract::Dispatch<H> for #inbound
                    where
                        H: #trait_id<Ctx = <H as #store>::Ctx, Error = <H as #store>::Error>
                            + #store,
                    {
                        type Ctx = <H as #store>::Ctx;
                        type Error = HandleError<<H as #store>::Error>;

                        fn dispatch<'a>(
                            self,
                            handler: &'a H,
                            ctx: &'a mut Self::Ctx,
                        ) -> impl Future<Output = Result<Option<OutboxRecord>, Self::Error>> + Send + 'a {
                            saga_contract::owner::run_event(handler, handler, ctx, self)
                        }
                    }
                };
                (items, dispatch)
            }
            None => (
                quote!(),
                quote! {
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
                },
            ),
        };
        let inbound_items = if subs.is_empty() {
            quote!()
        } else {
            quote! {
                #idoc
                #[derive(Debug, Clone, PartialEq)]
                pub enum #inbound { #(#variants)* }

                impl #inbound {
                    /// Decodes a Kafka message. `Ok(None)`: an event on a consumed topic this service
                    /// does not subscribe to, or one of a later version of the saga that this build
                    /// does not know (its schema learned from the schema topic): acknowledge and skip it.
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
                    pub async fn handle<H: #trait_id>(self, handler: &H, ctx: &mut H::Ctx, #step_param) -> Result<Option<OutboxRecord>, HandleError<H::Error>> {
                        match self { #(#handle_arms)* }
                    }

                    #owner_items
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

                #dispatch
            }
        };
        items.push(quote! {
            #tdoc
            pub trait #trait_id: Send + Sync {
                /// Per-delivery context, e.g. the database transaction the inbox row and the
                /// handler's writes share.
                type Ctx: Send;
                /// Says of each failure whether it is an outage, a state not there yet or a
                /// permanent verdict on the event (see `saga_contract::FailureClass`).
                type Error: std::error::Error + saga_contract::Classify + Send + Sync + 'static;
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

        use saga_contract::OutboxRecord;

        use super::envelope::{DecodeError, EncodeError, Envelope, TraceContext};
        use super::events::EventType;

        /// A handler run failed (`saga_contract::HandleError`, with this saga's encode error):
        /// the handler or its store, the reply's encoding, or, at the status owner, a saga it
        /// does not know (yet) or an event the spec gives no answer for.
        pub type HandleError<E> = saga_contract::HandleError<E, EncodeError>;

        #(#items)*
    }
}
