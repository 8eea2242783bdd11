//! The change feed behind `WatchOrders`: each status change this instance
//! commits, fanned out to every open `WatchOrders` call of this instance.
//! The order store hands a change over once its transaction commits
//! (`saga_runtime::db::after_commit`): a change that rolls back is never
//! sent. Each carries the history row, its position in the order's history
//! and the order's columns after it, so the gateway sends it on without
//! reading the order again.
//!
//! An instance tells only of its own commits; a gateway follows every
//! instance (`services/gateway/src/order_feed.rs`). The feed was a
//! `LISTEN` on a trigger's `NOTIFY` before, which every instance heard
//! (`migrations/order/0005`, `0006`; `0007` drops it): PostgreSQL serializes
//! the commits of all transactions that notify, cluster-wide, and three of a
//! saga's commits in this database notified (see `saga_runtime::db::AfterCommit`).
//!
//! Changes are not stored: a call that fell behind is told to `Resync` (read
//! again), and so is every new call at its start; a gateway whose call ends
//! (this instance stopped, say) tells its followers to read again too.

use std::pin::Pin;

use futures::Stream;
use saga_process::shutdown::Shutdown;
use saga_proto::order::OrderChanged;
use tokio::sync::broadcast;
use tonic::Status;

/// Changes a slow `WatchOrders` call may fall behind by before it is told to resync.
const BUFFER: usize = 4096;

/// "Changes may have been missed: read again."
fn resync() -> OrderChanged {
    OrderChanged { resync: true, ..OrderChanged::default() }
}

/// The stream one `WatchOrders` call returns.
pub type ChangeStream = Pin<Box<dyn Stream<Item = Result<OrderChanged, Status>> + Send>>;

/// The feed's sending side; cheap to clone.
#[derive(Clone)]
pub struct Feed {
    sender: broadcast::Sender<OrderChanged>,
}

impl Default for Feed {
    fn default() -> Feed {
        Feed { sender: broadcast::channel(BUFFER).0 }
    }
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed").field("watchers", &self.sender.receiver_count()).finish()
    }
}

impl Feed {
    /// Sends a committed change to every open `WatchOrders` call (none is fine).
    pub fn publish(&self, change: OrderChanged) {
        drop(self.sender.send(change));
    }

    /// The changes from now on, starting with a `Resync` (the subscription
    /// point); ends at `shutdown`, so the server's graceful stop is not held up.
    pub fn watch(&self, shutdown: Shutdown) -> ChangeStream {
        let receiver = self.sender.subscribe();
        let state = (receiver, shutdown, true);
        Box::pin(futures::stream::unfold(state, |(mut receiver, shutdown, first)| async move {
            if first {
                return Some((Ok(resync()), (receiver, shutdown, false)));
            }
            let change = tokio::select! {
                () = shutdown.wait() => return None,
                received = receiver.recv() => match received {
                    Ok(change) => change,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "a WatchOrders call fell behind; telling it to resync");
                        resync()
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            };
            Some((Ok(change), (receiver, shutdown, false)))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_watcher_starts_with_a_resync_and_one_that_falls_behind_is_told_to_resync() {
        use futures::StreamExt;
        let (sender, _) = broadcast::channel(2);
        let (_trigger, shutdown) = Shutdown::manual();
        let feed = Feed { sender: sender.clone() };
        let mut stream = feed.watch(shutdown);
        let first = stream.next().await.and_then(Result::ok);
        assert_eq!(first.map(|c| c.resync), Some(true));
        for n in 0..3 {
            let _ = sender.send(OrderChanged { order_id: format!("o{n}"), ..OrderChanged::default() });
        }
        let next = stream.next().await.and_then(Result::ok).map(|c| c.resync);
        assert_eq!(next, Some(true), "three sent into a buffer of two: one was missed");
        let then = stream.next().await.and_then(Result::ok).map(|c| c.order_id);
        assert_eq!(then.as_deref(), Some("o1"));
    }
}
