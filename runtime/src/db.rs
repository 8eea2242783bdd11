//! PostgreSQL connection pool for one service's own database, and the
//! runtime's own tables in it.

use std::time::{Duration, Instant};

use saga_contract::FailureClass;
use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres, Transaction};

/// The runtime's own tables, which every service database carries: the
/// outbox and the inbox (`migrations/runtime/`).
///
/// It shares the database's migration history (`_sqlx_migrations`) with the
/// service's own migrator, so the two must never use the same version:
/// the runtime owns versions 1 and 2 (they were copied into every service
/// before, and existing databases record them under these numbers, with
/// these checksums: never edit them) and takes any new version from
/// [`FIRST_NEW_RUNTIME_VERSION`] up; services number theirs from 3 and stay
/// below it. [`migrate`] refuses a service migrator that breaks the rule.
/// Each migrator ignores the other's versions (`ignore_missing`).
pub static MIGRATOR: Migrator = Migrator { ignore_missing: true, ..sqlx::migrate!("../migrations/runtime") };

/// Where new runtime migrations are numbered from (see [`MIGRATOR`]).
pub const FIRST_NEW_RUNTIME_VERSION: i64 = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot connect to PostgreSQL at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot prepare the migrations' connection: {0}")]
    MigrationConnection(#[source] sqlx::Error),
    #[error(
        "service migration {0} uses a version the runtime owns: number it from 3 up, below {FIRST_NEW_RUNTIME_VERSION}"
    )]
    RuntimeVersion(i64),
}

/// Brings a service database up to date: the runtime's tables first, then
/// the service's own migrations (`service`), in one shared history.
///
/// They run on a connection of their own with the pool's timeouts lifted
/// ([`SessionSettings`]): a migration may rewrite a large table, and a
/// replica starting beside another waits on the advisory lock the migrator
/// holds for as long as the other migrates. The connection is closed after,
/// so no pooled connection keeps the lifted settings.
pub async fn migrate(pool: &PgPool, service: &Migrator) -> Result<(), DbError> {
    use sqlx::Connection as _;
    let runtime_versions: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
    if let Some(clash) =
        service.iter().map(|m| m.version).find(|v| runtime_versions.contains(v) || *v >= FIRST_NEW_RUNTIME_VERSION)
    {
        return Err(DbError::RuntimeVersion(clash));
    }
    let mut conn = pool.acquire().await.map_err(DbError::MigrationConnection)?.detach();
    sqlx::raw_sql("SET statement_timeout = 0; SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0")
        .execute(&mut conn)
        .await
        .map_err(DbError::MigrationConnection)?;
    MIGRATOR.run(&mut conn).await?;
    // The runtime's versions are in the history too: not missing, not ours.
    let service = Migrator { migrations: service.migrations.clone(), ignore_missing: true, ..Migrator::DEFAULT };
    service.run(&mut conn).await?;
    let _ = conn.close().await;
    Ok(())
}

/// What every connection of a service's pools (and of the shelves, which
/// connect with the pools' options) starts with, sent as startup options:
/// PostgreSQL's own limits on a statement, a lock wait and a transaction left
/// idle, so a call that hangs fails (and is seen failing) instead of hanging
/// for good, and server-side TCP keepalives, so PostgreSQL notices a client
/// that vanished (a killed pod, a partition) and releases its locks.
///
/// sqlx has no setting for keepalives on its own side of the socket: a
/// database that vanishes under a client is noticed by the timeouts the
/// runtime puts around its waits (pool acquire, the health checks) and by
/// the loops' health, which counts an attempt in flight without progress as
/// stuck (`crate::health`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSettings {
    /// `statement_timeout`: the longest statement (zero: no limit).
    pub statement_timeout: Duration,
    /// `lock_timeout`: the longest wait for a lock, a row's or a table's
    /// (zero: no limit). The relay's advisory lock is only ever tried, never
    /// waited for.
    pub lock_timeout: Duration,
    /// `idle_in_transaction_session_timeout`: how long a session may sit in
    /// an open transaction between statements before PostgreSQL ends it
    /// (zero: no limit). The relay keeps its transaction open while the
    /// broker acknowledges a batch (at most the producer's
    /// `message.timeout.ms`, 30 s), so this must be well above that.
    pub idle_in_transaction_timeout: Duration,
    /// `tcp_keepalives_idle`: how long the server's side of a connection may
    /// be silent before PostgreSQL probes the client, every third of that,
    /// three times (`None`: the server's setting).
    pub tcp_keepalive: Option<Duration>,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            statement_timeout: Duration::from_secs(30),
            lock_timeout: Duration::from_secs(10),
            idle_in_transaction_timeout: Duration::from_secs(120),
            tcp_keepalive: Some(Duration::from_secs(30)),
        }
    }
}

