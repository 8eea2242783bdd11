//! Shared helpers of the integration and end-to-end tests.
//!
//! The tests talk to a real stack: the one `cargo xtask test` starts (it
//! exports the `SAGA_*` variables that describe it), or, when run with plain
//! `cargo test`, the development stack of `cargo xtask up`.

pub mod broker;
pub mod browser;
pub mod console;
pub mod consumer;
pub mod http;
pub mod proxy;
pub mod python;
pub mod saga;

use saga_stack::StackConfig;
use sqlx::PgPool;

/// The stack under test.
/// The stack under test. Every Kafka client of the test process signs in as
/// the broker's super user (the tests inspect and inject what they please).
pub fn stack() -> StackConfig {
    let config = match StackConfig::from_env() {
        Ok(config) => config,
        Err(error) => panic!("invalid stack configuration in the environment: {error}"),
    };
    if let Err(error) = saga_stack::kafka_access::authenticate_as_admin(&config) {
        panic!("cannot sign in to the stack's Kafka: {error:#}");
    }
    config
}

/// Runs `prepare` while holding an exclusive lock on the file `<path>.lock`:
/// tests that fetch or install the same thing into `path` at once (threads of
/// one test binary, or several binaries) wait for one of them to do it
/// instead of racing to create the same folder. `prepare` sees what the
/// first one left (its marker file) and returns early.
pub fn exclusively<T>(path: &std::path::Path, prepare: impl FnOnce() -> T) -> T {
    let parent = path.parent().expect("a path with a parent");
    std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
    let mut name = path.file_name().expect("a path with a name").to_owned();
    name.push(".lock");
    let lock_path = parent.join(name);
    let lock = std::fs::File::create(&lock_path).unwrap_or_else(|e| panic!("{}: {e}", lock_path.display()));
    lock.lock().unwrap_or_else(|e| panic!("cannot lock {}: {e}", lock_path.display()));
    // The lock is released when `lock` is dropped, after `prepare` returned.
    prepare()
}

/// The address a process started with `LISTEN_ADDR=127.0.0.1:0` took, from
/// the `listen` field of the JSON line `message` in its log `log`; waits for
/// it up to a minute, and fails at once if the process exits (`exited`).
/// Tests let their processes choose their ports: a port picked free
/// beforehand can be taken by another test's process in between, whose
/// health check then answers for one that has exited.
pub async fn listening(
    log: &std::path::Path,
    message: &str,
    mut exited: impl FnMut() -> Option<std::process::ExitStatus>,
) -> std::net::SocketAddr {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(listen) = std::fs::read_to_string(log).ok().and_then(|lines| logged_address(&lines, message)) {
            return listen;
        }
        if let Some(status) = exited() {
            panic!("exited while starting ({status}); see {}", log.display());
        }
        assert!(std::time::Instant::now() < deadline, "never said where it listens; see {}", log.display());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The `listen` address of the first JSON log line among `lines` whose
/// message is `message`.
pub fn logged_address(lines: &str, message: &str) -> Option<std::net::SocketAddr> {
    lines.lines().find_map(|line| {
        let line: serde_json::Value = serde_json::from_str(line).ok()?;
        if line["message"] != message {
            return None;
        }
        line["listen"].as_str()?.parse().ok()
    })
}

/// Sends SIGTERM to `child` and waits up to `within` for it to exit: its status and how
/// long it took, or `None` when it was still running then.
pub async fn terminate(
    child: &mut std::process::Child,
    within: std::time::Duration,
) -> (Option<std::process::ExitStatus>, std::time::Duration) {
    let started = std::time::Instant::now();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    while started.elapsed() < within {
        if let Ok(Some(status)) = child.try_wait() {
            return (Some(status), started.elapsed());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    (None, started.elapsed())
}

/// A name no other test run uses, for topics, groups and keys.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A new, empty database on the stack's PostgreSQL with the runtime's tables
/// (outbox, inbox) as every service has them; drop it with
/// [`drop_scratch_database`].
pub async fn scratch_database(stack: &StackConfig) -> (PgPool, String) {
    let name = format!("rt_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let admin = PgPool::connect(&stack.postgres_admin_url("postgres")).await.expect("admin");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await.expect("create database");
    admin.close().await;
    let pool = PgPool::connect(&stack.postgres_admin_url(&name)).await.expect("connect");
    saga_runtime::db::MIGRATOR.run(&pool).await.expect("the runtime's migrations");
    (pool, name)
}

pub async fn drop_scratch_database(stack: &StackConfig, pool: PgPool, name: &str) {
    pool.close().await;
    let admin = PgPool::connect(&stack.postgres_admin_url("postgres")).await.expect("admin");
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&admin).await;
    admin.close().await;
}

/// A topic `<prefix>events` of `partitions` partitions and its dead-letter
/// twin `<prefix>events.dlq`, for tests of consumers; returns both names.
pub async fn topic_and_dlq(brokers: &str, prefix: &str, partitions: i32) -> (String, String) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let (topic, dlq) = (format!("{prefix}events"), format!("{prefix}events.dlq"));
    let admin: AdminClient<DefaultClientContext> = saga_runtime::kafka::client(brokers).create().expect("admin");
    let new = [
        NewTopic::new(&topic, partitions, TopicReplication::Fixed(1)),
        NewTopic::new(&dlq, partitions, TopicReplication::Fixed(1)),
    ];
    for r in admin.create_topics(&new, &AdminOptions::new()).await.expect("create") {
        r.expect("topic");
    }
    (topic, dlq)
}

/// The producer tests put their messages in with: the runtime's own, which is
/// idempotent. A plain producer may reorder a partition's messages when it
/// retries a request (right after a topic is created, its leader can still
/// refuse one), and a test that checks per-key order would then fail for a
/// reason of its own making.
pub fn producer(brokers: &str) -> rdkafka::producer::FutureProducer {
    saga_runtime::kafka::producer(brokers, 0).expect("producer")
}
