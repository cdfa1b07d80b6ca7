//! The hostile suite's own rig: the shared recording upstream (`tests/common`), which also tells
//! whether each request body arrived whole and which trailers came with it, a raw-socket HTTP/1
//! client that sends exactly the bytes a case gives it, and the assertions every case shares.

use std::{net::SocketAddr, time::Duration};

use serde_json::Value;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::common::{Gateway, Options, SERVICE_KEY, users_yaml};

/// How long any single wait in this suite may take before the case fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The suite's upstream is the shared recording one: it also tells whether each request body
/// arrived whole, which trailers came with it and which request heads arrived.
pub use crate::common::{
    Recorded as Rec, Responder, Upstream as Recorder, default_response as default_answer,
};

/// Gateway options pointing at `url`, with the suite's users.
pub fn options(url: &str) -> Options {
    Options {
        users_yaml: Some(users_yaml()),
        toml: String::new(),
        env: vec![
            ("ARGILLA_GATEWAY_UPSTREAM_URL", url.to_owned()),
            ("ARGILLA_GATEWAY_UPSTREAM_API_KEY", SERVICE_KEY.into()),
            (
                "ARGILLA_LOCAL_AUTH_SECRET_KEY",
                crate::TEST_SECRET.to_owned(),
            ),
            ("ARGILLA_GATEWAY_RELOAD_DEBOUNCE_MILLIS", "20".into()),
        ],
    }
}

/// A recording upstream and a gateway in front of it.
pub struct Rig {
    pub up: Recorder,
    pub gw: Gateway,
}

impl Rig {
    pub async fn start() -> Self {
        Self::with(|o| o).await
    }

    pub async fn with(configure: impl FnOnce(Options) -> Options) -> Self {
        let up = Recorder::start().await;
        let gw = configure(options(&up.url())).start().await;
        Self { up, gw }
    }

    pub async fn raw(&self, bytes: impl AsRef<[u8]>) -> Reply {
        exchange(self.gw.addr, bytes.as_ref()).await
    }
}

/// A response as read off the socket.
#[derive(Debug)]
pub struct Reply {
    /// `None`: the connection closed without a response.
    pub status: Option<u16>,
    pub head: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether the body ended as its framing said it would.
    pub whole: bool,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?} after {}",
                String::from_utf8_lossy(&self.body),
                self.head
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn status(&self) -> u16 {
        self.status
            .unwrap_or_else(|| panic!("no response at all (connection closed)"))
    }

    /// Asserts the status and Argilla's error shape with this code suffix.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status(), status, "{}\n{}", self.head, self.text());
        let json = self.json();
        assert_eq!(
            json["detail"]["code"].as_str(),
            Some(format!("argilla.api.errors::{code}").as_str()),
            "{json}"
        );
        assert!(
            json["detail"]["params"].is_object(),
            "params must be an object: {json}"
        );
        assert!(
            self.header("content-type")
                .is_some_and(|v| v.starts_with("application/json")),
            "{}",
            self.head
        );
    }

    /// Asserts a refusal that is not a success, whatever produced it (hyper's parser answers
    /// bare 4xx without JSON), or a closed connection.
    pub fn assert_refused(&self, allowed: &[u16]) {
        if let Some(status) = self.status {
            assert!(
                allowed.contains(&status),
                "status {status} not in {allowed:?}: {}\n{}",
                self.head,
                self.text()
            );
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Sends `bytes` on a fresh connection and reads one response.
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Reply {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    // Written beside the read: the peer may answer (and stop reading) before the request is
    // all sent, and a failed write is part of the answer.
    let bytes = bytes.to_vec();
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(&bytes).await;
        writer
    });
    let reply = read_reply(&mut reader).await;
    writing.abort();
    reply
}

/// Reads one response (status line, headers, body by its framing) from `stream`.
pub async fn read_reply<S: AsyncRead + Unpin>(stream: &mut S) -> Reply {
    tokio::time::timeout(PATIENCE, read_reply_inner(stream))
        .await
        .expect("a response (or a close) within the suite's patience")
}

async fn read_more<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> bool {
    let mut chunk = vec![0u8; 16 * 1024];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

async fn read_reply_inner<S: AsyncRead + Unpin>(stream: &mut S) -> Reply {
    let mut buf = Vec::new();
    let end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            // An interim `100 Continue` is not the answer.
            if buf.starts_with(b"HTTP/1.1 100 ") {
                buf.drain(..i + 4);
                continue;
            }
            break i;
        }
        if !read_more(stream, &mut buf).await {
            return Reply {
                status: None,
                head: String::from_utf8_lossy(&buf).into_owned(),
                headers: Vec::new(),
                body: Vec::new(),
                whole: false,
            };
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut rest = buf[end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse::<u16>().ok());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let no_body = matches!(status, Some(101 | 204 | 304)) || status.is_some_and(|s| s < 200);
    let (body, whole) = if no_body {
        (Vec::new(), true)
    } else if let Some(length) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        while rest.len() < length {
            if !read_more(stream, &mut rest).await {
                break;
            }
        }
        let whole = rest.len() >= length;
        rest.truncate(length);
        (rest, whole)
    } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(stream, rest).await
    } else {
        while read_more(stream, &mut rest).await {}
        (rest, true)
    };
    Reply {
        status,
        head,
        headers,
        body,
        whole,
    }
}

