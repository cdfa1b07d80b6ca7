//! Upstreams that fail the way the real one does, and the gateway turning none of it into a
//! 502: uvicorn closes a connection a moment after an error answer without `Connection:
//! close`, and any server closes idle keep-alive connections when it likes. Also the caps on
//! upstream connections and the idle list's pruning.
#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use common::{Options, Upstream};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, client::conn::http1, server, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Notify,
};

/// How a faulty upstream misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// After an error answer (400, 409, 500), the connection answers nothing more and closes
    /// 50 ms later, without saying so: uvicorn in front of Argilla's error handler.
    CloseAfterError,
    /// After each answer, the connection closes within a few milliseconds if no request is
    /// being served: a keep-alive timeout racing the next request.
    CloseWhenIdle,
}

#[derive(Default)]
struct Stats {
    connections: AtomicUsize,
    /// Requests that arrived on a connection already doomed (and were never answered).
    lost: AtomicUsize,
    /// Connections the upstream closed on its own.
    closed: AtomicUsize,
    /// Connections doomed by an error answer.
    doomed: AtomicUsize,
    /// Requests answered.
    answered: AtomicUsize,
    /// Requests being served now, across connections, and the most at once.
    busy: AtomicUsize,
    most_busy: AtomicUsize,
}

/// The answer of the faulty upstream: `409` to a create of `exists`, `400` to a path ending in
/// `/bad`, `500` to one ending in `/boom`, `200` echoing the body length otherwise; requests to
/// a path ending in `/slow` take 200 ms.
fn answer(method: &http::Method, path: &str, body: &[u8]) -> (StatusCode, String) {
    let text = String::from_utf8_lossy(body);
    if method == http::Method::POST
        && path.trim_end_matches('/') == "/api/datasets"
        && text.contains("\"exists\"")
    {
        return (
            StatusCode::CONFLICT,
            r#"{"detail":{"code":"argilla.api.errors::EntityAlreadyExistsError","params":{"name":"exists","type":"ServiceDataset","workspace":"team-a"}}}"#.into(),
        );
    }
    if path.ends_with("/bad") {
        return (
            StatusCode::BAD_REQUEST,
            r#"{"detail":{"code":"argilla.api.errors::BadRequestError","params":{"message":"bad"}}}"#.into(),
        );
    }
    if path.ends_with("/boom") {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"detail":{"code":"argilla.api.errors::GenericServerError","params":{}}}"#.into(),
        );
    }
    (
        StatusCode::OK,
        format!(r#"{{"ok":true,"n":{}}}"#, body.len()),
    )
}

async fn faulty(fault: Fault) -> (String, Arc<Stats>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stats = Arc::new(Stats::default());
    let shared = stats.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            shared.connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve_faulty(stream, fault, shared.clone()));
        }
    });
    (url, stats)
}

/// Counts a request out of `in_flight` when dropped.
struct CountDown(Arc<AtomicUsize>);

