//! The machine's own bounds, measured on the same stack: pgbench running the
//! SQL one saga commits, and Kafka's producer and consumer performance tools
//! from the broker's jars.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use saga_generated::{EventType, OrderStatus};
use saga_runtime::{inbox, outbox};
use sqlx::{Connection, PgConnection};

use super::report::{KafkaBound, PgbenchBound};
use saga_stack::StackConfig;

/// The topics of the messages one completed saga produces, in order:
/// order.created, stock.reduction.success, payment.completed, shipment.booked
/// and order.completed.
fn completed_saga_topics() -> [&'static str; 5] {
    use saga_generated::{
        Event, OrderCompleted, OrderCreated, PaymentCompleted, ShipmentBooked, StockReductionSuccess,
    };
    [
        OrderCreated::TOPIC,
        StockReductionSuccess::TOPIC,
        PaymentCompleted::TOPIC,
        ShipmentBooked::TOPIC,
        OrderCompleted::TOPIC,
    ]
}

/// Kafka messages one completed saga produces.
fn messages_per_saga() -> f64 {
    completed_saga_topics().len() as f64
}

/// Deliveries to consumer groups per completed saga: each message is read by
/// every group subscribed to its topic (the generated topology says which).
fn deliveries_per_saga() -> f64 {
    let groups = saga_generated::topology::CONSUMER_GROUPS;
    completed_saga_topics()
        .iter()
        .map(|topic| groups.iter().filter(|g| g.topics.contains(topic)).count())
        .sum::<usize>() as f64
}

/// Size of a saga message: an Avro envelope with a few ids and items.
const RECORD_SIZE: u32 = 400;

/// `sql` with each parameter `$n` replaced by the pgbench expression
/// `args[n - 1]`, on one line: a statement of a service as a pgbench script
/// runs it (pgbench's `-M prepared` turns its `:variables` into parameters,
/// like sqlx). Fails when the statement's parameters and `args` differ in
/// number, so a statement that gains or loses one is not run with stale
/// arguments.
fn bind(sql: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut out = String::with_capacity(sql.len());
    let mut used = vec![false; args.len()];
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' || !chars.peek().is_some_and(char::is_ascii_digit) {
            out.push(c);
            continue;
        }
        let mut number = String::new();
        while let Some(digit) = chars.next_if(char::is_ascii_digit) {
            number.push(digit);
        }
        let n: usize = number.parse()?;
        let index = n.checked_sub(1).filter(|&i| i < args.len()).with_context(|| {
            format!("the statement has a parameter ${n}, the script gives {} arguments: {sql}", args.len())
        })?;
        used[index] = true;
        out.push_str(args[index]);
    }
    if let Some(unused) = used.iter().position(|u| !u) {
        bail!("the statement has no parameter ${}, the script gives {} arguments: {sql}", unused + 1, args.len());
    }
    Ok(out.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// An event published through the outbox of a service's database: its row,
/// written in the handler's transaction, as `outbox::INSERT` writes it.
/// `event` is the pgbench expression of its id.
fn publish(event: &str, event_type: EventType) -> anyhow::Result<String> {
    let payload = "decode(repeat('ab', 300), 'hex')";
    let topic = topic_of(event_type)?;
    bind(outbox::INSERT, &[event, &format!("'{topic}'"), ":r::text", &format!("'{event_type}'"), payload, "'{}'"])
}

/// The topic `event_type` goes to, as the generated topology says.
fn topic_of(event_type: EventType) -> anyhow::Result<&'static str> {
    let info = saga_generated::topology::event_info(event_type.as_str());
    Ok(info.with_context(|| format!("{event_type} is no event of the spec"))?.topic)
}

/// The relay's mark on a published row, after the broker's acknowledgement:
/// one row per transaction, as at low load (one row per batch).
fn published(event: &str) -> anyhow::Result<String> {
    let id = format!("ARRAY[(SELECT id FROM outbox WHERE event_id = {event})]");
    bind(outbox::MARK_PUBLISHED, &[&id, "ARRAY[0]", "ARRAY[:r::bigint]"])
}

/// A delivery claimed in the consumer's inbox, as `inbox::CLAIM` claims it.
fn claim(event: &str, event_type: EventType) -> anyhow::Result<String> {
    let topic = topic_of(event_type)?;
    bind(inbox::CLAIM, &[event, &format!("'{event_type}'"), &format!("'{topic}'"), "0", ":r", "now()", "now()"])
}

