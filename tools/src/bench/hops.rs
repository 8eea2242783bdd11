//! A saga's latency, hop by hop: each open-loop saga's causal path from the
//! request to its terminal history row, rebuilt from timestamps the stack
//! keeps anyway, and the time spent in each hop.
//!
//! The path is walked backwards. The terminal history row was written by a
//! transaction of the order service, and that transaction's inbox row (the
//! same `xmin`; inbox and history rows are never updated) names the event it
//! handled; of several (a worker handles what waits in one transaction), the
//! one received last, which the transaction waited for. That event's outbox row was inserted by the transaction that
//! handled the saga's event before it, in whichever service's database: the
//! inbox row there whose `processed_at` equals the outbox row's `created_at`
//! (both are `now()`, the transaction's start; an outbox row's own `xmin` is
//! the relay's, which marks it published). And so on, until the outbox row
//! the order's own creation wrote (`created_at` equal to the order's).
//! Along the way:
//!
//! | hop | from | to |
//! |---|---|---|
//! | request | the order's intended send time | `orders.created_at` (its transaction's start) |
//! | transaction | the inbox row's `processed_at` (its transaction's start) | its commit (`pg_xact_commit_timestamp`); the last one ends at the terminal row's `at` |
//! | outbox | the commit that wrote the event | the Kafka timestamp the relay's producer gave it |
//! | broker | the Kafka timestamp | the consumer's receiving loop took it (`inbox.received_at`) |
//! | worker | received | the handling transaction started |
//!
//! The hops of a path add up to the saga's latency as the benchmark measures
//! it (intended send time to the terminal row's `at`). Kafka timestamps have
//! a millisecond's resolution, so an outbox or broker hop can be off by up to
//! one; a negative one is counted as zero. Off the path: when the gateway
//! answered the request, and each event's commit until the relay marked it
//! acknowledged (`outbox.published_at`).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use saga_runtime::{inbox, outbox};
use saga_stack::StackConfig;
use uuid::Uuid;

use super::load::Placed;
use super::observe;
use super::report::{HopStats, Hops};

/// What a hop is, for the summary and the picture: the hops of a path summed by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Request,
    Transaction,
    Outbox,
    Broker,
    Worker,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Request, Kind::Transaction, Kind::Outbox, Kind::Broker, Kind::Worker];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Request => "request: gateway until CreateOrder begins",
            Kind::Transaction => "transactions, to their commit",
            Kind::Outbox => "outbox: commit until the producer has it",
            Kind::Broker => "broker: producer until a consumer has it",
            Kind::Worker => "waiting for a worker",
        }
    }
}

/// An event as its writer's outbox has it.
struct Written {
    database: usize,
    event_type: String,
    /// Its transaction's start.
    created: DateTime<Utc>,
    published: Option<DateTime<Utc>>,
}

/// An event as one consumer's inbox has it.
#[derive(Clone)]
struct Handled {
    database: usize,
    event_id: Uuid,
    xid: i64,
    committed: Option<DateTime<Utc>>,
    produced: Option<DateTime<Utc>>,
    received: Option<DateTime<Utc>>,
    processed: DateTime<Utc>,
}

/// An order's creation and its end, from the order database.
#[derive(Clone, Copy)]
struct Order {
    /// `CreateOrder`'s transaction: its start and its commit.
    created: DateTime<Utc>,
    created_committed: Option<DateTime<Utc>>,
    /// The terminal history row: its `at` and its transaction.
    ended: DateTime<Utc>,
    ended_xid: i64,
}

/// What the databases hold about a phase's sagas.
#[derive(Default)]
struct Rows {
    /// Service names, by database index.
    services: Vec<String>,
    order_database: usize,
    written: HashMap<Uuid, Written>,
    /// Per saga, every consumer's inbox row of its events.
    handled: HashMap<Uuid, Vec<Handled>>,
    orders: HashMap<Uuid, Order>,
}

/// One hop of one saga's path.
#[derive(Debug, Clone, PartialEq)]
pub struct Hop {
    pub name: String,
    pub kind: Kind,
    pub micros: i64,
}

/// One saga's path, from the request to the terminal row, and the relay's
/// acknowledgements beside it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Path {
    pub hops: Vec<Hop>,
    pub beside: Vec<Hop>,
}

