//! Connections to the upstream (HTTP/1.1, as Argilla's uvicorn speaks it).
//!
//! Each client connection keeps the upstream connection it used last ([`Affinity`]): a
//! keep-alive client's next request goes out on it without a pool lookup, a lock shared with
//! other connections or a task spawned per request. An upstream connection returns to its
//! client connection only once the response body has been read to its end, and only when the
//! upstream will keep it open: not after `Connection: close`, an HTTP/1.0 answer, or the error
//! answers after which uvicorn closes without saying so ([`closes_after`]). When a client
//! connection closes, its upstream connection waits in a shared idle list for the next client,
//! for at most the idle timeout (pruned on a timer too).
//!
//! A request that fails on a reused connection before any response byte came back — the
//! upstream closed it just before or just after it left — is sent again, once, on a fresh
//! connection when its body can be sent twice (none, or held whole by the gateway). A streamed
//! upload that already left is never replayed.
//!
//! Caps: open upstream connections in total (each holds a place until its socket closes), and
//! requests in flight per client connection (an HTTP/2 client multiplexes many streams).

use std::{
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use hyper::{
    body::{Body as _, Frame, Incoming, SizeHint},
    client::conn::http1::{self, SendRequest},
};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tower_service::Service;

use crate::body::{self, Body};

/// Idle connections kept for client connections still to come.
const IDLE_CAPACITY: usize = 256;

/// Why a request did not get an answer from the upstream.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No TCP connection could be opened.
    #[error("cannot connect to the upstream")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The connection opened but HTTP/1.1 could not start on it.
    #[error("HTTP/1.1 handshake with the upstream failed")]
    Handshake(#[source] hyper::Error),
    /// The request was sent (or may have been) and no response head came back.
    #[error("upstream request failed")]
    Request(#[source] hyper::Error),
    /// The client stopped sending the request body it was streaming.
    #[error("the client's request body stalled")]
    Stalled(#[source] hyper::Error),
}

/// How the upstream's connections are kept and bounded.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Time allowed to open a TCP connection.
    pub connect_timeout: Duration,
    /// Open upstream connections at most, idle ones included.
    pub max_connections: usize,
    /// Requests one client connection may have in flight upstream at once.
    pub max_per_client: usize,
    /// How long an unused connection is kept (below the upstream's own keep-alive timeout).
    pub idle_timeout: Duration,
    /// Longest pause within a response body being streamed from the upstream.
    pub body_idle_timeout: Duration,
}

/// A request body, as far as sending it twice is concerned.
pub enum Outgoing {
    /// No body.
    Empty,
    /// A body the gateway holds whole (it can be sent again).
    Held(Bytes),
    /// A body streamed from the client as it arrives (it cannot).
    Streamed(Body),
}

impl Outgoing {
    fn replay(&self) -> Option<Body> {
        match self {
            Self::Empty => Some(body::empty()),
            Self::Held(bytes) => Some(body::full(bytes.clone())),
            Self::Streamed(_) => None,
        }
    }

    fn into_body(self) -> Body {
        match self {
            Self::Empty => body::empty(),
            Self::Held(bytes) => body::full(bytes),
            Self::Streamed(body) => body,
        }
    }
}

/// Answers after which uvicorn closes the connection without a `Connection: close`: Argilla's
/// error handler re-raises and uvicorn drops the socket a moment later (400, 403, 409, 500,
/// measured on 1.5.1; 404 and 422 keep it). Every error but those two is treated alike.
#[must_use]
pub fn closes_after(status: StatusCode) -> bool {
    (status.is_client_error() && !matches!(status.as_u16(), 404 | 422)) || status.is_server_error()
}

/// The upstream server: how to reach it, and the connections idle between client connections.
pub struct Upstream {
    connector: HttpConnector,
    /// Scheme and authority only: what the connector connects to.
    target: Uri,
    /// The `Host` every forwarded request carries (the upstream's authority).
    host: HeaderValue,
    settings: Settings,
    idle: Mutex<Vec<(SendRequest<Body>, Instant)>>,
    /// One place per open connection, held by the task that drives it.
    open: Arc<Semaphore>,
    /// Woken when a connection is parked (for requests waiting on the total cap).
    parked: Notify,
    /// Requests sent again on a fresh connection after a reused one failed.
    pub retries: AtomicU64,
}

impl Upstream {
    /// The upstream at `url`'s scheme and authority.
    ///
    /// # Panics
    /// Never for a URL that passed configuration validation (scheme and authority present).
    #[must_use]
    pub fn new(url: &Uri, settings: Settings) -> Self {
        let authority = url
            .authority()
            .expect("validated upstream URL has a host")
            .clone();
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.connect_timeout));
        connector.set_nodelay(true);
        Self {
            connector,
            host: HeaderValue::from_str(authority.as_str())
                .expect("an authority is a valid header value"),
            target: Uri::builder()
                .scheme(url.scheme().cloned().unwrap_or(http::uri::Scheme::HTTP))
                .authority(authority)
                .path_and_query("/")
                .build()
                .expect("scheme, authority and / make a URI"),
            idle: Mutex::new(Vec::new()),
            open: Arc::new(Semaphore::new(settings.max_connections)),
            parked: Notify::new(),
            retries: AtomicU64::new(0),
            settings,
        }
    }

    /// Opens a new connection holding `place` and starts driving it.
    async fn connect(&self, place: OwnedSemaphorePermit) -> Result<SendRequest<Body>, Error> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(|e| Error::Connect(e.into()))?;
        let io = connector
            .call(self.target.clone())
            .await
            .map_err(|e| Error::Connect(e.into()))?;
        let (sender, connection) = http1::handshake(io).await.map_err(Error::Handshake)?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
            drop(place);
        });
        Ok(sender)
    }

    /// A new connection, waiting for a place under the total cap when all are taken (bounded
    /// by the caller's response timeout). With `or_idle`, a connection parked meanwhile serves
    /// as well; without it, idle connections are closed to make room.
    async fn open_connection(&self, or_idle: bool) -> Result<(SendRequest<Body>, bool), Error> {
        loop {
            if let Ok(place) = self.open.clone().try_acquire_owned() {
                return Ok((self.connect(place).await?, false));
            }
            if or_idle {
                if let Some(sender) = self.unpark_ready().await {
                    return Ok((sender, true));
                }
            } else if let Some(sender) = self.unpark() {
                // Its place comes back once its driving task sees it dropped.
                drop(sender);
            }
            tokio::select! {
                place = self.open.clone().acquire_owned() => {
                    let place = place.expect("the semaphore is never closed");
                    return Ok((self.connect(place).await?, false));
                }
                () = self.parked.notified() => {}
            }
        }
    }

    fn idle(&self) -> MutexGuard<'_, Vec<(SendRequest<Body>, Instant)>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps an idle connection for a later client connection.
    fn park(&self, sender: SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle();
        if idle.len() < IDLE_CAPACITY {
            idle.push((sender, Instant::now()));
            drop(idle);
            self.parked.notify_one();
        }
    }

    /// The most recently parked connection still open, dropping the expired and closed ones.
    fn unpark(&self) -> Option<SendRequest<Body>> {
        let mut idle = self.idle();
        self.drop_expired(&mut idle);
        while let Some((sender, _)) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    async fn unpark_ready(&self) -> Option<SendRequest<Body>> {
        loop {
            let mut sender = self.unpark()?;
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    fn drop_expired(&self, idle: &mut Vec<(SendRequest<Body>, Instant)>) {
        let now = Instant::now();
        // Parked in time order: the expired ones are at the front.
        let expired = idle
            .partition_point(|(_, since)| now.duration_since(*since) > self.settings.idle_timeout);
        idle.drain(..expired);
    }

    /// Closes idle connections that expired or that the upstream closed.
    pub fn prune(&self) {
        let mut idle = self.idle();
        self.drop_expired(&mut idle);
        idle.retain(|(sender, _)| !sender.is_closed());
    }

    /// Prunes the idle list every half idle timeout, for as long as the upstream is in use.
    pub fn spawn_pruner(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let upstream = Arc::downgrade(self);
        let period = (self.settings.idle_timeout / 2).max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match upstream.upgrade() {
                    Some(upstream) => upstream.prune(),
                    None => return,
                }
            }
        })
    }

    /// Connections waiting in the idle list (for tests and metrics).
    #[must_use]
    pub fn idle_count(&self) -> usize {
        self.idle().len()
    }

    /// Upstream connections open now, idle ones included.
    #[must_use]
    pub fn open_count(&self) -> usize {
        self.settings.max_connections - self.open.available_permits()
    }
}

