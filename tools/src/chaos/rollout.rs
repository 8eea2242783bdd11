//! The rollout scenarios of `cargo xtask chaos`: a change of the saga's shape deployed
//! under load, as `cargo xtask spec diff` plans and proves it.
//!
//! The stack starts at the previous version of the saga: the backend services built
//! from a git revision (`--from`) in a worktree of their own, with a target folder of
//! their own, and a service that version does not have (shipping, for the shipping step)
//! not deployed. The gateway runs this workspace's build from the start: it is the
//! client of the services' APIs, and a client goes first (a status it does not know
//! would fail its answer). Then, under open-loop load, each service is replaced by this
//! workspace's build, instance by instance, each back in its consumer group before the
//! next, in the scenario's order; a service the previous version did not have is started.
//!
//! Besides the checks of every planned change (nothing failed, nothing cancelled,
//! nothing dead-lettered, money and stock conserved, every order terminal and, after the
//! rollout, ended as it would have without it), every order placed after the rollout and
//! completed has a parcel booked for it, weighed: it went through the shipping step with
//! the saga context. Sagas begun before or during the rollout end as either version
//! defines, which the invariants check: an order the previous version completed holds
//! its debit and its stock, and shipping, deployed later, books it a parcel unweighed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::Signal;
use saga_stack::config::services;
use saga_stack::{Component, StackConfig, UpOptions};

use super::client::Record;

/// The revision `--from` names by default: this platform with the saga as it was before
/// the shipping step (its spec, schema history and services of that version).
pub const DEFAULT_FROM: &str = "rollout/three-participants";

/// The previous version, built: each backend service it has, by binary name, where its
/// binary is.
#[derive(Debug, Clone)]
pub struct Previous {
    pub revision: String,
    pub binaries: BTreeMap<String, PathBuf>,
}

impl Previous {
    /// Whether the previous version has `service` (by name).
    fn has(&self, service: &str) -> bool {
        services().into_iter().any(|s| s.name == service && self.binaries.contains_key(&s.binary()))
    }
}

/// The revision `from` as git knows it here: as given, or the remote branch of a clone.
fn resolve(root: &Path, from: &str) -> anyhow::Result<String> {
    for candidate in [from.to_owned(), format!("origin/{from}")] {
        let out = Command::new("git")
            .current_dir(root)
            .args(["rev-parse", "--verify", "--quiet", &format!("{candidate}^{{commit}}")])
            .output()
            .context("running git")?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned());
        }
    }
    bail!("no git revision {from:?} (nor origin/{from}): fetch it, or name another with --from")
}

/// Checks out `from` in a worktree under the stack's folder and builds its backend
/// services there (the stack's profile, a target folder of its own: the two versions
/// share no artifacts).
pub fn build(config: &StackConfig, from: &str) -> anyhow::Result<Previous> {
    let revision = resolve(&config.root, from)?;
    let base = config.root.join(".state/rollout");
    let tree = base.join(&revision[..12]);
    if !tree.join("Cargo.toml").is_file() {
        std::fs::create_dir_all(&base)?;
        let status = Command::new("git")
            .current_dir(&config.root)
            .args(["worktree", "add", "--force", "--detach"])
            .arg(&tree)
            .arg(&revision)
            .status()
            .context("running git worktree add")?;
        if !status.success() {
            bail!("git worktree add of {revision} failed ({status})");
        }
    }
    let present: Vec<_> = services().into_iter().filter(|s| tree.join("services").join(s.name).is_dir()).collect();
    if present.is_empty() {
        bail!("{from} ({revision}) has none of this version's services");
    }
    let target = base.join("target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(&tree).env("CARGO_TARGET_DIR", &target).args(["build", "--quiet"]);
    if config.release {
        command.arg("--release");
    }
    for service in &present {
        command.args(["-p", &service.binary()]);
    }
    let names: Vec<&str> = present.iter().map(|s| s.name).collect();
    println!("chaos: building the previous version ({from}, {}) of {}", &revision[..12], names.join(", "));
    let status = command.status().context("cannot run cargo build")?;
    if !status.success() {
        bail!("building {from} failed (cargo build exited with {status})");
    }
    let profile = if config.release { "release" } else { "debug" };
    let binaries = present.iter().map(|s| (s.binary(), target.join(profile).join(s.binary()))).collect();
    Ok(Previous { revision, binaries })
}

/// A fresh stack at the previous version: the services it has from its build, the others
/// stopped (not deployed yet).
pub async fn start_previous(config: &StackConfig, previous: &Previous) -> anyhow::Result<()> {
    let old = StackConfig { binaries: previous.binaries.clone(), ..config.clone() };
    saga_stack::down(&old);
    saga_stack::purge(&old)?;
    saga_stack::up(&old, UpOptions { services: true, build: false }).await?;
    for service in services().into_iter().filter(|s| !previous.has(s.name)) {
        for instance in Component::replicas(config, service) {
            let tracked = instance.tracked(config);
            tokio::task::spawn_blocking(move || tracked.stop(Signal::SIGTERM, Duration::from_secs(30))).await?;
        }
        println!("  {} is not deployed yet (the previous version has no such service)", service.name);
    }
    Ok(())
}

/// Replaces the services in `order` by this workspace's build (`config` names no other),
/// instance by instance, each back in its consumer group before the next; a service that
/// was not deployed is started.
pub async fn replace(config: &StackConfig, order: &[&str], previous: &Previous) -> anyhow::Result<()> {
    let mut deployed: Vec<&str> = services().iter().filter(|s| previous.has(s.name)).map(|s| s.name).collect();
    for name in order {
        let service = services().into_iter().find(|s| s.name == *name).with_context(|| format!("no service {name}"))?;
        println!("  deploying the new {name}");
        for instance in Component::replicas(config, service) {
            let tracked = instance.tracked(config);
            tokio::task::spawn_blocking(move || tracked.stop(Signal::SIGTERM, Duration::from_secs(30))).await?;
            saga_stack::start_component(config, instance)
                .await
                .with_context(|| format!("starting the new {}", instance.name()))?;
            if !deployed.contains(name) {
                deployed.push(name);
            }
            let running = |group_service: &str| deployed.contains(&group_service);
            saga_stack::kafka::consumer_groups_of_stable(config, Duration::from_secs(60), &running).await?;
        }
    }
    Ok(())
}

/// Of the orders placed after `after` (from the scenario's start) that completed: how
/// many, and how many of them have a weighed parcel booked (they went through shipping
/// with the saga context).
pub async fn shipped_after(config: &StackConfig, records: &[Record], after: Duration) -> anyhow::Result<(i64, i64)> {
    use sqlx::Connection as _;
    let ids: Vec<uuid::Uuid> = records
        .iter()
        .filter(|r| r.intended >= after)
        .filter(|r| r.status.as_ref().is_some_and(|(s, _)| s == saga_generated::OrderStatus::Completed.as_str()))
        .flat_map(|r| r.order_ids.iter().filter_map(|id| id.parse().ok()))
        .collect();
    let mut shipping = sqlx::PgConnection::connect(&config.postgres_admin_url("shipping_service")).await?;
    let weighed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM shipments WHERE order_id = ANY($1) AND status = 'booked' AND units IS NOT NULL",
    )
    .bind(&ids)
    .fetch_one(&mut shipping)
    .await?;
    Ok((i64::try_from(ids.len())?, weighed))
}
