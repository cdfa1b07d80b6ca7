//! The rows against what people read: the README's configuration table, the shipped
//! `gateway.toml` and `deploy/env.example` must name the same keys, variables and defaults, and
//! every row must really be read from both the file and the environment.

use std::collections::{BTreeMap, HashMap};

use super::{SETTINGS, Setting};
use crate::config::Config;

const README: &str = include_str!("../../../README.md");
const GATEWAY_TOML: &str = include_str!("../../../gateway.toml");
const ENV_EXAMPLE: &str = include_str!("../../../deploy/env.example");
const DOCKER_COMPOSE: &str = include_str!("../../../docker-compose.yml");

/// The README's one row for the whole `[oidc]` section: its settings are read by
/// `oidc::config` and documented in their own README section, not in [`SETTINGS`].
const OIDC_ROW: (&str, &str) = ("[oidc]", "ARGILLA_GATEWAY_OIDC_*");

/// Variables of `deploy/env.example` that only `docker-compose.yml` reads (volume, user, port,
/// image), never the gateway.
const COMPOSE_ONLY: &[&str] = &[
    "ARGILLA_GATEWAY_USERS_DIR",
    "ARGILLA_GATEWAY_USER",
    "ARGILLA_GATEWAY_PORT",
    "ARGILLA_GATEWAY_IMAGE",
];

fn row(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|row| row.key == key)
}

/// The backticked pieces of a Markdown cell, in order.
fn backticked(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// The value a default states literally (the cell starts with a backticked value), or `None`
/// for a default in words ("CPU count", "unset (off)"), which no file or example can repeat.
fn literal_default(row: &Setting) -> Option<&'static str> {
    row.default
        .strip_prefix('`')
        .and_then(|rest| rest.split('`').next())
}

/// (key, environment variable, default cell) of each setting in the README's table; a row
/// naming several keys (`tls.cert_file`, `tls.key_file`) gives one entry per key.
fn readme_rows() -> Vec<(String, String, String)> {
    let section = README
        .split("\n## Configuration\n")
        .nth(1)
        .expect("README.md has a `## Configuration` section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut rows = Vec::new();
    for line in section.lines().filter(|line| line.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 4, "key | variable | default | meaning: {line}");
        let (keys, envs) = (backticked(cells[0]), backticked(cells[1]));
        assert_eq!(keys.len(), envs.len(), "one variable per key: {line}");
        for (key, env) in keys.into_iter().zip(envs) {
            rows.push((key.to_owned(), env.to_owned(), cells[2].to_owned()));
        }
    }
    assert!(
        rows.len() > 30,
        "the table was not found: {} rows",
        rows.len()
    );
    rows
}

#[test]
fn readme_table_has_one_row_per_setting() {
    let readme = readme_rows();
    for (key, env, default) in &readme {
        if (key.as_str(), env.as_str()) == OIDC_ROW {
            continue;
        }
        let row = row(key).unwrap_or_else(|| panic!("README names `{key}`, not a setting"));
        assert_eq!(env, row.env, "README: variable of `{key}`");
        assert_eq!(default, row.default, "README: default of `{key}`");
    }
    for row in SETTINGS {
        let times = readme.iter().filter(|(key, ..)| key == row.key).count();
        assert_eq!(times, 1, "README rows for `{}`", row.key);
    }
    assert!(
        readme
            .iter()
            .any(|(key, env, _)| (key.as_str(), env.as_str()) == OIDC_ROW),
        "README: the `[oidc]` row"
    );
}

/// A TOML value as the README would write it: strings bare, lists joined by commas.
fn plain(value: &toml::Value) -> String {
    match value {
        toml::Value::String(text) => text.clone(),
        toml::Value::Array(items) => format!(
            "[{}]",
            items.iter().map(plain).collect::<Vec<_>>().join(", ")
        ),
        other => other.to_string(),
    }
}

/// A TOML value as an environment variable carries it: lists comma-separated.
fn as_env(value: &toml::Value) -> String {
    match value {
        toml::Value::Array(items) => items.iter().map(plain).collect::<Vec<_>>().join(","),
        other => plain(other),
    }
}

