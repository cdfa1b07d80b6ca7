//! Atomic counters owned by the state, rendered as Prometheus text on the metrics listener.
//!
//! Label values come from fixed sets (route classes, decisions, status codes, failure reasons):
//! never a username, key or path.

use std::{
    fmt::Write as _,
    sync::{
        Mutex,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::{reload::ReloadStatus, route::Class};

/// Status codes counted one by one; anything else is counted as `other`.
const STATUSES: [u16; 26] = [
    101, 200, 201, 204, 301, 302, 304, 307, 308, 400, 401, 403, 404, 405, 408, 409, 413, 422, 429,
    431, 499, 500, 501, 502, 503, 504,
];

/// Upper bounds of the upstream latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

const SLOTS: usize = STATUSES.len() + 1;

/// Every counter the gateway keeps.
pub struct Metrics {
    /// `[route][decision: 0 allow, 1 reject][status slot]`.
    requests: Vec<AtomicU64>,
    auth_failures: Mutex<Vec<(&'static str, u64)>>,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
    /// Requests being served now.
    pub in_flight: AtomicI64,
    /// When the upstream last answered (milliseconds since the epoch; 0: never).
    last_upstream_answer_ms: AtomicU64,
    /// Forwarded requests the upstream answered 401 in service mode: it refused the service key.
    pub upstream_key_refusals: AtomicU64,
    /// When the upstream last refused the service key, and when that was last logged.
    last_key_refusal_ms: AtomicU64,
    last_key_warning_ms: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: (0..Class::ALL.len() * 2 * SLOTS)
                .map(|_| AtomicU64::new(0))
                .collect(),
            auth_failures: Mutex::new(Vec::new()),
            latency_buckets: Default::default(),
            latency_count: AtomicU64::new(0),
            latency_sum_micros: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            last_upstream_answer_ms: AtomicU64::new(0),
            upstream_key_refusals: AtomicU64::new(0),
            last_key_refusal_ms: AtomicU64::new(0),
            last_key_warning_ms: AtomicU64::new(0),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Metrics {
    /// Counts one finished request.
    pub fn request(&self, route: Class, rejected: bool, status: u16) {
        let route = route.index();
        let slot = STATUSES
            .iter()
            .position(|s| *s == status)
            .unwrap_or(SLOTS - 1);
        let index = (route * 2 + usize::from(rejected)) * SLOTS + slot;
        self.requests[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one failed authentication by its (static, secret-free) reason.
    pub fn auth_failure(&self, reason: &'static str) {
        let mut failures = self
            .auth_failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match failures.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, count)) => *count += 1,
            None => failures.push((reason, 1)),
        }
    }

    /// Records the time the upstream took to start answering.
    pub fn upstream_answered(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        for (bound, bucket) in BUCKETS.iter().zip(&self.latency_buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros.fetch_add(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.last_upstream_answer_ms
            .store(now_ms(), Ordering::Relaxed);
    }

    /// Counts an upstream refusal of the service key; `true` when it is time to log it again
    /// (at most once a minute).
    pub fn upstream_refused_key(&self) -> bool {
        self.upstream_key_refusals.fetch_add(1, Ordering::Relaxed);
        let now = now_ms();
        self.last_key_refusal_ms.store(now, Ordering::Relaxed);
        let last = self.last_key_warning_ms.load(Ordering::Relaxed);
        (last == 0 || now.saturating_sub(last) >= 60_000)
            && self
                .last_key_warning_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Whether the upstream refused the service key within `window`.
    #[must_use]
    pub fn upstream_refused_key_within(&self, window: Duration) -> bool {
        let last = self.last_key_refusal_ms.load(Ordering::Relaxed);
        last != 0
            && now_ms().saturating_sub(last)
                <= u64::try_from(window.as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether the upstream answered within `window`.
    #[must_use]
    pub fn upstream_answered_within(&self, window: Duration) -> bool {
        let last = self.last_upstream_answer_ms.load(Ordering::Relaxed);
        last != 0
            && now_ms().saturating_sub(last)
                <= u64::try_from(window.as_millis()).unwrap_or(u64::MAX)
    }

    /// Renders every counter as Prometheus text (exposition format 0.0.4).
    #[must_use]
    pub fn render(&self, extra: &Extra) -> String {
        let mut out = String::with_capacity(8192);
        self.render_requests(&mut out);
        let _ = writeln!(
            out,
            "# HELP argilla_gateway_auth_failures_total Failed authentications, by reason."
        );
        let _ = writeln!(out, "# TYPE argilla_gateway_auth_failures_total counter");
        for (reason, count) in self
            .auth_failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                out,
                "argilla_gateway_auth_failures_total{{reason=\"{reason}\"}} {count}"
            );
        }
        counter(
            &mut out,
            "argilla_gateway_bcrypt_checks_total",
            "bcrypt verifications run.",
            extra.bcrypt_checks,
        );
        counter(
            &mut out,
            "argilla_gateway_credential_cache_hits_total",
            "Password verifications answered from memory.",
            extra.cache_hits,
        );
        counter(
            &mut out,
            "argilla_gateway_rate_limited_total",
            "Requests refused with 429 by a failure budget.",
            extra.rate_limited,
        );
        let reloads = &extra.reloads;
        let _ = writeln!(
            out,
            "# HELP argilla_gateway_users_reloads_total Users-file reloads, by result."
        );
        let _ = writeln!(out, "# TYPE argilla_gateway_users_reloads_total counter");
        for (result, value) in [
            ("applied", reloads.applied),
            ("unchanged", reloads.unchanged),
            ("failure", reloads.failures),
        ] {
            let _ = writeln!(
                out,
                "argilla_gateway_users_reloads_total{{result=\"{result}\"}} {value}"
            );
        }
        let last = reloads
            .last_success
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        gauge(
            &mut out,
            "argilla_gateway_users_last_reload_success_timestamp_seconds",
            "When the users now in force were loaded.",
            last,
        );
        #[expect(clippy::cast_precision_loss, reason = "a user count")]
        gauge(
            &mut out,
            "argilla_gateway_users",
            "Users in force.",
            reloads.users as f64,
        );
        #[expect(clippy::cast_precision_loss, reason = "a gauge of requests")]
        gauge(
            &mut out,
            "argilla_gateway_in_flight_requests",
            "Requests being served now.",
            self.in_flight.load(Ordering::Relaxed) as f64,
        );
        self.render_upstream(&mut out, extra);
        self.render_latency(&mut out);
        out
    }

    fn render_upstream(&self, out: &mut String, extra: &Extra) {
        counter(
            out,
            "argilla_gateway_upstream_key_refusals_total",
            "Forwarded requests the upstream answered 401 in service mode (it refuses the service key).",
            self.upstream_key_refusals.load(Ordering::Relaxed),
        );
        counter(
            out,
            "argilla_gateway_upstream_retries_total",
            "Requests lost on a reused upstream connection and sent again on a fresh one.",
            extra.upstream_retries,
        );
        #[expect(clippy::cast_precision_loss, reason = "a connection count")]
        gauge(
            out,
            "argilla_gateway_upstream_connections",
            "Upstream connections open now, idle ones included.",
            extra.upstream_connections as f64,
        );
        counter(
            out,
            "argilla_gateway_unauthenticated_connections_closed_total",
            "Client connections closed before authenticating, to make room for newer ones.",
            extra.evicted_connections,
        );
    }

    fn render_requests(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP argilla_gateway_requests_total Requests served, by route class, decision and status."
        );
        let _ = writeln!(out, "# TYPE argilla_gateway_requests_total counter");
        for route in Class::ALL {
            let (r, route) = (route.index(), route.label());
            for (d, decision) in ["allow", "reject"].iter().enumerate() {
                for slot in 0..SLOTS {
                    let value = self.requests[(r * 2 + d) * SLOTS + slot].load(Ordering::Relaxed);
                    if value == 0 {
                        continue;
                    }
                    let status = STATUSES
                        .get(slot)
                        .map_or_else(|| "other".to_owned(), u16::to_string);
                    let _ = writeln!(
                        out,
                        "argilla_gateway_requests_total{{route=\"{route}\",decision=\"{decision}\",status=\"{status}\"}} {value}"
                    );
                }
            }
        }
    }

    fn render_latency(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP argilla_gateway_upstream_latency_seconds Time for the upstream to start answering."
        );
        let _ = writeln!(
            out,
            "# TYPE argilla_gateway_upstream_latency_seconds histogram"
        );
        for (bound, bucket) in BUCKETS.iter().zip(&self.latency_buckets) {
            let _ = writeln!(
                out,
                "argilla_gateway_upstream_latency_seconds_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "argilla_gateway_upstream_latency_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        #[expect(clippy::cast_precision_loss, reason = "seconds as a float")]
        let sum = self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "argilla_gateway_upstream_latency_seconds_sum {sum}");
        let _ = writeln!(
            out,
            "argilla_gateway_upstream_latency_seconds_count {count}"
        );
    }
}

/// Counters kept elsewhere (verifier, limiter, users), read at render time.
pub struct Extra {
    /// bcrypt checks run.
    pub bcrypt_checks: u64,
    /// Verifications answered from memory.
    pub cache_hits: u64,
    /// 429 refusals.
    pub rate_limited: u64,
    /// The users-file reload status.
    pub reloads: ReloadStatus,
    /// Requests sent again on a fresh upstream connection.
    pub upstream_retries: u64,
    /// Upstream connections open now.
    pub upstream_connections: usize,
    /// Unauthenticated client connections closed to make room.
    pub evicted_connections: u64,
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}
