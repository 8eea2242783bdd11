//! Emits what a Kubernetes deployment takes from the spec: a Strimzi
//! `KafkaTopic` per topic and per dead-letter twin, with the spec's partition
//! count, replicated three times with `min.insync.replicas` 2 (what the local
//! replicated stack runs too), dead letters kept [`DLQ_RETENTION_MS`]; and a
//! Strimzi `KafkaUser` per service and for the console, signing in with
//! SCRAM-SHA-512, with the ACLs the spec grants it ([`Saga::kafka_grants`]); and a
//! `NetworkPolicy` per component, denying what the topology does not have
//! ([`network_policies`]); and per service its workload ([`services`]: Deployment,
//! headless Service, PodDisruptionBudget), its CloudNativePG database ([`databases`]) and
//! the console's read-only URL of it ([`console_database_urls`]), so a new service in the
//! spec needs no hand-written manifest (its sizing is a patch in `kustomization.yaml`).

use std::fmt::Write as _;

use crate::ir::Saga;

/// How long a dead letter is kept: explicit, not the broker's default, and
/// long enough for an operator to look at it and redrive it (30 days).
pub const DLQ_RETENTION_MS: &str = "2592000000";

/// Replicas of every topic in a deployment, and how many must have a write
/// before it is acknowledged (producers use `acks=all`): one broker may die
/// without losing an acknowledged event.
pub const REPLICAS: u32 = 3;
pub const MIN_INSYNC_REPLICAS: u32 = 2;

/// The Strimzi cluster the topics belong to (`deploy/kubernetes/kafka.yaml`).
pub const KAFKA_CLUSTER: &str = "saga";

/// `KafkaTopic` resources for every topic of `saga`, as one YAML stream.
pub fn kafka_topics(saga: &Saga, header: &str) -> String {
    let mut out = String::from(header);
    for topic in &saga.topics {
        let dlq = format!("{}{}", topic.name, saga.dlq_suffix);
        for (name, retention) in [(&topic.name, None), (&dlq, Some(DLQ_RETENTION_MS))] {
            // Resource names are DNS labels: the topic's own name goes in `topicName`.
            let resource = dns_label(name);
            let _ = write!(
                out,
                "---\napiVersion: kafka.strimzi.io/v1beta2\nkind: KafkaTopic\nmetadata:\n  name: {resource}\n  \
                 labels:\n    strimzi.io/cluster: {KAFKA_CLUSTER}\nspec:\n  topicName: {name}\n  partitions: {}\n  \
                 replicas: {REPLICAS}\n  config:\n    min.insync.replicas: {MIN_INSYNC_REPLICAS}\n",
                topic.partitions
            );
            if let Some(ms) = retention {
                let _ = writeln!(out, "    retention.ms: {ms}");
            }
        }
    }
    // The writer schemas by fingerprint: compacted, so the newest record of each key is
    // kept for ever, and one partition, so a reader catches up with one high watermark.
    let schemas = saga.schema_topic();
    let resource = dns_label(&schemas);
    let _ = write!(
        out,
        "---\napiVersion: kafka.strimzi.io/v1beta2\nkind: KafkaTopic\nmetadata:\n  name: {resource}\n  \
         labels:\n    strimzi.io/cluster: {KAFKA_CLUSTER}\nspec:\n  topicName: {schemas}\n  partitions: 1\n  \
         replicas: {REPLICAS}\n  config:\n    min.insync.replicas: {MIN_INSYNC_REPLICAS}\n    cleanup.policy: compact\n"
    );
    out
}

