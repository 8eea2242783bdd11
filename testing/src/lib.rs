//! The scenario harness every saga shares: what a test needs to run a service's
//! handlers in-process, in the caller's transaction, with no Kafka and a virtual
//! clock. Nothing here knows a saga: the generated `scenario` module of each saga
//! binds it to its events ([`EventKind`], [`DecodeAs`]), its services
//! ([`Participant`]) and its status owner, and adds what the spec decides (sample
//! payloads, every path of the status machine).
//!
//! - [`VirtualClock`]: a clock that moves only when told; the owner's deadlines are
//!   counted from it.
//! - [`Inbox`]: delivers an event as the runtime's consumer does, once per event id.
//! - [`Published`]: what a scenario saw published, by saga, as [`Emitted`] events.
//! - [`Participant`]: one service's handlers, fed its inbound events.
//! - [`Observed`]: the status owner's store as a scenario runs it, keeping in its
//!   [`OwnerLog`] what the store did, as [`Change`]s and events.
//! - [`OwnerScenario`]: the status owner, its events and timeouts run through the
//!   status machine and its handler over the [`Observed`] store.

mod clock;
mod delivery;
mod owner;

pub use clock::VirtualClock;
pub use delivery::{BySaga, Delivered, Emitted, Inbox, Participant, Published};
pub use owner::{Change, Observed, OwnerLog, OwnerScenario};

/// A valid value of a payload type, for scenarios that do not care about its fields:
/// the generated code gives every record, enum, event payload and command one (ids
/// fresh, amounts and counts one, lists of one, enums their first symbol).
pub trait Sample {
    fn sample() -> Self;
}

/// The kind of a saga's events (the generated `EventType`), as an outbox record names
/// it.
pub trait EventKind: Sized {
    /// The kind named `name` (`order.created`); `None` for a name the saga does not know.
    fn from_name(name: &str) -> Option<Self>;
}

/// How the events of kind `Self` decode as payload `E`: the generated `Envelope<E>`.
pub trait DecodeAs<E>: EventKind {
    type Envelope;
    type Error;

    fn decode_as(payload: &[u8]) -> Result<Self::Envelope, Self::Error>;
}
