//! What the benchmark reads besides latencies: CPU and peak memory of every
//! process of the stack, Kafka consumer lag, and the invariants that make a
//! run worth reporting.

use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use sqlx::{Connection, PgConnection};

use saga_stack::{Component, StackConfig};

use super::report::{Check, CoreShare, CoreTime, Invariants, LOAD_GENERATOR};

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
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_stat(text: &str) -> Option<(i32, u64)> {
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12).
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// CPU ticks the Kafka nodes' JIT compiler threads (HotSpot's `C1`/`C2
/// CompilerThread`s) have used so far: how the benchmark tells the broker
/// has warmed up.
pub fn kafka_jit_seconds(config: &StackConfig) -> f64 {
    let mut ticks = 0;
    for node in config.kafka_nodes() {
        let Some(pid) = Component::Kafka(node.index).tracked(config).running_pid() else { continue };
        let Ok(threads) = fs::read_dir(format!("/proc/{pid}/task")) else { continue };
        for thread in threads.flatten() {
            let Ok(text) = fs::read_to_string(thread.path().join("stat")) else { continue };
            let name = text.split_once('(').and_then(|(_, rest)| rest.rsplit_once(')')).map(|(name, _)| name);
            if name.is_some_and(|n| n.starts_with("C1 Compiler") || n.starts_with("C2 Compiler")) {
                ticks += parse_stat(&text).map_or(0, |(_, t)| t);
            }
        }
    }
    ticks as f64 / TICKS_PER_SECOND
}

/// What the scheduler did with the threads of process `pid` now alive: nanoseconds
/// runnable but waiting for a core (the run-queue delay) and how many times each was put
/// on a core, summed from each thread's `/proc/<pid>/task/<tid>/schedstat` (the
/// process's own `schedstat` is its main thread's).
fn scheduled(pid: i32) -> Sched {
    let Ok(threads) = fs::read_dir(format!("/proc/{pid}/task")) else { return Sched::default() };
    threads.flatten().filter_map(|t| parse_schedstat(&fs::read_to_string(t.path().join("schedstat")).ok()?)).fold(
        Sched::default(),
        |sum, t| Sched { waited_ns: sum.waited_ns + t.waited_ns, slices: sum.slices + t.slices },
    )
}

/// A thread's (or a process's) run-queue delay and times on a core.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Sched {
    waited_ns: u64,
    slices: u64,
}

