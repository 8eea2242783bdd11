//! A console process of its own, reading a private saga's databases and topics.

use std::process::{Child, Command, Stdio};

use xtask::stack::StackConfig;

use crate::unique;

/// The console binary on a port it chooses, killed when dropped.
pub struct PrivateConsole {
    child: Child,
    pub url: String,
}

impl PrivateConsole {
    /// Reads `databases` (service name, URL) and the topics under `prefix`; keeps its audit in
    /// the stack's console database (its rows name the prefixed topics, so they stay apart).
    pub async fn start(stack: &StackConfig, prefix: &str, databases: &[(&str, String)]) -> PrivateConsole {
        let name = unique("test-console");
        let log_path = stack.logs_dir().join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut command = Command::new(stack.binary("console"));
        command
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("METRICS_LISTEN", "127.0.0.1:0")
            .env("DATABASE_URL", stack.console_database_url(saga_process::local::CONSOLE_DATABASE))
            .env("KAFKA_BROKERS", stack.kafka_brokers())
            .env("TOPIC_PREFIX", prefix)
            .env("OVERVIEW_EVERY_MS", "500")
            .env("SAGA_EVERY_MS", "200")
            // Prefixed topics, which the console's grants do not name: as the super user.
            .envs(xtask::stack::kafka_access::env(stack, xtask::stack::kafka_access::ADMIN).expect("credentials"))
            .stdout(Stdio::null())
            .stderr(log);
        for (service, url) in databases {
            command.env(format!("{}_DATABASE_URL", service.to_uppercase()), url);
        }
        let mut child = command.spawn().expect("start the console (cargo xtask up builds it)");
        let listen = crate::listening(&log_path, "console listening", || child.try_wait().ok().flatten()).await;
        let console = PrivateConsole { child, url: format!("http://{listen}") };
        let page = format!("{}/console", console.url);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !reqwest::get(&page).await.is_ok_and(|r| r.status().is_success()) {
            assert!(std::time::Instant::now() < deadline, "the console does not serve {page}: see its log");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        console
    }
}

impl Drop for PrivateConsole {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
