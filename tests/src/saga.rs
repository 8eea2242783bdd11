//! Helpers of the saga end-to-end tests: gRPC clients, fixtures, polling,
//! Kafka inspection, and a private set of service processes (own databases,
//! own prefixed topics) for the tests that stop or kill services.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use saga_proto::order::order_service_client::OrderServiceClient;
use saga_proto::order::{CreateOrderRequest, GetOrderRequest, Order, OrderItem};
use saga_proto::product::product_service_client::ProductServiceClient;
use saga_proto::product::{CreateProductRequest, GetProductRequest, Product};
use saga_proto::user::user_service_client::UserServiceClient;
use saga_proto::user::{CreateUserRequest, GetUserRequest, Role, User};
use saga_stack::StackConfig;
use saga_stack::config::services;
use tonic::transport::Channel;

/// Generous deadline for eventual outcomes; never a performance assertion.
pub const EVENTUALLY: Duration = Duration::from_secs(60);

/// gRPC clients of the three services.
#[derive(Clone)]
pub struct Clients {
    pub order: OrderServiceClient<Channel>,
    pub product: ProductServiceClient<Channel>,
    pub user: UserServiceClient<Channel>,
}

/// A channel to `service` at `url` over the stack's mutual TLS, as the
/// gateway: these tests call the services' APIs the way the gateway does.
async fn channel(service: &str, url: String) -> Channel {
    saga_stack::services::channel_as(&crate::stack(), saga_proto::tls::GATEWAY, service, &url)
        .expect("valid url and the stack's certificates")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect_lazy()
}

impl Clients {
    pub async fn at(order: String, product: String, user: String) -> Clients {
        Clients {
            order: OrderServiceClient::new(channel("order", order).await),
            product: ProductServiceClient::new(channel("product", product).await),
            user: UserServiceClient::new(channel("user", user).await),
        }
    }

    /// The services of the running stack.
    pub async fn of_stack(stack: &StackConfig) -> Clients {
        let [order, product, user] = ["order", "product", "user"].map(|name| {
            let service = services().into_iter().find(|s| s.name == name).expect("a service of the spec");
            stack.grpc_url(service)
        });
        Clients::at(order, product, user).await
    }

    pub async fn user(&mut self, balance_minor: i64) -> User {
        self.user
            .create_user(CreateUserRequest {
                email: format!("{}@test.local", crate::unique("buyer")),
                password: "correct horse battery staple".into(),
                display_name: "Buyer".into(),
                role: Role::Customer as i32,
                initial_balance_minor: balance_minor,
            })
            .await
            .expect("CreateUser")
            .into_inner()
    }

    pub async fn product(&mut self, price_minor: i64, stock: i64) -> Product {
        self.product
            .create_product(CreateProductRequest {
                name: crate::unique("widget"),
                description: "test product".into(),
                price_minor,
                initial_stock: stock,
            })
            .await
            .expect("CreateProduct")
            .into_inner()
    }

    pub async fn order(&mut self, user: &User, items: &[(&Product, i32)]) -> Order {
        self.order
            .create_order(CreateOrderRequest {
                user_id: user.user_id.clone(),
                items: items
                    .iter()
                    .map(|(p, q)| OrderItem { product_id: p.product_id.clone(), quantity: *q })
                    .collect(),
                idempotency_key: crate::unique("key"),
            })
            .await
            .expect("CreateOrder")
            .into_inner()
            .order
            .expect("order in the response")
    }

    pub async fn get_order(&mut self, order_id: &str) -> Order {
        self.order.get_order(GetOrderRequest { order_id: order_id.into() }).await.expect("GetOrder").into_inner()
    }

    pub async fn get_product(&mut self, product_id: &str) -> Product {
        self.product
            .get_product(GetProductRequest { product_id: product_id.into() })
            .await
            .expect("GetProduct")
            .into_inner()
    }

    pub async fn get_user(&mut self, user_id: &str) -> User {
        self.user.get_user(GetUserRequest { user_id: user_id.into() }).await.expect("GetUser").into_inner()
    }