impl SessionSettings {
    /// The startup options that set them.
    pub fn options(&self) -> Vec<(&'static str, String)> {
        let millis = |d: Duration| d.as_millis().to_string();
        let mut options = vec![
            ("statement_timeout", millis(self.statement_timeout)),
            ("lock_timeout", millis(self.lock_timeout)),
            ("idle_in_transaction_session_timeout", millis(self.idle_in_transaction_timeout)),
        ];
        if let Some(idle) = self.tcp_keepalive {
            let idle = idle.as_secs().max(1);
            options.push(("tcp_keepalives_idle", idle.to_string()));
            options.push(("tcp_keepalives_interval", (idle / 3).max(1).to_string()));
            options.push(("tcp_keepalives_count", "3".to_owned()));
        }
        options
    }
}

/// Lifts the statement and lock timeouts for the rest of the transaction
/// `conn` is in: for work known to be long (a service's start-up data
/// migration), never for a request or a saga step.
pub async fn lift_timeouts(conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT set_config('statement_timeout', '0', true), set_config('lock_timeout', '0', true), \
         set_config('idle_in_transaction_session_timeout', '0', true)",
    )
    .execute(conn)
    .await
    .map(drop)
}

/// How long the saga's own work (consumers, relay, sweeper) waits for a
/// pooled connection before it counts as an outage.
pub const WORK_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a gRPC request waits for a pooled connection before it is
/// answered UNAVAILABLE (a 503 with Retry-After at the gateway). Below the
/// gateway's 5 s call deadline; long enough that a burst of requests waits
/// its turn rather than failing and coming back (each retry is work again:
/// with 1 s, after a broker outage, four in five order requests were such
/// retries).
pub const API_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long after its release test a pooled connection is taken again
/// without another test (see [`connect`]).
const FRESH_FROM_RELEASE: Duration = Duration::from_secs(1);

/// Connects a pool whose connections start with `session`, retrying for up
/// to `wait` so a service started together with its database does not fail
/// on the first refused connection.
pub async fn connect(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
    session: &SessionSettings,
    wait: Duration,
) -> Result<PgPool, DbError> {
    let options = url
        .parse::<sqlx::postgres::PgConnectOptions>()
        .map_err(|source| DbError::Connect { url: redact(url), source })?
        .options(session.options());
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let attempt = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(acquire_timeout)
            // sqlx tests every connection as it goes back to the pool (a round trip);
            // its second test as the connection is taken out again was 10 % of the
            // order service's CPU under load (`PgConnection::ping`, bench --profile).
            // A connection taken again within a moment of passing its release test is
            // used as is; one that sat idle longer (through a restart of PostgreSQL,
            // say) is tested first. One that broke within that moment fails its
            // first statement, which every caller takes for an outage: the consumer
            // waits it out, the API answers UNAVAILABLE and the gateway retries.
            .test_before_acquire(false)
            .before_acquire(|connection, meta| {
                Box::pin(async move {
                    use sqlx::Connection as _;
                    Ok(meta.idle_for < FRESH_FROM_RELEASE || connection.ping().await.is_ok())
                })
            })
            .connect_with(options.clone())
            .await;
        match attempt {
            Ok(pool) => return Ok(pool),
            Err(source) if tokio::time::Instant::now() >= deadline => {
                return Err(DbError::Connect { url: redact(url), source });
            }
            Err(error) => {
                tracing::debug!(%error, "database not reachable yet, retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// What a database error means for the message being handled: an outage
/// (nothing reached the database, the connection broke, it is shutting down
/// or out of resources, or the transaction lost a serialization conflict or
/// a deadlock: all worth waiting out), a race lost to a concurrent
/// transaction (a unique or exclusion violation: the other one committed
/// first, and a retry sees what it wrote), or a permanent verdict (the
/// statement or the data is wrong, e.g. a violated check: the same event
/// will fail the same way every time).
pub fn class_of(error: &sqlx::Error) -> FailureClass {
    match error {
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some(code) if is_outage(code) => FailureClass::Infrastructure,
            Some(code) if is_race(code) => FailureClass::Contended,
            _ => FailureClass::Permanent,
        },
        sqlx::Error::RowNotFound
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Encode(_)
        | sqlx::Error::Decode(_) => FailureClass::Permanent,
        // I/O, TLS, protocol, pool timed out or closed, a crashed worker, ...
        _ => FailureClass::Infrastructure,
    }
}

/// SQLSTATEs of a database that is away for a while rather than of a bad
/// statement: connection exceptions (08), transaction rollbacks such as
/// serialization failures and deadlocks (40), insufficient resources (53),
/// operator intervention such as a shutdown or a cancelled statement (57),
/// system errors (58), a lock not available (55P03) and a read-only
/// transaction during a failover (25006).
fn is_outage(code: &str) -> bool {
    ["08", "40", "53", "57", "58"].iter().any(|class| code.starts_with(class)) || matches!(code, "55P03" | "25006")
}

/// SQLSTATEs of a race between two transactions that each checked before
/// writing: unique violation (23505) and exclusion violation (23P01). A
/// handler that always violates one is retried by the spec's policy first,
/// then dead-lettered all the same.
fn is_race(code: &str) -> bool {
    matches!(code, "23505" | "23P01")
}

pub use saga_process::redact::url as redact;

/// A service's two pools, as the `pool` label of their metrics: the saga's work
/// (consumers, relay, sweeper) and gRPC requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolName {
    Work,
    Api,
}

impl PoolName {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolName::Work => "work",
            PoolName::Api => "api",
        }
    }
}

