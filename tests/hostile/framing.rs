//! Framing: `Content-Length` with `Transfer-Encoding`, two lengths, obsolete line folding, bare
//! LF and CR, oversized and slow headers, bodies over the inspected-route limit, HTTP/1.0
//! without `Host`, pipelining and trailers.

use std::time::{Duration, Instant};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::harness::{PATIENCE, Rig, assert_one, closes, read_reply, req};

const BULK: &str = "/api/datasets/ds/TextClassification:bulk";

fn raw(text: &str) -> Vec<u8> {
    text.as_bytes().to_vec()
}

malformed! {
    frame_two_content_lengths: raw("POST /api/datasets/ds/TextClassification:bulk HTTP/1.1\r\nHost: gw\r\nX-Argilla-Api-Key: alice-key\r\nContent-Length: 2\r\nContent-Length: 20\r\n\r\n{}") => [400];
    frame_content_length_list: raw("POST /api/datasets/ds/TextClassification:bulk HTTP/1.1\r\nHost: gw\r\nX-Argilla-Api-Key: alice-key\r\nContent-Length: 2, 20\r\n\r\n{}") => [400];
    frame_content_length_plus_sign: raw("POST /api/datasets/ds/TextClassification:bulk HTTP/1.1\r\nHost: gw\r\nX-Argilla-Api-Key: alice-key\r\nContent-Length: +2\r\n\r\n{}") => [400];
    frame_content_length_negative: raw("POST /api/datasets/ds/TextClassification:bulk HTTP/1.1\r\nHost: gw\r\nX-Argilla-Api-Key: alice-key\r\nContent-Length: -1\r\n\r\n{}") => [400];
    frame_content_length_hex: raw("POST /api/datasets/ds/TextClassification:bulk HTTP/1.1\r\nHost: gw\r\nX-Argilla-Api-Key: alice-key\r\nContent-Length: 0x2\r\n\r\n{}") => [400];
    frame_transfer_encoding_chunked_not_last: raw("POST /api/datasets/ds/TextClassification:bulk HTTP/1.1\r\nHost: gw\r\nX-Argilla-Api-Key: alice-key\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n") => [400, 501];
    frame_transfer_encoding_xchunked: raw("POST /api/datasets/ds/TextClassification:bulk HTTP/1.1\r\nHost: gw\r\nX-Argilla-Api-Key: alice-key\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n") => [400, 501];
    frame_transfer_encoding_identity: raw("POST /api/datasets/ds/TextClassification:bulk HTTP/1.1\r\nHost: gw\r\nX-Argilla-Api-Key: alice-key\r\nTransfer-Encoding: identity\r\nContent-Length: 2\r\n\r\n{}") => [400, 501];
    frame_transfer_encoding_folded: raw("POST /api/datasets/ds/TextClassification:bulk HTTP/1.1\r\nHost: gw\r\nX-Argilla-Api-Key: alice-key\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 2\r\n\r\n{}") => [400];
    frame_obs_fold_hides_workspace: raw("GET /api/datasets/ds HTTP/1.1\r\nHost: gw\r\nX-Argilla-Api-Key: alice-key\r\nX-Note: a\r\n X-Argilla-Workspace: team-b\r\n\r\n") => [400];
    frame_obs_fold_continues_key: raw("GET /api/datasets/ds HTTP/1.1\r\nHost: gw\r\nX-Argilla-Api-Key: nope\r\n\talice-key\r\n\r\n") => [400];
    frame_bare_cr_in_header: raw("GET /api/datasets/ds HTTP/1.1\r\nHost: gw\r\nX-Argilla-Api-Key: alice-key\r\nX-Note: a\rX-Argilla-Workspace: team-b\r\n\r\n") => [400];
    frame_nul_in_header_value: raw("GET /api/datasets/ds HTTP/1.1\r\nHost: gw\r\nX-Argilla-Api-Key: alice\0-key\r\n\r\n") => [400];
    frame_space_before_colon: raw("GET /api/datasets/ds HTTP/1.1\r\nHost: gw\r\nX-Argilla-Api-Key : alice-key\r\n\r\n") => [400];
    frame_space_in_header_name: raw("GET /api/datasets/ds HTTP/1.1\r\nHost: gw\r\nX-Argilla Api-Key: alice-key\r\n\r\n") => [400];
    frame_invalid_method_token: raw("G@T /api/_info HTTP/1.1\r\nHost: gw\r\n\r\n") => [400];
    frame_extra_token_on_request_line: raw("GET /api/_info HTTP/1.1 extra\r\nHost: gw\r\n\r\n") => [400];
    frame_unknown_http_version: raw("GET /api/_info HTTP/2.7\r\nHost: gw\r\n\r\n") => [400, 505];
    frame_http_0_9_request: raw("GET /api/_info\r\n\r\n") => [400, 505];
    frame_bare_lf_injects_workspace: raw("GET /api/datasets/ds HTTP/1.1\r\nHost: gw\r\nX-Argilla-Api-Key: alice-key\r\nX-Note: a\nX-Argilla-Workspace: team-b\r\n\r\n") => [400, 404];
    frame_oversized_header: raw(&format!("GET /api/_info HTTP/1.1\r\nHost: gw\r\nX-Big: {}\r\n\r\n", "a".repeat(70_000))) => [431];
    frame_too_many_headers: raw(&format!("GET /api/_info HTTP/1.1\r\nHost: gw\r\n{}\r\n", (0..150).map(|i| ["X-H", &i.to_string(), ": v\r\n"].concat()).collect::<String>())) => [431, 400];
    /// RFC 9112 section 3.2: a server MUST answer 400 to an HTTP/1.1 request without `Host`.
    frame_http11_without_host: raw("GET /api/datasets/ds HTTP/1.1\r\nX-Argilla-Api-Key: alice-key\r\n\r\n") => [400];
    /// RFC 9112 section 3.2: … and to one with more than one `Host`.
    frame_two_host_headers: raw("GET /api/datasets/ds HTTP/1.1\r\nHost: gw\r\nHost: internal\r\nX-Argilla-Api-Key: alice-key\r\n\r\n") => [400];
}

