//! The clock the status owner judges deadlines by. An order must not be
//! cancelled while the reply that would have moved it may still be waiting,
//! unconsumed, in Kafka: then the platform's own outage, not the saga, would
//! decide its outcome. So the sweeper does not judge by the wall clock but by
//! a clock that stands still while the owner cannot see its replies.
//!
//! - **Caught up to `t`.** Every [`SAMPLE_EVERY`] the high watermarks of the
//!   owner's topics are sampled, with the time `t` just before. Once the
//!   owner's consumer group has committed past every watermark of that
//!   sample, every reply published before `t` has been handled: the owner is
//!   caught up to `t`. While the broker is away, or the consumer cannot
//!   handle what it receives (its database is away), this time stands still.
//! - **Stands still in an outage.** While the service that keeps the clock
//!   cannot read Kafka or reach its own database, the judging time does not
//!   move at all: an outage of the platform is nobody's deadline. (An owner
//!   whose participants are away for good still sees its own consumer caught
//!   up, so its clock runs and their sagas time out.)
//! - **Never jumps.** After an outage the caught-up time leaps forward at
//!   once, but the participants have only begun to answer the requests that
//!   waited meanwhile (their replies are not in any sample yet). So the
//!   judging time follows the caught-up time at most [`CATCH_UP_RATE`] times
//!   as fast as real time: after an outage of `L` seconds it catches up over
//!   the next `L`, and a deadline that fell due in the outage gets half its
//!   remaining time again. Without an outage the two are the same.
//!
//! An order whose participant really does not answer still times out: only
//! the owner's own consumption holds the clock, never a participant's lag.
//! The clock lives in memory: a restarted owner starts it at its first
//! caught-up sample.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use saga_contract::ServiceIdentity;
use saga_process::shutdown::Shutdown;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::health::{Component, Probe};
use crate::service::Booted;

/// How often the watermarks are sampled and the group's offsets read.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// How much faster than real time the judging time may run to catch up.
pub const CATCH_UP_RATE: u32 = 2;

/// Samples kept while the group has not passed them (an hour of outage at
/// one a second); when full the oldest go, which only means the clock
/// resumes from a later one.
const MAX_PENDING: usize = 3600;

/// How long one metadata, watermark or offset request may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the database may take to answer `SELECT 1`.
const DATABASE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a sample failed: an outage of one or the other.
#[derive(Debug, thiserror::Error)]
enum SampleError {
    #[error("Kafka: {0}")]
    Kafka(KafkaError),
    #[error("database: {0}")]
    Database(String),
}

/// Whether the service's own database answers.
async fn database_answers(pool: &PgPool) -> Result<(), String> {
    match tokio::time::timeout(DATABASE_TIMEOUT, sqlx::query("SELECT 1").execute(pool)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {DATABASE_TIMEOUT:?}")),
    }
}

/// A topic (with its deployment prefix) and a partition number.
type Partition = (String, i32);

/// An offset per partition.
type Offsets = HashMap<Partition, i64>;

/// One sample: its time, the high watermarks just after, then the group's offsets.
pub struct Sample {
    at: SystemTime,
    high: Offsets,
    committed: Offsets,
}

impl Sample {
    /// Messages not yet consumed per topic: from the group's committed offset (0 where it
    /// never committed) to the high watermark, over the topic's partitions.
    pub fn lag(&self) -> std::collections::BTreeMap<String, i64> {
        let mut lag = std::collections::BTreeMap::new();
        for (partition, high) in &self.high {
            let behind = (high - self.committed.get(partition).copied().unwrap_or(0)).max(0);
            *lag.entry(partition.0.clone()).or_insert(0) += behind;
        }
        lag
    }
}

/// The time deadlines are judged at, as the sampling task last worked it out;
/// `None` until the owner was first caught up.
#[derive(Debug, Clone)]
pub struct CaughtUpClock(watch::Receiver<Option<SystemTime>>);

impl CaughtUpClock {
    pub fn now(&self) -> Option<SystemTime> {
        *self.0.borrow()
    }

