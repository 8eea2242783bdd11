//! Who may do what on the stack's Kafka: a SASL/SCRAM principal per service
//! (named after it), `console` for the operator console, and `admin`, the
//! broker's super user, which the brokers talk to each other as and `xtask`
//! and the tests use. The broker refuses every client that does not sign in,
//! and lets each principal do only what it is granted: the services and the
//! console what the spec gives them (`KAFKA_GRANTS`, generated).
//!
//! Passwords are random, made once per workspace into
//! `.state/kafka-credentials/` (the folder 0700, each file 0600) and shared
//! by every local stack of the workspace: one process (`cargo xtask test`
//! runs the test stack and then the replicated one) signs in as one principal.
//! A broker learns them when its storage is formatted (`--add-scram`).

use std::fs;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context, bail};
use rand::Rng;
use saga_generated::topology::KAFKA_GRANTS;
use saga_runtime::kafka::{Credentials, SASL_MECHANISM};

use super::config::{StackConfig, services};

/// The broker's super user.
pub const ADMIN: &str = "admin";
/// The operator console's principal.
pub use saga_generated::topology::CONSOLE_PRINCIPAL as CONSOLE;

/// Every principal of a stack.
pub fn principals() -> Vec<String> {
    let mut names = vec![ADMIN.to_owned(), CONSOLE.to_owned()];
    names.extend(services().iter().map(|s| s.name.to_owned()));
    names
}

fn dir(config: &StackConfig) -> PathBuf {
    config.root.join(".state/kafka-credentials")
}

/// Makes a password for every principal that has none yet.
pub fn ensure_credentials(config: &StackConfig) -> anyhow::Result<()> {
    let dir = dir(config);
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    for principal in principals() {
        let path = dir.join(&principal);
        if path.exists() {
            continue;
        }
        // Letters and digits only: the password goes into JAAS and SCRAM
        // configuration strings unquoted by anything else.
        let password: String = rand::rng().sample_iter(rand::distr::Alphanumeric).take(32).map(char::from).collect();
        super::write_private(&path, &password)?;
    }
    Ok(())
}

/// `principal`'s credentials.
pub fn credentials(config: &StackConfig, principal: &str) -> anyhow::Result<Credentials> {
    let path = dir(config).join(principal);
    let password = fs::read_to_string(&path).with_context(|| {
        format!("no Kafka password for {principal} at {} (`cargo xtask up` makes it)", path.display())
    })?;
    Ok(Credentials { username: principal.to_owned(), password: password.trim().to_owned() })
}

/// Makes every Kafka client of this process sign in as the super user.
pub fn authenticate_as_admin(config: &StackConfig) -> anyhow::Result<()> {
    ensure_credentials(config)?;
    saga_runtime::kafka::authenticate_as(Some(credentials(config, ADMIN)?)).map_err(anyhow::Error::msg)
}

/// The settings a process of `principal` signs in with.
pub fn env(config: &StackConfig, principal: &str) -> anyhow::Result<[(&'static str, String); 2]> {
    let credentials = credentials(config, principal)?;
    Ok([("KAFKA_SASL_USERNAME", credentials.username), ("KAFKA_SASL_PASSWORD", credentials.password)])
}

/// `kafka-storage format` arguments that give the new cluster every principal's SCRAM credential.
pub fn format_args(config: &StackConfig) -> anyhow::Result<Vec<String>> {
    let mut args = Vec::new();
    for principal in principals() {
        let credentials = credentials(config, &principal)?;
        args.push("--add-scram".to_owned());
        args.push(format!("{SASL_MECHANISM}=[name={principal},password={}]", credentials.password));
    }
    Ok(args)
}

/// The broker settings for authentication and authorization: SASL/SCRAM on
/// the client listener (which the brokers also use between themselves, as
/// `admin`), SASL/PLAIN with a static `admin` on the controller listener
/// (SCRAM credentials live in the metadata the controllers serve, so they
/// cannot guard it), and Kafka's own authorizer, which refuses whatever no
/// ACL allows.
pub fn broker_settings(admin: &str) -> Vec<(&'static str, String)> {
    let scram = format!(
        "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"{ADMIN}\" password=\"{admin}\";"
    );
    let plain = format!(
        "org.apache.kafka.common.security.plain.PlainLoginModule required username=\"{ADMIN}\" password=\"{admin}\" \
         user_{ADMIN}=\"{admin}\";"
    );
    vec![
        ("sasl.enabled.mechanisms", SASL_MECHANISM.to_owned()),
        ("sasl.mechanism.inter.broker.protocol", SASL_MECHANISM.to_owned()),
        ("listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config", scram),
        ("sasl.mechanism.controller.protocol", "PLAIN".to_owned()),
        ("listener.name.controller.sasl.enabled.mechanisms", "PLAIN".to_owned()),
        ("listener.name.controller.plain.sasl.jaas.config", plain),
        ("authorizer.class.name", "org.apache.kafka.metadata.authorizer.StandardAuthorizer".to_owned()),
        ("super.users", format!("User:{ADMIN}")),
        ("allow.everyone.if.no.acl.found", "false".to_owned()),
    ]
}

/// One ACL as the broker's admin API takes it: principal, resource type,
/// pattern type, resource name, operation.
pub type Acl = (&'static str, &'static str, &'static str, &'static str, &'static str);

/// Every ACL of the stack: the grants generated from the spec, for the
/// services and the console.
pub fn acls() -> Vec<Acl> {
    KAFKA_GRANTS
        .iter()
        .flat_map(|g| g.operations.iter().map(|op| (g.principal, g.resource, g.pattern, g.name, *op)))
        .collect()
}

/// A client properties file for Kafka's own tools (the benchmark's perf
/// tools), signed in as the super user; 0600, beside the passwords.
pub fn admin_properties_file(config: &StackConfig) -> anyhow::Result<PathBuf> {
    let admin = credentials(config, ADMIN)?.password;
    let path = dir(config).join("admin.properties");
    let text = format!(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism={SASL_MECHANISM}\nsasl.jaas.config=\
         org.apache.kafka.common.security.scram.ScramLoginModule required username=\"{ADMIN}\" password=\"{admin}\";\n"
    );
    super::write_private(&path, &text)?;
    Ok(path)
}

/// Creates every ACL of [`acls`] on the cluster (again: creating one that
/// exists changes nothing), through Kafka's own admin client: `ApplyAcls.java`
/// run as a single-file program on the broker's classpath, since librdkafka's
/// ACL calls are not in the Rust client.
pub fn apply_acls(config: &StackConfig) -> anyhow::Result<()> {
    let lines: String = acls()
        .into_iter()
        .map(|(principal, resource, pattern, name, operation)| {
            format!("{principal} {resource} {pattern} {name} {operation}\n")
        })
        .collect();
    let mut command = super::kafka::tool(config, &config.root.join("infra/kafka/ApplyAcls.java").display().to_string());
    command
        .arg(config.kafka_brokers())
        .env("KAFKA_ADMIN_PASSWORD", credentials(config, ADMIN)?.password)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().context("cannot run java for the Kafka ACLs")?;
    child.stdin.take().context("stdin")?.write_all(lines.as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "applying the Kafka ACLs failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_acl_names_a_principal_of_the_stack() {
        let principals = principals();
        for (principal, resource, pattern, name, operation) in acls() {
            assert!(principals.iter().any(|p| p == principal), "{principal}");
            assert!(["topic", "group"].contains(&resource) && ["literal", "prefixed"].contains(&pattern));
            assert!(!name.contains(' ') && ["Read", "Write", "Describe"].contains(&operation));
        }
    }
}
