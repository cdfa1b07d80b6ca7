//! Single sign-on with `OpenID Connect`, mapped onto `users.yml` (oauth2-proxy's endpoints):
//!
//! - `GET /oauth2/start?rd=<path>`: authorization code flow with PKCE (S256); `state` and
//!   `nonce` go to the browser in a short-lived, signed, `HttpOnly` cookie, and each `state` is
//!   accepted once.
//! - `GET /oauth2/callback`: checks the cookie, `state` and `iss`, exchanges the code, checks
//!   the ID token ([`provider`]), maps the person onto an existing enabled user ([`identity`]),
//!   and logs the unchanged web app in the way it holds its own login: three cookies
//!   (`auth.strategy`, `auth._token.authProvider`, `auth._token_expiration.authProvider`)
//!   carrying a gateway token with a session id.
//! - `GET|POST /oauth2/sign_out`: ends that session for good ([`session`]), clears the web
//!   app's cookies and sends the browser to the provider's `end_session_endpoint`.
//!
//! The cookies are never a credential: API calls still need `Authorization: Bearer`.

//!
//! [`Sso`] is the entry point: [`Sso::handles`] says which requests are its to answer and
//! [`Sso::answer`] sends each to its flow: signing in (`sign_in`, with the code exchange and
//! userinfo in `exchange`), signing out (`sign_out`), and the guard on page loads (`guard`,
//! [`Sso::guards_pages`]). The cookies they read and write are `cookie`'s.

pub mod config;
mod cookie;
mod exchange;
mod guard;
pub mod http;
pub mod identity;
pub mod page;
pub mod provider;
pub mod session;
mod sign_in;
mod sign_out;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use ::http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri, header};
use base64::Engine as _;
use hmac::Mac;

use self::{
    config::{IdentityClaim, Oidc},
    cookie::HmacSha256,
    guard::signed_out_navigation,
    page::page,
    provider::{Metadata, Provider},
    session::Revocations,
    sign_out::logged_out_by_app,
};
use crate::{
    body::{Body, empty},
    error::Reject,
    reload::Users,
    token::Tokens,
    users::UserStore,
};

