//! Slow and stalled clients and bodies: login and create bodies that trickle, uploads that
//! stop, downloads nobody reads, upstream bodies that stop, and floods of connections that
//! never authenticate. The gateway answers 408 where it still can, closes the connection, and
//! keeps serving `/healthz` and authenticated traffic throughout. Timeouts are set to 1 s here.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::Response;
use http_body_util::channel::Channel;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{
    common::Options,
    harness::{PATIENCE, Recorder, Rig, alice_get, closes, exchange, read_reply, req},
};

fn quick(options: Options) -> Options {
    options
        .env("ARGILLA_GATEWAY_BODY_READ_TIMEOUT_SECS", "1")
        .env("ARGILLA_GATEWAY_BODY_IDLE_TIMEOUT_SECS", "1")
}

/// Sends `head` and the start of a body on a fresh connection, then nothing more.
async fn trickle(rig: &Rig, head: &str) -> TcpStream {
    let mut stream = TcpStream::connect(rig.gw.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// A body that stalls gets 408 in Argilla's shape within a few seconds, and the connection
/// closes.
async fn assert_timed_out(mut stream: TcpStream) {
    let started = Instant::now();
    let reply = read_reply(&mut stream).await;
    reply.assert_error(408, "BadRequestError");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        closes(&mut stream).await,
        "the connection is closed after 408"
    );
}

#[tokio::test]
async fn slow_login_body_is_answered_408_and_closed() {
    let rig = Rig::with(quick).await;
    let stream = trickle(
        &rig,
        "POST /api/security/token HTTP/1.1\r\nHost: gw\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nuser",
    )
    .await;
    assert_timed_out(stream).await;
    rig.up.assert_nothing();
}

#[tokio::test]
async fn login_body_over_four_kib_is_refused_before_it_is_read() {
    let rig = Rig::start().await;
    // Declared too large: answered at once, with nothing of the body sent.
    let reply = rig
        .raw("POST /api/security/token HTTP/1.1\r\nHost: gw\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 5000\r\n\r\n")
        .await;
    reply.assert_error(413, "BadRequestError");
    // Chunked past the cap.
    let form = format!("username=alice&password={}", "x".repeat(5000));
    let chunked = format!(
        "POST /api/security/token HTTP/1.1\r\nHost: gw\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{form}\r\n0\r\n\r\n",
        form.len()
    );
    rig.raw(chunked).await.assert_error(413, "BadRequestError");
    rig.up.assert_nothing();
}

#[tokio::test]
async fn slow_dataset_create_body_is_answered_408() {
    let rig = Rig::with(quick).await;
    let stream = trickle(
        &rig,
        "POST /api/datasets HTTP/1.1\r\nHost: gw\r\nX-Argilla-Api-Key: alice-key\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"name\":",
    )
    .await;
    assert_timed_out(stream).await;
    rig.up.assert_nothing();
}

#[tokio::test]
async fn stalled_upload_is_answered_408_and_never_completes_upstream() {
    let rig = Rig::with(quick).await;
    let stream = trickle(
        &rig,
        "POST /api/datasets/ds/TextClassification:bulk?workspace=team-a HTTP/1.1\r\nHost: gw\r\nX-Argilla-Api-Key: alice-key\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"records\":[",
    )
    .await;
    assert_timed_out(stream).await;
    // The upstream saw the head, and never a whole body.
    assert!(rig.up.head_seen("/api/datasets/ds/TextClassification:bulk"));
    rig.up.assert_no_body_ended();
}

/// An upstream whose answer to `/api/datasets/endless` never ends, and to
/// `/api/datasets/stops` stops after one chunk without ending; `stopped` is set when the
/// gateway let go of the endless one.
fn streaming_upstream(stopped: Arc<AtomicBool>) -> crate::harness::Responder {
    Arc::new(move |rec| match rec.path.as_str() {
        "/api/datasets/endless" => {
            let (mut tx, body) = Channel::<Bytes, hyper::Error>::new(4);
            let stopped = stopped.clone();
            tokio::spawn(async move {
                while tx
                    .send_data(Bytes::from(vec![b'x'; 64 * 1024]))
                    .await
                    .is_ok()
                {}
                stopped.store(true, Ordering::SeqCst);
            });
            Response::new(argilla_gateway::body::boxed(body))
        }
        "/api/datasets/stops" => {
            let (mut tx, body) = Channel::<Bytes, hyper::Error>::new(4);
            tokio::spawn(async move {
                let _ = tx.send_data(Bytes::from_static(b"[{\"first\":1}")).await;
                // Keeps the body open and silent for longer than the test waits.
                tokio::time::sleep(Duration::from_secs(30)).await;
                drop(tx);
            });
            Response::new(argilla_gateway::body::boxed(body))
        }
        _ => crate::harness::default_answer(rec),
    })
}

#[tokio::test]
async fn a_client_that_stops_reading_a_download_is_let_go() {
    let stopped = Arc::new(AtomicBool::new(false));
    let up = Recorder::with(streaming_upstream(stopped.clone())).await;
    let gw = quick(crate::harness::options(&up.url())).start().await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(&alice_get("/api/datasets/endless?workspace=team-a"))
        .await
        .unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // Not reading: the socket buffers fill, the gateway's write waits, and after the idle
    // timeout it closes the connection and lets go of the upstream body.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let drained = tokio::time::timeout(PATIENCE, async {
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0usize;
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    })
    .await
    .expect("the gateway closed the stalled download");
    assert!(drained < 256 << 20, "read {drained} bytes after the stall");
    for _ in 0..100 {
        if stopped.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        stopped.load(Ordering::SeqCst),
        "the upstream body was dropped"
    );
    assert_eq!(
        gw.state.upstream.idle_count(),
        0,
        "a half-read connection is never kept"
    );
}

