//! What every saga participant runs beside its gRPC API: the outbox relay
//! that publishes the events its transactions wrote, and the transactional
//! consumer of its group.

use tokio::task::JoinHandle;

use saga_contract::{Dispatch, ServiceIdentity};
use sqlx::PgConnection;

use crate::consumer::{self, ConsumerConfig, ConsumerError, TxConsumer};
use crate::outbox::{Relay, RelayConfig};
use crate::service::Booted;
use saga_process::shutdown::Shutdown;

#[derive(Debug, thiserror::Error)]
pub enum ParticipantError {
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("outbox relay: {0}")]
    Relay(#[from] crate::outbox::OutboxError),
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
    #[error("a background task panicked: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The relay and the consumer of one service, running until `shutdown`.
pub struct Participant {
    relay: JoinHandle<()>,
    consumer: JoinHandle<Result<(), ConsumerError>>,
}

impl Participant {
    /// Starts the relay over the service's outbox and the consumer of its
    /// group (the spec's, from the generated identity) that feeds `handler`
    /// the inbound events `E` (the generated `<Service>Inbound`); dead letters
    /// go to `<topic><dlq_suffix>`. Addresses and overrides come from the
    /// service's command line.
    pub fn start<H, E>(
        booted: &Booted,
        service: &ServiceIdentity<E>,
        handler: H,
        shutdown: &Shutdown,
    ) -> Result<Participant, ParticipantError>
    where
        H: Send + Sync + 'static,
        E: Dispatch<H, Ctx = PgConnection>,
    {
        let args = &booted.args;
        let relay_config = RelayConfig { topic_prefix: args.topic_prefix.clone(), ..RelayConfig::default() };
        let relay = Relay::new(booted.pool.clone(), &args.kafka_brokers, args.kafka_linger_ms, relay_config)?;
        let relay = tokio::spawn(relay.run(shutdown.clone(), booted.health.clone()));
        let group = service.consumer_group;
        let consumer_config = ConsumerConfig {
            brokers: args.kafka_brokers.clone(),
            group_id: group.group_id.to_owned(),
            topics: group.topics.iter().map(|t| (*t).to_owned()).collect(),
            topic_prefix: args.topic_prefix.clone(),
            dlq_suffix: service.dlq_suffix.to_owned(),
            retry: group.retry,
            max_batch: args.consumer_max_batch.unwrap_or(group.max_batch),
            workers: args.consumer_workers,
            instance_id: match args.kafka_group_instance_id.as_deref() {
                // Empty: dynamic membership (an instance that stops leaves the group at once).
                Some("") => None,
                Some(id) => Some(id.to_owned()),
                None => {
                    // The hostname and the port tell the instances of a service apart, and
                    // stay the same when an instance restarts.
                    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                    let host = host.trim();
                    let host = if host.is_empty() { "localhost" } else { host };
                    Some(format!("{}-{host}-{}", service.name, args.listen.port()))
                }
            },
        };
        tokio::spawn(crate::caught_up::report_lag(
            args.kafka_brokers.clone(),
            group.group_id.to_owned(),
            args.topic_prefix.clone(),
            group.topics.iter().map(|t| (*t).to_owned()).collect(),
            shutdown.clone(),
            booted.health.probe(crate::health::Component::Broker),
        ));
        let processor = TxConsumer::<H, E>::new(booted.pool.clone(), handler);
        let consumer = tokio::spawn(consumer::run(consumer_config, processor, shutdown.clone(), booted.health.clone()));
        Ok(Participant { relay, consumer })
    }

    /// Waits, once shutdown was triggered, for the consumer to commit what it
    /// handled and for the relay to finish its batch in flight.
    pub async fn join(self) -> Result<(), ParticipantError> {
        let consumed = self.consumer.await?;
        self.relay.await?;
        Ok(consumed?)
    }
}