/// Begins a transaction on `pool`, counted among the pool's waiting tasks until it has
/// its connection and `BEGIN` (sqlx keeps no count of its waiters).
pub async fn begin(pool: &PgPool, name: PoolName) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let _waiting = Waiting::start(name);
    pool.begin().await
}

/// A connection of `pool`, counted among its waiting tasks until it has one.
pub async fn acquire(pool: &PgPool, name: PoolName) -> Result<PoolConnection<Postgres>, sqlx::Error> {
    let _waiting = Waiting::start(name);
    pool.acquire().await
}

/// What to do once a transaction commits, gathered while it runs: in-process
/// signals that must not fire for work that rolls back, such as waking this
/// process's outbox relay (`outbox::insert`) or telling the order change
/// feed of a status change. They replace `NOTIFY` triggers: PostgreSQL
/// serializes the commits of all transactions that notify, cluster-wide (a
/// lock taken before the commit record and held through its WAL flush), and
/// under load that lock was the busy backends' most common wait; without
/// it pgbench ran a saga's SQL in the order database 1.7 times as often per
/// second (BENCHMARKS.md, 2026-12-03). A commit that fails leaves them
/// undone: the relay polls, and the change feed's followers read again.
#[must_use = "run it once the transaction committed"]
pub struct AfterCommit(Vec<Box<dyn FnOnce() + Send>>);

tokio::task_local! {
    static AFTER_COMMIT: std::cell::RefCell<Vec<Box<dyn FnOnce() + Send>>>;
}

impl AfterCommit {
    /// Runs `work` (the statements of one transaction, up to but not
    /// including its commit) and gathers what it asked, through
    /// [`after_commit`], to be done once the transaction commits.
    pub async fn gather<F: Future>(work: F) -> (F::Output, AfterCommit) {
        AFTER_COMMIT
            .scope(std::cell::RefCell::new(Vec::new()), async move {
                let output = work.await;
                (output, AfterCommit(AFTER_COMMIT.with(std::cell::RefCell::take)))
            })
            .await
    }

    /// The transaction committed: do what it asked, in the order it asked.
    /// (Dropping it instead, after a rollback, does nothing.)
    pub fn run(self) {
        self.0.into_iter().for_each(|f| f());
    }
}

/// Asks for `f` to run once the transaction this task is working on commits
/// (inside [`AfterCommit::gather`]); returns `false`, and drops `f`, when
/// the task works outside one: its caller commits without saying so (a test,
/// a tool), so the caller must signal by itself if it needs to.
pub fn after_commit(f: impl FnOnce() + Send + 'static) -> bool {
    AFTER_COMMIT.try_with(|pending| pending.borrow_mut().push(Box::new(f))).is_ok()
}