/// The pgbench expression of the id of the saga's `n`th event: derived from
/// the run's random number, so every database's script names the same ids.
fn event_id(n: u8) -> String {
    format!("md5(:r || 'e{n}')::uuid")
}

/// One pgbench script: its variables, then each statement on a line.
fn script(variables: &[&str], statements: Vec<String>) -> String {
    let mut script = String::new();
    for variable in variables {
        script.push_str(variable);
        script.push('\n');
    }
    for statement in statements {
        script.push_str(&statement);
        script.push_str(";\n");
    }
    script
}

/// A random number per run of a script, from which every id is derived, so
/// rows never collide.
const RUN: &str = "\\set r random(1, 1000000000000000)";

/// The script of the order database: the transactions of one completed
/// saga as the order service and its relay commit them, each statement the
/// very text the service sends (`order_store::sql`, and the runtime's
/// outbox and inbox statements), with pgbench expressions for its
/// parameters.
fn order_script() -> anyhow::Result<String> {
    use order_store::sql;
    let order = "md5(:r || 'o')::uuid";
    let user = "md5(:u || 'u')::uuid";
    let text = |value: &str| format!("'{value}'");
    let deadline = |ms: u32| format!("now() + {ms}::bigint * interval '1 millisecond'");
    // A reply consumed: claimed in the inbox, the order locked, its
    // transition with its history row, then the parked events the new
    // status may accept (none for a terminal status: not looked for).
    let reply = |n: u8, event_type: EventType, from: OrderStatus, to: OrderStatus, deadline: &str, total: &str| {
        let (from_name, to_name) = (text(from.as_str()), text(to.as_str()));
        let event = (event_id(n), text(event_type.as_str()));
        let mut statements = vec![
            "BEGIN".to_owned(),
            claim(&event_id(n), event_type)?,
            bind(sql::LOCK, &[order])?,
            bind(sql::TRANSITION, &[order, &from_name, &to_name, deadline, total, "NULL", &event.0, &event.1, "NULL"])?,
        ];
        if !to.is_terminal() {
            statements.push(bind(sql::PARKED, &[order])?);
        }
        anyhow::Ok(statements)
    };
    let traceparent = "'00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'";
    // One line: two units of one product, as the product script reserves.
    let (products, quantities) = ("ARRAY[md5(:u || 'p')::uuid]", "ARRAY[2]");
    let mut statements = vec![
        // CreateOrder: the key's earlier order, the order's rows, its first
        // transition and order.created, then the order read for the reply.
        "BEGIN".to_owned(),
        bind(sql::EXISTING, &[user, ":r::text"])?,
        bind(
            sql::INSERT_ORDER,
            &[order, user, "'created'", ":r::text", "md5(:r || 'h')", traceparent, products, quantities],
        )?,
        bind(
            sql::TRANSITION,
            &[order, "NULL", "'created'", &deadline(30_000), "NULL", "NULL", &event_id(1), "'order.created'", "NULL"],
        )?,
        publish(&event_id(1), EventType::OrderCreated)?,
        bind(sql::ORDER, &[order])?,
        "COMMIT".to_owned(),
        published(&event_id(1))?,
    ];
    // stock.reduction.success: the order is priced.
    statements.extend(reply(
        2,
        EventType::StockReductionSuccess,
        OrderStatus::Created,
        OrderStatus::InventoryReserved,
        &deadline(60_000),
        "1000",
    )?);
    statements.push("COMMIT".to_owned());
    // payment.completed: the order is paid and waits for its parcel.
    statements.extend(reply(
        3,
        EventType::PaymentCompleted,
        OrderStatus::InventoryReserved,
        OrderStatus::Paid,
        &deadline(60_000),
        "NULL",
    )?);
    statements.push("COMMIT".to_owned());
    // shipment.booked: the order completes and says so.
    statements.extend(reply(4, EventType::ShipmentBooked, OrderStatus::Paid, OrderStatus::Completed, "NULL", "NULL")?);
    statements.push(publish(&event_id(5), EventType::OrderCompleted)?);
    statements.push("COMMIT".to_owned());
    statements.push(published(&event_id(5))?);
    Ok(script(&[RUN, "\\set u random(1, 100000)"], statements))
}