    /// Polls until the order reaches `status` (panics after `EVENTUALLY`).
    pub async fn wait_status(&mut self, order_id: &str, status: &str) -> Order {
        let deadline = tokio::time::Instant::now() + EVENTUALLY;
        loop {
            let order = self.get_order(order_id).await;
            if order.status == status {
                return order;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "order {order_id} did not reach {status}; it is {} (history {:?})",
                order.status,
                order.history
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Polls `check` until it returns `Some` (panics with `what` after `EVENTUALLY`).
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The statuses of an order that completes: reserved, paid, shipped.
pub const COMPLETED_PATH: [&str; 4] = ["created", "inventory_reserved", "paid", "completed"];

/// The statuses an order went through, from its history.
pub fn statuses(order: &Order) -> Vec<String> {
    let mut path: Vec<String> = order.history.iter().map(|h| h.from_status.clone()).collect();
    path.retain(|s| !s.is_empty());
    path.extend(order.history.last().map(|h| h.to_status.clone()));
    path
}

/// Every message on `topic` whose key is `key` (reads each partition to its end).
pub fn messages_with_key(brokers: &str, topic: &str, key: &str) -> Vec<OwnedMessage> {
    messages_with_keys(brokers, topic, &[key])
}

/// Waits until a message with `key` is on `topic`.
pub async fn wait_published(brokers: &str, topic: &str, key: &str) {
    eventually(&format!("a message of {key} on {topic}"), || async {
        (!messages_with_key(brokers, topic, key).is_empty()).then_some(())
    })
    .await;
}

/// Every message on `topic` whose key is one of `keys`, in one pass.
pub fn messages_with_keys(brokers: &str, topic: &str, keys: &[&str]) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer = saga_runtime::kafka::client(brokers)
        .set("group.id", crate::unique("inspect"))
        .set("enable.auto.commit", "false")
        .set("log_level", "3")
        .create()
        .expect("consumer");
    let mut found = Vec::new();
    {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
        let partitions: Vec<i32> =
            metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
        for partition in partitions {
            let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)).expect("watermarks");
            if high <= low {
                continue;
            }
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, partition, Offset::Offset(low)).expect("offset");
            consumer.assign(&tpl).expect("assign");
            drop(tpl);
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                match consumer.poll(Duration::from_millis(500)) {
                    Some(Ok(m)) => {
                        let done = m.offset() + 1 >= high;
                        if m.key().is_some_and(|k| keys.iter().any(|key| key.as_bytes() == k)) {
                            found.push(m.detach());
                        }
                        if done {
                            break;
                        }
                    }
                    Some(Err(e)) => panic!("Kafka error: {e}"),
                    None => assert!(std::time::Instant::now() < deadline, "cannot read {topic}/{partition}"),
                }
            }
        }
        // Release the assignment before the consumer drops (librdkafka hangs otherwise).
        let _ = consumer.unassign();
    }
    found
}

pub fn header(message: &OwnedMessage, name: &str) -> Option<String> {
    let headers = message.headers()?;
    headers.iter().find(|h| h.key == name).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Re-produces `message` (same key, bytes and headers) to its topic.
pub async fn reproduce(producer: &FutureProducer, message: &OwnedMessage) {
    reproduce_to(producer, message, message.topic()).await;
}

/// Produces a copy of `message` (same key, bytes and headers) to `topic`.
pub async fn reproduce_to(producer: &FutureProducer, message: &OwnedMessage, topic: &str) {
    let mut record: FutureRecord<'_, [u8], [u8]> =
        FutureRecord::to(topic).payload(message.payload().unwrap_or_default());
    if let Some(key) = message.key() {
        record = record.key(key);
    }
    if let Some(headers) = message.headers() {
        record = record.headers(headers.clone());
    }
    producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("re-produce");
}

/// Waits until consumer group `group` committed past `offset` on `topic`/`partition`.
pub async fn wait_consumed(brokers: &str, group: &str, topic: &str, partition: i32, offset: i64) {
    let brokers = brokers.to_owned();
    let group = group.to_owned();
    let topic = topic.to_owned();
    eventually(&format!("group {group} to consume {topic}/{partition}@{offset}"), || {
        let (brokers, group, topic) = (brokers.clone(), group.clone(), topic.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                let consumer: BaseConsumer = saga_runtime::kafka::client(&brokers)
                    .set("group.id", &group)
                    .set("log_level", "3")
                    .create()
                    .ok()?;
                let committed = {
                    let mut tpl = TopicPartitionList::new();
                    tpl.add_partition(&topic, partition);
                    let result = consumer.committed_offsets(tpl, Duration::from_secs(5)).ok()?;
                    let off = result.find_partition(&topic, partition).map(|e| e.offset());
                    drop(result);
                    off
                };
                match committed {
                    Some(Offset::Offset(o)) if o > offset => Some(()),
                    _ => None,
                }
            })
            .await
            .ok()
            .flatten()
        }
    })
    .await;
}

