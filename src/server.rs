//! The shared [`State`], the path every request takes ([`serve`]), the accept loop and graceful
//! shutdown ([`run`]).

use std::{convert::Infallible, future::Future, net::SocketAddr, sync::Arc, time::Instant};

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::{body::Incoming, service::service_fn, upgrade::OnUpgrade};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{net::TcpListener, sync::Semaphore};

use crate::{
    admission::{Admission, Ticket},
    answer,
    auth::{Authenticator, Identity, Verifier},
    body::{self, Body, full},
    config::{Config, Mode},
    error::Reject,
    limit::Limiter,
    metrics::{Extra, Metrics},
    oidc::Sso,
    policy,
    proxy::{self, Added, Base},
    route::{self, Api, Route},
    token::Tokens,
    upstream::{self, Affinity, Outgoing, Upstream},
    users::Users,
};

/// Everything a request may need. Built once; only the users snapshot and counters change.
pub struct State {
    /// The validated configuration.
    pub config: Config,
    /// The live users.
    pub users: Arc<Users>,
    /// bcrypt and its memory.
    pub verifier: Verifier,
    /// Gateway tokens.
    pub tokens: Tokens,
    /// Failed-authentication budgets.
    pub limiter: Limiter,
    /// Counters for the metrics listener.
    pub metrics: Metrics,
    /// TLS on the main listener, when configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// The service key as a header value, built once.
    service_key: HeaderValue,
    /// The upstream server and its idle connections.
    pub upstream: Arc<Upstream>,
    /// Client connections that have not authenticated yet.
    pub admission: Arc<Admission>,
    /// Single sign-on, when configured.
    pub sso: Option<Arc<Sso>>,
    base: Base,
}

impl State {
    /// Builds the state for `config` and the users loaded from it.
    ///
    /// # Panics
    /// Never for a configuration built by [`Config::from_sources`], which checks that the
    /// upstream key fits in a header.
    #[must_use]
    pub fn new(config: Config, users: Arc<Users>) -> Self {
        let auth = &config.auth;
        let sso = config
            .oidc
            .clone()
            .map(|oidc| Arc::new(Sso::new(oidc, auth.secret_key.as_deref())));
        if let Some(sso) = &sso {
            sso.spawn_discovery();
        }
        Self {
            verifier: Verifier::new(
                auth.bcrypt_concurrency,
                auth.credential_cache_ttl,
                auth.credential_cache_capacity,
            ),
            tokens: Tokens::new(auth.secret_key.as_deref(), auth.token_expiration)
                .with_revocations(sso.as_ref().map(|sso| sso.revocations())),
            limiter: Limiter::new(&config.rate_limit),
            metrics: Metrics::default(),
            tls: None,
            service_key: HeaderValue::from_str(&config.upstream.api_key)
                .expect("the configuration checked that the key fits in a header"),
            upstream: Arc::new(Upstream::new(
                &config.upstream.url,
                upstream::Settings {
                    connect_timeout: config.upstream.connect_timeout,
                    max_connections: config.upstream.max_connections,
                    max_per_client: config.upstream.max_connections_per_client,
                    idle_timeout: config.upstream.idle_timeout,
                    body_idle_timeout: config.limits.body_idle_timeout,
                },
            )),
            admission: Admission::new(config.limits.max_unauthenticated_connections),
            base: Base::new(&config.upstream.url),
            sso,
            users,
            config,
        }
    }

    /// Terminates TLS on the main listener with `acceptor`.
    #[must_use]
    pub fn with_tls(mut self, acceptor: tokio_rustls::TlsAcceptor) -> Self {
        self.tls = Some(acceptor);
        self
    }

    /// The metrics text as of now.
    #[must_use]
    pub fn render_metrics(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        self.metrics.render(&Extra {
            bcrypt_checks: self.verifier.checks.load(Relaxed),
            cache_hits: self.verifier.cache_hits.load(Relaxed),
            rate_limited: self.limiter.refusals.load(Relaxed),
            reloads: self.users.status(),
            upstream_retries: self.upstream.retries.load(Relaxed),
            upstream_connections: self.upstream.open_count(),
            evicted_connections: self.admission.evicted.load(Relaxed),
        })
    }

