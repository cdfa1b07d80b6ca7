//! Upstream faults: it closes mid-response, resets, answers garbage, answers slowly or not at
//! all, is down at start and comes back. The gateway answers 502/504 in Argilla's shape and
//! recovers without a restart.

use std::sync::Arc;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{Mutex, oneshot},
};

use crate::harness::{
    PATIENCE, Recorder, alice_get, default_answer, exchange, options, read_reply,
};

/// What the scripted upstream does with one connection.
enum Act {
    /// Reads the request, then closes without a word.
    Close,
    /// Reads the request, then resets the connection.
    Reset,
    /// Answers bytes that are not HTTP.
    Garbage,
    /// Reads the request and never answers (until the test ends).
    Silent,
    /// Sends these bytes, then closes.
    Partial(&'static str),
    /// Sends the head and a first chunk, waits for the signal, then finishes the body.
    Stream(oneshot::Receiver<()>),
    /// A proper answer.
    Fine,
}

async fn read_head(stream: &mut TcpStream) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => buf.push(byte[0]),
            _ => return,
        }
    }
}

/// An upstream that treats the n-th connection as `script[n]`, and every later one as `Fine`.
async fn scripted(script: Vec<Act>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let script = Arc::new(Mutex::new(script.into_iter()));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let act = script.lock().await.next().unwrap_or(Act::Fine);
            tokio::spawn(async move {
                read_head(&mut stream).await;
                match act {
                    Act::Close => {}
                    Act::Reset => {
                        let _ = stream.set_zero_linger();
                    }
                    Act::Garbage => {
                        let _ = stream.write_all(b"SSH-2.0-OpenSSH\r\n\r\n\r\n").await;
                    }
                    Act::Silent => {
                        let mut rest = Vec::new();
                        let _ = stream.read_to_end(&mut rest).await;
                    }
                    Act::Partial(bytes) => {
                        let _ = stream.write_all(bytes.as_bytes()).await;
                    }
                    Act::Stream(go) => {
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfirst-\r\n")
                            .await;
                        let _ = go.await;
                        let _ = stream.write_all(b"6\r\nsecond\r\n0\r\n\r\n").await;
                    }
                    Act::Fine => {
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\nConnection: close\r\n\r\n{\"ok\":true}")
                            .await;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

/// Runs one faulty exchange, asserts the answer, then asserts the next request is served.
async fn fault_then_recovery(act: Act, status: u16, timeout_secs: Option<&str>) {
    let url = scripted(vec![act]).await;
    let mut opts = options(&url);
    if let Some(secs) = timeout_secs {
        opts = opts.env("ARGILLA_GATEWAY_UPSTREAM_RESPONSE_TIMEOUT_SECS", secs);
    }
    let gw = opts.start().await;
    let reply = exchange(gw.addr, &alice_get("/api/datasets/ds")).await;
    reply.assert_error(status, "GenericServerError");
    let json = reply.json();
    for key in ["type", "message", "args"] {
        assert!(
            json["detail"]["params"].get(key).is_some(),
            "params.{key} missing: {json}"
        );
    }
    assert!(!reply.text().contains(crate::common::SERVICE_KEY));
    let again = exchange(gw.addr, &alice_get("/api/datasets/ds")).await;
    assert_eq!(again.status(), 200, "no recovery: {}", again.text());
    assert_eq!(again.body, b"{\"ok\":true}");
}

#[tokio::test]
async fn fault_upstream_closes_before_answering() {
    fault_then_recovery(Act::Close, 502, None).await;
}

#[tokio::test]
async fn fault_upstream_resets() {
    fault_then_recovery(Act::Reset, 502, None).await;
}

#[tokio::test]
async fn fault_upstream_answers_garbage() {
    fault_then_recovery(Act::Garbage, 502, None).await;
}

#[tokio::test]
async fn fault_upstream_never_answers() {
    fault_then_recovery(Act::Silent, 504, Some("1")).await;
}

#[tokio::test]
async fn fault_upstream_closes_mid_head() {
    fault_then_recovery(Act::Partial("HTTP/1.1 200 OK\r\nContent-Ty"), 502, None).await;
}

/// The upstream dies after the head and part of a sized body: the status is already out, so the
/// client must see a body that breaks off, never a short body that looks whole.
async fn broken_body(bytes: &'static str) {
    let url = scripted(vec![Act::Partial(bytes)]).await;
    let gw = options(&url).start().await;
    let reply = exchange(gw.addr, &alice_get("/api/datasets/ds")).await;
    if let Some(status) = reply.status {
        if status == 200 {
            assert!(!reply.whole, "a truncated body looked whole: {reply:?}");
        } else {
            reply.assert_error(502, "GenericServerError");
        }
    }
    let again = exchange(gw.addr, &alice_get("/api/datasets/ds")).await;
    assert_eq!(again.status(), 200, "no recovery");
    assert!(again.whole);
}

#[tokio::test]
async fn fault_upstream_closes_mid_sized_body() {
    broken_body("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"partial\":").await;
}

#[tokio::test]
async fn fault_upstream_closes_mid_chunked_body() {
    broken_body("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\na\r\n{\"partial\"\r\n").await;
}

/// A slow upstream is streamed, not buffered: the client has the first chunk before the
/// upstream sends the second.
#[tokio::test]
async fn fault_slow_upstream_is_streamed() {
    let (go, wait) = oneshot::channel();
    let url = scripted(vec![Act::Stream(wait)]).await;
    let gw = options(&url).start().await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(&alice_get("/api/datasets/ds/records/1"))
        .await
        .unwrap();
    let mut seen = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&seen).contains("first-") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the first chunk");
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the first chunk arrives while the upstream holds the second");
    go.send(()).unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&rest).contains("0\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the end");
            rest.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .unwrap();
    assert!(String::from_utf8_lossy(&rest).contains("second"));
}

/// The upstream is down when the gateway starts and comes back on the same port: 502 in
/// Argilla's shape first, then service, without a restart.
#[tokio::test]
async fn fault_upstream_down_at_start_then_back() {
    let parked = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = parked.local_addr().unwrap();
    drop(parked);
    let gw = options(&format!("http://{addr}")).start().await;
    for target in ["/api/datasets/ds", "/api/_info"] {
        let reply = exchange(gw.addr, &alice_get(target)).await;
        reply.assert_error(502, "GenericServerError");
    }
    let listener = TcpListener::bind(addr).await.unwrap();
    let up = Recorder::on(listener, Arc::new(default_answer));
    let reply = exchange(gw.addr, &alice_get("/api/datasets/ds")).await;
    assert_eq!(reply.status(), 200, "{}", reply.text());
    crate::harness::assert_one(&up, "/api/datasets/ds", Some("workspace=alice"), "alice");
}

/// A dataset list the gateway must filter but cannot read is a 502, not an unfiltered list.
#[tokio::test]
async fn fault_dataset_list_not_json() {
    let url = scripted(vec![Act::Partial(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 15\r\n\r\n<html>b1</html>",
    )])
    .await;
    let gw = options(&url).start().await;
    let reply = exchange(gw.addr, &alice_get("/api/datasets")).await;
    reply.assert_error(502, "GenericServerError");
    assert!(!reply.text().contains("b1"));
}

/// While the upstream is silent, the gateway keeps answering what it answers itself, and a
/// client that gives up does not take the gateway with it.
#[tokio::test]
async fn fault_silent_upstream_does_not_block_other_requests() {
    let url = scripted(vec![Act::Silent, Act::Silent]).await;
    let gw = options(&url)
        .env("ARGILLA_GATEWAY_UPSTREAM_RESPONSE_TIMEOUT_SECS", "1")
        .start()
        .await;
    let mut hanging = TcpStream::connect(gw.addr).await.unwrap();
    hanging
        .write_all(&alice_get("/api/datasets/ds"))
        .await
        .unwrap();
    let me = exchange(gw.addr, &alice_get("/api/me")).await;
    assert_eq!(me.status(), 200);
    drop(hanging);
    let health = exchange(gw.addr, b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n").await;
    assert_eq!(health.status(), 200);
    let mut again = TcpStream::connect(gw.addr).await.unwrap();
    again.write_all(&alice_get("/api/_info")).await.unwrap();
    let reply = read_reply(&mut again).await;
    reply.assert_error(504, "GenericServerError");
}
