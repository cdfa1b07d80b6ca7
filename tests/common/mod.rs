//! Test harness: a recording upstream and a gateway in front of it, each on its own
//! `127.0.0.1:0` socket, plus a small HTTP client.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]
#![allow(clippy::unwrap_used, reason = "a failing harness should panic loudly")]

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use argilla_gateway::{
    body::{Body, full},
    config::Config,
    reload::{Reloader, Users},
    server::{self, Started, State},
};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use serde_json::Value;
use tokio::{net::TcpListener, sync::oneshot};

pub mod users;
#[allow(
    unused_imports,
    reason = "each test binary uses a different part of the harness"
)]
pub use users::{Entry, UsersFile, hash, users_yaml};

/// The upstream service key the test gateways use.
pub const SERVICE_KEY: &str = "upstream-service-key";

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Whether the body ended cleanly (false: the gateway broke it off).
    pub complete: bool,
    /// Trailers that arrived after a chunked body.
    pub trailers: Option<HeaderMap>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of `name`, as text.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    /// The query's `workspace` parameters, as raw pairs.
    pub fn workspace_params(&self) -> Vec<String> {
        self.query
            .as_deref()
            .unwrap_or_default()
            .split('&')
            .filter(|p| {
                form_urlencoded::parse(p.as_bytes())
                    .next()
                    .is_some_and(|(n, _)| n == "workspace")
            })
            .map(str::to_owned)
            .collect()
    }
}

pub type Responder = Arc<dyn Fn(&Recorded) -> Response<Body> + Send + Sync>;

/// An upstream that records every request and answers with `respond`: the one every test file
/// uses, the hostile suite included.
pub struct Upstream {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Recorded>>>,
    /// The path and query of every request whose head arrived, body or not.
    heads: Arc<Mutex<Vec<String>>>,
    /// TCP connections accepted so far.
    pub connections: Arc<AtomicUsize>,
}

impl Upstream {
    /// An upstream answering 200 `{"ok":true}` to everything, and a fixed list of datasets to
    /// `GET /api/datasets[/]`.
    pub async fn start() -> Self {
        Self::with(Arc::new(default_response)).await
    }

