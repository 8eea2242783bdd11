//! The Apache Kafka broker in KRaft mode (combined broker + controller, one
//! node), run from the jars that `infra/kafka/pom.xml` resolves, the way the
//! official scripts run it: storage formatted once, then `kafka.Kafka` with a
//! properties file and a log4j2 config.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use saga_generated::topology::{CONSUMER_GROUPS, TOPICS};

use super::config::StackConfig;
use super::install::run_logged;

fn dir(config: &StackConfig) -> PathBuf {
    config.state_dir.join("kafka")
}

fn data_dir(config: &StackConfig) -> PathBuf {
    dir(config).join("data")
}

fn classpath(config: &StackConfig) -> String {
    // The JVM expands `dir/*` to every jar in the folder itself.
    format!("{}/*", config.kafka_libs.display())
}

fn java(config: &StackConfig) -> Command {
    let mut command = Command::new("java");
    command
        .arg(format!("-Dlog4j2.configurationFile=file:{}", config.root.join("infra/kafka/log4j2.yaml").display()))
        .arg("-cp")
        .arg(classpath(config));
    command
}

/// Writes `server.properties` and formats the storage on first use. A storage
/// folder formatted for another cluster is refused with what to do about it.
pub fn prepare(config: &StackConfig) -> anyhow::Result<()> {
    let dir = dir(config);
    let data = data_dir(config);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let properties = dir.join("server.properties");
    fs::write(&properties, server_properties(config))
        .with_context(|| format!("cannot write {}", properties.display()))?;

    let cluster_id_file = dir.join("cluster.id");
    let meta = data.join("meta.properties");
    if meta.exists() {
        let found = read_property(&fs::read_to_string(&meta)?, "cluster.id").unwrap_or_default();
        let expected = fs::read_to_string(&cluster_id_file).unwrap_or_default().trim().to_owned();
        if found != expected {
            bail!(
                "Kafka storage {} belongs to cluster {found:?} but this stack's cluster is {expected:?}: \
                 remove that folder (its topics are lost) or run `cargo xtask down --purge`",
                data.display()
            );
        }
        return Ok(());
    }
    // Kafka cluster ids are 16 random bytes in URL-safe base64 without padding.
    let cluster_id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes());
    fs::create_dir_all(config.logs_dir())?;
    let log = config.logs_dir().join("kafka-format.log");
    run_logged(
        java(config)
            .args(["kafka.tools.StorageTool", "format", "--standalone", "--ignore-formatted", "-t", &cluster_id, "-c"])
            .arg(&properties),
        &log,
    )
    .with_context(|| format!("formatting the Kafka storage failed: see {}", log.display()))?;
    fs::write(&cluster_id_file, &cluster_id)?;
    Ok(())
}

fn read_property(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| line.strip_prefix(key)?.strip_prefix('=').map(|v| v.trim().to_owned()))
}

fn server_properties(config: &StackConfig) -> String {
    let host = config.host();
    let settings: BTreeMap<&str, String> = BTreeMap::from([
        ("process.roles", "broker,controller".into()),
        ("node.id", "1".into()),
        ("controller.quorum.bootstrap.servers", format!("{host}:{}", config.ports.kafka_controller)),
        (
            "listeners",
            format!("PLAINTEXT://{host}:{},CONTROLLER://{host}:{}", config.ports.kafka, config.ports.kafka_controller),
        ),
        (
            "advertised.listeners",
            format!("PLAINTEXT://{host}:{},CONTROLLER://{host}:{}", config.ports.kafka, config.ports.kafka_controller),
        ),
        ("controller.listener.names", "CONTROLLER".into()),
        ("inter.broker.listener.name", "PLAINTEXT".into()),
        ("listener.security.protocol.map", "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT".into()),
        ("log.dirs", data_dir(config).display().to_string()),
        // Topics are created from the spec by `up`; a typo must not create a new one.
        ("auto.create.topics.enable", "false".into()),
        ("num.partitions", "6".into()),
        // A single node: internal topics cannot have more replicas.
        ("offsets.topic.replication.factor", "1".into()),
        ("transaction.state.log.replication.factor", "1".into()),
        ("transaction.state.log.min.isr", "1".into()),
        ("share.coordinator.state.topic.replication.factor", "1".into()),
        ("share.coordinator.state.topic.min.isr", "1".into()),
        // Consumers of a fresh group start at once instead of waiting 3 s for peers.
        ("group.initial.rebalance.delay.ms", "0".into()),
    ]);
    let mut text = String::from("# Written by `cargo xtask up`; edits are overwritten.\n");
    for (key, value) in settings {
        text.push_str(&format!("{key}={value}\n"));
    }
    text
}

/// The broker JVM, with a modest fixed heap.
pub fn command(config: &StackConfig) -> Command {
    let mut command = Command::new("java");
    command
        .arg(format!("-Xms{}", config.kafka_heap))
        .arg(format!("-Xmx{}", config.kafka_heap))
        .args(["-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true"])
        .args(java(config).get_args())
        .arg("kafka.Kafka")
        .arg(dir(config).join("server.properties"));
    command
}

