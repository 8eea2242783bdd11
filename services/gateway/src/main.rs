//! The API gateway: the one door clients use. REST under `/api/v1`, sessions
//! in Redis, gRPC to the order, product and user services.

mod admin_account;
mod admission;
mod app;
mod balance;
mod config;
mod error;
mod extract;
mod openapi;
mod order_feed;
mod rate_limit;
mod routes;
mod session;
mod state;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use saga_process::shutdown::Shutdown;
use saga_process::telemetry::{self, LogFormat};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = config::Config::parse();
    telemetry::init(LogFormat::Json, "info", "gateway");
    admin_account::refuse_placeholder(&config)?;
    // The port first: one in use stops the gateway at once, and with port 0
    // the log says which one the system chose.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let listen = listener.local_addr().context("the listening address")?;
    saga_process::metrics::serve(config.metrics_listen.unwrap_or(saga_process::metrics::default_listen(listen)))?;
    let (_, shutdown) = Shutdown::on_signal();
    saga_process::shutdown::exit_after(shutdown.clone(), Duration::from_secs(config.shutdown_grace_secs));
    let state = app::state(config, shutdown.clone()).await?;
    tokio::spawn(admin_account::ensure(state.clone()));
    let every = Duration::from_millis(state.config.admission_check_ms);
    tokio::spawn(state.admission.clone().watch(state.backends.clone(), state.config.admission_at_risk_percent, every));
    if let Some(order) = state.backends.instances.iter().find(|i| i.service == "order") {
        tokio::spawn(state.order_feed.clone().run(order.clone()));
    }
    let app = app::router(state)?;
    tracing::info!(%listen, "gateway listening");
    // Connect info gives handlers the client IP (the login rate limit).
    // On SIGTERM: no new connections; event streams end with `reconnect`; requests drain.
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
        .context("HTTP server failed")?;
    tracing::info!("gateway stopped");
    telemetry::shutdown();
    Ok(())
}
