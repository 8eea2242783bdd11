//! The chaos suite's load: orders at fixed intended times, each placed by a
//! client that behaves like a careful real one through an outage. It retries
//! `POST /orders` with the same `Idempotency-Key` while the platform refuses
//! or cannot answer, and keeps polling until the saga ends. Every order is
//! recorded with what it should have become had nothing gone wrong.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::bench::load::{Api, World, pick};

/// How long a client keeps trying to place one order.
const PLACE_FOR: Duration = Duration::from_secs(150);

/// How long a client waits for an accepted order to end.
const END_WITHIN: Duration = Duration::from_secs(300);

/// How soon a client first asks whether its saga ended; it waits twice as
/// long each time after, up to [`POLL_AT_MOST`]. (Polling every 250 ms, the
/// thousand orders waiting out a minute's outage asked 4,000 times a second
/// and slowed the recovery they were measuring; the end time comes from the
/// order's history, so the polls' pace does not change what is measured.)
const POLL_FIRST: Duration = Duration::from_millis(250);
const POLL_AT_MOST: Duration = Duration::from_secs(2);

/// What became of one order.
#[derive(Debug, Clone)]
pub struct Record {
    /// When it was meant to be sent, from the start of the scenario.
    pub intended: Duration,
    /// The terminal status it reaches when nothing goes wrong.
    pub expected: &'static str,
    /// When the platform accepted it (201), from the start of the scenario.
    pub accepted: Option<Duration>,
    /// Every order id the platform answered for its key (more than one: a duplicate).
    pub order_ids: BTreeSet<String>,
    /// Its terminal status, and why it failed when it did (`failure_reason`).
    pub status: Option<(String, String)>,
    /// When it became terminal (the order service's history), from the start.
    pub ended: Option<Duration>,
    /// `POST /orders` calls it took.
    pub attempts: u32,
    /// The last refusal or error while placing or polling it.
    pub last_error: Option<String>,
    /// Requests (placing or polling it) that failed: an error status or no answer.
    pub failed_requests: u32,
}

/// Sends orders at `rate` per second from `start` until `stop` says so,
/// then waits for every one of them. `wall_start` is `start` on the wall
/// clock, to place the order service's timestamps on the same axis.
pub async fn run(
    api: &Api,
    world: Arc<World>,
    rate: f64,
    start: Instant,
    wall_start: SystemTime,
    mut stop: watch::Receiver<bool>,
) -> Vec<Record> {
    let period = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let mut tasks = Vec::new();
    for n in 0u64.. {
        let intended = period.mul_f64(n as f64);
        tokio::select! {
            () = tokio::time::sleep_until(start + intended) => {}
            _ = stop.wait_for(|stopped| *stopped) => break,
        }
        let (api, world) = (api.clone(), world.clone());
        tasks.push(tokio::spawn(async move { one(&api, &world, n, start, wall_start, intended).await }));
    }
    let mut records = Vec::with_capacity(tasks.len());
    for task in tasks {
        if let Ok(record) = task.await {
            records.push(record);
        }
    }
    records
}

async fn one(api: &Api, world: &World, n: u64, start: Instant, wall_start: SystemTime, intended: Duration) -> Record {
    let (customer, items, expected) = pick(world, n);
    let key = uuid::Uuid::new_v4().to_string();
    let body = json!({ "items": items });
    let mut record = Record {
        intended,
        expected,
        accepted: None,
        order_ids: BTreeSet::new(),
        status: None,
        ended: None,
        attempts: 0,
        last_error: None,
        failed_requests: 0,
    };
    let give_up = start + intended + PLACE_FOR;
    let mut backoff = Duration::from_millis(200);
    let order_id = loop {
        record.attempts += 1;
        let reply = api
            .send_with_headers(reqwest::Method::POST, "/api/v1/orders", Some(&customer.token), Some(&key), Some(&body))
            .await;
        let wait = match reply {
            Ok((status, _, reply)) if status.is_success() => match reply["id"].as_str() {
                Some(id) => {
                    record.order_ids.insert(id.to_owned());
                    break id.to_owned();
                }
                None => {
                    record.last_error = Some(format!("{status} without an order id: {reply}"));
                    return record;
                }
            },
            // Refused for now (overloaded, a backend away, the gateway's own
            // deadline): again later with the same key, after `Retry-After` if given.
            Ok((status, headers, reply)) if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS => {
                record.failed_requests += 1;
                record.last_error = Some(format!("{status}: {reply}"));
                let retry_after = headers
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs);
                retry_after.unwrap_or(backoff)
            }
            Ok((status, _, reply)) => {
                record.failed_requests += 1;
                record.last_error = Some(format!("{status}: {reply}"));
                return record;
            }
            // The gateway is away: connection refused or reset.
            Err(error) => {
                record.failed_requests += 1;
                record.last_error = Some(format!("{error:#}"));
                backoff
            }
        };
        if Instant::now() + wait > give_up {
            return record;
        }
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    };
    record.accepted = Some(start.elapsed());
    let deadline = Instant::now() + END_WITHIN;
    let mut poll = POLL_FIRST;
    while Instant::now() < deadline {
        tokio::time::sleep(poll).await;
        poll = (poll * 2).min(POLL_AT_MOST);
        match api.order_status(&customer.token, &order_id).await {
            Ok(view) => {
                if let Some(at) = view.ended_at {
                    record.ended = at.duration_since(wall_start).ok();
                    record.status = Some((view.status, view.failure_reason));
                    return record;
                }
            }
            Err(error) => {
                record.failed_requests += 1;
                record.last_error = Some(format!("{error:#}"));
            }
        }
    }
    record
}
