//! `gateway.toml` plus the environment → one validated [`Config`].
//!
//! Precedence: environment beats file beats built-in default. [`Config::from_sources`] is pure
//! (the environment comes in as a function), so every rule is tested with an inline TOML string;
//! [`Config::load`] wraps it with the file system and the process environment.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use http::Uri;
use serde::Deserialize;

use crate::error::Error;

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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    log_format: Option<String>,
    metrics_listen: Option<String>,
    worker_threads: Option<usize>,
    #[serde(default)]
    upstream: RawUpstream,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    rate_limit: RawRateLimit,
    #[serde(default)]
    reload: RawReload,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    tls: RawTls,
    #[serde(default)]
    oidc: crate::oidc::config::RawOidc,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<String>,
    key_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    url: Option<String>,
    mode: Option<String>,
    api_key: Option<String>,
    connect_timeout_secs: Option<u64>,
    response_timeout_secs: Option<u64>,
    max_connections: Option<usize>,
    max_connections_per_client: Option<usize>,
    idle_timeout_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    users_file: Option<String>,
    default_api_key: Option<String>,
    default_password: Option<String>,
    secret_key: Option<String>,
    token_expiration_in_minutes: Option<u64>,
    bcrypt_concurrency: Option<usize>,
    credential_cache_secs: Option<u64>,
    credential_cache_capacity: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    failures_per_address: Option<u32>,
    failures_per_username: Option<u32>,
    window_secs: Option<u64>,
    trusted_proxies: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReload {
    poll_interval_secs: Option<u64>,
    debounce_millis: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_body_bytes: Option<usize>,
    max_list_response_bytes: Option<usize>,
    header_read_timeout_secs: Option<u64>,
    grace_period_secs: Option<u64>,
    max_header_bytes: Option<usize>,
    max_connections: Option<usize>,
    max_unauthenticated_connections: Option<usize>,
    body_read_timeout_secs: Option<u64>,
    body_idle_timeout_secs: Option<u64>,
}

/// Collects one value per setting: environment first, then file, then default, and remembers
/// where it came from so that an error can name the setting the operator actually wrote.
struct Source<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    /// The configuration file's name, as errors name it.
    file: &'a str,
}

