//! `cargo xtask gen [--check] [--spec PATH]`: regenerates (or checks) everything the saga
//! spec compiles into: `generated/src/`, `.avro/`, `docs/saga.md`, and the Rust of every
//! example spec in `spec/examples/` (compiled as tests of the generated crate).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use saga_codegen::{CompileError, WorkspaceError};

/// Arguments of `cargo xtask gen`.
#[derive(Debug, clap::Args)]
pub struct GenArgs {
    /// Fail, listing every stale file, instead of rewriting.
    #[arg(long)]
    pub check: bool,
    /// The saga spec to compile.
    #[arg(long, default_value = "spec/saga.yaml")]
    pub spec: PathBuf,
}

pub fn run(root: &Path, args: &GenArgs) -> anyhow::Result<()> {
    let files = match saga_codegen::workspace(root, &args.spec) {
        Ok(f) => f,
        Err(WorkspaceError::Compile(CompileError::Spec(errors))) => {
            // The diagnostics are the message: file:line:column, the name, a hint.
            eprint!("{}", errors.render());
            bail!("{errors}")
        }
        Err(e) => return Err(e.into()),
    };
    if args.check {
        let stale = files.stale(root).context("comparing generated files")?;
        if stale.is_empty() {
            println!("gen: {} generated files are up to date", files.files.len());
            return Ok(());
        }
        for p in &stale {
            eprintln!("stale: {}", p.display());
        }
        bail!("{} generated file(s) are stale: run `cargo xtask gen` and commit", stale.len());
    }
    let changed = files.write(root).context("writing generated files")?;
    for p in &changed {
        println!("gen: updated {}", p.display());
    }
    println!("gen: {} of {} generated files changed", changed.len(), files.files.len());
    Ok(())
}
