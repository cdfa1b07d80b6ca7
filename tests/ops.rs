//! Operations: graceful shutdown, header limits, metrics, readiness, request ids, HTTP/2 (h2c)
//! and protocol upgrades (WebSocket) over real sockets.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic on failure, like tests"
)]
#![allow(clippy::too_many_lines, reason = "case tables are long on purpose")]
#![allow(
    clippy::float_cmp,
    reason = "Prometheus counters parse as floats but are whole numbers"
)]

mod common;

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use common::{Gateway, Options, Upstream, basic, get, send};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, channel::Channel};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_streams_and_refuses_new_connections() {
    let (release, released) = tokio::sync::watch::channel(false);
    let upstream = Upstream::with(Arc::new(move |_| {
        // A response that streams its second half only after the test says so.
        let (mut sender, body) = Channel::<Bytes>::new(1);
        let mut released = released.clone();
        tokio::spawn(async move {
            sender
                .send_data(Bytes::from_static(b"first half,"))
                .await
                .unwrap();
            let _ = released.wait_for(|r| *r).await;
            sender
                .send_data(Bytes::from_static(b" second half"))
                .await
                .unwrap();
        });
        Response::new(body.map_err(|never| match never {}).boxed())
    }))
    .await;
    let mut gateway = Gateway::start(&upstream).await;
    let addr = gateway.addr;

    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let request = Request::get(gateway.url("/api/datasets/ds/records/stream"))
        .header("x-argilla-api-key", "alice-key")
        .body(Empty::new())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"first half,");

    // Shut down while the response is half sent.
    let stopping = tokio::spawn(async move {
        gateway.stop().await;
        gateway
    });
    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if TcpStream::connect(addr).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        refused.is_ok(),
        "new connections are refused after the signal"
    );
    assert!(
        !stopping.is_finished(),
        "the gateway waits for the request in flight"
    );

    release.send(true).unwrap();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(
        &rest[..],
        b" second half",
        "the in-flight response completed"
    );
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("shutdown completes once nothing is in flight")
        .unwrap();
}

