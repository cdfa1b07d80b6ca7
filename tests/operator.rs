//! What an administrator reads: `check` as a pre-flight, warnings about what is valid but
//! probably not meant, configuration errors naming the file, the start-up line about the
//! upstream and its key, and reload lines that say what changed. Messages are asserted, not
//! only exit codes.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic on failure, like tests"
)]

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{Options, Upstream, get};
use http::Response;

fn gateway(dir: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> Command {
    common::binary(dir, env, args)
}

/// Runs a command to its end: (success, stdout, stderr).
fn run(dir: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    let output = gateway(dir, env, args).output().expect("binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `name`'s entry (password `pw`, key `<name>-key`) followed by the lines `extra`, valid or not.
fn entry(name: &str, extra: &str) -> String {
    format!("{}{extra}", common::Entry::new(name).password("pw").yaml())
}

#[test]
fn check_reports_on_stdout_with_the_warnings_serve_would_log() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.yml");
    let yaml = [
        entry("tom", ""),
        entry("sue", "  superuser: true\n"),
        entry("ann", "  workspaces: []\n"),
        entry("old", "  workspaces: [team-a]\n"),
    ]
    .concat();
    std::fs::write(&file, yaml).unwrap();
    let (ok, stdout, stderr) = run(dir.path(), &[], &["check", file.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stderr.is_empty(), "the report goes to stdout: {stderr}");
    assert!(
        stdout.contains(
            "line 1, user #1 (\"tom\"): tom is a superuser because `workspaces` is empty; write \
             `superuser: true` to say so, or `workspaces: []` for the own workspace only"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("sue is a superuser"), "{stdout}");
    assert!(
        stdout.contains("user #4 (\"old\"): the password hash has bcrypt cost 4, below 10"),
        "{stdout}"
    );
    assert!(
        stdout.contains("4 users (2 superusers, 0 disabled)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("warning: ARGILLA_LOCAL_AUTH_SECRET_KEY is not set"),
        "serve's configuration warnings too: {stdout}"
    );
    assert!(stdout.contains("configuration file: none"), "{stdout}");
}

#[test]
fn check_refuses_to_pass_the_built_in_default_user_unless_told() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, stdout, _) = run(dir.path(), &[], &["check"]);
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains("only the built-in default user would be served")
            && stdout.contains("--allow-default-user"),
        "{stdout}"
    );
    let (ok, stdout, _) = run(dir.path(), &[], &["check", "--allow-default-user"]);
    assert!(ok, "{stdout}");
    assert!(stdout.contains("DEFAULT user"), "{stdout}");
}

#[test]
fn check_names_every_problem_with_its_line_user_and_what_to_write() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.yml");
    let yaml = [
        entry("ann", "  disbled: true\n"),
        entry("ben", "  password: hunter2\n"),
        entry("cat", "  workspaces: team-b\n"),
        entry("dan", "  workspaces: [team-a]\n"),
    ]
    .concat();
    std::fs::write(&file, yaml).unwrap();
    let (ok, stdout, _) = run(dir.path(), &[], &["check", file.to_str().unwrap()]);
    assert!(!ok);
    for expected in [
        "line 4, user #1 (\"ann\"): unknown key `disbled`: did you mean `disabled`?",
        "line 8, user #2 (\"ben\"): unknown key `password`: the file holds bcrypt hashes only; \
         write `hashed_password:` with the output of `argilla-gateway hash-password`",
        "line 12, user #3 (\"cat\"): workspaces: invalid type: string \"team-b\", expected a \
         sequence: `workspaces` must be a list",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(!stdout.contains("dan"), "{stdout}");
    assert!(
        !stdout.contains("hunter2"),
        "the value is never echoed: {stdout}"
    );
    assert!(!stdout.contains(".[0]"), "{stdout}");

    // Broken structure: the line to re-indent, and whose entry it is.
    std::fs::write(
        &file,
        format!(
            "{}- username: eve\n  hashed_password: x\n api_key: eve-key\n",
            entry("ann", "")
        ),
    )
    .unwrap();
    let (ok, stdout, _) = run(dir.path(), &[], &["check", file.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stdout.contains("check the indentation of line 6 (user #2)"),
        "{stdout}"
    );
}

#[test]
fn a_configuration_error_names_the_file_that_was_read() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.toml");
    std::fs::write(&other, "[upstream]\nconnect_timeout_secs = \"soon\"\n").unwrap();
    let (ok, stdout, stderr) = run(
        dir.path(),
        &[],
        &["--config", other.to_str().unwrap(), "check"],
    );
    assert!(!ok);
    let text = stdout + &stderr;
    assert!(text.contains("other.toml"), "{text}");
    assert!(!text.contains("gateway.toml"), "{text}");
    std::fs::write(&other, "listen = \"nowhere\"\n").unwrap();
    let (ok, _, stderr) = run(dir.path(), &[], &["--config", other.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("`listen` in "), "{stderr}");
    assert!(stderr.contains("other.toml"), "{stderr}");
}

#[test]
fn hash_password_warns_about_a_low_cost() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = gateway(dir.path(), &[], &["hash-password", "--cost", "4"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"pw\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cost 4 is below 10"), "{stderr}");
}

/// A running binary whose log lines are collected as they come.
struct Running {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Running {
    fn start(dir: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> Self {
        let mut child = gateway(dir, env, args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, lines }
    }

    /// The first line with all of `needles`, waiting up to 20 s.
    fn wait_for(&self, needles: &[&str]) -> String {
        self.wait_for_nth(needles, 1)
    }

    /// The `n`th line with all of `needles`, waiting up to 20 s.
    fn wait_for_nth(&self, needles: &[&str], n: usize) -> String {
        let started = Instant::now();
        loop {
            if let Some(line) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .filter(|l| needles.iter().all(|needle| l.contains(needle)))
                .nth(n - 1)
            {
                return line.clone();
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no line with {needles:?} in:\n{}",
                self.lines.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, name: &str) {
        assert!(
            Command::new("kill")
                .args([&format!("-{name}"), &self.child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_says_which_file_was_read_and_whether_the_upstream_takes_the_key() {
    let refusing = Upstream::with(Arc::new(|_| {
        Response::builder()
            .status(401)
            .header("content-type", "application/json")
            .body(argilla_gateway::body::full(
                r#"{"detail":{"code":"argilla.api.errors::UnauthorizedError","params":{"detail":"Could not validate credentials"}}}"#,
            ))
            .unwrap()
    }))
    .await;
    let accepting = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, "log_format = \"text\"\n").unwrap();
    for (upstream, expected) in [
        (&accepting, "upstream reachable and accepts the service key"),
        (&refusing, "ARGILLA_GATEWAY_UPSTREAM_API_KEY"),
    ] {
        let url = upstream.url();
        let running = Running::start(
            dir.path(),
            &[
                ("ARGILLA_GATEWAY_UPSTREAM_URL", &url),
                ("ARGILLA_GATEWAY_UPSTREAM_API_KEY", "some-key"),
            ],
            &[],
        );
        running.wait_for(&["configuration file read", "gateway.toml"]);
        running.wait_for(&["listening", "listen=127.0.0.1:", "mode=service"]);
        let line = running.wait_for(&[expected]);
        assert!(line.contains(&url), "names the upstream: {line}");
        assert!(!line.contains("some-key"), "{line}");
    }
}

/// In service mode a 401 from the upstream is the service key being refused: warned about
/// (naming the setting), counted, and `/readyz` says not ready.
#[tokio::test]
async fn an_upstream_refusing_the_service_key_is_not_ready() {
    let refusing = Upstream::with(Arc::new(|_| {
        Response::builder()
            .status(401)
            .body(argilla_gateway::body::full("{}"))
            .unwrap()
    }))
    .await;
    let gw = Options::new(&refusing).start().await;
    let reply = get(
        &gw.url("/api/datasets/a?workspace=team-a"),
        &[("x-argilla-api-key", "alice-key")],
    )
    .await;
    assert_eq!(reply.status, 401);
    let ready = get(&gw.url("/readyz"), &[]).await;
    assert_eq!(
        ready.status, 503,
        "the upstream answered, but refuses the key"
    );
    let metrics = gw.state.render_metrics();
    assert!(
        metrics.contains("argilla_gateway_upstream_key_refusals_total 2"),
        "the forwarded request and the probe: {metrics}"
    );
    let accepting = Upstream::start().await;
    let gw = Options::new(&accepting).start().await;
    assert_eq!(get(&gw.url("/readyz"), &[]).await.status, 200);
    let probe = accepting.only();
    assert_eq!(probe.path, "/api/me", "the probe uses the key");
    assert_eq!(probe.header("x-argilla-api-key"), Some(common::SERVICE_KEY));
}

#[test]
fn reload_lines_count_what_changed_and_say_when_the_file_is_valid_again() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.yml");
    let write = |yaml: &str| {
        let temp = dir.path().join(".users.tmp");
        std::fs::write(&temp, yaml).unwrap();
        std::fs::rename(&temp, &file).unwrap();
    };
    let first = [
        entry("ann", "  workspaces: [a]\n"),
        entry("ben", "  workspaces: [a]\n"),
        entry("cat", "  workspaces: [a]\n  disabled: true\n"),
        entry("dan", "  workspaces: [a]\n"),
    ]
    .concat();
    write(&first);
    let running = Running::start(
        dir.path(),
        &[
            ("ARGILLA_LOCAL_AUTH_USERS_DB_FILE", file.to_str().unwrap()),
            ("ARGILLA_GATEWAY_RELOAD_DEBOUNCE_MILLIS", "20"),
        ],
        &[],
    );
    running.wait_for(&["listening"]);
    // ann disabled, cat re-enabled, ben's workspaces changed, dan removed, eve added.
    let second = [
        entry("ann", "  workspaces: [a]\n  disabled: true\n"),
        entry("ben", "  workspaces: [a, b]\n"),
        entry("cat", "  workspaces: [a]\n"),
        entry("eve", "  workspaces: [a]\n"),
    ]
    .concat();
    write(&second);
    let line = running.wait_for(&["users file reloaded"]);
    for count in [
        "added=1",
        "removed=1",
        "disabled=1",
        "reenabled=1",
        "changed=1",
    ] {
        assert!(line.contains(count), "{count} in {line}");
    }
    write("- username: broken\n");
    running.wait_for(&["users file reload failed"]);
    write(&second);
    running.wait_for(&["users file valid again", "users=4"]);
    running.signal("HUP");
    running.wait_for(&["SIGHUP: users file unchanged", "users=4"]);
    write("- username: broken\n");
    running.wait_for_nth(&["users file reload failed"], 2);
    running.signal("HUP");
    running.wait_for(&["SIGHUP: users file still invalid"]);
    let stopping = Instant::now();
    running.signal("TERM");
    running.wait_for(&["stopped"]);
    let mut running = running;
    let status = running.child.wait().unwrap();
    assert!(status.success());
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "exits promptly: {:?}",
        stopping.elapsed()
    );
}
