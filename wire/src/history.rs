//! Single-object encoding over the published versions of an event's schema.

use std::sync::OnceLock;

use apache_avro::Schema;
use apache_avro::types::Value;

use crate::{DecodeError, EncodeError};

/// First two bytes of every message: the Avro single-object encoding marker.
pub const SINGLE_OBJECT_MARKER: [u8; 2] = [0xC3, 0x01];

/// Length of the single-object header: marker plus 8-byte fingerprint.
pub const HEADER_LEN: usize = 10;

/// One published version of an event's schema, as committed in
/// `.avro/<event>/v<version>.avsc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaVersion {
    /// 1 for the first version; each incompatible-looking change adds one.
    pub version: u32,
    /// CRC-64-AVRO fingerprint of the schema's Parsing Canonical Form.
    pub fingerprint: [u8; 8],
    /// The schema as JSON.
    pub json: &'static str,
}

/// Every published version of one event's schema, oldest first. Messages are
/// written with the newest; a message written with any of them decodes, its
/// writer schema resolved to the newest by Avro's rules (a field the writer
/// lacks gets its default, one the reader lacks is skipped, enum symbols match
/// by name, numbers are promoted). So an event still in Kafka, in an outbox,
/// parked, or redriven from a dead-letter topic after a spec change decodes.
///
/// A version published after this code was built decodes too once the
/// process has [learned](crate::learned) it: a newer writer's schema, looked
/// up by fingerprint on the saga's schema topic.
#[derive(Debug)]
pub struct SchemaHistory {
    event_type: &'static str,
    versions: &'static [SchemaVersion],
    /// `versions`, parsed on first use.
    parsed: OnceLock<Vec<Schema>>,
    /// The full name of the newest version's record, on first use: a learned
    /// schema of another name is no version of this event.
    record_name: OnceLock<Option<String>>,
}

impl SchemaHistory {
    /// `versions` must not be empty and must be valid Avro: the generator
    /// parses each one before it emits the table.
    pub const fn new(event_type: &'static str, versions: &'static [SchemaVersion]) -> SchemaHistory {
        assert!(!versions.is_empty(), "an event has at least one schema version");
        SchemaHistory { event_type, versions, parsed: OnceLock::new(), record_name: OnceLock::new() }
    }

    pub fn event_type(&self) -> &'static str {
        self.event_type
    }

    pub fn versions(&self) -> &'static [SchemaVersion] {
        self.versions
    }

    /// The version messages are written with.
    pub fn latest(&self) -> &'static SchemaVersion {
        // `new` refuses an empty list.
        &self.versions[self.versions.len() - 1]
    }

    /// Whether a message with this fingerprint is one of this event's: a
    /// version held here, or one learned at run time under this event's name.
    pub fn knows(&self, fingerprint: &[u8; 8]) -> bool {
        self.versions.iter().any(|v| &v.fingerprint == fingerprint) || self.learned(fingerprint).is_some()
    }

    /// A version of this event's schema learned at run time under `fingerprint`.
    fn learned(&self, fingerprint: &[u8; 8]) -> Option<std::sync::Arc<crate::learned::LearnedSchema>> {
        let name = self.record_name.get_or_init(|| crate::learned::record_name(self.writer_schema()));
        crate::learned::learned(fingerprint).filter(|learned| Some(&learned.name) == name.as_ref())
    }

    fn parsed(&self) -> &[Schema] {
        self.parsed.get_or_init(|| {
            self.versions
                .iter()
                .map(|v| {
                    Schema::parse_str(v.json).expect("the generator parsed every schema version before emitting it")
                })
                .collect()
        })
    }

    /// The schema messages are written with, parsed.
    pub fn writer_schema(&self) -> &Schema {
        let parsed = self.parsed();
        &parsed[parsed.len() - 1]
    }

    /// The single-object encoding of `value` with the newest schema.
    pub fn encode(&self, value: Value) -> Result<Vec<u8>, EncodeError> {
        let datum = apache_avro::to_avro_datum(self.writer_schema(), value)
            .map_err(|source| EncodeError { event_type: self.event_type, source })?;
        let mut out = Vec::with_capacity(HEADER_LEN + datum.len());
        out.extend_from_slice(&SINGLE_OBJECT_MARKER);
        out.extend_from_slice(&self.latest().fingerprint);
        out.extend_from_slice(&datum);
        Ok(out)
    }

    /// Decodes a single-object message written with any version, held here
    /// or learned, as a value of the newest schema held here.
    pub fn decode(&self, bytes: &[u8]) -> Result<Value, DecodeError> {
        let found = fingerprint_of(bytes)?;
        let mut datum = &bytes[HEADER_LEN..];
        let Some(index) = self.versions.iter().rposition(|v| v.fingerprint == found) else {
            let learned =
                self.learned(&found).ok_or(DecodeError::FingerprintMismatch { event_type: self.event_type, found })?;
            return Ok(apache_avro::from_avro_datum(&learned.schema, &mut datum, Some(self.writer_schema()))?);
        };
        let parsed = self.parsed();
        let latest = parsed.len() - 1;
        let reader = (index != latest).then(|| &parsed[latest]);
        Ok(apache_avro::from_avro_datum(&parsed[index], &mut datum, reader)?)
    }
}