    /// Whether the gateway can serve: users are loaded (always, once started) and the upstream
    /// answered recently without refusing the service key, or passes [`State::check_upstream`]
    /// now.
    pub async fn ready(&self) -> bool {
        let window = std::time::Duration::from_secs(10);
        if self.metrics.upstream_answered_within(window)
            && !self.metrics.upstream_refused_key_within(window)
        {
            return true;
        }
        matches!(self.check_upstream().await, UpstreamCheck::Ready)
    }

    /// Probes the upstream: in service mode `GET /api/me` with the service key (so that a wrong
    /// key shows), in passthrough mode `GET /api/_info`. Within 2 s.
    pub async fn check_upstream(&self) -> UpstreamCheck {
        let service = self.config.upstream.mode == Mode::Service;
        let path = if service { "/api/me" } else { "/api/_info" };
        let Ok(uri) = self.base.uri(path, None) else {
            return UpstreamCheck::Unreachable("the probe target is not a valid URI".into());
        };
        let mut request = Request::get(uri);
        if service {
            request = request.header("x-argilla-api-key", self.service_key.clone());
        }
        let Ok(request) = request.body(()) else {
            return UpstreamCheck::Unreachable("the probe request cannot be built".into());
        };
        let affinity = Affinity::new(self.upstream.clone());
        let probe = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            affinity.send(request.into_parts().0, Outgoing::Empty),
        );
        match probe.await {
            Ok(Ok(response)) => {
                let status = response.status();
                if service && status == StatusCode::UNAUTHORIZED {
                    self.metrics.upstream_refused_key();
                    UpstreamCheck::KeyRefused
                } else if status.is_server_error() {
                    UpstreamCheck::Failing(status)
                } else {
                    self.metrics.upstream_answered(std::time::Duration::ZERO);
                    UpstreamCheck::Ready
                }
            }
            Ok(Err(e)) => UpstreamCheck::Unreachable(error_chain(&e)),
            Err(_) => UpstreamCheck::Unreachable("no answer within 2 s".into()),
        }
    }

    fn authenticator(&self) -> Authenticator<'_> {
        Authenticator {
            users: &self.users,
            verifier: &self.verifier,
            tokens: &self.tokens,
            limiter: &self.limiter,
        }
    }
}

/// What a probe of the upstream found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamCheck {
    /// It answers, and in service mode accepts the service key.
    Ready,
    /// In service mode, it answered `401`: the service key is not one of its superusers'.
    KeyRefused,
    /// It answered with a server error.
    Failing(StatusCode),
    /// No answer: why.
    Unreachable(String),
}

impl UpstreamCheck {
    /// Logs the outcome as the one start-up line about the upstream.
    pub fn log(&self, url: &http::Uri, mode: Mode) {
        match self {
            Self::Ready if mode == Mode::Service => tracing::info!(
                upstream = %url,
                "upstream reachable and accepts the service key"
            ),
            Self::Ready => tracing::info!(upstream = %url, "upstream reachable"),
            Self::KeyRefused => tracing::warn!(upstream = %url, "{KEY_REFUSED}"),
            Self::Failing(status) => tracing::warn!(
                upstream = %url,
                status = status.as_u16(),
                "upstream reachable but answering with server errors"
            ),
            Self::Unreachable(why) => tracing::warn!(
                upstream = %url,
                error = why.as_str(),
                "upstream not reachable yet (requests get 502 until it is; upstream.url / \
                 ARGILLA_GATEWAY_UPSTREAM_URL)"
            ),
        }
    }
}

/// What to do when the upstream refuses the service key.
const KEY_REFUSED: &str = "the upstream refuses the gateway's service key (401): every forwarded \
    request fails with 401 until upstream.api_key / ARGILLA_GATEWAY_UPSTREAM_API_KEY is the key \
    of a superuser of the upstream";