impl Path {
    fn total(&self) -> i64 {
        self.hops.iter().map(|h| h.micros).sum()
    }
}

/// The hops of `placed`'s sagas (one phase).
pub async fn measure(config: &StackConfig, placed: &[Placed]) -> anyhow::Result<Hops> {
    let rows = read(config, placed).await?;
    let paths: Vec<Path> = placed.iter().filter_map(|p| path(&rows, p)).collect();
    Ok(summarise(&paths, placed.len()))
}

async fn read(config: &StackConfig, placed: &[Placed]) -> anyhow::Result<Rows> {
    let orders: Vec<Uuid> = placed.iter().map(|p| p.order_id).collect();
    let keys: Vec<String> = orders.iter().map(Uuid::to_string).collect();
    let services = saga_stack::config::services();
    let mut rows = Rows {
        services: services.iter().map(|s| s.name.to_owned()).collect(),
        order_database: services.iter().position(|s| s.name == "order").unwrap_or_default(),
        ..Rows::default()
    };
    let mut connections = Vec::with_capacity(services.len());
    let mut saga_of: HashMap<Uuid, Uuid> = HashMap::new();
    for (database, service) in services.iter().enumerate() {
        let mut conn = observe::connect(config, &service.database()).await?;
        for w in outbox::written_with_keys(&mut conn, &keys).await? {
            let Ok(saga) = w.partition_key.parse() else { continue };
            saga_of.insert(w.event_id, saga);
            let written =
                Written { database, event_type: w.event_type, created: w.created_at, published: w.published_at };
            rows.written.insert(w.event_id, written);
        }
        connections.push(conn);
    }
    let events: Vec<Uuid> = saga_of.keys().copied().collect();
    for (database, conn) in connections.iter_mut().enumerate() {
        for d in inbox::deliveries(conn, &events).await? {
            let Some(saga) = saga_of.get(&d.event_id) else { continue };
            let handled = Handled {
                database,
                event_id: d.event_id,
                xid: d.xid,
                committed: d.committed_at,
                produced: d.produced_at,
                received: d.received_at,
                processed: d.processed_at,
            };
            rows.handled.entry(*saga).or_default().push(handled);
        }
    }
    for t in order_store::timelines(&mut connections[rows.order_database], &orders).await? {
        let order = Order {
            created: t.created_at,
            created_committed: t.created_committed,
            ended: t.ended_at,
            ended_xid: t.ended_xid,
        };
        rows.orders.insert(t.order_id, order);
    }
    Ok(rows)
}

fn micros(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    (to - from).num_microseconds().unwrap_or(i64::MAX).max(0)
}

/// The longest path a saga of this spec can take has fewer events than
/// this: a walk longer than that has gone round in a circle.
const MOST_EVENTS: usize = 32;

/// One saga's path, or `None` when it cannot be followed (a row missing, a
/// commit time not kept, an event handled apart from its saga's transaction).
fn path(rows: &Rows, placed: &Placed) -> Option<Path> {
    let saga = placed.order_id;
    let order = rows.orders.get(&saga)?;
    let handled = rows.handled.get(&saga)?;
    let mut current =
        last_received(handled.iter().filter(|h| h.database == rows.order_database && h.xid == order.ended_xid))?;
    let (mut reversed, mut beside) = (Vec::new(), Vec::new());
    let mut end = order.ended;
    for step in 0..MOST_EVENTS {
        let written = rows.written.get(&current.event_id)?;
        let service = &rows.services[current.database];
        let event = &written.event_type;
        let transaction = match step {
            0 => format!("{event}: {service} transaction, to the terminal row"),
            _ => format!("{event}: {service} transaction"),
        };
        let (produced, received) = (current.produced?, current.received?);
        reversed.push(Hop { name: transaction, kind: Kind::Transaction, micros: micros(current.processed, end) });
        reversed.push(Hop {
            name: format!("{event}: {service} waits for a worker"),
            kind: Kind::Worker,
            micros: micros(received, current.processed),
        });
        reversed.push(Hop {
            name: format!("{event}: broker to {service}"),
            kind: Kind::Broker,
            micros: micros(produced, received),
        });
        // The transaction that wrote the event: the order's creation, or the one that
        // handled the saga's event before it in the writer's database.
        let creation = written.database == rows.order_database && written.created == order.created;
        let writer = match creation {
            true => None,
            false => Some(last_received(
                handled.iter().filter(|h| h.database == written.database && h.processed == written.created),
            )?),
        };
        let committed = match writer {
            Some(writer) => writer.committed?,
            None => order.created_committed?,
        };
        let writer_name = &rows.services[written.database];
        reversed.push(Hop {
            name: format!("{event}: {writer_name}'s outbox until produced"),
            kind: Kind::Outbox,
            micros: micros(committed, produced),
        });
        if let Some(published) = written.published {
            beside.push(Hop {
                name: format!("{event}: {writer_name}'s outbox until acknowledged"),
                kind: Kind::Outbox,
                micros: micros(committed, published),
            });
        }
        let Some(writer) = writer else {
            reversed.push(Hop {
                name: "CreateOrder transaction".into(),
                kind: Kind::Transaction,
                micros: micros(order.created, committed),
            });
            let since = DateTime::<Utc>::from(placed.since);
            reversed.push(Hop {
                name: "request until CreateOrder begins".into(),
                kind: Kind::Request,
                micros: micros(since, order.created),
            });
            beside.push(Hop {
                name: "request until the gateway answered".into(),
                kind: Kind::Request,
                micros: micros(since, DateTime::<Utc>::from(placed.answered)),
            });
            reversed.reverse();
            beside.reverse();
            return Some(Path { hops: reversed, beside });
        };
        (current, end) = (writer, committed);
    }
    None
}