    /// A clock that stands at `at` for as long as the sender lives (tests).
    pub fn manual(at: Option<SystemTime>) -> (watch::Sender<Option<SystemTime>>, CaughtUpClock) {
        let (sender, receiver) = watch::channel(at);
        (sender, CaughtUpClock(receiver))
    }
}

/// How far past a request's deadline the owner's clock must be before a
/// participant sheds the request: by then the owner (which resolves a saga
/// `ORDER_TIMEOUT_GRACE_MS`, 1 s by default, past its deadline and sweeps
/// every second) has cancelled the saga or is about to, so doing the work
/// could only be undone again.
pub const SHED_AFTER: Duration = Duration::from_secs(5);

/// Whether a participant should shed a request that the owner needs
/// answered by `deadline`: when the owner's clock, as `clock` reads it, is
/// [`SHED_AFTER`] past the deadline. Never while the clock is unknown, nor
/// for a request without a deadline (a compensation has none).
pub fn is_past(clock: &CaughtUpClock, deadline: Option<DateTime<Utc>>) -> bool {
    match (clock.now(), deadline) {
        (Some(now), Some(deadline)) => SystemTime::from(deadline) + SHED_AFTER < now,
        _ => false,
    }
}

/// The clock of `owner`'s consumer group and topics, kept by the service
/// `booted`: the owner's own (its sweeper), or a participant's reading of
/// it (to shed requests whose saga the owner has given up on). Both read the
/// same offsets and watermarks, so they agree up to a sample. The returned
/// task keeps it until `shutdown`, reporting to `component`'s health.
pub fn of_service<E>(
    booted: &Booted,
    owner: &ServiceIdentity<E>,
    component: Component,
    shutdown: Shutdown,
) -> (CaughtUpClock, impl Future<Output = ()> + Send + 'static) {
    let args = &booted.args;
    let group = owner.consumer_group;
    start(
        args.kafka_brokers.clone(),
        format!("{}{}", args.topic_prefix, group.group_id),
        group.topics.iter().map(|t| format!("{}{t}", args.topic_prefix)).collect(),
        booted.pool.clone(),
        shutdown,
        booted.health.probe(component),
    )
}

/// How often a service samples its own consumer group's lag.
const LAG_REPORT_EVERY: Duration = Duration::from_secs(5);

/// Keeps the consumer-lag gauge of group `group` over `topics` (logical names; the broker
/// knows them with `prefix`) until `shutdown`: per topic, the messages between the group's
/// committed offsets and the high watermarks. Sampled like the caught-up clock, with a
/// client of its own; a round that fails leaves the gauge as it was.
///
/// Every service samples this whether it has work or not, so it is also how the service
/// knows whether Kafka answers it: `probe` (a [`Component::Broker`] one) hears each round.
/// A relay with nothing to publish and a consumer with nothing received would not notice a
/// broker that went away.
pub async fn report_lag(
    brokers: String,
    group: String,
    prefix: String,
    topics: Vec<String>,
    shutdown: Shutdown,
    probe: Probe,
) {
    let prefixed = topics.iter().map(|t| format!("{prefix}{t}")).collect();
    let sampler = match Sampler::new(&brokers, &format!("{prefix}{group}"), prefixed) {
        Ok(sampler) => Arc::new(sampler),
        Err(error) => {
            tracing::warn!(%error, "no consumer-lag metric: cannot create a Kafka client");
            probe.failing(format!("cannot create a Kafka client: {error}"));
            shutdown.wait().await;
            return;
        }
    };
    let mut failing = false;
    loop {
        let sample = {
            let _attempt = probe.attempt();
            tokio::task::spawn_blocking({
                let sampler = sampler.clone();
                move || sampler.sample()
            })
            .await
        };
        match sample {
            Ok(Ok(sample)) => {
                if std::mem::take(&mut failing) {
                    tracing::info!("Kafka answers again");
                }
                probe.working();
                let lag = sample.lag();
                for topic in &topics {
                    let lag = lag.get(&format!("{prefix}{topic}")).copied().unwrap_or(0);
                    metrics::gauge!(saga_process::metrics::CONSUMER_LAG, "topic" => topic.clone(), "group" => group.clone())
                        .set(lag as f64);
                }
            }
            Ok(Err(error)) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(%error, "Kafka does not answer (consumer-lag sample)");
                }
                probe.failing(format!("Kafka: {error}"));
            }
            Err(panicked) => probe.failing(format!("consumer-lag sample panicked: {panicked}")),
        }
        tokio::select! {
            () = shutdown.wait() => return,
            () = tokio::time::sleep(LAG_REPORT_EVERY) => {}
        }
    }
}

