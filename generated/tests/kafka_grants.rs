//! The broker permissions generated from the spec give each service exactly
//! what its place in the saga needs: every event's topic is written by its
//! publisher alone among the services (so no other service can forge it; the
//! operator console redrives into it), every consumed topic is read by its
//! subscribers and the console, each consumer group is used by its own
//! service alone, and the schema topic is written by the publishers and read
//! by the consumers.

use std::collections::BTreeSet;

use saga_generated::topology::{
    CONSOLE_GROUP_PREFIX, CONSOLE_PRINCIPAL, CONSUMER_GROUPS, DLQ_SUFFIX, EVENTS, KAFKA_GRANTS, SCHEMA_TOPIC, SERVICES,
    TOPICS,
};

/// Who holds `operation` on the `resource` named `name`.
fn holders(resource: &str, name: &str, operation: &str) -> BTreeSet<&'static str> {
    KAFKA_GRANTS
        .iter()
        .filter(|g| g.resource == resource && g.pattern == "literal" && g.name == name)
        .filter(|g| g.operations.contains(&operation))
        .map(|g| g.principal)
        .collect()
}

#[test]
fn only_an_events_publisher_writes_its_topic() {
    for event in EVENTS {
        let writers = BTreeSet::from([event.publisher, CONSOLE_PRINCIPAL]);
        assert_eq!(holders("topic", event.topic, "Write"), writers, "{}", event.event_type);
    }
    let forger = KAFKA_GRANTS.iter().find(|g| g.principal == "user" && g.name == "inventory-events");
    assert_eq!(forger.map(|g| g.operations), Some(&["Read"][..]), "the user service only reads stock replies");
}

#[test]
fn consumed_topics_are_read_by_their_group_only_and_dead_letters_written_by_it() {
    for topic in TOPICS {
        let consumers: BTreeSet<&str> =
            CONSUMER_GROUPS.iter().filter(|g| g.topics.contains(&topic.name)).map(|g| g.service).collect();
        let mut readers = consumers.clone();
        readers.insert(CONSOLE_PRINCIPAL);
        assert_eq!(holders("topic", topic.name, "Read"), readers, "{}", topic.name);
        let dlq = format!("{}{DLQ_SUFFIX}", topic.name);
        assert_eq!(holders("topic", &dlq, "Write"), consumers, "{dlq}");
        let operators = BTreeSet::from([CONSOLE_PRINCIPAL]);
        assert_eq!(holders("topic", &dlq, "Read"), operators, "dead letters are the operators' to read");
    }
    for group in CONSUMER_GROUPS {
        assert_eq!(holders("group", group.group_id, "Read"), BTreeSet::from([group.service]), "{}", group.group_id);
        assert!(!group.group_id.starts_with(CONSOLE_GROUP_PREFIX), "the console's groups are not a service's");
    }
}

#[test]
fn every_grant_is_a_services_and_names_a_resource_of_the_saga() {
    let topics: BTreeSet<String> = TOPICS
        .iter()
        .flat_map(|t| [t.name.to_owned(), format!("{}{DLQ_SUFFIX}", t.name)])
        .chain([SCHEMA_TOPIC.to_owned()])
        .collect();
    for grant in KAFKA_GRANTS {
        assert!(SERVICES.contains(&grant.principal) || grant.principal == CONSOLE_PRINCIPAL, "{grant:?}");
        match (grant.resource, grant.pattern) {
            ("topic", "literal") => assert!(topics.contains(grant.name), "{grant:?}"),
            ("group", "literal") => assert!(
                CONSUMER_GROUPS.iter().any(|g| g.group_id == grant.name)
                    || grant.name == format!("{SCHEMA_TOPIC}.{}", grant.principal),
                "{grant:?}"
            ),
            ("group", "prefixed") => {
                assert_eq!((grant.principal, grant.name), (CONSOLE_PRINCIPAL, CONSOLE_GROUP_PREFIX))
            }
            other => panic!("unknown resource and pattern {other:?}"),
        }
        assert!(grant.operations.iter().all(|op| ["Read", "Write", "Describe"].contains(op)), "{grant:?}");
    }
}

#[test]
fn the_schema_topic_is_written_by_every_publisher_and_read_by_every_consumer() {
    let publishers: BTreeSet<&str> = EVENTS.iter().map(|e| e.publisher).filter(|p| SERVICES.contains(p)).collect();
    assert_eq!(holders("topic", SCHEMA_TOPIC, "Write"), publishers, "a publisher registers before it publishes");
    let consumers: BTreeSet<&str> = CONSUMER_GROUPS.iter().map(|g| g.service).collect();
    assert_eq!(holders("topic", SCHEMA_TOPIC, "Read"), consumers, "a consumer looks a newer schema up");
}
