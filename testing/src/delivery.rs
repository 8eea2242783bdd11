//! Delivering events as the runtime's consumer does, and keeping what was published.

use std::collections::HashSet;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::{Mutex, PoisonError};

use saga_contract::{Dispatch, EventMeta, OutboxRecord};
use uuid::Uuid;

use crate::{DecodeAs, EventKind};

/// An event a scenario saw published: a handler's reply, or a write to the outbox.
/// `K` is the saga's kind of events (the generated `EventType`).
#[derive(Debug, Clone, PartialEq)]
pub struct Emitted<K> {
    pub event_type: K,
    pub record: OutboxRecord,
}

impl<K> Emitted<K> {
    /// The event, decoded as `E` (the generated `Envelope<E>`).
    pub fn decode<E>(&self) -> Result<K::Envelope, K::Error>
    where
        K: DecodeAs<E>,
    {
        K::decode_as(&self.record.payload)
    }
}

/// What one delivery did.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivered<K> {
    /// The handler ran; `reply` is what it published in answer, if anything.
    Handled { reply: Option<Emitted<K>> },
    /// The event id was delivered before: nothing ran (the runtime's inbox).
    Duplicate,
}

/// Values kept per saga, in the order they came.
#[derive(Debug)]
pub struct BySaga<T>(Mutex<Vec<(Uuid, T)>>);

impl<T> Default for BySaga<T> {
    fn default() -> Self {
        BySaga(Mutex::default())
    }
}

impl<T: Clone> BySaga<T> {
    pub fn push(&self, key: Uuid, value: T) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push((key, value));
    }

    /// What was kept for saga `key`, oldest first.
    pub fn of(&self, key: Uuid) -> Vec<T> {
        let kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        kept.iter().filter(|(k, _)| *k == key).map(|(_, v)| v.clone()).collect()
    }
}

/// Everything a scenario saw published, by saga.
#[derive(Debug)]
pub struct Published<K>(BySaga<Emitted<K>>);

impl<K> Default for Published<K> {
    fn default() -> Self {
        Published(BySaga::default())
    }
}

impl<K: EventKind + Clone> Published<K> {
    /// Keeps `record` for saga `key`; `None` (and nothing kept) for an event type the
    /// saga does not know.
    pub fn push(&self, key: Uuid, record: OutboxRecord) -> Option<Emitted<K>> {
        let emitted = Emitted { event_type: K::from_name(&record.event_type)?, record };
        self.0.push(key, emitted.clone());
        Some(emitted)
    }

    /// What saga `key` published, oldest first.
    pub fn of(&self, key: Uuid) -> Vec<Emitted<K>> {
        self.0.of(key)
    }
}

/// The event ids a scenario has handled: the runtime's inbox.
#[derive(Debug, Default)]
pub struct Inbox(HashSet<Uuid>);

impl Inbox {
    /// Delivers `event` to `handler` as the runtime's consumer does: once per event id,
    /// its reply kept in `published`.
    pub async fn deliver<H, E: Dispatch<H>, K: EventKind + Clone>(
        &mut self,
        published: &Published<K>,
        handler: &H,
        ctx: &mut E::Ctx,
        event: E,
    ) -> Result<Delivered<K>, E::Error> {
        let meta = event.meta();
        self.deliver_with(published, meta, event.dispatch(handler, ctx)).await
    }

    /// Delivers the event `meta` describes by running `run` (which handles it) unless its
    /// id was delivered before; its reply kept in `published`. `run` is not polled for a
    /// duplicate.
    pub async fn deliver_with<K: EventKind + Clone, Err>(
        &mut self,
        published: &Published<K>,
        meta: EventMeta,
        run: impl Future<Output = Result<Option<OutboxRecord>, Err>>,
    ) -> Result<Delivered<K>, Err> {
        if self.0.contains(&meta.event_id) {
            return Ok(Delivered::Duplicate);
        }
        let reply = run.await?;
        // Only a handled event is in the inbox: a failed one rolls back and comes again.
        self.0.insert(meta.event_id);
        Ok(Delivered::Handled { reply: reply.and_then(|record| published.push(meta.saga_key, record)) })
    }
}

