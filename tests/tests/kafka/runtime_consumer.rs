//! The consumer loop against the real Kafka, by failure class: an outage is
//! waited out however many tries it takes and nothing is dead-lettered for
//! it; a state not there yet retries in place without skipping ahead, then
//! goes to the DLQ; undecodable and permanently refused messages go to the
//! DLQ at once with their headers, and the partition moves on; a batch that
//! fails is handled again one message at a time, in order, losing nothing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::producer::FutureRecord;
use saga_process::shutdown::Shutdown;
use saga_runtime::consumer::{self, ConsumerConfig, Failure, Processed, Processor, Received};
use saga_tests::consumer::{config, health};

/// `poison:*` is undecodable, `refused:*` refused for good, `flaky:*` not
/// ready twice then fine, `doomed:*` never ready, `outage:*` meets an outage
/// for six tries (twice the retry policy's attempts) then succeeds.
#[derive(Clone, Default)]
struct Recorder {
    handled: Arc<Mutex<Vec<String>>>,
    attempts: Arc<Mutex<std::collections::BTreeMap<String, u32>>>,
}

impl Processor for Recorder {
    async fn process(&self, message: &Received) -> Result<Processed, Failure> {
        let text = String::from_utf8_lossy(&message.payload).into_owned();
        let attempt = {
            let mut attempts = self.attempts.lock().expect("lock");
            let n = attempts.entry(text.clone()).or_default();
            *n += 1;
            *n
        };
        if text.starts_with("poison") {
            return Err(Failure::Undecodable("not a known event".into()));
        }
        if text.starts_with("refused") {
            return Err(Failure::Permanent("this event can never be handled".into()));
        }
        if text.starts_with("outage") && attempt <= 6 {
            return Err(Failure::Infrastructure("database: connection refused".into()));
        }
        if text.starts_with("doomed") || (text.starts_with("flaky") && attempt <= 2) {
            return Err(Failure::NotYet(format!("attempt {attempt} failed")));
        }
        self.handled.lock().expect("lock").push(text);
        Ok(Processed::Handled)
    }
}

