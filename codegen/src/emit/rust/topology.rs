//! Emits `topology.rs`: the saga's Kafka topology as constants: topics, consumer groups,
//! subscriptions, events and compensations.

use proc_macro2::{Literal, TokenStream};
use quote::quote;

use super::doc;
use super::names;
use crate::emit::avro::EventSchema;
use crate::ir::Saga;

pub(super) fn module(saga: &Saga, schemas: &[EventSchema]) -> TokenStream {
    let topics = saga.topics.iter().map(|t| {
        let (n, p, dlq) = (&t.name, t.partitions, format!("{}{}", t.name, saga.dlq_suffix));
        quote! { Topic { name: #n, partitions: #p, dlq: #dlq }, }
    });
    let groups = saga.services.iter().filter(|s| saga.subscriptions(&s.name).next().is_some()).map(|s| {
        let (svc, gid) = (&s.name, saga.consumer_group(&s.name));
        let ts: Vec<_> = saga.consumed_topics(&s.name).iter().map(|t| t.name.clone()).collect();
        let (ma, ib, mb) = (s.retry.max_attempts, s.retry.initial_backoff_ms, s.retry.max_backoff_ms);
        let batch = Literal::usize_unsuffixed(s.max_batch as usize);
        quote! {
            ConsumerGroup {
                service: #svc,
                group_id: #gid,
                topics: &[#(#ts),*],
                retry: RetryPolicy {
                    max_attempts: #ma,
                    initial_backoff: Duration::from_millis(#ib),
                    max_backoff: Duration::from_millis(#mb),
                },
                max_batch: #batch,
            },
        }
    });
    // Every service subscribes to something (the validator sees to it), so each has a group:
    // the i-th consuming service has the i-th group.
    let identities = saga.services.iter().enumerate().filter(|(_, s)| saga.subscriptions(&s.name).next().is_some());
    let identities = identities.enumerate().map(|(group, (ordinal, s))| {
        let id = names::service(&s.name).identity();
        let inbound = names::service(&s.name).inbound();
        let (name, ordinal, group) =
            (&s.name, Literal::u16_unsuffixed(ordinal as u16), Literal::usize_unsuffixed(group));
        let used = saga.topics.iter().filter(|t| {
            saga.consumed_topics(&s.name).iter().any(|c| c.name == t.name)
                || saga.events.iter().any(|e| e.publisher == s.name && !e.retired && e.topic == t.name)
        });
        let used = used.map(|t| {
            let (n, p) = (&t.name, t.partitions);
            quote! { TopicShape { name: #n, partitions: #p }, }
        });
        let writes = saga.events.iter().filter(|e| e.publisher == s.name && !e.retired).map(|e| {
            let event = names::type_of(&e.name);
            quote! { <super::events::#event as super::envelope::Event>::schemas, }
        });
        let schema_group = saga.schema_group(&s.name);
        let d = doc(&format!("The `{name}` service, as the runtime starts it."));
        quote! {
            #d
            pub const #id: ServiceIdentity<super::handlers::#inbound> = ServiceIdentity {
                name: #name,
                ordinal: #ordinal,
                consumer_group: &CONSUMER_GROUPS[#group],
                topics: &[#(#used)*],
                dlq_suffix: DLQ_SUFFIX,
                schema_topic: SCHEMA_TOPIC,
                schema_group: #schema_group,
                writes: &[#(#writes)*],
                inbound: PhantomData,
            };
        }
    });
    let subs = saga.events.iter().flat_map(|e| {
        e.subscribers.iter().map(move |s| {
            let (svc, ev, topic, rs) = (&s.service, &e.name, &e.topic, &s.replies);
            quote! { Subscription { service: #svc, event_type: #ev, topic: #topic, replies: &[#(#rs),*] }, }
        })
    });
    let events = saga.events.iter().zip(schemas).map(|(e, s)| {
        let (n, t, p, ext) = (&e.name, &e.topic, &e.publisher, e.external);
        let fp = super::events::bytes(&s.fingerprint);
        quote! { EventInfo { event_type: #n, topic: #t, publisher: #p, external: #ext, fingerprint: #fp }, }
    });
    let comps = saga.compensations.iter().map(|c| {
        let (on, svc, undoes, tombstone) = (&c.on, &c.service, &c.undoes, c.tombstone);
        quote! { Compensation { on: #on, service: #svc, undoes: #undoes, tombstone: #tombstone }, }
    });
    let grants = saga.kafka_grants().into_iter().map(|g| {
        let (principal, resource, name, ops) = (&g.principal, g.resource.name(), &g.name, &g.operations);
        let pattern = if g.prefixed { "prefixed" } else { "literal" };
        quote! {
            KafkaGrant { principal: #principal, resource: #resource, pattern: #pattern, name: #name, operations: &[#(#ops),*] },
        }
    });
    let (console, console_groups) = (crate::ir::CONSOLE, saga.console_group_prefix());
    let services: Vec<_> = saga.services.iter().map(|s| s.name.as_str()).collect();
    let (name, key, suffix) = (&saga.name, &saga.key, &saga.dlq_suffix);
    let schema_topic = saga.schema_topic();
    quote! {
        //! Kafka topology of the saga: topics, their partition counts and dead-letter twins,
        //! consumer groups with their retry policy, subscriptions and compensations.

        use std::marker::PhantomData;
        use std::time::Duration;

        /// Name of the saga.
        pub const SAGA: &str = #name;
        /// Name of the saga key every event carries (the Kafka partition key).
        pub const SAGA_KEY: &str = #key;
        /// Suffix of every dead-letter topic.
        pub const DLQ_SUFFIX: &str = #suffix;
        /// The compacted topic where every publisher registers its writer schemas by
        /// fingerprint before it publishes with them (one partition).
        pub const SCHEMA_TOPIC: &str = #schema_topic;
        /// The services of the saga.
        pub const SERVICES: &[&str] = &[#(#services),*];

        /// The rows of the tables below: the same for every saga.
        pub use saga_contract::topology::{Compensation, EventInfo, KafkaGrant, Subscription, Topic};

        /// Every Kafka topic the saga uses, with its dead-letter twin.
        pub const TOPICS: &[Topic] = &[#(#topics)*];

        /// A consumer group and its retry policy: shared with the runtime, which configures its
        /// consumers from them.
        pub use saga_contract::{ConsumerGroup, RetryPolicy};

        pub const CONSUMER_GROUPS: &[ConsumerGroup] = &[#(#groups)*];

        /// A service as the runtime starts it, typed by the inbound events its consumer
        /// decodes: shared with the runtime.
        pub use saga_contract::{ServiceIdentity, TopicShape};

        #(#identities)*

        /// Each service receiving an event, and what it may publish in reply.
        pub const SUBSCRIPTIONS: &[Subscription] = &[#(#subs)*];

        /// Every event: where it goes, who publishes it, its schema fingerprint.
        pub const EVENTS: &[EventInfo] = &[#(#events)*];

        /// Every compensation: on `on`, `service` undoes its earlier event `undoes`.
        pub const COMPENSATIONS: &[Compensation] = &[#(#comps)*];

        /// What the broker lets each service, and the operator console, do (docs/security.md).
        pub const KAFKA_GRANTS: &[KafkaGrant] = &[#(#grants)*];

        /// The operator console's Kafka principal.
        pub const CONSOLE_PRINCIPAL: &str = #console;
        /// The prefix of the consumer groups the operator console reads with.
        pub const CONSOLE_GROUP_PREFIX: &str = #console_groups;

        pub fn topic(name: &str) -> Option<&'static Topic> {
            TOPICS.iter().find(|t| t.name == name)
        }

        pub fn consumer_group(service: &str) -> Option<&'static ConsumerGroup> {
            CONSUMER_GROUPS.iter().find(|g| g.service == service)
        }

        pub fn event_info(event_type: &str) -> Option<&'static EventInfo> {
            EVENTS.iter().find(|e| e.event_type == event_type)
        }
    }
}
