//! Graceful shutdown: resolves on SIGTERM or Ctrl-C; streams that end when
//! it comes; and the bound on how long stopping may take.

use std::future::Future;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::watch;

/// How long a process may take to stop once asked (`SHUTDOWN_GRACE_SECS`),
/// below the 30 s Kubernetes waits before it kills a pod.
pub const DEFAULT_GRACE_SECS: u64 = 10;

/// Waits for SIGTERM or SIGINT. Servers pass this to their graceful-shutdown hook.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// A shutdown request shared by every task of a process (gRPC server, relay,
/// consumer, sweeper): each finishes its in-flight work, then returns.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// The side that requests shutdown (tests use it instead of a signal).
#[derive(Debug, Clone)]
pub struct ShutdownTrigger {
    tx: std::sync::Arc<watch::Sender<bool>>,
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }
}

impl Shutdown {
    /// A shutdown that only `trigger` requests.
    pub fn manual() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger { tx: std::sync::Arc::new(tx) }, Shutdown { rx })
    }

    /// A shutdown requested by SIGTERM or Ctrl-C (needs a running tokio
    /// runtime), or by the returned trigger (e.g. when the server fails).
    pub fn on_signal() -> (ShutdownTrigger, Shutdown) {
        let (trigger, shutdown) = Shutdown::manual();
        let on_signal = trigger.clone();
        tokio::spawn(async move {
            signal().await;
            on_signal.trigger();
        });
        (trigger, shutdown)
    }

    pub fn is_requested(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once shutdown is requested.
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        // An error means every trigger is gone: nobody can request shutdown
        // any more, so this waits forever, as a signal would.
        if rx.wait_for(|requested| *requested).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Exits the process `grace` after `shutdown` was requested, should it still
/// be running then: a stop that waits on something that never ends (an open
/// stream, a wedged call) would otherwise wait for the orchestrator's
/// SIGKILL. Exiting is safe where stopping is: an unfinished transaction
/// rolls back and an uncommitted message is delivered again. The exit code is
/// 1: reaching the bound is a fault to look at.
///
/// The grace is timed on a thread of its own, not by the runtime: the stop it
/// bounds may hold the runtime's threads (a library's synchronous close), and
/// on a runtime of one thread a timer of its own would then never fire.
pub fn exit_after(shutdown: Shutdown, grace: Duration) {
    let timer = std::thread::Builder::new().name("stop-grace".into()).spawn(move || {
        // Woken by the same request as the stop, on this thread: the runtime may be held.
        futures::executor::block_on(shutdown.wait());
        std::thread::sleep(grace);
        tracing::error!(grace_secs = grace.as_secs(), "still stopping after the grace period; exiting now");
        std::process::exit(1);
    });
    if let Err(error) = timer {
        tracing::error!(%error, "cannot start the stop's grace timer; its grace is not bounded");
    }
}

/// `stream` until it ends or `ended` resolves; then `farewell` (the item
/// telling the client why: its session ended, or the server is stopping and
/// it should reconnect) and the end.
pub fn end_when<S, T>(
    stream: S,
    ended: impl Future<Output = ()> + Send + 'static,
    farewell: T,
) -> impl Stream<Item = T> + Send + 'static
where
    S: Stream<Item = T> + Send + 'static,
    T: Send + 'static,
{
    let state = (Box::pin(stream), Box::pin(ended), Some(farewell));
    futures::stream::unfold(state, |(mut stream, mut ended, mut farewell)| async move {
        let last = farewell.take()?;
        tokio::select! {
            biased;
            () = &mut ended => Some((last, (stream, ended, None))),
            item = stream.next() => item.map(|item| (item, (stream, ended, Some(last)))),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stream_ends_with_its_farewell_once_asked() {
        let endless = futures::stream::iter(0..).then(|i| async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            i
        });
        let ended = tokio::time::sleep(Duration::from_millis(100));
        let items: Vec<i64> = end_when(endless, ended, -1).collect().await;
        assert_eq!(items.last(), Some(&-1), "{items:?}");
        assert!(items.len() > 2, "the stream ran until then: {items:?}");
    }

    #[tokio::test]
    async fn a_stream_that_ends_first_ends_without_a_farewell() {
        let items: Vec<i64> = end_when(futures::stream::iter([1, 2]), std::future::pending(), -1).collect().await;
        assert_eq!(items, [1, 2]);
    }

    /// Set in the child process the test below starts.
    const HOLDING_CHILD: &str = "SAGA_SHUTDOWN_TEST_HOLDING_CHILD";

    /// A stop that holds the runtime's only thread (as a library's synchronous
    /// close can) still ends at the grace: the child exits with 1 within it.
    /// A grace timed by the runtime would wait for the hold to end, and the
    /// child would then reach its end and panic (exit code 101).
    #[test]
    fn a_stop_that_holds_the_only_runtime_thread_still_ends_at_the_grace() {
        if std::env::var_os(HOLDING_CHILD).is_some() {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async {
                let (trigger, shutdown) = Shutdown::manual();
                exit_after(shutdown, Duration::from_millis(200));
                trigger.trigger();
                std::thread::sleep(Duration::from_secs(30));
            });
            panic!("the grace did not end the stop");
        }
        let status = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "shutdown::tests::a_stop_that_holds_the_only_runtime_thread_still_ends_at_the_grace"])
            .env(HOLDING_CHILD, "1")
            .stdout(std::process::Stdio::null())
            .status()
            .expect("child runs");
        assert_eq!(status.code(), Some(1), "the child exits at the grace, as a fault: {status}");
    }

    #[tokio::test]
    async fn a_requested_shutdown_ends_a_stream() {
        let (trigger, shutdown) = Shutdown::manual();
        let wait = shutdown.clone();
        let stream = end_when(futures::stream::pending::<i64>(), async move { wait.wait().await }, -1);
        trigger.trigger();
        assert_eq!(stream.collect::<Vec<_>>().await, [-1]);
    }
}
