//! Checks made before anything starts, so a bad environment gets one clear
//! line instead of a half-started stack.

use std::net::TcpListener;
use std::path::Path;

use anyhow::bail;

use super::config::StackConfig;

/// Fails when the disk holding the state folder has less than `min_free_mb` free.
pub fn check_disk(config: &StackConfig) -> anyhow::Result<()> {
    let Some(existing) = config.state_dir.ancestors().find(|p| p.exists()) else { return Ok(()) };
    let free_mb = free_mib(existing)?;
    if free_mb < config.min_free_mb {
        bail!(
            "only {free_mb} MiB free on the disk of {} (need {} MiB): free some space or point SAGA_STATE_DIR at another disk",
            existing.display(),
            config.min_free_mb
        );
    }
    Ok(())
}

fn free_mib(path: &Path) -> anyhow::Result<u64> {
    let stat = nix::sys::statvfs::statvfs(path)?;
    Ok(stat.blocks_available() as u64 * stat.fragment_size() as u64 / (1024 * 1024))
}

/// Fails naming the first port that another process already listens on.
pub fn check_ports_free(config: &StackConfig, wanted: impl IntoIterator<Item = (String, u16)>) -> anyhow::Result<()> {
    let ephemeral = ephemeral_port_range();
    for (component, port) in wanted {
        if let Some((low, high)) = ephemeral.filter(|(low, high)| (*low..=*high).contains(&port)) {
            eprintln!(
                "warning: port {port} ({component}) lies in the kernel's ephemeral range {low}-{high}: any outgoing \
                 connection may take it; prefer a SAGA_PORT_BASE below {low}"
            );
        }
        if TcpListener::bind((config.host(), port)).is_err() {
            bail!(
                "port {port} needed by {component} is already in use by another process: stop it, or move this stack with SAGA_PORT_BASE (or SAGA_{}_PORT)",
                component.to_uppercase()
            );
        }
    }
    Ok(())
}

/// The source ports the kernel hands to outgoing connections (Linux).
fn ephemeral_port_range() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut numbers = text.split_whitespace().map(|n| n.parse::<u16>().ok());
    Some((numbers.next()??, numbers.next()??))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Defaults;

    #[test]
    fn a_taken_port_is_named() {
        let config = StackConfig::resolve(Defaults::dev(), |_| None).expect("defaults");
        let taken = TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        let port = taken.local_addr().expect("addr").port();
        let error = check_ports_free(&config, [("redis".to_owned(), port)]).expect_err("port is taken");
        assert!(error.to_string().starts_with(&format!("port {port} needed by redis is already in use")), "{error}");
    }

    #[test]
    fn too_little_disk_is_refused() {
        let mut config = StackConfig::resolve(Defaults::dev(), |_| None).expect("defaults");
        config.min_free_mb = u64::MAX;
        let error = check_disk(&config).expect_err("no disk is that large");
        assert!(error.to_string().contains("MiB free on the disk"), "{error}");
    }
}
