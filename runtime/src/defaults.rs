//! Addresses of the local development stack that `cargo xtask up` starts.
//!
//! The one place these numbers live: `xtask` derives its stack layout from
//! them, and every binary uses them as defaults so that it runs against the
//! local stack with no configuration at all. Every one can be overridden from
//! the environment (see `xtask::stack::StackConfig`).

/// Loopback only: nothing of the local stack listens on other interfaces.
pub const HOST: &str = "127.0.0.1";

/// Ports are `PORT_BASE + offset`, so a second stack moves by changing one number.
pub const PORT_BASE: u16 = 17000;

pub const POSTGRES_PORT_OFFSET: u16 = 432;
pub const REDIS_PORT_OFFSET: u16 = 379;
pub const KAFKA_PORT_OFFSET: u16 = 92;
pub const KAFKA_CONTROLLER_PORT_OFFSET: u16 = 93;
pub const GATEWAY_PORT_OFFSET: u16 = 80;
pub const ORDER_PORT_OFFSET: u16 = 51;
pub const PRODUCT_PORT_OFFSET: u16 = 52;
pub const USER_PORT_OFFSET: u16 = 53;

/// The saga's backend services, each with its own database and role of the same name.
pub const SERVICES: [BackendService; 3] = [
    BackendService { name: "order", port_offset: ORDER_PORT_OFFSET },
    BackendService { name: "product", port_offset: PRODUCT_PORT_OFFSET },
    BackendService { name: "user", port_offset: USER_PORT_OFFSET },
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendService {
    pub name: &'static str,
    pub port_offset: u16,
}

impl BackendService {
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
        format!("{HOST}:{}", PORT_BASE + self.port_offset)
    }

    /// Default database URL on the development stack (role password = role name).
    pub fn default_database_url(&self) -> String {
        let db = self.database();
        format!("postgres://{db}:{db}@{HOST}:{}/{db}", PORT_BASE + POSTGRES_PORT_OFFSET)
    }

    /// Looks a service up by name.
    pub fn named(name: &str) -> Option<BackendService> {
        SERVICES.into_iter().find(|s| s.name == name)
    }
}

/// Default Kafka bootstrap address on the development stack.
pub fn kafka_brokers() -> String {
    format!("{HOST}:{}", PORT_BASE + KAFKA_PORT_OFFSET)
}

/// Default Redis URL on the development stack.
pub fn redis_url() -> String {
    format!("redis://{HOST}:{}/", PORT_BASE + REDIS_PORT_OFFSET)
}