    pub async fn with(respond: Responder) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        Self::on(listener, respond)
    }

    /// Serves on an already-bound listener (to come back on a known port).
    pub fn on(listener: TcpListener, respond: Responder) -> Self {
        let addr = listener.local_addr().expect("upstream address");
        let received: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let heads: Arc<Mutex<Vec<String>>> = Arc::default();
        let connections = Arc::new(AtomicUsize::new(0));
        let (log, seen, accepted) = (received.clone(), heads.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let (log, seen, respond) = (log.clone(), seen.clone(), respond.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (log, seen, respond) = (log.clone(), seen.clone(), respond.clone());
                        async move {
                            seen.lock().unwrap().push(request.uri().to_string());
                            let recorded = record(request).await;
                            let response = respond(&recorded);
                            log.lock().unwrap().push(recorded);
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            received,
            heads,
            connections,
        }
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.received.lock().unwrap().clone()
    }

    /// The only request received so far.
    pub fn only(&self) -> Recorded {
        let all = self.requests();
        assert_eq!(all.len(), 1, "expected one upstream request, got {all:#?}");
        all.into_iter().next().unwrap()
    }

    pub fn clear(&self) {
        self.received.lock().unwrap().clear();
        self.heads.lock().unwrap().clear();
    }

    /// Whether a request whose path and query contain `needle` has begun to arrive.
    pub fn head_seen(&self, needle: &str) -> bool {
        self.heads
            .lock()
            .unwrap()
            .iter()
            .any(|h| h.contains(needle))
    }
    /// Fails the case if any request's body came to an end at the upstream (a head whose body
    /// is still arriving is allowed: see [`Upstream::assert_nothing`] for none at all).
    pub fn assert_no_body_ended(&self) {
        let all = self.requests();
        assert!(
            all.is_empty(),
            "no request body may end at the upstream, got {all:#?}"
        );
    }

    /// Fails the case if anything reached the upstream, a request whose body never finished
    /// (only its head arrived) included.
    pub fn assert_nothing(&self) {
        let all = self.requests();
        let heads = self.heads.lock().unwrap().clone();
        assert!(
            all.is_empty() && heads.is_empty(),
            "the upstream must receive nothing, got {all:#?} (request heads: {heads:#?})"
        );
    }
}

/// Reads a request whole, frame by frame, noting whether its body ended cleanly.
async fn record(request: Request<Incoming>) -> Recorded {
    let (parts, mut body) = request.into_parts();
    let mut data = Vec::new();
    let mut trailers = None;
    let mut complete = true;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            complete = false;
            break;
        };
        match frame.into_data() {
            Ok(chunk) => data.extend_from_slice(&chunk),
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    Recorded {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body: data.into(),
        complete,
        trailers,
    }
}

/// The datasets the default upstream lists.
pub const DATASETS: &str = r#"[{"name":"a1","workspace":"team-a","owner":"team-a"},{"name":"b1","workspace":"team-b","owner":"team-b"},{"name":"s1","workspace":"shared","owner":"shared"},{"name":"al","workspace":"alice","owner":"alice"},{"name":"bo","workspace":"bob","owner":"bob"},{"name":"ro","workspace":"root","owner":"root"}]"#;

/// 200 `{"ok":true}`, and [`DATASETS`] for an unscoped `GET /api/datasets[/]`.
pub fn default_response(request: &Recorded) -> Response<Body> {
    if request.method == Method::GET
        && (request.path == "/api/datasets" || request.path == "/api/datasets/")
        && request.query.is_none()
    {
        ok_json(DATASETS)
    } else {
        ok_json(r#"{"ok":true}"#)
    }
}

/// A 200 JSON answer.
pub fn ok_json(body: &str) -> Response<Body> {
    Response::builder()
        .header("content-type", "application/json")
        .body(full(body.to_owned()))
        .unwrap()
}

/// A running gateway.
pub struct Gateway {
    pub addr: SocketAddr,
    pub users: Arc<Users>,
    pub state: Arc<State>,
    pub dir: tempfile::TempDir,
    pub users_file: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    stopped: Option<oneshot::Receiver<()>>,
    _reloader: Reloader,
}

/// How to build a gateway.
pub struct Options {
    pub users_yaml: Option<String>,
    pub toml: String,
    pub env: Vec<(&'static str, String)>,
}

impl Options {
    pub fn new(upstream: &Upstream) -> Self {
        Self {
            users_yaml: Some(users_yaml()),
            toml: String::new(),
            env: vec![
                ("ARGILLA_GATEWAY_UPSTREAM_URL", upstream.url()),
                ("ARGILLA_GATEWAY_UPSTREAM_API_KEY", SERVICE_KEY.into()),
                (
                    "ARGILLA_LOCAL_AUTH_SECRET_KEY",
                    "test-secret-0123456789abcdef".into(),
                ),
                ("ARGILLA_GATEWAY_RELOAD_DEBOUNCE_MILLIS", "20".into()),
            ],
        }
    }

    pub fn env(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.env.retain(|(n, _)| *n != name);
        self.env.push((name, value.into()));
        self
    }

    pub fn toml(mut self, toml: &str) -> Self {
        toml.clone_into(&mut self.toml);
        self
    }

    pub fn no_users_file(mut self) -> Self {
        self.users_yaml = None;
        self
    }

    pub async fn start(self) -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let users_file = dir.path().join("users.yml");
        let mut env = self.env.clone();
        if let Some(yaml) = &self.users_yaml {
            std::fs::write(&users_file, yaml).expect("write users file");
            env.push((
                "ARGILLA_LOCAL_AUTH_USERS_DB_FILE",
                users_file.display().to_string(),
            ));
        }
        let env: HashMap<&str, String> = env.into_iter().collect();
        let config = Config::from_sources(Some(&self.toml), &|name| env.get(name).cloned())
            .expect("test configuration is valid");
        let Started {
            state,
            users,
            reloader,
        } = State::start(config).expect("users, watcher and TLS files load");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind gateway");
        let addr = listener.local_addr().expect("gateway address");
        let (shutdown, signal) = oneshot::channel::<()>();
        let (done, stopped) = oneshot::channel::<()>();
        let serving = state.clone();
        tokio::spawn(async move {
            server::run(listener, serving, async {
                let _ = signal.await;
            })
            .await;
            let _ = done.send(());
        });
        Gateway {
            addr,
            users,
            state,
            dir,
            users_file,
            shutdown: Some(shutdown),
            stopped: Some(stopped),
            _reloader: reloader,
        }
    }
}

impl Gateway {
    pub async fn start(upstream: &Upstream) -> Self {
        Options::new(upstream).start().await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Signals shutdown; resolves when the server loop has finished.
    pub async fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(stopped) = self.stopped.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), stopped).await;
        }
    }

    /// Replaces the users file by writing a temp file and renaming it over, then waits until
    /// the gateway has applied it.
    pub async fn replace_users(&self, yaml: &str) {
        let mut reloads = self.users.subscribe();
        let before = reloads.borrow_and_update().applied;
        let temp = self.dir.path().join(".users.yml.tmp");
        std::fs::write(&temp, yaml).unwrap();
        std::fs::rename(&temp, &self.users_file).unwrap();
        tokio::time::timeout(
            Duration::from_secs(5),
            reloads.wait_for(|s| s.applied > before),
        )
        .await
        .expect("reload applied within 5 s")
        .unwrap();
    }
}

/// A reply as the client saw it.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Argilla's error code suffix, like `UnauthorizedError`.
    pub fn error_code(&self) -> String {
        self.json()["detail"]["code"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches("argilla.api.errors::")
            .to_owned()
    }
}

fn client() -> &'static Client<HttpConnector, Full<Bytes>> {
    static CLIENT: OnceLock<Client<HttpConnector, Full<Bytes>>> = OnceLock::new();
    CLIENT.get_or_init(|| {
        Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build_http()
    })
}

/// Sends a request with the given headers and body.
pub async fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Full::new(body.into())).expect("valid request");
    let response = tokio::time::timeout(Duration::from_secs(30), client().request(request))
        .await
        .expect("answer within 30 s")
        .expect("request sent");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body read").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    send("GET", url, headers, Bytes::new()).await
}

/// `Authorization: Basic` for `user:password`.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// The status of a GET, or `None` when nothing answers.
pub async fn get_opt(url: &str) -> Option<u16> {
    let request = Request::get(url).body(Full::new(Bytes::new())).ok()?;
    let response = tokio::time::timeout(Duration::from_secs(5), client().request(request))
        .await
        .ok()?
        .ok()?;
    Some(response.status().as_u16())
}

/// The real binary, run in `dir` with only `PATH`, a free listen address and `env`.
pub fn binary(dir: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_argilla-gateway"));
    command
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ARGILLA_GATEWAY_LISTEN", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null());
    command
}

/// Polls `condition` every 10 ms until it holds; panics with `what` after `limit`.
pub async fn until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
