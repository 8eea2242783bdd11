//! `cargo xtask chaos`: faults under load on a stack of its own. Each
//! scenario offers orders open loop (by default at half the measured
//! maximum), breaks one component, brings it back, and then checks what a
//! user of the platform cares about: every accepted order ended, money and
//! stock are conserved, nothing was dead-lettered or placed twice, and the
//! orders placed after the platform recovered ended as they would have
//! without the fault. It records how long goodput took to come back and how
//! deep it fell, with a plot per scenario, in RELIABILITY.md.

pub mod client;
pub mod report;
pub mod rollout;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use nix::sys::signal::Signal;
use tokio::time::Instant;

use crate::bench::load::{self, Api, World};
use crate::bench::observe;
use saga_stack::config::services;
use saga_stack::{Component, StackConfig, UpOptions};

use self::report::{Analysis, ChaosReport, Details, ScenarioReport, Window};
use crate::bench::report::Check;

/// Options of `cargo xtask chaos`.
#[derive(Debug, Clone, clap::Args)]
pub struct ChaosArgs {
    /// Scenarios to run, by name (default: all of them); `--list` shows them.
    #[arg(long, value_delimiter = ',')]
    pub scenarios: Option<Vec<String>>,
    /// List the scenarios and exit.
    #[arg(long)]
    pub list: bool,
    /// Offered load as a share of the maximum measured first (closed loop).
    #[arg(long, default_value_t = 0.5)]
    pub load: f64,
    /// Offered load in orders per second, instead of measuring the maximum.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seconds of load before the fault.
    #[arg(long, default_value_t = 15)]
    pub before: u64,
    /// Seconds of load after the component is back.
    #[arg(long, default_value_t = 45)]
    pub after: u64,
    #[command(flatten)]
    pub run: crate::bench::RunOptions,
    /// The stack's shape; the replicated scenarios need `--replicas 2 --brokers 3`.
    #[command(flatten)]
    pub shape: saga_stack::config::ShapeArgs,
    /// The git revision the rollout scenarios start from: the saga's previous version,
    /// whose services are built in a worktree of their own.
    #[arg(long, default_value = rollout::DEFAULT_FROM)]
    pub from: String,
}

/// What a scenario breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Postgres,
    Redis,
    Kafka,
    Service(&'static str),
    Gateway,
}

/// What a scenario does to the stack.
#[derive(Debug, Clone)]
enum Fault {
    /// `signal` to `target`, which stays down for `down` before it is started
    /// again (the supervisor's part).
    Restart { target: Target, signal: Signal, down: Duration },
    /// kill -9 of the Kafka node that leads most partitions of the saga's
    /// topics, started again after `down`.
    KillLeaderBroker { down: Duration },
    /// kill -9 of one instance of every backend service at once, started
    /// again after `down`.
    KillOneReplicaEach { down: Duration },
    /// Every instance of every backend service stopped with SIGTERM and
    /// started again, one at a time, each back before the next (a rolling deploy).
    RollingRestart,
    /// The stack starts at the previous version of the saga (`--from`); each service in
    /// the order is replaced by this workspace's build, instance by instance
    /// ([`rollout`]).
    Rollout { order: &'static [&'static str] },
}

/// One scenario: a fault, and whether it needs a replicated stack.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub what: String,
    fault: Fault,
}

impl Scenario {
    /// How long what it breaks stays down (a rolling restart keeps each instance down briefly).
    fn down(&self) -> Duration {
        match self.fault {
            Fault::Restart { down, .. } | Fault::KillLeaderBroker { down } | Fault::KillOneReplicaEach { down } => down,
            Fault::RollingRestart | Fault::Rollout { .. } => Duration::ZERO,
        }
    }

    /// Needs two instances of each service and three Kafka nodes.
    pub fn replicated(&self) -> bool {
        !matches!(self.fault, Fault::Restart { .. })
    }

