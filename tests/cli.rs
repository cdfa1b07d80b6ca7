//! The real binary: start-up refusals, `check`, `hash-password`, and a default-user start.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic on failure, like tests"
)]
#![allow(clippy::too_many_lines, reason = "case tables are long on purpose")]

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

fn gateway(dir: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> Command {
    common::binary(dir, env, args)
}

fn run(dir: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> (bool, String) {
    let output = gateway(dir, env, args).output().expect("binary runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn configured_but_missing_users_file_stops_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yml");
    let missing = missing.to_str().unwrap();
    let (ok, text) = run(
        dir.path(),
        &[("ARGILLA_LOCAL_AUTH_USERS_DB_FILE", missing)],
        &[],
    );
    assert!(!ok, "{text}");
    assert!(
        text.contains("nope.yml") && text.contains("not found"),
        "{text}"
    );
}

#[test]
fn duplicate_key_stops_start_naming_both_users() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.yml");
    common::UsersFile::new()
        .with(common::Entry::new("ann").password("pw").key("same-key"))
        .with(common::Entry::new("ben").password("pw").key("same-key"))
        .write(&file);
    let (ok, text) = run(
        dir.path(),
        &[("ARGILLA_LOCAL_AUTH_USERS_DB_FILE", file.to_str().unwrap())],
        &[],
    );
    assert!(!ok, "{text}");
    assert!(
        text.contains("\"ann\"") && text.contains("\"ben\"") && text.contains("duplicate api_key"),
        "{text}"
    );
    assert!(!text.contains("same-key"), "the key leaked: {text}");
}

#[test]
fn invalid_setting_stops_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = run(
        dir.path(),
        &[("ARGILLA_GATEWAY_UPSTREAM_MODE", "sideways")],
        &[],
    );
    assert!(!ok);
    assert!(text.contains("ARGILLA_GATEWAY_UPSTREAM_MODE"), "{text}");
    std::fs::write(
        dir.path().join("gateway.toml"),
        "[upstream]\nurll = \"x\"\n",
    )
    .unwrap();
    let (ok, text) = run(dir.path(), &[], &[]);
    assert!(!ok);
    assert!(text.contains("urll"), "{text}");
}

#[test]
fn check_reports_users_or_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.yml");
    std::fs::write(&file, common::users_yaml()).unwrap();
    let env = [("ARGILLA_LOCAL_AUTH_USERS_DB_FILE", file.to_str().unwrap())];
    let (ok, text) = run(dir.path(), &env, &["check"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("5 users (1 superusers, 1 disabled)"),
        "{text}"
    );
    assert!(text.contains("superusers: root"), "{text}");
    std::fs::write(
        &file,
        "- username: Bad\n  hashed_password: plain\n  api_key: k\n- username: ok\n  hashed_password: also-plain\n  api_key: k2\n",
    )
    .unwrap();
    let (ok, text) = run(dir.path(), &env, &["check"]);
    assert!(!ok);
    assert!(
        text.contains("line 1") && text.contains("line 4") && text.contains("\"ok\""),
        "{text}"
    );
}

#[test]
fn hash_password_output_verifies_and_loads() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = gateway(dir.path(), &[], &["hash-password", "--cost", "4"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let hash = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(bcrypt::verify("correct horse", &hash).unwrap(), "{hash}");
    assert!(argilla_gateway::users::check_bcrypt_hash(&hash).is_ok());
}

#[test]
fn default_user_start_warns_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = gateway(dir.path(), &[("RUST_LOG", "info")], &[])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let started = Instant::now();
    let mut warned = false;
    let mut listening = false;
    while started.elapsed() < Duration::from_secs(20) {
        let Some(Ok(line)) = lines.next() else { break };
        warned |= line.contains("DEFAULT user");
        if line.contains("listening") {
            listening = true;
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(warned && listening, "warned={warned} listening={listening}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_log_has_the_fields_and_no_secret() {
    let upstream = common::Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.yml");
    std::fs::write(&file, common::users_yaml()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let secret_key = "log-test-secret-0123456789";
    let mut child = gateway(
        dir.path(),
        &[
            ("ARGILLA_GATEWAY_LISTEN", &listen),
            ("ARGILLA_GATEWAY_UPSTREAM_URL", &upstream.url()),
            ("ARGILLA_GATEWAY_UPSTREAM_API_KEY", common::SERVICE_KEY),
            ("ARGILLA_LOCAL_AUTH_USERS_DB_FILE", file.to_str().unwrap()),
            ("ARGILLA_LOCAL_AUTH_SECRET_KEY", secret_key),
            ("ARGILLA_GATEWAY_LOG_FORMAT", "json"),
            ("RUST_LOG", "debug"),
        ],
        &[],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    let base = format!("http://{listen}");
    let started = Instant::now();
    while common::get_opt(&format!("{base}/healthz")).await != Some(200) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "gateway did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let login = common::send(
        "POST",
        &format!("{base}/api/security/token"),
        &[("content-type", "application/x-www-form-urlencoded")],
        "username=alice&password=alice-pw",
    )
    .await;
    let token = login.json()["access_token"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {token}");
    let basic = common::basic("bob", "bob-pw");
    for headers in [
        vec![("x-argilla-api-key", "carol-key")],
        vec![("authorization", basic.as_str())],
        vec![("authorization", bearer.as_str())],
        vec![("x-argilla-api-key", "wrong-key-value")],
    ] {
        common::get(
            &format!("{base}/api/datasets/ds?workspace=team-a&token=query-secret"),
            &headers,
        )
        .await;
    }
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert!(child.wait().unwrap().success());
    let lines = reader.join().unwrap();
    let access: Vec<serde_json::Value> = lines
        .iter()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
        })
        .filter(|v| v["target"] == "access")
        .collect();
    assert!(access.len() >= 5, "{lines:?}");
    let carol = access
        .iter()
        .find(|v| v["user"] == "carol")
        .expect("an access line for carol");
    for field in [
        "method",
        "path",
        "status",
        "route",
        "workspace",
        "decision",
        "request_id",
        "latency_ms",
        "peer",
        "credential",
    ] {
        assert!(!carol[field].is_null(), "field {field} missing: {carol}");
    }
    assert_eq!(carol["credential"], "api_key");
    let bob = access
        .iter()
        .find(|v| v["user"] == "bob")
        .expect("an access line for bob");
    assert_eq!(bob["credential"], "basic");
    assert_eq!(carol["path"], "/api/datasets/ds", "no query in the log");
    let all = lines.join("\n");
    let hash = common::hash("bob-pw");
    for secret in [
        "alice-pw",
        "bob-pw",
        "carol-key",
        "wrong-key-value",
        "query-secret",
        token.as_str(),
        secret_key,
        common::SERVICE_KEY,
        hash.as_str(),
    ] {
        assert!(!all.contains(secret), "the log contains {secret:?}");
    }
}
