//! Emits `owner.rs`: what the status owner needs to keep its status machine. The store
//! trait it implements (a few SQL methods), the spec's types the store sees, and the binding
//! of both, with the owner's handler, to the generic driver of `saga_contract::owner`, which
//! runs an inbound event and a timeout through the machine, each transition with its
//! history row. The entry commands' first transition is in `commands.rs`, which uses the
//! same store.

use proc_macro2::TokenStream;
use quote::quote;

use super::{doc, names};
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
    let run_event = n.run_event();
    let key = names::verbatim(&saga.key);

    let store_doc = doc(&format!(
        "Where `{owner}` keeps its sagas: the SQL behind the status machine. The functions of this \
         module and the entry commands call it, each method in the caller's transaction (`ctx`), so \
         a status, its history row and the events it publishes commit together."
    ));
    let run_event_doc = doc(&format!(
        "Runs an event `{owner}` received through the status machine, then its handler, in the \
         caller's transaction: the saga is locked; a trigger the status accepts is written as a \
         transition with its history row; one the spec parks (`status.parks`: replies on different \
         topics are not ordered against each other) that arrived before the status it needs waits \
         and is applied, with its handler, once a later event moved the status there; an event for \
         a saga that already ended changes nothing; any other is `HandleError::Unanswered`, which \
         `cargo xtask verify` proves unreachable. Returns the handler's reply."
    ));

    let has_timeouts = sm.states.iter().any(|s| s.timeout.is_some());
    let timeout_items = if has_timeouts {
        let overdue = n.overdue();
        let timeouts = n.timeouts();
        let run_timeout = n.run_timeout();
        let run_timeout_doc = doc(&format!(
            "Resolves the most overdue saga whose deadline is at or before `as_of` and whose key is \
             not in `skip`, in the caller's transaction, \
             as the spec says: asks `{owner}` for the event the timeout publishes (its compensations \
             undo what the saga did), writes the transition with its history row and the event. \
             `Ok(None)` when no saga is due; an error names the saga it failed for."
        ));
        quote! {
            /// A saga past its deadline, as the store finds it.
            #[derive(Debug, Clone, PartialEq)]
            pub struct #overdue {
                pub #key: ::uuid::Uuid,
                pub status: #status,
                /// The trace the saga started with: its timeout belongs to it too.
                pub trace: TraceContext,
            }

            #run_timeout_doc
            pub async fn #run_timeout<H>(
                handler: &H,
                ctx: &mut <H as #store>::Ctx,
                as_of: ::std::time::SystemTime,
                skip: &[::uuid::Uuid],
            ) -> Result<Option<::uuid::Uuid>, saga_contract::SweepFailure<HandleError<<H as #store>::Error>>>
            where
                H: #handler<Ctx = <H as #store>::Ctx, Error = <H as #store>::Error> + #store,
            {
                owner::run_timeout(&Bound { store: handler, handler }, ctx, as_of, skip).await
            }

            /// The timeouts of `handler`, as the runtime's sweeper runs them.
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
                    #run_timeout(&self.0, ctx, as_of, skip)
                }
            }
        }
    } else {
        quote!()
    };
    // Without timeouts the store finds no overdue saga and the handler has no timeout to answer.
    let bound_timeouts = if has_timeouts {
        quote! {
            async fn next_overdue(
                &self,
                ctx: &mut Self::Ctx,
                statuses: &[#status],
                as_of: ::std::time::SystemTime,
                skip: &[::uuid::Uuid],
            ) -> Result<Option<owner::Overdue<#status, TraceContext>>, Self::Error> {
                let due = self.store.next_overdue(ctx, statuses, as_of, skip).await?;
                Ok(due.map(|saga| owner::Overdue { saga_key: saga.#key, status: saga.status, trace: saga.trace }))
            }

            async fn on_timeout(
                &self,
                ctx: &mut Self::Ctx,
                saga: owner::Overdue<#status, TraceContext>,
                to: #status,
            ) -> Result<Option<OutboxRecord>, Self::Failure> {
                let reply = self.handler.on_timeout(ctx, saga.saga_key, saga.status, to).await.map_err(HandleError::Handler)?;
                reply.into_outbox(saga.saga_key, saga.trace).map_err(HandleError::Encode)
            }
        }
    } else {
        quote! {
            async fn next_overdue(
                &self,
                _: &mut Self::Ctx,
                _: &[#status],
                _: ::std::time::SystemTime,
                _: &[::uuid::Uuid],
            ) -> Result<Option<owner::Overdue<#status, TraceContext>>, Self::Error> {
                Ok(None)
            }

            async fn on_timeout(
                &self,
                _: &mut Self::Ctx,
                _: owner::Overdue<#status, TraceContext>,
                _: #status,
            ) -> Result<Option<OutboxRecord>, Self::Failure> {
                Ok(None)
            }
        }
    };
    let overdue_method = if has_timeouts {
        let overdue = n.overdue();
        quote! {
            /// The saga whose deadline passed longest ago (at or before `as_of`) while in one of
            /// `statuses`, its key not in `skip`, locked for this transaction; sagas another
            /// transaction holds are passed over.
            fn next_overdue(
                &self,
                ctx: &mut Self::Ctx,
                statuses: &[#status],
                as_of: ::std::time::SystemTime,
                skip: &[::uuid::Uuid],
            ) -> impl Future<Output = Result<Option<#overdue>, Self::Error>> + Send;
        }
    } else {
        quote!()
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
        #[derive(Debug, Clone, Copy)]
        pub struct #transition<'a> {
            pub #key: ::uuid::Uuid,
            /// `None` for the first transition, when the saga starts.
            pub from: Option<#status>,
            pub to: #status,
            /// The event behind the change, for the history row: a timeout's is the event it
            /// publishes, or a fresh id and `timeout` when it publishes none.
            pub event_id: ::uuid::Uuid,
            pub event_type: &'a str,
            pub cause: #cause<'a>,
            /// When the saga times out of `to` ([`deadline_of`]); `None` for a status without a
            /// timeout.
            pub deadline: Option<::chrono::DateTime<::chrono::Utc>>,
        }

        /// The deadline of a saga entering `status` now (the store's [`#store::now`]): now plus
        /// the store's [`#store::timeout`] of it, to the microsecond (what an event's
        /// `deadline` keeps).
        pub fn deadline_of<S: #store + ?Sized>(store: &S, status: #status) -> Option<::chrono::DateTime<::chrono::Utc>> {
            owner::deadline(store.now(), store.timeout(status))
        }

        #store_doc
        pub trait #store: Send + Sync {
            type Ctx: Send;
            type Error: std::error::Error + saga_contract::Classify + Send + Sync + 'static;

            /// The saga's status, locked until the transaction ends; `None` when the saga is
            /// not known here.
            fn load_for_update(
                &self,
                ctx: &mut Self::Ctx,
                #key: ::uuid::Uuid,
            ) -> impl Future<Output = Result<Option<#status>, Self::Error>> + Send;

            /// How long a saga may stay in `status` before it times out: the spec's timeout
            /// (`None`: it has none); a store may scale it (tests shorten them).
            fn timeout(&self, status: #status) -> Option<::std::time::Duration> {
                status.timeout().map(|rule| rule.after)
            }

            /// The time deadlines are counted from: the wall clock; a test scenario's virtual
            /// clock (`scenario`) moves only when told.
            fn now(&self) -> ::chrono::DateTime<::chrono::Utc> {
                ::chrono::Utc::now()
            }

            /// Writes a transition: the status `to`, its `deadline` and the history row.
            fn write_transition(
                &self,
                ctx: &mut Self::Ctx,
                transition: &#transition<'_>,
            ) -> impl Future<Output = Result<(), Self::Error>> + Send;

            /// Keeps an event that arrived before the status it needs; parking the same event
            /// twice keeps one.
            fn park(
                &self,
                ctx: &mut Self::Ctx,
                #key: ::uuid::Uuid,
                event: &saga_contract::ParkedEvent,
            ) -> impl Future<Output = Result<(), Self::Error>> + Send;

            /// The events parked for the saga, oldest first.
            fn parked(
                &self,
                ctx: &mut Self::Ctx,
                #key: ::uuid::Uuid,
            ) -> impl Future<Output = Result<Vec<saga_contract::ParkedEvent>, Self::Error>> + Send;

            /// Removes a parked event once it is applied.
            fn unpark(
                &self,
                ctx: &mut Self::Ctx,
                event_id: ::uuid::Uuid,
            ) -> impl Future<Output = Result<(), Self::Error>> + Send;

            /// Writes an event to the outbox.
            fn publish(
                &self,
                ctx: &mut Self::Ctx,
                record: OutboxRecord,
            ) -> impl Future<Output = Result<(), Self::Error>> + Send;

            #overdue_method
        }

        #run_event_doc
        pub async fn #run_event<H>(
            handler: &H,
            ctx: &mut <H as #store>::Ctx,
            event: #inbound,
        ) -> Result<Option<OutboxRecord>, HandleError<<H as #store>::Error>>
        where
            H: #handler<Ctx = <H as #store>::Ctx, Error = <H as #store>::Error> + #store,
        {
            owner::run_event(&Bound { store: handler, handler }, ctx, event).await
        }

        #timeout_items

        impl owner::StatusMachine for #status {
            type Event = EventType;

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

            fn timeout_to(self) -> Option<#status> {
                self.timeout().map(|rule| rule.to)
            }
        }

        impl owner::OwnerEvent for #inbound {
            type Kind = EventType;

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

        /// The owner's store and handler, as the driver of `saga_contract::owner` runs them:
        /// the same value in the service, apart in a test scenario (which observes the store).
        pub(crate) struct Bound<'a, S, H> {
            pub(crate) store: &'a S,
            pub(crate) handler: &'a H,
        }

        impl<S: #store, H> owner::Owner for Bound<'_, S, H>
        where
            H: #handler<Ctx = S::Ctx, Error = S::Error>,
        {
            type Status = #status;
            type Inbound = #inbound;
            type Trace = TraceContext;
            type Ctx = S::Ctx;
            type Error = S::Error;
            type Failure = HandleError<S::Error>;

            fn load_for_update(
                &self,
                ctx: &mut Self::Ctx,
                saga_key: ::uuid::Uuid,
            ) -> impl Future<Output = Result<Option<#status>, Self::Error>> + Send {
                self.store.load_for_update(ctx, saga_key)
            }

            fn deadline(&self, status: #status) -> Option<::chrono::DateTime<::chrono::Utc>> {
                deadline_of(self.store, status)
            }

            async fn write_transition(
                &self,
                ctx: &mut Self::Ctx,
                t: &owner::Transition<'_, #status, #inbound>,
            ) -> Result<(), Self::Error> {
                let transition = #transition {
                    #key: t.saga_key,
                    from: t.from,
                    to: t.to,
                    event_id: t.event_id,
                    event_type: t.event_type,
                    cause: t.cause,
                    deadline: t.deadline,
                };
                self.store.write_transition(ctx, &transition).await
            }

            async fn park(&self, ctx: &mut Self::Ctx, event: &#inbound) -> Result<(), Self::Failure> {
                let parked = event.to_parked().map_err(HandleError::Encode)?;
                self.store.park(ctx, event.saga_key(), &parked).await.map_err(HandleError::Handler)
            }

            fn parked(
                &self,
                ctx: &mut Self::Ctx,
                saga_key: ::uuid::Uuid,
            ) -> impl Future<Output = Result<Vec<saga_contract::ParkedEvent>, Self::Error>> + Send {
                self.store.parked(ctx, saga_key)
            }

            fn unparked(parked: &saga_contract::ParkedEvent) -> Option<#inbound> {
                #inbound::decode(&parked.topic, &parked.payload).ok().flatten()
            }

            fn unpark(&self, ctx: &mut Self::Ctx, event_id: ::uuid::Uuid) -> impl Future<Output = Result<(), Self::Error>> + Send {
                self.store.unpark(ctx, event_id)
            }

            fn publish(&self, ctx: &mut Self::Ctx, record: OutboxRecord) -> impl Future<Output = Result<(), Self::Error>> + Send {
                self.store.publish(ctx, record)
            }

            fn handle(
                &self,
                ctx: &mut Self::Ctx,
                event: #inbound,
                step: #step,
            ) -> impl Future<Output = Result<Option<OutboxRecord>, Self::Failure>> + Send {
                event.handle(self.handler, ctx, step)
            }

            #bound_timeouts
        }
    })
}
