//! The list of settings: one row each with its TOML key, its environment variable and its
//! default as README.md writes it, and [`Source`], which reads one row's value.
//!
//! The rows are what the code reads and what the documentation promises at once: `sources.rs`
//! reads every value through a row, and a test checks the README table, the shipped
//! `gateway.toml` and `deploy/env.example` against `SETTINGS`.

use crate::error::Error;

/// One setting of `gateway.toml` and the environment.
#[derive(Debug)]
pub(crate) struct Setting {
    /// The TOML key, dotted with its table: `upstream.connect_timeout_secs`.
    pub(crate) key: &'static str,
    /// The environment variable that overrides the key.
    pub(crate) env: &'static str,
    /// The default as the README's configuration table writes it (Markdown): a backticked value,
    /// or words when the default is computed or the setting is off.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "what the documentation must say, checked by the tests"
        )
    )]
    pub(crate) default: &'static str,
}

/// Declares one constant per row and `SETTINGS` from a single table, so that no row is read
/// without being listed or listed without a name the code can read it by.
macro_rules! settings {
    ($($name:ident: $key:literal, $env:literal, $default:literal;)*) => {
        $(pub(super) const $name: Setting = Setting { key: $key, env: $env, default: $default };)*

        /// Every setting outside `[oidc]`, in the README table's order; the tests hold the
        /// documentation and the readers against it.
        #[cfg(test)]
        pub(crate) const SETTINGS: &[Setting] = &[$($name),*];
    };
}

settings! {
    LISTEN: "listen", "ARGILLA_GATEWAY_LISTEN", "`127.0.0.1:6900`";
    WORKER_THREADS: "worker_threads", "ARGILLA_GATEWAY_WORKER_THREADS", "`0` (one per usable CPU)";
    LOG_FORMAT: "log_format", "ARGILLA_GATEWAY_LOG_FORMAT", "`text`";
    UPSTREAM_URL: "upstream.url", "ARGILLA_GATEWAY_UPSTREAM_URL", "`http://127.0.0.1:6901`";
    UPSTREAM_MODE: "upstream.mode", "ARGILLA_GATEWAY_UPSTREAM_MODE", "`service`";
    UPSTREAM_API_KEY: "upstream.api_key", "ARGILLA_GATEWAY_UPSTREAM_API_KEY",
        "`argilla.apikey` (warned)";
    UPSTREAM_CONNECT_TIMEOUT_SECS: "upstream.connect_timeout_secs",
        "ARGILLA_GATEWAY_UPSTREAM_CONNECT_TIMEOUT_SECS", "`5`";
    UPSTREAM_RESPONSE_TIMEOUT_SECS: "upstream.response_timeout_secs",
        "ARGILLA_GATEWAY_UPSTREAM_RESPONSE_TIMEOUT_SECS", "`300`";
    UPSTREAM_MAX_CONNECTIONS: "upstream.max_connections",
        "ARGILLA_GATEWAY_UPSTREAM_MAX_CONNECTIONS", "`4096`";
    UPSTREAM_MAX_CONNECTIONS_PER_CLIENT: "upstream.max_connections_per_client",
        "ARGILLA_GATEWAY_UPSTREAM_MAX_CONNECTIONS_PER_CLIENT", "`32`";
    UPSTREAM_IDLE_TIMEOUT_SECS: "upstream.idle_timeout_secs",
        "ARGILLA_GATEWAY_UPSTREAM_IDLE_TIMEOUT_SECS", "`4`";
    AUTH_USERS_FILE: "auth.users_file", "ARGILLA_LOCAL_AUTH_USERS_DB_FILE", "unset";
    AUTH_DEFAULT_API_KEY: "auth.default_api_key", "ARGILLA_LOCAL_AUTH_DEFAULT_APIKEY",
        "`argilla.apikey`";
    AUTH_DEFAULT_PASSWORD: "auth.default_password", "ARGILLA_LOCAL_AUTH_DEFAULT_PASSWORD",
        "bcrypt of `1234`";
    AUTH_SECRET_KEY: "auth.secret_key", "ARGILLA_LOCAL_AUTH_SECRET_KEY",
        "random per process (warned)";
    AUTH_TOKEN_EXPIRATION_IN_MINUTES: "auth.token_expiration_in_minutes",
        "ARGILLA_LOCAL_AUTH_TOKEN_EXPIRATION_IN_MINUTES", "`30000`";
    AUTH_BCRYPT_CONCURRENCY: "auth.bcrypt_concurrency", "ARGILLA_GATEWAY_BCRYPT_CONCURRENCY",
        "CPU count";
    AUTH_CREDENTIAL_CACHE_SECS: "auth.credential_cache_secs",
        "ARGILLA_GATEWAY_CREDENTIAL_CACHE_SECS", "`300`";
    AUTH_CREDENTIAL_CACHE_CAPACITY: "auth.credential_cache_capacity",
        "ARGILLA_GATEWAY_CREDENTIAL_CACHE_CAPACITY", "`100000`";
    RATE_LIMIT_FAILURES_PER_ADDRESS: "rate_limit.failures_per_address",
        "ARGILLA_GATEWAY_RATE_LIMIT_FAILURES_PER_ADDRESS", "`100`";
    RATE_LIMIT_FAILURES_PER_USERNAME: "rate_limit.failures_per_username",
        "ARGILLA_GATEWAY_RATE_LIMIT_FAILURES_PER_USERNAME", "`10`";
    RATE_LIMIT_WINDOW_SECS: "rate_limit.window_secs", "ARGILLA_GATEWAY_RATE_LIMIT_WINDOW_SECS",
        "`300`";
    RATE_LIMIT_TRUSTED_PROXIES: "rate_limit.trusted_proxies", "ARGILLA_GATEWAY_TRUSTED_PROXIES",
        "`[]`";
    RELOAD_POLL_INTERVAL_SECS: "reload.poll_interval_secs",
        "ARGILLA_GATEWAY_RELOAD_POLL_INTERVAL_SECS", "`5`";
    RELOAD_DEBOUNCE_MILLIS: "reload.debounce_millis", "ARGILLA_GATEWAY_RELOAD_DEBOUNCE_MILLIS",
        "`50`";
    LIMITS_MAX_BODY_BYTES: "limits.max_body_bytes", "ARGILLA_GATEWAY_MAX_BODY_BYTES",
        "`1048576`";
    LIMITS_MAX_LIST_RESPONSE_BYTES: "limits.max_list_response_bytes",
        "ARGILLA_GATEWAY_MAX_LIST_RESPONSE_BYTES", "`67108864`";
    LIMITS_HEADER_READ_TIMEOUT_SECS: "limits.header_read_timeout_secs",
        "ARGILLA_GATEWAY_HEADER_READ_TIMEOUT_SECS", "`30`";
    LIMITS_GRACE_PERIOD_SECS: "limits.grace_period_secs", "ARGILLA_GATEWAY_GRACE_PERIOD_SECS",
        "`30`";
    LIMITS_MAX_HEADER_BYTES: "limits.max_header_bytes", "ARGILLA_GATEWAY_MAX_HEADER_BYTES",
        "`65536`";
    LIMITS_MAX_CONNECTIONS: "limits.max_connections", "ARGILLA_GATEWAY_MAX_CONNECTIONS",
        "`10000`";
    LIMITS_MAX_UNAUTHENTICATED_CONNECTIONS: "limits.max_unauthenticated_connections",
        "ARGILLA_GATEWAY_MAX_UNAUTHENTICATED_CONNECTIONS", "half of `max_connections`";
    LIMITS_BODY_READ_TIMEOUT_SECS: "limits.body_read_timeout_secs",
        "ARGILLA_GATEWAY_BODY_READ_TIMEOUT_SECS", "`60`";
    LIMITS_BODY_IDLE_TIMEOUT_SECS: "limits.body_idle_timeout_secs",
        "ARGILLA_GATEWAY_BODY_IDLE_TIMEOUT_SECS", "`60`";
    METRICS_LISTEN: "metrics_listen", "ARGILLA_GATEWAY_METRICS_LISTEN", "unset (off)";
    TLS_CERT_FILE: "tls.cert_file", "ARGILLA_GATEWAY_TLS_CERT_FILE", "unset (plain HTTP)";
    TLS_KEY_FILE: "tls.key_file", "ARGILLA_GATEWAY_TLS_KEY_FILE", "unset (plain HTTP)";
}

