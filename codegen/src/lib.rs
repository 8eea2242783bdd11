//! The saga compiler: parse (YAML) -> validate (IR with source locations) -> emit.
//!
//! ```text
//! spec.yaml --serde_yaml--> parse::Spec --validate (+ spans)--> ir::Saga --emit--> files
//! ```
//!
//! The result is an in-memory file set; [`FileSet::write`] and [`FileSet::stale`] implement
//! `cargo xtask gen` and `cargo xtask gen --check`.

pub mod diagnostics;
pub mod emit;
pub mod evolution;
pub mod history;
pub mod ir;
pub mod parse;
pub mod rollout;
pub mod spans;
pub mod validate;
pub mod verify;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use miette::NamedSource;

pub use diagnostics::{SpecError, SpecErrors};

/// Where the outputs go, relative to an output root.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The generated crate's `src/`.
    pub rust_dir: PathBuf,
    /// The schema history (`<event>/v<N>.avsc` and `index.json`); `None` to skip.
    pub avro_dir: Option<PathBuf>,
    /// The generated Markdown; `None` to skip.
    pub docs_file: Option<PathBuf>,
    /// The folder of the generated Kubernetes resources (the Kafka topics and
    /// users, the network policies); `None` to skip.
    pub deploy_dir: Option<PathBuf>,
    /// The Go module folder the saga's Go package is written into (as
    /// `<go_dir>/<package>/`); `None` to skip.
    pub go_dir: Option<PathBuf>,
}

impl Layout {
    /// The workspace's layout: `generated/src`, `.avro`, `docs/saga.md`.
    pub fn standard() -> Layout {
        Layout {
            rust_dir: PathBuf::from("generated/src"),
            avro_dir: Some(PathBuf::from(".avro")),
            docs_file: Some(PathBuf::from("docs/saga.md")),
            deploy_dir: Some(PathBuf::from("deploy/kubernetes/generated")),
            go_dir: Some(PathBuf::from("generated/go")),
        }
    }

