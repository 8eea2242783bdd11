//! Which partitions this consumer owns, and the work in flight on them, so
//! that a rebalance hands a partition over cleanly.
//!
//! With cooperative-sticky assignment a rebalance revokes only the
//! partitions that move. Before librdkafka gives one up
//! ([`RebalanceContext::pre_rebalance`]):
//! - it is no longer owned: messages of it that were received but not
//!   started (in the loop's waiting list, in a worker's queue) are dropped
//!   when their turn comes, unhandled and with their offsets unstored: the
//!   next owner reads them from the committed offset;
//! - a worker that is only waiting to retry a message of it gives up;
//! - the handover waits (at most [`HANDOVER_WAIT`]) until no transaction of
//!   it is in flight, so each either committed (and stored its offset) or
//!   rolled back;
//! - the stored offsets are committed.
//!
//! The next owner then starts exactly after the last committed work: no
//! message is handled twice, and the inbox stays a safety net. An epoch per
//! assignment keeps a message received before a partition was revoked from
//! being handled after it was assigned back.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, TopicPartitionList};

/// How long a revocation waits for the transactions in flight on the revoked
/// partitions. One transaction takes milliseconds; only a database that
/// stopped answering in the middle of one holds it longer, and then the
/// handover goes ahead and the inbox catches the redelivery.
pub const HANDOVER_WAIT: Duration = Duration::from_secs(30);

type Partition = (String, i32);

/// A partition's assignment: messages received under one epoch are handled
/// only while that epoch lasts.
pub type Epoch = u64;

#[derive(Default)]
struct State {
    owned: HashMap<Partition, Epoch>,
    next_epoch: Epoch,
    /// Messages of each partition being handled right now (claimed, not done).
    busy: HashMap<Partition, usize>,
}

impl State {
    /// Whether nothing of `partitions` is being handled.
    fn idle(&self, partitions: &[Partition]) -> bool {
        partitions.iter().all(|p| self.busy.get(p).is_none_or(|n| *n == 0))
    }
}

/// Shared by the receiving loop, the workers and the rebalance callback.
#[derive(Default)]
pub struct Ownership {
    state: Mutex<State>,
    idle: Condvar,
}

impl Ownership {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind: still usable.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn assigned(&self, partitions: &TopicPartitionList) {
        let mut state = self.lock();
        for p in partitions.elements() {
            let epoch = state.next_epoch;
            state.next_epoch += 1;
            state.owned.insert((p.topic().to_owned(), p.partition()), epoch);
        }
    }

    pub(super) fn revoked(&self, partitions: &TopicPartitionList) -> Vec<Partition> {
        let mut state = self.lock();
        let gone: Vec<Partition> =
            partitions.elements().iter().map(|p| (p.topic().to_owned(), p.partition())).collect();
        for partition in &gone {
            state.owned.remove(partition);
        }
        gone
    }

    /// Gives up every partition at once (the consumer is gone).
    pub fn revoke_all(&self) {
        self.lock().owned.clear();
    }

    /// The epoch a message of `topic`/`partition` received now belongs to;
    /// `None` if the partition is not owned.
    pub fn epoch(&self, topic: &str, partition: i32) -> Option<Epoch> {
        self.lock().owned.get(&(topic.to_owned(), partition)).copied()
    }

    /// Whether a message received in `epoch` may still be handled.
    pub fn owns(&self, topic: &str, partition: i32, epoch: Epoch) -> bool {
        self.epoch(topic, partition) == Some(epoch)
    }

    /// Marks the messages whose partition is still owned in the epoch they
    /// were received in as in flight, and returns them; the others are
    /// dropped. The claim ends when the returned guard is dropped.
    pub fn claim<M>(self: &Arc<Self>, messages: Vec<(M, Epoch)>, partition_of: impl Fn(&M) -> Partition) -> Claim<M> {
        let mut state = self.lock();
        let mut kept = Vec::with_capacity(messages.len());
        let mut partitions = Vec::new();
        for (message, epoch) in messages {
            let partition = partition_of(&message);
            if state.owned.get(&partition) != Some(&epoch) {
                tracing::debug!(topic = %partition.0, partition = partition.1, "dropping a message of a revoked partition");
                continue;
            }
            *state.busy.entry(partition.clone()).or_default() += 1;
            partitions.push(partition);
            kept.push((message, epoch));
        }
        Claim { ownership: self.clone(), partitions, messages: kept }
    }

    /// Ends one claim of each of `partitions` (one entry per message).
    fn end(&self, partitions: &[Partition]) {
        let mut state = self.lock();
        for partition in partitions {
            if let Some(n) = state.busy.get_mut(partition) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    state.busy.remove(partition);
                }
            }
        }
        drop(state);
        self.idle.notify_all();
    }

    /// Waits until nothing of `partitions` is in flight, at most `within`;
    /// `false` if something still was.
    fn wait_idle(&self, partitions: &[Partition], within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut state = self.lock();
        loop {
            if state.idle(partitions) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self.idle.wait_timeout(state, left).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        }
    }

    fn is_idle(&self, partitions: &[Partition]) -> bool {
        self.lock().idle(partitions)
    }
}