/// One client connection, as every request on it sees it.
pub struct Connection {
    peer: SocketAddr,
    /// The peer's address as a header value, made once (`X-Forwarded-For` for a direct client).
    peer_value: HeaderValue,
    /// Whether the connection is TLS (for `X-Forwarded-Proto`).
    secure: bool,
    /// The upstream connection this client connection keeps between its requests.
    affinity: Arc<Affinity>,
    /// Its place among the connections that have not authenticated yet.
    ticket: Ticket,
}

impl Connection {
    /// A connection from `peer` whose requests go to `upstream`, admitted with `ticket`.
    ///
    /// # Panics
    /// Never: an IP address is always a valid header value.
    #[must_use]
    pub fn new(peer: SocketAddr, secure: bool, upstream: Arc<Upstream>, ticket: Ticket) -> Self {
        Self {
            peer,
            peer_value: HeaderValue::from_str(&peer.ip().to_string())
                .expect("an IP address is a valid header value"),
            secure,
            affinity: Affinity::new(upstream),
            ticket,
        }
    }
}

/// The largest login body read: a login form is a username and a password.
const LOGIN_BODY_LIMIT: usize = 4096;

/// What the access log says about a request, filled in as it goes.
struct Trace {
    route: &'static str,
    user: Option<String>,
    /// How the user proved who they are (`api_key`, `token`, `basic`, `password` for a login).
    credential: Option<&'static str>,
    workspace: Option<String>,
    request_id: HeaderValue,
}