/// The upstream connection one client connection keeps between its requests.
pub struct Affinity {
    upstream: Arc<Upstream>,
    kept: Mutex<Option<(SendRequest<Body>, Instant)>>,
    /// Places for requests in flight from this client connection.
    slots: Arc<Semaphore>,
}

/// What a request sends upstream besides its body: enough to send it a second time.
struct Head {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Head {
    fn request(&self, body: Body) -> Request<Body> {
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = self.headers.clone();
        request
    }
}

impl Affinity {
    /// A client connection's place for its upstream connection, empty until its first request.
    #[must_use]
    pub fn new(upstream: Arc<Upstream>) -> Arc<Self> {
        let slots = Arc::new(Semaphore::new(upstream.settings.max_per_client));
        Arc::new(Self {
            upstream,
            kept: Mutex::new(None),
            slots,
        })
    }

    fn kept(&self) -> MutexGuard<'_, Option<(SendRequest<Body>, Instant)>> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An idle connection ready for a request (the one kept here, else a parked one), or a
    /// new one. `true` when it is reused.
    async fn take_or_open(&self) -> Result<(SendRequest<Body>, bool), Error> {
        let kept = self.kept().take();
        if let Some((mut sender, since)) = kept
            && since.elapsed() <= self.upstream.settings.idle_timeout
            && sender.ready().await.is_ok()
        {
            return Ok((sender, true));
        }
        if let Some(sender) = self.upstream.unpark_ready().await {
            return Ok((sender, true));
        }
        self.upstream.open_connection(true).await
    }