/// The product database's script: the reservation of one completed saga,
/// each statement the text `product_service::sql` names. `bench_products`
/// (filled before the run) numbers the stocked products, so the script
/// spreads reservations over them as the load does.
fn product_script() -> anyhow::Result<String> {
    use product_service::sql;
    let order = "md5(:r || 'o')::uuid";
    let product = "(SELECT product_id FROM bench_products WHERE n = :k)";
    let statements = vec![
        "BEGIN".to_owned(),
        claim(&event_id(1), EventType::OrderCreated)?,
        bind(sql::RESERVATION_STATUS, &[order])?,
        bind(sql::LOCK_STOCK, &[&format!("ARRAY[{product}]")])?,
        bind(sql::RESERVE, &[order, "md5(:r || 'u')::uuid", "1000"])?,
        bind(sql::TAKE_STOCK, &[product, "2"])?,
        bind(sql::RESERVE_ITEM, &[order, product, "2", "500"])?,
        publish(&event_id(2), EventType::StockReductionSuccess)?,
        "COMMIT".to_owned(),
        published(&event_id(2))?,
    ];
    Ok(script(&[RUN, "\\set k random(1, :products)"], statements))
}

/// The user database's script: the debit of one completed saga, each
/// statement the text `user_service::sql` names. `bench_users` numbers the
/// customers with money.
fn user_script() -> anyhow::Result<String> {
    use user_service::sql;
    let order = "md5(:r || 'o')::uuid";
    let user = "(SELECT user_id FROM bench_users WHERE n = :k)";
    let statements = vec![
        "BEGIN".to_owned(),
        claim(&event_id(2), EventType::StockReductionSuccess)?,
        bind(sql::PAYMENT_STATUS, &[order])?,
        bind(sql::LOCK_BALANCE, &[user])?,
        bind(sql::DEBIT, &[user, "1000"])?,
        bind(sql::LEDGER, &["md5(:r || 'l')::uuid", user, "'debit'", "-1000", "1", "md5(:r || 'o')"])?,
        bind(sql::DEBITED, &[order, user, "1000"])?,
        publish(&event_id(3), EventType::PaymentCompleted)?,
        "COMMIT".to_owned(),
        published(&event_id(3))?,
    ];
    Ok(script(&[RUN, "\\set k random(1, :users)"], statements))
}

/// The shipping database's script: the parcel of one completed saga, each
/// statement the text `shipping_service::sql` names.
fn shipping_script() -> anyhow::Result<String> {
    use shipping_service::sql;
    let order = "md5(:r || 'o')::uuid";
    let statements = vec![
        "BEGIN".to_owned(),
        claim(&event_id(3), EventType::PaymentCompleted)?,
        bind(sql::BOOK, &[order, "2", "'PCL-' || left(md5(:r || 't'), 16)"])?,
        publish(&event_id(4), EventType::ShipmentBooked)?,
        "COMMIT".to_owned(),
        published(&event_id(4))?,
    ];
    Ok(script(&[RUN], statements))
}

/// The databases pgbench copies and runs a script against, one per service.
const DATABASES: [&str; 4] = ["order_service", "product_service", "user_service", "shipping_service"];

/// Scratch copies of the services' databases (schema, triggers and the run's
/// data), so pgbench's rows never mix with the benchmark's. Needs the
/// services stopped: a template database must have no other connections.
async fn scratch_copies(config: &StackConfig) -> anyhow::Result<(i64, i64)> {
    let mut admin = PgConnection::connect(&config.postgres_admin_url("postgres")).await?;
    for db in DATABASES {
        let copy = format!("bench_{db}");
        sqlx::query(&format!("DROP DATABASE IF EXISTS {copy}")).execute(&mut admin).await?;
        sqlx::query(&format!("CREATE DATABASE {copy} TEMPLATE {db}"))
            .execute(&mut admin)
            .await
            .with_context(|| format!("copying {db}"))?;
    }
    let mut product = PgConnection::connect(&config.postgres_admin_url("bench_product_service")).await?;
    sqlx::query(
        "CREATE TABLE bench_products AS SELECT row_number() OVER (ORDER BY product_id) AS n, product_id \
         FROM stock WHERE available > 1000000",
    )
    .execute(&mut product)
    .await?;
    let products: i64 = sqlx::query_scalar("SELECT count(*) FROM bench_products").fetch_one(&mut product).await?;
    sqlx::query("CREATE UNIQUE INDEX ON bench_products (n)").execute(&mut product).await?;
    let mut user = PgConnection::connect(&config.postgres_admin_url("bench_user_service")).await?;
    sqlx::query(
        "CREATE TABLE bench_users AS SELECT row_number() OVER (ORDER BY user_id) AS n, user_id \
         FROM balances WHERE balance_minor > 1000000000",
    )
    .execute(&mut user)
    .await?;
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM bench_users").fetch_one(&mut user).await?;
    sqlx::query("CREATE UNIQUE INDEX ON bench_users (n)").execute(&mut user).await?;
    if products == 0 || users == 0 {
        bail!("the scratch copies hold no stocked product or no customer with money");
    }
    Ok((products, users))
}