/// One task waiting for a connection: in the gauge while it lives, its wait recorded when
/// it ends, however it ends (a connection, a timeout, or the caller gave up).
struct Waiting {
    name: PoolName,
    since: Instant,
}

impl Waiting {
    fn start(name: PoolName) -> Waiting {
        metrics::gauge!(saga_process::metrics::DB_WAITING, "pool" => name.as_str()).increment(1.0);
        Waiting { name, since: Instant::now() }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        use saga_process::metrics::{DB_ACQUIRE_DURATION, DB_WAITING};
        metrics::gauge!(DB_WAITING, "pool" => self.name.as_str()).decrement(1.0);
        metrics::histogram!(DB_ACQUIRE_DURATION, "pool" => self.name.as_str())
            .record(self.since.elapsed().as_secs_f64());
    }
}

/// Connections the saga's own loops (the relay, the consumers' workers) keep
/// between their transactions, outside the pool. sqlx tests every pooled
/// connection as it goes back (`PgConnection::ping`, a round trip) and there
/// is no setting to skip it; these loops run a transaction per message or
/// batch, so each took a round trip more than its work (with the test
/// skipped, PostgreSQL's CPU per saga fell by about a tenth in a quick
/// benchmark: BENCHMARKS.md, 2026-12-03).
///
/// A connection goes back on the shelf only when its user says its
/// transaction ended ([`Shelved::keep`]); one dropped otherwise (an error, a
/// cancelled task) is closed, so nothing half-done is ever reused. One that
/// sat on the shelf longer than a moment is tested before it is handed out.
/// The shelf holds as many connections as were in use at once, at most
/// [`Shelf::MAX_IDLE`]. Taking one counts in the metrics of the pool named
/// (waiting tasks, time to get a connection), as taking a pooled one does,
/// and gives up after the pool's acquire timeout (`PoolTimedOut`, an outage
/// to every caller) rather than wait on a database that does not answer.
pub struct Shelf {
    name: PoolName,
    timeout: Duration,
    options: std::sync::Arc<sqlx::postgres::PgConnectOptions>,
    idle: std::sync::Mutex<Vec<(sqlx::PgConnection, Instant)>>,
}

impl Shelf {
    /// More idle connections than this are closed as they come back.
    pub const MAX_IDLE: usize = 16;

    /// A shelf connecting as `pool` does (same database, user and settings),
    /// counted in the metrics of the pool `name`.
    pub fn new(pool: &PgPool, name: PoolName) -> Shelf {
        let timeout = pool.options().get_acquire_timeout();
        Shelf { name, timeout, options: pool.connect_options(), idle: std::sync::Mutex::new(Vec::new()) }
    }

    /// A connection from the shelf, or a new one.
    pub async fn take(&self) -> Result<Shelved<'_>, sqlx::Error> {
        let _waiting = Waiting::start(self.name);
        tokio::time::timeout(self.timeout, self.take_now()).await.unwrap_or(Err(sqlx::Error::PoolTimedOut))
    }

    async fn take_now(&self) -> Result<Shelved<'_>, sqlx::Error> {
        use sqlx::{ConnectOptions as _, Connection as _};
        loop {
            let idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
            let Some((mut conn, since)) = idle else { break };
            if since.elapsed() < FRESH_FROM_RELEASE || conn.ping().await.is_ok() {
                return Ok(Shelved { conn: Some(conn), shelf: self });
            }
            // Broken while it waited (PostgreSQL restarted, say): try the next.
        }
        let conn = self.options.connect().await?;
        Ok(Shelved { conn: Some(conn), shelf: self })
    }

    /// Idle connections on the shelf.
    pub fn idle(&self) -> usize {
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }
}

/// A connection taken from a [`Shelf`]; closed when dropped unless kept.
pub struct Shelved<'a> {
    conn: Option<sqlx::PgConnection>,
    shelf: &'a Shelf,
}

impl Shelved<'_> {
    /// Puts the connection back on the shelf. Call it only when no
    /// transaction is open and no statement is unfinished on it.
    pub fn keep(mut self) {
        let Some(conn) = self.conn.take() else { return };
        let mut idle = self.shelf.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < Shelf::MAX_IDLE {
            idle.push((conn, Instant::now()));
        }
    }
}

