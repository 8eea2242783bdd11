//! Password hashes: argon2id with the crate's defaults (OWASP's parameters),
//! in the PHC string format, computed on threads of their own, each with
//! the memory the algorithm works in allocated once for its life.
//!
//! Each hash works in 19 MiB for tens of milliseconds of one core: more at
//! once than there are cores is no faster, only bigger, so one thread per
//! core takes the work in turn and the rest waits. On tokio's blocking pool,
//! 200 registrations at once took the service to 1.1 GiB resident. With a
//! fixed set of threads allocating the 19 MiB for every hash, it still grew
//! by about 19 MiB per registration while several came at once (452 MiB
//! after 25, never given back): a thread that finds its malloc arena locked
//! by another moves to another arena, and glibc keeps a freed block that
//! big in each arena it was used in. With the memory allocated once per
//! thread, the service holds one block per core and no more.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use saga_runtime::grpc::internal;
use tonic::Status;

/// Password threads at most: each holds 19 MiB for its life, and on a node
/// with many cores one per core would hold hundreds. Two hash about 60
/// passwords a second; more logins than that take more instances.
const MAX_PASSWORD_THREADS: usize = 2;

fn password_threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get).min(MAX_PASSWORD_THREADS)
}

/// Password jobs waiting or running at most, per lane; beyond, a request is
/// answered UNAVAILABLE (the gateway's 503 with Retry-After) at once. At
/// about 40 ms a hash on two threads, 64 is a second and a half of work: far
/// more than real logins need, and a flood no longer builds a backlog that
/// makes every login wait out its deadline for minutes.
const MOST_WAITING: usize = 64;

/// The two kinds of password work. A login's check always goes before a new
/// account's hash, and hashes have a lane of their own, half as long: a
/// flood of registrations fills only that lane, and a login waits at most
/// for the hashes already running (`cargo xtask bench --registration-flood`
/// measured 2.6 logins a second getting through such a flood, 398 of 426
/// refused, while the two kinds shared one queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    /// Checking a password: logins.
    Verify,
    /// Hashing a new password: registrations.
    Hash,
}

type Job = Box<dyn FnOnce() + Send>;

/// Jobs not yet taken by a thread, per lane.
#[derive(Default)]
struct Queues {
    verify: Turns,
    hash: Turns,
    closed: bool,
}

/// The jobs of one lane, by whose they are, served in turn: the oldest job of one
/// account, then of the next account waiting, and so on. Two accounts logging in as
/// fast as they are answered then get two turns in every round, not the whole queue
/// ahead of everyone else's login. Jobs of one account (registrations all are ``)
/// keep their order.
#[derive(Default)]
struct Turns {
    /// Accounts with jobs waiting, in the order of their next turn.
    order: std::collections::VecDeque<String>,
    waiting: std::collections::HashMap<String, std::collections::VecDeque<Job>>,
}

impl Turns {
    fn push(&mut self, account: String, job: Job) {
        let jobs = self.waiting.entry(account.clone()).or_default();
        if jobs.is_empty() {
            self.order.push_back(account);
        }
        jobs.push_back(job);
    }

    /// Jobs waiting, of every account.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.waiting.values().map(std::collections::VecDeque::len).sum()
    }

    fn pop(&mut self) -> Option<Job> {
        let account = self.order.pop_front()?;
        let jobs = self.waiting.get_mut(&account)?;
        let job = jobs.pop_front();
        if jobs.is_empty() {
            self.waiting.remove(&account);
        } else {
            self.order.push_back(account);
        }
        job
    }
}

/// The password threads, their queues, and per lane the count of jobs given
/// to them and not done.
struct PasswordThreads {
    queues: std::sync::Arc<(std::sync::Mutex<Queues>, std::sync::Condvar)>,
    verify_waiting: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    hash_waiting: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    most_waiting: usize,
}

