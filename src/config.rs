//! `gateway.toml` plus the environment → one validated [`Config`].
//!
//! Precedence: environment beats file beats built-in default. [`Config::from_sources`] is pure
//! (the environment comes in as a function), so every rule is tested with an inline TOML string;
//! [`Config::load`] wraps it with the file system and the process environment.
//!
//! `settings` lists every setting once (key, environment variable, documented default);
//! `sources` reads each of them through its row. `[oidc]` is read by [`crate::oidc::config`].

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use http::Uri;

use crate::error::Error;

mod settings;
mod sources;
#[cfg(test)]
mod tests;

/// Argilla's built-in bcrypt hash of the default password `1234`.
pub const DEFAULT_PASSWORD_HASH: &str =
    "$2y$12$MPcRR71ByqgSI8AaqgxrMeSdrD4BcxDIdYkr.ePQoKz7wsGK7SAca";
/// Argilla's default API key of the default user.
pub const DEFAULT_API_KEY: &str = "argilla.apikey";
/// Argilla's default token lifetime (about 20.8 days).
pub const DEFAULT_TOKEN_EXPIRATION_MINUTES: u64 = 30_000;
/// The users file Argilla reads from its working directory when none is configured.
pub const DEFAULT_USERS_FILE: &str = ".users.yml";

/// How the gateway identifies itself to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One service key (an upstream superuser); the gateway is the only authority.
    Service,
    /// Each user's own `api_key` from the users file; the upstream applies its own policy too.
    Passthrough,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Service => "service",
            Self::Passthrough => "passthrough",
        })
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The upstream Argilla server.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Base URL: scheme `http`, host, port and an optional path prefix (no query).
    pub url: Uri,
    /// `service` or `passthrough`.
    pub mode: Mode,
    /// The key sent upstream in `service` mode.
    pub api_key: String,
    /// Whether `api_key` is Argilla's well-known default (warned about at start).
    pub api_key_is_default: bool,
    /// Time allowed to open a TCP connection to the upstream.
    pub connect_timeout: Duration,
    /// Time allowed for the upstream to start answering (status and headers).
    pub response_timeout: Duration,
    /// Open upstream connections at most, idle ones included.
    pub max_connections: usize,
    /// Requests one client connection may have in flight upstream at once (HTTP/2 streams).
    pub max_connections_per_client: usize,
    /// How long an unused upstream connection is kept open.
    pub idle_timeout: Duration,
}

/// Authentication settings.
#[derive(Debug, Clone)]
pub struct Auth {
    /// The users file, when one is configured (or `.users.yml` exists in the working directory).
    pub users_file: Option<PathBuf>,
    /// The default user's API key when no users file is used.
    pub default_api_key: String,
    /// The default user's bcrypt password hash when no users file is used.
    pub default_password_hash: String,
    /// The HS256 secret for gateway tokens; `None` means a random per-process secret.
    pub secret_key: Option<String>,
    /// Lifetime of a gateway token.
    pub token_expiration: Duration,
    /// How many bcrypt verifications may run at once.
    pub bcrypt_concurrency: usize,
    /// How long a verified (user, password) pair is remembered.
    pub credential_cache_ttl: Duration,
    /// How many verified pairs are remembered at most.
    pub credential_cache_capacity: usize,
}

/// Brute-force limits on failed authentications.
#[derive(Debug, Clone)]
pub struct RateLimit {
    /// Failures allowed per client address within `window`.
    pub failures_per_address: u32,
    /// Failures allowed per username within `window`.
    pub failures_per_username: u32,
    /// The counting window.
    pub window: Duration,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
}

/// Users-file reload settings.
#[derive(Debug, Clone)]
pub struct Reload {
    /// How often the file's content is re-checked when no file event arrives.
    pub poll_interval: Duration,
    /// How long a burst of file events is collected before one reload.
    pub debounce: Duration,
}

