//! Health that can fail: a backend whose outbox relay cannot publish (its
//! database went away) says NOT_SERVING, naming the relay, once that lasted
//! longer than `HEALTH_STUCK_AFTER_MS`, over mutual TLS and on the plaintext
//! port for probes (`HEALTH_LISTEN`, which serves nothing but health); the
//! gateway's `/readyz` is 503 and says why; both recover when the database is
//! back. A private product service on a database of its own, reached through
//! a proxy the test cuts, so the stack's shared services are never disturbed.

mod saga_common;

use std::process::Stdio;

use saga_common::{create_topics, eventually};
use saga_proto::tls::OPERATOR;
use saga_tests::http::PrivateGateway;
use saga_tests::proxy::Proxy;
use saga_tests::{stack, unique};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// What the health service at `url` (the stack's product certificate) says of `service`, asked as the operator.
async fn status(url: &str, service: &str) -> Option<ServingStatus> {
    let endpoint = xtask::stack::services::channel_as(&stack(), OPERATOR, "product", url).ok()?;
    let channel = endpoint.connect().await.ok()?;
    let reply = HealthClient::new(channel).check(HealthCheckRequest { service: service.to_owned() }).await.ok()?;
    ServingStatus::try_from(reply.into_inner().status).ok()
}

/// What the plaintext health-only port at `url` says of `service`.
async fn plain_status(url: &str, service: &str) -> Option<ServingStatus> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned()).ok()?.connect().await.ok()?;
    let reply = HealthClient::new(channel).check(HealthCheckRequest { service: service.to_owned() }).await.ok()?;
    ServingStatus::try_from(reply.into_inner().status).ok()
}

async fn readyz(gateway: &PrivateGateway) -> (u16, serde_json::Value) {
    let response = gateway.api.http.get(gateway.api.url("/readyz")).send().await.expect("readyz answers");
    let code = response.status().as_u16();
    (code, response.json().await.expect("json"))
}

#[tokio::test]
async fn a_backend_whose_relay_cannot_publish_is_not_serving_and_the_gateway_says_why() {
    let stack = stack();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (prefix, database) = (format!("h{}.", &id[..12]), format!("h{}_product", &id[..12]));
    create_topics(&stack.kafka_brokers(), &prefix).await;
    let admin = sqlx::PgPool::connect(&stack.postgres_admin_url("postgres")).await.expect("admin");
    sqlx::query(&format!("CREATE DATABASE {database}")).execute(&admin).await.expect("create database");
    let proxy = Proxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], stack.ports.postgres))).await;
    let url = stack
        .postgres_admin_url(&database)
        .replace(&format!(":{}/", stack.ports.postgres), &format!(":{}/", proxy.addr().port()));
    let product = xtask::stack::config::services().into_iter().find(|s| s.name == "product").expect("product");
    let log_path = stack.logs_dir().join(format!("{}.log", unique("health-product")));
    let log = std::fs::File::create(&log_path).expect("log");
    let mut child = tokio::process::Command::new(stack.binary(&product.binary()))
        .env("LISTEN_ADDR", "127.0.0.1:0")
        // Metrics on a port of their own: the default (the port plus 100) may be taken.
        .env("METRICS_LISTEN", "127.0.0.1:0")
        .env("DATABASE_URL", &url)
        .env("KAFKA_BROKERS", stack.kafka_brokers())
        .env("TOPIC_PREFIX", &prefix)
        .env("HEALTH_STUCK_AFTER_MS", "1500")
        .env("HEALTH_LISTEN", "127.0.0.1:0")
        .envs(xtask::stack::services::service_tls_env(&stack, "product"))
        .envs(xtask::stack::kafka_access::env(&stack, xtask::stack::kafka_access::ADMIN).expect("credentials"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("product service starts");
    let listen = saga_tests::listening(&log_path, "gRPC server listening", || child.try_wait().ok().flatten()).await;
    let grpc = format!("https://{listen}");
    // The relay reports once its loop has started, which may be a tick after the service
    // first says SERVING overall: wait for both.
    eventually("the product service and its relay to serve", || async {
        (status(&grpc, "").await == Some(ServingStatus::Serving)
            && status(&grpc, "saga.relay").await == Some(ServingStatus::Serving))
        .then_some(())
    })
    .await;
    // The probes' port: the same health, in plaintext, and nothing else.
    let probes = saga_tests::listening(&log_path, "gRPC health alone served in plaintext for probes", || {
        child.try_wait().ok().flatten()
    })
    .await;
    let probes = format!("http://{probes}");
    assert_eq!(plain_status(&probes, "").await, Some(ServingStatus::Serving));
    let channel =
        tonic::transport::Endpoint::from_shared(probes.clone()).expect("url").connect().await.expect("probes");
    let request = saga_proto::product::GetProductRequest { product_id: uuid::Uuid::new_v4().to_string() };
    let api =
        saga_proto::product::product_service_client::ProductServiceClient::new(channel).get_product(request).await;
    assert_eq!(api.expect_err("no API on the probes' port").code(), tonic::Code::Unimplemented);
    let gateway = PrivateGateway::start(&stack, &[("PRODUCT_GRPC_URL", grpc.as_str())]).await;

    proxy.cut();
    eventually("the product service to stop serving", || async {
        (status(&grpc, "").await == Some(ServingStatus::NotServing)).then_some(())
    })
    .await;
    assert_eq!(plain_status(&probes, "").await, Some(ServingStatus::NotServing), "the probes see it too");
    // The relay finds out at its next try: an idle relay is woken by its own
    // process's commits (none while the database is away) or its poll.
    eventually("the relay to say it is stuck", || async {
        (status(&grpc, "saga.relay").await == Some(ServingStatus::NotServing)).then_some(())
    })
    .await;
    // The consumer may say so too, once it sees the outage: the product service keeps
    // the order service's caught-up clock there (to shed requests whose saga was given
    // up on), and that clock stands still, failing, while its database is away.
    let (code, body) = readyz(&gateway).await;
    assert_eq!(code, 503, "{body}");
    let product = body["checks"]["product"].as_str().unwrap_or_default();
    assert!(product.starts_with("not serving: ") && product.contains("saga.relay"), "{body}");

    proxy.restore();
    eventually("the product service to serve again", || async {
        (status(&grpc, "").await == Some(ServingStatus::Serving)).then_some(())
    })
    .await;
    gateway.wait_for("/readyz").await;

    child.kill().await.expect("stop the product service");
    drop(proxy);
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)")).execute(&admin).await;
    admin.close().await;
}