/// The arithmetic of the clock, free of Kafka: samples and committed offsets
/// in, judging time out.
#[derive(Debug, Default)]
pub struct Reckoner {
    /// Samples not yet passed by the group, oldest first.
    pending: VecDeque<(SystemTime, Offsets)>,
    /// The newest sample time the group has passed.
    caught_up: Option<SystemTime>,
    /// The judging time and the instant it was last worked out.
    judged: Option<(SystemTime, Instant)>,
}

impl Reckoner {
    /// Records the high watermarks sampled just after `at`.
    pub fn sampled(&mut self, at: SystemTime, high: Offsets) {
        if self.pending.len() == MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back((at, high));
    }

    /// Takes the group's committed offsets (a partition it never committed
    /// counts as offset 0) and returns the judging time at `now`.
    pub fn committed(&mut self, committed: &Offsets, now: Instant) -> Option<SystemTime> {
        // Watermarks only grow, so the samples passed are a prefix.
        while let Some((at, high)) = self.pending.front() {
            let passed = high.iter().all(|(partition, high)| committed.get(partition).copied().unwrap_or(0) >= *high);
            if !passed {
                break;
            }
            self.caught_up = Some(*at);
            self.pending.pop_front();
        }
        self.tick(now)
    }

    /// The judging time at `now` through an outage (a failed sample): it
    /// stands still, and the time stood still does not count towards
    /// catching up afterwards.
    pub fn stall(&mut self, now: Instant) -> Option<SystemTime> {
        let (judged, _) = self.judged?;
        self.judged = Some((judged, now));
        Some(judged)
    }

    /// Works the judging time out at `now`: it follows the caught-up time at
    /// most [`CATCH_UP_RATE`] times as fast as real time, never passing it.
    fn tick(&mut self, now: Instant) -> Option<SystemTime> {
        let caught_up = self.caught_up?;
        let judged = match self.judged {
            None => caught_up,
            Some((judged, at)) => {
                let allowed = judged + now.saturating_duration_since(at) * CATCH_UP_RATE;
                judged.max(caught_up.min(allowed))
            }
        };
        self.judged = Some((judged, now));
        Some(judged)
    }
}

/// Reads a consumer group's progress from Kafka: the watermarks of its topics
/// and the offsets the group committed. A client of its own that never joins
/// the group, so the offsets are those of every instance of the service.
pub struct Sampler {
    client: BaseConsumer,
    topics: Vec<String>,
    /// Every partition of the topics, read once: the counts never change
    /// while the service runs (it refuses to start on other counts).
    partitions: std::sync::OnceLock<Vec<Partition>>,
}

