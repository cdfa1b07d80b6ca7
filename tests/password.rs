//! Password checks under load and under abandonment: every place in the bcrypt queue comes
//! back when clients leave, checks whose clients left before they started do not run, and a
//! right password still passes while other processes keep every CPU busy.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic on failure, like tests"
)]

mod common;

use std::{
    process::{Child, Command},
    sync::atomic::Ordering::Relaxed,
    time::Duration,
};

use common::{Entry, Options, Upstream, UsersFile, basic, get, send, until};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

/// Processes at normal priority spinning on every CPU, each ending by itself after 60 s and
/// killed by its process id when dropped.
struct BusyCpus(Vec<Child>);

impl BusyCpus {
    fn start() -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        let spin =
            "import time\nend = time.monotonic() + 60\nwhile time.monotonic() < end:\n    pass\n";
        Self(
            (0..cpus)
                .map(|_| {
                    Command::new("python3")
                        .args(["-c", spin])
                        .spawn()
                        .expect("python3 starts")
                })
                .collect(),
        )
    }
}

impl Drop for BusyCpus {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A GET with Basic credentials on its own connection, read to the end of the answer's head;
/// dropping the future closes the connection (the client leaves).
async fn raw_basic(addr: std::net::SocketAddr, user: &str, password: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /api/me HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {}\r\n\r\n",
        basic(user, password)
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head)
        .split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_waits_with_the_cpus_busy_then_a_right_password_passes() {
    // Cost 10 for every user, so that unknown usernames cost as much; one bcrypt thread (a
    // queue of nine places), the default budgets.
    let hash = bcrypt::hash("alice-pw", 10).unwrap();
    let bob = bcrypt::hash("bob-pw", 10).unwrap();
    let upstream = Upstream::start().await;
    let mut options = Options::new(&upstream).env("ARGILLA_GATEWAY_BCRYPT_CONCURRENCY", "1");
    options.users_yaml = Some(
        UsersFile::new()
            .with(Entry::new("alice").hashed(hash))
            .with(Entry::new("bob").hashed(bob))
            .yaml(),
    );
    let gateway = options.start().await;
    let verifier = &gateway.state.verifier;
    let busy = BusyCpus::start();

    // Forty wrong passwords for distinct usernames: nine take the queue's places, the rest
    // are refused at once.
    let addr = gateway.addr;
    let flood: Vec<_> = (0..40)
        .map(|i| tokio::spawn(async move { raw_basic(addr, &format!("user-{i}"), "wrong").await }))
        .collect();
    until("the queue fills", Duration::from_secs(20), || {
        verifier.queued() == 9
    })
    .await;
    // Every client leaves (its connection closes) while its check waits or runs.
    let run_before = verifier.checks.load(Relaxed);
    for request in &flood {
        request.abort();
    }
    until(
        "every queue place comes back",
        Duration::from_secs(30),
        || verifier.queued() == 0,
    )
    .await;
    let run_after = verifier.checks.load(Relaxed) - run_before;
    assert!(
        run_after <= 2,
        "{run_after} checks started after their clients left (at most the one being handed \
         to the thread when they left)"
    );

    // With the CPUs still busy, right passwords pass: Basic and the web app's login.
    let reply = get(
        &gateway.url("/api/me"),
        &[("authorization", &basic("alice", "alice-pw"))],
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let login = send(
        "POST",
        &gateway.url("/api/security/token"),
        &[("content-type", "application/x-www-form-urlencoded")],
        "username=bob&password=bob-pw",
    )
    .await;
    assert_eq!(login.status, 200, "{:?}", login.body);
    drop(busy);
    let mut statuses = Vec::new();
    for request in flood {
        if let Ok(status) = request.await {
            statuses.push(status);
        }
    }
    assert!(
        statuses.iter().all(|s| *s == 429 || *s == 401),
        "answers before the clients left: {statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_at_once_and_serves_again_when_it_drains() {
    let hash = bcrypt::hash("alice-pw", 10).unwrap();
    let upstream = Upstream::start().await;
    let mut options = Options::new(&upstream)
        .env("ARGILLA_GATEWAY_BCRYPT_CONCURRENCY", "1")
        .env("ARGILLA_GATEWAY_RATE_LIMIT_FAILURES_PER_ADDRESS", "1000000")
        .env(
            "ARGILLA_GATEWAY_RATE_LIMIT_FAILURES_PER_USERNAME",
            "1000000",
        );
    options.users_yaml = Some(
        UsersFile::new()
            .with(Entry::new("alice").hashed(hash))
            .yaml(),
    );
    let gateway = options.start().await;
    let verifier = &gateway.state.verifier;
    let addr = gateway.addr;
    // Twenty distinct wrong guesses at once, kept waiting for their answers.
    let guesses: Vec<_> = (0..20)
        .map(|i| tokio::spawn(async move { raw_basic(addr, "alice", &format!("guess-{i}")).await }))
        .collect();
    let mut statuses = Vec::new();
    for guess in guesses {
        statuses.push(guess.await.unwrap());
    }
    let refused = statuses.iter().filter(|s| **s == 429).count();
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert_eq!(refused + checked, 20, "{statuses:?}");
    assert!(
        checked >= 9,
        "the nine places served: {checked} checked, {refused} refused"
    );
    // A place is given back when its bcrypt job ends, just after the answer was sent.
    until("every place given back", Duration::from_secs(5), || {
        verifier.queued() == 0
    })
    .await;
    assert_eq!(
        raw_basic(addr, "alice", "alice-pw").await,
        200,
        "the queue serves again"
    );
}
