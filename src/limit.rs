//! Budgets of failed authentications per client address and per username.
//!
//! A budget is a fixed window: `limit` failures within `window` from its first failure. Past
//! it, the answer is 429 with `Retry-After` before any bcrypt work is spent. The maps are only
//! touched on the failure path and, while any budget has failures in it, by the check that
//! precedes bcrypt or a key lookup; with no failures anywhere the check is one atomic load.

use std::{
    collections::HashMap,
    hash::Hash,
    net::IpAddr,
    sync::{
        Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{config::RateLimit, error::Reject};

/// Most budgets kept per kind before expired ones are swept (and, past that, all dropped).
const MAX_TRACKED: usize = 100_000;

#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
}

struct Budgets<K> {
    limit: u32,
    windows: Mutex<HashMap<K, Window>>,
    tracked: AtomicUsize,
}

impl<K: Hash + Eq> Budgets<K> {
    fn new(limit: u32) -> Self {
        Self {
            limit,
            windows: Mutex::new(HashMap::new()),
            tracked: AtomicUsize::new(0),
        }
    }

    fn retry_after(&self, key: &K, now: Instant, window: Duration) -> Option<Duration> {
        if self.tracked.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.spent(&windows, key, now, window)
    }

    fn fail(&self, key: K, now: Instant, window: Duration) {
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.add(&mut windows, key, now, window);
    }

    /// Under the caller's lock: the time until the budget of `key` has room, if it is spent.
    fn spent(
        &self,
        windows: &HashMap<K, Window>,
        key: &K,
        now: Instant,
        window: Duration,
    ) -> Option<Duration> {
        let entry = windows.get(key)?;
        let ends = entry.start + window;
        (entry.failures >= self.limit && ends > now).then(|| ends - now)
    }

    /// Gives back one counted failure of the current window (the attempt succeeded).
    fn refund(&self, key: &K, now: Instant, window: Duration) {
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(entry) = windows.get_mut(key).filter(|e| e.start + window > now) {
            entry.failures = entry.failures.saturating_sub(1);
        }
    }

    fn add(&self, windows: &mut HashMap<K, Window>, key: K, now: Instant, window: Duration) {
        if windows.len() >= MAX_TRACKED {
            windows.retain(|_, w| w.start + window > now);
            if windows.len() >= MAX_TRACKED {
                windows.clear();
            }
        }
        let entry = windows.entry(key).or_insert(Window {
            start: now,
            failures: 0,
        });
        if entry.start + window <= now {
            *entry = Window {
                start: now,
                failures: 0,
            };
        }
        entry.failures = entry.failures.saturating_add(1);
        self.tracked.store(windows.len(), Ordering::Relaxed);
    }
}

/// The two budgets and the refusal counter.
pub struct Limiter {
    window: Duration,
    addresses: Budgets<IpAddr>,
    usernames: Budgets<String>,
    /// Requests refused with 429 (for metrics).
    pub refusals: AtomicU64,
}

impl Limiter {
    /// Budgets as configured.
    #[must_use]
    pub fn new(config: &RateLimit) -> Self {
        Self {
            window: config.window,
            addresses: Budgets::new(config.failures_per_address),
            usernames: Budgets::new(config.failures_per_username),
            refusals: AtomicU64::new(0),
        }
    }

    /// Refuses when the address's or the username's budget is spent.
    ///
    /// # Errors
    /// 429 with the time until the budget has room again.
    pub fn check(&self, address: IpAddr, username: Option<&str>) -> Result<(), Reject> {
        self.check_at(address, username, Instant::now())
    }

    fn check_at(
        &self,
        address: IpAddr,
        username: Option<&str>,
        now: Instant,
    ) -> Result<(), Reject> {
        let refused = |scope, retry_after| {
            self.refusals.fetch_add(1, Ordering::Relaxed);
            Err(Reject::TooManyRequests { scope, retry_after })
        };
        if let Some(wait) = self.addresses.retry_after(&address, now, self.window) {
            return refused("address", wait);
        }
        if let Some(name) = username
            && let Some(wait) = self
                .usernames
                .retry_after(&name.to_owned(), now, self.window)
        {
            return refused("username", wait);
        }
        Ok(())
    }

    /// A password attempt: refused when a budget is spent, otherwise counted as a failure at
    /// once (under the same locks, so that concurrent attempts cannot all pass a check that
    /// only one of them should pass); [`Limiter::succeeded`] gives it back.
    ///
    /// # Errors
    /// 429 with the time until the budget has room again.
    pub fn attempt(&self, address: IpAddr, username: &str) -> Result<(), Reject> {
        let now = Instant::now();
        let username = username.to_owned();
        let mut addresses = self
            .addresses
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut usernames = self
            .usernames
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let refused = self
            .addresses
            .spent(&addresses, &address, now, self.window)
            .map(|wait| ("address", wait))
            .or_else(|| {
                self.usernames
                    .spent(&usernames, &username, now, self.window)
                    .map(|wait| ("username", wait))
            });
        if let Some((scope, retry_after)) = refused {
            self.refusals.fetch_add(1, Ordering::Relaxed);
            return Err(Reject::TooManyRequests { scope, retry_after });
        }
        self.addresses
            .add(&mut addresses, address, now, self.window);
        self.usernames
            .add(&mut usernames, username, now, self.window);
        Ok(())
    }

    /// The attempt counted by [`Limiter::attempt`] succeeded: it is not a failure after all.
    pub fn succeeded(&self, address: IpAddr, username: &str) {
        let now = Instant::now();
        self.addresses.refund(&address, now, self.window);
        self.usernames
            .refund(&username.to_owned(), now, self.window);
    }

    /// Counts one failed authentication.
    pub fn fail(&self, address: IpAddr, username: Option<&str>) {
        self.fail_at(address, username, Instant::now());
    }

    fn fail_at(&self, address: IpAddr, username: Option<&str>, now: Instant) {
        self.addresses.fail(address, now, self.window);
        if let Some(name) = username {
            self.usernames.fail(name.to_owned(), now, self.window);
        }
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
            assert!(limiter.check_at(a, Some("alice"), t0).is_ok());
            limiter.fail_at(a, Some("alice"), t0);
        }
        let refused = limiter.check_at(b, Some("alice"), t0).unwrap_err();
        assert_eq!(refused.status(), 429);
        assert!(
            limiter.check_at(b, Some("bob"), t0).is_ok(),
            "other usernames unaffected"
        );
        assert!(
            limiter.check_at(a, None, t0).is_ok(),
            "address budget not spent"
        );
        let later = t0 + Duration::from_secs(61);
        assert!(
            limiter.check_at(b, Some("alice"), later).is_ok(),
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
        for _ in 0..3 {
            assert!(limiter.attempt(a, "alice").is_ok());
        }
        assert_eq!(limiter.attempt(a, "alice").unwrap_err().status(), 429);
        // One of them succeeds: its place is given back.
        limiter.succeeded(a, "alice");
        assert!(limiter.attempt(a, "alice").is_ok());
        assert!(
            limiter.attempt(a, "bob").is_ok(),
            "other usernames unaffected"
        );
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
}