impl SchemaHistory {
    /// Decodes a message written with a version this history does not hold
    /// (one published after this code was built), given that version, as a
    /// value of the newest schema held here: what a consumer of an earlier
    /// version does with a schema it looked up by fingerprint (in
    /// `.avro/index.json` of the newer spec). Works when the change between
    /// them was compatible.
    pub fn decode_with(&self, bytes: &[u8], writer: &SchemaVersion) -> Result<Value, DecodeError> {
        let found = fingerprint_of(bytes)?;
        if found != writer.fingerprint {
            return Err(DecodeError::FingerprintMismatch { event_type: self.event_type, found });
        }
        let schema = Schema::parse_str(writer.json)?;
        let mut datum = &bytes[HEADER_LEN..];
        Ok(apache_avro::from_avro_datum(&schema, &mut datum, Some(self.writer_schema()))?)
    }
}

/// The schema fingerprint in a single-object encoded message.
pub fn fingerprint_of(bytes: &[u8]) -> Result<[u8; 8], DecodeError> {
    if bytes.len() < HEADER_LEN {
        return Err(DecodeError::TooShort { len: bytes.len() });
    }
    if bytes[..2] != SINGLE_OBJECT_MARKER {
        return Err(DecodeError::NotSingleObject);
    }
    let mut fingerprint = [0u8; 8];
    fingerprint.copy_from_slice(&bytes[2..HEADER_LEN]);
    Ok(fingerprint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AvroValue;

    const V1: &str = r#"{"type":"record","name":"Seat","namespace":"t","fields":[
        {"name":"row","type":"int"},
        {"name":"class","type":{"type":"enum","name":"Class","symbols":["economy","business","first"]}},
        {"name":"gone","type":"string"}]}"#;
    const V2: &str = r#"{"type":"record","name":"Seat","namespace":"t","fields":[
        {"name":"row","type":"long"},
        {"name":"class","type":{"type":"enum","name":"Class","symbols":["business","economy","first"]}},
        {"name":"note","type":"string","default":"none"}]}"#;

    fn history() -> &'static SchemaHistory {
        static VERSIONS: OnceLock<Vec<SchemaVersion>> = OnceLock::new();
        static HISTORY: OnceLock<SchemaHistory> = OnceLock::new();
        let versions = VERSIONS.get_or_init(|| {
            [V1, V2]
                .iter()
                .zip(1..)
                .map(|(json, version)| SchemaVersion {
                    version,
                    fingerprint: crate::canonical::fingerprint(&serde_json::from_str(json).expect("JSON"))
                        .expect("canonical"),
                    json,
                })
                .collect()
        });
        HISTORY.get_or_init(|| SchemaHistory::new("seat", versions))
    }

    fn v1_message() -> Vec<u8> {
        let v1 = &history().versions()[0];
        let schema = Schema::parse_str(v1.json).expect("v1 parses");
        let value = Value::Record(vec![
            ("row".into(), Value::Int(7)),
            ("class".into(), Value::Enum(1, "business".into())),
            ("gone".into(), Value::String("x".into())),
        ]);
        let mut out = SINGLE_OBJECT_MARKER.to_vec();
        out.extend_from_slice(&v1.fingerprint);
        out.extend(apache_avro::to_avro_datum(&schema, value).expect("encodes"));
        out
    }

    #[test]
    fn an_older_version_resolves_to_the_newest() {
        let value = history().decode(&v1_message()).expect("v1 decodes");
        let mut fields = crate::record_fields(value, "Seat").expect("record");
        let row = i64::from_avro(crate::take_field(&mut fields, "Seat", "row").expect("row"), "row");
        assert_eq!(row.ok(), Some(7), "int promoted to long");
        assert!(matches!(crate::take_field(&mut fields, "Seat", "class"), Ok(Value::Enum(0, s)) if s == "business"));
        assert!(matches!(crate::take_field(&mut fields, "Seat", "note"), Ok(Value::String(s)) if s == "none"));
        assert!(crate::take_field(&mut fields, "Seat", "gone").is_err(), "a field the reader lacks is skipped");
    }

    #[test]
    fn messages_are_written_with_the_newest_version() {
        let value = Value::Record(vec![
            ("row".into(), Value::Long(3)),
            ("class".into(), Value::Enum(2, "first".into())),
            ("note".into(), Value::String("aisle".into())),
        ]);
        let bytes = history().encode(value.clone()).expect("encodes");
        assert_eq!(fingerprint_of(&bytes).ok(), Some(history().latest().fingerprint));
        assert_eq!(history().decode(&bytes).ok(), Some(value));
    }

    #[test]
    fn a_foreign_fingerprint_or_a_short_message_is_refused() {
        let mut bytes = v1_message();
        bytes[2] ^= 0xff;
        assert!(matches!(history().decode(&bytes), Err(DecodeError::FingerprintMismatch { event_type: "seat", .. })));
        assert!(matches!(history().decode(&bytes[..5]), Err(DecodeError::TooShort { len: 5 })));
        bytes[0] = 0;
        assert!(matches!(history().decode(&bytes), Err(DecodeError::NotSingleObject)));
    }

    /// A version newer than this build: V2 with a field added and `note` gone.
    const V3: &str = r#"{"type":"record","name":"Seat","namespace":"t","fields":[
        {"name":"row","type":"long"},
        {"name":"class","type":{"type":"enum","name":"Class","symbols":["business","economy","first"]}},
        {"name":"gate","type":"string","default":"A"}]}"#;

    fn message(json: &str, value: Value) -> ([u8; 8], Vec<u8>) {
        let fingerprint = crate::canonical::fingerprint(&serde_json::from_str(json).expect("JSON")).expect("canonical");
        let schema = Schema::parse_str(json).expect("parses");
        let mut out = SINGLE_OBJECT_MARKER.to_vec();
        out.extend_from_slice(&fingerprint);
        out.extend(apache_avro::to_avro_datum(&schema, value).expect("encodes"));
        (fingerprint, out)
    }

    #[test]
    fn a_newer_version_decodes_once_learned() {
        let (fingerprint, bytes) = message(
            V3,
            Value::Record(vec![
                ("row".into(), Value::Long(9)),
                ("class".into(), Value::Enum(2, "first".into())),
                ("gate".into(), Value::String("B".into())),
            ]),
        );
        assert!(!history().knows(&fingerprint));
        assert!(matches!(history().decode(&bytes), Err(DecodeError::FingerprintMismatch { .. })));

        crate::learned::learn(fingerprint, V3).expect("a record under its own fingerprint");
        assert!(history().knows(&fingerprint));
        let value = history().decode(&bytes).expect("resolved to the newest held here");
        let mut fields = crate::record_fields(value, "Seat").expect("record");
        assert!(matches!(crate::take_field(&mut fields, "Seat", "note"), Ok(Value::String(s)) if s == "none"));
        assert!(crate::take_field(&mut fields, "Seat", "gate").is_err(), "the newer field is skipped");
    }

    #[test]
    fn a_learned_schema_of_another_record_or_under_another_fingerprint_is_no_version() {
        let other = r#"{"type":"record","name":"Bench","namespace":"t","fields":[{"name":"row","type":"long"}]}"#;
        let (fingerprint, bytes) = message(other, Value::Record(vec![("row".into(), Value::Long(1))]));
        crate::learned::learn(fingerprint, other).expect("learned");
        assert!(!history().knows(&fingerprint), "another event's schema");
        assert!(history().decode(&bytes).is_err());

        let claimed = [7u8; 8];
        assert!(matches!(
            crate::learned::learn(claimed, V3),
            Err(crate::learned::LearnError::WrongFingerprint { claimed: [7, 7, 7, 7, 7, 7, 7, 7], .. })
        ));
        assert!(crate::learned::learned(&claimed).is_none());
        let (enum_fingerprint, _) =
            message(r#"{"type":"enum","name":"E","symbols":["a"]}"#, Value::Enum(0, "a".into()));
        assert!(matches!(
            crate::learned::learn(enum_fingerprint, r#"{"type":"enum","name":"E","symbols":["a"]}"#),
            Err(crate::learned::LearnError::NotARecord(_))
        ));
    }
}