/// One job counted as waiting until it is dropped: run, skipped or lost to a panic.
struct Waiting(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for PasswordThreads {
    fn drop(&mut self) {
        let (queues, ready) = &*self.queues;
        if let Ok(mut queues) = queues.lock() {
            queues.closed = true;
        }
        ready.notify_all();
    }
}

impl PasswordThreads {
    fn start(threads: usize, most_waiting: usize) -> PasswordThreads {
        let queues = std::sync::Arc::new((std::sync::Mutex::new(Queues::default()), std::sync::Condvar::new()));
        for n in 0..threads {
            let queues = queues.clone();
            let spawned = std::thread::Builder::new().name(format!("argon2-{n}")).spawn(move || {
                let (lock, ready) = &*queues;
                loop {
                    // The lock is held only while taking the next job: a check first.
                    let job = {
                        let Ok(mut waiting) = lock.lock() else { return };
                        loop {
                            if let Some(job) = waiting.verify.pop().or_else(|| waiting.hash.pop()) {
                                break job;
                            }
                            if waiting.closed {
                                return;
                            }
                            waiting = match ready.wait(waiting) {
                                Ok(waiting) => waiting,
                                Err(_) => return,
                            };
                        }
                    };
                    job();
                }
            });
            if let Err(error) = spawned {
                tracing::error!(%error, "cannot start an argon2 thread");
            }
        }
        PasswordThreads { queues, verify_waiting: Default::default(), hash_waiting: Default::default(), most_waiting }
    }

    /// Runs `work` of `account` on one of the threads, in its turn among the
    /// accounts with work in its lane ([`Turns`]; for a hash, after every
    /// check waiting); UNAVAILABLE at once when the lane is full
    /// ([`MOST_WAITING`] checks, half as many hashes). Work whose caller has
    /// gone by its turn (the request ended, at the gateway's deadline say) is
    /// skipped.
    async fn run<T: Send + 'static>(
        &self,
        lane: Lane,
        account: &str,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Status> {
        use std::sync::atomic::Ordering;
        let (waiting, most) = match lane {
            Lane::Verify => (&self.verify_waiting, self.most_waiting),
            Lane::Hash => (&self.hash_waiting, self.most_waiting.div_ceil(2)),
        };
        let counted = Waiting(waiting.clone());
        if waiting.fetch_add(1, Ordering::SeqCst) >= most {
            drop(counted);
            return Err(Status::unavailable("too many password checks waiting; retry shortly"));
        }
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _counted = counted;
            if !done.is_closed() {
                let _ = done.send(work());
            }
        });
        {
            let (queues, ready) = &*self.queues;
            let mut queues = queues.lock().map_err(|_| Status::internal("the password queue is broken"))?;
            let account = account.trim().to_lowercase();
            match lane {
                Lane::Verify => queues.verify.push(account, job),
                Lane::Hash => queues.hash.push(account, job),
            }
            ready.notify_one();
        }
        // Dropped unanswered only if the job panicked.
        result.await.map_err(internal)
    }
}

/// Runs `work` of `account` in `lane` on one of the service's password
/// threads (one per core, at most [`MAX_PASSWORD_THREADS`]).
async fn on_password_thread<T: Send + 'static>(
    lane: Lane,
    account: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Status> {
    static THREADS: std::sync::OnceLock<PasswordThreads> = std::sync::OnceLock::new();
    THREADS.get_or_init(|| PasswordThreads::start(password_threads(), MOST_WAITING)).run(lane, account, work).await
}

thread_local! {
    /// The memory argon2 works in, on each password thread: allocated by its
    /// first hash, grown only for a stored hash with a larger memory cost.
    static MEMORY: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The raw argon2 output of `password` and `salt` into `out`, in this
/// thread's memory.
fn argon2_into(
    argon2: &Argon2<'_>,
    params: &Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> argon2::Result<()> {
    MEMORY.with_borrow_mut(|memory| {
        let blocks = params.block_count();
        if memory.len() < blocks {
            memory.resize(blocks, Block::default());
        }
        argon2.hash_password_into_with_memory(password, salt, out, &mut memory[..blocks])
    })
}

/// Hashes `password` with a fresh salt: a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$...`).
fn hash(password: &[u8]) -> Result<String, argon2::password_hash::Error> {
    let params = Params::DEFAULT;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let salt = SaltString::generate(&mut OsRng);
    let mut raw_salt = [0u8; 64];
    let raw_salt = salt.as_salt().decode_b64(&mut raw_salt)?;
    let output = Output::init_with(Params::DEFAULT_OUTPUT_LEN, |out| {
        argon2_into(&argon2, &params, password, raw_salt, out).map_err(Into::into)
    })?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params)?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// Whether `password` is the one `phc` (a PHC string of any argon2 variant,
/// version and parameters) was made from; the outputs are compared in
/// constant time.
fn verify(password: &[u8], phc: &str) -> Result<bool, argon2::password_hash::Error> {
    use argon2::password_hash::Error;
    let parsed = PasswordHash::new(phc)?;
    let algorithm = Algorithm::try_from(parsed.algorithm)?;
    let version = parsed.version.map(Version::try_from).transpose()?.unwrap_or_default();
    let params = Params::try_from(&parsed)?;
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else { return Err(Error::PhcStringField) };
    let mut raw_salt = [0u8; 64];
    let raw_salt = salt.decode_b64(&mut raw_salt)?;
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let output = Output::init_with(expected.len(), |out| {
        argon2_into(&argon2, &params, password, raw_salt, out).map_err(Into::into)
    })?;
    Ok(output == expected)
}

/// A PHC string of `password` with a fresh salt, computed on a password thread.
pub async fn hash_password(password: String) -> Result<String, Status> {
    // Registrations have no account yet: they keep their order among themselves.
    on_password_thread(Lane::Hash, "", move || hash(password.as_bytes())).await?.map_err(internal)
}

/// A hash of nothing in particular, computed once: login verifies against it
/// when the email is unknown, so an unknown email takes as long as a wrong password.
pub async fn dummy_hash() -> Result<&'static str, Status> {
    static DUMMY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    DUMMY.get_or_try_init(|| hash_password("not a password of anyone".to_owned())).await.map(String::as_str)
}

/// Password checks one account may have waiting or running at once: a few
/// accounts logging in over and over (the gateway limits how often) hold no
/// more than this share each of the [`MOST_WAITING`] places of the lane.
/// Above the gateway's failed logins per account and address (5), so that
/// parallel guesses are counted there, not turned away here.
const MOST_WAITING_PER_ACCOUNT: usize = 8;

/// The password checks of each account waiting or running now.
#[derive(Debug, Default)]
struct Shares {
    held: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

/// One place of an account's share, given back when dropped.
struct Share {
    shares: &'static Shares,
    account: String,
}

impl Shares {
    /// A place for `account`, or `None` when it holds `most` already.
    fn take(&'static self, account: &str, most: usize) -> Option<Share> {
        let account = account.trim().to_lowercase();
        let mut held = self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = held.entry(account.clone()).or_default();
        if *count >= most {
            return None;
        }
        *count += 1;
        Some(Share { shares: self, account })
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut held = self.shares.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.account) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.account);
            }
        }
    }
}

