//! Password verification: bcrypt on its own threads, bounded, remembered and coalesced.
//!
//! bcrypt runs on its own threads at a lower `nice`, under a concurrency bound and a bounded
//! queue whose every place is given back when its request ends, however it ends; a check whose
//! client left before it started does not run. A verified (user, password, hash) triple is
//! remembered under a keyed hash, so the next request with it costs one HMAC and one cache
//! lookup. Because the stored hash is part of the key, a password change forgets the old entry
//! by itself, and an entry in use does not expire. Requests that arrive with the same
//! (username, password, hash) while its check runs wait for that check instead of running bcrypt
//! again, for unknown usernames too (so that coalescing cannot tell which names exist). The
//! failure budgets around a check are [`crate::auth`]'s.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::{Semaphore, watch};

use crate::{
    error::Reject,
    users::{Digest32, User},
};

/// What a password check is to the request that needs it ([`Verifier::turn`]).
pub(crate) enum Turn<'a> {
    /// No check of these credentials is running: this request runs it.
    Lead(Flight<'a>),
    /// One is running: this request waits for its answer ([`Verifier::answer`]).
    Wait(watch::Receiver<Option<bool>>),
}

/// The check one request runs for others with the same credentials; leaving the map when it
/// ends, however it ends (a dropped sender tells the waiters to take their own turn).
pub(crate) struct Flight<'a> {
    verifier: &'a Verifier,
    key: Digest32,
    done: watch::Sender<Option<bool>>,
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        self.verifier
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.key);
    }
}

/// How many checks may wait per bcrypt thread before more are refused with 429.
const WAITING_PER_THREAD: usize = 8;

/// Longest a check waits for a bcrypt thread before it is refused with 429 (`Retry-After: 1`).
pub const QUEUE_WAIT: Duration = Duration::from_secs(5);

/// The share of each CPU that bcrypt may take at normal priority, on average: 5%. Checks
/// within it run on threads at the process's own priority, so a login is answered in time while
/// other processes keep every CPU busy; checks beyond it (a flood) run on threads at `nice` 19,
/// so they take what the proxy and everything else leave over and cannot slow the proxy down.
pub const BCRYPT_SHARE_PERCENT: u32 = 5;

/// CPU time at normal priority that bcrypt may take ahead of its share (a burst of logins).
pub const BCRYPT_BURST: Duration = Duration::from_secs(2);

/// The `nice` of the threads that run checks beyond the share (Linux).
pub const OVERFLOW_NICE: i32 = 19;

/// The CPU time bcrypt may still take at normal priority: a token bucket filled at
/// [`BCRYPT_SHARE_PERCENT`] of each CPU, holding at most [`BCRYPT_BURST`].
struct Budget {
    /// CPU-seconds per second.
    rate: f64,
    state: Mutex<(f64, std::time::Instant)>,
}

impl Budget {
    fn new(cpus: usize) -> Self {
        #[expect(clippy::cast_precision_loss, reason = "a CPU count")]
        let rate = cpus as f64 * f64::from(BCRYPT_SHARE_PERCENT) / 100.0;
        Self {
            rate,
            state: Mutex::new((BCRYPT_BURST.as_secs_f64(), std::time::Instant::now())),
        }
    }

    /// The credit left now (negative: in debt).
    fn credit(&self, spent: Duration) -> f64 {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        let (credit, at) = &mut *state;
        *credit = (*credit + now.duration_since(*at).as_secs_f64() * self.rate)
            .min(BCRYPT_BURST.as_secs_f64())
            - spent.as_secs_f64();
        *at = now;
        *credit
    }
}

