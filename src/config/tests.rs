//! How file, environment and defaults combine, and how bad values are refused.

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
    let text = include_str!("../../gateway.toml");
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
