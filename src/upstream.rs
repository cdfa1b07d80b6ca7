//! Connections to the upstream (HTTP/1.1, as Argilla's uvicorn speaks it).
//!
//! Each client connection keeps the upstream connection it used last ([`Affinity`]): a
//! keep-alive client's next request goes out on it without a pool lookup, a lock shared with
//! other connections or a task spawned per request. An upstream connection returns to its
//! client connection only once the response body has been read to its end; one whose body was
//! abandoned half-way is closed, never reused. When a client connection closes, its upstream
//! connection waits in a shared idle list (bounded, at most a minute) for the next client.
//!
//! A request that never left — the upstream closed the idle connection just before — is sent
//! again on another connection; a request that may have reached the upstream is not.

use std::{
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body_util::BodyExt;
use hyper::{
    body::{Body as _, Frame, Incoming, SizeHint},
    client::conn::http1::{self, SendRequest},
};
use hyper_util::client::legacy::connect::HttpConnector;
use tower_service::Service;

use crate::body::Body;

/// Idle connections kept for client connections still to come.
const IDLE_CAPACITY: usize = 256;
/// How long an idle connection is kept for them.
const IDLE_TIMEOUT: Duration = Duration::from_mins(1);

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
}

/// The upstream server: how to reach it, and the connections idle between client connections.
pub struct Upstream {
    connector: HttpConnector,
    /// Scheme and authority only: what the connector connects to.
    target: Uri,
    /// The `Host` every forwarded request carries (the upstream's authority).
    host: HeaderValue,
    idle: Mutex<Vec<(SendRequest<Body>, Instant)>>,
}

impl Upstream {
    /// The upstream at `url`'s scheme and authority.
    ///
    /// # Panics
    /// Never for a URL that passed configuration validation (scheme and authority present).
    #[must_use]
    pub fn new(url: &Uri, connect_timeout: Duration) -> Self {
        let authority = url
            .authority()
            .expect("validated upstream URL has a host")
            .clone();
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
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
        }
    }

    /// Opens a new connection and starts driving it.
    async fn connect(&self) -> Result<SendRequest<Body>, Error> {
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
        });
        Ok(sender)
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
        }
    }

    /// The most recently parked connection still open, dropping the expired and closed ones.
    fn unpark(&self) -> Option<SendRequest<Body>> {
        let mut idle = self.idle();
        let now = Instant::now();
        // Parked in time order: the expired ones are at the front.
        let expired = idle.partition_point(|(_, since)| now.duration_since(*since) > IDLE_TIMEOUT);
        idle.drain(..expired);
        while let Some((sender, _)) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    /// Connections waiting in the idle list (for tests and metrics).
    #[must_use]
    pub fn idle_count(&self) -> usize {
        self.idle().len()
    }
}

/// The upstream connection one client connection keeps between its requests.
pub struct Affinity {
    upstream: Arc<Upstream>,
    kept: Mutex<Option<SendRequest<Body>>>,
}

impl Affinity {
    /// A client connection's place for its upstream connection, empty until its first request.
    #[must_use]
    pub fn new(upstream: Arc<Upstream>) -> Arc<Self> {
        Arc::new(Self {
            upstream,
            kept: Mutex::new(None),
        })
    }

    fn kept(&self) -> MutexGuard<'_, Option<SendRequest<Body>>> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An idle connection ready for a request: the one kept here, else a parked one.
    async fn take_ready(&self) -> Option<SendRequest<Body>> {
        let kept = self.kept().take();
        if let Some(mut sender) = kept
            && sender.ready().await.is_ok()
        {
            return Some(sender);
        }
        loop {
            let mut sender = self.upstream.unpark()?;
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    /// A connection whose response was read to its end comes back here, or to the idle list
    /// when a concurrent request (HTTP/2 client) already brought one back.
    fn give_back(&self, sender: SendRequest<Body>) {
        let mut kept = self.kept();
        if kept.is_none() {
            *kept = Some(sender);
        } else {
            drop(kept);
            self.upstream.park(sender);
        }
    }

    /// Sends `request` (origin-form target) and returns the response head, its body streaming.
    ///
    /// # Errors
    /// When no connection can be opened, or the request may have reached the upstream and no
    /// response came back.
    pub async fn send(
        self: &Arc<Self>,
        mut request: Request<Body>,
    ) -> Result<Response<Body>, Error> {
        request
            .headers_mut()
            .insert(header::HOST, self.upstream.host.clone());
        loop {
            let (mut sender, reused) = match self.take_ready().await {
                Some(sender) => (sender, true),
                None => (self.upstream.connect().await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.lease(sender, response)),
                Err(mut e) => match e.take_message() {
                    // Never sent: the connection closed while idle. Another one, up to a new one.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(Error::Request(e.into_error())),
                },
            }
        }
    }

    /// The response with a body that brings the connection back once read to its end.
    fn lease(
        self: &Arc<Self>,
        sender: SendRequest<Body>,
        response: Response<Incoming>,
    ) -> Response<Body> {
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            // The connection becomes the tunnel.
            return response.map(BodyExt::boxed);
        }
        let home = self.clone();
        response.map(move |body| {
            Leased {
                body,
                back: Some((sender, home)),
                finished: false,
            }
            .boxed()
        })
    }
}

impl Drop for Affinity {
    fn drop(&mut self) {
        let kept = self.kept.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = kept.take() {
            self.upstream.park(sender);
        }
    }
}

/// A response body holding its connection until it has been read to the end.
struct Leased {
    body: Incoming,
    back: Option<(SendRequest<Body>, Arc<Affinity>)>,
    finished: bool,
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
