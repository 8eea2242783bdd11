//! Redis: one server per stack with its own config file and data folder.

use std::fs;
use std::process::Command;

use anyhow::Context;

use super::config::StackConfig;

/// Writes the config (every start, so a changed port takes effect) and returns the command.
pub fn command(config: &StackConfig) -> anyhow::Result<Command> {
    let dir = config.state_dir.join("redis");
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let conf = dir.join("redis.conf");
    let text = format!(
        "# Written by `cargo xtask up`; edits are overwritten.\n\
         bind {host}\n\
         port {port}\n\
         protected-mode yes\n\
         daemonize no\n\
         dir {dir}\n\
         dbfilename dump.rdb\n\
         save 300 1\n\
         appendonly no\n\
         logfile \"\"\n\
         loglevel warning\n",
        host = config.host(),
        port = config.ports.redis,
        dir = dir.display(),
    );
    fs::write(&conf, text).with_context(|| format!("cannot write {}", conf.display()))?;
    let mut command = Command::new("redis-server");
    command.arg(conf);
    Ok(command)
}

/// Ready when it answers PING.
pub async fn probe(config: &StackConfig) -> anyhow::Result<()> {
    let client = redis::Client::open(config.redis_url())?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let pong: String = redis::cmd("PING").query_async(&mut connection).await?;
    anyhow::ensure!(pong == "PONG", "unexpected PING reply {pong:?}");
    Ok(())
}