/// The client's `X-Request-Id` when it is a plain token (so it cannot forge log lines), else a
/// fresh random one.
fn request_id(headers: &http::HeaderMap) -> HeaderValue {
    headers
        .get("x-request-id")
        .filter(|v| {
            let bytes = v.as_bytes();
            (1..=128).contains(&bytes.len())
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
        .cloned()
        .unwrap_or_else(|| {
            let random = rand::random::<u64>();
            let mut hex = [0u8; 16];
            for (i, digit) in hex.iter_mut().enumerate() {
                *digit = b"0123456789abcdef"[((random >> (60 - 4 * i)) & 0xf) as usize];
            }
            HeaderValue::from_bytes(&hex).expect("hex is a valid header value")
        })
}

/// RFC 9112 section 3.2: an HTTP/1.1 request needs exactly one `Host` (or an absolute-form
/// target), and no request may carry two.
fn check_host(request: &Request<Incoming>) -> Result<(), Reject> {
    let hosts = request.headers().get_all(header::HOST).iter().count();
    if hosts > 1 {
        return Err(Reject::BadRequest(
            "The request has more than one Host header".into(),
        ));
    }
    if hosts == 0
        && request.version() == http::Version::HTTP_11
        && request.uri().authority().is_none()
    {
        return Err(Reject::BadRequest(
            "An HTTP/1.1 request needs a Host header".into(),
        ));
    }
    Ok(())
}

/// Serves one request: classify, authenticate, decide, forward.
async fn serve(
    state: &State,
    mut request: Request<Incoming>,
    conn: &Connection,
    trace: &mut Trace,
) -> Result<Response<Body>, Reject> {
    let trusted = &state.config.rate_limit.trusted_proxies;
    let client = proxy::client_address(trusted, conn.peer.ip(), request.headers());
    check_host(&request)?;
    if !request
        .uri()
        .path_and_query()
        .is_none_or(|target| target.as_str().is_ascii())
    {
        return Err(Reject::BadRequest(
            "The request target must be ASCII: percent-encode other characters".into(),
        ));
    }
    if let Some(sso) = state
        .sso
        .as_ref()
        .filter(|sso| sso.handles(request.method(), request.uri().path(), request.headers()))
    {
        trace.route = "sso";
        let (method, uri, headers) = (request.method(), request.uri(), request.headers());
        return Ok(sso
            .answer(method, uri, headers, &state.users, &state.tokens)
            .await);
    }
    let route = route::classify(request.method(), request.uri().path(), request.headers())?;
    // Upgrades (WebSocket only) are passed through on authenticated routes only.
    let upgrade = matches!(route, Route::Api(_))
        .then(|| proxy::requested_upgrade(request.headers()))
        .flatten()
        .map(|protocol| (protocol, hyper::upgrade::on(&mut request)));
    match route {
        Route::Health => {
            trace.route = "health";
            Ok(answer::health())
        }
        Route::Ready => {
            trace.route = "health";
            Ok(answer::ready(state.ready().await))
        }
        Route::Login => {
            trace.route = "login";
            let limits = &state.config.limits;
            let response = answer::login(
                &state.authenticator(),
                &state.tokens,
                request,
                client,
                LOGIN_BODY_LIMIT.min(limits.max_body_bytes),
                limits.body_read_timeout,
            )
            .await?;
            conn.ticket.prove();
            trace.credential = Some("password");
            Ok(response)
        }
        Route::Me => {
            trace.route = "me";
            let identity = state
                .authenticator()
                .authenticate(request.headers(), client)
                .await?;
            conn.ticket.prove();
            trace.user = Some(identity.user.username.clone());
            trace.credential = Some(identity.method.label());
            Ok(answer::me(&identity))
        }
        Route::Public => {
            trace.route = "public";
            let (parts, body) = request.into_parts();
            let query = parts.uri.query().map(str::to_owned);
            let target = Target {
                identity: None,
                query: query.as_deref(),
                upgrade,
                request_id: trace.request_id.clone(),
            };
            let body = streamed(body, state.config.limits.body_idle_timeout);
            forward(state, parts, body, conn, target).await
        }
        Route::Api(api) => {
            trace.route = api.label();
            let identity = state
                .authenticator()
                .authenticate(request.headers(), client)
                .await?;
            conn.ticket.prove();
            trace.user = Some(identity.user.username.clone());
            trace.credential = Some(identity.method.label());
            forward_api(state, request, conn, api, &identity, upgrade, trace).await
        }
    }
}

/// Reads what the policy needs, decides, forwards, and filters the dataset list.
async fn forward_api(
    state: &State,
    request: Request<Incoming>,
    conn: &Connection,
    api: Api,
    identity: &Identity,
    upgrade: Option<(HeaderValue, OnUpgrade)>,
    trace: &mut Trace,
) -> Result<Response<Body>, Reject> {
    let (mut parts, body) = request.into_parts();
    let limits = &state.config.limits;
    let (body, fields) = if matches!(api, Api::DatasetCreate | Api::DatasetCopy) {
        let bytes =
            answer::read_body(body, limits.max_body_bytes, limits.body_read_timeout).await?;
        let fields = policy::body_fields(&bytes)?;
        (Outgoing::Held(bytes), Some(fields))
    } else {
        (streamed(body, limits.body_idle_timeout), None)
    };
    let decision = policy::authorize(
        &identity.store,
        &identity.user,
        &policy::Request {
            api,
            method: &parts.method,
            query: parts.uri.query(),
            headers: &parts.headers,
            body: fields.as_ref(),
        },
        state.config.upstream.mode,
    )?;
    trace.workspace.clone_from(&decision.workspace);
    if decision.filter.is_some() {
        parts.headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
    }
    let target = Target {
        identity: Some(identity),
        query: decision.query.as_deref(),
        upgrade,
        request_id: trace.request_id.clone(),
    };
    let response = forward(state, parts, body, conn, target).await?;
    match &decision.filter {
        Some(workspaces) => {
            proxy::filter_datasets(
                response,
                workspaces,
                limits.max_list_response_bytes,
                limits.body_read_timeout,
            )
            .await
        }
        None => Ok(response),
    }
}

/// Where and as whom a request is forwarded.
struct Target<'a> {
    identity: Option<&'a Identity>,
    query: Option<&'a str>,
    /// The protocol the client asked to switch to, and its side of the switch.
    upgrade: Option<(HeaderValue, OnUpgrade)>,
    request_id: HeaderValue,
}

/// A client's request body as it is forwarded: nothing, or streamed under the idle timeout.
fn streamed(body: Incoming, idle: std::time::Duration) -> Outgoing {
    use hyper::body::Body as _;
    if body.is_end_stream() {
        Outgoing::Empty
    } else {
        Outgoing::Streamed(body::idle_timeout(body, idle))
    }
}

async fn forward(
    state: &State,
    mut parts: http::request::Parts,
    body: Outgoing,
    conn: &Connection,
    target: Target<'_>,
) -> Result<Response<Body>, Reject> {
    let Target {
        identity,
        query,
        upgrade,
        request_id,
    } = target;
    let uri = state.base.uri(parts.uri.path(), query)?;
    let trusted = &state.config.rate_limit.trusted_proxies;
    let peer = conn.peer.ip();
    let forwarded_for = if trusted.contains(&peer) {
        HeaderValue::from_str(&proxy::forwarded_for(trusted, peer, &parts.headers)).ok()
    } else {
        Some(conn.peer_value.clone())
    };
    let forwarded_host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    proxy::clean_request_headers(&mut parts.headers);
    let api_key = identity.and_then(|identity| match state.config.upstream.mode {
        Mode::Service => Some(state.service_key.clone()),
        Mode::Passthrough => HeaderValue::from_str(&identity.user.api_key).ok(),
    });
    proxy::add_request_headers(
        &mut parts.headers,
        Added {
            api_key,
            user: identity.map(|i| i.user.username.as_str()),
            forwarded_for,
            forwarded_host,
            request_id: Some(request_id),
            secure: conn.secure,
        },
    );
    let client_side = upgrade.map(|(protocol, client_side)| {
        parts.headers.insert(header::UPGRADE, protocol);
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        client_side
    });
    let mut response = proxy::send(
        &conn.affinity,
        &state.config.upstream,
        &state.metrics,
        parts,
        uri,
        body,
    )
    .await?;
    if identity.is_some()
        && state.config.upstream.mode == Mode::Service
        && response.status() == StatusCode::UNAUTHORIZED
        && state.metrics.upstream_refused_key()
    {
        tracing::warn!(upstream = %state.config.upstream.url, "{KEY_REFUSED}");
    }
    if let (Some(client_side), StatusCode::SWITCHING_PROTOCOLS) = (client_side, response.status()) {
        let upstream_side = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            let (Ok(client), Ok(upstream)) = tokio::join!(client_side, upstream_side) else {
                return;
            };
            let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        });
    }
    Ok(response)
}

