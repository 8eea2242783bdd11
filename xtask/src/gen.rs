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

/// Arguments of `cargo xtask verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Prove only this spec (any saga: it is checked and proved, not compiled against the
    /// schema history). Without it: `spec/saga.yaml` and every example in `spec/examples/`.
    #[arg(long)]
    pub spec: Option<PathBuf>,
}

/// Everything the workspace's specs compile into, each spec proved; a refused spec's
/// diagnostics are printed and are the error.
fn compiled(root: &Path, spec: &Path) -> anyhow::Result<saga_codegen::FileSet> {
    let files = match saga_codegen::workspace(root, spec) {
        Ok(f) => f,
        Err(WorkspaceError::Compile(CompileError::Spec(errors))) => {
            // The diagnostics are the message: file:line:column, the name, a hint.
            eprint!("{}", errors.render());
            bail!("{errors}")
        }
        Err(e) => return Err(e.into()),
    };
    for (spec, proof) in &files.proofs {
        println!("verify: {spec}: {proof}");
        eprint!("{}", proof.render_warnings(spec));
    }
    Ok(files)
}

pub fn verify(root: &Path, args: &VerifyArgs) -> anyhow::Result<()> {
    let Some(spec) = &args.spec else {
        return compiled(root, Path::new("spec/saga.yaml"))
            .map(|files| println!("verify: {} specs sound", files.proofs.len()));
    };
    let name = spec.display().to_string();
    let source = std::fs::read_to_string(root.join(spec)).with_context(|| format!("reading {name}"))?;
    match saga_codegen::check(&name, &source).and_then(|saga| saga_codegen::prove(&name, &source, &saga)) {
        Ok(proof) => {
            println!("verify: {name}: {proof}");
            eprint!("{}", proof.render_warnings(&name));
            Ok(())
        }
        Err(errors) => {
            eprint!("{}", errors.render());
            bail!("{errors}")
        }
    }
}

pub fn run(root: &Path, args: &GenArgs) -> anyhow::Result<()> {
    let files = compiled(root, &args.spec)?;
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

/// `cargo xtask spec ...`: questions about the saga spec itself.
#[derive(Debug, clap::Subcommand)]
pub enum SpecCommand {
    /// Every change between the spec at a git revision and the working tree's, each
    /// classified as compatible or breaking with the reason, the behaviour changes, the
    /// deploy order and its proof with old and new versions side by side (fails if a
    /// change is breaking or the deploy order is not sound).
    Diff {
        /// The revision to compare with (a commit, branch or tag).
        #[arg(default_value = "HEAD")]
        base: String,
        /// The saga spec, relative to the workspace root.
        #[arg(long, default_value = "spec/saga.yaml")]
        spec: PathBuf,
    },
}

/// Runs a `spec` command; `Ok(false)` when the diff found a breaking change or a deploy
/// order that is not sound.
pub fn spec(root: &Path, command: &SpecCommand) -> anyhow::Result<bool> {
    let SpecCommand::Diff { base, spec } = command;
    let shown = std::process::Command::new("git")
        .current_dir(root)
        .arg("show")
        .arg(format!("{base}:{}", spec.display()))
        .output()
        .context("running git")?;
    if !shown.status.success() {
        bail!("cannot read {} at `{base}`: {}", spec.display(), String::from_utf8_lossy(&shown.stderr).trim());
    }
    let old = String::from_utf8(shown.stdout).context("the old spec is not UTF-8")?;
    let new = std::fs::read_to_string(root.join(spec)).with_context(|| format!("reading {}", spec.display()))?;
    let (old_name, new_name) = (format!("{base}:{}", spec.display()), spec.display().to_string());
    let (changes, plan) = match saga_codegen::diff((&old_name, &old), (&new_name, &new)) {
        Ok(diff) => diff,
        Err(errors) => {
            eprint!("{}", errors.render());
            bail!("{errors}")
        }
    };
    if changes.is_empty() && plan.changes.is_empty() {
        println!("spec diff: no changes from {base}");
        return Ok(true);
    }
    for change in &changes {
        println!("{change}");
    }
    let breaking = changes.iter().filter(|c| c.verdict == saga_codegen::evolution::Verdict::Breaking).count();
    println!("spec diff: {} change(s) from {base}, {breaking} breaking", changes.len());
    println!("\nbehaviour: {} change(s)", plan.changes.len());
    println!("{plan}");
    if let Ok(proofs) = &plan.proofs {
        let took: std::time::Duration = proofs.iter().map(|p| p.elapsed).sum();
        println!("({} order(s) explored in {:.1} s)", proofs.len(), took.as_secs_f64());
    }
    // A plan whose own order the mixed-version model finds unsound fails like a breaking
    // change; one it could not model (an owner that changes, say) stands on its rules.
    let rollout_ok = plan.proofs.is_err() || plan.proved();
    Ok(breaking == 0 && rollout_ok)
}
