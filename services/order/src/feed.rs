//! The change feed behind `WatchOrders`: one LISTEN connection per instance
//! on the `order_status` channel (a trigger on the status history notifies
//! it as each transition commits, `migrations/order/0005_status_notify.sql`),
//! fanned out to every open `WatchOrders` call. Every instance hears every
//! change, whichever instance committed it.
//!
//! Each notification carries the change (`migrations/order/0006_status_notify_row.sql`):
//! the history row, its position and the order's columns after it, so the
//! gateway sends it on without reading the order again.
//!
//! Notifications are not stored: while the connection is lost they are gone.
//! The feed then sends `Resync`, and so does a call that fell behind, so a
//! follower reads again instead of waiting for a change it missed.

use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::Stream;
use saga_process::shutdown::Shutdown;
use saga_proto::order::OrderChanged;
use saga_runtime::grpc::timestamp;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use tonic::Status;
use uuid::Uuid;

use crate::api::HistoryRow;

/// The channel the history trigger notifies.
pub const CHANNEL: &str = "order_status";

/// Changes a slow `WatchOrders` call may fall behind by before it is told to resync.
const BUFFER: usize = 4096;

/// "Changes may have been missed: read again."
fn resync() -> OrderChanged {
    OrderChanged { resync: true, ..OrderChanged::default() }
}

/// A notification as the trigger writes it.
#[derive(serde::Deserialize)]
struct Notified {
    order_id: Uuid,
    position: u32,
    #[serde(flatten)]
    row: HistoryRow,
    total_minor: Option<i64>,
    failure_reason: Option<String>,
    updated_at: DateTime<Utc>,
}

/// Reads a notification's payload: the trigger's JSON object, or
/// `<order id> <status>` as the trigger wrote it before the change was
/// carried (a follower then reads the order).
fn parse(payload: &str) -> Option<OrderChanged> {
    if let Ok(n) = serde_json::from_str::<Notified>(payload) {
        let row = saga_proto::order::StatusChange::from(n.row);
        return Some(OrderChanged {
            order_id: n.order_id.to_string(),
            status: row.to_status.clone(),
            resync: false,
            row: Some(row),
            position: n.position,
            total_minor: n.total_minor,
            failure_reason: n.failure_reason.unwrap_or_default(),
            updated_at: timestamp(n.updated_at),
        });
    }
    let (order_id, status) = payload.split_once(' ')?;
    Some(OrderChanged { order_id: order_id.to_owned(), status: status.to_owned(), ..OrderChanged::default() })
}

/// The stream one `WatchOrders` call returns.
pub type ChangeStream = Pin<Box<dyn Stream<Item = Result<OrderChanged, Status>> + Send>>;

/// The feed's sending side; cheap to clone.
#[derive(Clone)]
pub struct Feed {
    sender: broadcast::Sender<OrderChanged>,
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

/// LISTENs on [`CHANNEL`] and sends what it hears; a `Resync` after every
/// (re)connection, since what was notified in between is lost.
async fn listen(pool: PgPool, sender: broadcast::Sender<OrderChanged>, shutdown: Shutdown) {
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
        let _ = sender.send(resync());
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
    fn a_notification_carries_the_row_its_position_and_the_order_columns() {
        let id = "0190a3b2-0000-7000-8000-000000000001";
        let event = "0190a3b2-0000-7000-8000-0000000000e2";
        // As json_build_object writes it (the session's time zone may give any offset).
        let payload = format!(
            r#"{{"order_id" : "{id}", "position" : 2, "from_status" : "created", "to_status" : "inventory_reserved", "event_id" : "{event}", "event_type" : "stock.reduction.success", "reason" : null, "at" : "2026-12-03T14:05:06.123456+01:00", "total_minor" : 2500, "failure_reason" : null, "updated_at" : "2026-12-03T13:05:06.1+00:00"}}"#
        );
        let change = parse(&payload).expect("parsed");
        assert_eq!((change.order_id.as_str(), change.status.as_str(), change.position), (id, "inventory_reserved", 2));
        assert!(!change.resync);
        let row = change.row.expect("the row");
        assert_eq!((row.from_status.as_str(), row.event_id.as_str()), ("created", event));
        assert_eq!((row.event_type.as_str(), row.reason.as_str()), ("stock.reduction.success", ""));
        assert_eq!(row.at, "2026-12-03T13:05:06.123456Z", "UTC, as GetOrder writes it");
        assert_eq!((change.total_minor, change.failure_reason.as_str()), (Some(2500), ""));
        assert_eq!(change.updated_at, "2026-12-03T13:05:06.100000Z");
    }

    #[test]
    fn the_older_payload_is_an_order_and_its_status_without_a_row() {
        let id = "0190a3b2-0000-7000-8000-000000000001";
        let change = parse(&format!("{id} completed")).expect("parsed");
        assert_eq!((change.order_id.as_str(), change.status.as_str()), (id, "completed"));
        assert!(change.row.is_none() && !change.resync);
        assert_eq!(parse("garbage"), None);
        let resync = resync();
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
            let _ = sender.send(OrderChanged { order_id: format!("o{n}"), ..OrderChanged::default() });
        }
        let next = stream.next().await.and_then(Result::ok).map(|c| c.resync);
        assert_eq!(next, Some(true), "three sent into a buffer of two: one was missed");
        let then = stream.next().await.and_then(Result::ok).map(|c| c.order_id);
        assert_eq!(then.as_deref(), Some("o1"));
    }
}