fn toml_value(text: &str) -> toml::Value {
    let table: toml::Table = toml::from_str(&format!("v = {text}"))
        .unwrap_or_else(|e| panic!("not a TOML value: {text}: {e}"));
    table["v"].clone()
}

/// Every `key = value` line of `gateway.toml`, commented out or not: dotted key → (whether
/// commented, value text).
fn gateway_toml_keys() -> BTreeMap<String, (bool, String)> {
    let mut table = String::new();
    let mut keys = BTreeMap::new();
    for line in GATEWAY_TOML.lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            table = format!("{name}.");
            continue;
        }
        let (commented, text) = match line.strip_prefix("# ") {
            Some(text) => (true, text),
            None => (false, line),
        };
        let Some((key, value)) = text.split_once(" = ") else {
            continue;
        };
        if key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            let previous = keys.insert(format!("{table}{key}"), (commented, value.to_owned()));
            assert!(
                previous.is_none(),
                "gateway.toml names `{table}{key}` twice"
            );
        }
    }
    keys
}

#[test]
fn gateway_toml_lists_every_setting_with_its_default() {
    let keys = gateway_toml_keys();
    for row in SETTINGS {
        assert!(
            keys.contains_key(row.key),
            "gateway.toml: `{}` missing",
            row.key
        );
        assert!(
            GATEWAY_TOML.contains(row.env),
            "gateway.toml: `{}` does not name {}",
            row.key,
            row.env
        );
    }
    for (key, (commented, value)) in &keys {
        if key.starts_with("oidc.") {
            continue;
        }
        let row = row(key).unwrap_or_else(|| panic!("gateway.toml names `{key}`, not a setting"));
        if *commented {
            // An example, not a default: a secret, a path, or a default the gateway computes.
            continue;
        }
        let literal = literal_default(row).unwrap_or_else(|| {
            panic!(
                "gateway.toml sets `{key}`, whose default is computed ({}): leave it commented",
                row.default
            )
        });
        assert_eq!(plain(&toml_value(value)), literal, "gateway.toml: `{key}`");
    }
}

#[test]
fn gateway_toml_settings_equal_the_built_in_defaults() {
    let shipped = Config::from_sources(Some(GATEWAY_TOML), &|_| None).unwrap();
    let built_in = Config::from_sources(None, &|_| None).unwrap();
    assert_eq!(format!("{shipped:?}"), format!("{built_in:?}"));
}

#[test]
fn gateway_toml_oidc_examples_are_real_keys() {
    // The `[oidc]` keys live in `oidc::config`; the parser itself refuses unknown ones, so the
    // commented examples, uncommented, must parse.
    let section = GATEWAY_TOML
        .split("\n[oidc]\n")
        .nth(1)
        .expect("gateway.toml has an [oidc] table");
    let mut text = String::from("[oidc]\n");
    for line in section.lines() {
        if let Some(setting) = line.strip_prefix("# ").filter(|l| l.contains(" = ")) {
            text.push_str(setting);
            text.push('\n');
        }
    }
    assert!(text.lines().count() > 10, "{text}");
    Config::from_sources(Some(&text), &|_| None).unwrap_or_else(|e| panic!("{e}\n{text}"));
}

#[test]
fn env_example_names_real_settings_with_their_defaults() {
    let mut seen = 0;
    for line in ENV_EXAMPLE.lines() {
        let text = line.trim_start_matches(['#', ' ']);
        let Some((var, rest)) = text.split_once('=') else {
            continue;
        };
        if !var.starts_with("ARGILLA_") || var.contains(' ') {
            continue;
        }
        seen += 1;
        let value = rest.split_whitespace().next().unwrap_or("");
        if COMPOSE_ONLY.contains(&var) {
            assert!(
                DOCKER_COMPOSE.contains(&format!("${{{var}:-{value}}}")),
                "env.example: {var}={value} is not docker-compose.yml's default"
            );
            continue;
        }
        let row = SETTINGS
            .iter()
            .find(|row| row.env == var)
            .unwrap_or_else(|| panic!("env.example names {var}, not a setting"));
        if !value.is_empty() {
            assert_eq!(Some(value), literal_default(row), "env.example: {var}");
        }
    }
    assert!(seen > 5, "env.example: {seen} variables");
}

