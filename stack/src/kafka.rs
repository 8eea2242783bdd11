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
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use saga_generated::topology::{CONSUMER_GROUPS, SCHEMA_TOPIC, TOPICS};

use super::config::StackConfig;
use super::install::run_logged;

/// Where node `index` keeps its configuration: `kafka/` for the first, `kafka-2/`, ... for the others.
fn dir(config: &StackConfig, index: u16) -> PathBuf {
    match index {
        0 => config.state_dir.join("kafka"),
        n => config.state_dir.join(format!("kafka-{}", n + 1)),
    }
}

fn data_dir(config: &StackConfig, index: u16) -> PathBuf {
    dir(config, index).join("data")
}

/// The cluster's id and size, kept beside the first node.
fn cluster_id_file(config: &StackConfig) -> PathBuf {
    dir(config, 0).join("cluster.id")
}

fn cluster_size_file(config: &StackConfig) -> PathBuf {
    dir(config, 0).join("brokers")
}

/// Refuses to start a cluster of another size on storage formatted for this
/// one: a KRaft quorum's voters are fixed when it is formatted.
pub fn check_shape(config: &StackConfig) -> anyhow::Result<()> {
    if !data_dir(config, 0).join("meta.properties").exists() {
        return Ok(());
    }
    // Stacks from before the size was recorded had one node.
    let formatted: u16 =
        fs::read_to_string(cluster_size_file(config)).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(1);
    if formatted != config.shape.brokers {
        bail!(
            "this stack's Kafka cluster was created with {formatted} broker(s), not {}: stop it and start a \
             fresh one (`cargo xtask down --purge`), or keep {formatted} (SAGA_KAFKA_BROKERS / --brokers)",
            config.shape.brokers
        );
    }
    Ok(())
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

/// One of Kafka's command-line tools (its main `class`), on the stack's Kafka classpath.
pub fn tool(config: &StackConfig, class: &str) -> Command {
    let mut command = java(config);
    command.arg(class);
    command
}

/// Writes node `index`'s `server.properties` and formats its storage on first
/// use. A storage folder formatted for another cluster is refused with what
/// to do about it.
pub fn prepare(config: &StackConfig, index: u16) -> anyhow::Result<()> {
    let dir = dir(config, index);
    let data = data_dir(config, index);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let properties = dir.join("server.properties");
    super::kafka_access::ensure_credentials(config)?;
    let admin = super::kafka_access::credentials(config, super::kafka_access::ADMIN)?.password;
    // It holds the super user's password: for the owner's eyes only.
    super::write_private(&properties, &server_properties(config, index, &admin))?;

    let cluster_id_file = cluster_id_file(config);
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
        if !scram_marker(config).exists() {
            bail!(
                "this stack's Kafka storage was formatted before the broker required authentication, so it \
                 knows none of the principals' passwords: start a fresh stack (`cargo xtask down --purge`)"
            );
        }
        return Ok(());
    }
    let cluster_id = match fs::read_to_string(&cluster_id_file) {
        Ok(id) if !id.trim().is_empty() => id.trim().to_owned(),
        // Kafka cluster ids are 16 random bytes in URL-safe base64 without padding.
        _ => base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes()),
    };
    fs::create_dir_all(config.logs_dir())?;
    let log = config.logs_dir().join(format!("kafka-format-{}.log", index + 1));
    let mut format = java(config);
    // `--cluster-id=<id>`, not `-t <id>`: an id may begin with `-` (URL-safe base64), which the
    // tool's argument parser then takes for an option (seen once in CI).
    format
        .args(["kafka.tools.StorageTool", "format", "--ignore-formatted", &format!("--cluster-id={cluster_id}"), "-c"])
        .arg(&properties);
    if config.shape.brokers == 1 {
        // One node: a dynamic quorum of itself.
        format.arg("--standalone");
    }
    // Every principal's SCRAM credential, in the cluster's first metadata.
    format.args(super::kafka_access::format_args(config)?);
    run_logged(&mut format, &log)
        .with_context(|| format!("formatting the Kafka storage failed: see {}", log.display()))?;
    fs::create_dir_all(cluster_id_file.parent().unwrap_or(&dir))?;
    fs::write(&cluster_id_file, &cluster_id)?;
    fs::write(cluster_size_file(config), config.shape.brokers.to_string())?;
    fs::write(scram_marker(config), "formatted with every principal's SCRAM credential\n")?;
    Ok(())
}