impl Source<'_> {
    /// The environment value of `var` (empty counts as unset), else the file's value.
    fn pick<T: ToString>(&self, var: &str, file: Option<T>, key: &str) -> Option<(String, String)> {
        match (self.env)(var).filter(|v| !v.is_empty()) {
            Some(value) => Some((value, format!("environment variable {var}"))),
            None => file.map(|v| (v.to_string(), format!("`{key}` in {}", self.file))),
        }
    }

    fn string(&self, var: &str, file: Option<String>, key: &str) -> Option<String> {
        self.pick(var, file, key).map(|(value, _)| value)
    }

    fn parsed<T: std::str::FromStr + ToString>(
        &self,
        var: &str,
        file: Option<T>,
        key: &str,
        default: T,
    ) -> Result<T, Error>
    where
        T::Err: std::fmt::Display,
    {
        match self.pick(var, file, key) {
            None => Ok(default),
            Some((value, origin)) => value
                .trim()
                .parse()
                .map_err(|e| Error::Config(format!("{origin}: {e} (got {value:?})"))),
        }
    }
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

    /// As [`Config::from_sources`], with errors naming the configuration file `file`.
    ///
    /// # Errors
    /// As [`Config::from_sources`].
    #[expect(clippy::too_many_lines, reason = "one line per setting reads best")]
    pub fn from_named_sources(
        file: &str,
        toml_text: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        let raw: RawConfig = match toml_text {
            Some(text) => toml::from_str(text)
                .map_err(|e| Error::Config(format!("{file}: {}", e.to_string().trim())))?,
            None => RawConfig::default(),
        };
        let src = Source { env, file };

        let listen = src.parsed(
            "ARGILLA_GATEWAY_LISTEN",
            raw.listen
                .map(|s| s.parse::<SocketAddr>())
                .transpose()
                .map_err(|e| Error::Config(format!("`listen` in {file}: {e}")))?,
            "listen",
            SocketAddr::from(([127, 0, 0, 1], 6900)),
        )?;

        let url_text = src
            .string(
                "ARGILLA_GATEWAY_UPSTREAM_URL",
                raw.upstream.url,
                "upstream.url",
            )
            .unwrap_or_else(|| "http://127.0.0.1:6901".to_owned());
        let url = parse_upstream_url(&url_text)?;

        let mode = match src
            .string(
                "ARGILLA_GATEWAY_UPSTREAM_MODE",
                raw.upstream.mode,
                "upstream.mode",
            )
            .as_deref()
            .map(str::trim)
        {
            None | Some("service") => Mode::Service,
            Some("passthrough") => Mode::Passthrough,
            Some(other) => {
                return Err(Error::Config(format!(
                    "upstream mode must be `service` or `passthrough`, got {other:?} \
                     (ARGILLA_GATEWAY_UPSTREAM_MODE / upstream.mode)"
                )));
            }
        };
        let api_key = src.string(
            "ARGILLA_GATEWAY_UPSTREAM_API_KEY",
            raw.upstream.api_key,
            "upstream.api_key",
        );
        let api_key_is_default = api_key.is_none();
        let api_key = api_key.unwrap_or_else(|| DEFAULT_API_KEY.to_owned());
        check_header_value("upstream API key", &api_key)?;

        let connect_timeout = secs(src.parsed(
            "ARGILLA_GATEWAY_UPSTREAM_CONNECT_TIMEOUT_SECS",
            raw.upstream.connect_timeout_secs,
            "upstream.connect_timeout_secs",
            5,
        )?);
        let response_timeout = secs(src.parsed(
            "ARGILLA_GATEWAY_UPSTREAM_RESPONSE_TIMEOUT_SECS",
            raw.upstream.response_timeout_secs,
            "upstream.response_timeout_secs",
            300,
        )?);
        let upstream_max_connections = src.parsed(
            "ARGILLA_GATEWAY_UPSTREAM_MAX_CONNECTIONS",
            raw.upstream.max_connections,
            "upstream.max_connections",
            4096,
        )?;
        positive("upstream.max_connections", upstream_max_connections)?;
        let max_connections_per_client = src.parsed(
            "ARGILLA_GATEWAY_UPSTREAM_MAX_CONNECTIONS_PER_CLIENT",
            raw.upstream.max_connections_per_client,
            "upstream.max_connections_per_client",
            32,
        )?;
        positive(
            "upstream.max_connections_per_client",
            max_connections_per_client,
        )?;
        let idle_timeout_secs = src.parsed(
            "ARGILLA_GATEWAY_UPSTREAM_IDLE_TIMEOUT_SECS",
            raw.upstream.idle_timeout_secs,
            "upstream.idle_timeout_secs",
            4,
        )?;
        positive(
            "upstream.idle_timeout_secs",
            usize::try_from(idle_timeout_secs).unwrap_or(usize::MAX),
        )?;

        let users_file = src.string(
            "ARGILLA_LOCAL_AUTH_USERS_DB_FILE",
            raw.auth.users_file,
            "auth.users_file",
        );
        let default_api_key = src
            .string(
                "ARGILLA_LOCAL_AUTH_DEFAULT_APIKEY",
                raw.auth.default_api_key,
                "auth.default_api_key",
            )
            .unwrap_or_else(|| DEFAULT_API_KEY.to_owned());
        let default_password_hash = src
            .string(
                "ARGILLA_LOCAL_AUTH_DEFAULT_PASSWORD",
                raw.auth.default_password,
                "auth.default_password",
            )
            .unwrap_or_else(|| DEFAULT_PASSWORD_HASH.to_owned());
        if let Err(why) = crate::users::check_bcrypt_hash(&default_password_hash) {
            return Err(Error::Config(format!(
                "ARGILLA_LOCAL_AUTH_DEFAULT_PASSWORD / auth.default_password must be a bcrypt \
                 hash (for example from `htpasswd -nbB`): {why}"
            )));
        }
        let secret_key = src.string(
            "ARGILLA_LOCAL_AUTH_SECRET_KEY",
            raw.auth.secret_key,
            "auth.secret_key",
        );
        if let Some(secret) = &secret_key {
            if secret == "secret" {
                return Err(Error::Config(
                    "ARGILLA_LOCAL_AUTH_SECRET_KEY / auth.secret_key is `secret`, Argilla's public \
                     default: anyone could forge tokens. Use a long random value."
                        .into(),
                ));
            }
            if secret.len() < 16 {
                return Err(Error::Config(
                    "ARGILLA_LOCAL_AUTH_SECRET_KEY / auth.secret_key must be at least 16 characters"
                        .into(),
                ));
            }
        }
        let token_minutes = src.parsed(
            "ARGILLA_LOCAL_AUTH_TOKEN_EXPIRATION_IN_MINUTES",
            raw.auth.token_expiration_in_minutes,
            "auth.token_expiration_in_minutes",
            DEFAULT_TOKEN_EXPIRATION_MINUTES,
        )?;
        if token_minutes == 0 {
            return Err(Error::Config(
                "ARGILLA_LOCAL_AUTH_TOKEN_EXPIRATION_IN_MINUTES / auth.token_expiration_in_minutes \
                 must be at least 1"
                    .into(),
            ));
        }
        let bcrypt_concurrency = src.parsed(
            "ARGILLA_GATEWAY_BCRYPT_CONCURRENCY",
            raw.auth.bcrypt_concurrency,
            "auth.bcrypt_concurrency",
            std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
        )?;
        positive("auth.bcrypt_concurrency", bcrypt_concurrency)?;
        let credential_cache_ttl = secs(src.parsed(
            "ARGILLA_GATEWAY_CREDENTIAL_CACHE_SECS",
            raw.auth.credential_cache_secs,
            "auth.credential_cache_secs",
            300,
        )?);
        let credential_cache_capacity = src.parsed(
            "ARGILLA_GATEWAY_CREDENTIAL_CACHE_CAPACITY",
            raw.auth.credential_cache_capacity,
            "auth.credential_cache_capacity",
            100_000,
        )?;

        let failures_per_address = src.parsed(
            "ARGILLA_GATEWAY_RATE_LIMIT_FAILURES_PER_ADDRESS",
            raw.rate_limit.failures_per_address,
            "rate_limit.failures_per_address",
            100,
        )?;
        let failures_per_username = src.parsed(
            "ARGILLA_GATEWAY_RATE_LIMIT_FAILURES_PER_USERNAME",
            raw.rate_limit.failures_per_username,
            "rate_limit.failures_per_username",
            10,
        )?;
        positive(
            "rate_limit.failures_per_address",
            failures_per_address as usize,
        )?;
        positive(
            "rate_limit.failures_per_username",
            failures_per_username as usize,
        )?;
        let window = secs(src.parsed(
            "ARGILLA_GATEWAY_RATE_LIMIT_WINDOW_SECS",
            raw.rate_limit.window_secs,
            "rate_limit.window_secs",
            300,
        )?);
        let proxies_text = src.string(
            "ARGILLA_GATEWAY_TRUSTED_PROXIES",
            raw.rate_limit.trusted_proxies.map(|list| list.join(",")),
            "rate_limit.trusted_proxies",
        );
        let trusted_proxies = proxies_text
            .iter()
            .flat_map(|text| text.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpAddr>().map_err(|_| {
                    Error::Config(format!(
                        "rate_limit.trusted_proxies: {s:?} is not an IP address"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let poll_interval = secs(src.parsed(
            "ARGILLA_GATEWAY_RELOAD_POLL_INTERVAL_SECS",
            raw.reload.poll_interval_secs,
            "reload.poll_interval_secs",
            5,
        )?);
        let debounce = Duration::from_millis(src.parsed(
            "ARGILLA_GATEWAY_RELOAD_DEBOUNCE_MILLIS",
            raw.reload.debounce_millis,
            "reload.debounce_millis",
            50,
        )?);
        if poll_interval.is_zero() {
            return Err(Error::Config(
                "reload.poll_interval_secs must be at least 1".into(),
            ));
        }

        let max_body_bytes = src.parsed(
            "ARGILLA_GATEWAY_MAX_BODY_BYTES",
            raw.limits.max_body_bytes,
            "limits.max_body_bytes",
            1 << 20,
        )?;
        positive("limits.max_body_bytes", max_body_bytes)?;
        let max_list_response_bytes = src.parsed(
            "ARGILLA_GATEWAY_MAX_LIST_RESPONSE_BYTES",
            raw.limits.max_list_response_bytes,
            "limits.max_list_response_bytes",
            64 << 20,
        )?;
        positive("limits.max_list_response_bytes", max_list_response_bytes)?;
        let header_read_timeout = secs(src.parsed(
            "ARGILLA_GATEWAY_HEADER_READ_TIMEOUT_SECS",
            raw.limits.header_read_timeout_secs,
            "limits.header_read_timeout_secs",
            30,
        )?);
        let grace_period = secs(src.parsed(
            "ARGILLA_GATEWAY_GRACE_PERIOD_SECS",
            raw.limits.grace_period_secs,
            "limits.grace_period_secs",
            30,
        )?);

        let max_header_bytes = src.parsed(
            "ARGILLA_GATEWAY_MAX_HEADER_BYTES",
            raw.limits.max_header_bytes,
            "limits.max_header_bytes",
            64 * 1024,
        )?;
        if max_header_bytes < 8192 {
            return Err(Error::Config(
                "limits.max_header_bytes / ARGILLA_GATEWAY_MAX_HEADER_BYTES must be at least 8192"
                    .into(),
            ));
        }
        let max_connections = src.parsed(
            "ARGILLA_GATEWAY_MAX_CONNECTIONS",
            raw.limits.max_connections,
            "limits.max_connections",
            10_000,
        )?;
        positive("limits.max_connections", max_connections)?;
        let max_unauthenticated_connections = src.parsed(
            "ARGILLA_GATEWAY_MAX_UNAUTHENTICATED_CONNECTIONS",
            raw.limits.max_unauthenticated_connections,
            "limits.max_unauthenticated_connections",
            max_connections.div_ceil(2),
        )?;
        if max_unauthenticated_connections == 0 || max_unauthenticated_connections > max_connections
        {
            return Err(Error::Config(format!(
                "limits.max_unauthenticated_connections / \
                 ARGILLA_GATEWAY_MAX_UNAUTHENTICATED_CONNECTIONS must be between 1 and \
                 limits.max_connections ({max_connections}), got {max_unauthenticated_connections}"
            )));
        }
        let body_read_timeout = src.parsed(
            "ARGILLA_GATEWAY_BODY_READ_TIMEOUT_SECS",
            raw.limits.body_read_timeout_secs,
            "limits.body_read_timeout_secs",
            60,
        )?;
        positive(
            "limits.body_read_timeout_secs",
            usize::try_from(body_read_timeout).unwrap_or(usize::MAX),
        )?;
        let body_idle_timeout = src.parsed(
            "ARGILLA_GATEWAY_BODY_IDLE_TIMEOUT_SECS",
            raw.limits.body_idle_timeout_secs,
            "limits.body_idle_timeout_secs",
            60,
        )?;
        positive(
            "limits.body_idle_timeout_secs",
            usize::try_from(body_idle_timeout).unwrap_or(usize::MAX),
        )?;
        let metrics_listen = src
            .pick(
                "ARGILLA_GATEWAY_METRICS_LISTEN",
                raw.metrics_listen,
                "metrics_listen",
            )
            .map(|(value, origin)| {
                value
                    .trim()
                    .parse::<SocketAddr>()
                    .map_err(|e| Error::Config(format!("{origin}: {e} (got {value:?})")))
            })
            .transpose()?;
        if metrics_listen == Some(listen) {
            return Err(Error::Config(
                "metrics_listen must differ from listen: metrics are served on their own listener"
                    .into(),
            ));
        }

        let tls = match (
            src.string(
                "ARGILLA_GATEWAY_TLS_CERT_FILE",
                raw.tls.cert_file,
                "tls.cert_file",
            ),
            src.string(
                "ARGILLA_GATEWAY_TLS_KEY_FILE",
                raw.tls.key_file,
                "tls.key_file",
            ),
        ) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(Tls {
                cert_file: cert.into(),
                key_file: key.into(),
            }),
            _ => {
                return Err(Error::Config(
                    "TLS needs both tls.cert_file and tls.key_file (ARGILLA_GATEWAY_TLS_CERT_FILE, \
                     ARGILLA_GATEWAY_TLS_KEY_FILE), or neither"
                        .into(),
                ));
            }
        };

        let worker_threads = src.parsed(
            "ARGILLA_GATEWAY_WORKER_THREADS",
            raw.worker_threads,
            "worker_threads",
            0,
        )?;
        let worker_threads = match worker_threads {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            n => n,
        };

        let log_format = match src
            .string("ARGILLA_GATEWAY_LOG_FORMAT", raw.log_format, "log_format")
            .as_deref()
        {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(Error::Config(format!(
                    "log_format must be `text` or `json`, got {other:?}"
                )));
            }
        };

        let oidc = crate::oidc::config::from_raw(raw.oidc, env, secret_key.is_some())?;

        Ok(Self {
            listen,
            upstream: Upstream {
                url,
                mode,
                api_key,
                api_key_is_default,
                connect_timeout,
                response_timeout,
                max_connections: upstream_max_connections,
                max_connections_per_client,
                idle_timeout: secs(idle_timeout_secs),
            },
            auth: Auth {
                users_file: users_file.map(PathBuf::from),
                default_api_key,
                default_password_hash,
                secret_key,
                token_expiration: Duration::from_secs(token_minutes.saturating_mul(60)),
                bcrypt_concurrency,
                credential_cache_ttl,
                credential_cache_capacity,
            },
            rate_limit: RateLimit {
                failures_per_address,
                failures_per_username,
                window,
                trusted_proxies,
            },
            reload: Reload {
                poll_interval,
                debounce,
            },
            limits: Limits {
                max_body_bytes,
                max_list_response_bytes,
                header_read_timeout,
                grace_period,
                max_header_bytes,
                max_connections,
                max_unauthenticated_connections,
                body_read_timeout: secs(body_read_timeout),
                body_idle_timeout: secs(body_idle_timeout),
            },
            log_format,
            metrics_listen,
            tls,
            worker_threads,
            file: None,
            oidc,
        })
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

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn positive(name: &str, n: usize) -> Result<(), Error> {
    if n == 0 {
        return Err(Error::Config(format!("{name} must be at least 1")));
    }
    Ok(())
}

fn check_header_value(what: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() || http::HeaderValue::from_str(value).is_err() {
        return Err(Error::Config(format!(
            "the {what} must be a non-empty value that fits in an HTTP header"
        )));
    }
    Ok(())
}

fn parse_upstream_url(text: &str) -> Result<Uri, Error> {
    let bad = |why: &str| {
        Error::Config(format!(
            "upstream URL {text:?} (ARGILLA_GATEWAY_UPSTREAM_URL / upstream.url): {why}"
        ))
    };
    let uri: Uri = text.trim().parse().map_err(|e| bad(&format!("{e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(bad(&format!(
                "scheme {other:?} is not supported; use http:// (the upstream runs beside the \
                 gateway)"
            )));
        }
        None => return Err(bad("needs a scheme and host, like http://argilla:6900")),
    }
    if uri.authority().is_none() {
        return Err(bad("needs a host, like http://argilla:6900"));
    }
    if uri.query().is_some() {
        return Err(bad("must not carry a query"));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn with_env(toml: Option<&str>, vars: &[(&str, &str)]) -> Result<Config, Error> {
        let env: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_sources(toml, &move |name| env.get(name).cloned())
    }

    fn err(toml: Option<&str>, vars: &[(&str, &str)]) -> String {
        with_env(toml, vars).unwrap_err().to_string()
    }

    #[test]
    fn defaults_without_file_or_environment() {
        let config = with_env(None, &[]).unwrap();
        assert_eq!(config.listen, "127.0.0.1:6900".parse().unwrap());
        assert_eq!(config.upstream.mode, Mode::Service);
        assert!(config.upstream.api_key_is_default);
        assert_eq!(config.auth.default_api_key, "argilla.apikey");
        assert_eq!(config.auth.default_password_hash, DEFAULT_PASSWORD_HASH);
        assert_eq!(
            config.auth.token_expiration,
            Duration::from_secs(30_000 * 60)
        );
        assert!(config.auth.users_file.is_none());
    }

    #[test]
    fn shipped_gateway_toml_parses() {
        let text = include_str!("../gateway.toml");
        let config = with_env(Some(text), &[]).unwrap();
        assert_eq!(config.listen.port(), 6900);
    }

    #[test]
    fn environment_beats_file() {
        let config = with_env(
            Some("listen = \"127.0.0.1:7000\"\n[upstream]\nmode = \"service\"\n"),
            &[
                ("ARGILLA_GATEWAY_LISTEN", "127.0.0.1:7001"),
                ("ARGILLA_GATEWAY_UPSTREAM_MODE", "passthrough"),
            ],
        )
        .unwrap();
        assert_eq!(config.listen.port(), 7001);
        assert_eq!(config.upstream.mode, Mode::Passthrough);
    }

    #[test]
    fn file_beats_default() {
        let config = with_env(
            Some("[auth]\ntoken_expiration_in_minutes = 5\nusers_file = \"/etc/u.yml\"\n"),
            &[],
        )
        .unwrap();
        assert_eq!(config.auth.token_expiration, Duration::from_secs(300));
        assert_eq!(config.auth.users_file, Some(PathBuf::from("/etc/u.yml")));
    }

    #[test]
    fn unknown_key_is_named() {
        let message = err(Some("[upstream]\nmodee = \"service\"\n"), &[]);
        assert!(message.contains("modee"), "{message}");
        let message = err(Some("listn = \"x\"\n"), &[]);
        assert!(message.contains("listn"), "{message}");
    }

    #[test]
    #[expect(clippy::too_many_lines, reason = "the table is the test")]
    fn bad_values_name_their_setting() {
        let cases: &[(&str, Option<&str>, &[(&str, &str)], &str)] = &[
            (
                "listen not an address",
                None,
                &[("ARGILLA_GATEWAY_LISTEN", "nope")],
                "ARGILLA_GATEWAY_LISTEN",
            ),
            (
                "mode unknown",
                None,
                &[("ARGILLA_GATEWAY_UPSTREAM_MODE", "proxy")],
                "passthrough",
            ),
            (
                "https upstream",
                None,
                &[("ARGILLA_GATEWAY_UPSTREAM_URL", "https://x")],
                "scheme",
            ),
            (
                "upstream without scheme",
                Some("[upstream]\nurl = \"argilla:6900\"\n"),
                &[],
                "upstream URL",
            ),
            (
                "plaintext default password",
                None,
                &[("ARGILLA_LOCAL_AUTH_DEFAULT_PASSWORD", "1234")],
                "ARGILLA_LOCAL_AUTH_DEFAULT_PASSWORD",
            ),
            (
                "argilla default secret",
                None,
                &[("ARGILLA_LOCAL_AUTH_SECRET_KEY", "secret")],
                "public",
            ),
            (
                "short secret",
                None,
                &[("ARGILLA_LOCAL_AUTH_SECRET_KEY", "abc")],
                "16",
            ),
            (
                "zero expiry",
                None,
                &[("ARGILLA_LOCAL_AUTH_TOKEN_EXPIRATION_IN_MINUTES", "0")],
                "at least 1",
            ),
            (
                "expiry not a number",
                None,
                &[("ARGILLA_LOCAL_AUTH_TOKEN_EXPIRATION_IN_MINUTES", "ten")],
                "ARGILLA_LOCAL_AUTH_TOKEN_EXPIRATION_IN_MINUTES",
            ),
            (
                "negative in file",
                Some("[limits]\nmax_body_bytes = -1\n"),
                &[],
                "max_body_bytes",
            ),
            (
                "zero body limit",
                Some("[limits]\nmax_body_bytes = 0\n"),
                &[],
                "max_body_bytes",
            ),
            (
                "bad proxy",
                Some("[rate_limit]\ntrusted_proxies = [\"10.0.0.0/8\"]\n"),
                &[],
                "trusted_proxies",
            ),
            (
                "upstream key with newline",
                None,
                &[("ARGILLA_GATEWAY_UPSTREAM_API_KEY", "a\nb")],
                "upstream API key",
            ),
            (
                "log format",
                Some("log_format = \"xml\"\n"),
                &[],
                "log_format",
            ),
            ("wrong type", Some("listen = 6900\n"), &[], "listen"),
            (
                "tiny header limit",
                None,
                &[("ARGILLA_GATEWAY_MAX_HEADER_BYTES", "100")],
                "8192",
            ),
            (
                "metrics on the main port",
                Some("listen = \"127.0.0.1:7000\"\nmetrics_listen = \"127.0.0.1:7000\"\n"),
                &[],
                "metrics_listen",
            ),
            (
                "metrics not an address",
                None,
                &[("ARGILLA_GATEWAY_METRICS_LISTEN", "9090")],
                "ARGILLA_GATEWAY_METRICS_LISTEN",
            ),
        ];
        for (case, toml, vars, needle) in cases {
            let message = err(*toml, vars);
            assert!(message.contains(needle), "{case}: {message}");
        }
    }

    #[test]
    fn empty_environment_value_counts_as_unset() {
        let config = with_env(
            Some("[upstream]\napi_key = \"from-file\"\n"),
            &[("ARGILLA_GATEWAY_UPSTREAM_API_KEY", "")],
        )
        .unwrap();
        assert_eq!(config.upstream.api_key, "from-file");
        assert!(!config.upstream.api_key_is_default);
    }

    #[test]
    fn dot_users_yml_is_used_only_when_nothing_is_configured() {
        let config = with_env(None, &[]).unwrap().with_default_users_file(true);
        assert_eq!(config.auth.users_file, Some(PathBuf::from(".users.yml")));
        let config = with_env(None, &[("ARGILLA_LOCAL_AUTH_USERS_DB_FILE", "/u.yml")])
            .unwrap()
            .with_default_users_file(true);
        assert_eq!(config.auth.users_file, Some(PathBuf::from("/u.yml")));
    }

    #[test]
    fn trusted_proxies_from_environment() {
        let config = with_env(
            None,
            &[("ARGILLA_GATEWAY_TRUSTED_PROXIES", "127.0.0.1, ::1")],
        )
        .unwrap();
        assert_eq!(config.rate_limit.trusted_proxies.len(), 2);
    }
}
