//! Emits `owner.rs`: what the status owner needs to keep its status machine. The store
//! trait it implements (a few SQL methods), and the functions that run an inbound event and
//! a timeout through the machine, each transition with its history row. The entry
//! commands' first transition is in `commands.rs`, which uses the same store.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::doc;
use crate::ir::{Saga, pascal, snake};

/// `None` when the spec declares no status machine.
pub(super) fn module(saga: &Saga) -> Option<TokenStream> {
    let sm = saga.status.as_ref()?;
    let owner = &sm.owner;
    let sp = pascal(owner);
    let status = format_ident!("{}Status", sp);
    let handler = format_ident!("{}Handler", sp);
    let inbound = format_ident!("{}Inbound", sp);
    let store = format_ident!("{}Store", sp);
    let step = format_ident!("{}Step", sp);
    let cause = format_ident!("{}Cause", sp);
    let transition = format_ident!("{}Transition", sp);
    let run_event = format_ident!("run_{}_event", snake(owner));
    let key = format_ident!("{}", saga.key);

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
        let overdue = format_ident!("{}Overdue", sp);
        let timeouts = format_ident!("{}Timeouts", sp);
        let run_timeout = format_ident!("run_{}_timeout", snake(owner));
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
                let failed = |saga_key, error| saga_contract::SweepFailure { saga_key, error };
                let due = handler.next_overdue(ctx, #status::WITH_TIMEOUT, as_of, skip).await;
                let Some(saga) = due.map_err(|e| failed(None, HandleError::Handler(e)))? else { return Ok(None) };
                let key = Some(saga.#key);
                // `next_overdue` returns only statuses that time out.
                let Some(rule) = saga.status.timeout() else { return Ok(key) };
                let reply = handler
                    .on_timeout(ctx, saga.#key, saga.status, rule.to)
                    .await
                    .map_err(|e| failed(key, HandleError::Handler(e)))?;
                let record = reply.into_outbox(saga.#key, saga.trace).map_err(|e| failed(key, HandleError::Encode(e)))?;
                let (event_id, event_type) = match &record {
                    Some(r) => (r.event_id, r.event_type.as_str()),
                    None => (::uuid::Uuid::now_v7(), "timeout"),
                };
                let change = #transition {
                    #key: saga.#key,
                    from: Some(saga.status),
                    to: rule.to,
                    event_id,
                    event_type,
                    cause: #cause::Timeout,
                    deadline: deadline_of(handler, rule.to),
                };
                handler.write_transition(ctx, &change).await.map_err(|e| failed(key, HandleError::Handler(e)))?;
                if let Some(record) = record {
                    handler.publish(ctx, record).await.map_err(|e| failed(key, HandleError::Handler(e)))?;
                }
                Ok(key)
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
    let overdue_method = if has_timeouts {
        let overdue = format_ident!("{}Overdue", sp);
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
        //! the functions that run its inbound events and its timeouts through the machine.

        use std::future::Future;

        use saga_contract::OutboxRecord;

        use super::envelope::TraceContext;
        use super::handlers::{HandleError, #handler, #inbound};
        use super::status::#status;

        /// What the status machine made of an event, before the owner's handler runs.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum #step {
            /// The event moved the status.
            Moved { from: #status, to: #status },
            /// The event moves no status in the spec; it is only recorded.
            Recorded { status: #status },
            /// The saga had already ended: the event changes nothing (the compensations of
            /// that end undo whatever the event stands for).
            Late { status: #status },
        }

        /// Why a status changes: what the store may take further columns from.
        #[derive(Debug, Clone, Copy)]
        pub enum #cause<'a> {
            /// An entry command started the saga.
            Started,
            /// An inbound event, with everything it carries.
            Event(&'a #inbound),
            /// The status stayed past its deadline.
            Timeout,
            /// A test scenario put the saga in this status directly (`scenario`'s `given`).
            Seeded,
        }

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
            let after = ::chrono::TimeDelta::from_std(store.timeout(status)?).ok()?;
            let at = store.now().checked_add_signed(after)?;
            ::chrono::DateTime::from_timestamp_micros(at.timestamp_micros())
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
            let #key = event.saga_key();
            let event_type = event.event_type();
            let status = handler
                .load_for_update(ctx, #key)
                .await
                .map_err(HandleError::Handler)?
                .ok_or(HandleError::UnknownSaga(#key))?;
            let step = if !#status::is_trigger(event_type) {
                #step::Recorded { status }
            } else {
                match status.on_event(event_type) {
                    Ok(to) => {
                        let change = #transition {
                            #key,
                            from: Some(status),
                            to,
                            event_id: event.event_id(),
                            event_type: event_type.as_str(),
                            cause: #cause::Event(&event),
                            deadline: deadline_of(handler, to),
                        };
                        handler.write_transition(ctx, &change).await.map_err(HandleError::Handler)?;
                        #step::Moved { from: status, to }
                    }
                    Err(_) if status.is_terminal() => #step::Late { status },
                    Err(_) if #status::parks(event_type) => {
                        let parked = event.to_parked().map_err(HandleError::Encode)?;
                        handler.park(ctx, #key, &parked).await.map_err(HandleError::Handler)?;
                        return Ok(None);
                    }
                    Err(_) => {
                        return Err(HandleError::Unanswered { status: status.as_str(), event: event_type.as_str() });
                    }
                }
            };
            let reply = event.handle(handler, ctx, step).await?;
            if let #step::Moved { to, .. } = step {
                apply_parked(handler, ctx, #key, to).await?;
            }
            Ok(reply)
        }

        /// Applies, oldest first, each parked event the status now accepts, until none does;
        /// their replies go to the outbox.
        async fn apply_parked<H>(
            handler: &H,
            ctx: &mut <H as #store>::Ctx,
            #key: ::uuid::Uuid,
            mut status: #status,
        ) -> Result<(), HandleError<<H as #store>::Error>>
        where
            H: #handler<Ctx = <H as #store>::Ctx, Error = <H as #store>::Error> + #store,
        {
            loop {
                let mut next = None;
                for parked in handler.parked(ctx, #key).await.map_err(HandleError::Handler)? {
                    // One that no longer decodes (its schema changed while it waited) stays
                    // parked, for an operator to see: it must not fail the event in hand.
                    let Ok(Some(event)) = #inbound::decode(&parked.topic, &parked.payload) else { continue };
                    if let Ok(to) = status.on_event(event.event_type()) {
                        next = Some((parked.event_id, event, to));
                        break;
                    }
                }
                let Some((event_id, event, to)) = next else { return Ok(()) };
                handler.unpark(ctx, event_id).await.map_err(HandleError::Handler)?;
                let change = #transition {
                    #key,
                    from: Some(status),
                    to,
                    event_id,
                    event_type: event.event_type().as_str(),
                    cause: #cause::Event(&event),
                    deadline: deadline_of(handler, to),
                };
                handler.write_transition(ctx, &change).await.map_err(HandleError::Handler)?;
                let step = #step::Moved { from: status, to };
                status = to;
                if let Some(record) = event.handle(handler, ctx, step).await? {
                    handler.publish(ctx, record).await.map_err(HandleError::Handler)?;
                }
            }
        }

        #timeout_items
    })
}
