//! What the order event streams (`GET /orders/{id}/events`) wait on: a
//! `WatchOrders` call to every instance of the order service, held open for
//! the gateway's life, whose changes wake the streams that follow those
//! orders. An instance tells of the changes it commits itself (its feed is
//! in process, `services/order/src/feed.rs`), so the gateway follows each
//! one; the instances are those the order service's balancer knows
//! ([`Instances::members`]).
//! Each change carries its history row, the row's position and the order's
//! columns after it, so a stream sends it without reading the order again;
//! it reads (`GetOrder`) only when it cannot be sure it has every row (a gap
//! in the positions, a change without its row). An order's changes may come
//! from different instances (created by one, moved on by another's
//! consumer), and so out of order: a gap makes the stream read, and a
//! position it has already seen is dropped.
//!
//! A `resync` from an instance (the first message of every call, and any
//! time it may have missed changes) tells every stream to read again, and so
//! does losing a call. While some instance that answers has no call open the
//! streams poll as before ([`OrderFeed::live`] says which), so a feed that is
//! down costs latency, never an event.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use saga_proto::order::order_service_client::OrderServiceClient;
use saga_proto::order::{OrderChanged, WatchOrdersRequest};
use tokio::sync::watch;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::balance::Instances;

/// How long to wait before calling an instance's `WatchOrders` again after
/// it failed, and how often the list of instances is looked at.
const RECONNECT_AFTER: Duration = Duration::from_millis(500);

/// Counter: order changes the gateway heard from the order service's feed.
pub const FEED_CHANGES: &str = "gateway_order_feed_changes_total";
/// Counter: times every follower was told to read again (resyncs, lost calls).
pub const FEED_RESYNCS: &str = "gateway_order_feed_resyncs_total";
/// Gauge: orders an event stream follows right now.
pub const ORDERS_FOLLOWED: &str = "gateway_orders_followed";

/// Changes kept per followed order; past it they are dropped and its
/// followers read the order instead. An order changes a handful of times in
/// a saga: this only bounds a feed gone wrong.
const MAX_HEARD: usize = 64;

/// The orders being followed, each with what the feed said of it.
#[derive(Clone, Default)]
pub struct OrderFeed {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    followed: Mutex<HashMap<Uuid, watch::Sender<Heard>>>,
    /// Whether every instance that answers has its `WatchOrders` call open
    /// and subscribed (derived from `calls`).
    live: AtomicBool,
    calls: Mutex<Calls>,
}

/// The order service's instances as the feed sees them, by URL.
#[derive(Default)]
struct Calls {
    /// Those whose watcher last heard them answer.
    answering: HashSet<String>,
    /// Those whose `WatchOrders` call is open and subscribed.
    open: HashSet<String>,
}

impl Calls {
    /// Every change committed now reaches the gateway: some call is open and
    /// no instance that answers (and so may commit) is without one.
    fn live(&self) -> bool {
        !self.open.is_empty() && self.answering.is_subset(&self.open)
    }
}

/// What the feed said of one followed order since it was first followed.
#[derive(Default)]
struct Heard {
    /// Its changes, in the order they came.
    changes: Vec<OrderChanged>,
    /// Bumped by every resync (and when `changes` was full).
    resyncs: u64,
}

/// What a follower learns when it wakes.
#[derive(Debug, PartialEq)]
pub enum News {
    /// These changes of the order, oldest first.
    Changes(Vec<OrderChanged>),
    /// Changes may have been missed: read the order again.
    Resync,
}

/// One follower of one order: [`Following::changed`] resolves when the order
/// may have changed. Dropping it stops following.
pub struct Following {
    id: Uuid,
    receiver: Option<watch::Receiver<Heard>>,
    feed: OrderFeed,
    /// How many of the heard changes this follower has taken.
    taken: usize,
    /// The resync count it last saw.
    resyncs: u64,
}

