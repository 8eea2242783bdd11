//! The operator console: a web page for admins, served behind the gateway, which
//! authenticates them and forwards `/console` and `/api/v1/admin/console/*` here, over
//! mutual TLS that proves it is the gateway (`callers`).

mod api;
mod callers;
mod config;
mod page;
mod redrive;

use anyhow::Context;
use clap::Parser;
use saga_process::telemetry::{self, LogFormat};

use crate::callers::{Callers, Peer, TlsListener};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/console");

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = config::Config::parse();
    telemetry::init(LogFormat::Json, "info", "console");
    let credentials = saga_runtime::kafka::Credentials::from_settings(
        config.kafka_sasl_username.clone(),
        config.kafka_sasl_password.clone(),
    )
    .map_err(anyhow::Error::msg)?;
    saga_runtime::kafka::authenticate_as(credentials).map_err(anyhow::Error::msg)?;
    let tls = match config.tls()? {
        Some(files) => Some(files.https_server().context("the console's TLS (TLS_CLIENT_CA, TLS_CERT, TLS_KEY)")?),
        None => None,
    };
    let callers = if tls.is_some() {
        Callers::certified(&config.allowed_callers).map_err(|e| anyhow::anyhow!("ALLOWED_CALLERS: {e}"))?
    } else {
        Callers::Nobody
    };
    // The port first: one in use stops the console at once, and with port 0
    // the log says which one the system chose.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let listen = listener.local_addr().context("the listening address")?;
    saga_process::metrics::serve(config.metrics_listen.unwrap_or(saga_process::metrics::default_listen(listen)))?;
    let audit = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&config.database_url)
        .await
        .context("cannot connect to the console's database (DATABASE_URL)")?;
    MIGRATOR.run(&audit).await.context("migrating the console's database")?;
    let (_, shutdown) = saga_process::shutdown::Shutdown::on_signal();
    saga_process::shutdown::exit_after(shutdown.clone(), std::time::Duration::from_secs(config.shutdown_grace_secs));
    let state = api::State::new(&config, audit, shutdown.clone())?;
    let app = api::router(state, callers);
    // On SIGTERM: no new connections; live streams end with `reconnect`; requests drain.
    let stopping = async move { shutdown.wait().await };
    match tls {
        Some(tls) => {
            tracing::info!(%listen, tls = true, allowed_callers = ?config.allowed_callers, "console listening");
            let listener = TlsListener::new(listener, tls).context("the TLS listener")?;
            axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
                .with_graceful_shutdown(stopping)
                .await
        }
        None => {
            tracing::info!(%listen, tls = false, "console listening");
            tracing::warn!(
                "no TLS_CLIENT_CA, TLS_CERT and TLS_KEY: the console cannot tell the gateway from anyone else, \
                 so it refuses its API to every caller"
            );
            axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
                .with_graceful_shutdown(stopping)
                .await
        }
    }
    .context("HTTP server failed")?;
    tracing::info!("console stopped");
    telemetry::shutdown();
    Ok(())
}
