//! What the benchmark reads besides latencies: CPU and peak memory of every
//! process of the stack, Kafka consumer lag, and the invariants that make a
//! run worth reporting.

use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

use crate::stack::{Component, StackConfig};

/// Kernel clock ticks per second of `/proc/<pid>/stat` times: USER_HZ, 100 on
/// every Linux architecture the stack runs on.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds and peak RSS of one component (all its processes).
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub peak_rss_kib: u64,
    pub processes: usize,
}

/// `(ppid, utime + stime ticks)` from `/proc/<pid>/stat`. The command name
/// may contain spaces and parentheses, so fields are counted after the last `)`.
fn stat(pid: i32) -> Option<(i32, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12).
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

fn peak_rss_kib(pid: i32) -> u64 {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/status")) else { return 0 };
    text.lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The pids of a component: the one in its pid file and, for PostgreSQL, its
/// backends and workers (children of the postmaster).
fn pids(config: &StackConfig, component: Component) -> Vec<i32> {
    let Some(root) = component.tracked(config).running_pid().map(|p| p.as_raw()) else { return Vec::new() };
    let mut pids = vec![root];
    if component != Component::Postgres {
        return pids;
    }
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
            if stat(pid).is_some_and(|(ppid, _)| ppid == root) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// CPU ticks per pid of every component, and of this process (the load generator).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    ticks: BTreeMap<String, BTreeMap<i32, u64>>,
}

pub fn snapshot(config: &StackConfig) -> Snapshot {
    let mut ticks = BTreeMap::new();
    for component in Component::all(config) {
        let per_pid = pids(config, component).into_iter().filter_map(|pid| Some((pid, stat(pid)?.1))).collect();
        ticks.insert(component.name(), per_pid);
    }
    let me = std::process::id() as i32;
    ticks.insert("load generator".to_owned(), stat(me).map(|(_, t)| BTreeMap::from([(me, t)])).unwrap_or_default());
    Snapshot { ticks }
}

/// CPU used between two snapshots (processes that appeared in between count
/// from zero: short-lived PostgreSQL backends), and peak RSS now. PostgreSQL's
/// peak is the sum over its processes, which counts shared buffers more than once.
pub fn usage(before: &Snapshot, after: &Snapshot) -> BTreeMap<String, Usage> {
    let me = std::process::id() as i32;
    after
        .ticks
        .iter()
        .map(|(name, per_pid)| {
            let cpu: u64 = per_pid
                .iter()
                .map(|(pid, t)| t.saturating_sub(before.ticks.get(name).and_then(|b| b.get(pid)).copied().unwrap_or(0)))
                .sum();
            let peak_rss_kib = if name == "load generator" {
                peak_rss_kib(me)
            } else {
                per_pid.keys().map(|&pid| peak_rss_kib(pid)).sum()
            };
            let usage = Usage { cpu_seconds: cpu as f64 / TICKS_PER_SECOND, peak_rss_kib, processes: per_pid.len() };
            (name.clone(), usage)
        })
        .collect()
}

/// Committed offset vs high watermark for every partition each service's
/// consumer group reads (the operator's reading, [`saga_operator::overview::consumer_lag`]);
/// the sum per group.
pub fn kafka_lag(config: &StackConfig) -> anyhow::Result<BTreeMap<String, i64>> {
    let lag = saga_operator::overview::consumer_lag(&config.kafka_brokers(), "")
        .map_err(|e| anyhow::anyhow!("reading the consumer lag: {e}"))?;
    let mut per_group = BTreeMap::new();
    for topic in lag {
        *per_group.entry(topic.group).or_insert(0) += topic.lag;
    }
    Ok(per_group)
}

async fn connect(config: &StackConfig, database: &str) -> anyhow::Result<PgConnection> {
    PgConnection::connect(&config.postgres_admin_url(database))
        .await
        .with_context(|| format!("connecting to {database}"))
}

/// Money and stock before the load, to compare with after.
#[derive(Debug, Clone, Copy)]
pub struct Totals {
    pub balances: i64,
    pub stock: i64,
}

pub async fn totals(config: &StackConfig) -> anyhow::Result<Totals> {
    let mut user = connect(config, "user_service").await?;
    let balances: i64 =
        sqlx::query_scalar("SELECT coalesce(sum(balance_minor), 0)::bigint FROM balances").fetch_one(&mut user).await?;
    let mut product = connect(config, "product_service").await?;
    let stock: i64 = sqlx::query_scalar("SELECT coalesce(sum(available + reserved), 0)::bigint FROM stock")
        .fetch_one(&mut product)
        .await?;
    Ok(Totals { balances, stock })
}

const NON_TERMINAL: &str = "SELECT count(*) FROM orders WHERE status NOT IN ('completed', 'inventory_reserved_failed', 'payment_failed', 'cancelled')";

/// Waits (up to `wait`) until no order is in flight, every outbox row is
/// published and every consumer group has consumed everything (a compensation
/// may still be on its way after its saga ended); returns how long that took.
pub async fn drain(config: &StackConfig, wait: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut order = connect(config, "order_service").await?;
    // Right after a broker failover the new leader may not know its high
    // watermark yet (OffsetNotAvailable): not drained yet, ask again.
    let mut lag_error = None;
    loop {
        let open: i64 = sqlx::query_scalar(NON_TERMINAL).fetch_one(&mut order).await?;
        let mut unpublished = 0i64;
        for db in ["order_service", "product_service", "user_service"] {
            let mut conn = connect(config, db).await?;
            unpublished += sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                .fetch_one(&mut conn)
                .await?;
        }
        if open == 0 && unpublished == 0 {
            let brokers = config.kafka_brokers();
            match tokio::task::spawn_blocking(move || saga_operator::overview::consumer_lag(&brokers, "")).await? {
                Ok(lag) if lag.iter().all(|l| l.lag == 0) => return Ok(start.elapsed()),
                Ok(_) => lag_error = None,
                Err(error) => lag_error = Some(error),
            }
        }
        if start.elapsed() > wait {
            if let Some(error) = lag_error {
                bail!("reading the consumer lag: {error}");
            }
            return Ok(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every invariant, each with its numbers; `ok` only when all hold.
pub async fn invariants(config: &StackConfig, before: Totals) -> anyhow::Result<(bool, Value)> {
    let mut order = connect(config, "order_service").await?;
    let mut product = connect(config, "product_service").await?;
    let mut user = connect(config, "user_service").await?;
    let non_terminal: i64 = sqlx::query_scalar(NON_TERMINAL).fetch_one(&mut order).await?;
    let (completed, completed_total): (i64, i64) =
        sqlx::query_as("SELECT count(*), coalesce(sum(total_minor), 0)::bigint FROM orders WHERE status = 'completed'")
            .fetch_one(&mut order)
            .await?;
    let mut unpublished = BTreeMap::new();
    for (name, conn) in [("order", &mut order), ("product", &mut product), ("user", &mut user)] {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetch_one(&mut *conn).await?;
        unpublished.insert(name, n);
    }
    let after = totals(config).await?;
    let (debited, debited_total): (i64, i64) = sqlx::query_as(
        "SELECT count(*), coalesce(sum(amount_minor), 0)::bigint FROM payments WHERE status = 'debited'",
    )
    .fetch_one(&mut user)
    .await?;
    // Stock held by reservations that were never released: the sold goods.
    let (reserved_rows, reserved_items): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM reservations WHERE status = 'reserved'), \
         coalesce((SELECT sum(i.quantity) FROM reservation_items i JOIN reservations r USING (order_id) \
         WHERE r.status = 'reserved'), 0)::bigint",
    )
    .fetch_one(&mut product)
    .await?;
    let reserved_column: i64 =
        sqlx::query_scalar("SELECT coalesce(sum(reserved), 0)::bigint FROM stock").fetch_one(&mut product).await?;
    let checks = [
        ("no order left non-terminal", non_terminal == 0),
        ("every outbox row published", unpublished.values().all(|&n| n == 0)),
        (
            "money conserved: balances before = balances after + debited payments",
            before.balances == after.balances + debited_total,
        ),
        ("one debit per completed order, of its total", debited == completed && debited_total == completed_total),
        ("stock conserved: available + reserved unchanged", before.stock == after.stock),
        ("reserved stock = items of live reservations", reserved_column == reserved_items),
        ("one live reservation per completed order", reserved_rows == completed),
    ];
    let ok = checks.iter().all(|(_, holds)| *holds);
    let report = json!({
        "ok": ok,
        "checks": checks.iter().map(|(name, holds)| json!({ "check": name, "holds": holds })).collect::<Vec<_>>(),
        "non_terminal_orders": non_terminal,
        "unpublished_outbox_rows": unpublished,
        "completed_orders": completed,
        "completed_total_minor": completed_total,
        "debited_payments": debited,
        "debited_total_minor": debited_total,
        "balances_before_minor": before.balances,
        "balances_after_minor": after.balances,
        "stock_before": before.stock,
        "stock_after": after.stock,
        "live_reservations": reserved_rows,
        "reserved_items": reserved_items,
        "reserved_column": reserved_column,
    });
    Ok((ok, report))
}
