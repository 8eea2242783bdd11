//! PostgreSQL 15: one cluster per stack, one database and role per service.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::config::services;
use anyhow::{Context, bail};
use nix::unistd::{Gid, Uid, User, chown};
use saga_process::local::CONSOLE_DATABASE;
use sqlx::{Connection, PgConnection};

use super::config::StackConfig;
use super::install::{is_root, run_logged};

/// PostgreSQL refuses to run as root: as root, the cluster runs as the
/// Debian package's `postgres` user.
fn run_as() -> anyhow::Result<Option<(Uid, Gid)>> {
    if !is_root() {
        return Ok(None);
    }
    let user =
        User::from_name("postgres")?.context("user `postgres` missing (it comes with the postgresql-15 package)")?;
    Ok(Some((user.uid, user.gid)))
}

/// The cluster's data folder: inside the state folder, unless the `postgres`
/// user cannot reach it (a checkout under a private home folder), in which
/// case it lives under /var/lib/saga-platform, keyed by the state folder.
pub fn data_dir(config: &StackConfig) -> PathBuf {
    let inside = config.state_dir.join("postgres");
    if !is_root() || world_traversable(&config.state_dir) {
        return inside;
    }
    let key: String =
        config.state_dir.display().to_string().chars().map(|c| if c.is_alphanumeric() { c } else { '_' }).collect();
    PathBuf::from("/var/lib/saga-platform").join(key).join("postgres")
}

fn world_traversable(dir: &Path) -> bool {
    dir.ancestors().filter(|p| p.exists()).all(|p| fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

/// Creates the cluster once (`initdb`), owned by the user that will run it.
pub fn prepare(config: &StackConfig) -> anyhow::Result<()> {
    let data = data_dir(config);
    if data.join("PG_VERSION").exists() {
        return Ok(());
    }
    let owner = run_as()?;
    let parent = data.parent().context("data folder has no parent")?;
    fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
    fs::set_permissions(&data, fs::Permissions::from_mode(0o700))?;
    let pwfile = parent.join("superuser-password");
    fs::write(&pwfile, &config.postgres_password)?;
    if let Some((uid, gid)) = owner {
        for path in [parent, data.as_path(), pwfile.as_path()] {
            chown(path, Some(uid), Some(gid)).with_context(|| format!("cannot chown {}", path.display()))?;
        }
    }
    let mut initdb = Command::new(config.postgres_bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "-E", "UTF8", "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256"])
        .arg(format!("--pwfile={}", pwfile.display()));
    if let Some((uid, gid)) = owner {
        initdb.uid(uid.as_raw()).gid(gid.as_raw());
    }
    fs::create_dir_all(config.logs_dir())?;
    let log = config.logs_dir().join("initdb.log");
    let result = run_logged(&mut initdb, &log);
    let _ = fs::remove_file(&pwfile);
    if let Err(error) = result {
        let _ = fs::remove_dir_all(&data);
        bail!("initdb failed ({error}): see {}", log.display());
    }
    Ok(())
}

/// The server process, listening on loopback TCP only.
pub fn command(config: &StackConfig) -> anyhow::Result<Command> {
    let mut command = Command::new(config.postgres_bin.join("postgres"));
    command
        .arg("-D")
        .arg(data_dir(config))
        .args(["-c", &format!("listen_addresses={}", config.host())])
        .args(["-c", &format!("port={}", config.ports.postgres)])
        // No Unix socket: the stack is reached over TCP only, and /var/run may not be ours.
        .args(["-c", "unix_socket_directories="])
        .args(["-c", "max_connections=300"])
        .args(["-c", "shared_buffers=256MB"])
        // The commit time of every transaction (`pg_xact_commit_timestamp`): with the
        // inbox's delivery times it splits a saga's latency into hops (`cargo xtask
        // bench`), at the cost of a few bytes per commit.
        .args(["-c", "track_commit_timestamp=on"])
        .args(["-c", "log_min_messages=warning"]);
    if let Some((uid, gid)) = run_as()? {
        command.uid(uid.as_raw()).gid(gid.as_raw());
    }
    Ok(command)
}

/// Ready when the superuser can connect and run a query.
pub async fn probe(config: &StackConfig) -> anyhow::Result<()> {
    let mut connection = PgConnection::connect(&config.postgres_admin_url("postgres")).await?;
    sqlx::query("SELECT 1").execute(&mut connection).await?;
    connection.close().await?;
    Ok(())
}

/// One role and one database per service, created once.
pub async fn provision(config: &StackConfig) -> anyhow::Result<()> {
    let mut connection = PgConnection::connect(&config.postgres_admin_url("postgres"))
        .await
        .context("cannot connect to PostgreSQL as superuser")?;
    for service in services() {
        // Names come from the spec, which the generator checked are identifiers: safe to splice.
        let name = service.database();
        ensure_role_and_database(&mut connection, &name).await?;
        // Each service owns its database alone: no other role may even connect,
        // but for the console's, which may only read.
        sqlx::query(&format!("REVOKE ALL ON DATABASE {name} FROM PUBLIC")).execute(&mut connection).await?;
    }
    ensure_role_and_database(&mut connection, CONSOLE_DATABASE).await?;
    connection.close().await?;
    for service in services() {
        grant_console_reading(config, &service.database()).await?;
    }
    Ok(())
}

/// A login role `name` (password = name) owning a database `name`, unless they exist.
async fn ensure_role_and_database(connection: &mut PgConnection, name: &str) -> anyhow::Result<()> {
    let role_exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(name)
        .fetch_one(&mut *connection)
        .await?;
    if !role_exists {
        sqlx::query(&format!("CREATE ROLE {name} LOGIN PASSWORD '{name}'")).execute(&mut *connection).await?;
    }
    let db_exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut *connection)
        .await?;
    if !db_exists {
        sqlx::query(&format!("CREATE DATABASE {name} OWNER {name}")).execute(&mut *connection).await?;
    }
    Ok(())
}

/// The console's role may connect to `database` and read its tables, those there now and
/// those its owner creates later (the service's migrations), and nothing more.
async fn grant_console_reading(config: &StackConfig, database: &str) -> anyhow::Result<()> {
    let console = CONSOLE_DATABASE;
    let mut connection = PgConnection::connect(&config.postgres_admin_url(database))
        .await
        .with_context(|| format!("cannot connect to {database} as superuser"))?;
    for grant in [
        format!("GRANT CONNECT ON DATABASE {database} TO {console}"),
        format!("GRANT USAGE ON SCHEMA public TO {console}"),
        format!("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {console}"),
        format!("ALTER DEFAULT PRIVILEGES FOR ROLE {database} IN SCHEMA public GRANT SELECT ON TABLES TO {console}"),
    ] {
        sqlx::query(&grant).execute(&mut connection).await?;
    }
    connection.close().await?;
    Ok(())
}

/// Shutdown mode: SIGINT is PostgreSQL's "fast" shutdown (abort sessions, checkpoint, exit).
pub const STOP_SIGNAL: nix::sys::signal::Signal = nix::sys::signal::Signal::SIGINT;

/// How long a clean shutdown may take before the process is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(30);
