//! Budgets of failed authentications per client address and per username.
//!
//! A budget is a fixed window: `limit` failures within `window` from its first failure. Past
//! it, the answer is 429 with `Retry-After` before any bcrypt work is spent.
//!
//! What is kept, whatever clients send: per budget a 16-byte key (the address, or an HMAC of
//! the username under a key drawn at start, so a name of any length costs the same), when its
//! window started and how many failures it holds; at most [`MAX_TRACKED`] budgets per kind, in
//! [`SHARDS`] shards of [`PER_SHARD`]. A budget with no failures left (all given back) is
//! dropped. When a shard is full, a new budget takes the place of expired ones, else of the
//! unspent budget that started first; a spent budget is never dropped before its window ends,
//! so churn (distinct usernames or addresses) cannot give an attacker a fresh budget. In the
//! one case where a shard holds nothing but live spent budgets, newcomers to it are refused
//! until the first of them ends: remembering fails closed.
//!
//! Each shard keeps an atomic count of its spent budgets: a check in a shard without one (the
//! case of almost every request) reads that count and takes no lock, and a check never takes a
//! lock shared by all requests.

use std::{
    collections::HashMap,
    hash::BuildHasher,
    net::IpAddr,
    sync::{
        Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{config::RateLimit, error::Reject};

/// Shards per kind of budget (addresses, usernames).
pub const SHARDS: usize = 64;
/// Budgets kept per shard: half of what a hash table of 2048 slots holds, so that it never
/// grows past 2048 slots however many budgets come and go (at 32 bytes a budget, 66 KiB).
pub const PER_SHARD: usize = 896;
/// Budgets kept per kind at most (57 344): 4.2 MiB per kind.
pub const MAX_TRACKED: usize = SHARDS * PER_SHARD;

/// A budget's key: an IPv6 (or IPv4-mapped) address, or a username's keyed digest.
type Key = [u8; 16];

#[derive(Clone, Copy, Debug)]
struct Window {
    /// Milliseconds since the limiter started.
    start: u64,
    failures: u32,
}

/// One shard's budgets; `spent` counts those with `failures >= limit` (live or not).
#[derive(Default)]
struct Table {
    windows: HashMap<Key, Window>,
    spent: usize,
    /// When expired budgets were last dropped.
    swept: u64,
}

/// The rules a shard applies (its kind's).
#[derive(Clone, Copy)]
struct Rules {
    limit: u32,
    window: u64,
    cap: usize,
}

impl Rules {
    fn live(self, w: &Window, now: u64) -> bool {
        w.start + self.window > now
    }

    fn is_spent(self, w: &Window) -> bool {
        w.failures >= self.limit
    }

    /// Milliseconds until a live spent window ends.
    fn left(self, w: &Window, now: u64) -> u64 {
        (w.start + self.window).saturating_sub(now)
    }
}

impl Table {
    /// How long `key` is refused, if it is: its own budget is spent, or it is new to a shard
    /// holding nothing but live spent budgets.
    fn refused(&self, key: &Key, now: u64, rules: Rules) -> Option<u64> {
        match self.windows.get(key) {
            Some(w) => (rules.is_spent(w) && rules.live(w, now)).then(|| rules.left(w, now)),
            None => self.closed(now, rules),
        }
    }

    /// Whether the table is full of live spent budgets, and for how long.
    fn closed(&self, now: u64, rules: Rules) -> Option<u64> {
        if self.windows.len() < rules.cap || self.spent < self.windows.len() {
            return None;
        }
        let mut soonest = u64::MAX;
        for w in self.windows.values() {
            if !rules.live(w, now) {
                return None;
            }
            soonest = soonest.min(rules.left(w, now));
        }
        Some(soonest)
    }

    /// Makes room for one more budget: drops the expired ones, else the unspent ones that
    /// started first (an eighth of the shard at once, so that a flood of new keys scans the
    /// shard once per eighth, not once per key). `false` when every budget is spent and live.
    fn make_room(&mut self, now: u64, rules: Rules) -> bool {
        if self.windows.len() < rules.cap {
            return true;
        }
        self.sweep(now, rules);
        if self.windows.len() < rules.cap {
            return true;
        }
        let mut unspent: Vec<(u64, Key)> = self
            .windows
            .iter()
            .filter(|(_, w)| !rules.is_spent(w))
            .map(|(key, w)| (w.start, *key))
            .collect();
        let batch = (rules.cap / 8).clamp(1, unspent.len().max(1));
        if unspent.len() > batch {
            unspent.select_nth_unstable(batch - 1);
        }
        for (_, key) in unspent.iter().take(batch) {
            self.windows.remove(key);
        }
        !unspent.is_empty()
    }

    /// Drops the expired budgets.
    fn sweep(&mut self, now: u64, rules: Rules) {
        let mut dropped_spent = 0;
        self.windows.retain(|_, w| {
            let keep = rules.live(w, now);
            if !keep && rules.is_spent(w) {
                dropped_spent += 1;
            }
            keep
        });
        self.spent -= dropped_spent;
        self.swept = now;
    }

    /// Counts one failure; the start of the window it was counted in, or `None` when there is
    /// no room for a new budget.
    fn add(&mut self, key: Key, now: u64, rules: Rules) -> Option<u64> {
        if !self.windows.contains_key(&key) && !self.make_room(now, rules) {
            return None;
        }
        let w = self.windows.entry(key).or_insert(Window {
            start: now,
            failures: 0,
        });
        let was = rules.is_spent(w);
        if !rules.live(w, now) {
            *w = Window {
                start: now,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
        let is = rules.is_spent(w);
        let start = w.start;
        self.recount(was, is);
        Some(start)
    }

    /// Gives back one failure counted in the window that started at `start`, if it is still
    /// the current one; a budget left with no failures is dropped.
    fn refund(&mut self, key: &Key, start: u64, now: u64, rules: Rules) {
        let Some(w) = self.windows.get_mut(key) else {
            return;
        };
        if w.start != start || !rules.live(w, now) {
            return;
        }
        let was = rules.is_spent(w);
        w.failures = w.failures.saturating_sub(1);
        let is = rules.is_spent(w);
        if w.failures == 0 {
            self.windows.remove(key);
        }
        self.recount(was, is);
    }

    fn recount(&mut self, was: bool, is: bool) {
        match (was, is) {
            (false, true) => self.spent += 1,
            (true, false) => self.spent -= 1,
            _ => {}
        }
    }
}

struct Shard {
    /// `table.spent`, readable without the lock.
    spent: AtomicUsize,
    table: Mutex<Table>,
}

/// One kind of budget (addresses or usernames).
struct Budgets {
    rules: Rules,
    shards: Box<[Shard]>,
    hasher: std::hash::RandomState,
}

impl Budgets {
    fn new(limit: u32, window: Duration) -> Self {
        Self {
            rules: Rules {
                limit,
                window: u64::try_from(window.as_millis()).unwrap_or(u64::MAX / 2),
                cap: PER_SHARD,
            },
            shards: (0..SHARDS)
                .map(|_| Shard {
                    spent: AtomicUsize::new(0),
                    table: Mutex::default(),
                })
                .collect(),
            hasher: std::hash::RandomState::new(),
        }
    }

    fn shard(&self, key: &Key) -> &Shard {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "the hash only picks a shard"
        )]
        let index = self.hasher.hash_one(key) as usize % SHARDS;
        &self.shards[index]
    }

    /// The shard's table, locked; on return, the shard's atomic count is brought up to date.
    fn with<T>(&self, key: &Key, f: impl FnOnce(&mut Table, Rules) -> T) -> T {
        let shard = self.shard(key);
        let mut table = lock(&shard.table);
        let out = f(&mut table, self.rules);
        shard.spent.store(table.spent, Ordering::Release);
        out
    }

    /// How long `key` is refused; no lock when its shard holds no spent budget. Under the
    /// lock, expired budgets are dropped once per window, so that a shard whose spent budgets
    /// all ended goes back to checks without a lock.
    fn refused(&self, key: &Key, now: impl FnOnce() -> u64) -> Option<u64> {
        let shard = self.shard(key);
        if shard.spent.load(Ordering::Acquire) == 0 {
            return None;
        }
        let now = now();
        let mut table = lock(&shard.table);
        if now >= table.swept + self.rules.window {
            table.sweep(now, self.rules);
            shard.spent.store(table.spent, Ordering::Release);
        }
        table.refused(key, now, self.rules)
    }

    /// Budgets kept now (all shards).
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| lock(&shard.table).windows.len())
            .sum()
    }
}