/// Of the saga's events one transaction handled (a worker that finds several
/// waiting handles them in one), the one that arrived last: the transaction
/// could not begin before it, so it is the one on the saga's path.
fn last_received<'a>(handled: impl Iterator<Item = &'a Handled>) -> Option<&'a Handled> {
    handled.max_by_key(|h| (h.received, h.produced))
}

/// Quantiles and means of each hop and of each kind over `paths`.
fn summarise(paths: &[Path], placed: usize) -> Hops {
    // The slowest 1 % by their whole latency (at least one saga): which hops grew there.
    let mut by_total: Vec<usize> = (0..paths.len()).collect();
    by_total.sort_by_key(|&i| std::cmp::Reverse(paths[i].total()));
    let mut slowest = vec![false; paths.len()];
    for &i in by_total.iter().take(paths.len().div_ceil(100)) {
        slowest[i] = true;
    }
    let totals: Vec<i64> = paths.iter().map(Path::total).collect();
    let slowest_totals: Vec<i64> = totals.iter().zip(&slowest).filter(|(_, s)| **s).map(|(t, _)| *t).collect();

    // Hops in the order of the longest path, then those only shorter paths have.
    let mut by_length: Vec<&Path> = paths.iter().collect();
    by_length.sort_by_key(|p| std::cmp::Reverse(p.hops.len()));
    let mut order: Vec<(String, bool)> = Vec::new();
    for path in &by_length {
        for (hop, on_path) in path.hops.iter().map(|h| (h, true)).chain(path.beside.iter().map(|h| (h, false))) {
            if !order.iter().any(|(name, _)| *name == hop.name) {
                order.push((hop.name.clone(), on_path));
            }
        }
    }
    let mut samples: HashMap<&str, (Vec<i64>, Vec<i64>)> = HashMap::new();
    let mut kinds: BTreeMap<Kind, (Vec<i64>, Vec<i64>)> = Kind::ALL.iter().map(|k| (*k, Default::default())).collect();
    for (path, slow) in paths.iter().zip(&slowest) {
        let mut per_kind: BTreeMap<Kind, i64> = BTreeMap::new();
        for hop in &path.hops {
            *per_kind.entry(hop.kind).or_default() += hop.micros;
        }
        for hop in path.hops.iter().chain(&path.beside) {
            let (all, tail) = samples.entry(hop.name.as_str()).or_default();
            all.push(hop.micros);
            if *slow {
                tail.push(hop.micros);
            }
        }
        for (kind, (all, tail)) in &mut kinds {
            let micros = per_kind.get(kind).copied().unwrap_or(0);
            all.push(micros);
            if *slow {
                tail.push(micros);
            }
        }
    }
    let hops = order
        .iter()
        .filter_map(|(name, on_path)| {
            let (all, tail) = samples.get(name.as_str())?;
            Some(stats(name, *on_path, all, tail))
        })
        .collect();
    let kinds = kinds.iter().map(|(kind, (all, tail))| stats(kind.name(), true, all, tail)).collect();
    Hops {
        sagas: paths.len() as u64,
        unlinked: placed.saturating_sub(paths.len()) as u64,
        total: stats("the whole saga", true, &totals, &slowest_totals),
        kinds,
        hops,
    }
}

