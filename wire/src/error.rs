//! Why bytes could not become an event, or an event bytes.

/// Why bytes could not become an event. Permanent: retrying will not help, so the
/// message belongs in the dead-letter topic.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message shorter than the single-object header ({len} bytes)")]
    TooShort { len: usize },
    #[error("message does not start with the Avro single-object marker C3 01")]
    NotSingleObject,
    #[error("no event on topic `{topic}` has schema fingerprint {fingerprint:02x?}")]
    UnknownFingerprint { topic: String, fingerprint: [u8; 8] },
    #[error("schema fingerprint {found:02x?} is not one of the published schemas of `{event_type}`")]
    FingerprintMismatch { event_type: &'static str, found: [u8; 8] },
    #[error("topic `{0}` is not consumed here")]
    UnknownTopic(String),
    #[error("Avro: {0}")]
    Avro(#[from] apache_avro::Error),
    #[error("`{record}` has no field `{field}`")]
    MissingField { record: &'static str, field: &'static str },
    #[error("expected {expected} in `{at}`, found {found}")]
    Mismatch { at: &'static str, expected: &'static str, found: String },
    #[error("`{symbol}` is not a symbol of enum `{enum_name}`")]
    UnknownSymbol { enum_name: &'static str, symbol: String },
}

impl DecodeError {
    /// Whether the message is an event of a later version of the saga that
    /// this build does not know at all: its schema was registered on the
    /// saga's schema topic (and [learned](crate::learned)), but no event this
    /// build decodes on the topic has its name. The build's own spec
    /// subscribes to nothing of the kind, so a consumer skips it, as it skips
    /// the events of its topics it does not subscribe to.
    pub fn is_unknown_event_of_a_later_version(&self) -> bool {
        match self {
            DecodeError::UnknownFingerprint { fingerprint, .. } => crate::learned::learned(fingerprint).is_some(),
            _ => false,
        }
    }
}

/// Why an event could not be encoded (a value the schema rejects).
#[derive(Debug, thiserror::Error)]
#[error("cannot encode `{event_type}`: {source}")]
pub struct EncodeError {
    pub event_type: &'static str,
    #[source]
    pub source: apache_avro::Error,
}