    /// A planned change: clients must not notice it at all.
    fn planned(&self) -> bool {
        matches!(self.fault, Fault::RollingRestart | Fault::Rollout { .. })
    }

    /// Starts from the previous version of the saga, on a fresh stack of its own.
    fn rollout(&self) -> bool {
        matches!(self.fault, Fault::Rollout { .. })
    }
}

/// Every scenario of the suite, in the order they run.
pub fn scenarios() -> Vec<Scenario> {
    let scenario = |name: String, what: String, target, signal, down_secs| Scenario {
        name,
        what,
        fault: Fault::Restart { target, signal, down: Duration::from_secs(down_secs) },
    };
    let mut all: Vec<Scenario> = services()
        .into_iter()
        .map(|s| {
            let what = format!("kill -9 of the {} service, started again after 1 s", s.name);
            scenario(format!("kill-{}", s.name), what, Target::Service(s.name), Signal::SIGKILL, 1)
        })
        .collect();
    all.extend([
        scenario(
            "kill-broker".into(),
            "kill -9 of the Kafka broker, started again after 30 s".into(),
            Target::Kafka,
            Signal::SIGKILL,
            30,
        ),
        scenario(
            "postgres-5s".into(),
            "PostgreSQL immediate stop, started again after 5 s".into(),
            Target::Postgres,
            Signal::SIGQUIT,
            5,
        ),
        scenario(
            "postgres-60s".into(),
            "PostgreSQL immediate stop, started again after 60 s".into(),
            Target::Postgres,
            Signal::SIGQUIT,
            60,
        ),
        scenario(
            "redis-restart".into(),
            "Redis stopped (SIGTERM) and started again at once".into(),
            Target::Redis,
            Signal::SIGTERM,
            0,
        ),
        scenario(
            "kill-gateway".into(),
            "kill -9 of the gateway, started again after 1 s".into(),
            Target::Gateway,
            Signal::SIGKILL,
            1,
        ),
        Scenario {
            name: "kill-leader-broker".into(),
            what: "kill -9 of the Kafka node leading most saga partitions, started again after 10 s \
                   (replicated stack)"
                .into(),
            fault: Fault::KillLeaderBroker { down: Duration::from_secs(10) },
        },
        Scenario {
            name: "kill-replicas".into(),
            what: "kill -9 of one instance of every service at once, started again after 1 s (replicated stack)".into(),
            fault: Fault::KillOneReplicaEach { down: Duration::from_secs(1) },
        },
        Scenario {
            name: "rolling-restart".into(),
            what: "every instance of every service restarted with SIGTERM, one at a time (replicated stack)".into(),
            fault: Fault::RollingRestart,
        },
        // The orders `cargo xtask spec diff` proves sound for the shipping step: its own
        // plan, and the worst one, the order service (the status owner) as early as the
        // proof allows, so that its new sagas pass through old product and user services,
        // which drop the saga context, for longest.
        Scenario {
            name: "rollout-plan".into(),
            what: "from the previous version (--from) to this one, one instance at a time: product, user, \
                   shipping, order (spec diff's plan; replicated stack)"
                .into(),
            fault: Fault::Rollout { order: &["product", "user", "shipping", "order"] },
        },
        Scenario {
            name: "rollout-worst".into(),
            what: "from the previous version (--from) to this one, one instance at a time: shipping, order, \
                   user, product (the owner as early as the proof allows; replicated stack)"
                .into(),
            fault: Fault::Rollout { order: &["shipping", "order", "user", "product"] },
        },
    ]);
    all
}

fn component(target: Target) -> anyhow::Result<Component> {
    Ok(match target {
        Target::Postgres => Component::Postgres,
        Target::Redis => Component::Redis,
        Target::Kafka => Component::Kafka(0),
        Target::Gateway => Component::Gateway,
        Target::Service(name) => Component::Service(
            services().into_iter().find(|s| s.name == name).with_context(|| format!("no service {name}"))?,
            0,
        ),
    })
}