/// Messages a worker is handling; while it lives, a revocation of their
/// partitions waits.
pub struct Claim<M> {
    ownership: Arc<Ownership>,
    partitions: Vec<Partition>,
    pub messages: Vec<(M, Epoch)>,
}

impl<M> Claim<M> {
    /// Ends the claim on `topic`/`partition` before the rest (its message was given up).
    pub fn release(&mut self, topic: &str, partition: i32) {
        let (mine, rest): (Vec<Partition>, Vec<Partition>) =
            self.partitions.drain(..).partition(|(t, p)| t == topic && *p == partition);
        self.partitions = rest;
        self.ownership.end(&mine);
    }
}

impl<M> Drop for Claim<M> {
    fn drop(&mut self) {
        self.ownership.end(&self.partitions);
    }
}

/// The consumer's context: keeps [`Ownership`] in step with the assignment
/// and hands revoked partitions over as the module says.
pub struct RebalanceContext {
    pub ownership: Arc<Ownership>,
}

impl ClientContext for RebalanceContext {}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                self.ownership.assigned(partitions);
                tracing::info!(partitions = %list(partitions), "partitions assigned");
            }
            Rebalance::Revoke(partitions) => {
                let gone = self.ownership.revoked(partitions);
                let started = Instant::now();
                let idle =
                    self.ownership.is_idle(&gone) || wait_blocking(|| self.ownership.wait_idle(&gone, HANDOVER_WAIT));
                if !idle {
                    tracing::warn!(?HANDOVER_WAIT, partitions = %list(partitions),
                        "a transaction of a revoked partition is still in flight; handing it over anyway");
                }
                // librdkafka commits on revocation too when auto-commit is on; committing here
                // makes it certain the next owner starts after the last committed work. A lost
                // assignment (the group moved on without this member: its session ended, the
                // coordinator moved) is not ours to commit for: the broker fences such a commit
                // of a static member, which librdkafka makes fatal.
                if consumer.assignment_lost() {
                    tracing::warn!(partitions = %list(partitions), "assignment lost; its offsets are left as committed");
                } else {
                    match wait_blocking(|| consumer.commit_consumer_state(CommitMode::Sync)) {
                        Ok(())
                        | Err(rdkafka::error::KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) =>
                            {}
                        Err(error) => tracing::warn!(%error, "cannot commit the offsets of revoked partitions"),
                    }
                }
                tracing::info!(partitions = %list(partitions), waited = ?started.elapsed(), "partitions handed over");
            }
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance failed"),
        }
    }
}

/// Runs blocking work from the rebalance callback, which librdkafka calls
/// inside `recv` on a runtime thread: on a multi-threaded runtime the thread's
/// other tasks (the workers being waited for) move elsewhere meanwhile. On a
/// current-thread runtime nothing else could run while it blocks, so a wait
/// for the workers would never end: it then runs as is, and only the inbox
/// keeps a message handed over mid-transaction from being handled twice.
fn wait_blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

fn list(partitions: &TopicPartitionList) -> String {
    let names: Vec<String> = partitions.elements().iter().map(|p| format!("{}/{}", p.topic(), p.partition())).collect();
    names.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tpl(partitions: &[i32]) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for p in partitions {
            list.add_partition("t", *p);
        }
        list
    }

    fn of(m: &i32) -> Partition {
        ("t".to_owned(), *m)
    }

    #[test]
    fn messages_of_a_revoked_partition_are_dropped_even_once_it_is_assigned_back() {
        let ownership = Arc::new(Ownership::default());
        ownership.assigned(&tpl(&[0, 1]));
        let early = ownership.epoch("t", 0).expect("owned");
        let other = ownership.epoch("t", 1).expect("owned");
        ownership.revoked(&tpl(&[0]));
        assert_eq!(ownership.epoch("t", 0), None);
        ownership.assigned(&tpl(&[0]));
        let late = ownership.epoch("t", 0).expect("owned again");
        let claim = ownership.claim(vec![(0, early), (1, other), (0, late)], of);
        let kept: Vec<(i32, Epoch)> = claim.messages.clone();
        assert_eq!(kept, [(1, other), (0, late)]);
    }

    #[test]
    fn a_revocation_waits_for_the_claims_in_flight() {
        let ownership = Arc::new(Ownership::default());
        ownership.assigned(&tpl(&[0, 1]));
        let epoch = ownership.epoch("t", 0).expect("owned");
        let claim = ownership.claim(vec![(0, epoch)], of);
        let gone = ownership.revoked(&tpl(&[0]));
        assert!(!ownership.is_idle(&gone));
        assert!(ownership.is_idle(&[("t".to_owned(), 1)]));
        assert!(!ownership.wait_idle(&gone, Duration::from_millis(20)), "a claim is in flight");
        let waiter = {
            let ownership = ownership.clone();
            std::thread::spawn(move || ownership.wait_idle(&gone, Duration::from_secs(10)))
        };
        std::thread::sleep(Duration::from_millis(50));
        drop(claim);
        assert!(waiter.join().expect("thread"), "idle once the claim ended");
    }
}