refused! {
    frame_inspected_body_over_limit: req("POST", "/api/datasets", &[("X-Argilla-Api-Key", "alice-key"), ("Content-Type", "application/json")], &format!(r#"{{"name":"x","workspace":"team-a","pad":"{}"}}"#, "p".repeat(2 << 20))) => 413 "BadRequestError";
    frame_inspected_chunked_body_over_limit: {
        let chunk = "p".repeat(600 * 1024);
        format!("PUT /api/datasets/ds:copy HTTP/1.1\r\nHost: gw\r\nX-Argilla-Api-Key: alice-key\r\nTransfer-Encoding: chunked\r\n\r\n{n:x}\r\n{chunk}\r\n{n:x}\r\n{chunk}\r\n0\r\n\r\n", n = chunk.len()).into_bytes()
    } => 413 "BadRequestError";
}

/// A declared length far over the limit is refused at once, without waiting for a body that
/// never comes (and without `100 Continue`).
#[tokio::test]
async fn frame_declared_length_over_limit_is_refused_at_once() {
    let rig = Rig::start().await;
    let mut stream = TcpStream::connect(rig.gw.addr).await.unwrap();
    stream
        .write_all(b"POST /api/datasets HTTP/1.1\r\nHost: gw\r\nX-Argilla-Api-Key: alice-key\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 1000000000\r\n\r\n")
        .await
        .unwrap();
    let reply = read_reply(&mut stream).await;
    reply.assert_error(413, "BadRequestError");
    rig.up.assert_nothing();
}

/// A broken chunked body on a streamed route: whatever reached the upstream never looks whole.
async fn broken_chunks(body: &str) {
    let rig = Rig::start().await;
    let request = format!(
        "POST {BULK} HTTP/1.1\r\nHost: gw\r\nX-Argilla-Api-Key: alice-key\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
    );
    let reply = crate::harness::exchange_then_close(rig.gw.addr, request.as_bytes()).await;
    reply.assert_refused(&[400, 502]);
    for rec in rig.up.requests() {
        assert!(
            !rec.complete,
            "the upstream got a complete request out of a broken body: {rec:#?}"
        );
    }
}

#[tokio::test]
async fn frame_chunk_size_overflow() {
    broken_chunks("fffffffffffffffffffffff\r\nx\r\n0\r\n\r\n").await;
}

#[tokio::test]
async fn frame_chunk_size_not_hex() {
    broken_chunks("2\r\n{}\r\nzz\r\n0\r\n\r\n").await;
}

#[tokio::test]
async fn frame_chunk_shorter_than_declared() {
    broken_chunks("10\r\n{}\r\n0\r\n\r\n").await;
}

/// Bare LF as the only line ending: either refused, or read exactly as with CRLF (the key
/// authenticates, the workspace is checked).
#[tokio::test]
async fn frame_bare_lf_line_endings() {
    let rig = Rig::start().await;
    let reply = rig
        .raw(b"GET /api/datasets/ds?workspace=team-a HTTP/1.1\nHost: gw\nX-Argilla-Api-Key: alice-key\n\n")
        .await;
    match reply.status {
        None | Some(400) => rig.up.assert_nothing(),
        Some(200) => {
            assert_one(
                &rig.up,
                "/api/datasets/ds",
                Some("workspace=team-a"),
                "alice",
            );
        }
        Some(other) => panic!("unexpected {other}"),
    }
}

/// HTTP/1.0 without `Host`: served, and the upstream hears our authority, not an empty one.
#[tokio::test]
async fn frame_http10_without_host() {
    let rig = Rig::start().await;
    let reply = rig
        .raw(b"GET /api/datasets/ds HTTP/1.0\r\nX-Argilla-Api-Key: alice-key\r\n\r\n")
        .await;
    assert_eq!(reply.status(), 200, "{}", reply.head);
    let rec = assert_one(
        &rig.up,
        "/api/datasets/ds",
        Some("workspace=alice"),
        "alice",
    );
    assert_eq!(rec.all("host"), [rig.up.addr.to_string()]);
    assert!(rec.all("x-forwarded-host").is_empty(), "{rec:#?}");
}

/// Headers that trickle in are cut off after the configured time; nothing is forwarded.
#[tokio::test]
async fn frame_slow_headers_are_cut_off() {
    let rig = Rig::with(|o| o.env("ARGILLA_GATEWAY_HEADER_READ_TIMEOUT_SECS", "1")).await;
    let mut stream = TcpStream::connect(rig.gw.addr).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(b"GET /api/datasets/ds HTTP/1.1\r\nHost: gw\r\nX-Argilla-Api-Key: ali")
        .await
        .unwrap();
    let mut out = Vec::new();
    let ended = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut out)).await;
    assert!(ended.is_ok(), "a slow client holds the connection forever");
    assert!(started.elapsed() >= Duration::from_millis(900));
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    rig.up.assert_nothing();
}

