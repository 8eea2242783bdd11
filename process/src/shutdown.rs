//! Graceful shutdown: resolves on SIGTERM or Ctrl-C.

use tokio::sync::watch;

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