impl Sampler {
    /// A sampler of `group` (as the broker names it) over `topics` (prefix included).
    pub fn new(brokers: &str, group: &str, topics: Vec<String>) -> Result<Sampler, KafkaError> {
        let client = crate::kafka::client(brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("log_level", "3")
            .create()?;
        Ok(Sampler { client, topics, partitions: std::sync::OnceLock::new() })
    }

    fn partitions(&self) -> Result<&[Partition], KafkaError> {
        if let Some(partitions) = self.partitions.get() {
            return Ok(partitions);
        }
        let mut partitions = Vec::new();
        for topic in &self.topics {
            let metadata = self.client.fetch_metadata(Some(topic), KAFKA_TIMEOUT)?;
            for t in metadata.topics() {
                if let Some(error) = t.error() {
                    return Err(KafkaError::MetadataFetch(error.into()));
                }
                partitions.extend(t.partitions().iter().map(|p| (topic.clone(), p.id())));
            }
        }
        Ok(self.partitions.get_or_init(|| partitions))
    }

    /// The high watermark of every partition of the topics: one ListOffsets
    /// request per broker for all of them (the "latest" timestamp asks for
    /// the end of each log). A request per partition, twice (librdkafka's
    /// watermark query asks for both ends), was 36 requests a second per
    /// service, a fifth of everything the broker handled under load.
    fn watermarks(&self) -> Result<Offsets, KafkaError> {
        let mut list = TopicPartitionList::new();
        for (topic, partition) in self.partitions()? {
            list.add_partition_offset(topic, *partition, Offset::End)?;
        }
        let ends = self.client.offsets_for_times(list, KAFKA_TIMEOUT)?;
        ends.elements()
            .iter()
            .map(|e| {
                e.error()?;
                match e.offset() {
                    Offset::Offset(high) => Ok(((e.topic().to_owned(), e.partition()), high)),
                    _ => Err(KafkaError::OffsetFetch(rdkafka::types::RDKafkaErrorCode::OffsetNotAvailable)),
                }
            })
            .collect()
    }

    /// The group's committed offset of each partition in `of`.
    fn committed(&self, of: &Offsets) -> Result<Offsets, KafkaError> {
        let mut list = TopicPartitionList::new();
        for (topic, partition) in of.keys() {
            list.add_partition(topic, *partition);
        }
        let committed = self.client.committed_offsets(list, KAFKA_TIMEOUT)?;
        Ok(committed
            .elements()
            .iter()
            .map(|e| {
                let offset = match e.offset() {
                    Offset::Offset(o) => o,
                    _ => 0,
                };
                ((e.topic().to_owned(), e.partition()), offset)
            })
            .collect())
    }

    /// One round: watermarks (after noting the time), then the offsets. Blocking.
    pub fn sample(&self) -> Result<Sample, KafkaError> {
        let at = SystemTime::now();
        let high = self.watermarks()?;
        let committed = self.committed(&high)?;
        Ok(Sample { at, high, committed })
    }
}

/// Starts the clock of consumer group `group` over `topics` (as the broker
/// names them, prefix included), standing still while `pool`'s database is
/// away: the clock, and the task that keeps it until `shutdown`, reporting
/// to `probe` while it cannot read Kafka or the database. A client that
/// cannot even be created (a malformed broker list) ends the task, and the
/// dropped probe then stops the service with the reason logged.
pub fn start(
    brokers: String,
    group: String,
    topics: Vec<String>,
    pool: PgPool,
    shutdown: Shutdown,
    probe: Probe,
) -> (CaughtUpClock, impl Future<Output = ()> + Send + 'static) {
    let (sender, clock) = CaughtUpClock::manual(None);
    let task = async move {
        let sampler = match Sampler::new(&brokers, &group, topics) {
            Ok(sampler) => Arc::new(sampler),
            Err(error) => {
                tracing::error!(%error, "caught-up clock cannot create its Kafka client");
                return;
            }
        };
        let mut reckoner = Reckoner::default();
        let mut failing = false;
        loop {
            let attempt = probe.attempt();
            let round = match database_answers(&pool).await {
                Err(error) => Ok(Err(SampleError::Database(error))),
                Ok(()) => {
                    tokio::task::spawn_blocking({
                        let sampler = sampler.clone();
                        move || sampler.sample().map_err(SampleError::Kafka)
                    })
                    .await
                }
            };
            drop(attempt);
            let judged = match round {
                Ok(Ok(Sample { at, high, committed })) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!("caught-up clock runs again");
                    }
                    probe.working();
                    reckoner.sampled(at, high);
                    reckoner.committed(&committed, Instant::now())
                }
                Ok(Err(error)) => {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(%error, "caught-up clock stands still: an outage");
                    }
                    probe.failing(&error);
                    reckoner.stall(Instant::now())
                }
                Err(panicked) => {
                    tracing::error!(error = %panicked, "caught-up clock sample panicked");
                    return;
                }
            };
            sender.send_replace(judged);
            tokio::select! {
                () = shutdown.wait() => break,
                () = tokio::time::sleep(SAMPLE_EVERY) => {}
            }
        }
        drop(probe);
    };
    (clock, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    fn offsets(of: &[(i32, i64)]) -> Offsets {
        of.iter().map(|(p, o)| (("replies".to_owned(), *p), *o)).collect()
    }

    #[test]
    fn the_clock_waits_until_the_group_passed_a_sample() {
        let mut r = Reckoner::default();
        let start = Instant::now();
        r.sampled(at(0), offsets(&[(0, 10), (1, 5)]));
        assert_eq!(r.committed(&offsets(&[(0, 10), (1, 4)]), start), None, "partition 1 is behind");
        // A partition never committed counts as 0: passed only when empty.
        assert_eq!(r.committed(&offsets(&[(0, 10)]), start), None);
        r.sampled(at(1), offsets(&[(0, 12), (1, 5)]));
        assert_eq!(r.committed(&offsets(&[(0, 11), (1, 5)]), start), Some(at(0)), "only the first sample is passed");
        assert_eq!(r.committed(&offsets(&[(0, 12), (1, 5)]), start + Duration::from_secs(1)), Some(at(1)));
    }

    #[test]
    fn after_an_outage_the_clock_catches_up_at_twice_real_time() {
        let mut r = Reckoner::default();
        let start = Instant::now();
        let empty = offsets(&[(0, 0)]);
        r.sampled(at(0), empty.clone());
        assert_eq!(r.committed(&empty, start), Some(at(0)));
        // 30 s of outage: samples fail, the clock stands still.
        for s in 1..=30 {
            assert_eq!(r.stall(start + Duration::from_secs(s)), Some(at(0)));
        }
        // Back: the group is caught up to second 31 at once, the clock is not.
        r.sampled(at(31), empty.clone());
        assert_eq!(r.committed(&empty, start + Duration::from_secs(31)), Some(at(2)));
        r.sampled(at(32), empty.clone());
        assert_eq!(r.committed(&empty, start + Duration::from_secs(32)), Some(at(4)));
        // Another outage second while catching up: it stands still, and gains nothing by it.
        assert_eq!(r.stall(start + Duration::from_secs(33)), Some(at(4)));
        r.sampled(at(34), empty.clone());
        assert_eq!(r.committed(&empty, start + Duration::from_secs(34)), Some(at(6)));
        // It never passes the caught-up time, and then keeps pace with it.
        for s in 35..=70 {
            r.sampled(at(s), empty.clone());
            r.committed(&empty, start + Duration::from_secs(s));
        }
        assert_eq!(r.committed(&empty, start + Duration::from_secs(70)), Some(at(70)));
    }

    #[test]
    fn a_request_is_past_only_well_after_its_deadline_on_a_known_clock() {
        let deadline = DateTime::<Utc>::from(at(100));
        let (clock_at, clock) = CaughtUpClock::manual(None);
        assert!(!is_past(&clock, Some(deadline)), "unknown clock");
        clock_at.send_replace(Some(at(104)));
        assert!(!is_past(&clock, Some(deadline)), "within the margin");
        clock_at.send_replace(Some(at(106)));
        assert!(is_past(&clock, Some(deadline)));
        assert!(!is_past(&clock, None), "no deadline, never past");
    }

    #[test]
    fn a_group_that_lags_holds_the_clock_at_what_it_has_consumed() {
        let mut r = Reckoner::default();
        let start = Instant::now();
        for s in 0..10 {
            r.sampled(at(s), offsets(&[(0, 100 * (s as i64 + 1))]));
        }
        // The group has consumed what was published by second 3.
        assert_eq!(r.committed(&offsets(&[(0, 450)]), start), Some(at(3)));
        assert_eq!(
            r.committed(&offsets(&[(0, 450)]), start + Duration::from_secs(60)),
            Some(at(3)),
            "no further than it has seen"
        );
    }
}
