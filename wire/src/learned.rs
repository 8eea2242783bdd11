//! Writer schemas this process learned at run time: versions of an event's
//! schema published after this code was built.
//!
//! Every publisher registers the schemas it writes with, keyed by
//! fingerprint, on the saga's schema topic before it publishes them (the
//! runtime's `schema_registry`); a consumer that meets a fingerprint its
//! [`SchemaHistory`](crate::SchemaHistory) does not hold looks it up there
//! and [`learn`]s it. From then on the history decodes that version like one
//! of its own, resolving it to its newest schema by Avro's rules: a field the
//! newer writer added is skipped, one it dropped gets its default. So a
//! consumer need not be deployed before the publisher of a newer schema.
//!
//! A learned schema is trusted only as far as it checks out: its fingerprint
//! is recomputed from the schema itself, so an entry cannot claim another
//! schema's fingerprint, and a history uses it only when its record has the
//! history's own full name, so an entry cannot pass one event off as another.
//!
//! What is learned is kept for the life of the process, as a compiled-in
//! version would be: a fingerprint names one schema for ever.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use apache_avro::Schema;

use crate::canonical::{self, CanonicalError};

/// A writer schema learned at run time.
#[derive(Debug)]
pub struct LearnedSchema {
    pub fingerprint: [u8; 8],
    /// The full name of its record (`namespace.Name`): the event it is a version of.
    pub name: String,
    pub schema: Schema,
}

/// Why a registered schema was not learned.
#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("no Avro schema: {0}")]
    Avro(#[from] apache_avro::Error),
    #[error("no canonical form: {0}")]
    Canonical(#[from] CanonicalError),
    #[error("registered under fingerprint {claimed:02x?}, but the schema's own is {actual:02x?}")]
    WrongFingerprint { claimed: [u8; 8], actual: [u8; 8] },
    #[error("an event's schema is a named record, not {0:?}")]
    NotARecord(String),
}

static LEARNED: RwLock<BTreeMap<[u8; 8], Arc<LearnedSchema>>> = RwLock::new(BTreeMap::new());

/// Learns the schema `json`, registered under `fingerprint`: refused unless
/// the fingerprint is the schema's own and the schema is a record.
pub fn learn(fingerprint: [u8; 8], json: &str) -> Result<Arc<LearnedSchema>, LearnError> {
    let value: serde_json::Value = serde_json::from_str(json)?;
    let actual = canonical::fingerprint(&value)?;
    if actual != fingerprint {
        return Err(LearnError::WrongFingerprint { claimed: fingerprint, actual });
    }
    let schema = Schema::parse(&value)?;
    let Some(name) = record_name(&schema) else {
        return Err(LearnError::NotARecord(value.get("type").map(ToString::to_string).unwrap_or_default()));
    };
    let learned = Arc::new(LearnedSchema { fingerprint, name, schema });
    // A poisoned lock only means another thread panicked while inserting: the map is whole.
    let mut map = LEARNED.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    Ok(map.entry(fingerprint).or_insert(learned).clone())
}

/// The schema learned under `fingerprint`, if any.
pub fn learned(fingerprint: &[u8; 8]) -> Option<Arc<LearnedSchema>> {
    LEARNED.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(fingerprint).cloned()
}

/// The full name of a record schema.
pub(crate) fn record_name(schema: &Schema) -> Option<String> {
    match schema {
        Schema::Record(record) => Some(record.name.fullname(None)),
        _ => None,
    }
}
