//! `cargo xtask`: the project's own commands.
//!
//! A light binary: the spec compiler's commands (`gen`, `verify`, `spec`) run here, with
//! nothing but the code generator linked in, so `cargo xtask gen` builds neither librdkafka
//! nor the `saga-generated` crate it rewrites (a spec that breaks that crate can still be
//! regenerated). Every command that runs a stack or talks to one is handed, arguments
//! unchanged, to the `saga-tools` binary (`tools/`), which `cargo run` builds first.

mod r#gen;
mod new;

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::{Args, Parser, Subcommand};
use r#gen::{GenArgs, SpecCommand, VerifyArgs};

/// Project automation for the saga platform.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", about)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Regenerate the code, schemas and docs compiled from the saga spec.
    Gen(GenArgs),
    /// Prove the saga of every spec sound (`gen --check` does too): every saga ends, every
    /// event has an answer, nothing is held after a failure; prints the states explored,
    /// or every violation with a counterexample as a Mermaid sequence diagram.
    Verify(VerifyArgs),
    /// Questions about the spec: `diff [<git-ref>]` classifies every change since a
    /// revision as compatible or breaking, and tells the behaviour change and deploy order.
    #[command(subcommand)]
    Spec(SpecCommand),
    /// Start something the spec declares: `service <name>` writes a participant's crate.
    #[command(subcommand)]
    New(new::NewCommand),
    /// Install what is missing and start PostgreSQL, Redis, Kafka and the services on 127.0.0.1.
    #[command(disable_help_flag = true)]
    Up(Forwarded),
    /// Stop exactly what `up` started.
    #[command(disable_help_flag = true)]
    Down(Forwarded),
    /// Show what runs and where.
    #[command(disable_help_flag = true)]
    Status(Forwarded),
    /// Run every test of the workspace against a fresh, isolated stack; a
    /// full run (no cargo arguments) first runs two short chaos scenarios on it.
    #[command(disable_help_flag = true)]
    Test(Forwarded),
    /// One saga: `trace <order-id>` shows its timeline across the services (`--json` for scripts).
    #[command(disable_help_flag = true)]
    Saga(Forwarded),
    /// Dead letters: `list` them, `redrive <topic>` them (with --dry-run).
    #[command(disable_help_flag = true)]
    Dlq(Forwarded),
    /// Saga throughput and latency on a fresh stack of its own, against the
    /// machine's bounds (pgbench, Kafka perf tools); see BENCHMARKS.md.
    #[command(disable_help_flag = true)]
    Bench(Forwarded),
    /// Faults under load on a fresh stack of its own (kill -9 of each
    /// component, PostgreSQL and broker outages): recovery, goodput and the
    /// invariants after each; see RELIABILITY.md.
    #[command(disable_help_flag = true)]
    Chaos(Forwarded),
}

/// The arguments of a command `saga-tools` runs, `--help` included, passed on as they are.
#[derive(Debug, Args)]
struct Forwarded {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> anyhow::Result<ExitCode> {
    let root = workspace_root();
    match task {
        Task::Gen(args) => r#gen::run(&root, &args)?,
        Task::Verify(args) => r#gen::verify(&root, &args)?,
        Task::New(command) => new::run(&root, &command)?,
        Task::Spec(command) => {
            if !r#gen::spec(&root, &command)? {
                return Ok(ExitCode::FAILURE);
            }
        }
        Task::Up(_)
        | Task::Down(_)
        | Task::Status(_)
        | Task::Test(_)
        | Task::Saga(_)
        | Task::Dlq(_)
        | Task::Bench(_)
        | Task::Chaos(_) => {
            // Only returns if cargo could not be started: on success this process becomes it.
            let error = tools_command(&root, std::env::args_os().skip(1)).exec();
            anyhow::bail!("cannot run cargo for saga-tools: {error}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `cargo run -p saga-tools -- <args>` in the workspace: the same cargo that runs xtask, so
/// the same toolchain and target folder.
fn tools_command(root: &Path, args: impl IntoIterator<Item = OsString>) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(root).args(["run", "--quiet", "--package", "saga-tools", "--"]).args(args);
    command
}

/// The workspace root: the parent of this crate's folder. Cargo sets `CARGO_MANIFEST_DIR`
/// when it runs xtask, and that is the checkout it was asked to work in; the compile-time
/// value is only the fallback, because two checkouts sharing one target folder can run an
/// xtask cargo compiled in the other one (it then worked in, and benchmarked, the other
/// checkout).
fn workspace_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir.parent().map(Path::to_path_buf).unwrap_or(manifest_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What follows the command name reaches saga-tools as typed, help included.
    #[test]
    fn forwarded_commands_keep_their_arguments() {
        let cli = Cli::try_parse_from(["xtask", "dlq", "redrive", "payment-events", "--dry-run"]).unwrap();
        let Task::Dlq(Forwarded { args }) = cli.command else { panic!("not forwarded: {cli:?}") };
        assert_eq!(args, ["redrive", "payment-events", "--dry-run"]);
        let cli = Cli::try_parse_from(["xtask", "up", "--help"]).unwrap();
        let Task::Up(Forwarded { args }) = cli.command else { panic!("not forwarded: {cli:?}") };
        assert_eq!(args, ["--help"]);
    }

    #[test]
    fn saga_tools_runs_in_the_workspace_under_cargo_run() {
        let command = tools_command(Path::new("/ws"), ["status".into()]);
        let args: Vec<_> = command.get_args().collect();
        assert_eq!(args, ["run", "--quiet", "--package", "saga-tools", "--", "status"]);
        assert_eq!(command.get_current_dir(), Some(Path::new("/ws")));
    }
}