/// Beside the first node: its cluster was formatted with the principals' credentials.
fn scram_marker(config: &StackConfig) -> PathBuf {
    dir(config, 0).join("scram")
}

fn read_property(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| line.strip_prefix(key)?.strip_prefix('=').map(|v| v.trim().to_owned()))
}

/// Node `index`'s settings; `admin`: the super user's password.
fn server_properties(config: &StackConfig, index: u16, admin: &str) -> String {
    let host = config.host();
    let me = config.kafka_node(index);
    let shape = config.shape;
    let (replicas, min_isr) = (shape.replication_factor().to_string(), shape.min_insync_replicas().to_string());
    let listeners = format!("SASL_PLAINTEXT://{host}:{},CONTROLLER://{host}:{}", me.port, me.controller_port);
    let mut settings: BTreeMap<&str, String> = BTreeMap::from([
        ("process.roles", "broker,controller".into()),
        ("node.id", (index + 1).to_string()),
        ("listeners", listeners.clone()),
        ("advertised.listeners", listeners),
        ("controller.listener.names", "CONTROLLER".into()),
        ("inter.broker.listener.name", "SASL_PLAINTEXT".into()),
        ("listener.security.protocol.map", "CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT".into()),
        ("log.dirs", data_dir(config, index).display().to_string()),
        // Topics are created from the spec by `up`; a typo must not create a new one.
        ("auto.create.topics.enable", "false".into()),
        ("num.partitions", "6".into()),
        // Internal topics as replicated as the saga's: one node of three may die.
        ("offsets.topic.replication.factor", replicas.clone()),
        ("transaction.state.log.replication.factor", replicas.clone()),
        ("transaction.state.log.min.isr", min_isr.clone()),
        ("share.coordinator.state.topic.replication.factor", replicas.clone()),
        ("share.coordinator.state.topic.min.isr", min_isr.clone()),
        ("default.replication.factor", replicas),
        ("min.insync.replicas", min_isr),
        // Consumers of a fresh group start at once instead of waiting 3 s for peers.
        ("group.initial.rebalance.delay.ms", "0".into()),
    ]);
    if shape.brokers == 1 {
        settings.insert("controller.quorum.bootstrap.servers", format!("{host}:{}", me.controller_port));
    } else {
        // A static quorum of every node: formatted once with these voters.
        let voters: Vec<String> =
            config.kafka_nodes().iter().map(|n| format!("{}@{host}:{}", n.index + 1, n.controller_port)).collect();
        settings.insert("controller.quorum.voters", voters.join(","));
        // Leadership moves back to the preferred replica soon after a node returns (the
        // default checks every 300 s, so a move came long after a fault seemed over).
        settings.insert("leader.imbalance.check.interval.seconds", "10".into());
        // A node that stopped heartbeating is fenced, and its partitions led elsewhere, after
        // 4 s instead of 9: until then the saga's partitions it led take no writes.
        settings.insert("broker.session.timeout.ms", "4000".into());
        settings.insert("broker.heartbeat.interval.ms", "1000".into());
    }
    settings.extend(super::kafka_access::broker_settings(admin));
    // An operator's (or a benchmark's) own settings win.
    settings.extend(config.kafka_settings.iter().map(|(k, v)| (k.as_str(), v.clone())));
    let mut text = String::from("# Written by `cargo xtask up`; edits are overwritten.\n");
    for (key, value) in settings {
        text.push_str(&format!("{key}={value}\n"));
    }
    text
}

