//! The change feed behind `WatchOrders`: one LISTEN connection per instance
//! on the `order_status` channel (a trigger on the status history notifies
//! it as each transition commits, `migrations/order/0005_status_notify.sql`),
//! fanned out to every open `WatchOrders` call. Every instance hears every
//! change, whichever instance committed it.
//!
//! Notifications are not stored: while the connection is lost they are gone.
//! The feed then sends `Resync`, and so does a call that fell behind, so a
//! follower reads again instead of waiting for a change it missed.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use saga_process::shutdown::Shutdown;
use saga_proto::order::OrderChanged;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use tonic::Status;

/// The channel the history trigger notifies.
pub const CHANNEL: &str = "order_status";

/// Changes a slow `WatchOrders` call may fall behind by before it is told to resync.
const BUFFER: usize = 4096;

/// What the feed hands to each call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `order_id` entered `status`.
    Status { order_id: String, status: String },
    /// Changes may have been missed.
    Resync,
}

impl From<Change> for OrderChanged {
    fn from(change: Change) -> OrderChanged {
        match change {
            Change::Status { order_id, status } => OrderChanged { order_id, status, resync: false },
            Change::Resync => OrderChanged { order_id: String::new(), status: String::new(), resync: true },
        }
    }
}

/// Reads a notification's payload, `<order id> <status>`.
fn parse(payload: &str) -> Option<Change> {
    let (order_id, status) = payload.split_once(' ')?;
    Some(Change::Status { order_id: order_id.to_owned(), status: status.to_owned() })
}

/// The stream one `WatchOrders` call returns.
pub type ChangeStream = Pin<Box<dyn Stream<Item = Result<OrderChanged, Status>> + Send>>;

/// The feed's sending side; cheap to clone.
#[derive(Clone)]
pub struct Feed {
    sender: broadcast::Sender<Change>,
    shutdown: Shutdown,
}

impl Feed {
    /// A feed and the loop that fills it from `pool`'s database until `shutdown`.
    pub fn start(pool: PgPool, shutdown: Shutdown) -> (Feed, impl Future<Output = ()> + Send + 'static) {
        let (sender, _) = broadcast::channel(BUFFER);
        let feed = Feed { sender: sender.clone(), shutdown: shutdown.clone() };
        (feed, listen(pool, sender, shutdown))
    }

    /// The changes from now on, starting with a `Resync` (the subscription
    /// point); ends at shutdown, so the server's graceful stop is not held up.
    pub fn watch(&self) -> ChangeStream {
        let receiver = self.sender.subscribe();
        let state = (receiver, self.shutdown.clone(), true);
        Box::pin(futures::stream::unfold(state, |(mut receiver, shutdown, first)| async move {
            if first {
                return Some((Ok(Change::Resync.into()), (receiver, shutdown, false)));
            }
            let change = tokio::select! {
                () = shutdown.wait() => return None,
                received = receiver.recv() => match received {
                    Ok(change) => change,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "a WatchOrders call fell behind; telling it to resync");
                        Change::Resync
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            };
            Some((Ok(change.into()), (receiver, shutdown, false)))
        }))
    }
}

/// LISTENs on [`CHANNEL`] and sends what it hears; a `Resync` after every
/// (re)connection, since what was notified in between is lost.
async fn listen(pool: PgPool, sender: broadcast::Sender<Change>, shutdown: Shutdown) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            () = shutdown.wait() => return,
            connected = connected => match connected {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(%error, "the order change feed cannot LISTEN; event streams see changes only at their periodic re-read until it can");
                    tokio::select! {
                        () = shutdown.wait() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            },
        };
        backoff = Duration::from_millis(100);
        let _ = sender.send(Change::Resync);
        loop {
            let notification = tokio::select! {
                () = shutdown.wait() => return,
                n = listener.try_recv() => n,
            };
            match notification {
                Ok(Some(notification)) => match parse(notification.payload()) {
                    // No receiver is fine: nobody follows an order right now.
                    Some(change) => drop(sender.send(change)),
                    None => tracing::warn!(payload = notification.payload(), "unreadable order_status notification"),
                },
                // The outer loop connects again and sends the Resync only once
                // LISTEN holds: one sent now would let a follower read too
                // early and then wait for a change committed in the gap.
                Ok(None) => {
                    tracing::warn!("the order change feed lost its connection; reconnecting");
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "the order change feed failed; reconnecting");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_is_an_order_and_its_status() {
        let id = "0190a3b2-0000-7000-8000-000000000001";
        assert_eq!(
            parse(&format!("{id} completed")),
            Some(Change::Status { order_id: id.to_owned(), status: "completed".to_owned() })
        );
        assert_eq!(parse("garbage"), None);
        let resync = OrderChanged::from(Change::Resync);
        assert!(resync.resync && resync.order_id.is_empty());
    }

    #[tokio::test]
    async fn a_watcher_starts_with_a_resync_and_one_that_falls_behind_is_told_to_resync() {
        use futures::StreamExt;
        let (sender, _) = broadcast::channel(2);
        let (_trigger, shutdown) = Shutdown::manual();
        let feed = Feed { sender: sender.clone(), shutdown };
        let mut stream = feed.watch();
        let first = stream.next().await.and_then(Result::ok);
        assert_eq!(first.map(|c| c.resync), Some(true));
        for n in 0..3 {
            let _ = sender.send(Change::Status { order_id: format!("o{n}"), status: "created".into() });
        }
        let next = stream.next().await.and_then(Result::ok).map(|c| c.resync);
        assert_eq!(next, Some(true), "three sent into a buffer of two: one was missed");
        let then = stream.next().await.and_then(Result::ok).map(|c| c.order_id);
        assert_eq!(then.as_deref(), Some("o1"));
    }
}
