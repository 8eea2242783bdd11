//! Stage 1: the spec as written, deserialized with serde_yaml. No checking beyond shape:
//! names are plain strings here and get resolved by the validator.

use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};

/// A YAML mapping that keeps source order and duplicate keys (the validator reports
/// duplicates with both locations instead of silently keeping the last one).
#[derive(Debug, Clone)]
pub struct OrderedMap<V>(pub Vec<(String, V)>);

impl<V> Default for OrderedMap<V> {
    fn default() -> Self {
        OrderedMap(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V2<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for V2<V> {
            type Value = OrderedMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(OrderedMap(Vec::new()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, V>()? {
                    out.push((k, v));
                }
                Ok(OrderedMap(out))
            }
        }
        d.deserialize_map(V2(std::marker::PhantomData))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub saga: String,
    #[serde(default)]
    pub doc: Option<String>,
    /// Avro namespace of every schema.
    pub namespace: String,
    /// The saga key every event carries; also the Kafka partition key.
    pub key: String,
    pub services: Vec<String>,
    pub topics: OrderedMap<TopicSpec>,
    #[serde(default)]
    pub types: OrderedMap<TypeSpec>,
    #[serde(default)]
    pub commands: OrderedMap<CommandSpec>,
    /// Saga data a later step reads without the steps between passing it on.
    #[serde(default)]
    pub context: Option<ContextSpec>,
    pub events: OrderedMap<EventSpec>,
    #[serde(default)]
    pub status: Option<StatusSpec>,
    #[serde(default)]
    pub compensations: Vec<CompensationSpec>,
    #[serde(default)]
    pub delivery: Option<DeliverySpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    pub partitions: i64,
    #[serde(default)]
    pub doc: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeSpec {
    #[serde(default)]
    pub doc: Option<String>,
    #[serde(default)]
    pub fields: Option<OrderedMap<FieldSpec>>,
    #[serde(default, rename = "enum")]
    pub symbols: Option<Vec<String>>,
}

/// `name: type` or `name: { type, doc, default }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum FieldSpec {
    Short(String),
    Long(FieldLong),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldLong {
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default)]
    pub doc: Option<String>,
    /// A default makes the field safe to add: data written before it decodes.
    #[serde(default)]
    pub default: Option<serde_yaml::Value>,
}

impl FieldSpec {
    pub fn ty(&self) -> &str {
        match self {
            FieldSpec::Short(t) => t,
            FieldSpec::Long(l) => &l.ty,
        }
    }
    pub fn doc(&self) -> Option<&str> {
        match self {
            FieldSpec::Short(_) => None,
            FieldSpec::Long(l) => l.doc.as_deref(),
        }
    }
    pub fn default(&self) -> Option<&serde_yaml::Value> {
        match self {
            FieldSpec::Short(_) => None,
            FieldSpec::Long(l) => l.default.as_ref(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    pub service: String,
    #[serde(default)]
    pub doc: Option<String>,
    #[serde(default)]
    pub fields: OrderedMap<FieldSpec>,
    pub emits: String,
}

/// `context:` what the command that starts a saga says, carried by every reply of the saga
/// (the envelope's `context` field), for the handlers that declare they read it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextSpec {
    #[serde(default)]
    pub doc: Option<String>,
    /// Each is copied from the entry command's field of the same name.
    pub fields: OrderedMap<FieldSpec>,
    /// Service -> the events whose handler reads the context.
    #[serde(default)]
    pub read_by: OrderedMap<Vec<String>>,
    /// Service -> event it reads the context on -> the reply its handler gives when the
    /// event comes without one (during a rollout, from a version older than the context).
    #[serde(default)]
    pub without: OrderedMap<OrderedMap<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    pub topic: String,
    pub publisher: String,
    #[serde(default)]
    pub doc: Option<String>,
    /// `success` (default) or `failure`: a failure outcome changed nothing, so there is
    /// nothing to compensate.
    #[serde(default)]
    pub outcome: Option<String>,
    /// Consumed outside the saga (analytics, ...); may have no subscriber here.
    #[serde(default)]
    pub external: bool,
    /// Nothing publishes it any more; its subscribers still handle the messages
    /// already written. The step before removing an event (see "Changing a spec safely").
    #[serde(default)]
    pub retired: bool,
    /// Subscribing service -> the events it may publish in reply.
    #[serde(default)]
    pub subscribers: OrderedMap<Option<Vec<String>>>,
    #[serde(default)]
    pub fields: OrderedMap<FieldSpec>,
    /// What the event stands for at its publisher: a resource it now holds for the saga,
    /// or one it gave back. `cargo xtask verify` proves the saga from these.
    #[serde(default)]
    pub effect: Option<EffectSpec>,
}

/// `effect: { holds: reservation }`, `effect: { releases: reservation }`, or `effect: none`
/// (a success that holds nothing: the verifier then asks nothing of it).
#[derive(Debug, Default)]
pub struct EffectSpec {
    pub holds: Option<String>,
    pub releases: Option<String>,
    /// `effect: none`; `word` keeps any other word, for the error.
    pub none: bool,
    pub word: Option<String>,
}

impl<'de> Deserialize<'de> for EffectSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Resource {
            #[serde(default)]
            holds: Option<String>,
            #[serde(default)]
            releases: Option<String>,
        }
        // Through a YAML value, so a misspelt key keeps serde's own message.
        match serde_yaml::Value::deserialize(deserializer)? {
            serde_yaml::Value::String(word) if word == "none" => Ok(EffectSpec { none: true, ..EffectSpec::default() }),
            serde_yaml::Value::String(word) => Ok(EffectSpec { word: Some(word), ..EffectSpec::default() }),
            value => {
                let r = Resource::deserialize(value).map_err(serde::de::Error::custom)?;
                Ok(EffectSpec { holds: r.holds, releases: r.releases, ..EffectSpec::default() })
            }
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusSpec {
    pub owner: String,
    pub initial: String,
    pub states: Vec<String>,
    #[serde(default)]
    pub terminal: Vec<String>,
    #[serde(default)]
    pub transitions: Vec<TransitionSpec>,
    #[serde(default)]
    pub timeouts: OrderedMap<TimeoutSpec>,
    /// A removed (or renamed) state -> the state its orders move to when the status
    /// owner starts.
    #[serde(default)]
    pub migrations: OrderedMap<String>,
    /// Replies that may overtake the reply the status waits for (they travel on another
    /// topic): in a status that does not accept them yet they wait, parked, until one does.
    #[serde(default)]
    pub parks: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransitionSpec {
    pub from: String,
    pub on: String,
    pub to: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutSpec {
    pub after: String,
    pub to: String,
    #[serde(default)]
    pub emits: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompensationSpec {
    pub on: String,
    pub service: String,
    pub undoes: String,
    /// When the compensation arrives before the request it undoes (they travel on different
    /// topics), it leaves a tombstone, and the request, when it comes, does nothing.
    #[serde(default)]
    pub tombstone: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySpec {
    #[serde(default)]
    pub default: Option<RetrySpec>,
    #[serde(default)]
    pub dlq_suffix: Option<String>,
    #[serde(default)]
    pub consumers: OrderedMap<RetrySpec>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    #[serde(default)]
    pub max_attempts: Option<i64>,
    /// Most messages handled in one transaction (1: one at a time).
    #[serde(default)]
    pub batch: Option<i64>,
    #[serde(default)]
    pub backoff: Option<BackoffSpec>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct BackoffSpec {
    pub initial: String,
    pub max: String,
}

/// Deserializes the spec; the error keeps serde_yaml's location when it has one.
pub fn parse(source: &str) -> Result<Spec, (Option<usize>, String)> {
    serde_yaml::from_str(source).map_err(|e| (e.location().map(|l| l.index()), e.to_string()))
}
