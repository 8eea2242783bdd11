//! `saga-codegen`: compile a saga spec of your own, or check that generated files are fresh.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use saga_codegen::{CompileError, Layout, SpecErrors, check, compile, prove};

/// Compiles a saga spec (YAML) into typed Rust, Avro schemas and Markdown docs.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The saga spec to compile.
    #[arg(long, default_value = "spec/saga.yaml")]
    spec: PathBuf,
    /// Output root: writes `generated/src/`, `.avro/` and `docs/saga.md` under it (and reads the
    /// schema history in `.avro/`).
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Write nothing; fail listing every stale file.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let source =
        std::fs::read_to_string(&args.spec).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.spec.display()))?;
    let name = args.spec.display().to_string();
    let refused = |errors: SpecErrors| {
        eprint!("{}", errors.render());
        eprintln!("error: {errors}");
        Ok(ExitCode::FAILURE)
    };
    let files = match compile(&args.out, &name, &source, &Layout::standard()) {
        Ok(f) => f,
        Err(CompileError::Spec(errors)) => return refused(errors),
        Err(e) => return Err(e.into()),
    };
    // `compile` checked the spec: it parses again.
    match check(&name, &source).and_then(|saga| prove(&name, &source, &saga)) {
        Ok(proof) => {
            println!("verified {name}: {proof}");
            eprint!("{}", proof.render_warnings(&name));
        }
        Err(errors) => return refused(errors),
    }
    if args.check {
        let stale = files.stale(&args.out)?;
        if stale.is_empty() {
            println!("{} generated files are up to date", files.files.len());
            return Ok(ExitCode::SUCCESS);
        }
        for p in &stale {
            eprintln!("stale: {}", p.display());
        }
        eprintln!("{} generated file(s) are stale: regenerate them and commit", stale.len());
        return Ok(ExitCode::FAILURE);
    }
    let changed = files.write(&args.out)?;
    println!("wrote {} of {} generated files under {}", changed.len(), files.files.len(), args.out.display());
    Ok(ExitCode::SUCCESS)
}