/// A participant's handlers `H` in a scenario, fed its inbound events `E` (of kind `K`):
/// each event delivered as its consumer delivers it (once per event id), in the caller's
/// transaction; what it published is kept for [`Self::emitted`].
pub struct Participant<H, E, K> {
    handler: H,
    inbox: Inbox,
    published: Published<K>,
    events: PhantomData<fn() -> E>,
}

impl<H, E: Dispatch<H> + Clone, K: EventKind + Clone> Participant<H, E, K> {
    pub fn new(handler: H) -> Self {
        Participant { handler, inbox: Inbox::default(), published: Published::default(), events: PhantomData }
    }

    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The event arrives: the handler runs unless the event id was delivered before.
    pub async fn when(&mut self, ctx: &mut E::Ctx, event: impl Into<E>) -> Result<Delivered<K>, E::Error> {
        self.inbox.deliver(&self.published, &self.handler, ctx, event.into()).await
    }

    /// The event arrives twice (a redelivery): the second changes nothing.
    pub async fn when_twice(&mut self, ctx: &mut E::Ctx, event: impl Into<E>) -> Result<[Delivered<K>; 2], E::Error> {
        let event = event.into();
        let first = self.when(ctx, event.clone()).await?;
        Ok([first, self.when(ctx, event).await?])
    }

