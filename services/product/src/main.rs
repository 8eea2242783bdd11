//! The product service: catalogue and stock over gRPC; reserves and releases
//! stock for the saga.

mod api;
mod saga;

use anyhow::Context;
use saga_generated::handlers::ProductInbound;
use saga_generated::topology;
use saga_process::local::BackendService;
use saga_process::shutdown::Shutdown;
use saga_runtime::participant::Participant;
use saga_runtime::service;
use sqlx::migrate::Migrator;

static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/product");

const SERVICE: &str = "product";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let identity = BackendService::named(topology::SERVICES, SERVICE).context("the spec has no such service")?;
    let booted = service::boot(identity, &MIGRATOR).await?;
    let (trigger, shutdown) = Shutdown::on_signal();

    let group = topology::consumer_group(SERVICE).context("the spec has no consumer group for this service")?;
    let participant =
        Participant::start::<_, ProductInbound>(&booted, group, topology::DLQ_SUFFIX, saga::ProductSaga, &shutdown)?;

    let api = api::ProductApi { pool: booted.pool.clone() };
    let served =
        service::serve_grpc_until(booted.args.listen, shutdown.clone(), saga_proto::FILE_DESCRIPTOR_SET, |router| {
            router.add_service(saga_proto::product::product_service_server::ProductServiceServer::new(api))
        })
        .await;
    // Whatever ended the server, stop the background work and let it finish.
    trigger.trigger();
    participant.join().await.context("saga participant failed")?;
    booted.pool.close().await;
    served.context("gRPC server failed")
}
