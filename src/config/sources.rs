//! Reading the sources: the file as written ([`RawConfig`], unknown keys refused), then every
//! setting through its row of [`super::settings`], checked, into one [`Config`].

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use http::Uri;
use serde::Deserialize;

use super::{
    Auth, Config, DEFAULT_API_KEY, DEFAULT_PASSWORD_HASH, DEFAULT_TOKEN_EXPIRATION_MINUTES, Limits,
    LogFormat, Mode, RateLimit, Reload, Tls, Upstream,
    settings::{self, Setting, Source},
};
use crate::error::Error;

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

impl Config {
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
            &settings::LISTEN,
            raw.listen
                .map(|s| s.parse::<SocketAddr>())
                .transpose()
                .map_err(|e| Error::Config(format!("`{}` in {file}: {e}", settings::LISTEN.key)))?,
            SocketAddr::from(([127, 0, 0, 1], 6900)),
        )?;

        let url_text = src
            .string(&settings::UPSTREAM_URL, raw.upstream.url)
            .unwrap_or_else(|| "http://127.0.0.1:6901".to_owned());
        let url = parse_upstream_url(&url_text)?;

        let mode = match src
            .string(&settings::UPSTREAM_MODE, raw.upstream.mode)
            .as_deref()
            .map(str::trim)
        {
            None | Some("service") => Mode::Service,
            Some("passthrough") => Mode::Passthrough,
            Some(other) => {
                let row = settings::UPSTREAM_MODE;
                return Err(Error::Config(format!(
                    "upstream mode must be `service` or `passthrough`, got {other:?} \
                     ({} / {})",
                    row.env, row.key
                )));
            }
        };
        let api_key = src.string(&settings::UPSTREAM_API_KEY, raw.upstream.api_key);
        let api_key_is_default = api_key.is_none();
        let api_key = api_key.unwrap_or_else(|| DEFAULT_API_KEY.to_owned());
        check_header_value("upstream API key", &api_key)?;

        let connect_timeout = secs(src.parsed(
            &settings::UPSTREAM_CONNECT_TIMEOUT_SECS,
            raw.upstream.connect_timeout_secs,
            5,
        )?);
        let response_timeout = secs(src.parsed(
            &settings::UPSTREAM_RESPONSE_TIMEOUT_SECS,
            raw.upstream.response_timeout_secs,
            300,
        )?);
        let upstream_max_connections = src.parsed(
            &settings::UPSTREAM_MAX_CONNECTIONS,
            raw.upstream.max_connections,
            4096,
        )?;
        positive(
            &settings::UPSTREAM_MAX_CONNECTIONS,
            upstream_max_connections,
        )?;
        let max_connections_per_client = src.parsed(
            &settings::UPSTREAM_MAX_CONNECTIONS_PER_CLIENT,
            raw.upstream.max_connections_per_client,
            32,
        )?;
        positive(
            &settings::UPSTREAM_MAX_CONNECTIONS_PER_CLIENT,
            max_connections_per_client,
        )?;
        let idle_timeout_secs = src.parsed(
            &settings::UPSTREAM_IDLE_TIMEOUT_SECS,
            raw.upstream.idle_timeout_secs,
            4,
        )?;
        positive(
            &settings::UPSTREAM_IDLE_TIMEOUT_SECS,
            usize::try_from(idle_timeout_secs).unwrap_or(usize::MAX),
        )?;

        let users_file = src.string(&settings::AUTH_USERS_FILE, raw.auth.users_file);
        let default_api_key = src
            .string(&settings::AUTH_DEFAULT_API_KEY, raw.auth.default_api_key)
            .unwrap_or_else(|| DEFAULT_API_KEY.to_owned());
        let default_password_hash = src
            .string(&settings::AUTH_DEFAULT_PASSWORD, raw.auth.default_password)
            .unwrap_or_else(|| DEFAULT_PASSWORD_HASH.to_owned());
        if let Err(why) = crate::users::check_bcrypt_hash(&default_password_hash) {
            let row = settings::AUTH_DEFAULT_PASSWORD;
            return Err(Error::Config(format!(
                "{} / {} must be a bcrypt hash (for example from `htpasswd -nbB`): {why}",
                row.env, row.key
            )));
        }
        let secret_key = src.string(&settings::AUTH_SECRET_KEY, raw.auth.secret_key);
        if let Some(secret) = &secret_key {
            let row = settings::AUTH_SECRET_KEY;
            if secret == "secret" {
                return Err(Error::Config(format!(
                    "{} / {} is `secret`, Argilla's public default: anyone could forge tokens. \
                     Use a long random value.",
                    row.env, row.key
                )));
            }
            if secret.len() < 16 {
                return Err(Error::Config(format!(
                    "{} / {} must be at least 16 characters",
                    row.env, row.key
                )));
            }
        }
        let token_minutes = src.parsed(
            &settings::AUTH_TOKEN_EXPIRATION_IN_MINUTES,
            raw.auth.token_expiration_in_minutes,
            DEFAULT_TOKEN_EXPIRATION_MINUTES,
        )?;
        if token_minutes == 0 {
            let row = settings::AUTH_TOKEN_EXPIRATION_IN_MINUTES;
            return Err(Error::Config(format!(
                "{} / {} must be at least 1",
                row.env, row.key
            )));
        }
        let bcrypt_concurrency = src.parsed(
            &settings::AUTH_BCRYPT_CONCURRENCY,
            raw.auth.bcrypt_concurrency,
            std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
        )?;
        positive(&settings::AUTH_BCRYPT_CONCURRENCY, bcrypt_concurrency)?;
        let credential_cache_ttl = secs(src.parsed(
            &settings::AUTH_CREDENTIAL_CACHE_SECS,
            raw.auth.credential_cache_secs,
            300,
        )?);
        let credential_cache_capacity = src.parsed(
            &settings::AUTH_CREDENTIAL_CACHE_CAPACITY,
            raw.auth.credential_cache_capacity,
            100_000,
        )?;

        let failures_per_address = src.parsed(
            &settings::RATE_LIMIT_FAILURES_PER_ADDRESS,
            raw.rate_limit.failures_per_address,
            100,
        )?;
        let failures_per_username = src.parsed(
            &settings::RATE_LIMIT_FAILURES_PER_USERNAME,
            raw.rate_limit.failures_per_username,
            10,
        )?;
        positive(
            &settings::RATE_LIMIT_FAILURES_PER_ADDRESS,
            failures_per_address as usize,
        )?;
        positive(
            &settings::RATE_LIMIT_FAILURES_PER_USERNAME,
            failures_per_username as usize,
        )?;
        let window = secs(src.parsed(
            &settings::RATE_LIMIT_WINDOW_SECS,
            raw.rate_limit.window_secs,
            300,
        )?);
        let proxies_text = src.string(
            &settings::RATE_LIMIT_TRUSTED_PROXIES,
            raw.rate_limit.trusted_proxies.map(|list| list.join(",")),
        );
        let trusted_proxies = proxies_text
            .iter()
            .flat_map(|text| text.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpAddr>().map_err(|_| {
                    Error::Config(format!(
                        "{}: {s:?} is not an IP address",
                        settings::RATE_LIMIT_TRUSTED_PROXIES.key
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let poll_interval = secs(src.parsed(
            &settings::RELOAD_POLL_INTERVAL_SECS,
            raw.reload.poll_interval_secs,
            5,
        )?);
        let debounce = Duration::from_millis(src.parsed(
            &settings::RELOAD_DEBOUNCE_MILLIS,
            raw.reload.debounce_millis,
            50,
        )?);
        if poll_interval.is_zero() {
            return Err(Error::Config(format!(
                "{} must be at least 1",
                settings::RELOAD_POLL_INTERVAL_SECS.key
            )));
        }

        let max_body_bytes = src.parsed(
            &settings::LIMITS_MAX_BODY_BYTES,
            raw.limits.max_body_bytes,
            1 << 20,
        )?;
        positive(&settings::LIMITS_MAX_BODY_BYTES, max_body_bytes)?;
        let max_list_response_bytes = src.parsed(
            &settings::LIMITS_MAX_LIST_RESPONSE_BYTES,
            raw.limits.max_list_response_bytes,
            64 << 20,
        )?;
        positive(
            &settings::LIMITS_MAX_LIST_RESPONSE_BYTES,
            max_list_response_bytes,
        )?;
        let header_read_timeout = secs(src.parsed(
            &settings::LIMITS_HEADER_READ_TIMEOUT_SECS,
            raw.limits.header_read_timeout_secs,
            30,
        )?);
        let grace_period = secs(src.parsed(
            &settings::LIMITS_GRACE_PERIOD_SECS,
            raw.limits.grace_period_secs,
            30,
        )?);

        let max_header_bytes = src.parsed(
            &settings::LIMITS_MAX_HEADER_BYTES,
            raw.limits.max_header_bytes,
            64 * 1024,
        )?;
        if max_header_bytes < 8192 {
            let row = settings::LIMITS_MAX_HEADER_BYTES;
            return Err(Error::Config(format!(
                "{} / {} must be at least 8192",
                row.key, row.env
            )));
        }
        let max_connections = src.parsed(
            &settings::LIMITS_MAX_CONNECTIONS,
            raw.limits.max_connections,
            10_000,
        )?;
        positive(&settings::LIMITS_MAX_CONNECTIONS, max_connections)?;
        let max_unauthenticated_connections = src.parsed(
            &settings::LIMITS_MAX_UNAUTHENTICATED_CONNECTIONS,
            raw.limits.max_unauthenticated_connections,
            max_connections.div_ceil(2),
        )?;
        if max_unauthenticated_connections == 0 || max_unauthenticated_connections > max_connections
        {
            return Err(Error::Config(format!(
                "{} / {} must be between 1 and {} ({max_connections}), got \
                 {max_unauthenticated_connections}",
                settings::LIMITS_MAX_UNAUTHENTICATED_CONNECTIONS.key,
                settings::LIMITS_MAX_UNAUTHENTICATED_CONNECTIONS.env,
                settings::LIMITS_MAX_CONNECTIONS.key
            )));
        }
        let body_read_timeout = src.parsed(
            &settings::LIMITS_BODY_READ_TIMEOUT_SECS,
            raw.limits.body_read_timeout_secs,
            60,
        )?;
        positive(
            &settings::LIMITS_BODY_READ_TIMEOUT_SECS,
            usize::try_from(body_read_timeout).unwrap_or(usize::MAX),
        )?;
        let body_idle_timeout = src.parsed(
            &settings::LIMITS_BODY_IDLE_TIMEOUT_SECS,
            raw.limits.body_idle_timeout_secs,
            60,
        )?;
        positive(
            &settings::LIMITS_BODY_IDLE_TIMEOUT_SECS,
            usize::try_from(body_idle_timeout).unwrap_or(usize::MAX),
        )?;
        let metrics_listen = src
            .pick(&settings::METRICS_LISTEN, raw.metrics_listen)
            .map(|(value, origin)| {
                value
                    .trim()
                    .parse::<SocketAddr>()
                    .map_err(|e| Error::Config(format!("{origin}: {e} (got {value:?})")))
            })
            .transpose()?;
        if metrics_listen == Some(listen) {
            return Err(Error::Config(format!(
                "{} must differ from {}: metrics are served on their own listener",
                settings::METRICS_LISTEN.key,
                settings::LISTEN.key
            )));
        }

        let tls = match (
            src.string(&settings::TLS_CERT_FILE, raw.tls.cert_file),
            src.string(&settings::TLS_KEY_FILE, raw.tls.key_file),
        ) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(Tls {
                cert_file: cert.into(),
                key_file: key.into(),
            }),
            _ => {
                let (cert, key) = (settings::TLS_CERT_FILE, settings::TLS_KEY_FILE);
                return Err(Error::Config(format!(
                    "TLS needs both {} and {} ({}, {}), or neither",
                    cert.key, key.key, cert.env, key.env
                )));
            }
        };

        let worker_threads = src.parsed(&settings::WORKER_THREADS, raw.worker_threads, 0)?;
        let worker_threads = match worker_threads {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            n => n,
        };

        let log_format = match src.string(&settings::LOG_FORMAT, raw.log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(Error::Config(format!(
                    "{} must be `text` or `json`, got {other:?}",
                    settings::LOG_FORMAT.key
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
}

/// Seconds as written in the file, as a duration.
fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Refuses 0 for a count or time where 0 would stop the gateway serving anything.
fn positive(row: &Setting, n: usize) -> Result<(), Error> {
    if n == 0 {
        return Err(Error::Config(format!("{} must be at least 1", row.key)));
    }
    Ok(())
}

/// A key the gateway sends in a header must be sendable, or every request would fail later.
fn check_header_value(what: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() || http::HeaderValue::from_str(value).is_err() {
        return Err(Error::Config(format!(
            "the {what} must be a non-empty value that fits in an HTTP header"
        )));
    }
    Ok(())
}

/// The upstream base URL: plain `http` (the upstream runs beside the gateway), a host, no query.
fn parse_upstream_url(text: &str) -> Result<Uri, Error> {
    let bad = |why: &str| {
        Error::Config(format!(
            "upstream URL {text:?} ({} / {}): {why}",
            settings::UPSTREAM_URL.env,
            settings::UPSTREAM_URL.key
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