/// The verdict on one scenario: the numbers, and each check with whether it holds.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub scenario: Scenario,
    pub analysis: Analysis,
    pub checks: Vec<(String, bool)>,
    pub details: Details,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|(_, holds)| *holds)
    }
}

/// The chaos suite's own stack (`.state/chaos`, port base 26000; override
/// with SAGA_CHAOS_STATE_DIR / SAGA_CHAOS_PORT_BASE).
fn chaos_config(release: bool) -> anyhow::Result<StackConfig> {
    crate::bench::own_stack_config("chaos", 26000, release)
}

/// Starts a fresh chaos stack, runs the chosen scenarios, stops the stack.
pub async fn run(args: ChaosArgs) -> anyhow::Result<()> {
    let all = scenarios();
    if args.list {
        for s in &all {
            println!("{:<19} {}", s.name, s.what);
        }
        return Ok(());
    }
    let config = args.shape.apply(chaos_config(!args.run.debug)?);
    let replicated = config.shape.replicas > 1 && config.shape.brokers > 1;
    let chosen: Vec<Scenario> = match &args.scenarios {
        // The replicated scenarios run on a replicated stack only.
        // The rollout scenarios build another version first: only when named.
        None => all.into_iter().filter(|s| (replicated || !s.replicated()) && !s.rollout()).collect(),
        Some(names) => names
            .iter()
            .map(|name| {
                all.iter().find(|s| &s.name == name).cloned().with_context(|| {
                    let known: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
                    format!("unknown scenario {name:?}; the scenarios are {known:?}")
                })
            })
            .collect::<anyhow::Result<_>>()?,
    };
    if let Some(s) = chosen.iter().find(|s| s.replicated() && !replicated) {
        bail!("scenario {} needs a replicated stack: add --replicas 2 --brokers 3", s.name);
    }
    saga_stack::down(&config);
    saga_stack::purge(&config)?;
    let profile = if config.release { "release" } else { "debug" };
    let previous = match chosen.iter().any(Scenario::rollout) {
        true => Some(rollout::build(&config, &args.from)?),
        false => None,
    };
    println!("chaos: building ({profile}) and starting the stack in {}", config.state_dir.display());
    let outcome = match saga_stack::up(&config, UpOptions { services: true, build: true }).await {
        Ok(()) => suite(&config, &args, &chosen, previous.as_ref()).await,
        Err(error) => Err(error),
    };
    let stopped = saga_stack::down(&config);
    println!("chaos stack stopped: {}", stopped.join(", "));
    let (rate, max, outcomes) = outcome?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let plots = write_plots(&config.root, &stamp, &outcomes)?;
    let json_path = write_json(&config, &stamp, &args, rate, max, &outcomes)?;
    println!("results: {}", json_path.display());
    let markdown = markdown(&config, &args, rate, max, &outcomes, &plots);
    println!("\n{markdown}");
    let failed: Vec<&str> = outcomes.iter().filter(|o| !o.ok()).map(|o| o.scenario.name.as_str()).collect();
    if !args.run.no_record {
        crate::bench::append_markdown(&config.root.join("RELIABILITY.md"), &markdown)?;
        println!("appended to RELIABILITY.md");
    }
    if !failed.is_empty() {
        bail!("checks failed in: {}", failed.join(", "));
    }
    Ok(())
}