/// Serves one request and writes its access-log line. Never fails: a rejection becomes its
/// Argilla-shaped answer here, and only here.
pub async fn handle(
    state: Arc<State>,
    request: Request<Incoming>,
    conn: Arc<Connection>,
) -> Response<Body> {
    let mut log = AccessLog::start(state, conn.peer, &request);
    let (mut response, reason) = match serve(&log.state, request, &conn, &mut log.trace).await {
        Ok(response) => (response, None),
        Err(reject) => {
            let metrics = &log.state.metrics;
            match &reject {
                Reject::Unauthenticated { reason, .. } => metrics.auth_failure(reason),
                Reject::Inactive { .. } => metrics.auth_failure("disabled user"),
                _ => {}
            }
            let reason = error_chain(&reject);
            if reject.status().is_server_error() {
                tracing::warn!(method = %log.method, path = log.path, error = reason, "upstream failure");
            }
            (reject.into_response(), Some(reason))
        }
    };
    log.finish(response.status().as_u16(), reason.as_deref());
    response
        .headers_mut()
        .insert("x-request-id", log.trace.request_id.clone());
    response
}

/// The status logged for a request whose client left before it was answered (nginx's 499).
const CLIENT_CLOSED: u16 = 499;

/// A request's access-log line and counters, written once: by [`AccessLog::finish`], or on
/// drop when the client left before an answer (hyper drops the request's future then).
struct AccessLog {
    state: Arc<State>,
    peer: SocketAddr,
    method: Method,
    path: String,
    started: Instant,
    trace: Trace,
    written: bool,
}

impl AccessLog {
    fn start(state: Arc<State>, peer: SocketAddr, request: &Request<Incoming>) -> Self {
        state
            .metrics
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self {
            state,
            peer,
            method: request.method().clone(),
            path: request.uri().path().to_owned(),
            started: Instant::now(),
            trace: Trace {
                route: "invalid",
                user: None,
                credential: None,
                workspace: None,
                request_id: request_id(request.headers()),
            },
            written: false,
        }
    }

