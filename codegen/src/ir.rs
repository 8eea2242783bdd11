//! Stage 2 output: the checked saga. Every name here resolves; emitters trust it and know
//! nothing of YAML. Locations are kept so later checks can still point at the spec.

use std::collections::{BTreeMap, BTreeSet};

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
    /// Saga data carried from the entry command by every reply; its record is the type
    /// [`CONTEXT_TYPE`] among `types`.
    pub context: Option<Context>,
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

/// The name of the context's record type (a spec may not declare a type of that name).
pub const CONTEXT_TYPE: &str = "SagaContext";

/// `context:` what the entry command says that later steps read.
#[derive(Debug, Clone)]
pub struct Context {
    pub doc: Option<String>,
    /// Each copied from the entry command's field of the same name.
    pub fields: Vec<Field>,
    /// The handlers that read it.
    pub read_by: Vec<ContextRead>,
}

/// `service` reads the saga context when it handles `event`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextRead {
    pub service: String,
    pub event: String,
    /// The reply its handler gives when the event comes without the context (a saga
    /// begun, or passed on, by a version older than the context): `context.without`.
    pub without: Option<String>,
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
    /// `effect: none`: a success that holds nothing, declared so.
    Nothing,
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

    /// Whether `service`'s handler of `event` reads the saga context.
    pub fn reads_context(&self, service: &str, event: &str) -> bool {
        self.context.as_ref().is_some_and(|c| c.read_by.iter().any(|r| r.service == service && r.event == event))
    }

    /// The events that always carry the saga context: those an entry command emits, and
    /// replies every cause of which carries it (`Envelope::reply` copies it). An event a
    /// timeout emits starts from no event, so it carries none; nor does one nothing emits.
    /// Empty without a `context:`.
    pub fn context_carriers(&self) -> BTreeSet<&str> {
        if self.context.is_none() {
            return BTreeSet::new();
        }
        // Emission sites per event: `None` for a command, `Some(cause)` for a reply.
        let mut sites: BTreeMap<&str, Vec<Option<&str>>> = BTreeMap::new();
        for c in &self.commands {
            sites.entry(c.emits.as_str()).or_default().push(None);
        }
        for e in &self.events {
            for s in &e.subscribers {
                for r in &s.replies {
                    sites.entry(r.as_str()).or_default().push(Some(e.name.as_str()));
                }
            }
        }
        let timed: BTreeSet<&str> = self
            .status
            .iter()
            .flat_map(|sm| sm.states.iter().filter_map(|s| s.timeout.as_ref()?.emits.as_deref()))
            .collect();
        // The greatest fixed point: a loop of replies keeps the context it entered with.
        let mut carriers: BTreeSet<&str> =
            sites.keys().copied().filter(|e| !timed.contains(e) && self.event(e).is_some_and(|e| !e.retired)).collect();
        loop {
            let before = carriers.len();
            let keep: BTreeSet<&str> = carriers
                .iter()
                .copied()
                .filter(|e| sites[e].iter().all(|cause| cause.is_none_or(|c| carriers.contains(c))))
                .collect();
            carriers = keep;
            if carriers.len() == before {
                return carriers;
            }
        }
    }

    /// Events a service receives, in spec order.
    pub fn subscriptions<'a>(&'a self, service: &'a str) -> impl Iterator<Item = (&'a Event, &'a Subscriber)> + 'a {
        self.events.iter().filter_map(move |e| e.subscribers.iter().find(|s| s.service == service).map(|s| (e, s)))
    }

    /// Topics a service consumes, in spec order.
    pub fn consumed_topics(&self, service: &str) -> Vec<&Topic> {
        self.topics.iter().filter(|t| self.subscriptions(service).any(|(e, _)| e.topic == t.name)).collect()
    }

    /// The compacted topic of the saga's writer schemas, keyed by fingerprint:
    /// every publisher registers the schemas it writes there before it
    /// publishes, and a consumer built before a version existed looks it up
    /// there, so that a newer publisher may be deployed before its consumers.
    pub fn schema_topic(&self) -> String {
        format!("{}.schemas", self.name)
    }

    /// The group a service reads the schema topic under (it assigns itself the partition,
    /// so it never joins the group; the broker checks its grant on it all the same).
    pub fn schema_group(&self, service: &str) -> String {
        format!("{}.{service}", self.schema_topic())
    }

    /// The Kafka consumer group of a service that consumes (its offsets are kept under it).
    pub fn consumer_group(&self, service: &str) -> String {
        format!("{}.{}", self.name, service)
    }

    /// What the broker lets each service do, as the principal named after it:
    /// write the topics it publishes to (its live events) and the dead-letter
    /// twins of those it consumes; read the topics it consumes, with its own
    /// consumer group; and, for every service but the status owner, describe
    /// the owner's group and topics (the owner's caught-up clock, which a
    /// participant may keep to shed requests whose saga was given up on); and
    /// on the schema topic, write if it publishes and read if it consumes.
    /// Nothing else: a forged event on another service's topic is refused.
    /// In service, then resource order; `Describe` only where no other
    /// operation on the resource implies it.
    pub fn kafka_grants(&self) -> Vec<KafkaGrant> {
        let mut grants = Vec::new();
        let owner = self.status.as_ref().map(|s| s.owner.as_str());
        for service in &self.services {
            let s = service.name.as_str();
            let consumed = self.consumed_topics(s);
            let mut topic_ops: Vec<(String, Vec<&'static str>)> = Vec::new();
            let mut grant = |name: String, op: &'static str| match topic_ops.iter_mut().find(|(n, _)| *n == name) {
                Some((_, ops)) if !ops.contains(&op) => ops.push(op),
                Some(_) => {}
                None => topic_ops.push((name, vec![op])),
            };
            for topic in &self.topics {
                if self.events.iter().any(|e| e.publisher == s && !e.retired && e.topic == topic.name) {
                    grant(topic.name.clone(), "Write");
                }
                if consumed.iter().any(|c| c.name == topic.name) {
                    grant(topic.name.clone(), "Read");
                    grant(format!("{}{}", topic.name, self.dlq_suffix), "Write");
                }
            }
            let publishes = self.events.iter().any(|e| e.publisher == s && !e.retired);
            if publishes {
                grant(self.schema_topic(), "Write");
            }
            if !consumed.is_empty() {
                grant(self.schema_topic(), "Read");
            }
            let mut group_ops = Vec::new();
            if !consumed.is_empty() {
                group_ops.push((self.consumer_group(s), vec!["Read"]));
                group_ops.push((self.schema_group(s), vec!["Read"]));
            }
            if let Some(owner) = owner.filter(|o| *o != s) {
                for topic in self.consumed_topics(owner) {
                    if !topic_ops.iter().any(|(n, _)| *n == topic.name) {
                        topic_ops.push((topic.name.clone(), vec!["Describe"]));
                    }
                }
                group_ops.push((self.consumer_group(owner), vec!["Describe"]));
            }
            for (name, operations) in topic_ops {
                grants.push(KafkaGrant::literal(s, AclResource::Topic, name, operations));
            }
            for (name, operations) in group_ops {
                grants.push(KafkaGrant::literal(s, AclResource::Group, name, operations));
            }
        }
        grants.extend(self.console_grants());
        grants
    }

    /// The operator console's grants: it reads every topic and dead letter
    /// (traces, the overview, the dead-letter lists) with throwaway groups
    /// under [`Saga::console_group_prefix`], writes the saga's topics (a
    /// redrive publishes a dead letter there again: its credentials are an
    /// admin's), and describes the services' groups (their lag).
    fn console_grants(&self) -> Vec<KafkaGrant> {
        let mut grants = Vec::new();
        for topic in &self.topics {
            grants.push(KafkaGrant::literal(CONSOLE, AclResource::Topic, topic.name.clone(), vec!["Read", "Write"]));
            let dlq = format!("{}{}", topic.name, self.dlq_suffix);
            grants.push(KafkaGrant::literal(CONSOLE, AclResource::Topic, dlq, vec!["Read"]));
        }
        for service in self.services.iter().filter(|s| !self.consumed_topics(&s.name).is_empty()) {
            let group = self.consumer_group(&service.name);
            grants.push(KafkaGrant::literal(CONSOLE, AclResource::Group, group, vec!["Describe"]));
        }
        grants.push(KafkaGrant {
            principal: CONSOLE.to_owned(),
            resource: AclResource::Group,
            name: self.console_group_prefix(),
            prefixed: true,
            operations: vec!["Read"],
        });
        grants
    }

    /// The prefix of the consumer groups the operator console reads with: no
    /// service's group starts with it (a service is no `console.`).
    pub fn console_group_prefix(&self) -> String {
        format!("{}.{CONSOLE}.", self.name)
    }
}

/// The operator console's Kafka principal.
pub const CONSOLE: &str = "console";

/// The kind of Kafka resource a grant is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclResource {
    Topic,
    Group,
}

impl AclResource {
    /// As Kafka's tools and Strimzi's `KafkaUser` name it.
    pub fn name(self) -> &'static str {
        match self {
            AclResource::Topic => "topic",
            AclResource::Group => "group",
        }
    }
}

/// Operations (Kafka's names: `Read`, `Write`, `Describe`) a principal may
/// perform on one resource, or on those whose names start with `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaGrant {
    pub principal: String,
    pub resource: AclResource,
    pub name: String,
    /// `name` is a prefix of the resources' names, not a whole name.
    pub prefixed: bool,
    pub operations: Vec<&'static str>,
}

impl KafkaGrant {
    fn literal(principal: &str, resource: AclResource, name: String, operations: Vec<&'static str>) -> KafkaGrant {
        KafkaGrant { principal: principal.to_owned(), resource, name, prefixed: false, operations }
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