    /// Rust and Go only, for an example spec compiled into the generated crate's tests and
    /// beside the saga's Go package (`generated/go/examples/<stem>/<package>/`), where
    /// `go vet` checks that the Go target compiles for any spec.
    pub fn example(stem: &str) -> Layout {
        Layout {
            rust_dir: PathBuf::from("generated/tests/examples").join(stem),
            avro_dir: None,
            docs_file: None,
            deploy_dir: None,
            go_dir: Some(PathBuf::from("generated/go/examples").join(stem)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(transparent)]
    Spec(#[from] SpecErrors),
    /// The generator produced something invalid: a bug here, not in the spec.
    #[error("generator bug: {0}")]
    Internal(String),
    /// The committed schema history cannot be read.
    #[error(transparent)]
    History(#[from] history::HistoryError),
}

/// `errors` of spec `file`, each with the source to show it in.
fn located(file: &str, source: &str, errors: Vec<SpecError>) -> SpecErrors {
    let named = || NamedSource::new(file, source.to_string());
    SpecErrors { file: file.to_string(), errors: errors.into_iter().map(|e| e.with_source(named())).collect() }
}

/// Parses and validates a spec. `file` names it in diagnostics.
pub fn check(file: &str, source: &str) -> Result<ir::Saga, SpecErrors> {
    let fail = |errors: Vec<SpecError>| located(file, source, errors);
    let spans = spans::SpanMap::read(source).map_err(|e| {
        fail(vec![
            SpecError::new("spec::yaml", format!("malformed YAML: {}", e.message))
                .label(e.span, "here")
                .help("fix the YAML syntax (indentation, quotes, `:` after keys)"),
        ])
    })?;
    let spec = parse::parse(source).map_err(|(at, msg)| {
        let span = spans::Span::new(at.unwrap_or(0).min(source.len()), 1);
        // serde_yaml appends " at line X column Y"; the label shows the place instead.
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
        fail(vec![
            SpecError::new("spec::shape", format!("spec does not have the expected shape: {msg}"))
                .label(span, "here")
                .help("see docs/spec-language.md for the keys each section takes"),
        ])
    })?;
    validate::validate(&spec, &spans).map_err(fail)
}

/// The files one spec compiles into, keyed by path relative to the output root.
#[derive(Debug, Clone, Default)]
pub struct FileSet {
    pub files: BTreeMap<PathBuf, String>,
    /// Directories wholly owned by the generator: files in them that it did not produce are stale.
    pub owned_dirs: Vec<PathBuf>,
    /// Each spec [`workspace`] compiled, with what proving its saga took.
    pub proofs: Vec<(String, verify::Proof)>,
}

/// Compiles a spec into the file set for `layout`, reading the schema history
/// under `root` (see [`history`]). `spec_path` is how the preamble names it.
pub fn compile(root: &Path, spec_path: &str, source: &str, layout: &Layout) -> Result<FileSet, CompileError> {
    let saga = check(spec_path, source)?;
    let mut history = match &layout.avro_dir {
        Some(dir) => history::History::read(&root.join(dir))?,
        None => history::History::default(),
    };
    gate(spec_path, source, &saga, &history)?;
    emit_all(&saga, spec_path, layout, &mut history)
}

/// The verifier's gate (`cargo xtask verify`), which [`workspace`] runs on every spec it
/// compiles: a spec whose saga can go wrong compiles into nothing. [`compile`] leaves it
/// out, so the gate's tests, which compile the spec many times, do not explore it each time.
pub fn prove(file: &str, source: &str, saga: &ir::Saga) -> Result<verify::Proof, SpecErrors> {
    let mut proof = verify::verify(saga, source).map_err(|errors| located(file, source, errors))?;
    proof.warnings = located(file, source, std::mem::take(&mut proof.warnings)).errors;
    Ok(proof)
}

/// The compatibility gate: every breaking change from what the history says the last
/// generated spec published to `saga`, as located errors.
fn gate(file: &str, source: &str, saga: &ir::Saga, history: &history::History) -> Result<(), SpecErrors> {
    let Some(contract) = &history.contract else { return Ok(()) };
    let old = evolution::Published {
        contract: contract.clone(),
        schemas: contract.events.keys().filter_map(|e| Some((e.clone(), history.written(e)?))).collect(),
        migrations: Default::default(),
    };
    let schemas = event_schemas(saga);
    let breaking: Vec<evolution::Change> = evolution::diff(&old, &published(saga, &schemas))
        .into_iter()
        .filter(|c| c.verdict == evolution::Verdict::Breaking)
        .collect();
    if breaking.is_empty() {
        return Ok(());
    }
    // The spec parsed before the gate, so its spans read too.
    let spans = spans::SpanMap::read(source).unwrap_or_default();
    Err(located(file, source, breaking.iter().map(|c| c.diagnostic(&spans)).collect()))
}

/// The schema each event of `saga` is written with, as JSON.
fn event_schemas(saga: &ir::Saga) -> std::collections::BTreeMap<String, serde_json::Value> {
    saga.events.iter().map(|e| (e.name.clone(), emit::avro::event_schema(saga, e))).collect()
}

/// `saga` as the evolution check compares it.
fn published<'a>(
    saga: &ir::Saga,
    schemas: &'a std::collections::BTreeMap<String, serde_json::Value>,
) -> evolution::Published<'a> {
    evolution::Published {
        contract: evolution::Contract::of(saga),
        schemas: schemas.iter().map(|(e, s)| (e.clone(), s)).collect(),
        migrations: saga.status.iter().flat_map(|m| &m.migrations).map(|m| (m.from.clone(), m.to.clone())).collect(),
    }
}

/// Every change from spec `old` to spec `new` (each `(file, source)`), breaking ones first:
/// `cargo xtask spec diff`.
pub fn diff(old: (&str, &str), new: (&str, &str)) -> Result<(Vec<evolution::Change>, rollout::Plan), SpecErrors> {
    let (before, after) = (check(old.0, old.1)?, check(new.0, new.1)?);
    let (old_schemas, new_schemas) = (event_schemas(&before), event_schemas(&after));
    let changes = evolution::diff(&published(&before, &old_schemas), &published(&after, &new_schemas));
    Ok((changes, rollout::plan(&before, &after, &old_schemas, &new_schemas)))
}

/// The files of `saga`, its schemas published in `history` (which then holds what it
/// published, as the next version's gate needs it).
pub fn emit_all(
    saga: &ir::Saga,
    spec_path: &str,
    layout: &Layout,
    history: &mut history::History,
) -> Result<FileSet, CompileError> {
    let schemas = emit::avro::schemas(saga, history).map_err(|e| CompileError::Internal(e.to_string()))?;
    let what = format!("@generated by `cargo xtask gen` from {spec_path}; do not edit");
    let mut set = FileSet::default();
    let rust = emit::rust::files(saga, &schemas, &format!("// {what}.\n\n"))
        .map_err(|e| CompileError::Internal(format!("emitted Rust does not parse: {e}")))?;
    for (name, text) in rust {
        set.files.insert(layout.rust_dir.join(name), text);
    }
    if let Some(svg) = emit::svg::status(saga) {
        set.files.insert(layout.rust_dir.join("status.svg"), format!("<!-- {what}. -->\n{svg}"));
    }
    set.owned_dirs.push(layout.rust_dir.clone());
    if let Some(dir) = &layout.go_dir {
        let package = dir.join(emit::go::package_dir(saga));
        let header = format!("// Code generated by `cargo xtask gen` from {spec_path}. DO NOT EDIT.\n");
        for (name, text) in emit::go::files(saga, &schemas, &header) {
            set.files.insert(package.join(name), text);
        }
        set.owned_dirs.push(package);
    }
    if let Some(dir) = &layout.avro_dir {
        for (event, versions) in &history.events {
            for v in versions {
                set.files.insert(dir.join(v.file(event)), emit::avro::pretty(&v.json));
            }
            set.owned_dirs.push(dir.join(event));
        }
        set.files.insert(dir.join(history::INDEX_FILE), history.index(&evolution::Contract::of(saga), &what));
        set.owned_dirs.push(dir.clone());
    }
    history.contract = Some(evolution::Contract::of(saga));
    if let Some(file) = &layout.docs_file {
        set.files.insert(file.clone(), emit::docs::markdown(saga, &schemas, &format!("<!-- {what}. -->\n")));
    }
    if let Some(dir) = &layout.deploy_dir {
        let header = format!("# {what}.\n");
        set.files.insert(dir.join("kafka-topics.yaml"), emit::deploy::kafka_topics(saga, &header));
        set.files.insert(dir.join("kafka-users.yaml"), emit::deploy::kafka_users(saga, &header));
        set.files.insert(dir.join("network-policies.yaml"), emit::deploy::network_policies(saga, &header));
        set.files.insert(dir.join("services.yaml"), emit::deploy::services(saga, &header));
        set.files.insert(dir.join("databases.yaml"), emit::deploy::databases(saga, &header));
        set.files.insert(dir.join("console-database-urls.yaml"), emit::deploy::console_database_urls(saga, &header));
    }
    Ok(set)
}

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Compile(#[from] CompileError),
}

/// Everything `cargo xtask gen` owns in a workspace: `spec` (relative to `root`, or absolute)
/// in the standard layout, plus the Rust of every `spec/examples/*.yaml` under
/// `generated/tests/examples/<name>/`, where the generated crate's tests compile it. A folder
/// `spec/examples/<name>/` holds versions of one spec, `v1.yaml`, `v2.yaml`, ...: each is
/// gated against the one before and published after it, as the real spec is against its
/// history, into `generated/tests/examples/<name>/v<N>/`.
pub fn workspace(root: &Path, spec: &Path) -> Result<FileSet, WorkspaceError> {
    let mut files = compile_file(root, spec, &Layout::standard())?;
    files.files.extend(scaffold_pin(root, spec)?);
    let examples = root.join("spec/examples");
    let (mut specs, mut versioned) = (Vec::new(), Vec::new());
    for path in list(&examples)? {
        if path.extension().is_some_and(|x| x == "yaml") {
            specs.push(path);
        } else if path.is_dir() {
            versioned.push(path);
        }
    }
    for spec in specs {
        let stem = spec.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        files.merge(compile_file(root, &spec, &Layout::example(&stem))?);
    }
    for dir in versioned {
        let name = dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let mut history = history::History::default();
        let mut versions: Vec<(u32, PathBuf)> = list(&dir)?
            .into_iter()
            .filter_map(|p| {
                let number = p.file_name()?.to_str()?.strip_prefix('v')?.strip_suffix(".yaml")?.parse().ok()?;
                Some((number, p))
            })
            .collect();
        versions.sort();
        for (number, spec) in versions {
            let (name_in_preamble, source) = read_spec(root, &spec)?;
            let saga = check(&name_in_preamble, &source).map_err(CompileError::from)?;
            let layout = Layout::example(&format!("{name}/v{number}"));
            gate(&name_in_preamble, &source, &saga, &history).map_err(CompileError::from)?;
            let proof = prove(&name_in_preamble, &source, &saga).map_err(CompileError::from)?;
            files.merge(emit_all(&saga, &name_in_preamble, &layout, &mut history)?);
            files.proofs.push((name_in_preamble, proof));
        }
    }
    Ok(files)
}

/// Where the scaffold of the spec's first participant is kept, so that the test suite
/// compiles what `cargo xtask new service` writes against the generated crate.
pub const SCAFFOLD_PIN: &str = "tests/tests/standalone/scaffold_participant.rs";

/// The handler file `cargo xtask new service` writes for the first participant of `spec`
/// (the first service that does not own the status), at [`SCAFFOLD_PIN`]; none without
/// one.
fn scaffold_pin(root: &Path, spec: &Path) -> Result<Option<(PathBuf, String)>, WorkspaceError> {
    let (name, source) = read_spec(root, spec)?;
    let saga = check(&name, &source).map_err(CompileError::from)?;
    let owner = saga.status.as_ref().map(|sm| sm.owner.as_str());
    let Some(participant) = saga.services.iter().find(|s| Some(s.name.as_str()) != owner) else { return Ok(None) };
    let files = emit::rust::scaffold::service(&saga, &participant.name).map_err(CompileError::Internal)?;
    let Some((_, handlers)) = files.into_iter().find(|(p, _)| p.ends_with("src/handlers.rs")) else { return Ok(None) };
    let body = handlers.split_once("\n\n").map(|(_, rest)| rest).unwrap_or(&handlers);
    let header = format!(
        "// @generated by `cargo xtask gen` from {name}; do not edit. The handler file `cargo xtask new service {}`\n\
         // writes, kept here so the test suite compiles the scaffold against the generated crate.\n\n",
        participant.name
    );
    Ok(Some((PathBuf::from(SCAFFOLD_PIN), format!("{header}{body}"))))
}

/// The entries of a folder, sorted; none if it does not exist.
fn list(dir: &Path) -> Result<Vec<PathBuf>, WorkspaceError> {
    let io = |source| WorkspaceError::Io { path: dir.to_path_buf(), source };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    let mut paths = entries.map(|e| e.map(|e| e.path())).collect::<Result<Vec<_>, _>>().map_err(io)?;
    paths.sort();
    Ok(paths)
}

/// A spec's text, and its name relative to the root (so the preamble is the same on every machine).
fn read_spec(root: &Path, spec: &Path) -> Result<(String, String), WorkspaceError> {
    let path = if spec.is_absolute() { spec.to_path_buf() } else { root.join(spec) };
    let source = std::fs::read_to_string(&path).map_err(|source| WorkspaceError::Io { path: path.clone(), source })?;
    Ok((path.strip_prefix(root).unwrap_or(&path).display().to_string(), source))
}

fn compile_file(root: &Path, spec: &Path, layout: &Layout) -> Result<FileSet, WorkspaceError> {
    let (name, source) = read_spec(root, spec)?;
    let mut files = compile(root, &name, &source, layout)?;
    let saga = check(&name, &source).map_err(CompileError::from)?;
    let proof = prove(&name, &source, &saga).map_err(CompileError::from)?;
    files.proofs.push((name, proof));
    Ok(files)
}

impl FileSet {
    pub fn merge(&mut self, other: FileSet) {
        self.files.extend(other.files);
        self.owned_dirs.extend(other.owned_dirs);
        self.proofs.extend(other.proofs);
    }

    /// Files under `root` that differ from what the generator produces, plus leftovers in the
    /// directories it owns.
    pub fn stale(&self, root: &Path) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for (rel, text) in &self.files {
            match std::fs::read_to_string(root.join(rel)) {
                Ok(current) if current == *text => {}
                Ok(_) => out.push(rel.clone()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => out.push(rel.clone()),
                Err(e) => return Err(e),
            }
        }
        out.extend(self.leftovers(root)?);
        out.sort();
        Ok(out)
    }

    /// Writes every changed file (untouched files keep their mtime, so cargo does not rebuild)
    /// and removes leftovers. Returns the paths it changed.
    pub fn write(&self, root: &Path) -> io::Result<Vec<PathBuf>> {
        let changed = self.stale(root)?;
        for rel in &changed {
            let path = root.join(rel);
            match self.files.get(rel) {
                Some(text) => {
                    if let Some(parent) = path.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    // Write beside and rename, so a reader never sees half a file.
                    let tmp = path.with_extension("gen-tmp");
                    std::fs::write(&tmp, text)?;
                    std::fs::rename(&tmp, &path)?;
                }
                None => std::fs::remove_file(&path)?,
            }
        }
        Ok(changed)
    }

    fn leftovers(&self, root: &Path) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for dir in &self.owned_dirs {
            let entries = match std::fs::read_dir(root.join(dir)) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                if !entry.file_type()?.is_file() {
                    continue;
                }
                let rel = dir.join(entry.file_name());
                if !self.files.contains_key(&rel) {
                    out.push(rel);
                }
            }
        }
        Ok(out)
    }
}
