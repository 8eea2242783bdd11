//! The order service.

use anyhow::Context;
use saga_runtime::service;
use sqlx::migrate::Migrator;

static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/order");

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let booted = service::boot("order", &MIGRATOR).await?;
    service::serve_grpc(booted.args.listen, |router| router).await.context("gRPC server failed")?;
    booted.pool.close().await;
    Ok(())
}