impl Following {
    /// Resolves with what happened to the order since the last call (or since
    /// following began).
    pub async fn changed(&mut self) -> News {
        let Some(receiver) = self.receiver.as_mut() else { return std::future::pending().await };
        if receiver.changed().await.is_err() {
            // The sender is gone only once nobody follows: not while we do.
            return std::future::pending().await;
        }
        let heard = receiver.borrow_and_update();
        if heard.resyncs != self.resyncs {
            self.resyncs = heard.resyncs;
            self.taken = heard.changes.len();
            return News::Resync;
        }
        let news = heard.changes.get(self.taken..).unwrap_or_default().to_vec();
        self.taken = heard.changes.len();
        News::Changes(news)
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        drop(self.receiver.take());
        let mut followed = self.feed.inner.followed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if followed.get(&self.id).is_some_and(|sender| sender.receiver_count() == 0) {
            followed.remove(&self.id);
        }
        metrics::gauge!(ORDERS_FOLLOWED).set(followed.len() as f64);
    }
}

impl OrderFeed {
    /// Starts following `id`: changes from now on wake the returned follower.
    /// Follow before reading the order, so a change between the read and the
    /// wait is not missed.
    pub fn follow(&self, id: Uuid) -> Following {
        let mut followed = self.inner.followed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let sender = followed.entry(id).or_insert_with(|| watch::channel(Heard::default()).0);
        // A second follower of the same order starts from now, as the first did.
        let (taken, resyncs) = {
            let heard = sender.borrow();
            (heard.changes.len(), heard.resyncs)
        };
        let receiver = sender.subscribe();
        metrics::gauge!(ORDERS_FOLLOWED).set(followed.len() as f64);
        Following { id, receiver: Some(receiver), feed: self.clone(), taken, resyncs }
    }

    /// Whether changes arrive as they commit; if not, followers poll.
    pub fn live(&self) -> bool {
        self.inner.live.load(Ordering::Relaxed)
    }