/// Whether `password` matches the stored `hash`, computed on a password thread, as a check
/// of `account` (the email asked for, known or not): UNAVAILABLE at once when that account
/// has its share of checks waiting already.
pub async fn verify_password(account: &str, password: String, hash: String) -> Result<bool, Status> {
    static SHARES: std::sync::OnceLock<Shares> = std::sync::OnceLock::new();
    let Some(_share) = SHARES.get_or_init(Shares::default).take(account, MOST_WAITING_PER_ACCOUNT) else {
        return Err(Status::unavailable("too many password checks for this account at once; retry shortly"));
    };
    on_password_thread(Lane::Verify, account, move || verify(password.as_bytes(), &hash)).await?.map_err(internal)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    use super::*;

    #[test]
    fn accounts_take_turns_and_each_keeps_its_own_order() {
        let ran = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut turns = Turns::default();
        for (account, n) in [("flood", 1), ("flood", 2), ("flood", 3), ("other", 1), ("flood", 4), ("third", 1)] {
            let ran = ran.clone();
            turns.push(account.to_owned(), Box::new(move || ran.lock().expect("lock").push(format!("{account}{n}"))));
        }
        while let Some(job) = turns.pop() {
            job();
        }
        assert_eq!(*ran.lock().expect("lock"), ["flood1", "other1", "third1", "flood2", "flood3", "flood4"]);
        assert!(turns.waiting.is_empty() && turns.order.is_empty());
    }

    #[test]
    fn one_account_holds_no_more_than_its_share_of_the_checks() {
        let shares: &'static Shares = Box::leak(Box::default());
        let held: Vec<Share> = (0..3).map(|_| shares.take("Flood@Test ", 3).expect("within the share")).collect();
        assert!(shares.take("flood@test", 3).is_none(), "a fourth check of the same account waits for none");
        let other = shares.take("admin@test", 3).expect("another account has its own share");
        drop(held);
        assert!(shares.take("flood@test", 3).is_some(), "given back once done");
        drop(other);
        assert!(shares.held.lock().expect("lock").len() <= 1, "accounts with nothing waiting are forgotten");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn password_work_runs_at_most_one_per_core_at_a_time() {
        let cores = password_threads();
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let jobs: Vec<_> = (0..4 * cores)
            .map(|_| {
                let (running, most) = (running.clone(), most.clone());
                tokio::spawn(on_password_thread(Lane::Verify, "a", move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                }))
            })
            .collect();
        for job in jobs {
            job.await.expect("task").expect("permit");
        }
        assert!((1..=cores).contains(&most.load(Ordering::SeqCst)), "{} at once", most.load(Ordering::SeqCst));
    }

    /// A full queue answers UNAVAILABLE at once, and work whose caller has
    /// gone is never done.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_queue_is_bounded_and_work_nobody_waits_for_is_skipped() {
        let threads = Arc::new(PasswordThreads::start(1, 2));
        let (open, gate) = std::sync::mpsc::channel::<()>();
        let (started, running) = std::sync::mpsc::channel::<()>();
        // The one thread is busy until the gate opens; one more job waits.
        let busy = tokio::spawn({
            let threads = threads.clone();
            async move {
                threads
                    .run(Lane::Verify, "a", move || {
                        let _ = started.send(());
                        gate.recv().is_ok()
                    })
                    .await
            }
        });
        // Running before the next job is given: given first, that one could run and be
        // gone before the count below ever saw both.
        while running.try_recv().is_err() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let ran = Arc::new(AtomicUsize::new(0));
        let abandoned = tokio::spawn({
            let (threads, ran) = (threads.clone(), ran.clone());
            async move { threads.run(Lane::Verify, "a", move || ran.fetch_add(1, Ordering::SeqCst)).await }
        });
        while threads.verify_waiting.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let refused = threads.run(Lane::Verify, "a", || ()).await.expect_err("a third job finds the queue full");
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
        // The waiting job's caller goes away before its turn.
        abandoned.abort();
        assert!(abandoned.await.is_err_and(|e| e.is_cancelled()));
        open.send(()).expect("open the gate");
        assert!(busy.await.expect("task").expect("ran"));
        while threads.verify_waiting.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(ran.load(Ordering::SeqCst), 0, "work whose caller had gone was done");
        // Room again.
        assert_eq!(threads.run(Lane::Verify, "a", || 7).await.expect("room again"), 7);
    }

    /// Checks go before hashes given earlier, and a full hash lane leaves
    /// the check lane open.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checks_go_first_and_hashes_fill_only_their_own_lane() {
        let threads = Arc::new(PasswordThreads::start(1, 4));
        let (open, gate) = std::sync::mpsc::channel::<()>();
        let busy = tokio::spawn({
            let threads = threads.clone();
            async move { threads.run(Lane::Verify, "a", move || gate.recv().is_ok()).await }
        });
        while threads.verify_waiting.load(Ordering::SeqCst) < 1 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let job = |lane: Lane, name: &'static str| {
            let (threads, order) = (threads.clone(), order.clone());
            tokio::spawn(async move { threads.run(lane, "", move || order.lock().expect("order").push(name)).await })
        };
        // One after the other into the queue: two tasks spawned together may
        // enqueue in either order.
        let queued = |n: usize| {
            let threads = threads.clone();
            async move {
                while threads.queues.0.lock().expect("queues").hash.len() < n {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
        };
        let first = job(Lane::Hash, "hash 1");
        queued(1).await;
        let hashes = [first, job(Lane::Hash, "hash 2")];
        queued(2).await;
        let refused = threads.run(Lane::Hash, "", || ()).await.expect_err("the hash lane (2 of 4) is full");
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        let check = job(Lane::Verify, "check");
        while threads.verify_waiting.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        open.send(()).expect("open the gate");
        assert!(busy.await.expect("task").expect("ran"));
        check.await.expect("task").expect("ran");
        for hash in hashes {
            hash.await.expect("task").expect("ran");
        }
        assert_eq!(*order.lock().expect("order"), ["check", "hash 1", "hash 2"]);
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let hash = hash_password("correct horse".to_owned()).await.expect("hash");
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(verify_password("a@test", "correct horse".to_owned(), hash.clone()).await.expect("verify"));
        assert!(!verify_password("a@test", "wrong horse".to_owned(), hash).await.expect("verify"));
        let malformed = verify_password("a@test", "correct horse".to_owned(), "not a hash".to_owned()).await;
        assert!(malformed.is_err(), "{malformed:?}");
    }

    /// Hashes stored before the memory was kept per thread came from the
    /// crate's own hasher: they still verify, and the crate's verifier
    /// accepts what is stored now, so the two formats are one.
    #[test]
    fn hashes_are_those_of_the_crates_own_hasher() {
        let crate_hash = Argon2::default()
            .hash_password(b"correct horse", &SaltString::generate(&mut OsRng))
            .expect("crate hash")
            .to_string();
        assert_eq!(verify(b"correct horse", &crate_hash), Ok(true));
        assert_eq!(verify(b"wrong horse", &crate_hash), Ok(false));
        let ours = hash(b"correct horse").expect("hash");
        let parsed = PasswordHash::new(&ours).expect("a PHC string");
        assert!(Argon2::default().verify_password(b"correct horse", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"wrong horse", &parsed).is_err());
    }
}