/// A private saga: the three service binaries on ports they choose, with fresh
/// databases and their own prefixed topics on the stack's broker.
pub struct PrivateSaga {
    pub prefix: String,
    pub brokers: String,
    databases: Vec<(String, String)>,
    children: Vec<Option<tokio::process::Child>>,
    /// Per service: its gRPC port, 0 until it has said which it took.
    ports: Vec<u16>,
    /// Per service: the length of its log when it was last started, where
    /// that start's lines begin.
    log_starts: Vec<u64>,
    env: Vec<(String, String)>,
    /// Per service: settings of its own, over `env` ([`PrivateSaga::set_env`]).
    service_env: Vec<Vec<(String, String)>>,
    /// Per service: the address its database connections go to, when not
    /// straight to PostgreSQL (a proxy a test can cut).
    database_addr: Vec<Option<std::net::SocketAddr>>,
    log_dir: PathBuf,
    /// Further instances of a service ([`PrivateSaga::start_replica`]), killed when dropped.
    replicas: Vec<tokio::process::Child>,
}

/// The saga's services, as the spec lists them.
pub use saga_generated::topology::SERVICES;

fn binary(stack: &StackConfig, service: &str) -> PathBuf {
    let service = services().into_iter().find(|s| s.name == service).expect("a service of the spec");
    stack.service_binary(&service)
}

impl PrivateSaga {
    /// Starts every service the spec lists; `env` adds settings (e.g. shorter timeouts).
    pub async fn start(stack: &StackConfig, env: &[(&str, &str)]) -> PrivateSaga {
        PrivateSaga::start_on(stack, &stack.kafka_brokers(), env).await
    }

    /// Starts every service on the Kafka broker at `brokers` (one the
    /// test started, `crate::broker::PrivateBroker`) instead of the stack's.
    pub async fn start_on(stack: &StackConfig, brokers: &str, env: &[(&str, &str)]) -> PrivateSaga {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let prefix = format!("t{}.", &id[..12]);
        let brokers = brokers.to_owned();
        create_topics(&brokers, &prefix).await;
        let admin = sqlx::PgPool::connect(&stack.postgres_admin_url("postgres")).await.expect("admin connection");
        let mut databases = Vec::new();
        for service in SERVICES {
            let db = format!("t{}_{service}", &id[..12]);
            sqlx::query(&format!("CREATE DATABASE {db}")).execute(&admin).await.expect("create database");
            databases.push(((*service).to_owned(), db));
        }
        admin.close().await;
        let log_dir = std::env::temp_dir().join(format!("saga-test-{}", &id[..12]));
        std::fs::create_dir_all(&log_dir).expect("log dir");
        let mut saga = PrivateSaga {
            prefix,
            brokers,
            databases,
            children: SERVICES.iter().map(|_| None).collect(),
            ports: SERVICES.iter().map(|_| 0).collect(),
            log_starts: SERVICES.iter().map(|_| 0).collect(),
            env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            service_env: SERVICES.iter().map(|_| Vec::new()).collect(),
            database_addr: SERVICES.iter().map(|_| None).collect(),
            log_dir,
            replicas: Vec::new(),
        };
        for i in 0..SERVICES.len() {
            saga.spawn(stack, i);
        }
        for i in 0..SERVICES.len() {
            saga.wait_healthy(stack, i).await;
        }
        saga
    }