/// `KafkaUser` resources for every principal of `saga`, as one YAML stream.
/// The User Operator keeps each one's password in a Secret of its name (key
/// `password`), which the deployments read.
pub fn kafka_users(saga: &Saga, header: &str) -> String {
    let mut out = String::from(header);
    let grants = saga.kafka_grants();
    let mut principals: Vec<&str> = grants.iter().map(|g| g.principal.as_str()).collect();
    principals.dedup();
    for principal in principals {
        let _ = write!(
            out,
            "---\napiVersion: kafka.strimzi.io/v1beta2\nkind: KafkaUser\nmetadata:\n  name: {principal}\n  labels:\n    \
             strimzi.io/cluster: {KAFKA_CLUSTER}\nspec:\n  authentication:\n    type: scram-sha-512\n  authorization:\n    \
             type: simple\n    acls:\n"
        );
        for grant in grants.iter().filter(|g| g.principal == principal) {
            let pattern = if grant.prefixed { "prefix" } else { "literal" };
            let _ = write!(
                out,
                "      - resource:\n          type: {}\n          name: {}\n          patternType: {pattern}\n        \
                 operations: [{}]\n        host: \"*\"\n",
                grant.resource.name(),
                grant.name,
                grant.operations.join(", ")
            );
        }
    }
    out
}

/// The names and ports of the hand-written manifests (`deploy/kubernetes/*.yaml`) the
/// network policies refer to; `tests/tests/standalone/deploy_manifests.rs` checks each against them.
pub mod topology {
    /// The label every Deployment's pods carry with the component's name.
    pub const NAME_LABEL: &str = "app.kubernetes.io/name";
    /// The REST gateway: the one public door, and the only client of the services' APIs and
    /// of the console.
    pub const GATEWAY: &str = "gateway";
    pub const GATEWAY_PORT: u16 = 8080;
    /// A service's gRPC port (mutual TLS).
    pub const GRPC_PORT: u16 = 50051;
    /// The console's HTTPS port (mutual TLS, the gateway's certificate only).
    pub const CONSOLE_PORT: u16 = 8081;
    /// Every process's Prometheus metrics.
    pub const METRICS_PORT: u16 = 9100;
    /// Where the deployment's Prometheus runs: the namespace allowed to scrape.
    pub const MONITORING_NAMESPACE: &str = "monitoring";
    /// CloudNativePG: a cluster `<owner>-db` per service and the console's, its pods
    /// labelled with the cluster's name; PostgreSQL's port, the instance manager's (the
    /// operator asks each instance's status there) and its metrics exporter's.
    pub const CNPG_CLUSTER_LABEL: &str = "cnpg.io/cluster";
    pub const POSTGRES_PORT: u16 = 5432;
    pub const CNPG_STATUS_PORT: u16 = 8000;
    pub const CNPG_METRICS_PORT: u16 = 9187;
    /// Where the CloudNativePG operator runs (its default).
    pub const CNPG_NAMESPACE: &str = "cnpg-system";
    /// Strimzi: the brokers of the `saga` cluster, and the client listener every principal
    /// signs in on (SCRAM-SHA-512).
    pub const KAFKA_POD_LABELS: [(&str, &str); 2] = [("strimzi.io/cluster", "saga"), ("strimzi.io/name", "saga-kafka")];
    pub const KAFKA_PORT: u16 = 9092;
    /// The deployment's own Redis (`REDIS_URL` in `saga-secrets`), which only the gateway uses.
    pub const REDIS: &str = "redis";
    pub const REDIS_PORT: u16 = 6379;

    /// The CloudNativePG cluster of `owner`'s database (a service's, or the console's).
    pub fn database(owner: &str) -> String {
        format!("{owner}-db")
    }
}

/// Who may be on the other side of a rule.
enum Peer {
    /// Pods of the namespace with these labels.
    Pods(Vec<(String, String)>),
    /// Pods of another namespace (by its name), with these labels or any.
    Namespace { name: &'static str, pods: Vec<(String, String)> },
}

impl Peer {
    fn named(name: &str) -> Peer {
        Peer::Pods(vec![(topology::NAME_LABEL.to_owned(), name.to_owned())])
    }

    fn database(owner: &str) -> Peer {
        Peer::Pods(vec![(topology::CNPG_CLUSTER_LABEL.to_owned(), topology::database(owner))])
    }

    fn kafka() -> Peer {
        Peer::Pods(topology::KAFKA_POD_LABELS.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
    }

    fn dns() -> Peer {
        Peer::Namespace { name: "kube-system", pods: vec![("k8s-app".to_owned(), "kube-dns".to_owned())] }
    }
}

/// One rule: from (or to) any of `peers`, or anywhere when there are none, on `ports`.
struct Rule {
    why: String,
    peers: Vec<Peer>,
    ports: Vec<(&'static str, u16)>,
}

impl Rule {
    fn tcp(why: impl Into<String>, peers: Vec<Peer>, ports: &[u16]) -> Rule {
        Rule { why: why.into(), peers, ports: ports.iter().map(|p| ("TCP", *p)).collect() }
    }