    /// A connection whose response was read to its end comes back here, or to the idle list
    /// when a concurrent request (HTTP/2 client) already brought one back.
    fn give_back(&self, sender: SendRequest<Body>) {
        let mut kept = self.kept();
        if kept.is_none() {
            *kept = Some((sender, Instant::now()));
        } else {
            drop(kept);
            self.upstream.park(sender);
        }
    }

    /// Sends a request (origin-form target in `parts`) and returns the response head, its body
    /// streaming.
    ///
    /// # Errors
    /// When no connection can be opened, or the request may have reached the upstream and no
    /// response came back (after the one retry it is allowed).
    ///
    /// # Panics
    /// Never: the semaphores are never closed.
    pub async fn send(
        self: &Arc<Self>,
        mut parts: http::request::Parts,
        body: Outgoing,
    ) -> Result<Response<Body>, Error> {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        parts
            .headers
            .insert(header::HOST, self.upstream.host.clone());
        parts.version = Version::HTTP_11;
        // Only a request that can be sent twice keeps a copy of its head.
        let mut replay = body.replay().map(|body| {
            let head = Head {
                method: parts.method.clone(),
                uri: parts.uri.clone(),
                headers: parts.headers.clone(),
            };
            (head, body)
        });
        let mut request = Request::from_parts(parts, body.into_body());
        let mut fresh = false;
        loop {
            let (sender, reused) = if fresh {
                self.upstream.open_connection(false).await?
            } else {
                self.take_or_open().await?
            };
            let e = match send_on(sender, request).await {
                (sender, Ok(response)) => return Ok(self.lease(sender, response, slot)),
                (_, Err(e)) => e,
            };
            let mut e = e;
            if let Some(unsent) = e.take_message()
                && reused
            {
                // Never left: the connection closed while idle. Another one, up to a new one.
                request = unsent;
                continue;
            }
            let error = e.into_error();
            if body::is_stalled(&error) {
                return Err(Error::Stalled(error));
            }
            match replay.take() {
                Some((head, body)) if reused => {
                    // Lost on a reused connection before any response byte: the upstream
                    // closed it (uvicorn after an error answer, or its keep-alive timeout).
                    self.upstream.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %error, "request lost on a reused upstream connection; sending it again on a fresh one");
                    request = head.request(body);
                    fresh = true;
                }
                _ => return Err(Error::Request(error)),
            }
        }
    }