/// Sets the world up, finds the rate, runs each scenario.
async fn suite(
    config: &StackConfig,
    args: &ChaosArgs,
    chosen: &[Scenario],
    previous: Option<&rollout::Previous>,
) -> anyhow::Result<(f64, Option<f64>, Vec<Outcome>)> {
    let api = Api::new(&config.gateway_url())?;
    let mut measured: Option<(Arc<World>, observe::Totals, f64, Option<f64>)> = None;
    let mut outcomes = Vec::new();
    for scenario in chosen {
        // A rollout starts from the previous version, on a fresh stack: a world and a
        // maximum of its own, measured on that version.
        if scenario.rollout() {
            let previous = previous.context("the previous version was not built")?;
            println!("chaos: {}: a fresh stack at {} ({})", scenario.name, args.from, &previous.revision[..12]);
            rollout::start_previous(config, previous).await?;
            measured = None;
        }
        let (world, totals, rate, max) = match &measured {
            Some(m) => m.clone(),
            None => {
                let m = measure(config, &api, args).await?;
                measured = (!scenario.rollout()).then(|| m.clone());
                m
            }
        };
        println!("chaos: {} ({}), {rate}/s offered", scenario.name, scenario.what);
        let load = Load { rate, before: args.before, after: args.after };
        let outcome = run_scenario(config, &api, world.clone(), totals, scenario, load, previous).await?;
        println!(
            "  {}: recovery {}, dip to {:.0} %, {} accepted, {} cancelled, {} shed, {} changed after recovery",
            if outcome.ok() { "ok" } else { "FAILED" },
            outcome.analysis.recovery_seconds.map_or("-".to_owned(), |r| format!("{r:.0} s")),
            100.0 * outcome.analysis.dip,
            outcome.analysis.accepted,
            outcome.analysis.cancelled,
            outcome.analysis.shed,
            outcome.analysis.changed_after_recovery,
        );
        for (check, holds) in &outcome.checks {
            if !holds {
                println!("  does not hold: {check}");
            }
        }
        outcomes.push((rate, max, outcome));
    }
    // The report names one rate and maximum: the first scenario's (a rollout's are
    // measured on the previous version, and each scenario's line gives its own rate).
    let (rate, max) = outcomes.first().map_or((0.0, None), |(rate, max, _)| (*rate, *max));
    Ok((rate, max, outcomes.into_iter().map(|(_, _, o)| o).collect()))
}

/// The world of a stack just started (users and products), its money and stock before
/// any load, and the rate to offer: `--rate`, or `--load` of the maximum measured now.
async fn measure(
    config: &StackConfig,
    api: &Api,
    args: &ChaosArgs,
) -> anyhow::Result<(Arc<World>, observe::Totals, f64, Option<f64>)> {
    let (email, password) = saga_stack::admin_credentials();
    let world = Arc::new(load::setup(api, (&email, &password), 100, 50).await?);
    // The invariants compare with the money and stock there were before any load.
    let totals = observe::totals(config).await?;
    let (rate, max) = match args.rate {
        Some(rate) => (rate, None),
        None => {
            println!("chaos: measuring the maximum (closed loop, 32 clients, 20 s)");
            let phase = load::closed_loop(api, world.clone(), 32, Duration::from_secs(20)).await;
            let max = phase.rate();
            println!("  {max:.1} sagas/s");
            ((max * args.load * 10.0).round() / 10.0, Some(max))
        }
    };
    Ok((world, totals, rate, max))
}

/// The load of one scenario: orders per second, and seconds of it before
/// the fault and after the component is back.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub rate: f64,
    pub before: u64,
    pub after: u64,
}

