//! Emits `saga.go`: the package's doc and the saga's Kafka topology as values: topics,
//! consumer groups with their retry policy, events, subscriptions and compensations.

use super::names;
use super::text::{comment, quoted};
use crate::ir::Saga;

fn strings(items: impl IntoIterator<Item = String>) -> String {
    format!("[]string{{{}}}", items.into_iter().collect::<Vec<_>>().join(", "))
}

fn millis(ms: u64) -> String {
    if ms.is_multiple_of(1000) { format!("{} * time.Second", ms / 1000) } else { format!("{ms} * time.Millisecond") }
}

pub(super) fn declarations(saga: &Saga) -> String {
    let mut out = String::new();
    let consts = [
        ("Saga", "Saga is the saga's name.", saga.name.clone()),
        (
            "SagaKey",
            "SagaKey is the field every event carries as its saga key (the Kafka partition key).",
            saga.key.clone(),
        ),
        ("Namespace", "Namespace is the Avro namespace of the saga's schemas.", saga.namespace.clone()),
        (
            "DeadLetterSuffix",
            "DeadLetterSuffix names a topic's dead-letter twin: `<topic><suffix>`.",
            saga.dlq_suffix.clone(),
        ),
        (
            "SchemaTopic",
            "SchemaTopic is the compacted topic where every publisher registers its writer schemas by\nfingerprint before it publishes with them (one partition).",
            saga.schema_topic(),
        ),
    ];
    for (name, doc, value) in consts {
        out.push('\n');
        out.push_str(&comment("", doc));
        out.push_str(&format!("const {name} = {}\n", quoted(&value)));
    }

    out.push_str("\n// The saga's topics.\nconst (\n");
    let rows: Vec<_> = saga
        .topics
        .iter()
        .map(|t| super::text::Line::Row(vec![names::topic(&t.name), format!("= {}", quoted(&t.name))]))
        .collect();
    out.push_str(&super::text::aligned(&rows));
    out.push_str(")\n");

    let services: Vec<String> = saga.services.iter().map(|s| quoted(&s.name)).collect();
    out.push_str(&format!("\n// Services is every service of the saga.\nvar Services = {}\n", strings(services)));

    out.push_str("\n// Topics is every topic the saga uses, with its partitions and dead-letter twin.\nvar Topics = []contract.Topic{\n");
    for t in &saga.topics {
        out.push_str(&format!(
            "\t{{Name: {}, Partitions: {}, DeadLetter: {}}},\n",
            names::topic(&t.name),
            t.partitions,
            quoted(&format!("{}{}", t.name, saga.dlq_suffix))
        ));
    }
    out.push_str("}\n");

    out.push_str(
        "\n// ConsumerGroups is the consumer group of every service that subscribes to something,\n\
         // with the retry policy of its deliveries.\nvar ConsumerGroups = []contract.ConsumerGroup{\n",
    );
    for s in saga.services.iter().filter(|s| saga.subscriptions(&s.name).next().is_some()) {
        let topics = strings(saga.consumed_topics(&s.name).iter().map(|t| names::topic(&t.name)));
        out.push_str(&format!(
            "\t{{Service: {}, GroupID: {}, Topics: {topics}, Retry: contract.RetryPolicy{{MaxAttempts: {}, InitialBackoff: {}, MaxBackoff: {}}}, MaxBatch: {}}},\n",
            quoted(&s.name),
            quoted(&saga.consumer_group(&s.name)),
            s.retry.max_attempts,
            millis(s.retry.initial_backoff_ms),
            millis(s.retry.max_backoff_ms),
            s.max_batch,
        ));
    }
    out.push_str("}\n");

    out.push_str(
        "\n// Events is every event of the saga: its topic and publisher.\nvar Events = []contract.EventInfo{\n",
    );
    for e in &saga.events {
        out.push_str(&format!(
            "\t{{EventType: {}, Topic: {}, Publisher: {}, External: {}, Retired: {}}},\n",
            names::event_type(&e.name),
            names::topic(&e.topic),
            quoted(&e.publisher),
            e.external,
            e.retired,
        ));
    }
    out.push_str("}\n");

    out.push_str(
        "\n// Subscriptions is who handles which event, and what the spec lets it publish in reply.\n\
         var Subscriptions = []contract.Subscription{\n",
    );
    for e in &saga.events {
        for s in &e.subscribers {
            out.push_str(&format!(
                "\t{{Service: {}, EventType: {}, Topic: {}, Replies: {}}},\n",
                quoted(&s.service),
                names::event_type(&e.name),
                names::topic(&e.topic),
                strings(s.replies.iter().map(|r| names::event_type(r))),
            ));
        }
    }
    out.push_str("}\n");

    out.push_str(
        "\n// Compensations is what gives back what an event holds when the saga does not complete.\n\
         var Compensations = []contract.Compensation{\n",
    );
    for c in &saga.compensations {
        out.push_str(&format!(
            "\t{{On: {}, Service: {}, Undoes: {}, Tombstone: {}}},\n",
            names::event_type(&c.on),
            quoted(&c.service),
            names::event_type(&c.undoes),
            c.tombstone
        ));
    }
    out.push_str("}\n");
    out
}
