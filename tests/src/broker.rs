//! A Kafka broker of a test's own: the stack's broker jars and principals
//! (the same SCRAM passwords, so the test and its services sign in as they
//! do on the stack's), on loopback ports the system chose free, with its
//! data in a folder of its own. A test can freeze it (`SIGSTOP`: every
//! connection stays open and nothing answers, like a broker that hangs) or
//! kill it without touching the broker every other test shares. A Kafka
//! client learns the broker's advertised address from its first answer, so
//! a TCP proxy in front of the shared broker could not cut it off.

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use saga_stack::config::{Defaults, env};
use saga_stack::process::Tracked;
use saga_stack::{Component, StackConfig};

pub struct PrivateBroker {
    config: StackConfig,
    tracked: Tracked,
    pid: Pid,
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("its address").port()
}

impl PrivateBroker {
    /// Formats and starts a one-node broker and waits until it answers; it
    /// has no topics yet.
    pub async fn start(stack: &StackConfig) -> PrivateBroker {
        let state_dir = stack.state_dir.with_file_name(crate::unique("private-broker"));
        let (port, controller) = (free_port().to_string(), free_port().to_string());
        let config = StackConfig::resolve(Defaults { state_dir, port_base: stack.port_base }, |var| match var {
            env::KAFKA_PORT => Some(port.clone()),
            env::KAFKA_CONTROLLER_PORT => Some(controller.clone()),
            env::KAFKA_LIBS => Some(stack.kafka_libs.display().to_string()),
            env::KAFKA_HEAP => Some("256m".to_owned()),
            _ => None,
        })
        .expect("a valid configuration");
        saga_stack::kafka::prepare(&config, 0).expect("the private broker's storage is formatted");
        let tracked = Component::Kafka(0).tracked(&config);
        let pid = tracked.spawn(&mut saga_stack::kafka::command(&config, 0)).expect("the private broker starts");
        let broker = PrivateBroker { config, tracked, pid };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            let probe = tokio::time::timeout(Duration::from_secs(5), saga_stack::kafka::probe(&broker.config, 0));
            if matches!(probe.await, Ok(Ok(()))) {
                return broker;
            }
            assert!(
                broker.tracked.running_pid().is_some(),
                "the private broker exited: {}",
                broker.tracked.log_tail(20)
            );
            assert!(tokio::time::Instant::now() < deadline, "the private broker never answered");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Its bootstrap address.
    pub fn brokers(&self) -> String {
        self.config.kafka_brokers()
    }

    /// Freezes the broker: its connections stay open, nothing answers.
    pub fn freeze(&self) {
        kill(self.pid, Signal::SIGSTOP).expect("SIGSTOP the private broker");
    }

    /// Lets a frozen broker go on.
    pub fn thaw(&self) {
        kill(self.pid, Signal::SIGCONT).expect("SIGCONT the private broker");
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = kill(self.pid, Signal::SIGCONT);
        self.tracked.stop(Signal::SIGKILL, Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(&self.config.state_dir);
    }
}