/// One scenario on a running stack: load, fault, recovery, then the checks.
/// `totals`: the money and stock before any load.
pub async fn run_scenario(
    config: &StackConfig,
    api: &Api,
    world: Arc<World>,
    totals: observe::Totals,
    scenario: &Scenario,
    Load { rate, before, after }: Load,
    previous: Option<&rollout::Previous>,
) -> anyhow::Result<Outcome> {
    // Whatever the last scenario left in flight ends first.
    observe::drain(config, Duration::from_secs(180)).await?;
    let dead_before = dead_letters(config).await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let start = Instant::now();
    let wall_start = SystemTime::now();
    let load = tokio::spawn({
        let (api, world) = (api.clone(), world.clone());
        async move { client::run(&api, world, rate, start, wall_start, stopped).await }
    });
    tokio::time::sleep(Duration::from_secs(before)).await;
    let fault_start = start.elapsed();
    let (down_for, also_restarted) = inject(config, scenario, previous).await?;
    let fault_end = fault_start + down_for;
    // A long outage leaves a long backlog: watch at least twice as long as it lasted.
    let after = Duration::from_secs(after).max(scenario.down() * 2);
    tokio::time::sleep_until(start + fault_end + after).await;
    let load_end = start.elapsed();
    let _ = stop.send(true);
    let records = load.await.context("the load generator panicked")?;
    let window = Window {
        fault_start: fault_start.as_secs_f64(),
        fault_end: fault_end.as_secs_f64(),
        load_end: load_end.as_secs_f64(),
    };
    let analysis = report::analyse(&records, rate, window);
    let drained = observe::drain(config, Duration::from_secs(180)).await?;
    let invariants = observe::invariants(config, totals).await?;
    let dead_after = dead_letters(config).await?;
    let dead = dead_after - dead_before;
    let duplicates = duplicate_orders(config).await?;
    let checks = vec![
        ("every accepted order is terminal".to_owned(), analysis.unfinished == 0),
        ("money and stock conserved, one debit per completed order".to_owned(), invariants.ok),
        ("no message dead-lettered".to_owned(), dead == 0),
        (
            "no key answered with two orders, no two orders for one key".to_owned(),
            analysis.duplicate_keys == 0 && duplicates == 0,
        ),
        (
            "every order sent after the recovery ended as without the fault".to_owned(),
            analysis.recovery_seconds.is_some() && analysis.changed_after_recovery == 0,
        ),
    ];
    let failed_requests: u32 = records.iter().map(|r| r.failed_requests).sum();
    let mut checks = checks;
    if scenario.planned() {
        checks.push(("no client request failed".to_owned(), failed_requests == 0));
        checks.push(("no order cancelled".to_owned(), analysis.cancelled == 0));
    }
    if scenario.rollout() {
        let (completed, weighed) = rollout::shipped_after(config, &records, fault_end).await?;
        checks.push((
            format!(
                "every order placed after the rollout and completed went through shipping ({weighed} of {completed})"
            ),
            completed > 0 && weighed == completed,
        ));
    }
    let first_errors: Vec<String> =
        records.iter().filter(|r| r.status.is_none()).filter_map(|r| r.last_error.clone()).take(3).collect();
    // What the client was told when a request failed (the last such answer of
    // an order), with when the order was sent: to tell a gap in the fault
    // handling from the client's own trouble.
    let failed_request_errors: Vec<String> = records
        .iter()
        .filter(|r| r.failed_requests > 0)
        .filter_map(|r| r.last_error.as_deref().map(|e| format!("at {:.1} s: {e}", r.intended.as_secs_f64())))
        .take(5)
        .collect();
    let details = Details {
        drain_seconds: drained.as_secs_f64(),
        invariants,
        dead_lettered: dead,
        duplicate_orders_in_database: duplicates,
        also_restarted,
        post_attempts: records.iter().map(|r| u64::from(r.attempts)).sum::<u64>(),
        failed_client_requests: failed_requests,
        first_errors_of_orders_without_an_end: first_errors,
        failed_request_errors,
    };
    Ok(Outcome { scenario: scenario.clone(), analysis, checks: checks.into_iter().collect(), details })
}

