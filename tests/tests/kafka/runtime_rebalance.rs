//! Cooperative rebalances against the real Kafka: partitions that move
//! between members of a group are handed over after the work in flight on
//! them, so no message is handled twice. In a test binary of its own: its
//! load (two consumers over 3,000 messages) would disturb the timing the
//! fairness test of `runtime_consumer` measures.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::producer::FutureRecord;
use saga_process::shutdown::Shutdown;
use saga_runtime::consumer::{self, Failure, Processed, Processor, Received};
use saga_tests::consumer::{config, health};

/// Records which consumer handled what, slowly enough that a rebalance always
/// finds messages in flight and queued.
#[derive(Clone)]
struct Member {
    name: &'static str,
    /// Every consumer's handlings in order: (payload, member).
    log: Arc<Mutex<Vec<(String, &'static str)>>>,
}

impl Processor for Member {
    async fn process(&self, message: &Received) -> Result<Processed, Failure> {
        tokio::time::sleep(Duration::from_millis(3)).await;
        let payload = String::from_utf8_lossy(&message.payload).into_owned();
        self.log.lock().expect("lock").push((payload, self.name));
        Ok(Processed::Handled)
    }
}

/// Cooperative rebalances hand partitions over cleanly: when a second member
/// joins (and later leaves), the partitions that move are handed over only
/// after the work in flight on them committed, the messages queued for them
/// are left to the next owner, and that owner starts at the committed
/// offset. Every message is then handled exactly once and in its key's order,
/// with no inbox to hide a second handling. (A multi-threaded runtime, as the
/// services have: the handover waits for the workers in the rebalance callback.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_hands_partitions_over_without_handling_a_message_twice() {
    let stack = saga_tests::stack();
    let brokers = stack.kafka_brokers();
    let prefix = format!("{}.", saga_tests::unique("rebalance"));
    let (topic, _) = saga_tests::topic_and_dlq(&brokers, &prefix, 6).await;
    const KEYS: usize = 60;
    const MESSAGES: usize = 3000;
    let producer = saga_tests::producer(&brokers);
    let sends: Vec<_> = (0..MESSAGES)
        .map(|i| {
            let (key, payload) = (format!("k{}", i % KEYS), format!("k{}:{}", i % KEYS, i / KEYS));
            producer
                .send_result(FutureRecord::to(&topic).key(&key).payload(&payload))
                .map_err(|(e, _)| e)
                .expect("enqueue")
        })
        .collect();
    for sent in sends {
        sent.await.expect("delivery").map_err(|(e, _)| e).expect("produce");
    }

    let log = Arc::new(Mutex::new(Vec::new()));
    let handled = |log: &Arc<Mutex<Vec<(String, &'static str)>>>| log.lock().expect("lock").len();
    let wait_for = |count: usize| {
        let log = log.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while handled(&log) < count {
                assert!(tokio::time::Instant::now() < deadline, "handled only {} of {count}", handled(&log));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let start = |name: &'static str| {
        let (trigger, shutdown) = Shutdown::manual();
        let member = Member { name, log: log.clone() };
        let task =
            tokio::spawn(consumer::run(config(&brokers, &prefix, 1), member, shutdown.clone(), health(&shutdown)));
        (trigger, task)
    };

    let (stop_a, a) = start("a");
    wait_for(300).await;
    let (stop_b, b) = start("b");
    // Until b has taken partitions over and handled some of them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while log.lock().expect("lock").iter().filter(|(_, m)| *m == "b").count() < 200 {
        assert!(tokio::time::Instant::now() < deadline, "the second member never got partitions");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_b.trigger();
    b.await.expect("task").expect("consumer b");
    let before_b_left = handled(&log);
    assert!(before_b_left < MESSAGES, "b left too late to hand anything back");
    wait_for(MESSAGES).await;
    // Anything handled twice would show up late: give it the time.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_a.trigger();
    a.await.expect("task").expect("consumer a");

    let log = log.lock().expect("lock").clone();
    let mut times: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for (payload, _) in &log {
        *times.entry(payload).or_default() += 1;
    }
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{} messages handled more than once, e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(5)]
    );
    assert_eq!(times.len(), MESSAGES, "every message handled");
    // Each key's messages in order, across the handovers.
    let mut next: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (payload, member) in &log {
        let (key, seq) = payload.split_once(':').expect("key:seq");
        let expected = next.entry(key).or_default();
        assert_eq!(seq.parse::<usize>().expect("seq"), *expected, "{key} out of order (handled by {member})");
        *expected += 1;
    }
    let after_b: Vec<&str> = log[before_b_left..].iter().map(|(_, m)| *m).collect();
    assert!(after_b.iter().all(|m| *m == "a"), "only a is left");
    let by_b = log.iter().filter(|(_, m)| *m == "b").count();
    assert!((200..MESSAGES).contains(&by_b), "b handled {by_b}");
}