fn lock(table: &Mutex<Table>) -> MutexGuard<'_, Table> {
    table.lock().unwrap_or_else(PoisonError::into_inner)
}

fn address_key(address: IpAddr) -> Key {
    match address {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The two budgets and the refusal counter.
pub struct Limiter {
    epoch: Instant,
    addresses: Budgets,
    usernames: Budgets,
    /// The key of the usernames' digests, drawn at start.
    username_key: [u8; 32],
    /// Requests refused with 429 (for metrics).
    pub refusals: AtomicU64,
}

/// A password attempt counted as a failure in both budgets before its check runs
/// ([`Limiter::attempt`]). Dropped without [`Attempt::failed`] (the password was right, the
/// check could not run, or its client left), it gives both places back.
#[must_use = "dropping an attempt gives its failure back"]
pub struct Attempt<'a> {
    limiter: &'a Limiter,
    address: (Key, u64),
    username: Option<(Key, u64)>,
    failed: bool,
}

impl std::fmt::Debug for Attempt<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attempt")
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Attempt<'_> {
    /// The password was wrong: the failure stays counted.
    pub fn failed(mut self) {
        self.failed = true;
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if self.failed {
            return;
        }
        let now = self.limiter.now(Instant::now());
        let (key, start) = self.address;
        self.limiter
            .addresses
            .with(&key, |table, rules| table.refund(&key, start, now, rules));
        if let Some((key, start)) = self.username {
            self.limiter
                .usernames
                .with(&key, |table, rules| table.refund(&key, start, now, rules));
        }
    }
}