    fn index(service: &str) -> usize {
        SERVICES.iter().position(|s| *s == service).expect("known service")
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.log_dir.join(format!("{}.log", SERVICES[i]))
    }

    /// The log of `service`'s first instance.
    pub fn log_of(&self, service: &str) -> PathBuf {
        self.log_path(Self::index(service))
    }

    /// Starts service `i` on its port, or on one it chooses while it has none.
    fn spawn(&mut self, stack: &StackConfig, i: usize) {
        let service = SERVICES[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path(i)).expect("log file");
        self.log_starts[i] = log.metadata().expect("log metadata").len();
        let mut command = self.command(stack, i, self.ports[i], log);
        let child = command.spawn().unwrap_or_else(|e| {
            panic!("cannot start {service} ({e}); build the services first (cargo xtask up builds them)")
        });
        self.children[i] = Some(child);
    }

    /// Starts one more instance of `service`, beside the first: the same
    /// database, topics and consumer group, on a port it chooses. Returns its
    /// URL and its log once it passes its health check.
    pub async fn start_replica(&mut self, stack: &StackConfig, service: &str) -> (String, PathBuf) {
        let i = Self::index(service);
        let log_path = self.log_dir.join(format!("{service}-replica{}.log", self.replicas.len() + 1));
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = self.command(stack, i, 0, log).spawn().expect("start a replica");
        self.replicas.push(child);
        let deadline = tokio::time::Instant::now() + EVENTUALLY;
        loop {
            let said = std::fs::read_to_string(&log_path)
                .ok()
                .and_then(|lines| crate::logged_address(&lines, "gRPC server listening"));
            if let Some(addr) = said {
                let url = format!("https://127.0.0.1:{}", addr.port());
                if Self::healthy_at(service, &url).await {
                    return (url, log_path);
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "a replica of {service} never became healthy");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The command that starts an instance of service `i` on `port` (0: one it chooses), logging to `log`.
    fn command(&self, stack: &StackConfig, i: usize, port: u16, log: std::fs::File) -> tokio::process::Command {
        let service = SERVICES[i];
        let mut database_url = stack.postgres_admin_url(&self.databases[i].1);
        if let Some(addr) = self.database_addr[i] {
            let direct = format!("@{}:{}/", stack.host(), stack.ports.postgres);
            database_url = database_url.replace(&direct, &format!("@{addr}/"));
        }
        let mut command = tokio::process::Command::new(binary(stack, service));
        command
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            // Metrics on a port of their own: the default (the port plus 100) may be taken.
            .env("METRICS_LISTEN", "127.0.0.1:0")
            .env("DATABASE_URL", database_url)
            .env("KAFKA_BROKERS", &self.brokers)
            .env("TOPIC_PREFIX", &self.prefix)
            .env("DATABASE_MAX_CONNECTIONS", "5")
            .envs(saga_stack::services::service_tls_env(stack, service))
            // Topics of its own prefix, which no service's grants name: as the super user.
            .envs(saga_stack::kafka_access::env(stack, saga_stack::kafka_access::ADMIN).expect("credentials"))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(self.service_env[i].iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        command
    }

    /// Waits until service `i` has said which port it listens on and passes
    /// its health check there. Only a port the service took itself is
    /// trusted: a port picked free beforehand can be taken by another test's
    /// service in between, whose health check then answers for a process
    /// that has exited (CI lost tests that way). A restart keeps the port the
    /// clients know; should another process hold it by then, the service
    /// exits and is started again on a port it chooses.
    async fn wait_healthy(&mut self, stack: &StackConfig, i: usize) {
        let service = SERVICES[i];
        for attempt in 1..=3 {
            let deadline = tokio::time::Instant::now() + EVENTUALLY;
            let mut listening = false;
            loop {
                if !listening && let Some(port) = self.port_said(i) {
                    self.ports[i] = port;
                    listening = true;
                }
                if listening && self.passes_health_check(i).await {
                    return;
                }
                let exited = self.children[i].as_mut().and_then(|child| child.try_wait().ok().flatten());
                if let Some(status) = exited {
                    eprintln!(
                        "{service} exited while starting ({status}, attempt {attempt}); see {}",
                        self.log_dir.join(format!("{service}.log")).display()
                    );
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "timed out waiting for {service} to pass its gRPC health check"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            if attempt < 3 {
                self.ports[i] = 0;
                self.spawn(stack, i);
            }
        }
        panic!("{service} exited three times while starting; see {}", self.log_dir.display());
    }

    /// The port of the "gRPC server listening" line service `i` logged since
    /// it was last started.
    fn port_said(&self, i: usize) -> Option<u16> {
        use std::io::{Read, Seek};
        let mut log = std::fs::File::open(self.log_path(i)).ok()?;
        log.seek(std::io::SeekFrom::Start(self.log_starts[i])).ok()?;
        let mut lines = String::new();
        log.read_to_string(&mut lines).ok()?;
        crate::logged_address(&lines, "gRPC server listening").map(|addr| addr.port())
    }

    async fn passes_health_check(&self, i: usize) -> bool {
        Self::healthy_at(SERVICES[i], &self.url(SERVICES[i])).await
    }

    /// Whether the instance of `service` at `url` says it serves.
    async fn healthy_at(service: &str, url: &str) -> bool {
        // The port is taken before the service is ready to answer: a check
        // must not hang on a connection its server does not yet read.
        let operator = saga_proto::tls::OPERATOR;
        let Ok(endpoint) = saga_stack::services::channel_as(&crate::stack(), operator, service, url) else {
            return false;
        };
        let endpoint = endpoint.timeout(Duration::from_secs(2)).connect_timeout(Duration::from_secs(2));
        let Ok(channel) = endpoint.connect().await else { return false };
        let reply = tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
            .await;
        reply.is_ok_and(|reply| reply.into_inner().status == 1)
    }

    pub fn url(&self, service: &str) -> String {
        format!("https://127.0.0.1:{}", self.ports[Self::index(service)])
    }

    pub async fn clients(&self) -> Clients {
        Clients::at(self.url("order"), self.url("product"), self.url("user")).await
    }

    /// URL of `service`'s database, as the administrator.
    pub fn database_url(&self, stack: &StackConfig, service: &str) -> String {
        stack.postgres_admin_url(&self.databases[Self::index(service)].1)
    }

    pub fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub fn group(&self, service: &str) -> String {
        let group = saga_generated::topology::consumer_group(service).expect("a consuming service");
        format!("{}{}", self.prefix, group.group_id)
    }

    /// SIGTERM and wait for a clean exit.
    pub async fn stop(&mut self, service: &str) {
        let i = Self::index(service);
        if let Some(mut child) = self.children[i].take() {
            if let Some(pid) = child.id() {
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
            }
            let status = tokio::time::timeout(EVENTUALLY, child.wait()).await.expect("service stops on SIGTERM");
            assert!(status.expect("wait").success(), "{service} exited uncleanly on SIGTERM");
        }
    }

    /// SIGKILL: no chance to finish anything.
    pub async fn kill(&mut self, service: &str) {
        let i = Self::index(service);
        if let Some(mut child) = self.children[i].take() {
            child.kill().await.expect("SIGKILL");
        }
    }

    /// Sets `key` to `value` for `service` alone, from its next (re)start on.
    pub fn set_env(&mut self, service: &str, key: &str, value: &str) {
        let env = &mut self.service_env[Self::index(service)];
        env.retain(|(k, _)| k != key);
        env.push((key.to_owned(), value.to_owned()));
    }

    pub async fn restart(&mut self, stack: &StackConfig, service: &str) {
        let i = Self::index(service);
        self.spawn(stack, i);
        self.wait_healthy(stack, i).await;
    }

    /// Restarts `service` with its database behind a proxy the test can cut:
    /// an outage of that service's database alone.
    pub async fn proxy_database(&mut self, stack: &StackConfig, service: &str) -> crate::proxy::Proxy {
        let upstream = format!("{}:{}", stack.host(), stack.ports.postgres).parse().expect("PostgreSQL address");
        let proxy = crate::proxy::Proxy::start(upstream).await;
        self.stop(service).await;
        self.database_addr[Self::index(service)] = Some(proxy.addr());
        self.restart(stack, service).await;
        proxy
    }

    /// Stops everything, drops the databases and deletes the topics.
    pub async fn shutdown(mut self, stack: &StackConfig) {
        for replica in &mut self.replicas {
            let _ = replica.kill().await;
        }
        for service in SERVICES {
            self.stop(service).await;
        }
        if let Ok(admin) = saga_runtime::kafka::client(&self.brokers).create::<AdminClient<DefaultClientContext>>() {
            let names: Vec<String> = saga_generated::topology::TOPICS
                .iter()
                .flat_map(|t| [self.topic(t.name), self.topic(t.dlq)])
                .chain([self.topic(saga_generated::topology::SCHEMA_TOPIC)])
                .collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let _ = admin.delete_topics(&refs, &AdminOptions::new()).await;
        }
        if let Ok(admin) = sqlx::PgPool::connect(&stack.postgres_admin_url("postgres")).await {
            for (_, db) in &self.databases {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&admin).await;
            }
            admin.close().await;
        }
        let _ = std::fs::remove_dir_all(&self.log_dir);
    }
}

pub async fn create_topics(brokers: &str, prefix: &str) {
    let admin: AdminClient<DefaultClientContext> =
        saga_runtime::kafka::client(brokers).set("log_level", "3").create().expect("admin");
    // The spec's partition counts: a service refuses to start against any other.
    let names: Vec<(String, i32)> = saga_generated::topology::TOPICS
        .iter()
        .flat_map(|t| [(format!("{prefix}{}", t.name), t.partitions), (format!("{prefix}{}", t.dlq), t.partitions)])
        .collect();
    let schemas = format!("{prefix}{}", saga_generated::topology::SCHEMA_TOPIC);
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|(n, p)| NewTopic::new(n, *p, TopicReplication::Fixed(1)))
        .chain([NewTopic::new(&schemas, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact")])
        .collect();
    // A busy broker (several tests at once on two cores) may time out: retry;
    // a topic created by an earlier attempt counts as created.
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let mut attempt = 0;
    loop {
        attempt += 1;
        let outcome = match admin.create_topics(&topics, &options).await {
            Ok(results) => results
                .into_iter()
                .map(|r| match r {
                    Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => Ok(()),
                    Err((topic, code)) => Err(format!("{topic}: {code}")),
                })
                .collect::<Result<Vec<()>, String>>()
                .map(|_| ()),
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(()) => return,
            Err(e) if attempt >= 5 => panic!("cannot create topics: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// A private saga with a console reading its databases and topics, and a gateway in front of
/// both: what an operator reaches at `<gateway>/console`.
pub async fn saga_with_console(
    stack: &StackConfig,
) -> (PrivateSaga, crate::console::PrivateConsole, crate::http::PrivateGateway) {
    let saga = PrivateSaga::start(stack, &[]).await;
    let databases: Vec<(&str, String)> = SERVICES.iter().map(|s| (*s, saga.database_url(stack, s))).collect();
    let console = crate::console::PrivateConsole::start(stack, &saga.prefix, &databases).await;
    let (order_url, product_url, user_url) = (saga.url("order"), saga.url("product"), saga.url("user"));
    let gateway = crate::http::PrivateGateway::start(
        stack,
        &[
            ("CONSOLE_URL", &console.url),
            ("ORDER_GRPC_URL", &order_url),
            ("PRODUCT_GRPC_URL", &product_url),
            ("USER_GRPC_URL", &user_url),
        ],
    )
    .await;
    (saga, console, gateway)
}