    /// Orders followed right now.
    #[cfg(test)]
    fn followed(&self) -> usize {
        self.inner.followed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    fn changed(&self, id: &Uuid, change: OrderChanged) {
        let followed = self.inner.followed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(sender) = followed.get(id) {
            sender.send_modify(|heard| {
                if heard.changes.len() < MAX_HEARD {
                    heard.changes.push(change);
                } else {
                    heard.changes.clear();
                    heard.resyncs += 1;
                }
            });
        }
    }

    fn resync(&self) {
        metrics::counter!(FEED_RESYNCS).increment(1);
        let followed = self.inner.followed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for sender in followed.values() {
            sender.send_modify(|heard| heard.resyncs += 1);
        }
    }

    /// Updates the instances' call states with `update`, then whether the feed is live.
    fn update_calls(&self, update: impl FnOnce(&mut Calls)) {
        let mut calls = self.inner.calls.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        update(&mut calls);
        let live = calls.live();
        if self.inner.live.swap(live, Ordering::Relaxed) != live {
            if live {
                tracing::info!(instances = calls.open.len(), "order change feed open; event streams wait on it");
            } else {
                tracing::info!("order change feed not open to every instance; event streams poll until it is");
            }
        }
    }

    /// Holds a `WatchOrders` call open to every instance of the order
    /// service for the gateway's life: one for each instance `instances`
    /// knows, started as it appears and stopped as it goes.
    pub async fn run(self, instances: Instances) {
        let mut calls: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        loop {
            let members = instances.members();
            calls.retain(|url, call| {
                let known = members.iter().any(|(u, ..)| u == url);
                if !known {
                    call.abort();
                    // What it told may have been cut short: read again.
                    self.update_calls(|c| {
                        c.open.remove(url);
                    });
                    self.resync();
                }
                known
            });
            for (url, channel, _) in &members {
                calls
                    .entry(url.clone())
                    .or_insert_with(|| tokio::spawn(self.clone().follow_instance(url.clone(), channel.clone())));
            }
            self.update_calls(|c| c.answering = members.iter().filter(|m| m.2).map(|m| m.0.clone()).collect());
            tokio::time::sleep(RECONNECT_AFTER).await;
        }
    }

    /// Holds one instance's `WatchOrders` call open, calling again when it
    /// ends or fails.
    async fn follow_instance(self, url: String, channel: Channel) {
        let mut warned = false;
        loop {
            // No deadline: the call lasts as long as the gateway.
            let call = OrderServiceClient::new(channel.clone()).watch_orders(WatchOrdersRequest {}).await;
            match call {
                Ok(response) => {
                    let mut stream = response.into_inner();
                    loop {
                        match stream.message().await {
                            Ok(Some(change)) if change.resync => {
                                if warned {
                                    tracing::info!(%url, "the order change feed of an instance is open again");
                                    warned = false;
                                }
                                self.update_calls(|c| {
                                    c.open.insert(url.clone());
                                });
                                self.resync();
                            }
                            Ok(Some(change)) => {
                                metrics::counter!(FEED_CHANGES).increment(1);
                                if let Ok(id) = change.order_id.parse::<Uuid>() {
                                    self.changed(&id, change);
                                }
                            }
                            Ok(None) => break,
                            Err(status) => {
                                tracing::debug!(%url, %status, "order change feed call ended");
                                break;
                            }
                        }
                    }
                }
                Err(status) if !warned => {
                    tracing::warn!(%url, %status, "cannot open the order change feed of an instance; event streams poll until it opens");
                    warned = true;
                }
                Err(_) => {}
            }
            // Followers read again: what this instance commits while its
            // call is down is not heard.
            let mut was_open = false;
            self.update_calls(|c| was_open = c.open.remove(&url));
            if was_open {
                self.resync();
            }
            tokio::time::sleep(RECONNECT_AFTER).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_change_wakes_only_the_followers_of_its_order_and_a_resync_wakes_all() {
        let feed = OrderFeed::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut first = feed.follow(a);
        let mut second = feed.follow(a);
        let mut other = feed.follow(b);
        feed.changed(&a, change(a, 2));
        let soon = Duration::from_millis(200);
        assert_eq!(tokio::time::timeout(soon, first.changed()).await.ok(), Some(News::Changes(vec![change(a, 2)])));
        assert_eq!(tokio::time::timeout(soon, second.changed()).await.ok(), Some(News::Changes(vec![change(a, 2)])));
        assert!(tokio::time::timeout(soon, other.changed()).await.is_err(), "not its order");
        feed.resync();
        assert_eq!(tokio::time::timeout(soon, other.changed()).await.ok(), Some(News::Resync));
        assert_eq!(tokio::time::timeout(soon, first.changed()).await.ok(), Some(News::Resync));
        assert_eq!(feed.followed(), 2);
        drop(first);
        assert_eq!(feed.followed(), 2, "the second still follows a");
        drop(second);
        drop(other);
        assert_eq!(feed.followed(), 0, "nothing left behind");
    }

    fn change(id: Uuid, position: u32) -> OrderChanged {
        OrderChanged { order_id: id.to_string(), position, ..OrderChanged::default() }
    }

    #[tokio::test]
    async fn changes_before_the_wait_are_not_lost_and_come_in_order() {
        let feed = OrderFeed::default();
        let id = Uuid::new_v4();
        let mut following = feed.follow(id);
        feed.changed(&id, change(id, 2));
        feed.changed(&id, change(id, 3));
        let news = tokio::time::timeout(Duration::from_millis(200), following.changed()).await.ok();
        assert_eq!(news, Some(News::Changes(vec![change(id, 2), change(id, 3)])));
        let late = feed.follow(id);
        assert_eq!(late.taken, 2, "a later follower starts from its own start");
    }

    #[test]
    fn the_feed_is_live_only_while_every_answering_instance_has_its_call_open() {
        let urls = |list: &[&str]| list.iter().map(|u| (*u).to_owned()).collect::<HashSet<String>>();
        let calls = |answering: &[&str], open: &[&str]| Calls { answering: urls(answering), open: urls(open) };
        assert!(!calls(&[], &[]).live(), "no call open: nothing is heard");
        assert!(calls(&["a"], &["a"]).live());
        assert!(calls(&["a", "b"], &["a", "b"]).live());
        assert!(!calls(&["a", "b"], &["a"]).live(), "b may commit changes nobody hears");
        assert!(calls(&["a"], &["a", "b"]).live(), "b does not answer: it commits nothing");
        assert!(calls(&[], &["a"]).live(), "before the first health answers");
    }

    #[tokio::test]
    async fn a_follower_told_more_changes_than_kept_is_told_to_read() {
        let feed = OrderFeed::default();
        let id = Uuid::new_v4();
        let mut following = feed.follow(id);
        for position in 0..=MAX_HEARD as u32 {
            feed.changed(&id, change(id, position));
        }
        let news = tokio::time::timeout(Duration::from_millis(200), following.changed()).await.ok();
        assert_eq!(news, Some(News::Resync));
    }
}