/// bcrypt verification: bounded, off the async workers, remembered.
///
/// A check takes a place in the queue (`places`: `concurrency` running plus
/// [`WAITING_PER_THREAD`] waiting per thread; none free is an immediate 429), then a permit to
/// hand its job to a bcrypt thread (`permits`, `concurrency` of them, waited for at most
/// [`QUEUE_WAIT`]). Both are owned permits that travel with the job and are given back when it
/// ends or is dropped, and when the waiting request is dropped: no count is kept by hand. The
/// channels to the threads are bounded by the same `concurrency`. A check goes to a thread at
/// normal priority while the [`Budget`] has credit, else to one at [`OVERFLOW_NICE`].
pub struct Verifier {
    places: Arc<Semaphore>,
    place_count: usize,
    permits: Arc<Semaphore>,
    budget: Arc<Budget>,
    /// The work queues of the threads at normal priority and of those at [`OVERFLOW_NICE`].
    normal: std::sync::mpsc::SyncSender<Job>,
    overflow: std::sync::mpsc::SyncSender<Job>,
    cache_key: [u8; 32],
    /// Verified (username, password, hash) keys: forgotten after `ttl` unused, at most
    /// `capacity` of them (moka: a concurrent cache whose admission and eviction keep the
    /// frequently used entries, and whose reads take no lock shared by all requests).
    cache: moka::sync::Cache<Digest32, ()>,
    /// Checks running now, by cache key; the receiver gets the result.
    in_flight: Mutex<HashMap<Digest32, watch::Receiver<Option<bool>>>>,
    /// bcrypt checks run (for metrics).
    pub checks: Arc<std::sync::atomic::AtomicU64>,
    /// Verifications answered from memory (for metrics).
    pub cache_hits: std::sync::atomic::AtomicU64,
}

impl Verifier {
    /// A verifier running at most `concurrency` bcrypt checks at once (and taking at normal
    /// priority [`BCRYPT_SHARE_PERCENT`] of `concurrency` CPUs), remembering up to
    /// `capacity` verified pairs for `ttl` after their last use.
    #[must_use]
    pub fn new(concurrency: usize, ttl: Duration, capacity: usize) -> Self {
        Self {
            places: Arc::new(Semaphore::new(concurrency * (1 + WAITING_PER_THREAD))),
            place_count: concurrency * (1 + WAITING_PER_THREAD),
            permits: Arc::new(Semaphore::new(concurrency)),
            budget: Arc::new(Budget::new(concurrency)),
            normal: bcrypt_threads("bcrypt", concurrency, None),
            overflow: bcrypt_threads("bcrypt-overflow", concurrency, Some(OVERFLOW_NICE)),
            cache_key: rand::random(),
            cache: moka::sync::Cache::builder()
                .max_capacity(capacity as u64)
                .time_to_idle(ttl)
                .build(),
            in_flight: Mutex::new(HashMap::new()),
            checks: Arc::default(),
            cache_hits: 0.into(),
        }
    }