/// Collects one value per setting: environment first, then file, then default, and remembers
/// where it came from so that an error can name the setting the operator actually wrote.
pub(super) struct Source<'a> {
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
    /// The configuration file's name, as errors name it.
    pub(super) file: &'a str,
}

impl Source<'_> {
    /// The environment value of the row's variable (empty counts as unset), else the file's
    /// value, each with where it came from.
    pub(super) fn pick<T: ToString>(
        &self,
        row: &Setting,
        file: Option<T>,
    ) -> Option<(String, String)> {
        match (self.env)(row.env).filter(|v| !v.is_empty()) {
            Some(value) => Some((value, format!("environment variable {}", row.env))),
            None => file.map(|v| (v.to_string(), format!("`{}` in {}", row.key, self.file))),
        }
    }

    /// The row's value as written, `None` when neither source sets it.
    pub(super) fn string(&self, row: &Setting, file: Option<String>) -> Option<String> {
        self.pick(row, file).map(|(value, _)| value)
    }

    /// The row's value parsed as `T`, or `default` when neither source sets it.
    pub(super) fn parsed<T: std::str::FromStr + ToString>(
        &self,
        row: &Setting,
        file: Option<T>,
        default: T,
    ) -> Result<T, Error>
    where
        T::Err: std::fmt::Display,
    {
        match self.pick(row, file) {
            None => Ok(default),
            Some((value, origin)) => value
                .trim()
                .parse()
                .map_err(|e| Error::Config(format!("{origin}: {e} (got {value:?})"))),
        }
    }
}

#[cfg(test)]
mod tests;
