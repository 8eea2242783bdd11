//! Prometheus metrics. Every process records through the `metrics` facade and serves what
//! it recorded in the Prometheus text format at `/metrics` (any path answers) on its metrics
//! address: its main port plus [`PORT_SHIFT`], unless `METRICS_LISTEN` says otherwise.
//!
//! Every metric of the platform is named here, with its help text, so the list is in one
//! place (docs/operations.md describes each). Names follow Prometheus conventions:
//! `_total` for counters, base units (`_seconds`), labels with few values (topic, consumer
//! group, status, route).

use std::net::SocketAddr;

use metrics_exporter_prometheus::PrometheusBuilder;

/// A process serves its metrics on its main port plus this.
pub const PORT_SHIFT: u16 = 100;

/// Saga outcomes: sagas that reached a terminal status, by `status` (order service).
pub const SAGA_OUTCOMES: &str = "saga_outcomes_total";
/// From the order's creation to its terminal status, by `status` (order service).
pub const SAGA_DURATION: &str = "saga_duration_seconds";
/// How long an order stayed in `from` before moving to `to` (order service).
pub const SAGA_STEP_DURATION: &str = "saga_step_duration_seconds";
/// Messages a consumer group handled, by `topic` and `group`.
pub const MESSAGES_HANDLED: &str = "saga_messages_handled_total";
/// Tries of a message that failed and were tried again, by `topic`, `group` and `class`
/// (`infrastructure`: an outage waited out; `not_yet`: the state it needs is not there yet).
pub const MESSAGES_RETRIED: &str = "saga_messages_retried_total";
/// Messages written to a dead-letter topic, by `topic`, `group` and `reason`.
pub const MESSAGES_DEAD_LETTERED: &str = "saga_messages_dead_lettered_total";
/// One handler transaction (one message, or a batch), by `group`.
pub const HANDLER_DURATION: &str = "saga_handler_duration_seconds";
/// Messages on the group's partitions it has not consumed yet, by `topic` and `group`.
pub const CONSUMER_LAG: &str = "saga_consumer_lag_messages";
/// Outbox rows not published yet (nor failed).
pub const OUTBOX_BACKLOG: &str = "saga_outbox_backlog_rows";
/// From an outbox row's insert to its publication.
pub const OUTBOX_PUBLISH_LATENCY: &str = "saga_outbox_publish_latency_seconds";
/// Events the relay published, by `topic`.
pub const OUTBOX_PUBLISHED: &str = "saga_outbox_published_total";
/// Database connections of a pool, by `pool` and `state` (`in_use`, `idle`).
pub const DB_CONNECTIONS: &str = "saga_db_pool_connections";
/// Tasks waiting for a connection of a pool (and its `BEGIN`), by `pool`.
pub const DB_WAITING: &str = "saga_db_pool_waiting_tasks";
/// How long a task waited for a connection of a pool (and its `BEGIN`), by `pool`.
pub const DB_ACQUIRE_DURATION: &str = "saga_db_pool_acquire_seconds";
/// HTTP requests (the gateway's, the console's), by `route` (the matched path pattern),
/// `method` and `status`.
pub const HTTP_REQUESTS: &str = "http_requests_total";
/// HTTP request durations (the gateway's, the console's), by `route` and `method`.
pub const HTTP_REQUEST_DURATION: &str = "http_request_duration_seconds";
/// Dead letters an admin asked the console to redrive, by `outcome`: `redriven` (sent
/// now), `already` (redriven before, not sent again), `refused` (not sent: not what the
/// source topic holds).
pub const CONSOLE_REDRIVES: &str = "console_redrives_total";

/// Upper bounds of every `_seconds` histogram: a millisecond to two minutes.
const SECONDS_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

#[derive(Debug, thiserror::Error)]
#[error("metrics on {listen}: {source}")]
pub struct MetricsError {
    listen: SocketAddr,
    source: metrics_exporter_prometheus::BuildError,
}

/// Where a process whose main address is `main` serves its metrics by default.
pub fn default_listen(main: SocketAddr) -> SocketAddr {
    SocketAddr::new(main.ip(), main.port().saturating_add(PORT_SHIFT))
}

/// Installs the process's recorder and serves it on `listen`, in the current Tokio runtime.
/// Call once, at start.
pub fn serve(listen: SocketAddr) -> Result<(), MetricsError> {
    let error = |source| MetricsError { listen, source };
    PrometheusBuilder::new()
        .with_http_listener(listen)
        .set_buckets(SECONDS_BUCKETS)
        .map_err(error)?
        .install()
        .map_err(error)?;
    describe();
    tracing::info!(%listen, "metrics served at /metrics");
    Ok(())
}

/// The help text of every metric (`# HELP` in the scrape).
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(SAGA_OUTCOMES, "Sagas that reached a terminal status, by status");
    describe_histogram!(SAGA_DURATION, Unit::Seconds, "From the order's creation to its terminal status");
    describe_histogram!(SAGA_STEP_DURATION, Unit::Seconds, "Time an order stayed in `from` before moving to `to`");
    describe_counter!(MESSAGES_HANDLED, "Messages a consumer group handled");
    describe_counter!(MESSAGES_RETRIED, "Failed tries of a message that were tried again, by failure class");
    describe_counter!(MESSAGES_DEAD_LETTERED, "Messages written to a dead-letter topic, by reason");
    describe_histogram!(HANDLER_DURATION, Unit::Seconds, "One handler transaction (a message or a batch)");
    describe_gauge!(CONSUMER_LAG, "Messages on the group's partitions not consumed yet");
    describe_gauge!(OUTBOX_BACKLOG, "Outbox rows not published yet");
    describe_histogram!(OUTBOX_PUBLISH_LATENCY, Unit::Seconds, "From an outbox row's insert to its publication");
    describe_counter!(OUTBOX_PUBLISHED, "Events the outbox relay published");
    describe_gauge!(DB_CONNECTIONS, "Database connections of a pool, in use or idle");
    describe_gauge!(DB_WAITING, "Tasks waiting for a database connection of a pool");
    describe_histogram!(DB_ACQUIRE_DURATION, Unit::Seconds, "How long a task waited for a database connection");
    describe_counter!(HTTP_REQUESTS, "HTTP requests by route, method and status");
    describe_histogram!(HTTP_REQUEST_DURATION, Unit::Seconds, "HTTP request durations by route and method");
    describe_counter!(CONSOLE_REDRIVES, "Dead letters an admin asked to redrive, by outcome");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_listen_beside_the_main_port() {
        let main: SocketAddr = "127.0.0.1:17051".parse().expect("an address");
        assert_eq!(default_listen(main), "127.0.0.1:17151".parse().expect("an address"));
    }
}