/// A `schedstat` line: `<on-CPU ns> <run-queue delay ns> <times on a core>`.
fn parse_schedstat(text: &str) -> Option<Sched> {
    let mut fields = text.split_whitespace().skip(1);
    Some(Sched { waited_ns: fields.next()?.parse().ok()?, slices: fields.next()?.parse().ok()? })
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
pub(super) fn pids(config: &StackConfig, component: Component) -> Vec<i32> {
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

/// A count per pid, per component.
type PerPid = BTreeMap<String, BTreeMap<i32, u64>>;

/// CPU ticks, run-queue delay (ns) and times on a core per pid of every component, and
/// of this process (the load generator).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    ticks: PerPid,
    waited_ns: PerPid,
    slices: PerPid,
}

pub fn snapshot(config: &StackConfig) -> Snapshot {
    let me = std::process::id() as i32;
    let mut processes: Vec<(String, Vec<i32>)> =
        Component::all(config).into_iter().map(|c| (c.name(), pids(config, c))).collect();
    processes.push((LOAD_GENERATOR.to_owned(), vec![me]));
    let mut snapshot = Snapshot::default();
    for (name, pids) in processes {
        let ticks = pids.iter().filter_map(|&pid| Some((pid, stat(pid)?.1))).collect();
        let sched: Vec<(i32, Sched)> = pids.iter().map(|&pid| (pid, scheduled(pid))).collect();
        snapshot.ticks.insert(name.clone(), ticks);
        snapshot.waited_ns.insert(name.clone(), sched.iter().map(|(pid, s)| (*pid, s.waited_ns)).collect());
        snapshot.slices.insert(name, sched.iter().map(|(pid, s)| (*pid, s.slices)).collect());
    }
    snapshot
}

/// How much `name`'s processes counted up between two readings: processes that appeared
/// in between count from zero (short-lived PostgreSQL backends), and a count that went
/// down (a thread that ended took its share) from none.
fn counted(before: &PerPid, after: &PerPid, name: &str) -> u64 {
    let Some(per_pid) = after.get(name) else { return 0 };
    per_pid
        .iter()
        .map(|(pid, n)| n.saturating_sub(before.get(name).and_then(|b| b.get(pid)).copied().unwrap_or(0)))
        .sum()
}

/// What every component did with the cores between two snapshots, per saga of `sagas`:
/// CPU used, time its threads were runnable but waited for a core, and how often they
/// were put on one.
pub fn core_time(before: &Snapshot, after: &Snapshot, sagas: u64) -> CoreTime {
    let per_saga = |ms: f64| ms / sagas.max(1) as f64;
    let components: BTreeMap<String, CoreShare> = after
        .ticks
        .keys()
        .map(|name| {
            let cpu_ms = counted(&before.ticks, &after.ticks, name) as f64 * 1000.0 / TICKS_PER_SECOND;
            let waited_ms = counted(&before.waited_ns, &after.waited_ns, name) as f64 / 1e6;
            let slices = counted(&before.slices, &after.slices, name) as f64;
            let share =
                CoreShare { cpu_ms: per_saga(cpu_ms), waited_ms: per_saga(waited_ms), slices: per_saga(slices) };
            (name.clone(), share)
        })
        .collect();
    CoreTime {
        sagas,
        cpu_ms_per_saga: components.values().map(|c| c.cpu_ms).sum(),
        waited_ms_per_saga: components.values().map(|c| c.waited_ms).sum(),
        slices_per_saga: components.values().map(|c| c.slices).sum(),
        components,
    }
}

/// CPU used between two snapshots (see [`counted`]), and peak RSS now. PostgreSQL's
/// peak is the sum over its processes, which counts shared buffers more than once.
pub fn usage(before: &Snapshot, after: &Snapshot) -> BTreeMap<String, Usage> {
    let me = std::process::id() as i32;
    after
        .ticks
        .iter()
        .map(|(name, per_pid)| {
            let cpu = counted(&before.ticks, &after.ticks, name);
            let peak_rss_kib = if name == LOAD_GENERATOR {
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

/// Transactions each service's database has committed or rolled back since
/// the server started (`pg_stat_database`), per service. Backends report
/// their counts at the end of a transaction when idle, at most once a
/// second: a reading waits that long first, so what just ended is in it.
pub async fn postgres_transactions(config: &StackConfig) -> anyhow::Result<BTreeMap<String, u64>> {
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut admin = connect(config, "postgres").await?;
    let services = saga_stack::config::services();
    let databases: Vec<String> = services.iter().map(|s| s.database()).collect();
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT datname::text, (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = ANY($1)",
    )
    .bind(&databases)
    .fetch_all(&mut admin)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(database, n)| {
            let service = services.iter().find(|s| s.database() == database)?;
            Some((service.name.to_owned(), u64::try_from(n).unwrap_or(0)))
        })
        .collect())
}

/// The broker's request counters: `RequestsPerSec` of every request type
/// (its `Count`, since the node started), read over JMX.
const REQUEST_COUNTERS: &str = "kafka.network:type=RequestMetrics,name=RequestsPerSec,request=*,version=*";

/// Requests the Kafka nodes have handled since they started, per request type
/// (`Produce`, `Fetch`, `Heartbeat`, ...), summed over nodes and versions:
/// the broker's own counters, so every client is counted (services, relays,
/// the console) and a change of client settings shows in what the broker
/// does. Each node's JMX is opened on loopback the first time
/// (`jcmd ManagementAgent.start`, no restart), then Kafka's `JmxTool` reads it.
pub fn kafka_requests(config: &StackConfig) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut total = BTreeMap::new();
    for node in config.kafka_nodes() {
        let component = Component::Kafka(node.index);
        let pid =
            component.tracked(config).running_pid().with_context(|| format!("{} is not running", component.name()))?;
        let url = format!("service:jmx:rmi:///jndi/rmi://{}:{}/jmxrmi", config.host(), node.jmx_port);
        let read = || {
            let output = saga_stack::kafka::tool(config, "org.apache.kafka.tools.JmxTool")
                .args(["--jmx-url", &url, "--object-name", REQUEST_COUNTERS, "--attributes", "Count"])
                .args(["--one-time", "true"])
                .output()
                .context("running Kafka's JmxTool")?;
            parse_request_counts(&String::from_utf8_lossy(&output.stdout)).with_context(|| {
                format!("no request counters from {url}: {}", String::from_utf8_lossy(&output.stderr).trim())
            })
        };
        let counts = match read() {
            Ok(counts) => counts,
            Err(_) => {
                let port = node.jmx_port.to_string();
                let started = std::process::Command::new("jcmd")
                    .arg(pid.to_string())
                    .args(["ManagementAgent.start", &format!("jmxremote.host={}", config.host())])
                    .args([format!("jmxremote.port={port}"), format!("jmxremote.rmi.port={port}")])
                    .args(["jmxremote.ssl=false", "jmxremote.authenticate=false"])
                    .output()
                    .context("running jcmd to open the broker's JMX")?;
                if !started.status.success() {
                    bail!(
                        "jcmd could not open JMX of {}: {}",
                        component.name(),
                        String::from_utf8_lossy(&started.stdout)
                    );
                }
                read()?
            }
        };
        for (request, count) in counts {
            *total.entry(request).or_default() += count;
        }
    }
    Ok(total)
}

/// JmxTool's CSV: a header of quoted object names (commas inside them), then
/// one row of numbers, the first the time. Counts per request type.
fn parse_request_counts(csv: &str) -> Option<BTreeMap<String, u64>> {
    let mut lines = csv.lines().skip_while(|l| !l.starts_with("\"time\""));
    let (header, values) = (lines.next()?, lines.next()?);
    // Every column but the time names exactly one `request=`.
    let requests = header.split("request=").skip(1).map(|rest| rest.split([',', ':', '"']).next().unwrap_or(rest));
    let values = values.split(',').skip(1).map(|v| v.trim().parse::<f64>().ok());
    let mut counts = BTreeMap::new();
    for (request, value) in requests.zip(values) {
        let value = value?;
        // The broker counts every fetch again as one of these two: they are not requests of their own.
        if !matches!(request, "FetchConsumer" | "FetchFollower") {
            *counts.entry(request.to_owned()).or_default() += value as u64;
        }
    }
    (!counts.is_empty()).then_some(counts)
}

/// Per saga between two readings of counters (requests, transactions), per name and in all (`total`).
pub fn per_saga(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, sagas: u64) -> BTreeMap<String, f64> {
    let each = |n: u64| n as f64 / sagas.max(1) as f64;
    let mut map = BTreeMap::new();
    let mut total = 0;
    for (name, count) in after {
        let counted = count.saturating_sub(before.get(name).copied().unwrap_or(0));
        if counted > 0 {
            map.insert(name.clone(), each(counted));
            total += counted;
        }
    }
    map.insert("total".to_owned(), each(total));
    map
}

pub(super) async fn connect(config: &StackConfig, database: &str) -> anyhow::Result<PgConnection> {
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

/// Orders not in a terminal status of the spec.
async fn non_terminal(order: &mut PgConnection) -> Result<i64, sqlx::Error> {
    let terminal: Vec<String> =
        saga_generated::OrderStatus::ALL.iter().filter(|s| s.is_terminal()).map(|s| s.as_str().to_owned()).collect();
    order_store::count_not_in(order, &terminal).await
}

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
        let open = non_terminal(&mut order).await?;
        let mut unpublished = 0i64;
        for db in ["order_service", "product_service", "user_service", "shipping_service"] {
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
pub async fn invariants(config: &StackConfig, before: Totals) -> anyhow::Result<Invariants> {
    let mut order = connect(config, "order_service").await?;
    let mut product = connect(config, "product_service").await?;
    let mut user = connect(config, "user_service").await?;
    let mut shipping = connect(config, "shipping_service").await?;
    let non_terminal = non_terminal(&mut order).await?;
    let (completed, completed_total) =
        order_store::count_and_total(&mut order, saga_generated::OrderStatus::Completed.as_str()).await?;
    let mut unpublished = BTreeMap::new();
    for (name, conn) in
        [("order", &mut order), ("product", &mut product), ("user", &mut user), ("shipping", &mut shipping)]
    {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetch_one(&mut *conn).await?;
        unpublished.insert(name.to_owned(), n);
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
    let booked_shipments: i64 =
        sqlx::query_scalar("SELECT count(*) FROM shipments WHERE status = 'booked'").fetch_one(&mut shipping).await?;
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
        ("one booked parcel per completed order", booked_shipments == completed),
    ];
    Ok(Invariants {
        ok: checks.iter().all(|(_, holds)| *holds),
        checks: checks.iter().map(|(name, holds)| Check { check: (*name).to_owned(), holds: *holds }).collect(),
        non_terminal_orders: non_terminal,
        unpublished_outbox_rows: unpublished,
        completed_orders: completed,
        completed_total_minor: completed_total,
        debited_payments: debited,
        debited_total_minor: debited_total,
        balances_before_minor: before.balances,
        balances_after_minor: after.balances,
        stock_before: before.stock,
        stock_after: after.stock,
        live_reservations: reserved_rows,
        reserved_items,
        reserved_column,
        booked_shipments: Some(booked_shipments),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_queue_waits_are_read_from_schedstat_and_divided_per_saga() {
        assert_eq!(parse_schedstat("215231768 16280973 844\n"), Some(Sched { waited_ns: 16_280_973, slices: 844 }));
        assert_eq!(parse_schedstat("215231768 16280973"), None);
        // This process's threads: it has been on a core, at least to read this.
        assert!(scheduled(std::process::id() as i32).slices > 0);

        let reading = |ticks: &[(i32, u64)], waited: &[(i32, u64)]| Snapshot {
            ticks: BTreeMap::from([("postgres".to_owned(), ticks.iter().copied().collect())]),
            waited_ns: BTreeMap::from([("postgres".to_owned(), waited.iter().copied().collect())]),
            // A tenth of the ticks.
            slices: BTreeMap::from([("postgres".to_owned(), ticks.iter().map(|(pid, t)| (*pid, t / 10)).collect())]),
        };
        // Pid 2 appears in between (counts from zero); pid 3's waits went down (a thread
        // ended): none of it, not a negative share.
        let before = reading(&[(1, 100), (3, 50)], &[(1, 1_000_000), (3, 9_000_000)]);
        let after = reading(&[(1, 140), (2, 20), (3, 50)], &[(1, 5_000_000), (2, 3_000_000), (3, 1_000_000)]);
        let cores = core_time(&before, &after, 10);
        assert_eq!(cores.sagas, 10);
        // 60 ticks = 600 ms over 10 sagas; 7 ms of waits over 10 sagas; 4 + 2 slices.
        assert!((cores.cpu_ms_per_saga - 60.0).abs() < 1e-9, "{cores:?}");
        assert!((cores.waited_ms_per_saga - 0.7).abs() < 1e-9, "{cores:?}");
        assert!((cores.slices_per_saga - 0.6).abs() < 1e-9, "{cores:?}");
        assert_eq!(
            cores.components["postgres"],
            CoreShare { cpu_ms: cores.cpu_ms_per_saga, waited_ms: cores.waited_ms_per_saga, slices: 0.6 }
        );
    }

    #[test]
    fn request_counts_are_read_from_jmx_tool_csv_and_summed_over_versions() {
        let csv = "Trying to connect to JMX url: service:jmx:rmi:///jndi/rmi://127.0.0.1:17900/jmxrmi\n\
            \"time\",\"kafka.network:type=RequestMetrics,name=RequestsPerSec,request=Fetch,version=16:Count\",\
            \"kafka.network:type=RequestMetrics,name=RequestsPerSec,request=Fetch,version=17:Count\",\
            \"kafka.network:type=RequestMetrics,name=RequestsPerSec,request=FetchConsumer:Count\",\
            \"kafka.network:type=RequestMetrics,name=RequestsPerSec,request=Produce,version=11:Count\"\n\
            1796219233409,10,5,15,40\n";
        let counts = parse_request_counts(csv).expect("counts");
        assert_eq!(counts, BTreeMap::from([("Fetch".to_owned(), 15), ("Produce".to_owned(), 40)]));
        assert_eq!(parse_request_counts("Trying to connect\n"), None);

        let before = BTreeMap::from([("Fetch".to_owned(), 15), ("Produce".to_owned(), 40)]);
        let after = BTreeMap::from([("Fetch".to_owned(), 55), ("Produce".to_owned(), 40), ("Heartbeat".to_owned(), 4)]);
        let per_saga = per_saga(&before, &after, 4);
        let expected = [("Fetch", 10.0), ("Heartbeat", 1.0), ("total", 11.0)].map(|(name, n)| (name.to_owned(), n));
        assert_eq!(per_saga, BTreeMap::from(expected));
    }
}
