//! The wire format as an independent Avro implementation reads it: fastavro
//! (PyPI), the library a Python consumer of the saga's topics would use.
//! Every committed schema version has the fingerprint fastavro computes from
//! its Parsing Canonical Form (the one `.avro/index.json` gives), and the live
//! events of real sagas decode with fastavro by the fingerprint in their
//! single-object header alone, found through the index as any consumer would: those
//! the Rust services wrote and those of the Go shipping participant.

use std::io::Write as _;
use std::process::Command;

use rdkafka::Message;
use saga_tests::saga::{Clients, header, messages_with_key};
use serde_json::Value;

const FASTAVRO: &str = "fastavro==1.13.1";

/// Reads the schema history's index and hex-encoded messages, one per line;
/// prints, as JSON, each indexed schema's canonical form and fingerprint as
/// fastavro computes them, and each message decoded by the schema its
/// header's fingerprint names.
const READER: &str = r#"
import io, json, os, sys
from fastavro import parse_schema, schemaless_reader
from fastavro.schema import fingerprint, to_parsing_canonical_form

avro_dir, messages_path = sys.argv[1], sys.argv[2]
schemas, by_fingerprint = {}, {}
with open(os.path.join(avro_dir, "index.json")) as f:
    index = json.load(f)
for entry in index["schemas"]:
    with open(os.path.join(avro_dir, entry["file"])) as f:
        raw = json.load(f)
    canonical = to_parsing_canonical_form(raw)
    fp = fingerprint(canonical, "CRC-64-AVRO")
    schemas[entry["file"]] = {"canonical": canonical, "fingerprint": fp, "indexed": entry["fingerprint"],
                              "event": entry["event"], "written": entry["written"]}
    by_fingerprint[entry["fingerprint"]] = (entry["event"], parse_schema(raw))
messages = []
with open(messages_path) as f:
    for line in f:
        data = bytes.fromhex(line.strip())
        if data[:2] != b"\xc3\x01":
            messages.append({"error": "no single-object marker"})
            continue
        fp = data[2:10].hex()
        if fp not in by_fingerprint:
            messages.append({"error": "unknown fingerprint " + fp})
            continue
        event, schema = by_fingerprint[fp]
        record = schemaless_reader(io.BytesIO(data[10:]), schema)
        messages.append({"event": event, "key": str(record["order_id"]), "payload": sorted(record["payload"])})
print(json.dumps({"schemas": schemas, "messages": messages}))
"#;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn fastavro_computes_our_fingerprints_and_decodes_live_events_by_them() {
    let stack = saga_tests::stack();
    let root = stack.root.clone();
    let python = tokio::task::spawn_blocking(move || {
        saga_tests::python::venv_bin(&root, FASTAVRO, "SAGA_FASTAVRO_VENV").join("python")
    })
    .await
    .expect("install fastavro");

    // Two sagas on the shared stack: one completes, one fails for want of stock.
    let mut c = Clients::of_stack(&stack).await;
    let buyer = c.user(10_000).await;
    let product = c.product(250, 1).await;
    let paid = c.order(&buyer, &[(&product, 1)]).await;
    c.wait_status(&paid.order_id, "completed").await;
    let short = c.order(&buyer, &[(&product, 1)]).await;
    c.wait_status(&short.order_id, "inventory_reserved_failed").await;
    let brokers = stack.kafka_brokers();
    let mut live = Vec::new();
    for key in [&paid.order_id, &short.order_id] {
        for topic in saga_generated::topology::TOPICS {
            live.extend(messages_with_key(&brokers, topic.name, key));
        }
    }
    assert!(live.len() >= 6, "both sagas' events: {}", live.len());
    // The shipping service's reply is among them: written by the Go participant when the stack
    // runs it (its default; `SAGA_GO_SERVICES`), so fastavro checks the Go encoding too.
    assert!(
        live.iter().any(|m| header(m, "event-type").as_deref() == Some("shipment.booked")),
        "the completed saga's shipment.booked"
    );

    let mut lines = tempfile_in(&stack.state_dir);
    for m in &live {
        writeln!(lines.1, "{}", hex(m.payload().expect("a payload"))).expect("write");
    }
    let output =
        saga_tests::python::run(Command::new(python).arg("-c").arg(READER).arg(stack.root.join(".avro")).arg(&lines.0));
    let _ = std::fs::remove_file(&lines.0);
    let report: Value = serde_json::from_slice(&output.stdout).expect("the reader's JSON");

    // The fingerprints fastavro computes are the ones the index gives, for every version...
    let schemas = report["schemas"].as_object().expect("schemas");
    assert!(schemas.len() > saga_generated::topology::EVENTS.len(), "the history holds earlier versions too");
    for (file, theirs) in schemas {
        assert_eq!(
            theirs["fingerprint"], theirs["indexed"],
            "{file}: fastavro's canonical form is {}",
            theirs["canonical"]
        );
    }
    // ...and the one each event is written with is the one on our wire.
    for event in saga_generated::topology::EVENTS {
        let written: Vec<&Value> =
            schemas.values().filter(|s| s["event"] == event.event_type && s["written"] == Value::Bool(true)).collect();
        assert_eq!(written.len(), 1, "{}: one version written", event.event_type);
        assert_eq!(written[0]["fingerprint"].as_str(), Some(hex(&event.fingerprint).as_str()), "{}", event.event_type);
    }
    // Each live message decodes by its fingerprint alone, as the event its header names.
    let decoded = report["messages"].as_array().expect("messages");
    assert_eq!(decoded.len(), live.len());
    for (message, read) in live.iter().zip(decoded) {
        let key = String::from_utf8_lossy(message.key().expect("a key")).into_owned();
        assert_eq!(read["error"], Value::Null, "{read}");
        assert_eq!(read["event"].as_str(), header(message, "event-type").as_deref(), "{read}");
        assert_eq!(read["key"].as_str(), Some(key.as_str()), "{read}");
    }
}

/// A new file under `dir` for the reader's input.
fn tempfile_in(dir: &std::path::Path) -> (std::path::PathBuf, std::fs::File) {
    std::fs::create_dir_all(dir).expect("state folder");
    let path = dir.join(format!("fastavro-{}.hex", uuid::Uuid::new_v4().simple()));
    let file = std::fs::File::create(&path).expect("create");
    (path, file)
}