    /// What the handlers published for saga `key`, oldest first.
    pub fn emitted(&self, key: Uuid) -> Vec<Emitted<K>> {
        self.published.of(key)
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use saga_contract::{Classify, FailureClass, Inbound};

    use super::*;

    /// Runs a future that never waits (the handlers below do not).
    fn ready<T>(future: impl Future<Output = T>) -> T {
        let mut future = pin!(future);
        match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(value) => value,
            Poll::Pending => panic!("the future waited"),
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Kind {
        Ping,
        Pong,
    }

    impl EventKind for Kind {
        fn from_name(name: &str) -> Option<Self> {
            match name {
                "ping" => Some(Kind::Ping),
                "pong" => Some(Kind::Pong),
                _ => None,
            }
        }
    }

    /// Decodes a payload as its text.
    impl DecodeAs<String> for Kind {
        type Envelope = String;
        type Error = std::string::FromUtf8Error;

        fn decode_as(payload: &[u8]) -> Result<String, Self::Error> {
            String::from_utf8(payload.to_vec())
        }
    }

    /// An event: its id, its saga, and the event type its handler replies with.
    #[derive(Debug, Clone)]
    struct Ping {
        id: Uuid,
        saga: Uuid,
        reply: Option<&'static str>,
    }

    impl Ping {
        fn new(saga: Uuid, reply: Option<&'static str>) -> Self {
            Ping { id: Uuid::now_v7(), saga, reply }
        }
    }

    impl Inbound for Ping {
        fn decode(_: &str, _: &[u8]) -> Result<Option<Self>, String> {
            Ok(None)
        }

        fn meta(&self) -> EventMeta {
            EventMeta { event_id: self.id, event_type: "ping", saga_key: self.saga, traceparent: None }
        }
    }

    #[derive(Debug, PartialEq)]
    struct Refused;

    impl std::fmt::Display for Refused {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("refused")
        }
    }

    impl std::error::Error for Refused {}

    impl Classify for Refused {
        fn class(&self) -> FailureClass {
            FailureClass::Permanent
        }
    }

    /// Counts the events it handled (the context); refuses while `refuse` is set.
    struct Handler {
        refuse: bool,
    }

    impl Dispatch<Handler> for Ping {
        type Ctx = u32;
        type Error = Refused;

        async fn dispatch(self, handler: &Handler, ctx: &mut u32) -> Result<Option<OutboxRecord>, Refused> {
            if handler.refuse {
                return Err(Refused);
            }
            *ctx += 1;
            Ok(self.reply.map(|event_type| OutboxRecord {
                event_id: Uuid::now_v7(),
                topic: "pings".to_owned(),
                partition_key: self.saga.to_string(),
                event_type: event_type.to_owned(),
                payload: b"hello".to_vec(),
                headers: Vec::new(),
            }))
        }
    }

    type Scenario = Participant<Handler, Ping, Kind>;

    #[test]
    fn an_event_is_handled_once_per_id() {
        let mut s = Scenario::new(Handler { refuse: false });
        let saga = Uuid::now_v7();
        let mut handled = 0;
        let [first, second] = ready(s.when_twice(&mut handled, Ping::new(saga, Some("pong")))).unwrap();
        assert_eq!(handled, 1);
        let Delivered::Handled { reply: Some(reply) } = first else { panic!("{first:?}") };
        assert_eq!(reply.event_type, Kind::Pong);
        assert_eq!(second, Delivered::Duplicate);
        assert_eq!(s.emitted(saga), [reply]);
    }

    #[test]
    fn a_failed_event_comes_again() {
        let mut s = Scenario::new(Handler { refuse: true });
        let ping = Ping::new(Uuid::now_v7(), None);
        let mut handled = 0;
        assert_eq!(ready(s.when(&mut handled, ping.clone())), Err(Refused));
        s.handler = Handler { refuse: false };
        assert_eq!(ready(s.when(&mut handled, ping)), Ok(Delivered::Handled { reply: None }));
        assert_eq!(handled, 1);
    }

    #[test]
    fn what_was_published_is_kept_per_saga_oldest_first() {
        let mut s = Scenario::new(Handler { refuse: false });
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let mut handled = 0;
        for (saga, reply) in [(a, "ping"), (b, "pong"), (a, "pong")] {
            ready(s.when(&mut handled, Ping::new(saga, Some(reply)))).unwrap();
        }
        let kinds = |saga| s.emitted(saga).into_iter().map(|e| e.event_type).collect::<Vec<_>>();
        assert_eq!(kinds(a), [Kind::Ping, Kind::Pong]);
        assert_eq!(kinds(b), [Kind::Pong]);
        assert!(s.emitted(Uuid::now_v7()).is_empty());
    }

    #[test]
    fn a_reply_of_an_unknown_type_is_handled_but_not_kept() {
        let mut s = Scenario::new(Handler { refuse: false });
        let saga = Uuid::now_v7();
        let mut handled = 0;
        assert_eq!(
            ready(s.when(&mut handled, Ping::new(saga, Some("unknown")))),
            Ok(Delivered::Handled { reply: None })
        );
        assert_eq!(handled, 1);
        assert!(s.emitted(saga).is_empty());
    }

    #[test]
    fn a_duplicate_is_not_run() {
        let mut inbox = Inbox::default();
        let published = Published::<Kind>::default();
        let meta = Ping::new(Uuid::now_v7(), None).meta();
        let mut runs = 0;
        let mut run = || {
            runs += 1;
            std::future::ready(Ok::<_, Refused>(None))
        };
        assert_eq!(ready(inbox.deliver_with(&published, meta.clone(), run())), Ok(Delivered::Handled { reply: None }));
        let again = inbox.deliver_with(&published, meta, async { panic!("a duplicate ran") });
        assert_eq!(ready(again), Ok::<_, Refused>(Delivered::Duplicate));
        assert_eq!(runs, 1);
    }

    #[test]
    fn an_emitted_event_decodes_as_its_payload() {
        let mut s = Scenario::new(Handler { refuse: false });
        let saga = Uuid::now_v7();
        ready(s.when(&mut 0, Ping::new(saga, Some("pong")))).unwrap();
        assert_eq!(s.emitted(saga)[0].decode::<String>().unwrap(), "hello");
    }
}
