//! The platform at a glance: sagas per status, outcomes per minute, saga durations,
//! consumer lag, outbox backlogs and dead letters. Each part is read on its own; one that
//! cannot be read (a database or the broker is away) is named in `unavailable` and the rest
//! is still shown, because an operator looks most when something is down.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use saga_generated::OrderStatus;
use saga_generated::topology::{CONSUMER_GROUPS, ORDER_SERVICE};
use saga_runtime::caught_up::Sampler;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::Sources;

/// How far back outcomes and durations look.
pub const WINDOW_MINUTES: i64 = 15;

/// How long one part may take before it counts as unavailable.
const PART_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Overview {
    pub at: DateTime<Utc>,
    /// Every status of the spec's machine, in its order, with how many sagas are in it.
    pub statuses: Vec<StatusCount>,
    /// Sagas that reached each terminal status, per minute, oldest first (last
    /// [`WINDOW_MINUTES`] minutes; minutes with none are left out).
    pub outcomes: Vec<MinuteOutcomes>,
    /// Duration from order to terminal status of the sagas that ended in the window.
    pub durations: Option<Durations>,
    /// Messages each consumer group has not consumed yet, per topic.
    pub lag: Vec<GroupLag>,
    /// Outbox rows waiting for the relay, per service.
    pub outbox: Vec<Backlog>,
    /// Messages each dead-letter topic holds.
    pub dead_letters: BTreeMap<String, i64>,
    /// The parts that could not be read, with why.
    pub unavailable: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusCount {
    pub status: String,
    pub terminal: bool,
    pub count: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinuteOutcomes {
    pub minute: DateTime<Utc>,
    pub counts: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Durations {
    pub sagas: i64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupLag {
    pub group: String,
    pub topic: String,
    pub lag: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backlog {
    pub service: String,
    /// Rows not yet published.
    pub pending: i64,
    /// Rows the relay gave up on.
    pub failed: i64,
}

/// A small pool per service database, kept between overviews.
#[derive(Debug, Clone)]
pub struct Databases {
    pools: Vec<(&'static str, PgPool)>,
}

impl Databases {
    /// Pools that connect when first used, so a database that is down only fails its parts.
    pub fn lazy(sources: &Sources) -> Result<Databases, sqlx::Error> {
        let mut pools = Vec::new();
        for (service, url) in &sources.databases {
            let pool = PgPoolOptions::new().max_connections(2).acquire_timeout(PART_TIMEOUT).connect_lazy(url)?;
            pools.push((*service, pool));
        }
        Ok(Databases { pools })
    }

    pub fn of(&self, service: &str) -> Option<&PgPool> {
        self.pools.iter().find(|(s, _)| *s == service).map(|(_, p)| p)
    }

    /// The status owner's database.
    pub fn owner(&self) -> Option<&PgPool> {
        self.of(ORDER_SERVICE.name)
    }
}

/// Reads the overview now.
pub async fn read(sources: &Sources, databases: &Databases) -> Overview {
    let mut unavailable = Vec::new();
    let mut note = |part: &str, error: String| unavailable.push(format!("{part}: {error}"));
    let owner = databases.owner();
    let statuses = match within(owner_part(owner, statuses)).await {
        Ok(s) => s,
        Err(e) => {
            note("statuses", e);
            Vec::new()
        }
    };
    let outcomes = within(owner_part(owner, outcomes)).await.unwrap_or_else(|e| {
        note("outcomes", e);
        Vec::new()
    });
    let durations = within(owner_part(owner, durations)).await.unwrap_or_else(|e| {
        note("durations", e);
        None
    });
    let mut outbox = Vec::new();
    for (service, pool) in &databases.pools {
        match within(backlog(pool)).await {
            Ok((pending, failed)) => outbox.push(Backlog { service: (*service).to_owned(), pending, failed }),
            Err(e) => note(&format!("{service} outbox"), e),
        }
    }
    let (lag, dead_letters) = {
        let brokers = sources.brokers.clone();
        let prefix = sources.prefix.clone();
        match tokio::task::spawn_blocking(move || kafka_parts(&brokers, &prefix)).await {
            Ok(Ok(parts)) => parts,
            Ok(Err(e)) => {
                note("Kafka", e);
                (Vec::new(), BTreeMap::new())
            }
            Err(e) => {
                note("Kafka", e.to_string());
                (Vec::new(), BTreeMap::new())
            }
        }
    };
    Overview { at: Utc::now(), statuses, outcomes, durations, lag, outbox, dead_letters, unavailable }
}

async fn within<T>(part: impl Future<Output = Result<T, sqlx::Error>>) -> Result<T, String> {
    match tokio::time::timeout(PART_TIMEOUT, part).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {PART_TIMEOUT:?}")),
    }
}

async fn owner_part<'a, T, F>(owner: Option<&'a PgPool>, part: impl FnOnce(&'a PgPool) -> F) -> Result<T, sqlx::Error>
where
    F: Future<Output = Result<T, sqlx::Error>>,
{
    match owner {
        Some(pool) => part(pool).await,
        None => Err(sqlx::Error::Configuration("no database for the status owner".into())),
    }
}

async fn statuses(pool: &PgPool) -> Result<Vec<StatusCount>, sqlx::Error> {
    let counts: BTreeMap<String, i64> = order_store::count_by_status(pool).await?.into_iter().collect();
    Ok(OrderStatus::ALL
        .iter()
        .map(|s| StatusCount {
            status: s.as_str().to_owned(),
            terminal: s.is_terminal(),
            count: counts.get(s.as_str()).copied().unwrap_or(0),
        })
        .collect())
}

fn terminal_statuses() -> Vec<String> {
    OrderStatus::ALL.iter().filter(|s| s.is_terminal()).map(|s| s.as_str().to_owned()).collect()
}

async fn outcomes(pool: &PgPool) -> Result<Vec<MinuteOutcomes>, sqlx::Error> {
    let rows = order_store::entered_per_minute(pool, WINDOW_MINUTES as i32, &terminal_statuses()).await?;
    let mut minutes: Vec<MinuteOutcomes> = Vec::new();
    for (minute, status, count) in rows {
        match minutes.last_mut() {
            Some(last) if last.minute == minute => {
                last.counts.insert(status, count);
            }
            _ => minutes.push(MinuteOutcomes { minute, counts: BTreeMap::from([(status, count)]) }),
        }
    }
    Ok(minutes)
}

async fn durations(pool: &PgPool) -> Result<Option<Durations>, sqlx::Error> {
    let (sagas, p50, p99) = order_store::durations_ms(pool, WINDOW_MINUTES as i32, &terminal_statuses()).await?;
    Ok(match (p50, p99) {
        (Some(p50_ms), Some(p99_ms)) if sagas > 0 => Some(Durations { sagas, p50_ms, p99_ms }),
        _ => None,
    })
}

async fn backlog(pool: &PgPool) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE failure IS NULL), count(*) FILTER (WHERE failure IS NOT NULL) \
         FROM outbox WHERE published_at IS NULL",
    )
    .fetch_one(pool)
    .await
}

/// Consumer lag of every group and the dead letters held. Blocking.
fn kafka_parts(brokers: &str, prefix: &str) -> Result<(Vec<GroupLag>, BTreeMap<String, i64>), String> {
    let lag = consumer_lag(brokers, prefix)?;
    let held = crate::dlq::held(brokers, prefix).map_err(|e| e.to_string())?;
    Ok((lag, held))
}

/// Messages each consumer group of the spec has not consumed yet (committed offsets to the
/// high watermarks), per topic. Blocking.
pub fn consumer_lag(brokers: &str, prefix: &str) -> Result<Vec<GroupLag>, String> {
    let mut lag = Vec::new();
    for group in CONSUMER_GROUPS {
        let topics = group.topics.iter().map(|t| format!("{prefix}{t}")).collect();
        let sampler =
            Sampler::new(brokers, &format!("{prefix}{}", group.group_id), topics).map_err(|e| e.to_string())?;
        let per_topic = sampler.sample().map_err(|e| e.to_string())?.lag();
        for topic in group.topics {
            let behind = per_topic.get(&format!("{prefix}{topic}")).copied().unwrap_or(0);
            lag.push(GroupLag { group: group.group_id.to_owned(), topic: (*topic).to_owned(), lag: behind });
        }
    }
    Ok(lag)
}