async fn dechunk<S: AsyncRead + Unpin>(stream: &mut S, mut raw: Vec<u8>) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = find(&raw, b"\r\n") {
                break i;
            }
            if !read_more(stream, &mut raw).await {
                return (body, false);
            }
        };
        let size_text = String::from_utf8_lossy(&raw[..line_end]).into_owned();
        let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
        else {
            return (body, false);
        };
        raw.drain(..line_end + 2);
        if size == 0 {
            return (body, true);
        }
        while raw.len() < size + 2 {
            if !read_more(stream, &mut raw).await {
                body.extend_from_slice(&raw[..raw.len().min(size)]);
                return (body, false);
            }
        }
        body.extend_from_slice(&raw[..size]);
        raw.drain(..size + 2);
    }
}

/// Sends `bytes`, then closes the sending side (the client is done, mid-message or not), and
/// reads one response.
pub async fn exchange_then_close(addr: SocketAddr, bytes: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(bytes).await;
    let _ = stream.shutdown().await;
    read_reply(&mut stream).await
}

/// Whether the peer closes the connection within the suite's patience (after a response).
pub async fn closes(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    matches!(
        tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// An HTTP/1.1 request with `Host: gw`, the given header lines, and `Content-Length` when there
/// is a body.
pub fn req(method: &str, target: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    req_bytes(method, target, headers, body.as_bytes())
}

pub fn req_bytes(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: gw\r\n").into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if !body.is_empty() {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// `GET target` with alice's key.
pub fn alice_get(target: &str) -> Vec<u8> {
    req("GET", target, &[("X-Argilla-Api-Key", "alice-key")], "")
}

/// Asserts that a forwarded request speaks for `user` and for nobody else: our key exactly once,
/// our `X-Forwarded-*` exactly once each, and no client credential, identity or workspace header.
pub fn assert_speaks_for(rec: &Rec, user: &str) {
    assert_eq!(rec.all("x-argilla-api-key"), [SERVICE_KEY], "{rec:#?}");
    assert_eq!(rec.all("x-forwarded-user"), [user], "{rec:#?}");
    assert_eq!(rec.all("x-forwarded-for"), ["127.0.0.1"], "{rec:#?}");
    assert_eq!(rec.all("x-forwarded-proto"), ["http"], "{rec:#?}");
    assert_client_headers_gone(rec);
}

/// Asserts a public forward: no credential of ours or the client's, no identity.
pub fn assert_anonymous(rec: &Rec) {
    assert!(rec.all("x-argilla-api-key").is_empty(), "{rec:#?}");
    assert!(rec.all("x-forwarded-user").is_empty(), "{rec:#?}");
    assert_eq!(rec.all("x-forwarded-for"), ["127.0.0.1"], "{rec:#?}");
    assert_client_headers_gone(rec);
}

fn assert_client_headers_gone(rec: &Rec) {
    for name in [
        "authorization",
        "proxy-authorization",
        "x-rubrix-api-key",
        "x-argilla-workspace",
        "x-rubrix-workspace",
        "forwarded",
        "x-remote-user",
        "remote-user",
        "x-auth-request-user",
        "x-forwarded-email",
        "x-forwarded-groups",
        "x-forwarded-preferred-username",
        "x-forwarded-access-token",
        "cookie",
    ] {
        assert!(
            rec.all(name).is_empty(),
            "{name} reached the upstream: {rec:#?}"
        );
    }
    for (name, value) in &rec.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        for secret in [
            "alice-key",
            "bob-key",
            "root-key",
            "carol-key",
            "rubrix.apikey",
        ] {
            assert!(
                !value.contains(secret),
                "a client key reached the upstream in {name}: {rec:#?}"
            );
        }
    }
}

/// Asserts the upstream got exactly one request, at `path` with query `query`, for `user`.
pub fn assert_one(up: &Recorder, path: &str, query: Option<&str>, user: &str) -> Rec {
    let rec = up.only();
    assert_eq!(rec.path, path, "{rec:#?}");
    assert_eq!(rec.query.as_deref(), query, "{rec:#?}");
    assert_speaks_for(&rec, user);
    rec
}
