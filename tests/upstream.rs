//! Upstream connections: a keep-alive client's requests share one upstream connection, a
//! closed client connection hands its upstream connection to the next client, a response body
//! abandoned half-way never leaves its connection to be reused, a connection the upstream closed
//! while idle is replaced without an error, and an HTTP/2 client's concurrent requests do not
//! wait for each other.
#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use common::{Gateway, Options, Recorded, Upstream, default_response, until};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, channel::Channel};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const KEY: (&str, &str) = ("x-argilla-api-key", "alice-key");

/// `/api/datasets/endless`: a body that never ends (chunks until nobody reads);
/// `/api/datasets/big`: 256 KiB; anything else: the default answer.
fn respond(request: &Recorded) -> Response<argilla_gateway::body::Body> {
    match request.path.as_str() {
        "/api/datasets/endless" => {
            let (mut tx, body) = Channel::<Bytes, hyper::Error>::new(2);
            tokio::spawn(async move {
                while tx
                    .send_data(Bytes::from(vec![b'x'; 16 * 1024]))
                    .await
                    .is_ok()
                {}
            });
            Response::new(argilla_gateway::body::boxed(body))
        }
        "/api/datasets/big" => Response::new(argilla_gateway::body::full(vec![b'y'; 256 * 1024])),
        _ => default_response(request),
    }
}

fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::get(format!("{path}?workspace=team-a"))
        .header("host", "gateway")
        .header(KEY.0, KEY.1)
        .body(Empty::new())
        .unwrap()
}

/// One HTTP/1.1 client connection to the gateway.
async fn h1(gw: &Gateway) -> http1::SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    sender
}

async fn body_of(response: Response<hyper::body::Incoming>) -> Bytes {
    response.into_body().collect().await.unwrap().to_bytes()
}

#[tokio::test]
async fn a_keep_alive_client_uses_one_upstream_connection() {
    let upstream = Upstream::with(Arc::new(respond)).await;
    let gw = Gateway::start(&upstream).await;
    let mut client = h1(&gw).await;
    for path in [
        "/api/datasets/a",
        "/api/datasets/big",
        "/api/datasets/b",
        "/api/datasets/big",
    ] {
        let response = client.send_request(get(path)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let expected = if path.ends_with("big") {
            256 * 1024
        } else {
            11
        };
        assert_eq!(body_of(response).await.len(), expected, "{path}");
    }
    assert_eq!(upstream.requests().len(), 4);
    assert_eq!(
        upstream.connections(),
        1,
        "every request on the same upstream connection"
    );
}

#[tokio::test]
async fn a_closed_client_connection_hands_its_upstream_connection_to_the_next() {
    let upstream = Upstream::with(Arc::new(respond)).await;
    let gw = Gateway::start(&upstream).await;
    let mut first = h1(&gw).await;
    let response = first.send_request(get("/api/datasets/a")).await.unwrap();
    assert_eq!(body_of(response).await.as_ref(), br#"{"ok":true}"#);
    drop(first);
    until(
        "the upstream connection is parked",
        Duration::from_secs(5),
        || gw.state.upstream.idle_count() == 1,
    )
    .await;
    let mut second = h1(&gw).await;
    let response = second.send_request(get("/api/datasets/b")).await.unwrap();
    assert_eq!(body_of(response).await.as_ref(), br#"{"ok":true}"#);
    assert_eq!(upstream.connections(), 1);
    assert_eq!(
        gw.state.upstream.idle_count(),
        0,
        "taken by the second client"
    );
}

#[tokio::test]
async fn an_abandoned_response_body_closes_its_upstream_connection() {
    let upstream = Upstream::with(Arc::new(respond)).await;
    let gw = Gateway::start(&upstream).await;
    // Raw socket: read the head and a little of the endless body, then hang up.
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"GET /api/datasets/endless?workspace=team-a HTTP/1.1\r\nhost: gw\r\nx-argilla-api-key: alice-key\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200 OK"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    drop(stream);
    // The half-read connection must not serve anyone again; the next client gets a fresh one
    // and a whole, correct answer (not the rest of the endless body).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        gw.state.upstream.idle_count(),
        0,
        "nothing half-read is parked"
    );
    let mut next = h1(&gw).await;
    let response = next.send_request(get("/api/datasets/a")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_of(response).await.as_ref(), br#"{"ok":true}"#);
    assert_eq!(upstream.connections(), 2);
}

/// An upstream that answers one request per connection and closes it 20 ms later, without
/// `Connection: close` (as a keep-alive timeout does).
async fn closing_upstream() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}";
                let _ = stream.write_all(answer).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            });
        }
    });
    (url, accepted)
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_replaced() {
    let (url, accepted) = closing_upstream().await;
    let recorder = Upstream::start().await; // only for the options; never reached
    let gw = Options::new(&recorder)
        .env("ARGILLA_GATEWAY_UPSTREAM_URL", url)
        .start()
        .await;
    let mut client = h1(&gw).await;
    for round in 1..=3 {
        let response = client.send_request(get("/api/datasets/a")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "round {round}");
        assert_eq!(body_of(response).await.as_ref(), br#"{"ok":true}"#);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        3,
        "a new connection each time"
    );
    assert_eq!(recorder.connections(), 0);
}

#[tokio::test]
async fn concurrent_http2_requests_do_not_wait_for_each_other() {
    let upstream = Upstream::with(Arc::new(respond)).await;
    let gw = Gateway::start(&upstream).await;
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (mut client, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let h2 = |path: &str| {
        Request::get(format!("http://gateway{path}?workspace=team-a"))
            .header(KEY.0, KEY.1)
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    // The first stream's body never ends; the second must still be answered.
    let endless = client
        .send_request(h2("/api/datasets/endless"))
        .await
        .unwrap();
    assert_eq!(endless.status(), StatusCode::OK);
    let second = tokio::time::timeout(Duration::from_secs(5), async {
        let response = client.send_request(h2("/api/datasets/a")).await.unwrap();
        body_of(response).await
    })
    .await
    .expect("the second stream is not stuck behind the first");
    assert_eq!(second.as_ref(), br#"{"ok":true}"#);
    assert_eq!(upstream.connections(), 2);
    drop(endless);
}