impl Limiter {
    /// Budgets as configured.
    #[must_use]
    pub fn new(config: &RateLimit) -> Self {
        Self {
            epoch: Instant::now(),
            addresses: Budgets::new(config.failures_per_address, config.window),
            usernames: Budgets::new(config.failures_per_username, config.window),
            username_key: rand::random(),
            refusals: AtomicU64::new(0),
        }
    }

    fn now(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX / 2)
    }

    /// The fixed-size digest a username's budget is kept under.
    fn username_key(&self, username: &str) -> Key {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.username_key).expect("HMAC takes any key length");
        mac.update(username.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut key = [0; 16];
        key.copy_from_slice(&digest[..16]);
        key
    }

    fn refuse(&self, scope: &'static str, millis: u64) -> Reject {
        self.refusals.fetch_add(1, Ordering::Relaxed);
        Reject::TooManyRequests {
            scope,
            retry_after: Duration::from_millis(millis),
        }
    }

    /// Refuses when the address's or the username's budget is spent. Without failures in the
    /// address's shard (and no username), this reads one atomic and takes no lock.
    ///
    /// # Errors
    /// 429 with the time until the budget has room again.
    pub fn check(&self, address: IpAddr, username: Option<&str>) -> Result<(), Reject> {
        self.check_at(address, username, Instant::now)
    }

    fn check_at(
        &self,
        address: IpAddr,
        username: Option<&str>,
        at: impl Fn() -> Instant,
    ) -> Result<(), Reject> {
        if let Some(wait) = self
            .addresses
            .refused(&address_key(address), || self.now(at()))
        {
            return Err(self.refuse("address", wait));
        }
        if let Some(name) = username
            && let Some(wait) = self
                .usernames
                .refused(&self.username_key(name), || self.now(at()))
        {
            return Err(self.refuse("username", wait));
        }
        Ok(())
    }

    /// A password attempt: refused when a budget is spent, otherwise counted as a failure at
    /// once (under both shards' locks, so that concurrent attempts cannot all pass a check
    /// that only one of them should pass). The [`Attempt`] gives it back unless the password
    /// turns out wrong.
    ///
    /// # Errors
    /// 429 with the time until the budget has room again.
    pub fn attempt(&self, address: IpAddr, username: &str) -> Result<Attempt<'_>, Reject> {
        self.attempt_at(address, username, Instant::now())
    }

    fn attempt_at(
        &self,
        address: IpAddr,
        username: &str,
        at: Instant,
    ) -> Result<Attempt<'_>, Reject> {
        let now = self.now(at);
        let address = address_key(address);
        let username = self.username_key(username);
        // Always the address shard first, then the username shard: no other path holds two.
        let address_shard = self.addresses.shard(&address);
        let username_shard = self.usernames.shard(&username);
        let mut addresses = lock(&address_shard.table);
        let mut usernames = lock(&username_shard.table);
        if let Some(wait) = addresses.refused(&address, now, self.addresses.rules) {
            return Err(self.refuse("address", wait));
        }
        if let Some(wait) = usernames.refused(&username, now, self.usernames.rules) {
            return Err(self.refuse("username", wait));
        }
        let address_start = addresses.add(address, now, self.addresses.rules);
        let username_start = usernames.add(username, now, self.usernames.rules);
        address_shard
            .spent
            .store(addresses.spent, Ordering::Release);
        username_shard
            .spent
            .store(usernames.spent, Ordering::Release);
        // `refused` said there is room (expired or unspent budgets to drop), so both were
        // counted; an address that could not be would have been refused above.
        Ok(Attempt {
            limiter: self,
            address: (address, address_start.unwrap_or(now)),
            username: username_start.map(|start| (username, start)),
            failed: false,
        })
    }

    /// Counts one failed authentication.
    pub fn fail(&self, address: IpAddr, username: Option<&str>) {
        self.fail_at(address, username, Instant::now());
    }

    fn fail_at(&self, address: IpAddr, username: Option<&str>, at: Instant) {
        let now = self.now(at);
        let key = address_key(address);
        self.addresses
            .with(&key, |table, rules| table.add(key, now, rules));
        if let Some(name) = username {
            let key = self.username_key(name);
            self.usernames
                .with(&key, |table, rules| table.add(key, now, rules));
        }
    }

    /// Budgets kept now: (addresses, usernames).
    #[must_use]
    pub fn tracked(&self) -> (usize, usize) {
        (self.addresses.len(), self.usernames.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_address: u32, per_username: u32) -> Limiter {
        Limiter::new(&RateLimit {
            failures_per_address: per_address,
            failures_per_username: per_username,
            window: Duration::from_secs(60),
            trusted_proxies: vec![],
        })
    }

    #[test]
    fn budgets_refuse_after_limit_and_recover_after_window() {
        let limiter = limiter(100, 3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at(a, Some("alice"), || t0).is_ok());
            limiter.fail_at(a, Some("alice"), t0);
        }
        let refused = limiter.check_at(b, Some("alice"), || t0).unwrap_err();
        assert_eq!(refused.status(), 429);
        assert!(
            limiter.check_at(b, Some("bob"), || t0).is_ok(),
            "other usernames unaffected"
        );
        assert!(
            limiter.check_at(a, None, || t0).is_ok(),
            "address budget not spent"
        );
        let later = t0 + Duration::from_secs(61);
        assert!(
            limiter.check_at(b, Some("alice"), || later).is_ok(),
            "window over"
        );
        assert_eq!(limiter.refusals.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn attempts_count_before_they_finish() {
        let limiter = limiter(100, 3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        // Three attempts in flight at once spend the budget: the fourth is refused although
        // none has finished yet.
        let mut running: Vec<_> = (0..3)
            .map(|_| limiter.attempt(a, "alice").unwrap())
            .collect();
        assert_eq!(limiter.attempt(a, "alice").unwrap_err().status(), 429);
        // One of them succeeds: its place is given back.
        drop(running.pop());
        let fourth = limiter.attempt(a, "alice").unwrap();
        fourth.failed();
        assert!(
            limiter.attempt(a, "bob").is_ok(),
            "other usernames unaffected"
        );
        for attempt in running {
            attempt.failed();
        }
        assert_eq!(limiter.attempt(a, "alice").unwrap_err().status(), 429);
    }

    #[test]
    fn address_budget_covers_every_username() {
        let limiter = limiter(2, 100);
        let a: IpAddr = "::1".parse().unwrap();
        limiter.fail_at(a, Some("x"), Instant::now());
        limiter.fail_at(a, Some("y"), Instant::now());
        match limiter.check(a, Some("z")) {
            Err(Reject::TooManyRequests { scope, retry_after }) => {
                assert_eq!(scope, "address");
                assert!(retry_after <= Duration::from_secs(60));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn given_back_attempts_leave_nothing_behind() {
        let limiter = limiter(100, 10);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for i in 0..1000 {
            drop(limiter.attempt(a, &format!("user-{i}")).unwrap());
        }
        assert_eq!(limiter.tracked(), (0, 0), "right passwords keep no budget");
        // A refund after the window ended does not touch the next window.
        let t0 = Instant::now();
        let old = limiter.attempt_at(a, "alice", t0).unwrap();
        let later = t0 + Duration::from_secs(61);
        limiter.fail_at(a, Some("alice"), later);
        drop(old);
        assert_eq!(
            limiter.tracked(),
            (1, 1),
            "the new window keeps its failure"
        );
    }

    #[test]
    fn a_distinct_username_flood_past_the_cap_does_not_unlock_a_spent_user() {
        let limiter = limiter(u32::MAX, 3);
        let t0 = Instant::now();
        let attacker: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            limiter.attempt_at(attacker, "victim", t0).unwrap().failed();
        }
        assert!(limiter.check_at(attacker, Some("victim"), || t0).is_err());
        // Twice the cap of distinct usernames, each with one failure (unspent), during the
        // victim's window.
        for i in 0..2 * MAX_TRACKED {
            let at = t0 + Duration::from_millis(1 + (i as u64) / 10_000);
            limiter.fail_at(attacker, Some(&format!("churn-{i}")), at);
        }
        let during = t0 + Duration::from_secs(30);
        assert_eq!(
            limiter
                .check_at(attacker, Some("victim"), || during)
                .unwrap_err()
                .status(),
            429,
            "still spent"
        );
        let (_, usernames) = limiter.tracked();
        assert!(usernames <= MAX_TRACKED, "{usernames} kept");
        let after = t0 + Duration::from_secs(61);
        assert!(
            limiter.check_at(attacker, Some("victim"), || after).is_ok(),
            "free once the window ends"
        );
    }

    #[test]
    fn checks_go_back_to_no_lock_once_spent_budgets_end() {
        let limiter = limiter(1, 100);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        limiter.fail_at(a, None, t0);
        let shard = limiter.addresses.shard(&address_key(a));
        assert_eq!(shard.spent.load(Ordering::Relaxed), 1);
        assert!(limiter.check_at(a, None, || t0).is_err());
        // Another address of the same shard, checked after the window ended: the sweep drops
        // the ended budget, and the shard's checks take no lock again.
        let neighbour = (2..u32::MAX)
            .map(|n| IpAddr::V4(n.into()))
            .find(|b| *b != a && std::ptr::eq(limiter.addresses.shard(&address_key(*b)), shard))
            .unwrap();
        let later = t0 + Duration::from_secs(61);
        assert!(limiter.check_at(neighbour, None, || later).is_ok());
        assert_eq!(shard.spent.load(Ordering::Relaxed), 0);
        assert_eq!(limiter.tracked(), (0, 0));
    }

    #[test]
    fn a_shard_full_of_spent_budgets_refuses_newcomers_until_one_ends() {
        let limiter = limiter(1, 1);
        let t0 = Instant::now();
        // Spend address budgets until some shard is full of them.
        let mut i: u32 = 0;
        let full = loop {
            let address = IpAddr::V4(i.into());
            limiter.fail_at(address, None, t0);
            i += 1;
            let shard = limiter.addresses.shard(&address_key(address));
            if lock(&shard.table).windows.len() == PER_SHARD {
                break shard;
            }
        };
        assert_eq!(full.spent.load(Ordering::Relaxed), PER_SHARD);
        // A newcomer that lands in that shard.
        let newcomer = (i..u32::MAX)
            .map(|n| IpAddr::V4(n.into()))
            .find(|a| std::ptr::eq(limiter.addresses.shard(&address_key(*a)), full))
            .unwrap();
        let during = t0 + Duration::from_secs(30);
        assert_eq!(
            limiter
                .check_at(newcomer, None, || during)
                .unwrap_err()
                .status(),
            429
        );
        limiter.fail_at(newcomer, None, during);
        assert_eq!(
            lock(&full.table).windows.len(),
            PER_SHARD,
            "nothing dropped"
        );
        let after = t0 + Duration::from_secs(61);
        assert!(limiter.check_at(newcomer, None, || after).is_ok());
        assert!(limiter.attempt_at(newcomer, "x", after).is_ok());
    }
}
