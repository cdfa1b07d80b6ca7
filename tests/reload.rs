//! Hot reload of the users file: every way people and tools replace a file, invalid and deleted
//! files, the poll safety net, SIGHUP, and 200+ rewrites under load. Tests wait on the reload
//! events the gateway publishes, never on sleeps.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic on failure, like tests"
)]
#![allow(clippy::too_many_lines, reason = "case tables are long on purpose")]

mod common;

use std::{
    os::unix::fs::{PermissionsExt, symlink},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use argilla_gateway::reload::ReloadStatus;
use common::{Entry, Gateway, Options, Upstream, UsersFile, basic, get, users_yaml};

/// The base users plus `erin` (key `erin-key`): the change every style below applies.
fn with_erin() -> String {
    UsersFile::standard()
        .with(Entry::new("erin").workspaces(&["team-a"]))
        .yaml()
}

async fn status_of(gateway: &Gateway, key: &str) -> u16 {
    get(&gateway.url("/api/me"), &[("x-argilla-api-key", key)])
        .await
        .status
        .as_u16()
}

/// Runs `change` and waits (at most 5 s) until a published status satisfies `done`.
async fn after<F: FnOnce()>(
    gateway: &Gateway,
    change: F,
    done: impl Fn(&ReloadStatus, &ReloadStatus) -> bool,
) -> ReloadStatus {
    let mut reloads = gateway.users.subscribe();
    let before = reloads.borrow_and_update().clone();
    change();
    tokio::time::timeout(
        Duration::from_secs(5),
        reloads.wait_for(|now| done(&before, now)),
    )
    .await
    .expect("reload event within 5 s")
    .unwrap()
    .clone()
}

/// Runs `write` (which adds erin), waits until the reload applied it, and checks erin's key.
async fn erin_arrives(gateway: &Gateway, write: impl FnOnce()) {
    after(gateway, write, applied).await;
    assert_eq!(status_of(gateway, "erin-key").await, 200);
}

fn applied(before: &ReloadStatus, now: &ReloadStatus) -> bool {
    now.applied > before.applied
}

fn failed(before: &ReloadStatus, now: &ReloadStatus) -> bool {
    now.failures > before.failures
}

#[tokio::test]
async fn edit_in_place() {
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(&upstream).await;
    assert_eq!(status_of(&gateway, "erin-key").await, 401);
    erin_arrives(&gateway, || {
        std::fs::write(&gateway.users_file, with_erin()).unwrap();
    })
    .await;
    // Remove bob again by editing in place: his key stops working on the next request.
    let without_bob = with_erin().replace("api_key: bob-key", "api_key: bob-key-rotated");
    after(
        &gateway,
        || std::fs::write(&gateway.users_file, &without_bob).unwrap(),
        applied,
    )
    .await;
    assert_eq!(status_of(&gateway, "bob-key").await, 401);
    assert_eq!(status_of(&gateway, "bob-key-rotated").await, 200);
}

#[tokio::test]
async fn write_temp_then_rename() {
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(&upstream).await;
    gateway.replace_users(&with_erin()).await;
    assert_eq!(status_of(&gateway, "erin-key").await, 200);
}

#[tokio::test]
async fn delete_keeps_users_until_recreated() {
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(&upstream).await;
    let status = after(
        &gateway,
        || std::fs::remove_file(&gateway.users_file).unwrap(),
        failed,
    )
    .await;
    assert!(status.last_error.unwrap().contains("not found"));
    assert_eq!(
        status_of(&gateway, "alice-key").await,
        200,
        "last good users stay"
    );
    erin_arrives(&gateway, || {
        std::fs::write(&gateway.users_file, with_erin()).unwrap();
    })
    .await;
}

#[tokio::test]
async fn chmod_is_noticed_and_changes_nothing() {
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(&upstream).await;
    let status = after(
        &gateway,
        || {
            std::fs::set_permissions(&gateway.users_file, std::fs::Permissions::from_mode(0o640))
                .unwrap();
        },
        |before, now| now.unchanged > before.unchanged,
    )
    .await;
    assert_eq!(status.applied, 0);
    assert_eq!(status_of(&gateway, "alice-key").await, 200);
}

#[tokio::test]
async fn invalid_file_keeps_the_last_good_users_and_says_where() {
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(&upstream).await;
    let broken =
        users_yaml().replace("- username: carol\n", "- username: Carol\n") + "- username: [oops\n";
    let status = after(
        &gateway,
        || {
            std::fs::write(
                &gateway.users_file,
                "- username: ok\n  hashed_password: plain\n  api_key: k\n",
            )
            .unwrap();
        },
        failed,
    )
    .await;
    let error = status.last_error.unwrap();
    assert!(
        error.contains("users.yml") && error.contains("line 1") && error.contains("\"ok\""),
        "{error}"
    );
    assert_eq!(status_of(&gateway, "alice-key").await, 200);
    let status = after(
        &gateway,
        || std::fs::write(&gateway.users_file, &broken).unwrap(),
        failed,
    )
    .await;
    assert!(status.last_error.unwrap().contains("line"));
    assert_eq!(
        status_of(&gateway, "carol-key").await,
        200,
        "old users still in force"
    );
    erin_arrives(&gateway, || {
        std::fs::write(&gateway.users_file, with_erin()).unwrap();
    })
    .await;
}

/// Writes a Kubernetes-style `ConfigMap` volume: `users.yml -> ..data/users.yml`,
/// `..data -> ..<version>`, and swaps `..data` atomically by renaming a new symlink over it.
fn configmap_version(dir: &Path, version: &str, content: &str) {
    let folder = dir.join(format!("..{version}"));
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("users.yml"), content).unwrap();
    let temp = dir.join("..data_tmp");
    symlink(format!("..{version}"), &temp).unwrap();
    std::fs::rename(&temp, dir.join("..data")).unwrap();
}