/// A value other than the default for every row, as TOML, and what else the file needs for the
/// value to be accepted.
const SAMPLES: &[(&str, &str, &str)] = &[
    ("listen", "\"127.0.0.1:7000\"", ""),
    ("worker_threads", "97", ""),
    ("log_format", "\"json\"", ""),
    ("upstream.url", "\"http://argilla:6900/prefix\"", ""),
    ("upstream.mode", "\"passthrough\"", ""),
    ("upstream.api_key", "\"service-key\"", ""),
    ("upstream.connect_timeout_secs", "7", ""),
    ("upstream.response_timeout_secs", "7", ""),
    ("upstream.max_connections", "7", ""),
    ("upstream.max_connections_per_client", "7", ""),
    ("upstream.idle_timeout_secs", "7", ""),
    ("auth.users_file", "\"/etc/u.yml\"", ""),
    ("auth.default_api_key", "\"other.apikey\"", ""),
    (
        "auth.default_password",
        "\"$2y$04$MPcRR71ByqgSI8AaqgxrMeSdrD4BcxDIdYkr.ePQoKz7wsGK7SAca\"",
        "",
    ),
    ("auth.secret_key", "\"0123456789abcdef0123\"", ""),
    ("auth.token_expiration_in_minutes", "7", ""),
    ("auth.bcrypt_concurrency", "97", ""),
    ("auth.credential_cache_secs", "7", ""),
    ("auth.credential_cache_capacity", "7", ""),
    ("rate_limit.failures_per_address", "7", ""),
    ("rate_limit.failures_per_username", "7", ""),
    ("rate_limit.window_secs", "7", ""),
    ("rate_limit.trusted_proxies", "[\"10.0.0.1\", \"::1\"]", ""),
    ("reload.poll_interval_secs", "7", ""),
    ("reload.debounce_millis", "7", ""),
    ("limits.max_body_bytes", "7", ""),
    ("limits.max_list_response_bytes", "7", ""),
    ("limits.header_read_timeout_secs", "7", ""),
    ("limits.grace_period_secs", "7", ""),
    ("limits.max_header_bytes", "9000", ""),
    ("limits.max_connections", "7", ""),
    ("limits.max_unauthenticated_connections", "7", ""),
    ("limits.body_read_timeout_secs", "7", ""),
    ("limits.body_idle_timeout_secs", "7", ""),
    ("metrics_listen", "\"127.0.0.1:9090\"", ""),
    ("tls.cert_file", "\"/c.pem\"", "tls.key_file = \"/k.pem\"\n"),
    ("tls.key_file", "\"/k.pem\"", "tls.cert_file = \"/c.pem\"\n"),
];

#[test]
fn every_setting_is_read_from_its_key_and_its_variable() {
    let default = format!("{:?}", Config::from_sources(None, &|_| None).unwrap());
    for row in SETTINGS {
        let &(_, value, needs) = SAMPLES
            .iter()
            .find(|(key, ..)| *key == row.key)
            .unwrap_or_else(|| panic!("no sample value for `{}`", row.key));
        let from_file =
            Config::from_sources(Some(&format!("{needs}{} = {value}\n", row.key)), &|_| None)
                .unwrap_or_else(|e| panic!("`{}` = {value}: {e}", row.key));
        let env: HashMap<&str, String> = HashMap::from([(row.env, as_env(&toml_value(value)))]);
        let from_env = Config::from_sources(Some(needs), &|var| env.get(var).cloned())
            .unwrap_or_else(|e| {
                panic!("{}={:?}: {e}", row.env, env[row.env]);
            });
        let (from_file, from_env) = (format!("{from_file:?}"), format!("{from_env:?}"));
        assert_ne!(
            from_file, default,
            "`{}` = {value} changes nothing",
            row.key
        );
        assert_eq!(from_env, from_file, "{} and `{}` differ", row.env, row.key);
    }
    assert_eq!(
        SAMPLES.len(),
        SETTINGS.len(),
        "a sample for a setting that is gone"
    );
}
