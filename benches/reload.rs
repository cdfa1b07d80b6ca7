//! Users-file benchmark: how long a 100 000-user file takes to load, and how long a change to
//! the file takes to reach requests (write → first request that sees it), median and p99.
//!
//! Run with `cargo bench --bench reload`. It starts an in-process gateway on 127.0.0.1:0 (no
//! upstream is needed: `/api/me` is answered by the gateway) and rewrites its users file by
//! write-and-rename, as editors and `sed -i` do. Every loop is bounded in count and time.

#![allow(
    clippy::print_stdout,
    clippy::cast_precision_loss,
    reason = "a benchmark reports on stdout"
)]

use std::{
    collections::HashMap,
    fmt::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use argilla_gateway::{
    config::Config,
    server::{self, Started, State},
    users::UserStore,
};
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

/// A users file of `n` users sharing one bcrypt hash (hashing 100 000 passwords would measure
/// bcrypt, not loading; every hash string is still parsed and checked).
fn users_file(n: usize, hash: &str, extra: &str) -> String {
    let mut text = String::with_capacity(n * 140);
    for i in 0..n {
        let _ = write!(
            text,
            "- username: user{i}\n  hashed_password: '{hash}'\n  api_key: key-{i}-0123456789abcdef\n  workspaces: [team-{}]\n",
            i % 100
        );
    }
    text.push_str(extra);
    text
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a short vector"
    )]
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn load_time(dir: &Path, hash: &str) -> (Duration, usize) {
    let path = dir.join("big.yml");
    let text = users_file(100_000, hash, "");
    std::fs::write(&path, &text).expect("write big file");
    let mut times: Vec<Duration> = (0..5)
        .map(|_| {
            let started = Instant::now();
            let store = UserStore::load(&path).expect("100k file loads");
            let elapsed = started.elapsed();
            assert_eq!(store.len(), 100_000);
            elapsed
        })
        .collect();
    times.sort();
    (times[times.len() / 2], text.len())
}

async fn apply_latency(dir: &Path, hash: &str, base_users: usize, writes: usize) -> Vec<Duration> {
    let path = dir.join(format!("users-{base_users}.yml"));
    std::fs::write(&path, users_file(base_users, hash, "")).expect("write users file");
    let env: HashMap<&str, String> = [
        (
            "ARGILLA_LOCAL_AUTH_USERS_DB_FILE",
            path.display().to_string(),
        ),
        (
            "ARGILLA_GATEWAY_UPSTREAM_API_KEY",
            "bench-service-key".to_owned(),
        ),
        // Polling with the not-yet-valid key counts as failed authentications.
        (
            "ARGILLA_GATEWAY_RATE_LIMIT_FAILURES_PER_ADDRESS",
            "1000000000".to_owned(),
        ),
    ]
    .into_iter()
    .collect();
    let config = Config::from_sources(None, &|name| env.get(name).cloned()).expect("config");
    let Started {
        state,
        reloader: _reloader,
        ..
    } = State::start(config).expect("users and watcher");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::run(listener, state, async {
        let _ = stopped.await;
    }));
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let me = format!("http://{addr}/api/me");
    let status_for = |key: String| {
        let request = http::Request::get(&me)
            .header("x-argilla-api-key", key)
            .body(Empty::new())
            .expect("request");
        let sent = client.request(request);
        async move { sent.await.map_or(0, |r| r.status().as_u16()) }
    };
    let mut latencies = Vec::with_capacity(writes);
    for n in 0..writes {
        let extra = format!(
            "- username: fresh{n}\n  hashed_password: '{hash}'\n  api_key: fresh-key-{n}\n"
        );
        let temp = dir.join(".users.tmp");
        std::fs::write(&temp, users_file(base_users, hash, &extra)).expect("write temp");
        let started = Instant::now();
        std::fs::rename(&temp, &path).expect("rename");
        let deadline = started + Duration::from_secs(10);
        loop {
            if status_for(format!("fresh-key-{n}")).await == 200 {
                latencies.push(started.elapsed());
                break;
            }
            assert!(
                Instant::now() < deadline,
                "write {n} not applied within 10 s"
            );
            // Poll every millisecond: the measurement's resolution, without starving the reload.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let _ = stop.send(());
    let _ = server.await;
    latencies.sort();
    latencies
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hash = bcrypt::hash("benchmark", 10).expect("hash");

    let (load, bytes) = load_time(dir.path(), &hash);
    println!(
        "100 000-user file ({:.1} MB): loads and validates in {} (median of 5)",
        bytes as f64 / 1e6,
        ms(load)
    );
    for (base, writes) in [(10, 200), (10_000, 50)] {
        let latencies = apply_latency(dir.path(), &hash, base, writes).await;
        println!(
            "change applied, {base}-user file, {writes} writes: median {}, p99 {}, max {} (debounce 50 ms included)",
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.99)),
            ms(*latencies.last().expect("writes")),
        );
    }
}
