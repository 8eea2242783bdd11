//! Go emitter: IR -> Go source text of one package per saga, beside the Rust crate
//! (`generated/go/<package>/`). Knows nothing of YAML.
//!
//! Like the Rust emitter, it writes only what the spec decides (types, events, schemas,
//! topology, names); what every saga does alike is hand-written Go in the runtime module
//! (`runtime-go/`: `wire` for the encoding, `contract` for the rows of the topology).

mod commands;
mod events;
mod handlers;
mod names;
mod samples;
mod schemas;
mod status;
mod text;
mod topology;
mod types;

use std::collections::BTreeMap;

use super::avro::EventSchema;
use crate::ir::{Saga, TypeKind};

/// The Go module of the hand-written runtime the generated package imports.
pub const RUNTIME_MODULE: &str = "sagaplatform/runtime-go";

/// The folder of a saga's package under the Go output folder: the package's name.
pub fn package_dir(saga: &Saga) -> String {
    names::package(saga)
}

/// The import block of `imports`: the standard library's first, then the others, as
/// `goimports` groups them.
fn import_block(imports: &[&str]) -> String {
    let (mut std, mut other): (Vec<&str>, Vec<&str>) = imports
        .iter()
        .copied()
        .partition(|i| !i.split('/').next().unwrap_or("").contains('.') && !i.starts_with(RUNTIME_MODULE));
    std.sort();
    other.sort();
    let line = |i: &&str| format!("\t\"{i}\"\n");
    let mut out = String::from("\nimport (\n");
    out.extend(std.iter().map(line));
    if !std.is_empty() && !other.is_empty() {
        out.push('\n');
    }
    out.extend(other.iter().map(line));
    out.push_str(")\n");
    out
}

/// All Go files of the saga's package, by file name. `header` is the generated-code line
/// Go's tools recognise (`// Code generated ... DO NOT EDIT.`).
pub fn files(saga: &Saga, schemas: &[EventSchema], header: &str) -> BTreeMap<String, String> {
    let package = names::package(saga);
    let file = |doc: &str, imports: &[&str], body: String| {
        format!("{header}\n{doc}package {package}\n{}{body}", import_block(imports))
    };
    let runtime = |p: &str| format!("{RUNTIME_MODULE}/{p}");
    let mut out = BTreeMap::new();

    let package_doc = text::comment(
        "",
        &format!(
            "Package {package} is the typed code of saga `{}`{}\n\n\
             Generated from the saga spec: change the spec and run `cargo xtask gen`. What every saga\n\
             does alike (the encoding, the rows of the topology) is the runtime's, in module\n\
             {RUNTIME_MODULE}.",
            saga.name,
            saga.doc.as_deref().map(|d| format!(": {d}")).unwrap_or_else(|| ".".into()),
        ),
    );
    let contract = runtime("contract");
    let mut saga_imports = vec![contract.as_str()];
    if saga.services.iter().any(|s| saga.subscriptions(&s.name).next().is_some()) {
        saga_imports.push("time");
    }
    out.insert("saga.go".into(), file(&package_doc, &saga_imports, topology::declarations(saga)));

    if !saga.types.is_empty() {
        let mut imports = Vec::new();
        for pkg in ["time", "uuid"] {
            let used = saga.types.iter().any(|t| match &t.kind {
                TypeKind::Record(fields) => fields.iter().any(|f| types::uses(&f.ty, pkg)),
                TypeKind::Enum(_) => false,
            });
            if used {
                imports.push(if pkg == "uuid" { "github.com/google/uuid" } else { "time" });
            }
        }
        let body = types::declarations(saga);
        out.insert(
            "types.go".into(),
            if imports.is_empty() { format!("{header}\npackage {package}\n{body}") } else { file("", &imports, body) },
        );
    }

    if let Some(machine) = &saga.status {
        out.insert("status.go".into(), file("", &["time", runtime("status").as_str()], status::declarations(machine)));
        if !saga.commands.is_empty() {
            let owner = runtime("owner");
            let imports = ["context", "github.com/google/uuid", "github.com/jackc/pgx/v5", owner.as_str()];
            out.insert("commands.go".into(), file("", &imports, commands::declarations(saga)));
        }
    }
    let participant = runtime("participant");
    let wire = runtime("wire");
    out.insert(
        "events.go".into(),
        file(
            "",
            &["fmt", "time", "github.com/google/uuid", participant.as_str(), wire.as_str()],
            events::declarations(saga),
        ),
    );
    if !handlers::handlers(saga).is_empty() {
        let owner = runtime("owner");
        let mut imports = vec!["context"];
        if handlers::binds_owner(saga) {
            imports.extend(["fmt", "github.com/google/uuid"]);
        }
        imports.extend(["github.com/jackc/pgx/v5", participant.as_str()]);
        if handlers::binds_owner(saga) {
            imports.push(owner.as_str());
        }
        out.insert("handlers.go".into(), file("", &imports, handlers::declarations(saga)));
    }
    // A sample names `time` only for a timestamp somewhere in the events' or types' fields.
    let timestamps = saga.events.iter().flat_map(|e| &e.fields).any(|f| types::uses(&f.ty, "time"))
        || saga.types.iter().any(|t| match &t.kind {
            TypeKind::Record(fields) => fields.iter().any(|f| types::uses(&f.ty, "time")),
            TypeKind::Enum(_) => false,
        });
    let sample_imports: &[&str] =
        if timestamps { &["fmt", "time", "github.com/google/uuid"] } else { &["fmt", "github.com/google/uuid"] };
    out.insert("samples.go".into(), file("", sample_imports, samples::declarations(saga)));
    out.insert("schemas.go".into(), file("", &["slices", "sync", wire.as_str()], schemas::declarations(schemas)));
    out
}
