//! The schema history: every version of every event's schema that was ever
//! published, committed as `.avro/<event>/v<N>.avsc` and indexed in
//! `.avro/index.json`.
//!
//! The generator reads it, appends a version when an event's schema changed
//! (by fingerprint: a change of docs alone is no new version), and embeds
//! every version in the generated code, so a message written by any earlier
//! version of the spec still decodes. Versions are never removed: not even
//! those of an event the spec dropped, whose messages may still be in flight.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::evolution::Contract;

/// The file the history is indexed in, inside the Avro directory.
pub const INDEX_FILE: &str = "index.json";

/// One published version of an event's schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub version: u32,
    pub json: Value,
    pub fingerprint: [u8; 8],
}

impl Published {
    /// Where the version is kept, relative to the Avro directory.
    pub fn file(&self, event: &str) -> PathBuf {
        Path::new(event).join(format!("v{}.avsc", self.version))
    }
}

/// Every published version of every event, oldest first per event, and what
/// the last generated spec published (the gate compares the spec with it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    pub events: BTreeMap<String, Vec<Published>>,
    /// From `index.json`; `None` before the first generation.
    pub contract: Option<Contract>,
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is not valid JSON: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("{path} is not a valid Avro schema: {reason}")]
    Schema { path: PathBuf, reason: String },
    #[error("{dir} must hold v1.avsc, v2.avsc, ... without gaps; found {found:?}")]
    Numbering { dir: PathBuf, found: Vec<u32> },
    #[error("{path} has no valid `contract`: {source}")]
    Contract { path: PathBuf, source: serde_json::Error },
}

impl History {
    /// Reads the history kept under `avro_dir` (none yet if it does not exist).
    pub fn read(avro_dir: &Path) -> Result<History, HistoryError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| HistoryError::Io { path, source }
        };
        let mut history = History::default();
        let entries = match std::fs::read_dir(avro_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(history),
            Err(e) => return Err(io(avro_dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io(avro_dir))?;
            if !entry.file_type().map_err(io(&entry.path()))?.is_dir() {
                continue;
            }
            let event = entry.file_name().to_string_lossy().into_owned();
            let versions = read_versions(&entry.path())?;
            if !versions.is_empty() {
                history.events.insert(event, versions);
            }
        }
        let index = avro_dir.join(INDEX_FILE);
        match std::fs::read_to_string(&index) {
            Ok(text) => {
                let json: Value =
                    serde_json::from_str(&text).map_err(|source| HistoryError::Json { path: index.clone(), source })?;
                if let Some(contract) = json.get("contract") {
                    history.contract = Some(
                        serde_json::from_value(contract.clone())
                            .map_err(|source| HistoryError::Contract { path: index.clone(), source })?,
                    );
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&index)(e)),
        }
        Ok(history)
    }

    /// The JSON of the schema `event` was last written with.
    pub fn written(&self, event: &str) -> Option<&Value> {
        self.versions(event).last().map(|v| &v.json)
    }

    /// The versions of `event`, oldest first (none if it was never published).
    pub fn versions(&self, event: &str) -> &[Published] {
        self.events.get(event).map(Vec::as_slice).unwrap_or_default()
    }

    /// The history once `json` is the newest schema of `event`: unchanged if
    /// its fingerprint is the newest version's (the newest keeps the new docs),
    /// else with a new version appended.
    pub fn publish(&mut self, event: &str, json: Value, fingerprint: [u8; 8]) -> &[Published] {
        let versions = self.events.entry(event.to_string()).or_default();
        match versions.last_mut() {
            Some(last) if last.fingerprint == fingerprint => last.json = json,
            last => {
                let version = last.map_or(1, |l| l.version + 1);
                versions.push(Published { version, json, fingerprint });
            }
        }
        versions
    }

    /// `index.json`: every version's file and fingerprint (lower-case hex of
    /// the 8 bytes as they appear on the wire), and which version each event
    /// of the spec writes, so a consumer in any language finds a message's
    /// writer schema by its fingerprint; and the `contract` the spec publishes.
    pub fn index(&self, contract: &Contract, generated: &str) -> String {
        let current: Vec<&str> = contract.events.keys().map(String::as_str).collect();
        let current = &current;
        let schemas: Vec<Value> = self
            .events
            .iter()
            .flat_map(|(event, versions)| {
                let newest = versions.last().map(|v| v.version);
                versions.iter().map(move |v| {
                    json!({
                        "event": event,
                        "version": v.version,
                        "fingerprint": hex(&v.fingerprint),
                        "file": v.file(event).display().to_string(),
                        "written": current.contains(&event.as_str()) && Some(v.version) == newest,
                    })
                })
            })
            .collect();
        let generated = generated.strip_prefix("@generated ").unwrap_or(generated);
        let index = json!({ "@generated": generated, "schemas": schemas, "contract": contract });
        let mut text = serde_json::to_string_pretty(&index).unwrap_or_default();
        text.push('\n');
        text
    }
}