fn stats(name: &str, on_path: bool, all: &[i64], tail: &[i64]) -> HopStats {
    let mut sorted = all.to_vec();
    sorted.sort_unstable();
    let ms = |micros: f64| micros / 1000.0;
    let mean = |values: &[i64]| match values.len() {
        0 => 0.0,
        n => values.iter().map(|v| *v as f64).sum::<f64>() / n as f64,
    };
    HopStats {
        name: name.to_owned(),
        on_path,
        sagas: all.len() as u64,
        p50: ms(quantile(&sorted, 0.50) as f64),
        p95: ms(quantile(&sorted, 0.95) as f64),
        p99: ms(quantile(&sorted, 0.99) as f64),
        mean: ms(mean(all)),
        mean_in_slowest: (!tail.is_empty()).then(|| ms(mean(tail))),
    }
}

/// The value at quantile `q` of sorted `values` (nearest rank); 0 when empty.
fn quantile(sorted: &[i64], q: f64) -> i64 {
    match sorted.len() {
        0 => 0,
        n => sorted[((q * n as f64).ceil() as usize).clamp(1, n) - 1],
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    const ORDER: usize = 0;
    const PRODUCT: usize = 1;
    const USER: usize = 2;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + ms).expect("a time")
    }

    fn micros_of(path: &Path, name: &str) -> i64 {
        path.hops.iter().find(|h| h.name == name).map(|h| h.micros).unwrap_or_else(|| panic!("no hop {name}"))
    }

    /// One saga: the order is created (its transaction starts at 5 ms and
    /// commits at 8), product handles `order.created` (xid 20) and replies,
    /// the order service handles the reply (xid 30) and writes the terminal
    /// row; the user service also handles the reply, off the path.
    fn world() -> (Rows, Placed) {
        let saga = Uuid::from_u128(1);
        let (created, reply) = (Uuid::from_u128(11), Uuid::from_u128(12));
        let mut rows = Rows {
            services: vec!["order".into(), "product".into(), "user".into()],
            order_database: ORDER,
            ..Rows::default()
        };
        let written = |database, event_type: &str, created, published| Written {
            database,
            event_type: event_type.into(),
            created: at(created),
            published: Some(at(published)),
        };
        rows.written.insert(created, written(ORDER, "order.created", 5, 12));
        rows.written.insert(reply, written(PRODUCT, "stock.reserved", 14, 23));
        let handled = |database, event_id, xid, committed, produced, received, processed| Handled {
            database,
            event_id,
            xid,
            committed: Some(at(committed)),
            produced: Some(at(produced)),
            received: Some(at(received)),
            processed: at(processed),
        };
        rows.handled.insert(
            saga,
            vec![
                handled(PRODUCT, created, 20, 20, 10, 13, 14),
                handled(USER, reply, 25, 27, 21, 22, 24),
                handled(ORDER, reply, 30, 31, 21, 22, 26),
            ],
        );
        rows.orders
            .insert(saga, Order { created: at(5), created_committed: Some(at(8)), ended: at(29), ended_xid: 30 });
        let since = SystemTime::from(at(0));
        (rows, Placed { order_id: saga, since, answered: since + Duration::from_millis(9) })
    }

    #[test]
    fn a_sagas_path_is_followed_back_to_its_request_and_adds_up_to_its_latency() {
        let (rows, placed) = world();
        let path = path(&rows, &placed).expect("followed");
        let names: Vec<&str> = path.hops.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "request until CreateOrder begins",
                "CreateOrder transaction",
                "order.created: order's outbox until produced",
                "order.created: broker to product",
                "order.created: product waits for a worker",
                "order.created: product transaction",
                "stock.reserved: product's outbox until produced",
                "stock.reserved: broker to order",
                "stock.reserved: order waits for a worker",
                "stock.reserved: order transaction, to the terminal row",
            ]
        );
        assert_eq!(path.total(), 29_000, "intended send time to the terminal row's at");
        assert_eq!(micros_of(&path, "CreateOrder transaction"), 3_000);
        assert_eq!(micros_of(&path, "order.created: broker to product"), 3_000);
        assert_eq!(micros_of(&path, "order.created: product transaction"), 6_000);
        assert_eq!(micros_of(&path, "stock.reserved: order transaction, to the terminal row"), 3_000);
        let beside: Vec<(&str, i64)> = path.beside.iter().map(|h| (h.name.as_str(), h.micros)).collect();
        assert_eq!(
            beside,
            [
                ("request until the gateway answered", 9_000),
                ("order.created: order's outbox until acknowledged", 4_000),
                ("stock.reserved: product's outbox until acknowledged", 3_000),
            ]
        );
    }

    #[test]
    fn of_a_sagas_events_handled_in_one_transaction_the_path_goes_through_the_last_received() {
        let (mut rows, placed) = world();
        // The order service was behind: the transaction that handled the reply also
        // handled an earlier event of the saga, received before the reply.
        let early = Uuid::from_u128(13);
        rows.written.insert(
            early,
            Written { database: PRODUCT, event_type: "stock.held".into(), created: at(14), published: None },
        );
        let batch = Handled {
            database: ORDER,
            event_id: early,
            xid: 30,
            committed: Some(at(31)),
            produced: Some(at(16)),
            received: Some(at(17)),
            processed: at(26),
        };
        rows.handled.values_mut().for_each(|h| h.insert(0, batch.clone()));
        let path = path(&rows, &placed).expect("followed");
        assert_eq!(path.total(), 29_000);
        let names: Vec<&str> = path.hops.iter().map(|h| h.name.as_str()).collect();
        assert!(names.contains(&"stock.reserved: order transaction, to the terminal row"), "{names:?}");
        assert!(!names.iter().any(|n| n.starts_with("stock.held")), "{names:?}");
    }

    #[test]
    fn a_path_that_breaks_off_is_not_followed() {
        let (mut rows, placed) = world();
        // The reply was handled, but not by the transaction that wrote the terminal row.
        rows.orders.values_mut().for_each(|o| o.ended_xid = 31);
        assert_eq!(path(&rows, &placed), None);
        // A commit time PostgreSQL did not keep.
        let (mut rows, placed) = world();
        rows.handled.values_mut().flatten().for_each(|h| h.committed = None);
        assert_eq!(path(&rows, &placed), None);
        // An event whose writer handled nothing of this saga at that moment.
        let (mut rows, placed) = world();
        rows.written.values_mut().filter(|w| w.database == PRODUCT).for_each(|w| w.created = at(15));
        assert_eq!(path(&rows, &placed), None);
    }

    #[test]
    fn the_kinds_add_up_and_the_slowest_sagas_show_which_hop_grew() {
        let hop = |name: &str, kind, ms: i64| Hop { name: name.into(), kind, micros: ms * 1000 };
        let saga = |queue: i64| Path {
            hops: vec![
                hop("request", Kind::Request, 2),
                hop("tx", Kind::Transaction, 3),
                hop("queue", Kind::Worker, queue),
            ],
            beside: vec![],
        };
        // 99 quick sagas and one that waited 100 ms for a worker.
        let paths: Vec<Path> = (0..99).map(|_| saga(1)).chain([saga(100)]).collect();
        let hops = summarise(&paths, 101);
        assert_eq!((hops.sagas, hops.unlinked), (100, 1));
        let kind = |kind: Kind| hops.kinds.iter().find(|k| k.name == kind.name()).expect("every kind");
        assert_eq!(kind(Kind::Worker).mean_in_slowest, Some(100.0));
        assert_eq!(kind(Kind::Transaction).mean_in_slowest, Some(3.0));
        assert_eq!(kind(Kind::Broker).mean, 0.0);
        let means: f64 = hops.kinds.iter().map(|k| k.mean).sum();
        assert!((means - hops.total.mean).abs() < 1e-9, "{means} vs {}", hops.total.mean);
        assert_eq!(hops.total.mean_in_slowest, Some(105.0));
        let names: Vec<&str> = hops.hops.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["request", "tx", "queue"]);
    }
}