/// Node `index`'s JVM, with a modest fixed heap.
pub fn command(config: &StackConfig, index: u16) -> Command {
    let mut command = Command::new("java");
    command
        .arg(format!("-Xms{}", config.kafka_heap))
        .arg(format!("-Xmx{}", config.kafka_heap))
        .args(["-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true"])
        // Frame pointers in compiled code, so `perf` can walk Kafka's stacks (`bench --profile`).
        .arg("-XX:+PreserveFramePointer")
        // Every collection's pause, in the stack's logs: a pause stalls every saga's broker hop.
        .arg(format!(
            "-Xlog:gc:file={}:uptime:filecount=2,filesize=10m",
            config.logs_dir().join(format!("kafka-gc-{}.log", index + 1)).display()
        ))
        .args(java(config).get_args())
        .arg("kafka.Kafka")
        .arg(dir(config, index).join("server.properties"));
    command
}

fn admin(config: &StackConfig) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    Ok(saga_runtime::kafka::client(&config.kafka_brokers())
        .set("socket.timeout.ms", "5000")
        .set("log_level", "3")
        .create()?)
}

/// Ready when node `index` answers a metadata request itself.
pub async fn probe(config: &StackConfig, index: u16) -> anyhow::Result<()> {
    let me = config.kafka_node(index);
    let admin: AdminClient<DefaultClientContext> =
        saga_runtime::kafka::client(&format!("{}:{}", config.host(), me.port))
            .set("socket.timeout.ms", "5000")
            .set("log_level", "3")
            .create()?;
    tokio::task::spawn_blocking(move || admin.inner().fetch_metadata(None, Duration::from_secs(2)).map(|_| ()))
        .await??;
    Ok(())
}

/// How long a dead letter is kept (30 days): the same as in a deployment.
pub use saga_codegen::emit::deploy::DLQ_RETENTION_MS;

/// The setting that sets a topic apart, beside its partitions and replicas:
/// a dead-letter topic's retention ([`DLQ_RETENTION_MS`]), the schema
/// topic's compaction (one record per fingerprint, kept for ever).
fn own_setting(name: &str) -> Option<(&'static str, &'static str)> {
    if TOPICS.iter().any(|t| t.dlq == name) {
        Some(("retention.ms", DLQ_RETENTION_MS))
    } else if name == SCHEMA_TOPIC {
        Some(("cleanup.policy", "compact"))
    } else {
        None
    }
}