/// A service refuses to start against topics whose partition count is not
/// the spec's (one saga's events would land on different partition numbers),
/// and says which topic and what to do; it starts against the spec's.
#[tokio::test]
async fn a_service_refuses_topics_with_another_partition_count() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;

    let stack = stack();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (prefix, database) = (format!("p{}.", &id[..12]), format!("p{}_user", &id[..12]));
    let admin: AdminClient<DefaultClientContext> =
        saga_runtime::kafka::client(&stack.kafka_brokers()).create().expect("admin");
    let topics: Vec<(String, i32)> = saga_generated::topology::TOPICS
        .iter()
        .map(|t| {
            (format!("{prefix}{}", t.name), if t.name == "payment-events" { t.partitions + 2 } else { t.partitions })
        })
        .collect();
    let new: Vec<NewTopic> = topics.iter().map(|(n, p)| NewTopic::new(n, *p, TopicReplication::Fixed(1))).collect();
    for created in admin.create_topics(&new, &AdminOptions::new()).await.expect("create") {
        created.expect("topic");
    }
    let db_admin = sqlx::PgPool::connect(&stack.postgres_admin_url("postgres")).await.expect("admin");
    sqlx::query(&format!("CREATE DATABASE {database}")).execute(&db_admin).await.expect("create database");
    let user = xtask::stack::config::services().into_iter().find(|s| s.name == "user").expect("user");
    let output = tokio::process::Command::new(stack.binary(&user.binary()))
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("METRICS_LISTEN", "127.0.0.1:0")
        .env("DATABASE_URL", stack.postgres_admin_url(&database))
        .env("KAFKA_BROKERS", stack.kafka_brokers())
        .env("TOPIC_PREFIX", &prefix)
        .envs(xtask::stack::kafka_access::env(&stack, xtask::stack::kafka_access::ADMIN).expect("credentials"))
        .stdin(Stdio::null())
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), output)
        .await
        .expect("the service gives up at once")
        .expect("the service runs");
    assert!(!output.status.success(), "it must not start");
    let log = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    let spec = saga_generated::topology::TOPICS.iter().find(|t| t.name == "payment-events").expect("topic").partitions;
    let expected = format!("Kafka topic {prefix}payment-events has {} partitions but the spec says {spec}", spec + 2);
    assert!(log.contains(&expected), "{log}");
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)")).execute(&db_admin).await;
}