    fn cache_key(&self, username: &str, password: &str, hash: &str) -> Digest32 {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.cache_key).expect("HMAC takes any key length");
        for part in [username, password, hash] {
            mac.update(&(part.len() as u64).to_le_bytes());
            mac.update(part.as_bytes());
        }
        mac.finalize().into_bytes().into()
    }

    /// Whether `password` was verified for this user and hash and used within the TTL: no
    /// bcrypt. A use keeps it (the stored hash is part of the key, so a password change still
    /// forgets it): a client that keeps sending it is never re-checked under load.
    #[must_use]
    pub fn remembered(&self, user: &User, password: &str) -> bool {
        let key = self.cache_key(&user.username, password, &user.hashed_password);
        if self.cache.get(&key).is_none() {
            return false;
        }
        self.cache_hits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        true
    }

    /// Whose turn it is to check these credentials: this request's, or a running check's that
    /// it waits for (same username, password and stored hash; for an unknown username, the
    /// name asked for, so that coalescing cannot tell which names exist).
    #[must_use]
    pub(crate) fn turn(
        &self,
        username: &str,
        user: Option<&Arc<User>>,
        password: &str,
    ) -> Turn<'_> {
        // The key `remembered` looks up for a known user; for an unknown name, the name asked for
        // and no hash (no user's key has an empty hash).
        let key = match user {
            Some(user) => self.cache_key(&user.username, password, &user.hashed_password),
            None => self.cache_key(username, password, ""),
        };
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(running) = in_flight.get(&key) {
            return Turn::Wait(running.clone());
        }
        let (done, receiver) = watch::channel(None);
        in_flight.insert(key, receiver);
        Turn::Lead(Flight {
            verifier: self,
            key,
            done,
        })
    }

    /// Runs the check this request leads: bcrypt for `password` against the user's hash, or,
    /// when there is no such user, bcrypt of `password` at the same cost (the same work, so
    /// timing does not tell which usernames exist); then tells the requests waiting for it.
    ///
    /// # Errors
    /// 429 when the queue is full or no bcrypt thread took the check within [`QUEUE_WAIT`]:
    /// a flood of wrong passwords is refused instead of piling up.
    pub(crate) async fn lead(
        &self,
        flight: Flight<'_>,
        user: Option<&Arc<User>>,
        password: &str,
        cost: u32,
    ) -> Result<bool, Reject> {
        let target = match user {
            Some(user) => Target::Hash(user.hashed_password.as_str().into()),
            None => Target::Cost(cost.clamp(4, 31)),
        };
        let result = self.check(target, password, flight.key).await;
        if let Ok(ok) = result {
            flight.done.send_replace(Some(ok));
        }
        result
    }

    /// The answer of the check `running` waits for; `None` when that check was abandoned (its
    /// request went away or was refused) and the waiter must take its own turn.
    pub(crate) async fn answer(running: &mut watch::Receiver<Option<bool>>) -> Option<bool> {
        running
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|answer| *answer)
    }

    /// [`Verifier::turn`], then [`Verifier::lead`] or [`Verifier::answer`], without the failure
    /// budgets that [`crate::auth::Authenticator::password`] keeps around them: whether `password` is the
    /// user's (never for an unknown user).
    ///
    /// # Errors
    /// As [`Verifier::lead`].
    #[cfg(test)]
    async fn verify(
        &self,
        username: &str,
        user: Option<&Arc<User>>,
        password: &str,
        cost: u32,
    ) -> Result<bool, Reject> {
        loop {
            match self.turn(username, user, password) {
                Turn::Lead(flight) => return self.lead(flight, user, password, cost).await,
                Turn::Wait(mut running) => {
                    if let Some(ok) = Self::answer(&mut running).await {
                        return Ok(ok && user.is_some());
                    }
                }
            }
        }
    }

    /// bcrypt itself, in the queue and under the concurrency bound. The job remembers a
    /// verified pair itself, so a check that ran for a client that left still spares its
    /// retry the work.
    async fn check(&self, target: Target, password: &str, key: Digest32) -> Result<bool, Reject> {
        let busy = || Reject::TooManyRequests {
            scope: "bcrypt queue",
            retry_after: Duration::from_secs(1),
        };
        let place = self
            .places
            .clone()
            .try_acquire_owned()
            .map_err(|_| busy())?;
        let permit = tokio::time::timeout(QUEUE_WAIT, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        let (done, answer) = tokio::sync::oneshot::channel();
        let remember = matches!(target, Target::Hash(_)).then(|| (self.cache.clone(), key));
        let within_share = self.budget.credit(Duration::ZERO) > 0.0;
        let job = Job {
            target,
            password: password.to_owned(),
            remember,
            done,
            checks: self.checks.clone(),
            budget: within_share.then(|| self.budget.clone()),
            _slot: (place, permit),
        };
        // Never full: a job is sent only with one of `concurrency` permits, and each channel
        // holds as many.
        let queue = if within_share {
            &self.normal
        } else {
            &self.overflow
        };
        queue.try_send(job).map_err(|_| busy())?;
        Ok(answer.await.unwrap_or(false))
    }

    /// Checks running now.
    #[cfg(test)]
    fn checks_in_flight(&self) -> usize {
        self.in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Places taken in the bcrypt queue now (checks waiting or running).
    #[must_use]
    pub fn queued(&self) -> usize {
        self.place_count - self.places.available_permits()
    }
}

/// What a bcrypt job computes.
enum Target {
    /// Verify against this stored hash.
    Hash(Arc<str>),
    /// No such user: hash the password at this cost, which costs what a verification costs.
    Cost(u32),
}

/// A bcrypt check for a bcrypt thread, holding its queue place and its permit until it ends.
struct Job {
    target: Target,
    password: String,
    remember: Option<(moka::sync::Cache<Digest32, ()>, Digest32)>,
    done: tokio::sync::oneshot::Sender<bool>,
    checks: Arc<std::sync::atomic::AtomicU64>,
    /// The budget a check at normal priority is charged to.
    budget: Option<Arc<Budget>>,
    _slot: (
        tokio::sync::OwnedSemaphorePermit,
        tokio::sync::OwnedSemaphorePermit,
    ),
}

impl Job {
    fn run(self) {
        if self.done.is_closed() {
            return; // its client left before it started: nobody wants the answer
        }
        self.checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let started = thread_cpu_time();
        // bcrypt reads only 72 bytes: a longer password would match every password that shares
        // its first 72 bytes, so it is refused instead (at once, for known and unknown users).
        let ok = match &self.target {
            Target::Hash(hash) => {
                bcrypt::non_truncating_verify(self.password.as_bytes(), hash).unwrap_or(false)
            }
            Target::Cost(cost) => {
                let _ = bcrypt::non_truncating_hash(self.password.as_bytes(), *cost);
                false
            }
        };
        if let Some(budget) = &self.budget {
            budget.credit(thread_cpu_time().saturating_sub(started));
        }
        if ok && let Some((cache, key)) = &self.remember {
            cache.insert(*key, ());
        }
        let _ = self.done.send(ok);
    }
}

/// CPU time of the calling thread (Linux); elsewhere, time since the process's first call,
/// an upper bound of it.
fn thread_cpu_time() -> Duration {
    #[cfg(target_os = "linux")]
    {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        Duration::new(
            u64::try_from(t.tv_sec).unwrap_or(0),
            u32::try_from(t.tv_nsec).unwrap_or(0),
        )
    }
    #[cfg(not(target_os = "linux"))]
    {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        START.get_or_init(std::time::Instant::now).elapsed()
    }
}

/// Starts `count` bcrypt threads, at `nice` when given; they take jobs from a channel that
/// holds `count` of them.
fn bcrypt_threads(name: &str, count: usize, nice: Option<i32>) -> std::sync::mpsc::SyncSender<Job> {
    let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(count);
    let queue = Arc::new(Mutex::new(queue));
    for index in 0..count {
        let queue = queue.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("{name}-{index}"))
            .spawn(move || {
                if let Some(nice) = nice {
                    lower_priority(nice);
                }
                loop {
                    let job = queue
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .recv();
                    match job {
                        Ok(job) => job.run(),
                        Err(_) => return,
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a bcrypt thread");
        }
    }
    jobs
}

/// Sets this thread's `nice` (on Linux, `setpriority(PRIO_PROCESS, 0)` names the calling
/// thread). Normal scheduling, not `SCHED_IDLE`, and only for checks beyond the share: an
/// idle-priority thread gets no CPU at all while other processes keep the CPUs busy.
fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(None, nice) {
        tracing::warn!(error = %e, "bcrypt thread keeps the process's priority");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;
    use crate::users::UserStore;

    #[tokio::test]
    async fn verifier_remembers_only_verified_pairs_and_forgets_on_hash_change() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let text = format!("- username: a\n  hashed_password: '{hash}'\n  api_key: k\n");
        let store = UserStore::parse(std::path::Path::new("u.yml"), text.as_bytes()).unwrap();
        let user = store.by_name("a").unwrap();
        let verifier = Verifier::new(1, Duration::from_secs(60), 10);
        assert!(!verifier.remembered(user, "pw"));
        assert!(!verifier.verify("a", Some(user), "wrong", 4).await.unwrap());
        assert!(!verifier.remembered(user, "wrong"));
        assert!(verifier.verify("a", Some(user), "pw", 4).await.unwrap());
        assert!(verifier.remembered(user, "pw"));
        let rehashed = bcrypt::hash("pw", 4).unwrap();
        let text = format!("- username: a\n  hashed_password: '{rehashed}'\n  api_key: k\n");
        let store = UserStore::parse(std::path::Path::new("u.yml"), text.as_bytes()).unwrap();
        assert!(
            !verifier.remembered(store.by_name("a").unwrap(), "pw"),
            "new hash, new key"
        );
        assert!(
            !verifier.verify("nobody", None, "pw", 4).await.unwrap(),
            "unknown user never verifies"
        );
    }

    fn store_of(users: &[(&str, &str)]) -> UserStore {
        let text = users
            .iter()
            .fold(String::new(), |mut text, (name, password)| {
                let hash = bcrypt::hash(password, 4).unwrap();
                let _ = writeln!(
                    text,
                    "- username: {name}\n  hashed_password: '{hash}'\n  api_key: key-{name}"
                );
                text
            });
        UserStore::parse(std::path::Path::new("u.yml"), text.as_bytes()).unwrap()
    }

    #[tokio::test]
    async fn concurrent_checks_of_the_same_credentials_run_bcrypt_once() {
        use std::sync::atomic::Ordering::Relaxed;
        let store = store_of(&[("a", "pw"), ("b", "pw")]);
        let (a, b) = (store.by_name("a"), store.by_name("b"));
        // Each case: concurrent (username, user, password) checks, how many run bcrypt, and
        // what each answers.
        let cases: Vec<(&str, Vec<(&str, Option<&Arc<User>>, &str)>, u64, bool)> = vec![
            (
                "right password, 20 at once",
                vec![("a", a, "pw"); 20],
                1,
                true,
            ),
            (
                "wrong password, 20 at once",
                vec![("a", a, "nope"); 20],
                1,
                false,
            ),
            (
                "unknown name, 20 at once",
                vec![("zed", None, "pw"); 20],
                1,
                false,
            ),
            (
                "two users, same password",
                vec![("a", a, "pw2"), ("b", b, "pw2")],
                2,
                false,
            ),
            (
                "two unknown names",
                vec![("x", None, "pw"), ("y", None, "pw")],
                2,
                false,
            ),
            (
                "known and unknown name",
                vec![("b", b, "x"), ("c", None, "x")],
                2,
                false,
            ),
        ];
        for (case, calls, runs, answer) in cases {
            let verifier = Verifier::new(2, Duration::from_secs(60), 100);
            let results = futures_join(
                &verifier,
                calls
                    .iter()
                    .map(|(name, user, password)| verifier.verify(name, *user, password, 4)),
            )
            .await;
            assert_eq!(verifier.checks.load(Relaxed), runs, "{case}: bcrypt runs");
            assert!(
                results.iter().all(|r| *r.as_ref().unwrap() == answer),
                "{case}: {results:?}"
            );
            assert_eq!(
                verifier.checks_in_flight(),
                0,
                "{case}: nothing left running"
            );
        }
    }

    /// Takes every bcrypt thread of `verifier`, so that no check can finish until the returned
    /// permit is dropped (a cost-4 check can otherwise end before its request is polled again).
    fn hold_threads(verifier: &Verifier) -> tokio::sync::OwnedSemaphorePermit {
        let all = u32::try_from(verifier.permits.available_permits()).unwrap();
        verifier
            .permits
            .clone()
            .try_acquire_many_owned(all)
            .unwrap()
    }

    /// Polls every future to completion on this task, together. Each is polled once while the
    /// bcrypt threads are held, so that every one has asked before any check can end.
    async fn futures_join<F: std::future::Future>(
        verifier: &Verifier,
        futures: impl Iterator<Item = F>,
    ) -> Vec<F::Output> {
        let mut futures: Vec<_> = futures.map(Box::pin).map(Some).collect();
        let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
        let mut held = Some(hold_threads(verifier));
        std::future::poll_fn(|cx| {
            for (slot, output) in futures.iter_mut().zip(outputs.iter_mut()) {
                if let Some(future) = slot
                    && let std::task::Poll::Ready(out) = future.as_mut().poll(cx)
                {
                    *output = Some(out);
                    *slot = None;
                }
            }
            // Every future has asked: let the checks run (which wakes the ones that lead).
            drop(held.take());
            if futures.iter().all(Option::is_none) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
        outputs.into_iter().map(Option::unwrap).collect()
    }

    #[tokio::test]
    async fn a_waiter_runs_its_own_check_when_the_running_one_is_abandoned() {
        use std::sync::atomic::Ordering::Relaxed;
        let store = store_of(&[("a", "pw")]);
        let a = store.by_name("a");
        let verifier = Verifier::new(1, Duration::from_secs(60), 100);
        // The leader waits for the one bcrypt thread, so that it is still running when polled.
        let held = hold_threads(&verifier);
        let mut leader = Box::pin(verifier.verify("a", a, "pw", 4));
        let mut waiter = Box::pin(verifier.verify("a", a, "pw", 4));
        std::future::poll_fn(|cx| {
            assert!(leader.as_mut().poll(cx).is_pending());
            assert!(waiter.as_mut().poll(cx).is_pending());
            std::task::Poll::Ready(())
        })
        .await;
        assert_eq!(verifier.checks_in_flight(), 1, "one check, one waiter");
        drop(leader); // its client went away
        drop(held);
        assert_eq!(verifier.checks_in_flight(), 0);
        assert!(waiter.await.unwrap(), "the waiter got its own answer");
        assert!(verifier.checks.load(Relaxed) >= 1);
        assert!(verifier.remembered(a.unwrap(), "pw"));
    }

    #[tokio::test]
    async fn a_remembered_password_in_use_does_not_expire() {
        let store = store_of(&[("a", "pw")]);
        let a = store.by_name("a").unwrap();
        // The cache keeps its own clock (moka takes no injected one): the gaps below are far from
        // the TTL either way, so that a busy host cannot turn a short gap into a long one.
        let verifier = Verifier::new(1, Duration::from_millis(1000), 10);
        assert!(verifier.verify("a", Some(a), "pw", 4).await.unwrap());
        // Used every 100 ms for 3 s: three TTLs, never re-checked.
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(verifier.remembered(a, "pw"), "kept while in use");
        }
        // Unused for twice the TTL: forgotten.
        tokio::time::sleep(Duration::from_millis(2000)).await;
        assert!(!verifier.remembered(a, "pw"), "forgotten once unused");
    }

    #[tokio::test]
    async fn verifier_memory_is_bounded() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let text = (0..5).fold(String::new(), |mut text, i| {
            let _ = writeln!(
                text,
                "- username: u{i}\n  hashed_password: '{hash}'\n  api_key: k{i}"
            );
            text
        });
        let store = UserStore::parse(std::path::Path::new("u.yml"), text.as_bytes()).unwrap();
        let verifier = Verifier::new(2, Duration::from_secs(60), 3);
        for i in 0..5 {
            assert!(
                verifier
                    .verify(&format!("u{i}"), store.by_name(&format!("u{i}")), "pw", 4)
                    .await
                    .unwrap()
            );
        }
        verifier.cache.run_pending_tasks();
        assert!(verifier.cache.entry_count() <= 3);
    }
}