    fn dns() -> Rule {
        Rule { why: "name lookups".into(), peers: vec![Peer::dns()], ports: vec![("UDP", 53), ("TCP", 53)] }
    }

    fn metrics(port: u16) -> Rule {
        let peer = Peer::Namespace { name: topology::MONITORING_NAMESPACE, pods: Vec::new() };
        Rule::tcp("Prometheus scrapes the metrics", vec![peer], &[port])
    }
}

/// A `NetworkPolicy`: the pods it selects may receive only what `ingress` lists and, when
/// `egress` is given, send only what it lists.
struct Policy {
    name: String,
    doc: String,
    pods: Vec<(String, String)>,
    ingress: Vec<Rule>,
    egress: Option<Vec<Rule>>,
}

fn labels(out: &mut String, indent: usize, labels: &[(String, String)]) {
    if labels.is_empty() {
        out.push_str(" {}\n");
        return;
    }
    let _ = writeln!(out, "\n{:indent$}matchLabels:", "");
    for (k, v) in labels {
        let _ = writeln!(out, "{:indent$}  {k}: {v}", "");
    }
}

fn rules(out: &mut String, kind: &str, peers_key: &str, rules: &[Rule]) {
    let _ = writeln!(out, "  {kind}:");
    for rule in rules {
        let _ = writeln!(out, "    # {}", rule.why);
        let mut first = true;
        let mut item = |out: &mut String| {
            out.push_str(if first { "    - " } else { "      " });
            first = false;
        };
        if !rule.peers.is_empty() {
            item(out);
            let _ = writeln!(out, "{peers_key}:");
            for peer in &rule.peers {
                match peer {
                    Peer::Pods(pods) => {
                        out.push_str("        - podSelector:");
                        labels(out, 12, pods);
                    }
                    Peer::Namespace { name, pods } => {
                        out.push_str("        - namespaceSelector:");
                        labels(out, 12, &[("kubernetes.io/metadata.name".to_owned(), (*name).to_owned())]);
                        if !pods.is_empty() {
                            out.push_str("          podSelector:");
                            labels(out, 12, pods);
                        }
                    }
                }
            }
        }
        item(out);
        out.push_str("ports:\n");
        for (protocol, port) in &rule.ports {
            let _ = writeln!(out, "        - protocol: {protocol}\n          port: {port}");
        }
    }
}

impl Policy {
    fn render(&self, out: &mut String) {
        let _ = write!(
            out,
            "---\n# {}\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {}\n  labels:\n    \
             app.kubernetes.io/part-of: saga\nspec:\n  podSelector:",
            self.doc, self.name
        );
        labels(out, 4, &self.pods);
        let types = if self.egress.is_some() { "[Ingress, Egress]" } else { "[Ingress]" };
        let _ = writeln!(out, "  policyTypes: {types}");
        if self.ingress.is_empty() {
            out.push_str("  ingress: []\n");
        } else {
            rules(out, "ingress", "from", &self.ingress);
        }
        if let Some(egress) = &self.egress {
            rules(out, "egress", "to", egress);
        }
    }
}

/// `NetworkPolicy` resources for the platform, as one YAML stream: nothing in the namespace
/// takes a connection no policy allows, and each of the saga's Deployments (the gateway,
/// each service of `saga`, the console) sends and takes only what the topology has: the
/// gateway calls every service's gRPC and the console, and Redis; each service reaches its
/// own database; the console reads every service's database and keeps its own; every
/// Kafka principal of the spec's grants reaches the brokers; all of them resolve names.
/// Each database takes its owner and the console (and its own instances and operator);
/// Redis takes the gateway. Prometheus (in [`topology::MONITORING_NAMESPACE`]) may scrape
/// every metrics port. The brokers' side is Strimzi's: its listener's
/// `networkPolicyPeers` (`kafka.yaml`) names the same principals.
pub fn network_policies(saga: &Saga, header: &str) -> String {
    use topology::*;
    let services: Vec<&str> = saga.services.iter().map(|s| s.name.as_str()).collect();
    let grants = saga.kafka_grants();
    let on_kafka = |component: &str| grants.iter().any(|g| g.principal == component);
    let kafka = |component: &str| {
        on_kafka(component).then(|| Rule::tcp("Kafka, as its own principal", vec![Peer::kafka()], &[KAFKA_PORT]))
    };
    let console = crate::ir::CONSOLE;
    let mut policies = vec![Policy {
        name: "default-deny-ingress".into(),
        doc: "Every pod of the namespace takes only the connections a policy below allows.".into(),
        pods: Vec::new(),
        ingress: Vec::new(),
        egress: None,
    }];

    let mut gateway_egress = vec![Rule::dns()];
    for service in &services {
        gateway_egress.push(Rule::tcp(format!("{service}'s gRPC API"), vec![Peer::named(service)], &[GRPC_PORT]));
    }
    gateway_egress.push(Rule::tcp("the operator console", vec![Peer::named(console)], &[CONSOLE_PORT]));
    gateway_egress.push(Rule::tcp("sessions and rate limits in Redis", vec![Peer::named(REDIS)], &[REDIS_PORT]));
    gateway_egress.extend(kafka(GATEWAY));
    policies.push(Policy {
        name: GATEWAY.into(),
        doc: "The gateway: the public door; calls the services, the console and Redis.".into(),
        pods: vec![(NAME_LABEL.into(), GATEWAY.into())],
        ingress: vec![Rule::tcp("clients, from anywhere", Vec::new(), &[GATEWAY_PORT]), Rule::metrics(METRICS_PORT)],
        egress: Some(gateway_egress),
    });

    for service in &services {
        let mut egress =
            vec![Rule::dns(), Rule::tcp("its own database", vec![Peer::database(service)], &[POSTGRES_PORT])];
        egress.extend(kafka(service));
        policies.push(Policy {
            name: (*service).into(),
            doc: format!("The {service} service: called by the gateway only; reaches its database and Kafka."),
            pods: vec![(NAME_LABEL.into(), (*service).into())],
            ingress: vec![
                Rule::tcp("the gateway's gRPC calls", vec![Peer::named(GATEWAY)], &[GRPC_PORT]),
                Rule::metrics(METRICS_PORT),
            ],
            egress: Some(egress),
        });
    }

    let mut console_egress = vec![Rule::dns()];
    let mut read = vec![];
    for service in &services {
        read.push(Peer::database(service));
    }
    console_egress.push(Rule::tcp("every service's database, read-only", read, &[POSTGRES_PORT]));
    console_egress.push(Rule::tcp(
        "its own database: the redrive audit",
        vec![Peer::database(console)],
        &[POSTGRES_PORT],
    ));
    console_egress.extend(kafka(console));
    policies.push(Policy {
        name: console.into(),
        doc: "The operator console: reached by the gateway only; reads the databases and Kafka.".into(),
        pods: vec![(NAME_LABEL.into(), console.into())],
        ingress: vec![
            Rule::tcp("the gateway (mutual TLS)", vec![Peer::named(GATEWAY)], &[CONSOLE_PORT]),
            Rule::metrics(METRICS_PORT),
        ],
        egress: Some(console_egress),
    });

    let owners = services.iter().map(|s| (*s, vec![Peer::named(s), Peer::named(console)]));
    for (owner, clients) in owners.chain([(console, vec![Peer::named(console)])]) {
        let cluster = database(owner);
        let operator = Peer::Namespace { name: CNPG_NAMESPACE, pods: Vec::new() };
        policies.push(Policy {
            name: cluster.clone(),
            doc: format!("{cluster}: {owner}'s database, taking only its clients and its own cluster."),
            pods: vec![(CNPG_CLUSTER_LABEL.into(), cluster.clone())],
            ingress: vec![
                Rule::tcp(
                    if owner == console { "the console" } else { "its service and the console (read-only)" },
                    clients,
                    &[POSTGRES_PORT],
                ),
                Rule::tcp("replication between its instances", vec![Peer::database(owner)], &[POSTGRES_PORT]),
                Rule::tcp(
                    "the CloudNativePG operator asks each instance's status",
                    vec![operator],
                    &[CNPG_STATUS_PORT],
                ),
                Rule::metrics(CNPG_METRICS_PORT),
            ],
            egress: None,
        });
    }

    policies.push(Policy {
        name: REDIS.into(),
        doc: "The deployment's Redis, should it run here: the gateway only.".into(),
        pods: vec![(NAME_LABEL.into(), REDIS.into())],
        ingress: vec![Rule::tcp("the gateway", vec![Peer::named(GATEWAY)], &[REDIS_PORT])],
        egress: None,
    });

    let mut out = String::from(header);
    for policy in &policies {
        policy.render(&mut out);
    }
    out
}

/// A DNS label for a spec name (`box_office` -> `box-office`).
fn dns_label(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect()
}

/// Per service: a Deployment (2 replicas, rolling updates with no pod unavailable, the
/// probes docs/deploy.md describes), a headless Service `<service>-instances` for the
/// gateway's balancing, and a PodDisruptionBudget. Requests are the smallest measured
/// (`kustomization.yaml` patches the services that need more).
pub fn services(saga: &Saga, header: &str) -> String {
    let mut out = String::from(header);
    for service in &saga.services {
        let name = dns_label(&service.name);
        let principal = &service.name;
        let _ = write!(
            out,
            r#"---
# The {principal} service.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels:
    app.kubernetes.io/name: {name}
    app.kubernetes.io/part-of: saga
spec:
  replicas: 2
  selector:
    matchLabels:
      app.kubernetes.io/name: {name}
  strategy:
    rollingUpdate:
      maxUnavailable: 0
      maxSurge: 1
  template:
    metadata:
      labels:
        app.kubernetes.io/name: {name}
        app.kubernetes.io/part-of: saga
        # A Kafka principal: the brokers' listener lets it connect (kafka.yaml).
        platform.saga/kafka-client: "true"
      annotations:
        prometheus.io/scrape: "true"
        prometheus.io/port: "9100"
    spec:
      # SIGTERM: the consumer commits what it handled, the relay publishes what is left.
      terminationGracePeriodSeconds: 30
      containers:
        - name: {name}
          image: saga/{name}-service:latest
          ports:
            - name: grpc
              containerPort: 50051
            - name: metrics
              containerPort: 9100
            - name: health
              containerPort: 50052
          envFrom:
            - configMapRef:
                name: saga-config
          env:
            - name: DATABASE_URL
              valueFrom:
                secretKeyRef:
                  name: {name}-db-app
                  key: uri
            # Its Kafka principal; the password is the User Operator's
            # (kafka-users.yaml).
            - name: KAFKA_SASL_USERNAME
              value: {principal}
            - name: KAFKA_SASL_PASSWORD
              valueFrom:
                secretKeyRef:
                  name: {principal}
                  key: password
            # Mutual TLS only: its certificate (issued for "{principal}"), and the
            # authority the gateway's must chain to (docs/security.md).
            - name: GRPC_TLS_CERT
              value: /etc/saga/tls/tls.crt
            - name: GRPC_TLS_KEY
              value: /etc/saga/tls/tls.key
            - name: GRPC_TLS_CLIENT_CA
              value: /etc/saga/tls/ca.crt
            # The health service alone, in plaintext, for the kubelet's gRPC
            # probe, which cannot present a client certificate.
            - name: HEALTH_LISTEN
              value: 0.0.0.0:50052
          volumeMounts:
            - name: grpc-tls
              mountPath: /etc/saga/tls
              readOnly: true
          # Started once its health is served: after the migrations and the
          # check of its Kafka topics, which may take a while (up to 10 min here).
          startupProbe:
            grpc:
              port: 50052
              service: saga.live
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 60
          # Ready while its own API can serve: the gRPC health as a whole,
          # SERVING while its database answers. A broker outage or a stuck
          # relay, consumer or sweeper is `saga.pipeline` (and the metrics),
          # not readiness: the API still serves, and with every pod unready
          # it would be a full outage (docs/runtime.md, "Health").
          readinessProbe:
            grpc:
              port: 50052
            periodSeconds: 5
            timeoutSeconds: 3
            failureThreshold: 2
          # Alive unless a restart would help: `saga.live` fails only for a
          # loop that is wedged (one attempt in flight far longer than its
          # timeouts allow, while the database answers); and a process whose
          # runtime is stuck does not answer at all. Never for an outage:
          # restarting would not bring the database or the broker back.
          livenessProbe:
            grpc:
              port: 50052
              service: saga.live
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 6
          resources:
            requests:
              cpu: 100m
              memory: 64Mi
            limits:
              memory: 256Mi
      volumes:
        # A kubernetes.io/tls Secret with ca.crt (cert-manager writes one).
        - name: grpc-tls
          secret:
            secretName: saga-grpc-tls-{name}
---
# Every ready instance's address, for the gateway's balancing (it resolves
# this name again every 5 s).
apiVersion: v1
kind: Service
metadata:
  name: {name}-instances
  labels:
    app.kubernetes.io/name: {name}
spec:
  clusterIP: None
  selector:
    app.kubernetes.io/name: {name}
  ports:
    - name: grpc
      port: 50051
      targetPort: grpc
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {name}
spec:
  minAvailable: 1
  selector:
    matchLabels:
      app.kubernetes.io/name: {name}
"#
        );
    }
    out
}

/// A CloudNativePG `Cluster` per service (3 instances): each service owns its database,
/// `<service>_service`; the operator writes a `<cluster>-app` Secret whose `uri` is the
/// service's `DATABASE_URL`.
pub fn databases(saga: &Saga, header: &str) -> String {
    let mut out = String::from(header);
    for service in &saga.services {
        let (name, database) = (dns_label(&service.name), format!("{}_service", service.name));
        let _ = write!(
            out,
            "---\napiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata:\n  name: {name}-db\nspec:\n  \
             instances: 3\n  storage:\n    size: 10Gi\n  bootstrap:\n    initdb:\n      database: {database}\n      \
             owner: {database}\n"
        );
    }
    out
}

/// The console's read-only URL of every service's database, `<SERVICE>_DATABASE_URL`
/// (placeholders: the deployment sets the password of its `console` role).
pub fn console_database_urls(saga: &Saga, header: &str) -> String {
    let mut out = String::from(header);
    out.push_str(
        "---\n# Read-only URLs of the services' databases for the console (placeholders).\napiVersion: v1\nkind: Secret\n\
         metadata:\n  name: console-database-urls\ntype: Opaque\nstringData:\n",
    );
    for service in &saga.services {
        let (name, database) = (dns_label(&service.name), format!("{}_service", service.name));
        let _ = writeln!(
            out,
            "  {}_DATABASE_URL: postgres://console:change-me@{name}-db-ro:5432/{database}",
            service.name.to_uppercase()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service added to the spec gets its workload, database and console URL with no
    /// hand-written manifest (the saga with a shipping step).
    #[test]
    fn a_new_service_gets_its_manifests_from_the_spec() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let file = "spec/saga.yaml";
        let text = std::fs::read_to_string(root.join(file)).expect("the spec");
        let saga = crate::check(file, &text).expect("valid");
        let services = services(&saga, "");
        for kind in ["Deployment", "Service", "PodDisruptionBudget"] {
            assert_eq!(services.matches(&format!("kind: {kind}\n")).count(), 4, "{kind}");
        }
        assert!(services.contains("  name: shipping\n") && services.contains("image: saga/shipping-service:latest"));
        assert!(services.contains("secretName: saga-grpc-tls-shipping"));
        let databases = databases(&saga, "");
        assert!(databases.contains("  name: shipping-db\n") && databases.contains("database: shipping_service"));
        assert!(
            console_database_urls(&saga, "")
                .contains("SHIPPING_DATABASE_URL: postgres://console:change-me@shipping-db-ro:5432/shipping_service")
        );
    }

    #[test]
    fn names_become_dns_labels() {
        assert_eq!(dns_label("box_office"), "box-office");
    }
}
