//! The runtime's tables ship with the runtime and the services keep only
//! their own: a database migrated when every service carried copies of the
//! runtime's migrations (versions 1 and 2) keeps its history and gets only
//! the runtime's later migrations, a fresh one gets the same history, and a
//! service migration that takes a runtime version is refused before
//! anything runs.

use std::path::Path;

use saga_runtime::db::{self, DbError};
use saga_tests::{drop_scratch_database, scratch_database, stack};
use sqlx::migrate::Migrator;
use sqlx::{Connection, PgConnection, PgPool};

async fn migrator(folder: &Path) -> Migrator {
    Migrator::new(folder).await.expect("a migration folder")
}

/// A new, empty database (no runtime tables yet).
async fn empty_database() -> (PgPool, String) {
    let stack = stack();
    let name = format!("mig_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let mut admin = PgConnection::connect(&stack.postgres_admin_url("postgres")).await.expect("admin");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("create database");
    admin.close().await.expect("close");
    (PgPool::connect(&stack.postgres_admin_url(&name)).await.expect("connect"), name)
}

async fn applied(pool: &PgPool) -> Vec<(i64, Vec<u8>)> {
    sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations ORDER BY version")
        .fetch_all(pool)
        .await
        .expect("history")
}

#[tokio::test]
async fn a_database_of_the_old_layout_keeps_its_history_and_a_fresh_one_gets_the_same() {
    let stack = stack();
    let order = migrator(&stack.root.join("migrations/order")).await;

    // The old layout: one folder per service with the runtime's first two
    // migrations copied in (the runtime's later ones did not exist then).
    let old_folder = std::env::temp_dir().join(saga_tests::unique("old-order-migrations"));
    std::fs::create_dir_all(&old_folder).expect("temp folder");
    for folder in [stack.root.join("migrations/runtime"), stack.root.join("migrations/order")] {
        for entry in std::fs::read_dir(folder).expect("migrations") {
            let path = entry.expect("entry").path();
            let name = path.file_name().expect("file name").to_string_lossy().into_owned();
            let version: i64 = name.split('_').next().and_then(|v| v.parse().ok()).expect("a versioned file");
            if version < db::FIRST_NEW_RUNTIME_VERSION {
                std::fs::copy(&path, old_folder.join(name)).expect("copy");
            }
        }
    }
    let (old_pool, old_name) = empty_database().await;
    migrator(&old_folder).await.run(&old_pool).await.expect("the old layout migrates");
    let before = applied(&old_pool).await;
    db::migrate(&old_pool, &order).await.expect("the split accepts the old history");
    let after = applied(&old_pool).await;
    assert_eq!(after[..before.len()], before[..], "the old history stands, checksum for checksum");
    assert!(
        after[before.len()..].iter().all(|(v, _)| *v >= db::FIRST_NEW_RUNTIME_VERSION),
        "only the runtime's later migrations were added: {after:?}"
    );
    std::fs::remove_dir_all(&old_folder).expect("clean up");

    let (fresh_pool, fresh_name) = empty_database().await;
    db::migrate(&fresh_pool, &order).await.expect("a fresh database migrates");
    assert_eq!(applied(&fresh_pool).await, after, "the same history, version for version, checksum for checksum");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
    )
    .fetch_all(&fresh_pool)
    .await
    .expect("tables");
    for table in ["inbox", "orders", "outbox", "parked_events"] {
        assert!(tables.iter().any(|t| t == table), "{table} missing from {tables:?}");
    }
    // Running again is a no-op.
    db::migrate(&fresh_pool, &order).await.expect("idempotent");

    drop_scratch_database(&stack, old_pool, &old_name).await;
    drop_scratch_database(&stack, fresh_pool, &fresh_name).await;
}

#[tokio::test]
async fn a_service_migration_with_a_runtime_version_is_refused_before_anything_runs() {
    let stack = stack();
    // The runtime's own folder as a "service" migrator: versions 1 and 2 clash.
    let clashing = migrator(&stack.root.join("migrations/runtime")).await;
    let (pool, name) = scratch_database(&stack).await;
    let before = applied(&pool).await;
    match db::migrate(&pool, &clashing).await {
        Err(DbError::RuntimeVersion(1)) => {}
        other => panic!("expected the clash of version 1 to be refused, got {other:?}"),
    }
    assert_eq!(applied(&pool).await, before);
    drop_scratch_database(&stack, pool, &name).await;
}

/// The pools' connections carry `statement_timeout` and `lock_timeout`
/// (`db::SessionSettings`); the migrations must not: a migration may run
/// long, and a replica starting beside another waits on the advisory lock
/// the other's migrator holds while it migrates. Two replicas at once, on a
/// pool whose limits are far below the migration's second and the wait.
#[tokio::test]
async fn migrations_run_without_the_pools_timeouts_and_wait_for_another_replicas() {
    let stack = stack();
    let (admin, name) = empty_database().await;
    let slow = std::env::temp_dir().join(saga_tests::unique("slow-migrations"));
    std::fs::create_dir_all(&slow).expect("temp folder");
    std::fs::write(slow.join("3_slow.sql"), "SELECT pg_sleep(1); CREATE TABLE slow (id int);").expect("migration");
    let slow_migrator = migrator(&slow).await;
    let session = db::SessionSettings {
        statement_timeout: std::time::Duration::from_millis(200),
        lock_timeout: std::time::Duration::from_millis(100),
        ..db::SessionSettings::default()
    };
    let url = stack.postgres_admin_url(&name);
    let wait = std::time::Duration::from_secs(10);
    let pool = db::connect(&url, 4, db::WORK_ACQUIRE_TIMEOUT, &session, wait).await.expect("pool");
    // The pool's own connections are bound by the limits (else this test could not fail).
    let limited = sqlx::query("SELECT pg_sleep(1)").execute(&pool).await.expect_err("statement_timeout");
    assert!(limited.to_string().contains("statement timeout"), "{limited}");

    let (first, second) = tokio::join!(db::migrate(&pool, &slow_migrator), db::migrate(&pool, &slow_migrator));
    first.expect("the first replica migrates");
    second.expect("the second waits for the first, then finds nothing to do");
    assert!(applied(&admin).await.iter().any(|(v, _)| *v == 3), "the slow migration ran once");
    let timeout: String = sqlx::query_scalar("SHOW statement_timeout").fetch_one(&pool).await.expect("setting");
    assert_eq!(timeout, "200ms", "no pooled connection keeps the migrations' lifted settings");
    pool.close().await;
    std::fs::remove_dir_all(&slow).expect("clean up");
    drop_scratch_database(&stack, admin, &name).await;
}