#[tokio::test]
async fn an_upstream_body_that_stops_ends_the_answer_after_the_idle_timeout() {
    let up = Recorder::with(streaming_upstream(Arc::default())).await;
    let gw = quick(crate::harness::options(&up.url())).start().await;
    let started = Instant::now();
    let reply = exchange(gw.addr, &alice_get("/api/datasets/stops?workspace=team-a")).await;
    assert_eq!(reply.status(), 200);
    assert!(!reply.whole, "the answer breaks off: {}", reply.text());
    assert!(reply.text().starts_with("[{\"first\":1}"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// Connections that never authenticate (partial heads, trickled login bodies) fill every
/// place they may take, and more keep coming: `/healthz`, an authenticated keep-alive
/// connection and a new client still get answered.
#[tokio::test]
async fn unauthenticated_connections_cannot_starve_authenticated_ones() {
    let rig = Rig::with(|o| {
        o.env("ARGILLA_GATEWAY_MAX_CONNECTIONS", "20")
            .env("ARGILLA_GATEWAY_MAX_UNAUTHENTICATED_CONNECTIONS", "10")
    })
    .await;
    let addr = rig.gw.addr;
    // An authenticated keep-alive connection, before the flood.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    kept.write_all(&alice_get("/api/datasets/a?workspace=team-a"))
        .await
        .unwrap();
    assert_eq!(read_reply(&mut kept).await.status(), 200);
    // Thirty sockets that never finish: half a head, or a login body that never comes.
    let mut flood = Vec::new();
    for i in 0..30 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let bytes: &[u8] = if i % 2 == 0 {
            b"GET /api/datasets HTTP/1.1\r\nHost: gw\r\nX-Argil"
        } else {
            b"POST /api/security/token HTTP/1.1\r\nHost: gw\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nuser"
        };
        stream.write_all(bytes).await.unwrap();
        flood.push(stream);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let health = tokio::time::timeout(
        Duration::from_secs(3),
        exchange(addr, &req("GET", "/healthz", &[], "")),
    )
    .await
    .expect("/healthz answered during the flood");
    assert_eq!(health.status(), 200);
    kept.write_all(&alice_get("/api/datasets/b?workspace=team-a"))
        .await
        .unwrap();
    assert_eq!(read_reply(&mut kept).await.status(), 200, "kept connection");
    let fresh = tokio::time::timeout(
        Duration::from_secs(3),
        exchange(addr, &alice_get("/api/datasets/c?workspace=team-a")),
    )
    .await
    .expect("a new client is answered during the flood");
    assert_eq!(fresh.status(), 200);
    assert!(rig.gw.state.admission.unproven_count() <= 10);
    let closed = rig.gw.state.admission.evicted.load(Ordering::Relaxed);
    assert!(
        closed >= 20,
        "the oldest were closed to make room ({closed})"
    );
    drop(flood);
}

/// A client that leaves before its answer still ends in the access log and the request
/// counters (as 499), and the in-flight gauge comes back down.
#[tokio::test]
async fn a_request_whose_client_left_is_counted_as_499() {
    // An upstream that takes requests and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let gw = crate::harness::options(&url).start().await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(&alice_get("/api/datasets/a?workspace=team-a"))
        .await
        .unwrap();
    let in_flight = || gw.state.metrics.in_flight.load(Ordering::Relaxed);
    for _ in 0..100 {
        if in_flight() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(in_flight(), 1);
    drop(stream);
    for _ in 0..200 {
        if in_flight() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(in_flight(), 0, "the gauge came back down");
    let metrics = gw.state.render_metrics();
    assert!(
        metrics.contains(
            r#"argilla_gateway_requests_total{route="dataset",decision="allow",status="499"} 1"#
        ),
        "{metrics}"
    );
}