    /// Writes the line: `reason` is the rejection's, or why the request was abandoned.
    fn finish(&mut self, status: u16, reason: Option<&str>) {
        self.written = true;
        let state = &self.state;
        let decision = match (&reason, status) {
            (_, CLIENT_CLOSED) => "abandoned",
            (Some(_), _) => "reject",
            (None, _) => "allow",
        };
        state
            .metrics
            .request(self.trace.route, decision == "reject", status);
        state
            .metrics
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            target: "access",
            method = %self.method,
            path = self.path,
            status,
            route = self.trace.route,
            user = self.trace.user.as_deref().unwrap_or("-"),
            credential = self.trace.credential.unwrap_or("-"),
            workspace = self.trace.workspace.as_deref().unwrap_or("-"),
            decision,
            reason = reason.unwrap_or(""),
            request_id = self.trace.request_id.to_str().unwrap_or("-"),
            peer = %self.peer,
            latency_ms = (self.started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
        );
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        if !self.written {
            self.finish(
                CLIENT_CLOSED,
                Some("the client closed the connection before the answer"),
            );
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Accepts connections until `shutdown` resolves, then lets in-flight requests finish within
/// the configured grace period.
pub async fn run(listener: TcpListener, state: Arc<State>, shutdown: impl Future<Output = ()>) {
    let limits = &state.config.limits;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let pruner = state.upstream.spawn_pruner();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let ticket = state.admission.admit();
        let closer = ticket.closer();
        let (state, builder, watcher) = (state.clone(), builder.clone(), graceful.watcher());
        let task = tokio::spawn(async move {
            serve_connection(state, &builder, watcher, stream, peer, ticket).await;
            drop(permit);
        });
        // Closing an unauthenticated connection to make room aborts this task (its permit goes
        // with it).
        closer.attach(task.abort_handle());
    }
    drop(listener);
    pruner.abort();
    let grace = state.config.limits.grace_period;
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "grace period over; closing remaining connections"
        );
    }
}

/// Serves one client connection until it closes (or its task is aborted to make room for a
/// newer one while still unauthenticated).
async fn serve_connection(
    state: Arc<State>,
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    ticket: Ticket,
) {
    // A client that stops taking an answer is let go after the idle timeout.
    let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
    stream.set_write_timeout(Some(state.config.limits.body_idle_timeout));
    let stream = Box::pin(stream);
    let conn = Arc::new(Connection::new(
        peer,
        state.tls.is_some(),
        state.upstream.clone(),
        ticket,
    ));
    let (served, service_conn) = (state.clone(), conn.clone());
    let service = service_fn(move |request| {
        let (state, conn) = (served.clone(), service_conn.clone());
        async move { Ok::<_, Infallible>(handle(state, request, conn).await) }
    });
    let serving = async {
        match &state.tls {
            None => {
                let connection =
                    builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                watcher.watch(connection.into_owned()).await
            }
            Some(acceptor) => {
                let handshake_timeout = state.config.limits.header_read_timeout;
                match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let connection =
                            builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                        watcher.watch(connection.into_owned()).await
                    }
                    Ok(Err(e)) => Err(e.into()),
                    Err(_) => Err("TLS handshake timed out".into()),
                }
            }
        }
    };
    if let Err(e) = serving.await {
        tracing::debug!(error = %e, %peer, "connection ended with an error");
    }
}

/// Serves Prometheus text on `GET /metrics` until `shutdown` resolves.
pub async fn run_metrics(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let state = state.clone();
                let service = service_fn(move |request: Request<Incoming>| {
                    let state = state.clone();
                    async move {
                        let response = if request.uri().path() == "/metrics" {
                            let mut response = Response::new(full(state.render_metrics()));
                            response.headers_mut().insert(
                                header::CONTENT_TYPE,
                                HeaderValue::from_static("text/plain; version=0.0.4"),
                            );
                            response
                        } else {
                            let mut response = Response::new(full("not found"));
                            *response.status_mut() = StatusCode::NOT_FOUND;
                            response
                        };
                        Ok::<_, Infallible>(response)
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            () = &mut shutdown => break,
        }
    }
}
