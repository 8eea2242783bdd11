//! The order store's compile-time checked queries against the schema as
//! the migrations make it now. Builds are offline (`.cargo/config.toml`):
//! each `sqlx::query!` is checked against its description committed in
//! `services/order/store/.sqlx/`, and a query without one does not build.
//! This test fails when a description no longer matches the database, say
//! after a migration changed a column the query reads: each committed query
//! is described again by PostgreSQL, on a fresh database with the runtime's
//! and the order service's migrations, and its columns (names, types,
//! nullability) and parameters must be what was committed; and a
//! description of a query the store no longer has is stale too. Regenerate them
//! as docs/development.md says ("Compile-time checked SQL").

use saga_tests::{drop_scratch_database, scratch_database, stack};
use serde_json::Value;
use sqlx::{Column, Either, Executor};

/// `type_info` as the offline data writes it (`"Uuid"`), from the type's debug form (`PgTypeInfo(Uuid)`).
fn type_name(debug: String) -> String {
    debug.strip_prefix("PgTypeInfo(").and_then(|rest| rest.strip_suffix(')')).map(str::to_owned).unwrap_or(debug)
}

fn committed_type(value: &Value) -> String {
    value.as_str().map(str::to_owned).unwrap_or_else(|| value.to_string())
}

/// What PostgreSQL says of `query` that differs from its committed description `described`.
async fn differences(conn: &mut sqlx::PgConnection, query: &str, described: &Value) -> Vec<String> {
    let fresh = match conn.describe(query).await {
        Ok(fresh) => fresh,
        Err(error) => return vec![format!("PostgreSQL cannot describe it any more: {error}")],
    };
    let mut found = Vec::new();
    let now: Vec<(String, String, Option<bool>)> = fresh
        .columns()
        .iter()
        .enumerate()
        .map(|(n, c)| (c.name().to_owned(), type_name(format!("{:?}", c.type_info())), fresh.nullable(n)))
        .collect();
    let columns = described["columns"].as_array().cloned().unwrap_or_default();
    let nullable = described["nullable"].as_array().cloned().unwrap_or_default();
    let then: Vec<(String, String, Option<bool>)> = columns
        .iter()
        .enumerate()
        .map(|(n, c)| {
            let name = c["name"].as_str().unwrap_or_default().to_owned();
            (name, committed_type(&c["type_info"]), nullable.get(n).and_then(Value::as_bool))
        })
        .collect();
    if now != then {
        found.push(format!("columns (name, type, nullable) are now {now:?}, committed {then:?}"));
    }
    let parameters: Vec<String> = match fresh.parameters() {
        Some(Either::Left(types)) => types.iter().map(|t| type_name(format!("{t:?}"))).collect(),
        _ => Vec::new(),
    };
    let committed: Vec<String> =
        described["parameters"]["Left"].as_array().into_iter().flatten().map(committed_type).collect();
    if parameters != committed {
        found.push(format!("parameters are now {parameters:?}, committed {committed:?}"));
    }
    found
}

#[tokio::test]
async fn every_committed_query_description_matches_the_migrated_schema() {
    let stack = stack();
    let (pool, name) = scratch_database(&stack).await;
    saga_runtime::db::migrate(&pool, &order_service::MIGRATOR).await.expect("the order service's migrations");
    let mut conn = pool.acquire().await.expect("connection");
    let mut files: Vec<_> = std::fs::read_dir(order_store::OFFLINE_DIR)
        .expect("the order store's .sqlx directory")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no committed query descriptions in {}", order_store::OFFLINE_DIR);
    let mut stale = Vec::new();
    for file in &files {
        let data: Value = serde_json::from_str(&std::fs::read_to_string(file).expect("read")).expect("JSON");
        let query = data["query"].as_str().expect("the query's text");
        if !order_store::SOURCES.iter().any(|source| source.contains(query)) {
            stale.push(format!("{}: no query of the store has this text any more\n  query: {query}", file.display()));
            continue;
        }
        for difference in differences(&mut conn, query, &data["describe"]).await {
            stale.push(format!("{}: {difference}\n  query: {query}", file.display()));
        }
    }
    // Every statement the store keeps in a file has its description (the build checks the rest).
    for sql in [order_store::sql::ORDER, order_store::sql::TRANSITION, order_store::sql::INSERT_ORDER] {
        let described = files.iter().any(|file| {
            std::fs::read_to_string(file)
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .is_some_and(|data| data["query"].as_str() == Some(sql))
        });
        assert!(described, "no committed description of\n{sql}");
    }
    drop(conn);
    drop_scratch_database(&stack, pool, &name).await;
    assert!(
        stale.is_empty(),
        "the order store's committed query descriptions are stale; regenerate them (docs/development.md, \
         \"Compile-time checked SQL\"):\n{}",
        stale.join("\n")
    );
}