/// A request smuggled as the body of a GET never becomes a request.
#[tokio::test]
async fn frame_request_in_get_body_is_only_a_body() {
    let rig = Rig::start().await;
    let smuggled = "GET /api/datasets/ds?workspace=team-b HTTP/1.1\r\nHost: gw\r\nX-Argilla-Api-Key: rubrix.apikey\r\n\r\n";
    let request = format!(
        "GET /api/_info HTTP/1.1\r\nHost: gw\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let mut stream = TcpStream::connect(rig.gw.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let reply = read_reply(&mut stream).await;
    assert_eq!(reply.status(), 200);
    let rec = rig.up.only();
    assert_eq!(rec.path, "/api/_info");
    assert_eq!(rec.body, smuggled.as_bytes());
}

/// Pipelined requests are each authenticated on their own: the second, anonymous one is
/// refused although the first on the same connection had a key.
#[tokio::test]
async fn frame_pipelined_second_request_is_authenticated_again() {
    let rig = Rig::start().await;
    let mut stream = TcpStream::connect(rig.gw.addr).await.unwrap();
    stream
        .write_all(b"GET /api/datasets/ds HTTP/1.1\r\nHost: gw\r\nX-Argilla-Api-Key: alice-key\r\n\r\nGET /api/datasets/ds?workspace=team-b HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut both = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut both))
        .await
        .expect("both answers, then a close")
        .unwrap();
    let text = String::from_utf8_lossy(&both);
    let statuses: Vec<&str> = text
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &text[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "401"], "{text}");
    assert!(text.contains("UnauthorizedError"), "{text}");
    assert_one(
        &rig.up,
        "/api/datasets/ds",
        Some("workspace=alice"),
        "alice",
    );
}

/// Trailers are a second header section the policy never saw: they must not reach the
/// upstream.
#[tokio::test]
async fn frame_trailers_do_not_reach_the_upstream() {
    let rig = Rig::start().await;
    let request = format!(
        "POST {BULK} HTTP/1.1\r\nHost: gw\r\nX-Argilla-Api-Key: alice-key\r\nTE: trailers\r\nTrailer: X-Forwarded-User, X-Argilla-Api-Key, X-Argilla-Workspace\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\nX-Forwarded-User: root\r\nX-Argilla-Api-Key: rubrix.apikey\r\nX-Argilla-Workspace: team-b\r\n\r\n"
    );
    let reply = rig.raw(request).await;
    match reply.status() {
        400 => rig.up.assert_nothing(),
        200 => {
            let rec = assert_one(&rig.up, BULK, Some("workspace=alice"), "alice");
            assert_eq!(rec.body, "{}".as_bytes());
            assert!(
                rec.trailers.as_ref().is_none_or(http::HeaderMap::is_empty),
                "trailers reached the upstream: {:?}",
                rec.trailers
            );
        }
        other => panic!("unexpected {other}"),
    }
}

/// After a framing error the connection is closed: nothing after it is read as a request.
#[tokio::test]
async fn frame_error_closes_the_connection() {
    let rig = Rig::start().await;
    let mut stream = TcpStream::connect(rig.gw.addr).await.unwrap();
    stream
        .write_all(b"POST /api/_info HTTP/1.1\r\nHost: gw\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxGET /api/_info HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    let reply = read_reply(&mut stream).await;
    reply.assert_refused(&[400]);
    assert!(closes(&mut stream).await, "the connection stays open");
    rig.up.assert_nothing();
}

/// `Content-Length` beside `Transfer-Encoding: chunked` (the classic CL.TE / TE.CL desync).
/// Refusing is best; RFC 9112 section 6.3 also lets an intermediary forward it with the length
/// removed, chunked framing obeyed and the connection closed afterwards. Either way the bytes
/// after the chunked body must never become a second request, and the upstream must never see
/// both framings.
async fn cl_and_te(head: &str) {
    let rig = Rig::start().await;
    let smuggled = "GET /api/datasets/ds?workspace=team-b HTTP/1.1\r\nHost: gw\r\nX-Argilla-Api-Key: alice-key\r\n\r\n";
    let request = format!(
        "POST {BULK} HTTP/1.1\r\nHost: gw\r\nX-Argilla-Api-Key: alice-key\r\n{head}\r\n0\r\n\r\n{smuggled}"
    );
    let mut stream = TcpStream::connect(rig.gw.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let reply = read_reply(&mut stream).await;
    match reply.status {
        None | Some(400) => rig.up.assert_nothing(),
        Some(200) => {
            let rec = assert_one(&rig.up, BULK, Some("workspace=alice"), "alice");
            assert!(rec.all("content-length").is_empty(), "{rec:#?}");
            assert!(rec.body.is_empty(), "{rec:#?}");
            assert!(
                closes(&mut stream).await,
                "the connection stays open after CL+TE"
            );
            assert_eq!(rig.up.requests().len(), 1, "the smuggled request ran");
        }
        Some(other) => panic!("unexpected {other}"),
    }
}

#[tokio::test]
async fn frame_content_length_and_chunked() {
    cl_and_te("Content-Length: 4\r\nTransfer-Encoding: chunked\r\n").await;
}

#[tokio::test]
async fn frame_chunked_and_content_length() {
    cl_and_te("Transfer-Encoding: chunked\r\nContent-Length: 80\r\n").await;
}