impl std::ops::Deref for Shelved<'_> {
    type Target = sqlx::PgConnection;
    fn deref(&self) -> &sqlx::PgConnection {
        self.conn.as_ref().expect("a shelved connection is present until kept or dropped")
    }
}

impl std::ops::DerefMut for Shelved<'_> {
    fn deref_mut(&mut self) -> &mut sqlx::PgConnection {
        self.conn.as_mut().expect("a shelved connection is present until kept or dropped")
    }
}

/// How often the pools' connection gauges are sampled.
const POOL_REPORT_EVERY: Duration = Duration::from_secs(5);

/// Keeps the connection gauges of `pools` current until `shutdown`.
pub async fn report_pools<const N: usize>(pools: [(PoolName, PgPool); N], shutdown: saga_process::shutdown::Shutdown) {
    use saga_process::metrics::DB_CONNECTIONS;
    loop {
        for (name, pool) in &pools {
            let idle = pool.num_idle() as f64;
            metrics::gauge!(DB_CONNECTIONS, "pool" => name.as_str(), "state" => "idle").set(idle);
            metrics::gauge!(DB_CONNECTIONS, "pool" => name.as_str(), "state" => "in_use")
                .set(f64::from(pool.size()) - idle);
        }
        tokio::select! {
            () = shutdown.wait() => return,
            () = tokio::time::sleep(POOL_REPORT_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{AfterCommit, FIRST_NEW_RUNTIME_VERSION, MIGRATOR, SessionSettings, after_commit, is_outage, is_race};

    #[test]
    fn every_connection_starts_with_the_timeouts_and_keepalives_in_postgresql_units() {
        let options = SessionSettings::default().options();
        let get = |key: &str| options.iter().find(|(k, _)| *k == key).map(|(_, v)| v.as_str());
        assert_eq!(get("statement_timeout"), Some("30000"), "milliseconds");
        assert_eq!(get("lock_timeout"), Some("10000"));
        assert_eq!(get("idle_in_transaction_session_timeout"), Some("120000"));
        assert_eq!((get("tcp_keepalives_idle"), get("tcp_keepalives_interval")), (Some("30"), Some("10")), "seconds");
        assert_eq!(get("tcp_keepalives_count"), Some("3"));
        let none = SessionSettings { tcp_keepalive: None, ..SessionSettings::default() }.options();
        assert!(none.iter().all(|(k, _)| !k.starts_with("tcp_")), "the server's own keepalive: {none:?}");
    }

    #[tokio::test]
    async fn what_a_transaction_asks_is_done_after_its_commit_in_order_and_never_after_a_rollback() {
        use std::sync::{Arc, Mutex};
        let done = Arc::new(Mutex::new(Vec::new()));
        let ask = |n: u32| {
            let done = done.clone();
            after_commit(move || done.lock().expect("lock").push(n))
        };
        assert!(!ask(0), "outside a gathered transaction nothing is taken");
        let ((), committed) = AfterCommit::gather(async {
            assert!(ask(1));
            tokio::task::yield_now().await;
            assert!(ask(2));
        })
        .await;
        let ((), rolled_back) = AfterCommit::gather(async {
            assert!(ask(3));
        })
        .await;
        assert!(done.lock().expect("lock").is_empty(), "nothing before the commit");
        drop(rolled_back);
        committed.run();
        assert_eq!(*done.lock().expect("lock"), [1, 2]);
    }

    #[test]
    fn outages_are_told_from_bad_statements_by_sqlstate() {
        for code in ["08006", "40001", "40P01", "53300", "57P01", "57014", "58030", "55P03", "25006"] {
            assert!(is_outage(code), "{code}");
        }
        for code in ["23505", "23514", "22003", "42P01", "42703", "XX000"] {
            assert!(!is_outage(code), "{code}");
        }
        for code in ["23505", "23P01"] {
            assert!(is_race(code), "{code}");
        }
        for code in ["23514", "23503", "22003", "40001"] {
            assert!(!is_race(code), "{code}");
        }
    }

    #[test]
    fn the_runtime_keeps_to_its_versions() {
        for migration in MIGRATOR.iter() {
            let v = migration.version;
            assert!(v <= 2 || v >= FIRST_NEW_RUNTIME_VERSION, "runtime migration {v} is in the services' range");
        }
    }
}
