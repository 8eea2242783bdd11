//! The load generator: sets up users and products through the gateway's
//! admin API, then drives orders closed loop (N clients) and open loop (fixed
//! arrival rate), measuring `POST /orders` to terminal status.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use rand::Rng;
use reqwest::StatusCode;
use saga_process::http::parse_sse;
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// Statuses that end a saga (the spec's terminal statuses of `order`).
/// Whether an order's status (as the gateway shows it) is one the saga ends in.
pub fn is_terminal(status: &str) -> bool {
    status.parse::<saga_generated::OrderStatus>().is_ok_and(|s| s.is_terminal())
}

/// How a client learns that its saga ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum WaitBy {
    /// The order's event stream (`GET /orders/{id}/events`), which the
    /// gateway pushes as the order service's change feed reports: the client
    /// knows as soon as the gateway does and places its next order at once.
    #[default]
    Stream,
    /// `GET /orders/{id}` every [`POLL_EVERY`], as the benchmark did before
    /// the event stream was pushed: a closed-loop client then waits up to a
    /// poll period after its saga ended, and every poll costs a read.
    Poll,
}

/// The poll period of [`WaitBy::Poll`]. Either way the latency comes from
/// the terminal history row's `at` (the order service's clock, same
/// machine), so it is exact whatever the client waits with.
const POLL_EVERY: Duration = Duration::from_millis(100);

/// A saga that has not ended after this long counts as timed out.
const SAGA_TIMEOUT: Duration = Duration::from_secs(90);

/// One logged-in customer.
#[derive(Debug, Clone)]
pub struct Customer {
    pub token: String,
    /// A customer with no money: every order of theirs fails payment.
    pub poor: bool,
}

/// What the setup created; everything the load needs.
#[derive(Debug)]
pub struct World {
    pub rich: Vec<Customer>,
    pub poor: Vec<Customer>,
    /// Products with far more stock than the run can sell.
    pub stocked: Vec<String>,
    /// A product with no stock at all: every order of it fails its reservation.
    pub short: String,
}

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    /// How [`Api::wait_for_end`] learns a saga ended.
    wait_by: WaitBy,
}

impl Api {
    pub fn new(base: &str) -> anyhow::Result<Api> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .timeout(Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?;
        Ok(Api { http, base: base.trim_end_matches('/').to_owned(), wait_by: WaitBy::default() })
    }

    /// The same client, waiting for sagas with `wait_by`.
    pub fn waiting_by(self, wait_by: WaitBy) -> Api {
        Api { wait_by, ..self }
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let (status, _, value) = self.send_with_headers(method, path, token, key, body).await?;
        Ok((status, value))
    }

    /// [`Api::send`], with the reply's headers.
    pub async fn send_with_headers(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<(StatusCode, reqwest::header::HeaderMap, Value)> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await?;
        // Error bodies are JSON too; an empty body (204) is Null.
        let value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        Ok((status, headers, value))
    }

    async fn expect(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: &Value,
        want: StatusCode,
    ) -> anyhow::Result<Value> {
        let (status, value) = self.send(method, path, token, None, Some(body)).await?;
        if status != want {
            bail!("{path}: expected {want}, got {status}: {value}");
        }
        Ok(value)
    }

