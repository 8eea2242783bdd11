//! A real browser for the console's test: Debian's headless Chromium, driven over WebDriver
//! (its chromedriver on a free loopback port) with fantoccini. `cargo xtask test` installs
//! both packages. Screenshots go to `<state>/artifacts/`, where they outlive the run.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use saga_stack::StackConfig;
use serde_json::{Value, json};

use crate::unique;

/// How long a condition on the page may take to hold.
const PATIENCE: Duration = Duration::from_secs(60);

/// One headless Chromium session; the driver is killed when dropped.
pub struct Browser {
    pub client: Client,
    driver: Child,
    artifacts: PathBuf,
}

impl Browser {
    pub async fn start(stack: &StackConfig) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
        let log = std::fs::File::create(stack.logs_dir().join(format!("{}.log", unique("chromedriver"))))
            .expect("chromedriver log");
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start chromedriver (`cargo xtask test` installs Debian's chromium-driver)");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + PATIENCE;
        loop {
            let ready = match reqwest::get(format!("{url}/status")).await {
                Ok(response) => response.json::<Value>().await.is_ok_and(|s| s["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver at {url} never became ready: see its log");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut capabilities = serde_json::Map::new();
        // No sandbox: the suite runs as root, where Chromium refuses its sandbox.
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({ "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"] }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&url)
            .await
            .expect("a Chromium session through chromedriver");
        let artifacts = stack.state_dir.join("artifacts");
        std::fs::create_dir_all(&artifacts).expect("artifacts folder");
        Browser { client, driver, artifacts }
    }

    /// Saves what the page shows now as `<name>.png` among the artifacts.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let path = self.artifacts.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Runs `script` (a function body that `return`s a value) in the page.
    pub async fn eval(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Waits until `script` returns something truthy and returns it; on timeout saves a
    /// screenshot named after `what` and fails with the page's message line.
    pub async fn until(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let value = self.eval(script).await;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            if Instant::now() > deadline {
                let shot =
                    self.screenshot(&format!("failed-{}", what.replace(|c: char| !c.is_alphanumeric(), "-"))).await;
                let message = self.eval("return document.getElementById('message').textContent").await;
                panic!("the page never showed {what} (screenshot {}; message line: {message})", shot.display());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Clicks what `locator` finds. A view that is drawn again (a refresh in flight) may
    /// replace the element between finding and clicking it: then it is found again.
    pub async fn click(&self, locator: Locator<'_>) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let element = self.client.find(locator).await.unwrap_or_else(|e| panic!("no {locator:?} to click: {e}"));
            match element.click().await {
                Ok(()) => return,
                Err(fantoccini::error::CmdError::Standard(e))
                    if e.error == fantoccini::error::ErrorStatus::StaleElementReference
                        && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot click {locator:?}: {e}"),
            }
        }
    }

    /// Replaces the text of the input `id` with `text`, as typed.
    pub async fn type_into(&self, id: &str, text: &str) {
        let input = self.client.find(Locator::Id(id)).await.unwrap_or_else(|e| panic!("no input #{id}: {e}"));
        input.clear().await.expect("clear");
        input.send_keys(text).await.expect("type");
    }

    /// Ends the browser session; the driver goes when dropped.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