/// A one-partition topic `<prefix>events` and its DLQ, holding `payloads` in order.
async fn topic_with(brokers: &str, prefix: &str, payloads: &[String]) {
    let (topic, _) = saga_tests::topic_and_dlq(brokers, prefix, 1).await;
    let producer = saga_tests::producer(brokers);
    for payload in payloads {
        producer
            .send(FutureRecord::to(&topic).key("k").payload(payload), Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }
}

#[tokio::test]
async fn each_failure_class_gets_its_treatment_and_the_partition_moves_on() {
    let stack = saga_tests::stack();
    let brokers = stack.kafka_brokers();
    let prefix = format!("{}.", saga_tests::unique("consumer"));
    let dlq = format!("{prefix}events.dlq");
    let sequence = ["a", "poison:1", "b", "flaky:1", "c", "doomed:1", "outage:1", "refused:1", "d"].map(String::from);
    topic_with(&brokers, &prefix, &sequence).await;

    let recorder = Recorder::default();
    let (trigger, shutdown) = Shutdown::manual();
    // Recorder does not batch: whatever the batch size, one at a time.
    let health = health(&shutdown);
    let running =
        tokio::spawn(consumer::run(config(&brokers, &prefix, 16), recorder.clone(), shutdown.clone(), health.clone()));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while recorder.handled.lock().expect("lock").len() < 6 {
        assert!(tokio::time::Instant::now() < deadline, "handled only {:?}", recorder.handled.lock().expect("lock"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every message reached its outcome: no partition is stuck, whatever
    // failed on the way (an outage, a dead letter after retries).
    let verdict = health.verdict(tokio::time::Instant::now() + Duration::from_secs(3600));
    assert!(verdict.values().all(Option::is_none), "{verdict:?}");
    trigger.trigger();
    running.await.expect("task").expect("consumer");

    // In order, nothing skipped, the flaky one after its retries, the one
    // that met an outage once it was over.
    assert_eq!(*recorder.handled.lock().expect("lock"), ["a", "b", "flaky:1", "c", "outage:1", "d"]);
    let attempts = recorder.attempts.lock().expect("lock").clone();
    let tries = ["poison:1", "flaky:1", "doomed:1", "outage:1", "refused:1"].map(|m| attempts[m]);
    assert_eq!(tries, [1, 3, 3, 7, 1]);

    let reader: StreamConsumer = saga_runtime::kafka::client(&brokers)
        .set("group.id", saga_tests::unique("dlq-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    reader.subscribe(&[&dlq]).expect("subscribe");
    let mut dead = Vec::new();
    for _ in 0..3 {
        let m = tokio::time::timeout(Duration::from_secs(60), reader.recv()).await.expect("dead letter").expect("ok");
        let headers: std::collections::BTreeMap<String, String> = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into()))
                    .collect()
            })
            .unwrap_or_default();
        dead.push((String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(), headers));
    }
    reader.unsubscribe();
    assert_eq!(dead[0].0, "poison:1");
    assert_eq!(dead[0].1["dlq-reason"], "undecodable");
    assert_eq!(dead[0].1["dlq-attempts"], "1");
    assert_eq!(dead[0].1["dlq-original-topic"], "events");
    assert_eq!(dead[0].1["dlq-original-offset"], "1");
    assert_eq!(dead[0].1["dlq-consumer-group"], format!("{prefix}group"));
    assert_eq!(dead[1].0, "doomed:1");
    assert_eq!(dead[1].1["dlq-reason"], "retries-exhausted");
    assert_eq!(dead[1].1["dlq-attempts"], "3");
    assert_eq!(dead[1].1["dlq-error"], "attempt 3 failed");
    assert_eq!(dead[2].0, "refused:1", "the outage left nothing in the DLQ");
    assert_eq!(dead[2].1["dlq-reason"], "permanent");
    assert_eq!(dead[2].1["dlq-attempts"], "1");
}

/// Handles batches all-or-nothing; a batch holding a `bad:*` message fails
/// (as a rolled-back transaction would), and `bad:*` alone fails once.
#[derive(Clone, Default)]
struct Batcher {
    handled: Arc<Mutex<Vec<String>>>,
    batch_sizes: Arc<Mutex<Vec<usize>>>,
    bad_attempts: Arc<Mutex<u32>>,
}

impl Processor for Batcher {
    async fn process(&self, message: &Received) -> Result<Processed, Failure> {
        // Slow enough that the next messages queue up behind this one.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let text = String::from_utf8_lossy(&message.payload).into_owned();
        if text.starts_with("bad") {
            let mut attempts = self.bad_attempts.lock().expect("lock");
            *attempts += 1;
            if *attempts == 1 {
                return Err(Failure::NotYet("first attempt fails".into()));
            }
        }
        self.handled.lock().expect("lock").push(text);
        Ok(Processed::Handled)
    }

    async fn process_batch(&self, messages: &[Received]) -> Result<(), Failure> {
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.batch_sizes.lock().expect("lock").push(messages.len());
        let texts: Vec<String> = messages.iter().map(|m| String::from_utf8_lossy(&m.payload).into_owned()).collect();
        if texts.iter().any(|t| t.starts_with("bad")) {
            return Err(Failure::NotYet("rolled back".into()));
        }
        self.handled.lock().expect("lock").extend(texts);
        Ok(())
    }
}

#[tokio::test]
async fn a_failed_batch_is_handled_again_one_message_at_a_time() {
    let stack = saga_tests::stack();
    let brokers = stack.kafka_brokers();
    let prefix = format!("{}.", saga_tests::unique("batch"));
    let mut sequence: Vec<String> = (0..40).map(|i| format!("m{i:02}")).collect();
    sequence.insert(20, "bad:1".into());
    topic_with(&brokers, &prefix, &sequence).await;

    let batcher = Batcher::default();
    let (trigger, shutdown) = Shutdown::manual();
    let running =
        tokio::spawn(consumer::run(config(&brokers, &prefix, 8), batcher.clone(), shutdown.clone(), health(&shutdown)));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while batcher.handled.lock().expect("lock").len() < sequence.len() {
        assert!(tokio::time::Instant::now() < deadline, "handled only {:?}", batcher.handled.lock().expect("lock"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    trigger.trigger();
    running.await.expect("task").expect("consumer");

    // Every message exactly once and in order, the bad one after its retry.
    assert_eq!(*batcher.handled.lock().expect("lock"), sequence);
    assert_eq!(*batcher.bad_attempts.lock().expect("lock"), 2);
    let sizes = batcher.batch_sizes.lock().expect("lock").clone();
    assert!(sizes.iter().all(|&n| (2..=8).contains(&n)), "batches of 2 to max_batch messages: {sizes:?}");
    assert!(sizes.len() >= 2, "the messages queued behind the first were batched: {sizes:?}");
}

/// Records the topic of each message it handles, a little slowly, like a worker behind a
/// backlog.
#[derive(Clone, Default)]
struct Slow {
    handled: Arc<Mutex<Vec<String>>>,
}

impl Processor for Slow {
    async fn process(&self, message: &Received) -> Result<Processed, Failure> {
        tokio::time::sleep(Duration::from_micros(500)).await;
        self.handled.lock().expect("lock").push(message.topic.clone());
        Ok(Processed::Handled)
    }
}

#[tokio::test]
async fn a_backlog_in_one_topic_does_not_starve_another_of_the_same_worker() {
    let stack = saga_tests::stack();
    let brokers = stack.kafka_brokers();
    let prefix = format!("{}.", saga_tests::unique("fair"));
    // Two one-partition topics, so both partitions are number 0 and go to the same worker,
    // like order-events and payment-events of one saga: a big backlog in the first, a
    // small one in the second, both waiting before the consumer starts (a broker outage).
    let saga_event = "x".repeat(400);
    let (busy, _) = saga_tests::topic_and_dlq(&brokers, &format!("{prefix}busy."), 1).await;
    let (quiet, _) = saga_tests::topic_and_dlq(&brokers, &format!("{prefix}quiet."), 1).await;
    let producer = saga_tests::producer(&brokers);
    for (topic, count) in [(&busy, 3000), (&quiet, 100)] {
        let sends: Vec<_> = (0..count)
            .map(|_| {
                producer
                    .send_result(FutureRecord::to(topic).key("k").payload(&saga_event))
                    .map_err(|(e, _)| e)
                    .expect("enqueue")
            })
            .collect();
        for sent in sends {
            sent.await.expect("delivery").map_err(|(e, _)| e).expect("produce");
        }
    }

    let slow = Slow::default();
    let (trigger, shutdown) = Shutdown::manual();
    let config =
        ConsumerConfig { topics: vec!["busy.events".into(), "quiet.events".into()], ..config(&brokers, &prefix, 1) };
    let running = tokio::spawn(consumer::run(config, slow.clone(), shutdown.clone(), health(&shutdown)));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while slow.handled.lock().expect("lock").len() < 3100 {
        assert!(tokio::time::Instant::now() < deadline, "handled only {}", slow.handled.lock().expect("lock").len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    trigger.trigger();
    running.await.expect("task").expect("consumer");

    // The quiet topic's messages come through while the busy one is still far behind. When
    // the busy partition's first fetch answers before the quiet one's offset is known, what
    // bounds the wait is the size of a fetch, and so of the producer's record batches: with
    // librdkafka's 1 MB batches that first fetch brought 2,432 busy messages at once.
    let handled = slow.handled.lock().expect("lock").clone();
    let last_quiet = handled.iter().rposition(|t| t == "quiet.events").expect("the quiet topic handled");
    let busy_before = handled[..last_quiet].iter().filter(|t| *t == "busy.events").count();
    assert!(busy_before < 1500, "the quiet topic waited for {busy_before} of the 3000 busy messages");
}

/// A static member redeployed to read one more topic (the order service given
/// `shipping-events` by the shipping step): the new topic is read. Rejoining under its
/// old `group.instance.id` it would get its old partitions back without a rebalance and
/// the new topic would go to nobody (KAFKA-12759; 735 orders stuck in `paid` in the
/// rollout chaos scenario before the member id carried the topics).
#[tokio::test]
async fn a_static_member_redeployed_with_another_topic_reads_it() {
    let stack = saga_tests::stack();
    let brokers = stack.kafka_brokers();
    let prefix = format!("{}.", saga_tests::unique("resubscribe"));
    let (first, _) = saga_tests::topic_and_dlq(&brokers, &format!("{prefix}first."), 1).await;
    let (second, _) = saga_tests::topic_and_dlq(&brokers, &format!("{prefix}second."), 1).await;
    let producer = saga_tests::producer(&brokers);
    let send = |topic: String| {
        let producer = producer.clone();
        async move {
            producer
                .send(FutureRecord::to(&topic).key("k").payload("e"), Duration::from_secs(10))
                .await
                .map_err(|(e, _)| e)
                .expect("produce");
        }
    };
    let wait_for = |slow: Slow, topic: &'static str| async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !slow.handled.lock().expect("lock").iter().any(|t| t == topic) {
            assert!(tokio::time::Instant::now() < deadline, "nothing of {topic} handled within 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let version = |topics: &[&str]| ConsumerConfig {
        topics: topics.iter().map(|t| (*t).to_owned()).collect(),
        instance_id: Some("resubscribing-instance".into()),
        ..config(&brokers, &prefix, 1)
    };

    // The previous version reads one topic, then stops (a static member does not leave).
    send(first.clone()).await;
    let before = Slow::default();
    let (trigger, shutdown) = Shutdown::manual();
    let running =
        tokio::spawn(consumer::run(version(&["first.events"]), before.clone(), shutdown.clone(), health(&shutdown)));
    wait_for(before, "first.events").await;
    trigger.trigger();
    running.await.expect("task").expect("consumer");

    // The next version, same instance, reads both: the second topic's event comes through.
    send(second.clone()).await;
    let after = Slow::default();
    let (trigger, shutdown) = Shutdown::manual();
    let running = tokio::spawn(consumer::run(
        version(&["first.events", "second.events"]),
        after.clone(),
        shutdown.clone(),
        health(&shutdown),
    ));
    wait_for(after, "second.events").await;
    trigger.trigger();
    running.await.expect("task").expect("consumer");
}
