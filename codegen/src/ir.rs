//! Stage 2 output: the checked saga. Every name here resolves; emitters trust it and know
//! nothing of YAML. Locations are kept so later checks can still point at the spec.

use crate::spans::Span;

#[derive(Debug, Clone)]
pub struct Saga {
    pub name: String,
    pub doc: Option<String>,
    pub namespace: String,
    /// Name of the saga key (e.g. `order_id`), carried by every event.
    pub key: String,
    pub services: Vec<Service>,
    pub topics: Vec<Topic>,
    pub types: Vec<TypeDef>,
    pub commands: Vec<Command>,
    pub events: Vec<Event>,
    pub status: Option<StatusMachine>,
    pub compensations: Vec<Compensation>,
    pub dlq_suffix: String,
}

#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub retry: Retry,
    /// Most consumed messages handled in one transaction.
    pub max_batch: u32,
    pub loc: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

#[derive(Debug, Clone)]
pub struct Topic {
    pub name: String,
    pub partitions: i32,
    pub doc: Option<String>,
    pub loc: Span,
}

#[derive(Debug, Clone)]
pub struct TypeDef {
    pub name: String,
    pub doc: Option<String>,
    pub kind: TypeKind,
    pub loc: Span,
}

#[derive(Debug, Clone)]
pub enum TypeKind {
    Record(Vec<Field>),
    Enum(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub doc: Option<String>,
    pub ty: Type,
    /// Avro default (JSON), which makes adding the field backward compatible.
    pub default: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Type {
    Uuid,
    String,
    Bool,
    Int,
    Long,
    Double,
    /// Integer minor units (cents).
    Money,
    Timestamp,
    Record(String),
    Enum(String),
    Array(Box<Type>),
    Optional(Box<Type>),
}

#[derive(Debug, Clone)]
pub struct Command {
    pub name: String,
    pub service: String,
    pub doc: Option<String>,
    pub fields: Vec<Field>,
    pub emits: String,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub name: String,
    pub topic: String,
    pub publisher: String,
    pub doc: Option<String>,
    /// A failure outcome changed nothing where it was published.
    pub failure: bool,
    pub external: bool,
    /// Nothing publishes it any more; subscribers still handle it.
    pub retired: bool,
    pub subscribers: Vec<Subscriber>,
    pub fields: Vec<Field>,
    /// The resource the event says its publisher holds or gave back.
    pub effect: Option<Effect>,
    pub loc: Span,
}

/// What an event stands for at its publisher, by the name of a resource (`reservation`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The publisher now holds the resource for the saga: a compensation must give it back
    /// on every path that does not complete the saga.
    Holds(String),
    /// The publisher gave the resource back (the reply of a compensation).
    Releases(String),
}

#[derive(Debug, Clone)]
pub struct Subscriber {
    pub service: String,
    /// Events the subscriber may publish in reply; its handler can return only these.
    pub replies: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct StatusMachine {
    pub owner: String,
    pub initial: String,
    pub states: Vec<State>,
    pub transitions: Vec<Transition>,
    /// Removed states whose orders move to a current one at start.
    pub migrations: Vec<Migration>,
    /// Events that wait, parked, in a status that does not accept them yet.
    pub parks: Vec<String>,
}

/// `status.migrations`: orders in the removed state `from` move to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone)]
pub struct State {
    pub name: String,
    pub terminal: bool,
    pub timeout: Option<Timeout>,
}

#[derive(Debug, Clone)]
pub struct Timeout {
    pub after_ms: u64,
    pub to: String,
    pub emits: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Transition {
    pub from: String,
    pub on: String,
    pub to: String,
}

#[derive(Debug, Clone)]
pub struct Compensation {
    pub on: String,
    pub service: String,
    pub undoes: String,
    /// Arriving before the request it undoes, it makes that request do nothing.
    pub tombstone: bool,
}

impl Event {
    /// The resource the event holds, if it holds one.
    pub fn holds(&self) -> Option<&str> {
        match &self.effect {
            Some(Effect::Holds(r)) => Some(r),
            _ => None,
        }
    }
}

impl StatusMachine {
    /// Whether some transition is triggered by `event`.
    pub fn is_trigger(&self, event: &str) -> bool {
        self.transitions.iter().any(|t| t.on == event)
    }
}

impl Saga {
    pub fn event(&self, name: &str) -> Option<&Event> {
        self.events.iter().find(|e| e.name == name)
    }

    pub fn topic_events<'a>(&'a self, topic: &'a str) -> impl Iterator<Item = &'a Event> + 'a {
        self.events.iter().filter(move |e| e.topic == topic)
    }

    /// Events a service receives, in spec order.
    pub fn subscriptions<'a>(&'a self, service: &'a str) -> impl Iterator<Item = (&'a Event, &'a Subscriber)> + 'a {
        self.events.iter().filter_map(move |e| e.subscribers.iter().find(|s| s.service == service).map(|s| (e, s)))
    }

    /// Topics a service consumes, in spec order.
    pub fn consumed_topics(&self, service: &str) -> Vec<&Topic> {
        self.topics.iter().filter(|t| self.subscriptions(service).any(|(e, _)| e.topic == t.name)).collect()
    }

    /// The Kafka consumer group of a service that consumes (its offsets are kept under it).
    pub fn consumer_group(&self, service: &str) -> String {
        format!("{}.{}", self.name, service)
    }
}

/// `order.created` -> `OrderCreated`; `inventory_reserved` -> `InventoryReserved`.
pub fn pascal(name: &str) -> String {
    name.split(['.', '_', '-', ' '])
        .filter(|s| !s.is_empty())
        .map(|s| {
            let mut c = s.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect()
}

/// `order.created` -> `order_created`; `CreateOrder` -> `create_order`.
pub fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, ch) in name.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 && !out.ends_with('_') {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else if ch == '.' || ch == '-' || ch == ' ' {
            out.push('_');
        } else {
            out.push(ch);
        }
    }
    out
}