async fn drop_copies(config: &StackConfig) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(&config.postgres_admin_url("postgres")).await?;
    for db in DATABASES {
        sqlx::query(&format!("DROP DATABASE IF EXISTS bench_{db}")).execute(&mut admin).await?;
    }
    Ok(())
}

/// `tps = 1234.5 (without initial connection time)` from pgbench's summary.
fn pgbench_tps(output: &str) -> Option<f64> {
    output.lines().find_map(|line| {
        let rest = line.strip_prefix("tps = ")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The four scripts at once, each against its database copy with `clients`
/// connections, for `duration`: one script run is one saga's work in that
/// database, so the slowest script's rate is the database bound in sagas/s.
pub async fn pgbench(config: &StackConfig, clients: u32, duration: Duration) -> anyhow::Result<PgbenchBound> {
    let (products, users) = scratch_copies(config).await?;
    let dir = config.state_dir.join("bench");
    std::fs::create_dir_all(&dir)?;
    let mut children = Vec::new();
    let scripts = [order_script()?, product_script()?, user_script()?, shipping_script()?];
    for (db, script) in DATABASES.into_iter().zip(scripts) {
        let path = dir.join(format!("pgbench-{db}.sql"));
        std::fs::write(&path, script)?;
        let child = Command::new(config.postgres_bin.join("pgbench"))
            .env("PGPASSWORD", &config.postgres_password)
            .args(["-h", config.host(), "-p", &config.ports.postgres.to_string(), "-U", "postgres"])
            // -n: no vacuum of pgbench's own tables (there are none); prepared like sqlx.
            .args(["-n", "-M", "prepared", "-c", &clients.to_string(), "-j", "1"])
            .args(["-T", &duration.as_secs().max(1).to_string()])
            .args(["-D", &format!("products={products}"), "-D", &format!("users={users}")])
            .arg("-f")
            .arg(&path)
            .arg(format!("bench_{db}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run pgbench")?;
        children.push((db, child));
    }
    let mut per_db = BTreeMap::new();
    let mut bound = f64::INFINITY;
    for (db, child) in children {
        let output = tokio::task::spawn_blocking(move || child.wait_with_output()).await??;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let Some(tps) = pgbench_tps(&stdout).filter(|_| output.status.success()) else {
            bail!("pgbench on {db} failed: {}{}", stdout, String::from_utf8_lossy(&output.stderr));
        };
        bound = bound.min(tps);
        per_db.insert(db.to_owned(), tps);
    }
    drop_copies(config).await?;
    Ok(PgbenchBound {
        clients_per_database: clients,
        seconds: duration.as_secs(),
        synchronous_commit: "on (server default, as the services run)".to_owned(),
        sagas_per_second_per_database: per_db,
        sagas_per_second_bound: bound,
    })
}

const PERF_TOPIC: &str = "bench.perf";

async fn perf_topic(config: &StackConfig) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = saga_runtime::kafka::client(&config.kafka_brokers()).create()?;
    // As many partitions as a saga topic, so both spread over the same number of logs.
    let partitions = saga_generated::topology::TOPICS.first().map(|t| t.partitions).unwrap_or(6);
    let topic = NewTopic::new(PERF_TOPIC, partitions, TopicReplication::Fixed(1));
    let results = admin.create_topics([&topic], &AdminOptions::new()).await?;
    for result in results {
        match result {
            Ok(_) => {}
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => bail!("creating {name}: {code}"),
        }
    }
    Ok(())
}

async fn run_tool(mut command: Command) -> anyhow::Result<String> {
    let output = tokio::task::spawn_blocking(move || command.output()).await??;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(stdout)
}

/// Kafka's own tools against the stack's broker: records/s produced with the
/// relay's settings (idempotent, acks=all, its default linger.ms) and consumed.
pub async fn kafka(config: &StackConfig, records: u64) -> anyhow::Result<KafkaBound> {
    perf_topic(config).await?;
    let mut producer = saga_stack::kafka::tool(config, "org.apache.kafka.tools.ProducerPerformance");
    producer
        .args(["--topic", PERF_TOPIC, "--num-records", &records.to_string()])
        .args(["--record-size", &RECORD_SIZE.to_string(), "--throughput", "-1", "--producer-props"])
        .arg(format!("bootstrap.servers={}", config.kafka_brokers()))
        .args(["acks=all", "enable.idempotence=true", "max.in.flight.requests.per.connection=5"])
        .arg(format!("linger.ms={}", saga_runtime::kafka::DEFAULT_LINGER_MS))
        .arg("--producer.config")
        .arg(saga_stack::kafka_access::admin_properties_file(config)?);
    let out = run_tool(producer).await.context("ProducerPerformance")?;
    // Last summary line: "N records sent, X records/sec (Y MB/sec), A ms avg latency, ..."
    let produced = out
        .lines()
        .rev()
        .find_map(|line| {
            let (_, rest) = line.split_once("records sent, ")?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .with_context(|| format!("no summary in ProducerPerformance output: {out}"))?;
    let mut consumer = saga_stack::kafka::tool(config, "org.apache.kafka.tools.ConsumerPerformance");
    consumer
        .args(["--bootstrap-server", &config.kafka_brokers(), "--topic", PERF_TOPIC])
        .args(["--messages", &records.to_string(), "--timeout", "60000"])
        .args(["--group", &format!("bench.perf.{}", uuid::Uuid::new_v4().simple())])
        .arg("--consumer.config")
        .arg(saga_stack::kafka_access::admin_properties_file(config)?);
    let out = run_tool(consumer).await.context("ConsumerPerformance")?;
    // CSV: start.time, end.time, MB, MB.sec, nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
    let consumed = out
        .lines()
        .rev()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            if fields.len() < 10 {
                return None;
            }
            // The rate over fetch time, without the group's join and rebalance.
            fields[9].parse::<f64>().ok()
        })
        .with_context(|| format!("no summary in ConsumerPerformance output: {out}"))?;
    let bound = (produced / messages_per_saga()).min(consumed / deliveries_per_saga());
    Ok(KafkaBound {
        records,
        record_size: RECORD_SIZE,
        producer_records_per_second: produced,
        consumer_records_per_second: consumed,
        messages_per_saga: messages_per_saga(),
        deliveries_per_saga: deliveries_per_saga(),
        sagas_per_second_bound: bound,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_runs_its_services_statements_with_every_parameter_bound() {
        let scripts = [
            (order_script(), 4, order_store::sql::TRANSITION),
            (product_script(), 1, product_service::sql::TAKE_STOCK),
            (user_script(), 1, user_service::sql::DEBIT),
            (shipping_script(), 1, shipping_service::sql::BOOK),
        ];
        for (script, transactions, statement) in scripts {
            let script = script.expect("every statement bound");
            assert!(!script.contains('$'), "a parameter left unbound:\n{script}");
            let start: String = statement.split_whitespace().take(4).collect::<Vec<_>>().join(" ");
            assert!(script.contains(&start), "{start} is not in the script:\n{script}");
            assert_eq!(script.matches("BEGIN;").count(), transactions, "{script}");
            assert_eq!(script.matches("BEGIN;").count(), script.matches("COMMIT;").count(), "{script}");
        }
        assert_eq!(bind("SELECT $1, $2, $1", &["a", "b"]).expect("bound"), "SELECT a, b, a");
        assert!(bind("SELECT $1, $3", &["a", "b", "c"]).is_err(), "an argument the statement has no parameter for");
        assert!(bind("SELECT $2", &["a"]).is_err(), "a parameter without its argument");
        let ten = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "J"];
        assert_eq!(bind("$1 $2 $3 $4 $5 $6 $7 $8 $9 $10", &ten).expect("bound"), "a b c d e f g h i J");
    }

    #[test]
    fn a_completed_saga_is_five_messages_read_fourteen_times() {
        // order-events is read by product, user and shipping; inventory-events by
        // order and user; payment-events by order, product and shipping;
        // shipping-events by order, product and user.
        assert_eq!(messages_per_saga(), 5.0);
        assert_eq!(deliveries_per_saga(), 3.0 + 2.0 + 3.0 + 3.0 + 3.0);
    }

    #[test]
    fn reads_pgbench_tps() {
        let out = "latency average = 3.1 ms\ntps = 1290.512 (without initial connection time)\n";
        assert_eq!(pgbench_tps(out), Some(1290.512));
        assert_eq!(pgbench_tps("nothing"), None);
    }
}