    /// Logs in; a login the gateway could not finish in time (the user
    /// service is busy hashing) is tried again a few times.
    async fn login(&self, email: &str, password: &str) -> anyhow::Result<String> {
        let body = json!({ "email": email, "password": password });
        let path = "/api/v1/auth/login";
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (status, reply) = self.send(reqwest::Method::POST, path, None, None, Some(&body)).await?;
            if status == StatusCode::OK {
                return reply["token"].as_str().map(str::to_owned).context("login reply without a token");
            }
            if status != StatusCode::GATEWAY_TIMEOUT || attempt == 5 {
                bail!("{path}: expected 200 OK, got {status}: {reply}");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// The gateway ensures the admin in the background at start-up: retry a while.
    async fn admin_token(&self, email: &str, password: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.login(email, password).await {
                Ok(token) => return Ok(token),
                Err(error) if Instant::now() > deadline => return Err(error.context("admin login")),
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    async fn customer(&self, admin: &str, run: &str, n: usize, credit: i64) -> anyhow::Result<Customer> {
        let email = format!("bench-{run}-{n}@example.com");
        let password = "bench password 1";
        let body = json!({ "email": email, "password": password });
        let user =
            self.expect(reqwest::Method::POST, "/api/v1/auth/register", None, &body, StatusCode::CREATED).await?;
        let id = user["id"].as_str().context("register reply without an id")?.to_owned();
        if credit > 0 {
            let body = json!({ "amount_minor": credit });
            let path = format!("/api/v1/admin/users/{id}/credit");
            self.expect(reqwest::Method::POST, &path, Some(admin), &body, StatusCode::OK).await?;
        }
        Ok(Customer { token: self.login(&email, password).await?, poor: credit == 0 })
    }

    async fn product(&self, admin: &str, name: String, price: i64, stock: i64) -> anyhow::Result<String> {
        let body = json!({ "name": name, "price_minor": price, "initial_stock": stock });
        let reply =
            self.expect(reqwest::Method::POST, "/api/v1/products", Some(admin), &body, StatusCode::CREATED).await?;
        reply["id"].as_str().map(str::to_owned).context("product reply without an id")
    }

    /// `GET /orders/{id}`: the order's status and, once it is terminal, when
    /// it became so (the `at` of the history row that entered that status).
    pub async fn order_status(&self, token: &str, order_id: &str) -> anyhow::Result<OrderView> {
        let (status, body) =
            self.send(reqwest::Method::GET, &format!("/api/v1/orders/{order_id}"), Some(token), None, None).await?;
        if status != StatusCode::OK {
            bail!("GET order: {status}: {body}");
        }
        OrderView::of(order_id, &body)
    }

    /// Waits until the order is terminal (at most `within`), the way the
    /// client was set up to ([`WaitBy`]), and returns it.
    pub async fn wait_for_end(&self, token: &str, order_id: &str, within: Duration) -> anyhow::Result<OrderView> {
        let deadline = Instant::now() + within;
        match self.wait_by {
            WaitBy::Stream => {
                // The stream closes after its `end` event; it carries the final order.
                let response = self
                    .http
                    .get(format!("{}/api/v1/orders/{order_id}/events", self.base))
                    .bearer_auth(token)
                    .timeout(within)
                    .send()
                    .await?;
                let status = response.status();
                let text = response.text().await.with_context(|| format!("event stream of {order_id}"))?;
                if status != StatusCode::OK {
                    bail!("GET order events: {status}: {text}");
                }
                let events = parse_sse(&text);
                match events.iter().find(|(event, _)| event == "end" || event == "error") {
                    Some((event, order)) if event == "end" => OrderView::of(order_id, order),
                    Some((_, error)) => bail!("order {order_id}'s event stream failed: {error}"),
                    None => bail!("order {order_id}'s event stream closed without its end: {text}"),
                }
            }
            WaitBy::Poll => loop {
                tokio::time::sleep(POLL_EVERY).await;
                let view = self.order_status(token, order_id).await?;
                if view.ended_at.is_some() {
                    return Ok(view);
                }
                if Instant::now() > deadline {
                    bail!("order {order_id} still {} after {within:?}", view.status);
                }
            },
        }
    }
}

impl OrderView {
    /// The order as the gateway shows it (`GET /orders/{id}`, or an event
    /// stream's `end`): once terminal, when it became so.
    fn of(order_id: &str, body: &Value) -> anyhow::Result<OrderView> {
        let status = body["status"].as_str().context("order without a status")?.to_owned();
        let failure_reason = body["failure_reason"].as_str().unwrap_or_default().to_owned();
        if !is_terminal(&status) {
            return Ok(OrderView { status, failure_reason, ended_at: None });
        }
        let at = body["history"]
            .as_array()
            .and_then(|rows| rows.iter().rev().find(|row| row["to_status"] == status.as_str()))
            .and_then(|row| row["at"].as_str())
            .with_context(|| format!("terminal order {order_id} without its history row"))?;
        let at = chrono::DateTime::parse_from_rfc3339(at).with_context(|| format!("history time {at:?}"))?;
        Ok(OrderView { status, failure_reason, ended_at: Some(at.with_timezone(&chrono::Utc).into()) })
    }
}

/// An order as `GET /orders/{id}` shows it.
#[derive(Debug, Clone)]
pub struct OrderView {
    pub status: String,
    /// Why it failed (empty unless it did).
    pub failure_reason: String,
    /// When it became terminal; `None` while it runs.
    pub ended_at: Option<SystemTime>,
}

/// Registers `users` customers (a tenth of them without money) and `products`
/// products plus one without stock. Not measured.
pub async fn setup(api: &Api, admin: (&str, &str), users: usize, products: usize) -> anyhow::Result<World> {
    let admin = api.admin_token(admin.0, admin.1).await?;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let run = &run[..8];
    let credit_minor = 1_000_000_000_000;
    // Registration and login hash passwords (argon2): a few at a time, or the
    // user service queues them all behind one another.
    let mut customers = Vec::with_capacity(users);
    for chunk in (0..users).collect::<Vec<_>>().chunks(8) {
        let batch = chunk.iter().map(|&n| {
            let api = api.clone();
            let admin = admin.clone();
            let run = run.to_owned();
            // Every tenth customer gets nothing: their orders fail payment.
            let credit = if n % 10 == 9 { 0 } else { credit_minor };
            tokio::spawn(async move { api.customer(&admin, &run, n, credit).await })
        });
        for handle in batch.collect::<Vec<_>>() {
            customers.push(handle.await??);
        }
    }
    let mut stocked = Vec::with_capacity(products);
    for n in 0..products {
        let price = 100 + (n as i64 * 37) % 9_900;
        stocked.push(api.product(&admin, format!("bench {run} #{n}"), price, 1_000_000_000).await?);
    }
    let short = api.product(&admin, format!("bench {run} out of stock"), 500, 0).await?;
    let (poor, rich): (Vec<Customer>, Vec<Customer>) = customers.into_iter().partition(|c| c.poor);
    if rich.is_empty() || poor.is_empty() {
        bail!("need at least 10 users for the outcome mix");
    }
    Ok(World { rich, poor, stocked, short })
}

/// Latencies and outcomes of one phase.
#[derive(Debug)]
pub struct Phase {
    pub name: String,
    pub elapsed: Duration,
    /// Every order the phase placed that ended, for its hops (`hops.rs`).
    pub placed: Vec<Placed>,
    /// `POST /orders` to terminal status, microseconds (open loop: from the intended send time).
    pub latency: Histogram<u64>,
    pub completed: u64,
    pub stock_failed: u64,
    pub payment_failed: u64,
    pub shipping_failed: u64,
    pub cancelled: u64,
    /// Requests refused or sagas not ended within the timeout.
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Phase {
    fn new(name: String) -> Phase {
        Phase {
            name,
            elapsed: Duration::ZERO,
            placed: Vec::new(),
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid"),
            completed: 0,
            stock_failed: 0,
            payment_failed: 0,
            shipping_failed: 0,
            cancelled: 0,
            errors: 0,
            first_error: None,
        }
    }

    pub fn terminal(&self) -> u64 {
        self.completed + self.stock_failed + self.payment_failed + self.shipping_failed + self.cancelled
    }

    /// Sagas that ended per second of the phase.
    pub fn rate(&self) -> f64 {
        self.terminal() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn record(&mut self, outcome: anyhow::Result<(String, Duration)>) {
        match outcome {
            Ok((status, latency)) => {
                // Saturate instead of failing: a latency beyond the bounds is still a sample.
                self.latency.saturating_record(latency.as_micros().try_into().unwrap_or(u64::MAX));
                match status.as_str() {
                    "completed" => self.completed += 1,
                    "inventory_reserved_failed" => self.stock_failed += 1,
                    "payment_failed" => self.payment_failed += 1,
                    "shipping_failed" => self.shipping_failed += 1,
                    _ => self.cancelled += 1,
                }
            }
            Err(error) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| format!("{error:#}"));
            }
        }
    }

    /// [`Phase::record`] for a saga, keeping the order it placed.
    fn record_saga(&mut self, outcome: anyhow::Result<Ended>) {
        let outcome = outcome.map(|ended| {
            self.placed.push(ended.placed);
            (ended.status, ended.latency)
        });
        self.record(outcome);
    }

    fn merge(&mut self, other: Phase) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        self.placed.extend(other.placed);
        self.completed += other.completed;
        self.stock_failed += other.stock_failed;
        self.payment_failed += other.payment_failed;
        self.shipping_failed += other.shipping_failed;
        self.cancelled += other.cancelled;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Picks the n-th order: 10 % from a customer without money, 10 % of the
/// product without stock, the rest should complete. Returns the customer,
/// the items, and the terminal status the order reaches when nothing goes
/// wrong.
pub fn pick(world: &World, n: u64) -> (&Customer, Value, &'static str) {
    let mut rng = rand::rng();
    let quantity = rng.random_range(1..=3);
    let rich = &world.rich[rng.random_range(0..world.rich.len())];
    let stocked = &world.stocked[rng.random_range(0..world.stocked.len())];
    match n % 10 {
        0 => (rich, json!([{ "product_id": world.short, "quantity": quantity }]), "inventory_reserved_failed"),
        1 => (
            &world.poor[rng.random_range(0..world.poor.len())],
            json!([{ "product_id": stocked, "quantity": quantity }]),
            "payment_failed",
        ),
        _ => (rich, json!([{ "product_id": stocked, "quantity": quantity }]), "completed"),
    }
}

/// An order a phase placed: its id, when it was meant to be sent (the
/// latency's start) and when the gateway answered.
#[derive(Debug, Clone)]
pub struct Placed {
    pub order_id: uuid::Uuid,
    pub since: SystemTime,
    pub answered: SystemTime,
}

/// How one saga ended, as the client saw it.
struct Ended {
    status: String,
    /// From `since` to the terminal transition.
    latency: Duration,
    placed: Placed,
}

/// One saga: place the order, wait until it is terminal. Returns the
/// terminal status and the latency from `since` (wall clock) to the terminal
/// transition.
async fn saga(api: &Api, world: &World, n: u64, since: SystemTime) -> anyhow::Result<Ended> {
    let (customer, items, _) = pick(world, n);
    let key = uuid::Uuid::new_v4().to_string();
    let body = json!({ "items": items });
    let (status, reply) =
        api.send(reqwest::Method::POST, "/api/v1/orders", Some(&customer.token), Some(&key), Some(&body)).await?;
    if status != StatusCode::CREATED {
        bail!("POST /orders: {status}: {reply}");
    }
    let answered = SystemTime::now();
    let order_id = reply["id"].as_str().context("order reply without an id")?.to_owned();
    let view = api.wait_for_end(&customer.token, &order_id, SAGA_TIMEOUT).await?;
    let ended_at = view.ended_at.context("an order that ended without its time")?;
    Ok(Ended {
        status: view.status,
        latency: ended_at.duration_since(since).unwrap_or(Duration::ZERO),
        placed: Placed { order_id: order_id.parse().context("an order id that is no UUID")?, since, answered },
    })
}

/// `clients` concurrent clients, each placing its next order as soon as the
/// previous saga ended, for `duration`.
pub async fn closed_loop(api: &Api, world: Arc<World>, clients: usize, duration: Duration) -> Phase {
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (api, world, counter) = (api.clone(), world.clone(), counter.clone());
            tokio::spawn(async move {
                let mut phase = Phase::new(String::new());
                while Instant::now() < end {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    phase.record_saga(saga(&api, &world, n, SystemTime::now()).await);
                }
                phase
            })
        })
        .collect();
    let mut total = Phase::new(format!("closed loop, {clients} clients"));
    for task in tasks {
        match task.await {
            Ok(phase) => total.merge(phase),
            Err(error) => total.record(Err(error.into())),
        }
    }
    total.elapsed = start.elapsed();
    total
}

/// Orders sent at fixed intended times (`rate` per second) for `duration`,
/// whatever happened to earlier ones; latency counts from the intended time,
/// so a stalled system is charged for the orders it delayed (no coordinated
/// omission).
pub async fn open_loop(api: &Api, world: Arc<World>, rate: f64, duration: Duration) -> Phase {
    let total = Arc::new(Mutex::new(Phase::new(format!("open loop, {rate:.0}/s"))));
    let period = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let count = (duration.as_secs_f64() * rate).round() as u64;
    let start = tokio::time::Instant::now();
    let wall_start = SystemTime::now();
    let mut tasks = Vec::with_capacity(count as usize);
    for n in 0..count {
        let offset = period.mul_f64(n as f64);
        tokio::time::sleep_until(start + offset).await;
        let (api, world, total) = (api.clone(), world.clone(), total.clone());
        tasks.push(tokio::spawn(async move {
            let outcome = saga(&api, &world, n, wall_start + offset).await;
            total.lock().await.record_saga(outcome);
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let mut total = Arc::try_unwrap(total).map(Mutex::into_inner).unwrap_or_else(|_| Phase::new(String::new()));
    // The measured window is the sending window: arrivals, not departures, are fixed.
    total.elapsed = duration;
    total
}

/// The gateway's own throughput for `GET /orders/{id}` over existing orders:
/// `clients` clients as fast as they can for `duration`.
pub async fn read_throughput(api: &Api, world: &World, clients: usize, duration: Duration) -> anyhow::Result<Phase> {
    // A few orders to read: the customer's own, so the read is authorised.
    let customer = world.rich[0].clone();
    let mut orders = Vec::new();
    for n in 0..10u64 {
        let key = uuid::Uuid::new_v4().to_string();
        let body =
            json!({ "items": [{ "product_id": world.stocked[n as usize % world.stocked.len()], "quantity": 1 }] });
        let (status, reply) =
            api.send(reqwest::Method::POST, "/api/v1/orders", Some(&customer.token), Some(&key), Some(&body)).await?;
        if status != StatusCode::CREATED {
            bail!("POST /orders: {status}: {reply}");
        }
        orders.push(reply["id"].as_str().context("order reply without an id")?.to_owned());
    }
    let orders = Arc::new(orders);
    let start = Instant::now();
    let end = start + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (api, orders, token) = (api.clone(), orders.clone(), customer.token.clone());
            tokio::spawn(async move {
                let mut phase = Phase::new(String::new());
                let mut n = c;
                while Instant::now() < end {
                    let since = Instant::now();
                    let outcome = api.order_status(&token, &orders[n % orders.len()]).await.map(|view| view.status);
                    // Any answer counts as a read; it is the gateway's speed that is measured.
                    phase.record(outcome.map(|_| ("completed".to_owned(), since.elapsed())));
                    n += 1;
                }
                phase
            })
        })
        .collect();
    let mut total = Phase::new(format!("GET /orders/{{id}}, {clients} clients"));
    for task in tasks {
        match task.await {
            Ok(phase) => total.merge(phase),
            Err(error) => total.record(Err(error.into())),
        }
    }
    total.elapsed = start.elapsed();
    Ok(total)
}
