//! Markdown docs: sequence diagram of the saga, the status state diagram and the topics table.

use std::collections::{BTreeSet, VecDeque};
use std::fmt::Write;

use super::avro::EventSchema;
use crate::ir::Saga;

pub fn markdown(saga: &Saga, schemas: &[EventSchema], header: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{header}");
    let _ = writeln!(s, "# Saga `{}`\n", saga.name);
    if let Some(d) = &saga.doc {
        let _ = writeln!(s, "{d}\n");
    }
    let _ = writeln!(
        s,
        "Saga key: `{}` (carried by every event and used as the Kafka partition key, so all events of one saga are ordered).\n",
        saga.key
    );
    services(&mut s, saga);
    sequence(&mut s, saga);
    state_diagram(&mut s, saga);
    topics(&mut s, saga, schemas);
    context(&mut s, saga);
    policies(&mut s, saga);
    s
}

/// The saga context: its fields, what sets it, which events carry it and who reads it.
fn context(s: &mut String, saga: &Saga) {
    let Some(c) = &saga.context else { return };
    let _ = writeln!(
        s,
        "## Saga context
"
    );
    if let Some(d) = &c.doc {
        let _ = writeln!(
            s,
            "{d}
"
        );
    }
    let fields: Vec<String> = c.fields.iter().map(|f| format!("`{}`", f.name)).collect();
    let commands: Vec<String> = saga.commands.iter().map(|c| format!("`{}`", c.name)).collect();
    let carriers: Vec<String> = saga.context_carriers().iter().map(|e| format!("`{e}`")).collect();
    let _ = writeln!(
        s,
        "Fields {} are copied from {}; every reply copies the context of the event it answers, so these events carry it: {}. An event a timeout emits carries none.\n",
        fields.join(", "),
        commands.join(", "),
        carriers.join(", ")
    );
    let _ = writeln!(s, "| Service | Reads it on | Without it (during a rollout), replies |\n| --- | --- | --- |");
    for r in &c.read_by {
        let without = r.without.as_deref().map(|w| format!("`{w}`")).unwrap_or_else(|| "any of its replies".into());
        let _ = writeln!(s, "| {} | `{}` | {without} |", r.service, r.event);
    }
    let _ = writeln!(s);
}

/// Events in the order the saga produces them: breadth-first from the entry commands, then
/// timeouts, then anything left, so the diagram reads top to bottom.
fn flow_order(saga: &Saga) -> Vec<&str> {
    let mut order: Vec<&str> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut queue: VecDeque<&str> = saga.commands.iter().map(|c| c.emits.as_str()).collect();
    let timeout_events =
        saga.status.iter().flat_map(|s| s.states.iter().filter_map(|st| st.timeout.as_ref()?.emits.as_deref()));
    let mut later: Vec<&str> = timeout_events.collect();
    later.extend(saga.events.iter().map(|e| e.name.as_str()));
    loop {
        while let Some(ev) = queue.pop_front() {
            if !seen.insert(ev) {
                continue;
            }
            order.push(ev);
            if let Some(e) = saga.event(ev) {
                for sub in &e.subscribers {
                    queue.extend(sub.replies.iter().map(String::as_str));
                }
            }
        }
        match later.iter().position(|e| !seen.contains(e)) {
            Some(i) => queue.push_back(later.remove(i)),
            None => break,
        }
    }
    order
}

fn sequence(s: &mut String, saga: &Saga) {
    let _ = writeln!(s, "## Sequence\n\n```mermaid\nsequenceDiagram");
    for svc in &saga.services {
        let _ = writeln!(s, "    participant {0} as {0} service", svc.name);
    }
    let _ = writeln!(s, "    participant Kafka");
    for c in &saga.commands {
        let _ = writeln!(s, "    Note over {}: {} (entry command)", c.service, c.name);
    }
    for ev in flow_order(saga) {
        let Some(e) = saga.event(ev) else { continue };
        if let Some(sm) = &saga.status {
            for st in sm.states.iter().filter(|st| st.timeout.as_ref().and_then(|t| t.emits.as_deref()) == Some(ev)) {
                if let Some(t) = &st.timeout {
                    let _ = writeln!(s, "    Note over {}: timeout in {} after {}ms", sm.owner, st.name, t.after_ms);
                }
            }
        }
        let _ = writeln!(s, "    {}->>Kafka: {} ({})", e.publisher, e.name, e.topic);
        for sub in &e.subscribers {
            let _ = writeln!(s, "    Kafka->>{}: {}", sub.service, e.name);
            for c in saga.compensations.iter().filter(|c| c.on == e.name && c.service == sub.service) {
                let _ = writeln!(s, "    Note over {}: compensate: undo {}", sub.service, c.undoes);
            }
        }
        if e.external {
            let _ = writeln!(s, "    Note over Kafka: {} is also consumed outside the saga", e.name);
        }
    }
    let _ = writeln!(s, "```\n");
}