/// Breaks what the scenario breaks, waits while it is down, and starts it
/// again; returns once it answers (the fault's end). Components other than
/// the target that stopped meanwhile (a service that gave up) are named and
/// started again too, after that.
async fn inject(
    config: &StackConfig,
    scenario: &Scenario,
    previous: Option<&rollout::Previous>,
) -> anyhow::Result<(Duration, Vec<String>)> {
    let started = Instant::now();
    match &scenario.fault {
        Fault::Restart { target, signal, down } => {
            restart(config, &[component(*target)?], *signal, *down).await?;
        }
        Fault::KillLeaderBroker { down } => {
            let leader = leading_broker(config).await?;
            println!("  the Kafka node leading most saga partitions is {}", Component::Kafka(leader).name());
            restart(config, &[Component::Kafka(leader)], Signal::SIGKILL, *down).await?;
            // Over once leadership moved back too: that move pauses the partitions again.
            let answered = started.elapsed();
            saga_stack::kafka::leadership_restored(config, Duration::from_secs(120)).await?;
            println!(
                "  the node answered after {:.1} s, leadership was back after {:.1} s",
                answered.as_secs_f64(),
                started.elapsed().as_secs_f64()
            );
        }
        Fault::KillOneReplicaEach { down } => {
            let first: Vec<Component> = services().into_iter().map(|s| Component::Service(s, 0)).collect();
            restart(config, &first, Signal::SIGKILL, *down).await?;
        }
        Fault::Rollout { order } => {
            rollout::replace(config, order, previous.context("the previous version was not built")?).await?;
        }
        Fault::RollingRestart => {
            for service in services() {
                for instance in Component::replicas(config, service) {
                    restart(config, &[instance], Signal::SIGTERM, Duration::ZERO).await?;
                    // Back in its consumer group (static membership: with the partitions it had).
                    saga_stack::kafka::consumer_groups_stable(config, Duration::from_secs(60)).await?;
                }
            }
        }
    }
    let back = started.elapsed();
    let others: Vec<String> = Component::all(config)
        .into_iter()
        .filter(|c| c.tracked(config).running_pid().is_none())
        .map(|c| c.name())
        .collect();
    if !others.is_empty() {
        saga_stack::up(config, UpOptions { services: true, build: false })
            .await
            .context("starting the others again")?;
    }
    Ok((back, others))
}

/// `signal` to every one of `targets`, `down` of nothing, then each started
/// again and answering.
async fn restart(config: &StackConfig, targets: &[Component], signal: Signal, down: Duration) -> anyhow::Result<()> {
    for target in targets {
        let tracked = target.tracked(config);
        let stopped = tokio::task::spawn_blocking(move || tracked.stop(signal, Duration::from_secs(30))).await?;
        if !stopped {
            bail!("{} was not running", target.name());
        }
    }
    tokio::time::sleep(down).await;
    for target in targets {
        saga_stack::start_component(config, *target)
            .await
            .with_context(|| format!("starting {} again", target.name()))?;
    }
    Ok(())
}

/// The Kafka node (its index) that leads the most partitions of the saga's topics.
async fn leading_broker(config: &StackConfig) -> anyhow::Result<u16> {
    let brokers = config.kafka_brokers();
    let leaders = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<i32>> {
        let client: rdkafka::consumer::BaseConsumer =
            saga_runtime::kafka::client(&brokers).set("log_level", "3").create()?;
        let metadata = rdkafka::consumer::Consumer::fetch_metadata(&client, None, Duration::from_secs(10))?;
        let saga_topics: Vec<&str> = saga_generated::topology::TOPICS.iter().map(|t| t.name).collect();
        Ok(metadata
            .topics()
            .iter()
            .filter(|t| saga_topics.contains(&t.name()))
            .flat_map(|t| t.partitions().iter().map(|p| p.leader()))
            .collect())
    })
    .await??;
    let mut counts = std::collections::BTreeMap::<i32, usize>::new();
    for leader in leaders {
        *counts.entry(leader).or_default() += 1;
    }
    let (leader, _) = counts.into_iter().max_by_key(|(_, n)| *n).context("no partition has a leader")?;
    // Node ids are the node's index plus one (see saga_stack::kafka).
    u16::try_from(leader - 1).with_context(|| format!("unexpected Kafka node id {leader}"))
}

/// Messages in every dead-letter topic.
async fn dead_letters(config: &StackConfig) -> anyhow::Result<i64> {
    let brokers = config.kafka_brokers();
    let held = tokio::task::spawn_blocking(move || saga_operator::dlq::held(&brokers, "")).await??;
    Ok(held.values().sum())
}