/// Creates every topic of the spec and its dead-letter twin with the spec's
/// partition count, and the saga's schema topic with one partition; refuses
/// an existing topic with another count; gives every topic its own setting
/// ([`own_setting`]).
pub async fn create_topics(config: &StackConfig) -> anyhow::Result<()> {
    let admin = admin(config)?;
    let wanted: Vec<(&str, i32)> = TOPICS
        .iter()
        .flat_map(|t| [(t.name, t.partitions), (t.dlq, t.partitions)])
        .chain([(SCHEMA_TOPIC, 1)])
        .collect();
    let min_isr = config.shape.min_insync_replicas().to_string();
    let new: Vec<NewTopic> = wanted
        .iter()
        .map(|(name, partitions)| {
            let topic = NewTopic::new(name, *partitions, TopicReplication::Fixed(config.shape.replication_factor()))
                .set("min.insync.replicas", &min_isr);
            match own_setting(name) {
                Some((key, value)) => topic.set(key, value),
                None => topic,
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&new, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => bail!("cannot create Kafka topic {topic}: {code}"),
        }
    }
    // Never grown in place: a key's partition is its hash modulo the count, so sagas in flight
    // would move to other partitions. The services refuse such a topic at start too. A topic
    // just created may take a moment to show in every node's metadata: it is waited for.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let metadata = {
            let admin = self::admin(config)?;
            tokio::task::spawn_blocking(move || admin.inner().fetch_metadata(None, Duration::from_secs(5))).await??
        };
        let counts: Vec<(&str, i32, usize)> = wanted
            .iter()
            .map(|(name, partitions)| {
                let have = metadata.topics().iter().find(|t| t.name() == *name).map_or(0, |t| t.partitions().len());
                (*name, *partitions, have)
            })
            .collect();
        if let Some((name, partitions, have)) = counts.iter().find(|(_, p, have)| *have != 0 && *have as i32 != *p) {
            bail!(
                "Kafka topic {name} has {have} partitions but the spec says {partitions}: partitions are not \
                 changed in place (sagas in flight would move to other partitions); stop the services and \
                 recreate the topic, or start a fresh stack (`cargo xtask down --purge`)"
            );
        }
        match counts.iter().find(|(_, _, have)| *have == 0) {
            None => break,
            Some((name, _, _)) if tokio::time::Instant::now() >= deadline => {
                bail!("Kafka topic {name} was created but does not show in the cluster's metadata")
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    // Topics created before these settings get them too. AlterConfigs replaces a topic's whole
    // set of dynamic settings, so each gets all of its own.
    let settings: Vec<AlterConfig> = wanted
        .iter()
        .map(|(name, _)| {
            let alter = AlterConfig::new(ResourceSpecifier::Topic(name)).set("min.insync.replicas", &min_isr);
            match own_setting(name) {
                Some((key, value)) => alter.set(key, value),
                None => alter,
            }
        })
        .collect();
    for result in admin.alter_configs(&settings, &options).await? {
        if let Err((resource, code)) = result {
            bail!("cannot set the configuration of {resource:?}: {code}");
        }
    }
    Ok(())
}

/// Waits until the cluster has its shape again after a node came back: every
/// partition of every topic (the internal ones too, which hold the consumer
/// groups' coordinators) has all its replicas in sync and is led by its
/// preferred replica. Until then leadership is still to move back to the
/// returned node (`leader.imbalance.check.interval.seconds`), and each move
/// pauses the partitions it moves: a fault is not over before that.
pub async fn leadership_restored(config: &StackConfig, within: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let metadata = {
            let admin = admin(config)?;
            tokio::task::spawn_blocking(move || admin.inner().fetch_metadata(None, Duration::from_secs(5))).await?
        };
        let unsettled: Vec<String> = match &metadata {
            Ok(metadata) => metadata
                .topics()
                .iter()
                .flat_map(|t| t.partitions().iter().map(move |p| (t.name(), p)))
                .filter(|(_, p)| p.replicas().first() != Some(&p.leader()) || p.isr().len() != p.replicas().len())
                .map(|(topic, p)| format!("{topic}/{}", p.id()))
                .collect(),
            Err(error) => vec![format!("no metadata ({error})")],
        };
        if unsettled.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "{} Kafka partition(s) not back with their preferred leader and every replica in sync within \
                 {within:?}, e.g. {}",
                unsettled.len(),
                unsettled[..unsettled.len().min(5)].join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until every service's consumer group is `Stable` with a member, so
/// a saga started right after `up` is consumed at once. On a fresh broker the
/// first group join also creates `__consumer_offsets`, which took seconds:
/// the first orders of a benchmark waited 1.7 s for their stock reservation.
pub async fn consumer_groups_stable(config: &StackConfig, within: Duration) -> anyhow::Result<()> {
    consumer_groups_of_stable(config, within, &|_| true).await
}

/// [`consumer_groups_stable`] for the groups of the services `running` says are
/// running (a rollout adds a service only at its turn).
pub async fn consumer_groups_of_stable(
    config: &StackConfig,
    within: Duration,
    running: &dyn Fn(&str) -> bool,
) -> anyhow::Result<()> {
    let client: BaseConsumer = saga_runtime::kafka::client(&config.kafka_brokers())
        .set("log_level", "3")
        .create()
        .context("creating a Kafka client to describe the consumer groups")?;
    let deadline = tokio::time::Instant::now() + within;
    for group in CONSUMER_GROUPS.iter().filter(|g| running(g.service)) {
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
    TOPICS
        .iter()
        .map(|t| format!("{} ({}p, dlq {})", t.name, t.partitions, t.dlq))
        .chain([format!("{SCHEMA_TOPIC} (1p, compacted: the writer schemas)")])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Defaults;

    #[test]
    fn properties_listen_on_the_configured_loopback_ports() {
        let config = StackConfig::resolve(Defaults::dev(), |_| None).expect("defaults");
        let text = server_properties(&config, 0, "pw");
        assert!(text.contains("listeners=SASL_PLAINTEXT://127.0.0.1:17092,CONTROLLER://127.0.0.1:17093\n"), "{text}");
        assert!(text.contains("allow.everyone.if.no.acl.found=false\n") && text.contains("super.users=User:admin\n"));
        assert!(text.contains("auto.create.topics.enable=false\n"));
        assert!(text.contains("controller.quorum.bootstrap.servers=127.0.0.1:17093\n"), "{text}");
    }

    #[test]
    fn an_operators_settings_win_over_the_stacks() {
        let settings = "num.io.threads=2,auto.create.topics.enable=true";
        let config =
            StackConfig::resolve(Defaults::dev(), |k| (k == "SAGA_KAFKA_SETTINGS").then(|| settings.to_owned()))
                .expect("valid");
        let text = server_properties(&config, 0, "pw");
        assert!(text.contains("num.io.threads=2\n"), "{text}");
        assert_eq!(text.matches("auto.create.topics.enable=").count(), 1, "{text}");
        assert!(text.contains("auto.create.topics.enable=true\n"), "{text}");
    }

    #[test]
    fn three_nodes_form_a_static_quorum_and_replicate_everything_three_times() {
        let config = StackConfig::resolve(Defaults::dev(), |k| (k == "SAGA_KAFKA_BROKERS").then(|| "3".to_owned()))
            .expect("valid");
        let text = server_properties(&config, 2, "pw");
        assert!(text.contains("node.id=3\n"), "{text}");
        assert!(text.contains("listeners=SASL_PLAINTEXT://127.0.0.1:17096,CONTROLLER://127.0.0.1:17097\n"), "{text}");
        let voters = "controller.quorum.voters=1@127.0.0.1:17093,2@127.0.0.1:17095,3@127.0.0.1:17097\n";
        assert!(text.contains(voters), "{text}");
        assert!(text.contains("offsets.topic.replication.factor=3\n") && text.contains("min.insync.replicas=2\n"));
        assert!(text.contains(&format!("log.dirs={}\n", config.state_dir.join("kafka-3/data").display())));
    }

    /// Storage formatted before the broker required sign-ins knows no
    /// principal's password: refused with what to do, before any broker starts.
    #[test]
    fn storage_formatted_without_the_principals_credentials_is_refused() {
        let state = std::env::temp_dir().join(format!("saga-kafka-{}", uuid::Uuid::new_v4()));
        let config =
            StackConfig::resolve(Defaults::dev(), |k| (k == "SAGA_STATE_DIR").then(|| state.display().to_string()))
                .expect("valid");
        fs::create_dir_all(data_dir(&config, 0)).expect("data folder");
        fs::write(cluster_id_file(&config), "Zm9vYmFyYmF6cXV4cXV1").expect("cluster id");
        fs::write(data_dir(&config, 0).join("meta.properties"), "cluster.id=Zm9vYmFyYmF6cXV4cXV1\n").expect("meta");
        let refused = prepare(&config, 0).expect_err("no credentials in that storage");
        assert!(refused.to_string().contains("cargo xtask down --purge"), "{refused}");
        fs::write(scram_marker(&config), "formatted with them\n").expect("marker");
        prepare(&config, 0).expect("storage formatted with the credentials is used as it is");
        fs::remove_dir_all(state).expect("cleaned up");
    }

    #[test]
    fn reads_the_cluster_id_of_meta_properties() {
        let meta = "#\n#Tue\nnode.id=1\ndirectory.id=abc\nversion=1\ncluster.id=Zm9vYmFyYmF6cXV4cXV1\n";
        assert_eq!(read_property(meta, "cluster.id").as_deref(), Some("Zm9vYmFyYmF6cXV4cXV1"));
        assert_eq!(read_property(meta, "missing"), None);
    }
}