impl Drop for CountDown {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn serve_faulty(stream: TcpStream, fault: Fault, stats: Arc<Stats>) {
    let doomed = Arc::new(AtomicBool::new(false));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(Notify::new());
    let (doomed_s, in_flight_s, answered_s, stats_s) = (
        doomed.clone(),
        in_flight.clone(),
        answered.clone(),
        stats.clone(),
    );
    let service = service_fn(move |request: Request<Incoming>| {
        let (doomed, in_flight, answered, stats) = (
            doomed_s.clone(),
            in_flight_s.clone(),
            answered_s.clone(),
            stats_s.clone(),
        );
        async move {
            if doomed.load(Ordering::SeqCst) {
                stats.lost.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<()>().await;
            }
            in_flight.fetch_add(1, Ordering::SeqCst);
            // Counted down however the request ends (hyper drops the future of a request whose
            // client left).
            let serving = CountDown(in_flight.clone());
            let busy = stats.busy.fetch_add(1, Ordering::SeqCst) + 1;
            stats.most_busy.fetch_max(busy, Ordering::SeqCst);
            let (parts, body) = request.into_parts();
            let body = body
                .collect()
                .await
                .map(http_body_util::Collected::to_bytes)
                .unwrap_or_default();
            if parts.uri.path().ends_with("/slow") {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let (code, text) = answer(&parts.method, parts.uri.path(), &body);
            if fault == Fault::CloseAfterError && code.as_u16() >= 400 {
                doomed.store(true, Ordering::SeqCst);
                stats.doomed.fetch_add(1, Ordering::SeqCst);
            }
            stats.busy.fetch_sub(1, Ordering::SeqCst);
            drop(serving);
            stats.answered.fetch_add(1, Ordering::SeqCst);
            answered.notify_one();
            let response = Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(text)))
                .unwrap();
            Ok::<_, Infallible>(response)
        }
    });
    let connection =
        server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let closer = async {
        loop {
            answered.notified().await;
            match fault {
                Fault::CloseAfterError => {
                    if doomed.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        return;
                    }
                }
                Fault::CloseWhenIdle => {
                    let delay = rand::random_range(0..=2_000u64);
                    tokio::time::sleep(Duration::from_micros(delay)).await;
                    if in_flight.load(Ordering::SeqCst) == 0 {
                        return;
                    }
                }
            }
        }
    };
    tokio::select! {
        biased;
        _ = &mut connection => {}
        () = closer => {
            stats.closed.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// One request of the mix, by number: reads, creates (held bodies, some answered 409), record
/// uploads (streamed), deletes, and error answers (400, 500).
fn mixed(i: usize, streamed_uploads: bool) -> (&'static str, String, String) {
    let w = "workspace=team-a";
    match i % 7 {
        0 | 1 => ("GET", format!("/api/datasets/d{i}?{w}"), String::new()),
        2 => (
            "POST",
            format!("/api/datasets?{w}"),
            if i.is_multiple_of(2) {
                r#"{"name":"exists"}"#.into()
            } else {
                format!(r#"{{"name":"new{i}"}}"#)
            },
        ),
        3 if streamed_uploads => (
            "POST",
            format!("/api/datasets/d{i}/TextClassification:bulk?{w}"),
            format!(r#"{{"records":[{{"text":"record {i}"}}]}}"#),
        ),
        3 => ("DELETE", format!("/api/datasets/d{i}?{w}"), String::new()),
        4 => ("GET", format!("/api/datasets/d{i}/bad?{w}"), String::new()),
        5 => ("GET", format!("/api/datasets/d{i}/boom?{w}"), String::new()),
        _ => ("PUT", format!("/api/datasets/d{i}?{w}"), String::new()),
    }
}

fn expected(method: &str, path: &str, body: &str) -> StatusCode {
    let path = path.split('?').next().unwrap();
    answer(&method.parse().unwrap(), path, body.as_bytes()).0
}

async fn h1(addr: std::net::SocketAddr) -> http1::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    sender
}

/// `clients` client connections in parallel, `per_client` requests each, a new client
/// connection every eleventh request; every answer must be the upstream's own.
async fn run_mix(
    addr: std::net::SocketAddr,
    clients: usize,
    per_client: usize,
    streamed_uploads: bool,
) -> Vec<String> {
    let mut tasks = Vec::new();
    for c in 0..clients {
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut sender = h1(addr).await;
            for n in 0..per_client {
                let i = c * per_client + n;
                if n % 11 == 10 {
                    sender = h1(addr).await;
                }
                let (method, path, body) = mixed(i, streamed_uploads);
                let request = Request::builder()
                    .method(method)
                    .uri(&path)
                    .header("host", "gateway")
                    .header("x-argilla-api-key", "root-key")
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body.clone())))
                    .unwrap();
                let want = expected(method, &path, &body);
                let outcome = tokio::time::timeout(Duration::from_secs(60), async {
                    let response = sender.send_request(request).await?;
                    let status = response.status();
                    let body = response.into_body().collect().await?.to_bytes();
                    Ok::<_, hyper::Error>((status, body))
                })
                .await;
                match outcome {
                    Ok(Ok((status, _))) if status == want => {}
                    Ok(Ok((status, body))) => failures.push(format!(
                        "{method} {path}: {status} {} (wanted {want})",
                        String::from_utf8_lossy(&body)
                    )),
                    Ok(Err(e)) => {
                        failures.push(format!("{method} {path}: {e}"));
                        sender = h1(addr).await;
                    }
                    Err(_) => {
                        failures.push(format!("{method} {path}: no answer in 60 s"));
                        sender = h1(addr).await;
                    }
                }
            }
            failures
        }));
    }
    let mut failures = Vec::new();
    for task in tasks {
        failures.extend(task.await.unwrap());
    }
    failures
}

async fn gateway_for(url: String) -> (common::Gateway, Upstream) {
    let recorder = Upstream::start().await; // only for the options; never reached
    let gw = Options::new(&recorder)
        .env("ARGILLA_GATEWAY_UPSTREAM_URL", url)
        .start()
        .await;
    (gw, recorder)
}