fn read_versions(dir: &Path) -> Result<Vec<Published>, HistoryError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| HistoryError::Io { path, source }
    };
    let mut numbered = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let Some(number) = name.strip_prefix('v').and_then(|n| n.strip_suffix(".avsc")) else { continue };
        let Ok(version) = number.parse::<u32>() else { continue };
        numbered.insert(version, path);
    }
    let found: Vec<u32> = numbered.keys().copied().collect();
    if found.iter().zip(1..).any(|(v, expected)| *v != expected) {
        return Err(HistoryError::Numbering { dir: dir.to_path_buf(), found });
    }
    let mut versions = Vec::new();
    for (version, path) in numbered {
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let json: Value =
            serde_json::from_str(&text).map_err(|source| HistoryError::Json { path: path.clone(), source })?;
        let invalid = |reason: String| HistoryError::Schema { path: path.clone(), reason };
        apache_avro::Schema::parse(&json).map_err(|e| invalid(e.to_string()))?;
        let fingerprint = saga_wire::canonical::fingerprint(&json).map_err(|e| invalid(e.to_string()))?;
        versions.push(Published { version, json, fingerprint });
    }
    Ok(versions)
}

/// Lower-case hex of `bytes`, in order.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(doc: &str, fields: Value) -> Value {
        json!({ "type": "record", "name": "E", "doc": doc, "fields": fields })
    }

    fn fingerprint(json: &Value) -> [u8; 8] {
        saga_wire::canonical::fingerprint(json).expect("valid schema")
    }

    #[test]
    fn a_changed_schema_appends_a_version_and_a_changed_doc_does_not() {
        let mut history = History::default();
        let v1 = schema("first", json!([{ "name": "a", "type": "int" }]));
        history.publish("e", v1.clone(), fingerprint(&v1));
        let redoc = schema("second", json!([{ "name": "a", "type": "int" }]));
        let versions = history.publish("e", redoc.clone(), fingerprint(&redoc));
        assert_eq!(versions.len(), 1, "docs are not part of the fingerprint");
        assert_eq!(versions[0].json, redoc, "the newest version keeps the new docs");
        let v2 = schema("x", json!([{ "name": "a", "type": "int" }, { "name": "b", "type": "string", "default": "" }]));
        let versions = history.publish("e", v2.clone(), fingerprint(&v2));
        assert_eq!(versions.iter().map(|v| v.version).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(versions[1].file("e"), Path::new("e/v2.avsc"));
    }

    #[test]
    fn the_index_names_every_version_and_the_one_written() {
        let mut history = History::default();
        let v1 = schema("", json!([{ "name": "a", "type": "int" }]));
        let v2 = schema("", json!([{ "name": "a", "type": "long" }]));
        history.publish("e", v1.clone(), fingerprint(&v1));
        history.publish("e", v2.clone(), fingerprint(&v2));
        history.publish("gone", v1.clone(), fingerprint(&v1));
        let mut contract = Contract::default();
        contract.events.insert("e".into(), Default::default());
        let index: Value = serde_json::from_str(&history.index(&contract, "test")).expect("JSON");
        let written: Vec<(String, bool)> = index["schemas"]
            .as_array()
            .expect("list")
            .iter()
            .map(|s| (s["file"].as_str().unwrap_or_default().to_string(), s["written"] == json!(true)))
            .collect();
        assert_eq!(
            written,
            [("e/v1.avsc".to_string(), false), ("e/v2.avsc".to_string(), true), ("gone/v1.avsc".to_string(), false)]
        );
        assert_eq!(index["schemas"][0]["fingerprint"], json!(hex(&fingerprint(&v1))));
    }

    #[test]
    fn a_gap_in_the_numbering_is_refused() {
        let dir = std::env::temp_dir().join(format!("saga-history-{}", std::process::id()));
        let event = dir.join("e");
        std::fs::create_dir_all(&event).expect("temp dir");
        let v = schema("", json!([{ "name": "a", "type": "int" }])).to_string();
        std::fs::write(event.join("v1.avsc"), &v).expect("write");
        std::fs::write(event.join("v3.avsc"), &v).expect("write");
        let error = History::read(&dir).expect_err("v2 is missing");
        std::fs::remove_dir_all(&dir).ok();
        assert!(matches!(error, HistoryError::Numbering { ref found, .. } if found == &[1, 3]), "{error}");
    }
}
