//! The order service: places orders (the saga starts here), keeps each
//! order's status and history from the saga's events, and resolves sagas
//! stuck past the spec's deadlines.

mod api;
mod saga;
mod sweeper;

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use saga_generated::topology;
use saga_process::local::BackendService;
use saga_process::shutdown::Shutdown;
use saga_runtime::participant::Participant;
use saga_runtime::service;
use sqlx::migrate::Migrator;

static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/order");

const SERVICE: &str = "order";

/// Order-service settings beyond the common ones (read from the environment only).
#[derive(Debug, Clone, Parser)]
struct OrderSettings {
    /// Scales every timeout of the spec, in percent (tests shorten them; 100 = as the spec says).
    #[arg(long, env = "ORDER_TIMEOUT_SCALE_PERCENT", default_value_t = 100)]
    timeout_scale_percent: u32,
    /// How often the timeout sweeper looks for overdue sagas, in milliseconds.
    #[arg(long, env = "ORDER_SWEEP_INTERVAL_MS", default_value_t = 1000)]
    sweep_interval_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let identity = BackendService::named(topology::SERVICES, SERVICE).context("the spec has no such service")?;
    let booted = service::boot(identity, &MIGRATOR).await?;
    // The common command line is parsed by `boot`; these come from the environment.
    let settings = OrderSettings::parse_from(["order-service"]);
    let (trigger, shutdown) = Shutdown::on_signal();
    let timeouts = saga::Timeouts { scale_percent: settings.timeout_scale_percent };

    let group = topology::consumer_group(SERVICE).context("the spec has no consumer group for this service")?;
    let participant = Participant::start::<_, saga::OrderEvent>(
        &booted,
        group,
        topology::DLQ_SUFFIX,
        saga::OrderSaga { timeouts },
        &shutdown,
    )?;

    let sweeper = tokio::spawn(sweeper::run(
        booted.pool.clone(),
        saga::OrderSaga { timeouts },
        Duration::from_millis(settings.sweep_interval_ms.max(10)),
        shutdown.clone(),
    ));

    let api = api::OrderApi { pool: booted.pool.clone(), saga: saga::OrderSaga { timeouts } };
    let served =
        service::serve_grpc_until(booted.args.listen, shutdown.clone(), saga_proto::FILE_DESCRIPTOR_SET, |router| {
            router.add_service(saga_proto::order::order_service_server::OrderServiceServer::new(api))
        })
        .await;
    trigger.trigger();
    // The sweeper first: the relay publishes whatever its last sweep wrote.
    sweeper.await.context("sweeper task")?;
    participant.join().await.context("saga participant failed")?;
    booted.pool.close().await;
    served.context("gRPC server failed")
}
