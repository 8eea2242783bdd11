//! Transactional handling: decode, then in one PostgreSQL transaction claim
//! the inbox row, run the handler and insert its reply into the outbox.

use saga_contract::{Dispatch, Inbound};
use sqlx::{Connection as _, PgConnection, PgPool};
use tracing::Instrument;

use super::{Failure, Processed, Processor, Received};
use crate::db::{AfterCommit, PoolName, Shelf, Shelved};
use crate::{inbox, outbox, schema_registry};

/// Decode, inbox, handle and outbox in one transaction: the consumer of a
/// saga service whose handler `H` handles the inbound events `E` (generated
/// from the spec, see `saga_contract::Dispatch`).
pub struct TxConsumer<H, E> {
    /// The workers' connections between messages, outside the pool (see `Shelf`).
    shelf: Shelf,
    handler: H,
    events: std::marker::PhantomData<fn() -> E>,
}

impl<H, E> TxConsumer<H, E> {
    pub fn new(pool: PgPool, handler: H) -> Self {
        TxConsumer { shelf: Shelf::new(&pool, PoolName::Work), handler, events: std::marker::PhantomData }
    }
}

impl<H, E> Processor for TxConsumer<H, E>
where
    H: Send + Sync + 'static,
    E: Dispatch<H, Ctx = PgConnection>,
{
    async fn process(&self, message: &Received) -> Result<Processed, Failure> {
        let Some(event) = decode::<E>(message).await? else {
            return Ok(Processed::Ignored);
        };
        let mut conn = self.shelf.take().await.map_err(Failure::database)?;
        let mut tx = conn.begin().await.map_err(Failure::database)?;
        let (handled, after_commit) = AfterCommit::gather(self.handle(&mut tx, message, event)).await;
        let outcome = match handled {
            Ok(outcome) => outcome,
            Err(failure) => return Err(ended(tx.rollback().await, conn, failure)),
        };
        if outcome.processed == Processed::Handled {
            tx.commit().await.map_err(Failure::database)?;
            after_commit.run();
        } else {
            tx.rollback().await.map_err(Failure::database)?;
        }
        conn.keep();
        outcome.log_committed();
        Ok(outcome.processed)
    }

    async fn process_batch(&self, messages: &[Received]) -> Result<(), Failure> {
        // Decode all first: an undecodable message fails the batch before
        // any transaction starts, and is dead-lettered on its own.
        let mut events = Vec::with_capacity(messages.len());
        for message in messages {
            if let Some(event) = decode::<E>(message).await? {
                events.push((message, event));
            }
        }
        if events.is_empty() {
            return Ok(());
        }
        let mut conn = self.shelf.take().await.map_err(Failure::database)?;
        let mut tx = conn.begin().await.map_err(Failure::database)?;
        let (handled, after_commit) = AfterCommit::gather(async {
            let mut outcomes = Vec::with_capacity(events.len());
            for (message, event) in events {
                // Later messages see what earlier ones wrote: same transaction.
                outcomes.push(self.handle(&mut tx, message, event).await?);
            }
            Ok(outcomes)
        })
        .await;
        let outcomes = match handled {
            Ok(outcomes) => outcomes,
            Err(failure) => return Err(ended(tx.rollback().await, conn, failure)),
        };
        tx.commit().await.map_err(Failure::database)?;
        after_commit.run();
        conn.keep();
        outcomes.iter().for_each(Outcome::log_committed);
        Ok(())
    }
}

/// The event `message` holds. A message this build cannot decode may have
/// been written with a schema published after it: the schema topic is read
/// up to its end (`schema_registry::catch_up`) and, if that taught the
/// process a schema, the message is decoded again. Otherwise it is
/// undecodable: the publisher registers a schema before it publishes with
/// it, so a fingerprint still unknown is no event of this saga's.
async fn decode<E: Inbound>(message: &Received) -> Result<Option<E>, Failure> {
    let error = match E::decode(&message.topic, &message.payload) {
        Ok(event) => return Ok(event),
        Err(error) => error,
    };
    let unknown = saga_wire::fingerprint_of(&message.payload)
        .is_ok_and(|fingerprint| saga_wire::learned::learned(&fingerprint).is_none());
    if !unknown {
        return Err(Failure::Undecodable(error));
    }
    match schema_registry::catch_up().await {
        // Decoded again even when nothing was new here: another worker's catch-up may
        // have learned it while this one waited for its turn.
        Ok(_) => E::decode(&message.topic, &message.payload).map_err(Failure::Undecodable),
        Err(outage) => Err(Failure::Infrastructure(format!("looking the writer schema up: {outage}"))),
    }
}

/// A handler failed: its transaction was rolled back (`rollback`), and the
/// connection goes back on the shelf if that worked (else it is closed).
fn ended(rollback: Result<(), sqlx::Error>, conn: Shelved<'_>, failure: Failure) -> Failure {
    if rollback.is_ok() {
        conn.keep();
    }
    failure
}

/// What handling one event did, logged once its transaction committed.
struct Outcome {
    processed: Processed,
    reply: Option<String>,
    span: tracing::Span,
}

impl Outcome {
    fn log_committed(&self) {
        let _entered = self.span.enter();
        match self.processed {
            Processed::Handled => tracing::info!(reply = self.reply.as_deref(), "event handled"),
            Processed::Duplicate => tracing::info!("duplicate event ignored"),
            Processed::Ignored => {}
        }
    }
}

impl<H, E> TxConsumer<H, E>
where
    H: Send + Sync + 'static,
    E: Dispatch<H, Ctx = PgConnection>,
{
    /// Inbox claim, handler and outbox insert for one decoded event, in the
    /// caller's transaction. A duplicate leaves the transaction unchanged.
    async fn handle(&self, conn: &mut PgConnection, message: &Received, event: E) -> Result<Outcome, Failure> {
        let meta = event.meta();
        let span = tracing::info_span!(
            "event",
            saga_key = %meta.saga_key,
            event_id = %meta.event_id,
            event_type = meta.event_type,
            trace_id = meta.traceparent.as_deref().and_then(saga_process::trace::trace_id).unwrap_or(""),
        );
        if let Some(parent) = meta.traceparent.as_deref().filter(|tp| saga_process::trace::is_valid(tp)) {
            saga_process::telemetry::set_parent(&span, parent);
        }
        let source = inbox::Source {
            topic: &message.topic,
            partition: message.partition,
            offset: message.offset,
            produced_at: message.produced_at,
            received_at: message.received_at,
        };
        async {
            let claimed = inbox::claim(&mut *conn, meta.event_id, meta.event_type, source).await;
            if !claimed.map_err(Failure::database)? {
                return Ok((Processed::Duplicate, None));
            }
            let reply = event.dispatch(&self.handler, &mut *conn).await.map_err(|e| Failure::of(&e))?;
            if let Some(reply) = &reply {
                outbox::insert(&mut *conn, reply).await.map_err(Failure::database)?;
            }
            Ok((Processed::Handled, reply.map(|r| r.event_type)))
        }
        .instrument(span.clone())
        .await
        .map(|(processed, reply)| Outcome { processed, reply, span })
    }
}
