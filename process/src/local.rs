//! Addresses of the local development stack that `cargo xtask up` starts.
//!
//! The one place these numbers live: `xtask` derives its stack layout from
//! them, and every binary uses them as defaults so that it runs against the
//! local stack with no configuration at all. Every one can be overridden from
//! the environment (see `xtask::stack::StackConfig`). Which services exist is
//! the spec's business: callers pass the generated topology's service list.

/// Loopback only: nothing of the local stack listens on other interfaces.
pub const HOST: &str = "127.0.0.1";

/// Ports are `PORT_BASE + offset`, so a second stack moves by changing one number.
pub const PORT_BASE: u16 = 17000;

pub const POSTGRES_PORT_OFFSET: u16 = 432;
pub const REDIS_PORT_OFFSET: u16 = 379;
pub const KAFKA_PORT_OFFSET: u16 = 92;
pub const KAFKA_CONTROLLER_PORT_OFFSET: u16 = 93;
/// JMX of Kafka node `i` listens on this offset plus `i`, on loopback, and
/// only once the benchmark opens it to read the broker's request counters.
pub const KAFKA_JMX_PORT_OFFSET: u16 = 900;
pub const GATEWAY_PORT_OFFSET: u16 = 80;
/// The operator console (HTTP), which the gateway forwards admins to.
pub const CONSOLE_PORT_OFFSET: u16 = 81;
/// The console's PostgreSQL role and database (its redrive audit). The role may also read
/// every service's database, and only read it.
pub const CONSOLE_DATABASE: &str = "console";
/// The backend services listen on consecutive ports from here, in the order
/// the spec lists them (`order`, `product`, `user`: 51, 52, 53).
pub const FIRST_SERVICE_PORT_OFFSET: u16 = 51;

/// A backend service of the saga on the local stack: its name and its
/// position in the spec's service list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendService {
    pub name: &'static str,
    pub ordinal: u16,
}

impl BackendService {
    /// Every service of `names` (the generated `topology::SERVICES`), in spec order.
    pub fn all(names: &'static [&'static str]) -> Vec<BackendService> {
        (0u16..).zip(names).map(|(ordinal, name)| BackendService { name, ordinal }).collect()
    }

    /// The service called `name` among `names`.
    pub fn named(names: &'static [&'static str], name: &str) -> Option<BackendService> {
        BackendService::all(names).into_iter().find(|s| s.name == name)
    }

    pub fn port_offset(&self) -> u16 {
        FIRST_SERVICE_PORT_OFFSET + self.ordinal
    }

    /// Database and role name of this service (`order_service`, ...): `order`
    /// and `user` are reserved words in SQL, the suffix keeps them unquoted.
    pub fn database(&self) -> String {
        format!("{}_service", self.name)
    }

    /// Binary name of this service.
    pub fn binary(&self) -> String {
        format!("{}-service", self.name)
    }

    /// Default gRPC listen address on the development stack.
    pub fn default_listen(&self) -> String {
        format!("{HOST}:{}", PORT_BASE + self.port_offset())
    }

    /// Default gRPC URL on the development stack.
    pub fn default_grpc_url(&self) -> String {
        format!("http://{}", self.default_listen())
    }

    /// Default database URL on the development stack (role password = role name).
    pub fn default_database_url(&self) -> String {
        let db = self.database();
        format!("postgres://{db}:{db}@{HOST}:{}/{db}", PORT_BASE + POSTGRES_PORT_OFFSET)
    }
}

/// Default Kafka bootstrap address on the development stack.
pub fn kafka_brokers() -> String {
    format!("{HOST}:{}", PORT_BASE + KAFKA_PORT_OFFSET)
}

/// Default URL the console reads `database` with on the development stack (its read-only
/// role; password = role name).
pub fn console_database_url(database: &str) -> String {
    format!("postgres://{CONSOLE_DATABASE}:{CONSOLE_DATABASE}@{HOST}:{}/{database}", PORT_BASE + POSTGRES_PORT_OFFSET)
}

/// Default Redis URL on the development stack.
pub fn redis_url() -> String {
    format!("redis://{HOST}:{}/", PORT_BASE + REDIS_PORT_OFFSET)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_take_consecutive_ports_in_spec_order() {
        let services = BackendService::all(&["order", "product", "user"]);
        let listens: Vec<String> = services.iter().map(BackendService::default_listen).collect();
        assert_eq!(listens, ["127.0.0.1:17051", "127.0.0.1:17052", "127.0.0.1:17053"]);
        assert_eq!(services[2].database(), "user_service");
        assert_eq!(services[2].binary(), "user-service");
        assert_eq!(BackendService::named(&["order", "product"], "product"), Some(services[1]));
        assert_eq!(BackendService::named(&["order"], "nope"), None);
    }
}