fn retries(gw: &common::Gateway) -> u64 {
    gw.state.upstream.retries.load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_closing_after_error_answers_never_costs_a_request() {
    let (url, stats) = faulty(Fault::CloseAfterError).await;
    let (gw, recorder) = gateway_for(url).await;
    let failures = run_mix(gw.addr, 4, 280, true).await;
    assert!(
        failures.is_empty(),
        "{} of 1120 requests failed, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(stats.answered.load(Ordering::SeqCst), 1120);
    assert_eq!(
        stats.lost.load(Ordering::SeqCst),
        0,
        "no request was written on a connection the upstream was about to close"
    );
    let doomed = stats.doomed.load(Ordering::SeqCst);
    assert!(doomed >= 300, "the fault happened ({doomed} error answers)");
    assert_eq!(recorder.connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_closing_idle_connections_at_random_never_costs_a_request() {
    let (url, stats) = faulty(Fault::CloseWhenIdle).await;
    let (gw, _recorder) = gateway_for(url).await;
    // Bodies that can be sent twice (none, or held whole by the gateway): a streamed upload
    // lost on a closing connection cannot be replayed.
    let failures = run_mix(gw.addr, 4, 280, false).await;
    assert!(
        failures.is_empty(),
        "{} of 1120 requests failed, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let closed = stats.closed.load(Ordering::SeqCst);
    assert!(closed >= 100, "the fault happened ({closed} closes)");
    eprintln!(
        "upstream closed {closed} idle connections; the gateway sent {} requests again",
        retries(&gw)
    );
}

/// A keep-alive upstream connection lost under a request is retried once, and only once: a
/// second loss on the fresh connection is the client's 502.
#[tokio::test]
async fn a_request_lost_on_a_reused_connection_is_sent_again_once() {
    // Every connection answers its first request, then takes the next one and closes.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received = Arc::new(AtomicUsize::new(0));
    let count = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut stream = stream;
                let mut buf = vec![0u8; 8192];
                let mut served = 0;
                loop {
                    let Ok(n) = stream.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    if served == 1 {
                        return; // the second request on a connection: taken, never answered
                    }
                    served += 1;
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{\"ok\":true}";
                    if stream.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let (gw, _recorder) = gateway_for(url).await;
    let mut client = h1(gw.addr).await;
    let get = |path: &str| {
        Request::get(format!("{path}?workspace=team-a"))
            .header("host", "gateway")
            .header("x-argilla-api-key", "alice-key")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    for round in 0..3 {
        let response = client.send_request(get("/api/datasets/a")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "round {round}");
    }
    // Round 1 and 2 each lost their first try on the reused connection.
    assert_eq!(retries(&gw), 2);
    assert_eq!(received.load(Ordering::SeqCst), 5);
    // A streamed upload lost the same way is not replayed: 502, and the upstream got it once.
    let upload = Request::post("/api/datasets/a/TextClassification:bulk?workspace=team-a")
        .header("host", "gateway")
        .header("x-argilla-api-key", "alice-key")
        .body(Full::new(Bytes::from_static(b"{\"records\":[]}")))
        .unwrap();
    let response = client.send_request(upload).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(retries(&gw), 2, "not sent again");
    assert_eq!(received.load(Ordering::SeqCst), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_stay_under_their_caps() {
    let (url, stats) = faulty(Fault::CloseWhenIdle).await;
    let recorder = Upstream::start().await;
    let gw = Options::new(&recorder)
        .env("ARGILLA_GATEWAY_UPSTREAM_URL", url)
        .env("ARGILLA_GATEWAY_UPSTREAM_MAX_CONNECTIONS", "3")
        .env("ARGILLA_GATEWAY_UPSTREAM_MAX_CONNECTIONS_PER_CLIENT", "2")
        .start()
        .await;
    let slow = |_: usize| {
        Request::get("http://gateway/api/datasets/slow?workspace=team-a")
            .header("x-argilla-api-key", "alice-key")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    // One HTTP/2 client with eight concurrent streams: at most two upstream at once.
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (client, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut streams = Vec::new();
    for i in 0..8 {
        let mut client = client.clone();
        streams.push(tokio::spawn(async move {
            let response = client.send_request(slow(i)).await.unwrap();
            response.status()
        }));
    }
    for s in streams {
        assert_eq!(s.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(
        stats.most_busy.load(Ordering::SeqCst),
        2,
        "per client connection"
    );
    // Six HTTP/1.1 clients at once: at most three upstream connections open.
    stats.most_busy.store(0, Ordering::SeqCst);
    let mut clients = Vec::new();
    for i in 0..6 {
        let addr = gw.addr;
        clients.push(tokio::spawn(async move {
            let mut sender = h1(addr).await;
            let request = Request::get("/api/datasets/slow?workspace=team-a")
                .header("host", "gateway")
                .header("x-argilla-api-key", "alice-key")
                .body(Full::new(Bytes::new()))
                .unwrap();
            let _ = i;
            sender.send_request(request).await.unwrap().status()
        }));
    }
    for c in clients {
        assert_eq!(c.await.unwrap(), StatusCode::OK);
    }
    assert!(stats.most_busy.load(Ordering::SeqCst) <= 3, "in total");
    assert!(gw.state.upstream.open_count() <= 3);
}

#[tokio::test]
async fn idle_upstream_connections_are_closed_on_a_timer() {
    let upstream = Upstream::start().await;
    let gw = Options::new(&upstream)
        .env("ARGILLA_GATEWAY_UPSTREAM_IDLE_TIMEOUT_SECS", "1")
        .start()
        .await;
    let mut client = h1(gw.addr).await;
    let request = Request::get("/api/datasets/a?workspace=team-a")
        .header("host", "gateway")
        .header("x-argilla-api-key", "alice-key")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.send_request(request).await.unwrap();
    response.into_body().collect().await.unwrap();
    drop(client);
    // Parked when the client left; closed by the timer, with no client arriving to notice.
    let mut parked = false;
    for _ in 0..300 {
        let idle = gw.state.upstream.idle_count();
        parked |= idle == 1;
        if parked && idle == 0 && gw.state.upstream.open_count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "idle connection not closed within 3 s (parked: {parked}, idle {}, open {})",
        gw.state.upstream.idle_count(),
        gw.state.upstream.open_count()
    );
}
