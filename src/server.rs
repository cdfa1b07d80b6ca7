//! The shared [`State`], the accept loop and graceful shutdown ([`run`]); each request then takes
//! [`crate::request`]'s path.

use std::{convert::Infallible, future::Future, net::SocketAddr, sync::Arc};

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{net::TcpListener, sync::Semaphore};

use crate::{
    admission::{Admission, Ticket},
    auth::Authenticator,
    body::full,
    config::{Config, Mode},
    error::{Error, error_chain},
    limit::Limiter,
    metrics::{Extra, Metrics},
    oidc::Sso,
    password::Verifier,
    proxy::Base,
    reload::{Reloader, Users},
    request::{Connection, handle},
    token::Tokens,
    upstream::{self, Affinity, Outgoing, Upstream},
};

/// Everything a request may need. Built once; only the users snapshot and counters change.
pub struct State {
    /// The validated configuration.
    pub config: Config,
    /// The live users.
    pub(crate) users: Arc<Users>,
    /// bcrypt and its memory.
    pub verifier: Verifier,
    /// Gateway tokens.
    pub(crate) tokens: Tokens,
    /// Failed-authentication budgets.
    pub(crate) limiter: Limiter,
    /// Counters for the metrics listener.
    pub metrics: Metrics,
    /// TLS on the main listener, when configured.
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    /// The service key as a header value, built once.
    pub(crate) service_key: HeaderValue,
    /// The upstream server and its idle connections.
    pub upstream: Arc<Upstream>,
    /// Client connections that have not authenticated yet.
    pub admission: Arc<Admission>,
    /// Single sign-on, when configured.
    pub sso: Option<Arc<Sso>>,
    pub(crate) base: Base,
}

/// What [`State::start`] sets going: hand `state` to [`run`], keep `reloader` for as long as the
/// users file is to be watched.
#[must_use = "dropping the reloader stops watching the users file"]
pub struct Started {
    /// The state to serve with.
    pub state: Arc<State>,
    /// The live users (the same as the state's), for reloads on demand.
    pub users: Arc<Users>,
    /// Watches the users file until dropped.
    pub reloader: Reloader,
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

    /// Everything but the listeners, for `config`: its users file (or default user) loaded and
    /// watched, its TLS files read, and the state built on them.
    ///
    /// # Errors
    /// The users file is missing or invalid, its folder cannot be watched, or the TLS files
    /// cannot be loaded.
    pub fn start(config: Config) -> Result<Started, Error> {
        let users = Users::open(&config.auth)?;
        Self::start_with(config, users)
    }

    /// [`State::start`] with users the caller has opened (and set up) itself.
    ///
    /// # Errors
    /// The folder of the users file cannot be watched, or the TLS files cannot be loaded.
    pub fn start_with(config: Config, users: Users) -> Result<Started, Error> {
        let users = Arc::new(users);
        let reloader = Reloader::start(users.clone(), &config.reload)?;
        let tls = config.tls.as_ref().map(crate::tls::acceptor).transpose()?;
        let mut state = Self::new(config, users.clone());
        if let Some(acceptor) = tls {
            state = state.with_tls(acceptor);
        }
        Ok(Started {
            state: Arc::new(state),
            users,
            reloader,
        })
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

    pub(crate) fn authenticator(&self) -> Authenticator<'_> {
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
pub(crate) const KEY_REFUSED: &str = "the upstream refuses the gateway's service key (401): every forwarded \
    request fails with 401 until upstream.api_key / ARGILLA_GATEWAY_UPSTREAM_API_KEY is the key \
    of a superuser of the upstream";

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