#[tokio::test]
async fn kubernetes_configmap_symlink_swap() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    configmap_version(dir.path(), "2026_11_28_10_00_00.1", &users_yaml());
    symlink("..data/users.yml", dir.path().join("users.yml")).unwrap();
    let gateway = Options::new(&upstream)
        .no_users_file()
        .env(
            "ARGILLA_LOCAL_AUTH_USERS_DB_FILE",
            dir.path().join("users.yml").display().to_string(),
        )
        .env("ARGILLA_GATEWAY_RELOAD_POLL_INTERVAL_SECS", "3600")
        .start()
        .await;
    assert_eq!(status_of(&gateway, "alice-key").await, 200);
    erin_arrives(&gateway, || {
        configmap_version(dir.path(), "2026_11_28_10_05_00.2", &with_erin());
        std::fs::remove_dir_all(dir.path().join("..2026_11_28_10_00_00.1")).unwrap();
    })
    .await;
}

#[tokio::test]
async fn poll_catches_changes_that_send_no_event() {
    // The users file is a symlink into a folder the watcher does not watch: only the poll sees
    // the target change.
    let upstream = Upstream::start().await;
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("real-users.yml");
    std::fs::write(&target, users_yaml()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    symlink(&target, dir.path().join("users.yml")).unwrap();
    let gateway = Options::new(&upstream)
        .no_users_file()
        .env(
            "ARGILLA_LOCAL_AUTH_USERS_DB_FILE",
            dir.path().join("users.yml").display().to_string(),
        )
        .env("ARGILLA_GATEWAY_RELOAD_POLL_INTERVAL_SECS", "1")
        .start()
        .await;
    erin_arrives(&gateway, || std::fs::write(&target, with_erin()).unwrap()).await;
}

#[tokio::test]
async fn sighup_reloads_the_real_binary() {
    use std::io::{BufRead, BufReader};
    let upstream = Upstream::start().await;
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("real-users.yml");
    std::fs::write(&target, users_yaml()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    symlink(&target, dir.path().join("users.yml")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_argilla-gateway"))
        .current_dir(dir.path())
        .env("ARGILLA_GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("ARGILLA_GATEWAY_UPSTREAM_URL", upstream.url())
        .env("ARGILLA_LOCAL_AUTH_USERS_DB_FILE", "users.yml")
        .env("ARGILLA_GATEWAY_RELOAD_POLL_INTERVAL_SECS", "3600")
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let wait_for_line = async |lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
                               needle: &str| {
        tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(line) = lines.recv().await {
                if line.contains(needle) {
                    return;
                }
            }
            panic!("gateway exited before {needle:?}");
        })
        .await
        .unwrap_or_else(|_| panic!("no {needle:?} within 10 s"));
    };
    wait_for_line(&mut lines, "listening").await;
    let url = format!("http://127.0.0.1:{port}/api/me");
    assert_eq!(
        get(&url, &[("x-argilla-api-key", "erin-key")]).await.status,
        401
    );
    std::fs::write(&target, with_erin()).unwrap();
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    wait_for_line(&mut lines, "users file reloaded").await;
    assert_eq!(
        get(&url, &[("x-argilla-api-key", "erin-key")]).await.status,
        200
    );
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "SIGTERM exits 0: {exit:?}");
}

/// Two valid versions that differ in one user's key and a counter comment (so every write is a
/// change), and an invalid one.
fn version(n: usize) -> String {
    match n % 10 {
        9 => format!("# write {n}\n- username: [broken\n"),
        _ if n.is_multiple_of(2) => format!("# write {n}\n{}", with_erin()),
        _ => format!(
            "# write {n}\n{}",
            with_erin().replace("erin-key", "erin-key-b")
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_rewrites_under_load_lose_nothing() {
    const WRITES: usize = 220;
    let upstream = Upstream::start().await;
    // The writer's probes of the old key are failures from this address; give them room.
    let gateway = Arc::new(
        Options::new(&upstream)
            .env("ARGILLA_GATEWAY_RATE_LIMIT_FAILURES_PER_ADDRESS", "100000")
            .start()
            .await,
    );
    gateway.replace_users(&version(0)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for worker in 0..4 {
        let (gateway, stop, sent) = (gateway.clone(), stop.clone(), sent.clone());
        workers.push(tokio::spawn(async move {
            let alice_basic = basic("alice", "alice-pw");
            let mut failures = Vec::new();
            // Bounded in count and time: stops when the writer is done, or after 120 s.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            for i in 0..1_000_000u64 {
                if stop.load(Ordering::Relaxed) || tokio::time::Instant::now() > deadline {
                    break;
                }
                let (headers, who) = if (i + worker) % 2 == 0 {
                    (vec![("x-argilla-api-key", "alice-key")], "alice")
                } else {
                    (vec![("authorization", alice_basic.as_str())], "alice")
                };
                let reply = get(&gateway.url("/api/datasets/ds?workspace=team-a"), &headers).await;
                sent.fetch_add(1, Ordering::Relaxed);
                if reply.status != 200 {
                    failures.push(format!("{who} got {}", reply.status));
                }
            }
            failures
        }));
    }
    let mut valid = 0;
    let mut invalid = 0;
    let mut previous_key = "erin-key";
    for n in 1..=WRITES {
        let content = version(n);
        let is_valid = n % 10 != 9;
        let temp = gateway.dir.path().join(".users.yml.tmp");
        after(
            &gateway,
            || {
                std::fs::write(&temp, &content).unwrap();
                std::fs::rename(&temp, &gateway.users_file).unwrap();
            },
            if is_valid { applied } else { failed },
        )
        .await;
        let key = if n % 2 == 0 { "erin-key" } else { "erin-key-b" };
        if is_valid {
            valid += 1;
            let other = if key == "erin-key" {
                "erin-key-b"
            } else {
                "erin-key"
            };
            assert_eq!(
                status_of(&gateway, key).await,
                200,
                "write {n}: new key works at once"
            );
            assert_eq!(
                status_of(&gateway, other).await,
                401,
                "write {n}: old key refused at once"
            );
            previous_key = key;
        } else {
            invalid += 1;
            assert_eq!(
                status_of(&gateway, previous_key).await,
                200,
                "write {n}: last good users stay"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for worker in workers {
        failures.extend(worker.await.unwrap());
    }
    let status = gateway.users.status();
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        sent.load(Ordering::Relaxed) > WRITES as u64,
        "load ran during the writes"
    );
    assert_eq!(
        status.applied,
        valid + 1,
        "every valid write applied (plus the first)"
    );
    assert_eq!(status.failures, invalid, "every invalid write refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_in_place_write_is_applied_once_and_whole() {
    use std::io::Write as _;
    let upstream = Upstream::start().await;
    let gateway = Options::new(&upstream)
        .env("ARGILLA_GATEWAY_RELOAD_DEBOUNCE_MILLIS", "150")
        .start()
        .await;
    // Fifty users written entry by entry: every prefix cut at an entry is itself a valid file.
    let entries: Vec<String> = (0..50)
        .map(|i| {
            Entry::new(&format!("many{i}"))
                .password("many-pw")
                .key(format!("many-key-{i}"))
                .yaml()
        })
        .collect();
    let mut reloads = gateway.users.subscribe();
    let before = reloads.borrow_and_update().clone();
    let path = gateway.users_file.clone();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::create(&path).unwrap();
        for entry in &entries {
            file.write_all(entry.as_bytes()).unwrap();
            file.flush().unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
    })
    .await
    .unwrap();
    let status = tokio::time::timeout(
        Duration::from_secs(5),
        reloads.wait_for(|s| s.applied > before.applied),
    )
    .await
    .expect("applied within 5 s")
    .unwrap()
    .clone();
    assert_eq!(status.users, 50, "the whole file, not a prefix");
    assert_eq!(status.applied, before.applied + 1, "applied once");
    assert_eq!(status_of(&gateway, "many-key-49").await, 200);
    assert_eq!(status_of(&gateway, "alice-key").await, 401);
}
