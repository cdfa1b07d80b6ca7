//! One request, top to bottom: [`handle`] opens its access-log line, [`serve`] classifies it
//! ([`route::classify`]), authenticates it ([`crate::auth`]), authorizes it ([`policy::authorize`])
//! and forwards it ([`forward`]); the line is written however the request ends. The accept loop
//! that feeds it is [`crate::server`]'s.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::{body::Incoming, upgrade::OnUpgrade};
use hyper_util::rt::TokioIo;

use crate::{
    admission::Ticket,
    answer,
    auth::Identity,
    body::{self, Body},
    config::Mode,
    error::{Reject, error_chain},
    policy,
    proxy::{self, Added},
    route::{self, Api, Class, Route},
    server::{KEY_REFUSED, State},
    upstream::{Affinity, Outgoing, Upstream},
};

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
        trace.route = route::Class::Sso;
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
    trace.route = route.class();
    match route {
        Route::Health => Ok(answer::health()),
        Route::Ready => Ok(answer::ready(state.ready().await)),
        Route::Login => {
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
            let identity = authenticate(state, &request, client, conn, trace).await?;
            Ok(answer::me(&identity))
        }
        Route::Public => {
            // With single sign-on in charge of page loads, the browser must ask again for each
            // page (not reuse a copy from when it was signed in), so that a signed-out load
            // reaches the gateway and goes to the provider.
            let revalidate = state.sso.as_ref().is_some_and(|sso| {
                sso.guards_pages(request.method(), request.uri().path(), request.headers())
            });
            let (parts, body) = request.into_parts();
            let query = parts.uri.query().map(str::to_owned);
            let target = Target {
                identity: None,
                query: query.as_deref(),
                upgrade,
                request_id: trace.request_id.clone(),
            };
            let body = streamed(body, state.config.limits.body_idle_timeout);
            let mut response = forward(state, parts, body, conn, target).await?;
            if revalidate {
                response.headers_mut().insert(
                    http::header::CACHE_CONTROL,
                    http::HeaderValue::from_static("no-cache"),
                );
            }
            Ok(response)
        }
        Route::Api(api) => {
            let identity = authenticate(state, &request, client, conn, trace).await?;
            forward_api(state, request, conn, api, &identity, upgrade, trace).await
        }
    }
}

/// Authenticates the request; a connection that did so has proved itself to admission.
async fn authenticate(
    state: &State,
    request: &Request<Incoming>,
    client: std::net::IpAddr,
    conn: &Connection,
    trace: &mut Trace,
) -> Result<Identity, Reject> {
    let identity = state
        .authenticator()
        .authenticate(request.headers(), client)
        .await?;
    conn.ticket.prove();
    trace.user = Some(identity.user.username.clone());
    trace.credential = Some(identity.method.label());
    Ok(identity)
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

/// The largest login body read: a login form is a username and a password.
const LOGIN_BODY_LIMIT: usize = 4096;

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

/// Cleans the headers (client credentials and identity out, ours in), sends the request over
/// the connection's upstream connection and, for an upgrade, joins the two sides.
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

/// What the access log says about a request, filled in as it goes.
struct Trace {
    route: Class,
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
                route: Class::Invalid,
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
            route = self.trace.route.label(),
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
