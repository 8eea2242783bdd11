//! The product service: catalogue and stock over gRPC; reserves and releases
//! stock for the saga.

mod api;
mod saga;

use anyhow::Context;
use saga_generated::topology;
use saga_runtime::consumer::{self, ConsumerConfig, Retry, TxConsumer};
use saga_runtime::outbox::{Relay, RelayConfig};
use saga_runtime::service;
use saga_runtime::shutdown::Shutdown;
use sqlx::migrate::Migrator;

static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/product");

const SERVICE: &str = "product";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let booted = service::boot(SERVICE, &MIGRATOR).await?;
    let args = booted.args.clone();
    let (trigger, shutdown) = Shutdown::on_signal();

    let producer = saga_runtime::kafka::producer(&args.kafka_brokers).context("Kafka producer")?;
    let relay_config = RelayConfig { topic_prefix: args.topic_prefix.clone(), ..RelayConfig::default() };
    let relay = tokio::spawn(Relay::new(booted.pool.clone(), producer, relay_config).run(shutdown.clone()));

    let group = topology::consumer_group(SERVICE).context("the spec has no consumer group for this service")?;
    let consumer_config = ConsumerConfig {
        brokers: args.kafka_brokers.clone(),
        group_id: group.group_id.to_owned(),
        topics: group.topics.iter().map(|t| (*t).to_owned()).collect(),
        topic_prefix: args.topic_prefix.clone(),
        dlq_suffix: topology::DLQ_SUFFIX.to_owned(),
        retry: Retry {
            max_attempts: group.retry.max_attempts,
            initial_backoff: group.retry.initial_backoff,
            max_backoff: group.retry.max_backoff,
        },
    };
    let processor = TxConsumer { pool: booted.pool.clone(), handler: saga::ProductSaga };
    let consumer = tokio::spawn(consumer::run(consumer_config, processor, shutdown.clone()));

    let api = api::ProductApi { pool: booted.pool.clone() };
    let served = service::serve_grpc_until(args.listen, shutdown.clone(), saga_proto::FILE_DESCRIPTOR_SET, |router| {
        router.add_service(saga_proto::product::product_service_server::ProductServiceServer::new(api))
    })
    .await;
    // Whatever ended the server, stop the background work and let it finish.
    trigger.trigger();
    consumer.await.context("consumer task")?.context("consumer failed")?;
    relay.await.context("relay task")?;
    booted.pool.close().await;
    served.context("gRPC server failed")
}
