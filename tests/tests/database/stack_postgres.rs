//! PostgreSQL 15 is real, and every service has a database of its own that
//! only its own role can open.

use saga_stack::config::services;
use saga_tests::stack;
use sqlx::{Connection, PgConnection};

#[tokio::test]
async fn each_service_database_answers_as_its_own_role() {
    let stack = stack();
    for service in services() {
        let mut connection = PgConnection::connect(&stack.database_url(service)).await.expect("connect");
        let (user, database, version): (String, String, i32) = sqlx::query_as(
            "SELECT current_user::text, current_database()::text, current_setting('server_version_num')::int",
        )
        .fetch_one(&mut connection)
        .await
        .expect("query");
        assert_eq!(user, service.database());
        assert_eq!(database, service.database());
        assert!((150_000..160_000).contains(&version), "PostgreSQL 15 expected, got {version}");

        // A real transaction round trip in a temporary table.
        let mut tx = connection.begin().await.expect("begin");
        sqlx::query("CREATE TEMP TABLE probe (id int PRIMARY KEY, note text) ON COMMIT DROP")
            .execute(&mut *tx)
            .await
            .expect("create");
        sqlx::query("INSERT INTO probe VALUES (1, $1)").bind(service.name).execute(&mut *tx).await.expect("insert");
        let note: String =
            sqlx::query_scalar("SELECT note FROM probe WHERE id = 1").fetch_one(&mut *tx).await.expect("select");
        assert_eq!(note, service.name);
        tx.commit().await.expect("commit");
        connection.close().await.expect("close");
    }
}

#[tokio::test]
async fn a_service_role_cannot_open_another_service_database() {
    let stack = stack();
    let order = services()[0];
    let product = services()[1];
    let foreign = stack
        .database_url(product)
        .replace(&format!("{0}:{0}@", product.database()), &format!("{0}:{0}@", order.database()));
    let error = PgConnection::connect(&foreign).await.expect_err("order's role must not open product's database");
    assert!(error.to_string().contains("permission denied"), "{error}");
}