/// Sends raw bytes and returns the response head (up to the blank line, or what arrived before
/// the connection closed).
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let mut chunk = [0u8; 4096];
        while !out.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let upstream = Upstream::start().await;
    let gateway = Options::new(&upstream)
        .env("ARGILLA_GATEWAY_MAX_HEADER_BYTES", "16384")
        .start()
        .await;
    let big = "a".repeat(20_000);
    let request = format!(
        "GET /api/me HTTP/1.1\r\nHost: gw\r\nx-argilla-api-key: alice-key\r\nx-filler: {big}\r\n\r\n"
    );
    let answer = raw(gateway.addr, request.as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    assert!(upstream.requests().is_empty());
    // Just under the limit still works.
    let small = "a".repeat(8_000);
    let reply = get(
        &gateway.url("/api/me"),
        &[("x-argilla-api-key", "alice-key"), ("x-filler", &small)],
    )
    .await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn metrics_parse_and_count_a_login_failure() {
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(&upstream).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = listener.local_addr().unwrap();
    tokio::spawn(argilla_gateway::server::run_metrics(
        listener,
        gateway.state.clone(),
        std::future::pending(),
    ));
    let failed = send(
        "POST",
        &gateway.url("/api/security/token"),
        &[("content-type", "application/x-www-form-urlencoded")],
        "username=alice&password=wrong",
    )
    .await;
    assert_eq!(failed.status, 401);
    assert_eq!(
        get(
            &gateway.url("/api/datasets/ds"),
            &[("authorization", &basic("bob", "bob-pw"))]
        )
        .await
        .status,
        200
    );
    assert_eq!(
        get(
            &gateway.url("/api/datasets/ds"),
            &[("authorization", &basic("bob", "bob-pw"))]
        )
        .await
        .status,
        200
    );

    let text = String::from_utf8(
        get(&format!("http://{metrics_addr}/metrics"), &[])
            .await
            .body
            .to_vec(),
    )
    .unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    assert_eq!(
        value(
            "argilla_gateway_requests_total",
            &[
                ("route", "login"),
                ("decision", "reject"),
                ("status", "401")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            "argilla_gateway_auth_failures_total",
            &[("reason", "wrong username or password")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "argilla_gateway_requests_total",
            &[
                ("route", "dataset"),
                ("decision", "allow"),
                ("status", "200")
            ]
        ),
        2.0
    );
    assert_eq!(
        value("argilla_gateway_bcrypt_checks_total", &[]),
        2.0,
        "one failed login, one Basic miss"
    );
    assert_eq!(
        value("argilla_gateway_credential_cache_hits_total", &[]),
        1.0
    );
    assert_eq!(value("argilla_gateway_users", &[]), 5.0);
    assert!(
        text.contains("argilla_gateway_upstream_latency_seconds_count 2"),
        "{text}"
    );
    assert!(text.contains("argilla_gateway_in_flight_requests"));
    for secret in ["alice", "bob-pw", "alice-key", "$2"] {
        assert!(!text.contains(secret), "metrics reveal {secret:?}");
    }
}

#[tokio::test]
async fn readiness_follows_the_upstream() {
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(&upstream).await;
    let reply = get(&gateway.url("/readyz"), &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), serde_json::json!({"status": "ready"}));

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gateway = Options::new(&upstream)
        .env("ARGILLA_GATEWAY_UPSTREAM_URL", format!("http://{closed}"))
        .start()
        .await;
    assert_eq!(
        get(&gateway.url("/readyz"), &[]).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get(&gateway.url("/healthz"), &[]).await.status,
        200,
        "alive all the same"
    );
}

#[tokio::test]
async fn request_ids_travel_both_ways() {
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(&upstream).await;
    let reply = get(
        &gateway.url("/api/datasets/ds"),
        &[("x-argilla-api-key", "alice-key")],
    )
    .await;
    let id = reply.header("x-request-id").unwrap().to_owned();
    assert_eq!(id.len(), 16);
    assert_eq!(upstream.only().header("x-request-id"), Some(id.as_str()));

    upstream.clear();
    let reply = get(
        &gateway.url("/api/datasets/ds"),
        &[
            ("x-argilla-api-key", "alice-key"),
            ("x-request-id", "trace-42.a_b"),
        ],
    )
    .await;
    assert_eq!(
        reply.header("x-request-id"),
        Some("trace-42.a_b"),
        "a plain client id is kept"
    );
    assert_eq!(upstream.only().header("x-request-id"), Some("trace-42.a_b"));

    let reply = get(
        &gateway.url("/api/me"),
        &[
            ("x-argilla-api-key", "nope"),
            ("x-request-id", "evil id\" user=root"),
        ],
    )
    .await;
    assert_eq!(reply.status, 401);
    assert_ne!(
        reply.header("x-request-id"),
        Some("evil id\" user=root"),
        "a forged id is replaced"
    );
}

#[tokio::test]
async fn http2_cleartext_clients_are_served() {
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(&upstream).await;
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Empty<Bytes>>();
    for (path, key) in [
        ("/api/me", "alice-key"),
        ("/api/datasets/ds", "alice-key"),
        ("/api/me", "nope"),
    ] {
        let request = Request::get(gateway.url(path))
            .header("x-argilla-api-key", key)
            .body(Empty::new())
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        let expected = if key == "nope" { 401 } else { 200 };
        assert_eq!(response.status(), expected, "{path} {key}");
    }
    let got = upstream.only();
    assert_eq!(got.query.as_deref(), Some("workspace=alice"));
    assert_eq!(got.header("x-forwarded-user"), Some("alice"));
}

/// An upstream that switches every `Upgrade: websocket` request to an echo of raw bytes.
async fn echo_upstream() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|mut request: Request<Incoming>| async move {
                    let authorized = request
                        .headers()
                        .get("x-argilla-api-key")
                        .is_some_and(|v| v == common::SERVICE_KEY);
                    let wants = request
                        .headers()
                        .get("upgrade")
                        .is_some_and(|v| v == "websocket");
                    if !(authorized && wants) {
                        return Ok::<_, Infallible>(
                            Response::builder()
                                .status(400)
                                .body(Empty::<Bytes>::new())
                                .unwrap(),
                        );
                    }
                    let on_upgrade = hyper::upgrade::on(&mut request);
                    tokio::spawn(async move {
                        let upgraded = on_upgrade.await.unwrap();
                        let mut io = TokioIo::new(upgraded);
                        let mut buffer = [0u8; 1024];
                        loop {
                            let n = io.read(&mut buffer).await.unwrap_or(0);
                            if n == 0 || io.write_all(&buffer[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                    Ok(Response::builder()
                        .status(101)
                        .header("upgrade", "websocket")
                        .header("connection", "Upgrade")
                        .body(Empty::new())
                        .unwrap())
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn websocket_upgrade_passes_through_after_authentication() {
    let echo = echo_upstream().await;
    let upstream = Upstream::start().await;
    let gateway = Options::new(&upstream)
        .env("ARGILLA_GATEWAY_UPSTREAM_URL", format!("http://{echo}"))
        .start()
        .await;
    let handshake = "GET /api/datasets/ds/records/ws HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nx-argilla-api-key: alice-key\r\n\r\n";
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream.write_all(handshake.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(
            stream.read(&mut byte).await.unwrap(),
            1,
            "connection closed in the handshake"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    // A masked WebSocket text frame "hello" is just bytes to the gateway: it must echo intact.
    let frame = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    stream.write_all(&frame).await.unwrap();
    let mut echoed = [0u8; 11];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echoed, frame);

    // Without credentials the upgrade never reaches the upstream.
    let anonymous = handshake.replace("x-argilla-api-key: alice-key\r\n", "");
    let answer = raw(gateway.addr, anonymous.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_alpn_http2() {
    use tokio_rustls::rustls::{self, pki_types::ServerName};
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, certified.cert.pem()).unwrap();
    std::fs::write(&key_file, certified.signing_key.serialize_pem()).unwrap();
    let upstream = Upstream::start().await;
    let gateway = Options::new(&upstream)
        .env(
            "ARGILLA_GATEWAY_TLS_CERT_FILE",
            cert_file.display().to_string(),
        )
        .env(
            "ARGILLA_GATEWAY_TLS_KEY_FILE",
            key_file.display().to_string(),
        )
        .start()
        .await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(gateway.addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "ALPN chose HTTP/2"
    );
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = Request::get("https://localhost/api/datasets/ds")
        .header("x-argilla-api-key", "alice-key")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(upstream.only().header("x-forwarded-proto"), Some("https"));

    // Plain HTTP on the TLS port gets no answer.
    let answer = raw(gateway.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");

    // The container health check speaks TLS to a TLS listener, trusting exactly its certificate.
    let healthcheck = |cert: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_argilla-gateway"))
            .arg("healthcheck")
            .env_clear()
            .env("ARGILLA_GATEWAY_LISTEN", gateway.addr.to_string())
            .env("ARGILLA_GATEWAY_TLS_CERT_FILE", cert)
            .env("ARGILLA_GATEWAY_TLS_KEY_FILE", &key_file)
            .output()
            .unwrap()
    };
    let ran = tokio::task::block_in_place(|| healthcheck(&cert_file));
    assert!(
        ran.status.success(),
        "healthcheck over TLS: {}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let other_file = dir.path().join("other.pem");
    std::fs::write(&other_file, other.cert.pem()).unwrap();
    let ran = tokio::task::block_in_place(|| healthcheck(&other_file));
    assert_eq!(
        ran.status.code(),
        Some(1),
        "another certificate is not trusted"
    );
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let upstream = Upstream::start().await;
    let gateway = Options::new(&upstream)
        .env("ARGILLA_GATEWAY_HEADER_READ_TIMEOUT_SECS", "1")
        .start()
        .await;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream
        .write_all(b"GET /api/me HTTP/1.1\r\nHost: gw\r\nx-argilla-api")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    assert!(closed.is_ok(), "the connection is closed, not left hanging");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not before the timeout"
    );
    let answer = String::from_utf8_lossy(&out);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert!(upstream.requests().is_empty());
}
