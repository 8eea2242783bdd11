//! One worker: its partitions' messages in order, several in one transaction
//! when they are already waiting, each retried by its failure's class until
//! it reaches a final outcome (handled or dead-lettered); only then is its
//! offset stored.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::message::OwnedMessage;
use rdkafka::producer::FutureProducer;
use saga_contract::RetryPolicy;
use saga_process::metrics::{HANDLER_DURATION, MESSAGES_DEAD_LETTERED, MESSAGES_HANDLED, MESSAGES_RETRIED};
use saga_process::shutdown::Shutdown;
use tokio::time::Instant;

use super::dead_letter::{self, Reason, Verdict};
use super::ownership::{Epoch, Ownership};
use super::{Arrived, ConsumerConfig, Failure, GroupConsumer, Processor, Received};
use crate::health::Probe;

/// First wait while the infrastructure is away; it doubles up to
/// [`OUTAGE_RETRY_MAX`], so a worker notices the return within that.
const OUTAGE_RETRY_START: Duration = Duration::from_millis(100);
pub(super) const OUTAGE_RETRY_MAX: Duration = Duration::from_secs(2);

/// Backoff before attempt `attempt + 1` (attempt counts from 1): doubles,
/// capped, with up to 20% jitter so replicas do not retry in lockstep.
pub fn backoff(retry: &RetryPolicy, attempt: u32) -> Duration {
    let base = retry.initial_backoff.saturating_mul(1u32 << attempt.saturating_sub(1).min(20)).min(retry.max_backoff);
    let jitter = rand::random_range(0..=base.as_millis() as u64 / 5);
    base + Duration::from_millis(jitter)
}

/// How delivering one message ended.
enum Delivery {
    /// Handled or dead-lettered: its offset may be stored.
    Done,
    /// Its partition was revoked before it could be handled.
    Revoked,
    /// Shutdown came first.
    Interrupted,
}

/// What a worker shares with the receiving loop.
pub(super) struct Worker<P> {
    pub config: Arc<ConsumerConfig>,
    pub group: String,
    pub processor: Arc<P>,
    pub producer: FutureProducer,
    pub consumer: Arc<GroupConsumer>,
    /// Which partitions are still this consumer's: a message of one that was
    /// revoked is not started, nor retried.
    pub ownership: Arc<Ownership>,
    pub shutdown: Shutdown,
    /// Failing while a message of this worker's partitions cannot be handled.
    pub probe: Arc<Probe>,
}

impl<P: Processor> Worker<P> {
    /// Handles what `queue` brings until it closes or shutdown interrupts.
    pub async fn run(self, mut queue: tokio::sync::mpsc::Receiver<(Arrived, Epoch)>) {
        let max_batch = self.config.max_batch.max(1);
        let mut batch: Vec<(Arrived, Epoch)> = Vec::with_capacity(max_batch);
        while let Some(first) = queue.recv().await {
            // Never wait for a batch to fill: take what is queued right now, so
            // a quiet system keeps one message per transaction and its latency.
            batch.push(first);
            while batch.len() < max_batch {
                match queue.try_recv() {
                    Ok(message) => batch.push(message),
                    Err(_) => break,
                }
            }
            if self.shutdown.is_requested() {
                // Queued but not started: left unstored, redelivered after the restart.
                break;
            }
            // Only what is still ours, marked in flight until its offset is stored: a
            // revocation of its partition waits for that.
            let mut claim = self.ownership.claim(std::mem::take(&mut batch), |m| (m.topic().to_owned(), m.partition()));
            if claim.messages.is_empty() {
                continue;
            }
            let received: Vec<Received> =
                claim.messages.iter().map(|(m, _)| Received::of(m, &self.config.topic_prefix)).collect();
            let together = match received.len() {
                1 => false,
                n => match self.timed(self.processor.process_batch(&received)).await {
                    Ok(()) => {
                        received.iter().for_each(|r| self.count(MESSAGES_HANDLED, r));
                        true
                    }
                    Err(error) => {
                        tracing::debug!(%error, messages = n, "batch rolled back; handling its messages one at a time");
                        false
                    }
                },
            };
            // Partitions revoked while one of their messages waited to be retried: their
            // later messages are the next owner's too.
            let mut given_up: Vec<(String, i32)> = Vec::new();
            for (i, received) in received.iter().enumerate() {
                if given_up.iter().any(|(t, p)| *p == received.partition && *t == claim.messages[i].0.topic()) {
                    continue;
                }
                if !together {
                    let (message, epoch) = &claim.messages[i];
                    match self.deliver(message, *epoch, received).await {
                        Delivery::Done => {}
                        Delivery::Revoked => {
                            let topic = message.topic().to_owned();
                            // The handover need not wait for the rest of this batch.
                            claim.release(&topic, received.partition);
                            given_up.push((topic, received.partition));
                            continue;
                        }
                        // Shutdown during a wait: the offset stays unstored, so the
                        // message is redelivered after the restart; later messages
                        // of its partitions must not be handled before it.
                        Delivery::Interrupted => return,
                    }
                }
                let (message, _) = &claim.messages[i];
                // `rd_kafka_offset_store` stores offset + 1 itself (the next
                // message to read): passing the message's own offset is correct;
                // adding 1 here would skip a message after a restart.
                if let Err(error) = self.consumer.store_offset(message.topic(), message.partition(), message.offset()) {
                    tracing::warn!(%error, "cannot store offset");
                }
            }
        }
    }