fn admin(config: &StackConfig) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", config.kafka_brokers())
        .set("socket.timeout.ms", "5000")
        .set("log_level", "3")
        .create()?)
}

/// Ready when the broker answers a metadata request.
pub async fn probe(config: &StackConfig) -> anyhow::Result<()> {
    let admin = admin(config)?;
    tokio::task::spawn_blocking(move || admin.inner().fetch_metadata(None, Duration::from_secs(2)).map(|_| ()))
        .await??;
    Ok(())
}

/// How long a dead letter is kept: explicit, not the broker's default, and
/// long enough for an operator to look at it and redrive it (30 days).
pub const DLQ_RETENTION_MS: &str = "2592000000";

/// Creates every topic of the spec and its dead-letter twin with the spec's
/// partition count; refuses an existing topic with another count; gives
/// every dead-letter topic its retention ([`DLQ_RETENTION_MS`]).
pub async fn create_topics(config: &StackConfig) -> anyhow::Result<()> {
    let admin = admin(config)?;
    let wanted: Vec<(&str, i32)> =
        TOPICS.iter().flat_map(|t| [(t.name, t.partitions), (t.dlq, t.partitions)]).collect();
    let new: Vec<NewTopic> = wanted
        .iter()
        .map(|(name, partitions)| {
            let topic = NewTopic::new(name, *partitions, TopicReplication::Fixed(1));
            if TOPICS.iter().any(|t| t.dlq == *name) { topic.set("retention.ms", DLQ_RETENTION_MS) } else { topic }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&new, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => bail!("cannot create Kafka topic {topic}: {code}"),
        }
    }
    let metadata = {
        let admin = self::admin(config)?;
        tokio::task::spawn_blocking(move || admin.inner().fetch_metadata(None, Duration::from_secs(5))).await??
    };
    // Never grown in place: a key's partition is its hash modulo the count, so sagas in flight
    // would move to other partitions. The services refuse such a topic at start too.
    for (name, partitions) in &wanted {
        let have = metadata.topics().iter().find(|t| t.name() == *name).map_or(0, |t| t.partitions().len());
        if have as i32 != *partitions {
            bail!(
                "Kafka topic {name} has {have} partitions but the spec says {partitions}: partitions are not \
                 changed in place (sagas in flight would move to other partitions); stop the services and \
                 recreate the topic, or start a fresh stack (`cargo xtask down --purge`)"
            );
        }
    }
    // Topics created before the retention was set get it too.
    let retention: Vec<AlterConfig> = TOPICS
        .iter()
        .map(|t| AlterConfig::new(ResourceSpecifier::Topic(t.dlq)).set("retention.ms", DLQ_RETENTION_MS))
        .collect();
    for result in admin.alter_configs(&retention, &options).await? {
        if let Err((resource, code)) = result {
            bail!("cannot set the retention of {resource:?}: {code}");
        }
    }
    Ok(())
}

/// Waits until every service's consumer group is `Stable` with a member, so
/// a saga started right after `up` is consumed at once. On a fresh broker the
/// first group join also creates `__consumer_offsets`, which took seconds:
/// the first orders of a benchmark waited 1.7 s for their stock reservation.
pub async fn consumer_groups_stable(config: &StackConfig, within: Duration) -> anyhow::Result<()> {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", config.kafka_brokers())
        .set("log_level", "3")
        .create()
        .context("creating a Kafka client to describe the consumer groups")?;
    let deadline = tokio::time::Instant::now() + within;
    for group in CONSUMER_GROUPS {
        loop {
            let stable = client
                .fetch_group_list(Some(group.group_id), Duration::from_secs(5))
                .is_ok_and(|list| list.groups().iter().any(|g| g.state() == "Stable" && !g.members().is_empty()));
            if stable {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("Kafka consumer group {} did not become stable within {within:?}", group.group_id);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// The names `up` prints.
pub fn topic_names() -> Vec<String> {
    TOPICS.iter().map(|t| format!("{} ({}p, dlq {})", t.name, t.partitions, t.dlq)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::config::Defaults;

    #[test]
    fn properties_listen_on_the_configured_loopback_ports() {
        let config = StackConfig::resolve(Defaults::dev(), |_| None).expect("defaults");
        let text = server_properties(&config);
        assert!(text.contains("listeners=PLAINTEXT://127.0.0.1:17092,CONTROLLER://127.0.0.1:17093\n"), "{text}");
        assert!(text.contains("auto.create.topics.enable=false\n"));
    }

    #[test]
    fn reads_the_cluster_id_of_meta_properties() {
        let meta = "#\n#Tue\nnode.id=1\ndirectory.id=abc\nversion=1\ncluster.id=Zm9vYmFyYmF6cXV4cXV1\n";
        assert_eq!(read_property(meta, "cluster.id").as_deref(), Some("Zm9vYmFyYmF6cXV4cXV1"));
        assert_eq!(read_property(meta, "missing"), None);
    }
}