    /// The response with a body that brings the connection back once read to its end, when
    /// the upstream keeps it open.
    fn lease(
        self: &Arc<Self>,
        sender: Option<SendRequest<Body>>,
        response: Response<Incoming>,
        slot: OwnedSemaphorePermit,
    ) -> Response<Body> {
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            // The connection becomes the tunnel.
            return response.map(body::boxed);
        }
        let keeps = !closes_after(response.status())
            && response.version() == Version::HTTP_11
            && !response
                .headers()
                .get_all(header::CONNECTION)
                .iter()
                .any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let back = sender
            .filter(|_| keeps)
            .map(|sender| (sender, self.clone()));
        let idle = self.upstream.settings.body_idle_timeout;
        response.map(move |body| {
            body::idle_timeout(
                Leased {
                    body,
                    back,
                    finished: false,
                    _slot: slot,
                },
                idle,
            )
        })
    }
}

/// Sends `request` on `sender`'s connection and waits for the response head, or for the
/// connection to end without taking the request. The sender comes back unless the connection
/// ended.
///
/// A request handed over in the instant the connection's task ends can stay in the closed
/// channel between them with its answer never sent: tokio's channel drains what it holds when
/// its receiver goes, but a message pushed by a sender that got past the closed check just
/// before lands after the drain and stays until the last sender is dropped (hyper's `Envelope`
/// then answers "connection closed" and hands the request back). Waiting while holding the
/// sender would wait forever, so once the connection has ended the sender is dropped and the
/// request comes back unsent.
async fn send_on(
    mut sender: SendRequest<Body>,
    request: Request<Body>,
) -> (
    Option<SendRequest<Body>>,
    Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<Body>>>,
) {
    // The future owns what it needs; it does not borrow the sender.
    let mut response = std::pin::pin!(sender.try_send_request(request));
    let ended = tokio::select! {
        biased;
        response = &mut response => return (Some(sender), response),
        // Pending while the request is in flight; an error once the connection has ended.
        ready = sender.ready() => ready.is_err(),
    };
    if ended {
        tracing::debug!(
            "upstream connection ended under a request it never took; it comes back unsent"
        );
        drop(sender);
        return (None, response.await);
    }
    let response = response.await;
    (Some(sender), response)
}

impl Drop for Affinity {
    fn drop(&mut self) {
        let kept = self.kept.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some((sender, _)) = kept.take() {
            self.upstream.park(sender);
        }
    }
}

/// A response body holding its connection until it has been read to the end.
struct Leased {
    body: Incoming,
    back: Option<(SendRequest<Body>, Arc<Affinity>)>,
    finished: bool,
    /// The client connection's place for a request in flight, given back with the body.
    _slot: OwnedSemaphorePermit,
}

impl hyper::body::Body for Leased {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.finished = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Leased {
    fn drop(&mut self) {
        if let Some((sender, home)) = self.back.take()
            && (self.finished || self.body.is_end_stream())
        {
            home.give_back(sender);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argilla_error_answers_close_the_connection_except_not_found_and_validation() {
        for status in [400, 401, 403, 405, 409, 413, 500, 502, 503] {
            assert!(
                closes_after(StatusCode::from_u16(status).unwrap()),
                "{status}"
            );
        }
        for status in [200, 201, 204, 304, 404, 422] {
            assert!(
                !closes_after(StatusCode::from_u16(status).unwrap()),
                "{status}"
            );
        }
    }
}