/// Size and time limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body the gateway reads itself (dataset create and copy, login).
    pub max_body_bytes: usize,
    /// Largest dataset-list response the gateway filters.
    pub max_list_response_bytes: usize,
    /// Time allowed for a client to send its request headers.
    pub header_read_timeout: Duration,
    /// Time in-flight requests get to finish after a shutdown signal.
    pub grace_period: Duration,
    /// Largest request head (request line and headers); 431 past it.
    pub max_header_bytes: usize,
    /// Most client connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Most client connections that have not yet authenticated a request; past it the oldest
    /// of them is closed to make room.
    pub max_unauthenticated_connections: usize,
    /// Time for a body the gateway reads itself (login, dataset create and copy, the dataset
    /// list) to arrive whole.
    pub body_read_timeout: Duration,
    /// Longest pause within a streamed body, either way, and longest wait for a client to take
    /// the next bytes of an answer.
    pub body_idle_timeout: Duration,
}

/// TLS termination: PEM files of the certificate chain and its private key.
#[derive(Debug, Clone)]
pub struct Tls {
    /// The certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the gateway listens.
    pub listen: SocketAddr,
    /// The upstream.
    pub upstream: Upstream,
    /// Authentication.
    pub auth: Auth,
    /// Brute-force limits.
    pub rate_limit: RateLimit,
    /// Users-file reload.
    pub reload: Reload,
    /// Size and time limits.
    pub limits: Limits,
    /// Log format.
    pub log_format: LogFormat,
    /// Where Prometheus metrics are served (`None`: nowhere).
    pub metrics_listen: Option<SocketAddr>,
    /// TLS on the main listener (`None`: plain HTTP).
    pub tls: Option<Tls>,
    /// The configuration file read, if any (`None`: built-in defaults and the environment).
    pub file: Option<PathBuf>,
    /// Threads serving requests: 1 runs a single-threaded runtime (cheapest on one CPU).
    pub worker_threads: usize,
    /// Single sign-on (`[oidc]`), when `issuer_url` is set.
    pub oidc: Option<crate::oidc::config::Oidc>,
}

impl Config {
    /// Reads `path` (or, when `None`, `gateway.toml` in the working directory if it exists) and
    /// the process environment.
    ///
    /// # Errors
    /// The file cannot be read, or any setting is unknown or invalid.
    pub fn load(path: Option<&Path>) -> Result<Self, Error> {
        let name = path.map_or_else(|| "gateway.toml".into(), |p| p.display().to_string());
        let text = match path {
            Some(path) => {
                Some(
                    std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
                        path: path.to_owned(),
                        source,
                    })?,
                )
            }
            None => match std::fs::read_to_string("gateway.toml") {
                Ok(text) => Some(text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(source) => {
                    return Err(Error::ConfigRead {
                        path: "gateway.toml".into(),
                        source,
                    });
                }
            },
        };
        let read = text.is_some().then(|| PathBuf::from(&name));
        let mut config =
            Self::from_named_sources(&name, text.as_deref(), &|var| std::env::var(var).ok())?;
        config.file = read;
        Ok(config.with_default_users_file(Path::new(DEFAULT_USERS_FILE).exists()))
    }

    /// Uses Argilla's `.users.yml` from the working directory when no file is configured and
    /// that file exists.
    #[must_use]
    pub fn with_default_users_file(mut self, exists: bool) -> Self {
        if self.auth.users_file.is_none() && exists {
            self.auth.users_file = Some(PathBuf::from(DEFAULT_USERS_FILE));
        }
        self
    }

    /// Builds the configuration from TOML text (if any) and an environment lookup.
    ///
    /// # Errors
    /// Unknown keys, unparsable values and values that break a rule, each named.
    pub fn from_sources(
        toml_text: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        Self::from_named_sources("gateway.toml", toml_text, env)
    }

    /// Every setting with its effective value, secrets masked: what `check` prints.
    #[must_use]
    pub fn summary(&self) -> BTreeMap<&'static str, String> {
        let mut out = BTreeMap::new();
        out.insert("listen", self.listen.to_string());
        out.insert("upstream.url", self.upstream.url.to_string());
        out.insert("upstream.mode", self.upstream.mode.to_string());
        out.insert(
            "users_file",
            self.auth
                .users_file
                .as_ref()
                .map_or_else(|| "(default user)".into(), |p| p.display().to_string()),
        );
        out
    }
}
