//! What an operator asks of a running saga platform, answered from what the platform keeps
//! anyway: the services' databases (status history, outbox, inbox, parked events) and the
//! Kafka topics (dead letters, consumer positions). `cargo xtask saga trace`, `cargo xtask
//! dlq` and the console service all read through this crate, so the terminal and the web
//! page show the same thing.

pub mod dlq;
pub mod overview;
pub mod trace;

use saga_process::local::BackendService;

/// Where the platform's state lives.
#[derive(Debug, Clone)]
pub struct Sources {
    /// Each backend service's database URL, in the spec's order.
    pub databases: Vec<(&'static str, String)>,
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// The services' topic prefix (their `TOPIC_PREFIX`).
    pub prefix: String,
}

impl Sources {
    /// The spec's services, each with the database URL `url_of` gives it.
    pub fn of(url_of: impl Fn(BackendService) -> String, brokers: String, prefix: String) -> Sources {
        let databases = BackendService::all(saga_generated::topology::SERVICES)
            .into_iter()
            .map(|service| (service.name, url_of(service)))
            .collect();
        Sources { databases, brokers, prefix }
    }

    /// `topic` as the services name it (with their prefix).
    pub fn topic(&self, topic: &str) -> String {
        format!("{}{topic}", self.prefix)
    }
}
