//! Helpers for tests of the REST gateway: a small client for its API and a
//! private gateway process for tests that need other settings (short session
//! TTLs, low rate limits) without disturbing the stack's own gateway.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use saga_stack::StackConfig;
use serde_json::{Value, json};

use crate::unique;

/// A response: status, headers of interest, JSON body (`Null` when empty or not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub retry_after: Option<String>,
    pub headers: reqwest::header::HeaderMap,
}

/// A client of one gateway.
#[derive(Debug, Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(base: impl Into<String>) -> Api {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("http client");
        Api { base: base.into(), http }
    }

    /// A client of `base` whose connections come from `local`, a loopback
    /// address other than 127.0.0.1 (all of 127.0.0.0/8 is the machine): a
    /// second client as the gateway's per-IP limits see it.
    pub fn from_address(base: impl Into<String>, local: std::net::IpAddr) -> Api {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .local_address(local)
            .build()
            .expect("http client");
        Api { base: base.into(), http }
    }

    /// The gateway of the stack under test.
    pub fn of_stack(stack: &StackConfig) -> Api {
        Api::new(stack.gateway_url())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Any request; `body` is sent as JSON when given.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Reply {
        let mut request = self.http.request(method.clone(), self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status();
        let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, body, retry_after, headers }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.call(Method::GET, path, token, &[], None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.call(Method::POST, path, token, &[], Some(body)).await
    }

    /// Registers a fresh customer; returns (email, password, user id).
    pub async fn register_customer(&self) -> (String, String, String) {
        let email = format!("{}@example.com", unique("user"));
        let password = "correct horse battery".to_owned();
        let reply = self.post("/api/v1/auth/register", None, &json!({ "email": email, "password": password })).await;
        assert_eq!(reply.status, StatusCode::CREATED, "register: {:?}", reply.body);
        let id = reply.body["id"].as_str().expect("user id").to_owned();
        (email, password, id)
    }

    /// Logs in; panics unless 200. Returns the token.
    pub async fn login(&self, email: &str, password: &str) -> String {
        let reply = self.post("/api/v1/auth/login", None, &json!({ "email": email, "password": password })).await;
        assert_eq!(reply.status, StatusCode::OK, "login {email}: {:?}", reply.body);
        reply.body["token"].as_str().expect("token").to_owned()
    }

    /// A token of the configured admin. The gateway creates the admin in the
    /// background at start, so this retries for a while.
    pub async fn admin_token(&self) -> String {
        let (email, password) = saga_stack::admin_credentials();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let reply = self.post("/api/v1/auth/login", None, &json!({ "email": email, "password": password })).await;
            if reply.status == StatusCode::OK {
                return reply.body["token"].as_str().expect("token").to_owned();
            }
            assert!(Instant::now() < deadline, "admin login keeps failing: {} {:?}", reply.status, reply.body);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// A registered and logged-in customer: (token, user id).
    pub async fn customer(&self) -> (String, String) {
        let (email, password, id) = self.register_customer().await;
        (self.login(&email, &password).await, id)
    }

    /// Creates a product as admin; returns its id.
    pub async fn create_product(&self, admin: &str, price_minor: i64, stock: i64) -> String {
        let body = json!({ "name": unique("product"), "price_minor": price_minor, "initial_stock": stock });
        let reply = self.post("/api/v1/products", Some(admin), &body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "create product: {:?}", reply.body);
        reply.body["id"].as_str().expect("product id").to_owned()
    }

    pub async fn credit(&self, admin: &str, user_id: &str, amount_minor: i64) {
        let reply = self
            .post(
                &format!("/api/v1/admin/users/{user_id}/credit"),
                Some(admin),
                &json!({ "amount_minor": amount_minor }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "credit: {:?}", reply.body);
    }

    pub async fn place_order(&self, token: &str, key: &str, items: &Value) -> Reply {
        self.call(
            Method::POST,
            "/api/v1/orders",
            Some(token),
            &[("Idempotency-Key", key)],
            Some(&json!({ "items": items })),
        )
        .await
    }

    /// Reads `GET /orders/{id}/events` until the server closes it (or the
    /// deadline passes); returns the (event, data) pairs.
    pub async fn order_events(&self, token: &str, order_id: &str, deadline: Duration) -> Vec<(String, Value)> {
        let mut response = self
            .http
            .get(self.url(&format!("/api/v1/orders/{order_id}/events")))
            .bearer_auth(token)
            .timeout(deadline)
            .send()
            .await
            .expect("event stream");
        assert_eq!(response.status(), StatusCode::OK, "events of {order_id}");
        let mut text = String::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => text.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(None) => break,
                Err(error) => panic!("event stream of {order_id} broke off: {error}; so far:\n{text}"),
            }
        }
        parse_sse(&text)
    }
}

/// The event-stream parser the benchmark's clients use.
pub use saga_process::http::parse_sse;

/// A gateway process of its own on a free port, sharing the stack's Redis and
/// backends but with its own Redis key prefix, so its sessions and rate-limit
/// counters are its own. Killed when dropped.
pub struct PrivateGateway {
    child: Child,
    pub api: Api,
}

impl PrivateGateway {
    /// Starts `target/debug/gateway` (built by `cargo xtask up/test`) with the
    /// stack's addresses plus `env`, and waits until `/readyz` says 200, the
    /// admin account is ensured and every backend's API serves: ready for a
    /// test to use all of it. (The gateway's readiness itself waits for
    /// neither: a backend's health, or the user service's, is not the gateway's.)
    pub async fn start(stack: &StackConfig, env: &[(&str, &str)]) -> PrivateGateway {
        let gateway = PrivateGateway::spawn(stack, env).await;
        gateway.wait_until_usable().await;
        gateway
    }

    /// Waits until `/readyz` says 200 with the admin account ensured and an
    /// instance of every backend whose API serves (`ok`, whatever its pipeline).
    pub async fn wait_until_usable(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = self.api.get("/readyz", None).await;
            let backends_serve = ready.body["backends"].as_object().is_some_and(|backends| {
                ["order", "product", "user"]
                    .iter()
                    .all(|s| backends.get(*s).and_then(Value::as_str).is_some_and(|c| c.starts_with("ok")))
            });
            if ready.status == StatusCode::OK && ready.body["checks"]["admin_account"] == "ok" && backends_serve {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "private gateway at {} never became usable: {:?}",
                self.api.base,
                ready.body
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until `path` answers 200.
    pub async fn wait_for(&self, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = self.api.http.get(self.api.url(path)).send().await
                && response.status() == StatusCode::OK
            {
                return;
            }
            assert!(Instant::now() < deadline, "private gateway at {} never answered 200 on {path}", self.api.base);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Starts the gateway like `start` without waiting for it to be ready,
    /// only for it to listen (for gateways meant to be unready, e.g. with a
    /// backend that does not answer). It listens on a port it chooses and
    /// names in its log: a port picked free beforehand can be taken by
    /// another test's process in between.
    pub async fn spawn(stack: &StackConfig, env: &[(&str, &str)]) -> PrivateGateway {
        let binary = stack.binary("gateway");
        let prefix = format!("{}:", unique("test-gateway"));
        let log_path = stack.logs_dir().join(format!("{}.log", prefix.trim_end_matches(':')));
        let log = std::fs::File::create(&log_path).expect("log file");
        let (admin_email, admin_password) = saga_stack::admin_credentials();
        let mut command = Command::new(&binary);
        command
            .env("LISTEN_ADDR", "127.0.0.1:0")
            // Metrics on a port of their own: the default (the port plus 100) may be taken.
            .env("METRICS_LISTEN", "127.0.0.1:0")
            .env("REDIS_URL", stack.redis_url())
            .env("CONSOLE_URL", stack.console_url())
            .env("REDIS_KEY_PREFIX", &prefix)
            .env("ADMIN_EMAIL", admin_email)
            .env("ADMIN_PASSWORD", admin_password)
            // Tests register many customers from one address; tests of the limit set their own.
            .env("REGISTER_LIMIT_PER_IP", "1000000")
            .env("REGISTER_LIMIT_TOTAL", "1000000")
            // The admin logs in from many tests at once; tests of these limits set their own.
            .env("LOGIN_SUCCESS_LIMIT_PER_ACCOUNT", "1000000")
            .env("LOGIN_SUCCESS_LIMIT_PER_IP", "1000000")
            .env("SESSIONS_PER_USER", "100000")
            .stdout(Stdio::null())
            .stderr(log);
        for service in saga_stack::config::services() {
            command.env(format!("{}_GRPC_URL", service.name.to_uppercase()), stack.grpc_url(service));
        }
        command.envs(saga_stack::services::gateway_tls_env(stack));
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let listen = crate::listening(&log_path, "gateway listening", || child.try_wait().ok().flatten()).await;
        PrivateGateway { child, api: Api::new(format!("http://{listen}")) }
    }
}

impl PrivateGateway {
    /// SIGTERM, as an orchestrator stops a pod; waits up to `within` for the exit and
    /// returns its status and how long it took (None: still running then; it is killed).
    pub async fn terminate(mut self, within: Duration) -> (Option<std::process::ExitStatus>, Duration) {
        crate::terminate(&mut self.child, within).await
    }
}

impl Drop for PrivateGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
