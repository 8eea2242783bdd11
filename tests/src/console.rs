//! A console process of its own, reading a private saga's databases and topics.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use saga_stack::StackConfig;

use crate::unique;

/// The console binary on a port it chooses, killed when dropped.
pub struct PrivateConsole {
    child: Child,
    /// `https://...` with the stack's certificates (the gateway's opens it), or `http://...`.
    pub url: String,
    /// Where it serves its Prometheus metrics.
    pub metrics_url: String,
    pub log: std::path::PathBuf,
}

impl PrivateConsole {
    /// Reads `databases` (service name, URL) and the topics under `prefix`; keeps its audit in
    /// the stack's console database (its rows name the prefixed topics, so they stay apart).
    /// Serves mutual TLS with the stack's `console` certificate, answering the gateway's.
    pub async fn start(stack: &StackConfig, prefix: &str, databases: &[(&str, String)]) -> PrivateConsole {
        PrivateConsole::start_with(stack, prefix, databases, true).await
    }

    /// Like [`PrivateConsole::start`], with its TLS files or without (plain HTTP).
    pub async fn start_with(
        stack: &StackConfig,
        prefix: &str,
        databases: &[(&str, String)],
        tls: bool,
    ) -> PrivateConsole {
        // The metrics listener cannot say which port it took, so it gets one that was free
        // a moment ago; should another process take it in between, the console stops at once
        // and starts again on another.
        for _ in 0..5 {
            if let Some(console) = PrivateConsole::spawn(stack, prefix, databases, tls).await {
                console.wait_healthy(stack).await;
                return console;
            }
        }
        panic!("the console did not start in five tries: see its logs in {}", stack.logs_dir().display());
    }

    async fn spawn(
        stack: &StackConfig,
        prefix: &str,
        databases: &[(&str, String)],
        tls: bool,
    ) -> Option<PrivateConsole> {
        let name = unique("test-console");
        let log_path = stack.logs_dir().join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).expect("log file");
        let metrics = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port for the metrics");
        let mut command = Command::new(stack.binary("console"));
        command
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("METRICS_LISTEN", metrics.to_string())
            .env("DATABASE_URL", stack.console_database_url(saga_process::local::CONSOLE_DATABASE))
            .env("KAFKA_BROKERS", stack.kafka_brokers())
            .env("TOPIC_PREFIX", prefix)
            .env("OVERVIEW_EVERY_MS", "500")
            .env("SAGA_EVERY_MS", "200")
            // Prefixed topics, which the console's grants do not name: as the super user.
            .envs(saga_stack::kafka_access::env(stack, saga_stack::kafka_access::ADMIN).expect("credentials"))
            .stdout(Stdio::null())
            .stderr(log);
        if tls {
            command.envs(saga_stack::services::console_tls_env(stack));
        }
        for (service, url) in databases {
            command.env(format!("{}_DATABASE_URL", service.to_uppercase()), url);
        }
        let mut child = command.spawn().expect("start the console (cargo xtask up builds it)");
        let deadline = Instant::now() + Duration::from_secs(60);
        let listen = loop {
            let lines = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(listen) = crate::logged_address(&lines, "console listening") {
                break listen;
            }
            if let Ok(Some(status)) = child.try_wait() {
                assert!(lines.contains("metrics on"), "the console exited ({status}); see {}", log_path.display());
                return None;
            }
            assert!(Instant::now() < deadline, "the console never said where it listens; see {}", log_path.display());
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let scheme = if tls { "https" } else { "http" };
        Some(PrivateConsole {
            child,
            url: format!("{scheme}://{listen}"),
            metrics_url: format!("http://{metrics}/metrics"),
            log: log_path,
        })
    }

    /// A client of this console as `identity` (over mutual TLS with the stack's
    /// certificates), or a plain one for a console without TLS.
    pub fn client_as(&self, stack: &StackConfig, identity: &str) -> reqwest::Client {
        if self.url.starts_with("https://") {
            saga_stack::services::console_client_as(stack, identity).expect("a client with the stack's certificates")
        } else {
            reqwest::Client::new()
        }
    }

    async fn wait_healthy(&self, stack: &StackConfig) {
        let health = format!("{}/healthz", self.url);
        let client = self.client_as(stack, saga_proto::tls::OPERATOR);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !client.get(&health).send().await.is_ok_and(|r| r.status().is_success()) {
            assert!(Instant::now() < deadline, "the console does not answer {health}: see {}", self.log.display());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl PrivateConsole {
    /// SIGTERM, as an orchestrator stops a pod; waits up to `within` for the exit and
    /// returns its status and how long it took (None: still running then; it is killed).
    pub async fn terminate(mut self, within: Duration) -> (Option<std::process::ExitStatus>, Duration) {
        crate::terminate(&mut self.child, within).await
    }
}

impl Drop for PrivateConsole {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