fn state_diagram(s: &mut String, saga: &Saga) {
    let Some(sm) = &saga.status else { return };
    let _ = writeln!(s, "## `{}` status\n\n```mermaid\nstateDiagram-v2", sm.owner);
    let _ = writeln!(s, "    [*] --> {}", sm.initial);
    for t in &sm.transitions {
        let _ = writeln!(s, "    {} --> {}: {}", t.from, t.to, t.on);
    }
    for st in &sm.states {
        if let Some(t) = &st.timeout {
            let emits = t.emits.as_deref().map(|e| format!(" / {e}")).unwrap_or_default();
            let _ = writeln!(s, "    {} --> {}: timeout {}ms{}", st.name, t.to, t.after_ms, emits);
        }
    }
    for st in sm.states.iter().filter(|st| st.terminal) {
        let _ = writeln!(s, "    {} --> [*]", st.name);
    }
    let _ = writeln!(s, "```\n");
}

/// The services of the saga: the one list docs point to (the local stack, the Kubernetes
/// manifests and the console derive theirs from the spec too).
fn services(s: &mut String, saga: &Saga) {
    let _ = writeln!(
        s,
        "## Services

| Service | Role | Handles | Publishes on | Database | Crate |\n| --- | --- | --- | --- | --- | --- |"
    );
    for service in &saga.services {
        let name = &service.name;
        let role = match &saga.status {
            Some(sm) if &sm.owner == name => "status owner",
            _ => "participant",
        };
        let handles: Vec<String> = saga.subscriptions(name).map(|(e, _)| format!("`{}`", e.name)).collect();
        let mut topics: Vec<String> = Vec::new();
        for e in saga.events.iter().filter(|e| &e.publisher == name) {
            let topic = format!("`{}`", e.topic);
            if !topics.contains(&topic) {
                topics.push(topic);
            }
        }
        let _ = writeln!(
            s,
            "| `{name}` | {role} | {} | {} | `{name}_service` | `services/{name}` |",
            if handles.is_empty() { "-".to_string() } else { handles.join(", ") },
            if topics.is_empty() { "-".to_string() } else { topics.join(", ") },
        );
    }
    let _ = writeln!(s);
}

fn topics(s: &mut String, saga: &Saga, schemas: &[EventSchema]) {
    let _ = writeln!(s, "## Topics\n");
    let _ = writeln!(s, "| Topic | Partitions | Dead-letter topic |\n| --- | --- | --- |");
    for t in &saga.topics {
        let _ = writeln!(s, "| `{}` | {} | `{}{}` |", t.name, t.partitions, t.name, saga.dlq_suffix);
    }
    let _ = writeln!(
        s,
        "\nBeside them, `{}` (compacted, one partition) holds every writer schema by fingerprint: each \
         service registers the schemas it publishes with before it publishes, and a consumer built \
         before a version looks it up there (docs/spec-language.md, \"Deploy order\").",
        saga.schema_topic()
    );
    let _ = writeln!(s, "\n## Events\n");
    let _ = writeln!(
        s,
        "| Topic | Event | Publisher | Subscribers (replies) | Schema written (fingerprint) | Also read |\n| --- | --- | --- | --- | --- | --- |"
    );
    for t in &saga.topics {
        for (e, sc) in saga.events.iter().zip(schemas).filter(|(e, _)| e.topic == t.name) {
            let mut subs: Vec<String> = e
                .subscribers
                .iter()
                .map(|sub| {
                    if sub.replies.is_empty() {
                        sub.service.clone()
                    } else {
                        format!("{} ({})", sub.service, sub.replies.join(", "))
                    }
                })
                .collect();
            if e.external {
                subs.push("external".into());
            }
            let written = sc.versions.last().map_or(0, |v| v.version);
            let fp = crate::history::hex(&sc.fingerprint);
            let older: Vec<String> = sc.versions.iter().rev().skip(1).map(|v| format!("v{}", v.version)).collect();
            let older = if older.is_empty() { "—".to_string() } else { older.join(", ") };
            let _ = writeln!(
                s,
                "| `{}` | `{}` | {} | {} | v{written} (`{fp}`) | {older} |",
                t.name,
                e.name,
                e.publisher,
                subs.join(", ")
            );
        }
    }
    let _ = writeln!(s);
}

fn policies(s: &mut String, saga: &Saga) {
    if !saga.compensations.is_empty() {
        let _ = writeln!(s, "## Compensations\n\n| On | Service | Undoes |\n| --- | --- | --- |");
        for c in &saga.compensations {
            let _ = writeln!(s, "| `{}` | {} | `{}` |", c.on, c.service, c.undoes);
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(
        s,
        "## Delivery\n\n| Consumer group | Topics | Max attempts | Backoff | Batch |\n| --- | --- | --- | --- | --- |"
    );
    for svc in &saga.services {
        let topics: Vec<String> = saga.consumed_topics(&svc.name).iter().map(|t| format!("`{}`", t.name)).collect();
        if topics.is_empty() {
            continue;
        }
        let _ = writeln!(
            s,
            "| `{}.{}` | {} | {} | {}ms doubling to {}ms | {} |",
            saga.name,
            svc.name,
            topics.join(", "),
            svc.retry.max_attempts,
            svc.retry.initial_backoff_ms,
            svc.retry.max_backoff_ms,
            svc.max_batch
        );
    }
    let _ = writeln!(
        s,
        "\nAfter the last attempt a message goes to its topic's dead-letter topic (`<topic>{}`). \
         Batch: how many waiting messages one transaction may handle together.",
        saga.dlq_suffix
    );
}