/// Keys (per customer) the order service holds more than one order for.
async fn duplicate_orders(config: &StackConfig) -> anyhow::Result<i64> {
    use sqlx::Connection as _;
    let mut order = sqlx::PgConnection::connect(&config.postgres_admin_url("order_service")).await?;
    Ok(order_store::duplicate_keys(&mut order).await?)
}

/// The short scenarios `cargo xtask test` runs on its stack, so that CI
/// guards the failure semantics under load, not only at idle: a service
/// killed and PostgreSQL stopped for 5 s, at a rate a debug build carries.
pub async fn guard(config: &StackConfig) -> anyhow::Result<Vec<Outcome>> {
    run_guard(config, &["kill-order", "postgres-5s"]).await
}

/// The `names` scenarios, short, at 8 orders/s, on the running stack of `config`.
async fn run_guard(config: &StackConfig, names: &[&str]) -> anyhow::Result<Vec<Outcome>> {
    let api = Api::new(&config.gateway_url())?;
    let (email, password) = saga_stack::admin_credentials();
    let world = Arc::new(load::setup(&api, (&email, &password), 10, 10).await?);
    let totals = observe::totals(config).await?;
    let mut outcomes = Vec::new();
    for scenario in scenarios().into_iter().filter(|s| names.contains(&s.name.as_str())) {
        println!("chaos guard: {} ({}) at 8 orders/s", scenario.name, scenario.what);
        let load = Load { rate: 8.0, before: 5, after: 20 };
        let outcome = run_scenario(config, &api, world.clone(), totals, &scenario, load, None).await?;
        for (check, holds) in &outcome.checks {
            println!("  {} {check}", if *holds { "ok  " } else { "FAIL" });
        }
        if !outcome.ok() {
            println!("  details: {}", serde_json::to_string(&outcome.details).unwrap_or_default());
            println!("  goodput per second: {:?}, window {:?}", outcome.analysis.goodput, outcome.analysis.window);
        }
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// The replicated scenarios `cargo xtask test` runs on a replicated stack of
/// its own (two instances of each service, three Kafka nodes; `state_dir`
/// and `port_base` beside the test stack), at a rate a debug build carries:
/// the broker leading most partitions killed, one instance of every service
/// killed, and a rolling restart of every instance.
pub async fn guard_replicated(config: &StackConfig) -> anyhow::Result<Vec<Outcome>> {
    const GUARD: [&str; 3] = ["kill-leader-broker", "kill-replicas", "rolling-restart"];
    saga_stack::down(config);
    saga_stack::purge(config)?;
    println!("chaos guard: starting a replicated stack in {}", config.state_dir.display());
    let result = match saga_stack::up(config, UpOptions { services: true, build: false }).await {
        Ok(()) => run_guard(config, &GUARD).await,
        Err(error) => Err(error),
    };
    let stopped = saga_stack::down(config);
    println!("replicated stack stopped: {}", stopped.join(", "));
    result
}

fn write_plots(root: &Path, stamp: &str, outcomes: &[Outcome]) -> anyhow::Result<Vec<PathBuf>> {
    let dir = root.join("reliability").join(stamp);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    outcomes
        .iter()
        .map(|o| {
            let path = dir.join(format!("{}.svg", o.scenario.name));
            std::fs::write(&path, report::svg(&o.scenario.name, &o.analysis))
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(path.strip_prefix(root).map(Path::to_path_buf).unwrap_or(path))
        })
        .collect()
}

fn write_json(
    config: &StackConfig,
    stamp: &str,
    args: &ChaosArgs,
    rate: f64,
    max: Option<f64>,
    outcomes: &[Outcome],
) -> anyhow::Result<PathBuf> {
    let report = ChaosReport {
        date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        commit: crate::bench::git_commit(config),
        profile: if config.release { "release" } else { "debug" }.to_owned(),
        command: command_line(args),
        note: args.run.note.clone(),
        max_sagas_per_second: max,
        offered_per_second: rate,
        scenarios: outcomes
            .iter()
            .map(|o| ScenarioReport {
                name: o.scenario.name.clone(),
                fault: o.scenario.what.clone(),
                ok: o.ok(),
                checks: o.checks.iter().map(|(check, holds)| Check { check: check.clone(), holds: *holds }).collect(),
                analysis: o.analysis.clone(),
                details: o.details.clone(),
            })
            .collect(),
    };
    let dir = config.root.join("bench-results");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("chaos-{stamp}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn command_line(args: &ChaosArgs) -> String {
    let mut line = "cargo xtask chaos".to_owned();
    if let Some(names) = &args.scenarios {
        let _ = write!(line, " --scenarios {}", names.join(","));
    }
    match args.rate {
        Some(rate) => {
            let _ = write!(line, " --rate {rate}");
        }
        None if args.load != 0.5 => {
            let _ = write!(line, " --load {}", args.load);
        }
        None => {}
    }
    if args.before != 15 {
        let _ = write!(line, " --before {}", args.before);
    }
    if args.after != 45 {
        let _ = write!(line, " --after {}", args.after);
    }
    if let Some(replicas) = args.shape.replicas {
        let _ = write!(line, " --replicas {replicas}");
    }
    if let Some(brokers) = args.shape.brokers {
        let _ = write!(line, " --brokers {brokers}");
    }
    if args.run.debug {
        line.push_str(" --debug");
    }
    line
}

fn markdown(
    config: &StackConfig,
    args: &ChaosArgs,
    rate: f64,
    max: Option<f64>,
    outcomes: &[Outcome],
    plots: &[PathBuf],
) -> String {
    let mut md = String::new();
    let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
    let _ = writeln!(md, "## {date} — commit {}", crate::bench::git_commit(config));
    let _ = writeln!(md);
    let _ = writeln!(md, "`{}`", command_line(args));
    let offered = match max {
        Some(max) => format!("{rate}/s offered ({:.0} % of the {max:.1}/s measured maximum)", 100.0 * rate / max),
        None => format!("{rate}/s offered"),
    };
    // A rollout measures the maximum of its own fresh stack at the previous version, so its
    // scenarios may each have been offered another rate: then each is named.
    let offered = if outcomes.iter().all(|o| o.analysis.offered_per_second == rate) {
        offered
    } else {
        let each: Vec<String> =
            outcomes.iter().map(|o| format!("{} {}/s", o.scenario.name, o.analysis.offered_per_second)).collect();
        format!("{} offered (each {:.0} % of its own stack's measured maximum)", each.join(", "), 100.0 * args.load)
    };
    let profile = if config.release { "release" } else { "debug" };
    let _ = writeln!(md, "\n{profile} build, {offered}, open loop; clients retry with the same Idempotency-Key.");
    if !args.run.note.is_empty() {
        let _ = writeln!(md, "\n{}", args.run.note);
    }
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "| scenario | checks | accepted | not accepted | as without fault | cancelled | shed | other | changed after recovery | recovery | dip | goodput (2 s per mark) |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (o, plot) in outcomes.iter().zip(plots) {
        let a = &o.analysis;
        let failed: Vec<&str> = o.checks.iter().filter(|(_, h)| !h).map(|(c, _)| c.as_str()).collect();
        let checks = if failed.is_empty() { "all hold".to_owned() } else { format!("FAIL: {}", failed.join("; ")) };
        let _ = writeln!(
            md,
            "| [{}]({}) | {checks} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} % | `{}` |",
            o.scenario.name,
            plot.display(),
            a.accepted,
            a.not_accepted,
            a.as_expected,
            a.cancelled,
            a.shed,
            a.other,
            a.changed_after_recovery,
            a.recovery_seconds.map_or("not within the run".to_owned(), |r| format!("{r:.0} s")),
            100.0 * a.dip,
            report::sparkline(a),
        );
    }
    md
}