    /// Processes one message to a final outcome: handled, or dead-lettered
    /// if it is itself wrong. An outage is waited out however long it lasts
    /// (the partition holds; nothing is dead-lettered for it), unless shutdown
    /// interrupts it or its partition is revoked meanwhile.
    async fn deliver(&self, message: &OwnedMessage, epoch: Epoch, received: &Received) -> Delivery {
        let retry = &self.config.retry;
        let mut attempts = 0u32;
        let mut not_yet = 0u32;
        let mut outage: Option<(Instant, Duration)> = None;
        let (reason, error) = loop {
            attempts += 1;
            let outcome = self.timed(self.processor.process(received)).await;
            match &outcome {
                Err(Failure::Infrastructure(e) | Failure::NotYet(e) | Failure::Contended(e)) => {
                    self.probe.failing(format_args!(
                        "{} partition {} offset {}: {e}",
                        received.topic, received.partition, received.offset
                    ));
                }
                _ if attempts > 1 => self.probe.working(),
                _ => {}
            }
            let wait = match outcome {
                Ok(_) => {
                    self.count(MESSAGES_HANDLED, received);
                    if let Some((since, _)) = outage {
                        tracing::info!(down_for = ?since.elapsed(), topic = %received.topic,
                            partition = received.partition, "infrastructure is back; the partition moves on");
                    }
                    return Delivery::Done;
                }
                Err(Failure::Undecodable(e)) => break (Reason::Undecodable, e),
                Err(Failure::Permanent(e)) => break (Reason::Permanent, e),
                Err(Failure::NotYet(e)) => {
                    not_yet += 1;
                    if not_yet >= retry.max_attempts {
                        break (Reason::RetriesExhausted, e);
                    }
                    let wait = backoff(retry, not_yet);
                    self.retried(received, "not_yet");
                    tracing::warn!(error = %e, attempt = not_yet, ?wait, topic = %received.topic,
                        partition = received.partition, offset = received.offset,
                        "the state this message needs is not there yet; retrying in place");
                    wait
                }
                Err(Failure::Contended(e)) => {
                    not_yet += 1;
                    if not_yet >= retry.max_attempts {
                        break (Reason::RetriesExhausted, e);
                    }
                    let wait = backoff(retry, not_yet);
                    self.retried(received, "contended");
                    tracing::info!(error = %e, attempt = not_yet, ?wait, topic = %received.topic,
                        partition = received.partition, offset = received.offset,
                        "lost a race with a concurrent transaction; retrying in place");
                    wait
                }
                Err(Failure::Infrastructure(e)) => {
                    // Logged once per outage, not once per try.
                    let (since, wait) = match outage {
                        None => {
                            tracing::warn!(error = %e, topic = %received.topic, partition = received.partition,
                                offset = received.offset, "infrastructure unavailable; the partition waits for it");
                            (Instant::now(), OUTAGE_RETRY_START)
                        }
                        Some((since, wait)) => (since, (wait * 2).min(OUTAGE_RETRY_MAX)),
                    };
                    outage = Some((since, wait));
                    self.retried(received, "infrastructure");
                    wait
                }
            };
            tokio::select! {
                () = self.shutdown.wait() => return Delivery::Interrupted,
                () = tokio::time::sleep(wait) => {}
            }
            if !self.ownership.owns(message.topic(), message.partition(), epoch) {
                // Not ours any more: the next owner handles it from the committed offset.
                tracing::info!(topic = %received.topic, partition = received.partition, offset = received.offset,
                    "partition revoked while a message waited to be retried; leaving it to the next owner");
                self.probe.working();
                return Delivery::Revoked;
            }
        };
        tracing::error!(reason = reason.as_str(), %error, attempts, topic = %received.topic,
            partition = received.partition, offset = received.offset, "dead-lettering message");
        let dlq_topic = format!("{}{}{}", self.config.topic_prefix, received.topic, self.config.dlq_suffix);
        let verdict = Verdict { group: &self.group, reason, error: &error, attempts };
        let mut wait = Duration::from_millis(200);
        loop {
            match dead_letter::write(&self.producer, &dlq_topic, message, received, &verdict).await {
                Ok(()) => {
                    metrics::counter!(MESSAGES_DEAD_LETTERED, "topic" => received.topic.clone(),
                        "group" => self.group.clone(), "reason" => reason.as_str())
                    .increment(1);
                    // The partition moves on: it is not stuck any more, even
                    // if this message failed its last tries.
                    self.probe.working();
                    return Delivery::Done;
                }
                Err(e) => {
                    // Never move on without the dead letter written: that would lose the message.
                    tracing::error!(error = %e, %dlq_topic, "cannot write dead letter; retrying");
                    self.probe.failing(format_args!(
                        "{} partition {} offset {}: cannot write its dead letter: {e}",
                        received.topic, received.partition, received.offset
                    ));
                    tokio::select! {
                        () = self.shutdown.wait() => return Delivery::Interrupted,
                        () = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

/// The worker's metrics (see `saga_process::metrics`).
impl<P: Processor> Worker<P> {
    fn count(&self, name: &'static str, received: &Received) {
        metrics::counter!(name, "topic" => received.topic.clone(), "group" => self.group.clone()).increment(1);
    }

    fn retried(&self, received: &Received, class: &'static str) {
        metrics::counter!(MESSAGES_RETRIED, "topic" => received.topic.clone(), "group" => self.group.clone(),
            "class" => class)
        .increment(1);
    }

    /// Runs one handler transaction, timing it: an attempt of the worker's
    /// probe, in flight until it returns (one frozen on a lock reports no error).
    async fn timed<T>(&self, work: impl std::future::Future<Output = T>) -> T {
        let started = Instant::now();
        let attempt = self.probe.attempt();
        let out = work.await;
        drop(attempt);
        metrics::histogram!(HANDLER_DURATION, "group" => self.group.clone()).record(started.elapsed().as_secs_f64());
        out
    }
}