/// The cookie holding a sign-in in progress.
pub const STATE_COOKIE: &str = "argilla_gateway_oidc";
/// The cookie naming the SSO session of the browser (`HttpOnly`, not a credential): when the
/// web app's own logout has written `false` into its token cookie, the next request that
/// carries both ends that session.
pub const SESSION_COOKIE: &str = "argilla_gateway_sso";
/// How long a sign-in may take at the provider.
pub const STATE_LIFETIME_SECS: u64 = 600;
/// Sign-ins whose `state` was used, remembered until they expire; past the bound the memory
/// starts again empty (a replayed code is still refused by the provider).
pub const USED_STATES_CAPACITY: usize = 100_000;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn random_id(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::fill(&mut buffer[..]);
    b64(&buffer)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Single sign-on: settings, provider, ended sessions and the sign-in cookie key.
pub struct Sso {
    config: Oidc,
    provider: Arc<Provider>,
    revocations: Arc<Revocations>,
    /// Signs the sign-in cookie and derives each PKCE verifier from its `state`.
    key: [u8; 32],
    /// `state`s already used, with their expiry.
    used: Mutex<HashMap<String, u64>>,
    /// Set when the HTTP client could not be built (a bad CA file): SSO answers 503 with it.
    broken: Option<String>,
}

impl Sso {
    /// Single sign-on for `config`; `secret` is the gateway's token secret, from which the
    /// cookie key is derived (so that replicas sharing it accept each other's sign-ins), or a
    /// random key when there is none. Ended sessions are loaded from the state directory.
    ///
    /// # Panics
    /// Never: HMAC takes keys of any length.
    #[must_use]
    pub fn new(config: Oidc, secret: Option<&str>) -> Self {
        let key: [u8; 32] = match secret {
            Some(secret) => {
                let mut mac = <HmacSha256 as Mac>::new_from_slice(secret.as_bytes())
                    .expect("HMAC takes any key length");
                mac.update(b"argilla-gateway oidc sign-in cookie v1");
                mac.finalize().into_bytes().into()
            }
            None => rand::random(),
        };
        let (client, broken) = match http::Client::new(config.ca_file.as_deref()) {
            Ok(client) => (client, None),
            Err(e) => (
                http::Client::new(None).expect("the built-in roots load"),
                Some(e),
            ),
        };
        let revocations = Arc::new(match &config.state_dir {
            Some(dir) => Revocations::open(dir),
            None => Revocations::in_memory(),
        });
        Self {
            provider: Arc::new(Provider::new(&config.issuer, &config.client_id, client)),
            revocations,
            key,
            used: Mutex::new(HashMap::new()),
            broken,
            config,
        }
    }

    /// The ended sessions, for the token check.
    #[must_use]
    pub fn revocations(&self) -> Arc<Revocations> {
        self.revocations.clone()
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &Oidc {
        &self.config
    }

    /// The provider.
    #[must_use]
    pub fn provider(&self) -> &Arc<Provider> {
        &self.provider
    }

    /// Starts discovery in the background (retried until the provider answers), when called
    /// within a tokio runtime.
    pub fn spawn_discovery(&self) {
        if let Some(why) = &self.broken {
            tracing::error!(error = why, "single sign-on unavailable");
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(self.provider.clone().discover_until_ready());
        }
    }

    /// Whether this request is single sign-on's to answer.
    #[must_use]
    pub fn handles(&self, method: &Method, path: &str, headers: &HeaderMap) -> bool {
        path.starts_with("/oauth2/")
            || (!self.config.password_login
                && ((path == "/login" && (method == Method::GET || method == Method::HEAD))
                    || (path == "/api/security/token" && method == Method::POST)))
            || logged_out_by_app(method, headers).is_some()
            || (!self.config.password_login && signed_out_navigation(method, path, headers))
    }

    /// Answers a request for which [`Sso::handles`] is true.
    pub async fn answer(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        users: &Users,
        tokens: &Tokens,
    ) -> Response<Body> {
        if let Some(sid) = logged_out_by_app(method, headers) {
            return self.end_after_app_logout(sid, uri);
        }
        let query = uri.query().unwrap_or("");
        match (method, uri.path()) {
            (&Method::GET | &Method::HEAD, "/oauth2/start") => self.start(query),
            (&Method::GET, "/oauth2/callback") => {
                self.callback(query, headers, &users.snapshot(), tokens)
                    .await
            }
            (&Method::GET | &Method::POST, "/oauth2/sign_out") => self.sign_out(headers, tokens),
            (_, "/login") => {
                // A full-page load of the web app's login page: straight to the provider.
                let target = param(query, "redirect")
                    .as_deref()
                    .and_then(identity::safe_target)
                    .unwrap_or("/")
                    .to_owned();
                redirect(&format!("/oauth2/start?rd={}", encode(&target)))
            }
            (_, path) if !path.starts_with("/oauth2/") && !path.starts_with("/api/") => {
                // A signed-out browser opening any page of the web app (whose own routing would
                // show its password form without asking the server): straight to the provider,
                // then back to that page.
                let target = uri
                    .path_and_query()
                    .map(::http::uri::PathAndQuery::as_str)
                    .and_then(identity::safe_target)
                    .unwrap_or("/")
                    .to_owned();
                redirect(&format!("/oauth2/start?rd={}", encode(&target)))
            }
            (_, "/api/security/token") => Reject::Forbidden(
                "Password login is turned off here: sign in with single sign-on at /oauth2/start"
                    .into(),
            )
            .into_response(),
            _ => page(
                StatusCode::NOT_FOUND,
                "Not found",
                &[
                    "The single sign-on endpoints are /oauth2/start, /oauth2/callback and \
                   /oauth2/sign_out."
                        .into(),
                ],
            ),
        }
    }

    fn metadata(&self) -> Option<Arc<Metadata>> {
        if self.broken.is_some() {
            return None;
        }
        self.provider.metadata()
    }
}

/// A `303 See Other` to `location`, never cached.
fn redirect(location: &str) -> Response<Body> {
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    page::no_store(response.headers_mut());
    response
}

fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The only value of query parameter `name`; `None` when absent or repeated.
fn param(query: &str, name: &str) -> Option<String> {
    let mut values = form_urlencoded::parse(query.as_bytes()).filter(|(n, _)| n == name);
    let (_, value) = values.next()?;
    values.next().is_none().then(|| value.into_owned())
}

/// Refuses a users file in which two users share an e-mail address while SSO maps by e-mail.
///
/// # Errors
/// The addresses shared and by whom.
pub fn check_users(config: &Oidc, store: &UserStore) -> Result<(), String> {
    if config.identity_claim != IdentityClaim::Email {
        return Ok(());
    }
    let problems = identity::duplicate_emails(store);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}
