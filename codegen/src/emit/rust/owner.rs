//! Emits `owner.rs`: what binds the status owner to the generic driver of
//! `saga_contract::owner`, which runs an inbound event and a timeout through the machine,
//! each transition with its history row. The store the owner implements is the generic
//! `saga_contract::owner::Store` of its status machine; this names it and the spec's types
//! it sees, and binds the owner's handler. The entry commands' first transition is in
//! `commands.rs`, which uses the same store.

use proc_macro2::TokenStream;
use quote::quote;

use super::names;
use crate::ir::Saga;

/// `None` when the spec declares no status machine.
pub(super) fn module(saga: &Saga) -> Option<TokenStream> {
    let sm = saga.status.as_ref()?;
    let owner = &sm.owner;
    let n = names::service(owner);
    let status = n.status();
    let handler = n.handler();
    let inbound = n.inbound();
    let store = n.store();
    let step = n.step();
    let cause = n.cause();
    let transition = n.transition();
    let overdue = n.overdue();

    let has_timeouts = sm.states.iter().any(|s| s.timeout.is_some());
    let timeout_items = if has_timeouts {
        let timeouts = n.timeouts();
        quote! {
            /// The timeouts of `handler` (its own store), as the runtime's sweeper runs them:
            /// each call resolves the most overdue saga (`saga_contract::owner::run_timeout`).
            #[derive(Debug, Clone)]
            pub struct #timeouts<H>(pub H);

            impl<H> saga_contract::Sweep for #timeouts<H>
            where
                H: #handler<Ctx = <H as #store>::Ctx, Error = <H as #store>::Error> + #store + 'static,
            {
                type Ctx = <H as #store>::Ctx;
                type Error = HandleError<<H as #store>::Error>;

                fn sweep_one<'a>(
                    &'a self,
                    ctx: &'a mut Self::Ctx,
                    as_of: ::std::time::SystemTime,
                    skip: &'a [::uuid::Uuid],
                ) -> impl Future<Output = Result<Option<::uuid::Uuid>, saga_contract::SweepFailure<Self::Error>>> + Send + 'a {
                    owner::run_timeout::<_, _, #status>(&self.0, &self.0, ctx, as_of, skip)
                }
            }
        }
    } else {
        quote!()
    };
    // Without timeouts the driver never asks for the event a timeout publishes.
    let on_timeout = if has_timeouts {
        quote! {
            async fn on_timeout(handler: &H, ctx: &mut H::Ctx, saga: #overdue, to: #status) -> Result<Option<OutboxRecord>, Self::Failure> {
                let reply = handler.on_timeout(ctx, saga.saga_key, saga.status, to).await.map_err(HandleError::Handler)?;
                reply.into_outbox(saga.saga_key, saga.trace).map_err(HandleError::Encode)
            }
        }
    } else {
        quote! {
            async fn on_timeout(_: &H, _: &mut H::Ctx, _: #overdue, _: #status) -> Result<Option<OutboxRecord>, Self::Failure> {
                Ok(None)
            }
        }
    };

    Some(quote! {
        //! What the status owner needs to keep its status machine: the store it implements, and
        //! the functions that run its inbound events and its timeouts through the machine (the
        //! driver of `saga_contract::owner`, bound here to this saga's types).

        use std::future::Future;

        use saga_contract::OutboxRecord;
        use saga_contract::owner;

        use super::envelope::TraceContext;
        use super::events::EventType;
        use super::handlers::{HandleError, #handler, #inbound};
        use super::status::#status;

        /// What the status machine made of an event, before the owner's handler runs.
        pub type #step = owner::Step<#status>;

        /// Why a status changes: what the store may take further columns from.
        pub type #cause<'a> = owner::Cause<'a, #inbound>;

        /// One change of a saga's status, as the store writes it.
        pub type #transition<'a> = owner::TransitionOf<'a, #status>;

        /// A saga past its deadline, as the store finds it.
        pub type #overdue = owner::OverdueOf<#status>;

        #timeout_items

        impl owner::StatusMachine for #status {
            type Event = EventType;
            type Inbound = #inbound;

            const WITH_TIMEOUT: &'static [#status] = #status::WITH_TIMEOUT;

            fn name(self) -> &'static str {
                self.as_str()
            }

            fn event_name(event: EventType) -> &'static str {
                event.as_str()
            }

            fn is_terminal(self) -> bool {
                #status::is_terminal(self)
            }

            fn next(self, event: EventType) -> Option<#status> {
                self.on_event(event).ok()
            }

            fn is_trigger(event: EventType) -> bool {
                #status::is_trigger(event)
            }

            fn parks(event: EventType) -> bool {
                #status::parks(event)
            }

            fn timeout_after(self) -> Option<::std::time::Duration> {
                self.timeout().map(|rule| rule.after)
            }

            fn timeout_to(self) -> Option<#status> {
                self.timeout().map(|rule| rule.to)
            }
        }

        impl owner::OwnerEvent for #inbound {
            type Kind = EventType;
            type Trace = TraceContext;

            fn kind(&self) -> EventType {
                self.event_type()
            }

            fn event_id(&self) -> ::uuid::Uuid {
                #inbound::event_id(self)
            }

            fn saga_key(&self) -> ::uuid::Uuid {
                #inbound::saga_key(self)
            }
        }

        /// How the owner's handler answers these events, and how one waits parked, as the
        /// driver of `saga_contract::owner` runs them.
        impl<H: #handler> owner::HandledBy<H> for #inbound {
            type Status = #status;
            type Ctx = H::Ctx;
            type Error = H::Error;
            type Failure = HandleError<H::Error>;

            fn to_parked(&self) -> Result<saga_contract::ParkedEvent, Self::Failure> {
                #inbound::to_parked(self).map_err(HandleError::Encode)
            }

            fn unparked(parked: &saga_contract::ParkedEvent) -> Option<#inbound> {
                #inbound::decode(&parked.topic, &parked.payload).ok().flatten()
            }

            fn handle(
                self,
                handler: &H,
                ctx: &mut H::Ctx,
                step: #step,
            ) -> impl Future<Output = Result<Option<OutboxRecord>, Self::Failure>> + Send {
                #inbound::handle(self, handler, ctx, step)
            }

            #on_timeout
        }
    })
}
