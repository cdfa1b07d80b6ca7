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

pub mod config;
pub mod http;
pub mod identity;
pub mod page;
pub mod provider;
pub mod session;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use ::http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri, header};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};

use self::{
    config::{IdentityClaim, Oidc},
    identity::Person,
    page::{escape, page, start_again},
    provider::{Metadata, Provider},
    session::Revocations,
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

/// The web app's cookies (`@nuxtjs/auth-next`, local scheme, strategy `authProvider`).
const APP_STRATEGY: &str = "auth.strategy";
const APP_TOKEN: &str = "auth._token.authProvider";
const APP_EXPIRATION: &str = "auth._token_expiration.authProvider";

type HmacSha256 = Hmac<Sha256>;

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

/// A sign-in in progress, as the cookie carries it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Pending {
    /// `state`.
    s: String,
    /// `nonce`.
    n: String,
    /// Where to go afterwards (checked at start).
    r: String,
    /// Expiry.
    e: u64,
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

    /// Whether a forwarded page load must be asked for again each time (`Cache-Control:
    /// no-cache`): with the password login off, a signed-out page load must reach the gateway
    /// to be sent to the provider, and a copy the browser kept from when it was signed in would
    /// show the web app's own password form instead.
    #[must_use]
    pub fn guards_pages(&self, method: &Method, path: &str, headers: &HeaderMap) -> bool {
        !self.config.password_login
            && method == Method::GET
            && !path.starts_with("/api/")
            && navigation(headers)
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

    /// The web app logged itself out (its token cookie reads `false`) in a browser that holds
    /// an SSO session: ends the session, forgets the session cookie, and sends the browser to
    /// the same address again (`307`: `fetch` follows it with the same method), which is then
    /// served as usual.
    fn end_after_app_logout(&self, cookie: &str, uri: &Uri) -> Response<Body> {
        // Only a session id the gateway signed is written down: a made-up one would let anyone
        // fill the ended-sessions file.
        let sid = cookie
            .split_once('.')
            .filter(|(sid, tag)| {
                use subtle::ConstantTimeEq as _;
                let expected = self.session_tag(sid);
                tag.len() == expected.len() && bool::from(tag.as_bytes().ct_eq(expected.as_bytes()))
            })
            .map(|(sid, _)| sid);
        if let Some(sid) = sid {
            // The token's own expiry is not known here; no SSO token outlives this.
            let exp = now_secs().saturating_add(self.config.session_lifetime.as_secs());
            match self.revocations.end(sid, exp) {
                Ok(()) => tracing::info!("single sign-on: session ended by the web app's logout"),
                Err(e) => tracing::warn!(
                    error = e,
                    "single sign-on: the web app's logout could not end its session"
                ),
            }
        }
        let mut response = Response::new(empty());
        *response.status_mut() = StatusCode::TEMPORARY_REDIRECT;
        let target = uri
            .path_and_query()
            .map_or("/", ::http::uri::PathAndQuery::as_str);
        if let Ok(value) = HeaderValue::from_str(target) {
            response.headers_mut().insert(header::LOCATION, value);
        }
        page::no_store(response.headers_mut());
        self.clear_session_cookie(&mut response);
        response
    }

    fn clear_session_cookie(&self, response: &mut Response<Body>) {
        self.set_cookie(
            response,
            &format!("{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"),
        );
    }

    fn unavailable(&self) -> Response<Body> {
        let why = self
            .broken
            .clone()
            .or_else(|| self.provider.last_error())
            .unwrap_or_default();
        tracing::warn!(
            error = why,
            "single sign-on request while the provider is unavailable"
        );
        let mut response = page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Single sign-on is unavailable",
            &[
                "The identity provider cannot be reached right now, so signing in with it is not \
                 possible. Try again in a minute; if it persists, tell your administrator."
                    .into(),
                "API keys keep working meanwhile.".into(),
            ],
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
        response
    }

    fn metadata(&self) -> Option<Arc<Metadata>> {
        if self.broken.is_some() {
            return None;
        }
        self.provider.metadata()
    }

    fn mac(&self, purpose: &[u8], data: &[u8]) -> HmacSha256 {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(purpose);
        mac.update(&[0]);
        mac.update(data);
        mac
    }

    /// The signature of a session id in the session cookie.
    fn session_tag(&self, sid: &str) -> String {
        b64(&self.mac(b"session", sid.as_bytes()).finalize().into_bytes())
    }

    /// The PKCE verifier of a sign-in: derived from its `state`, so it never leaves the gateway
    /// except to the token endpoint.
    fn verifier(&self, state: &str) -> String {
        b64(&self.mac(b"pkce", state.as_bytes()).finalize().into_bytes())
    }

    fn start(&self, query: &str) -> Response<Body> {
        let Some(metadata) = self.metadata() else {
            return self.unavailable();
        };
        let target = match param(query, "rd") {
            None => "/".to_owned(),
            Some(rd) => match identity::safe_target(&rd) {
                Some(target) => target.to_owned(),
                None => {
                    return page(
                        StatusCode::BAD_REQUEST,
                        "Not a page of this site",
                        &[
                            "The address to return to after signing in must be a page of this \
                           site (a path starting with a single /)."
                                .into(),
                        ],
                    );
                }
            },
        };
        let pending = Pending {
            s: random_id(32),
            n: random_id(32),
            r: target,
            e: now_secs() + STATE_LIFETIME_SECS,
        };
        let challenge = b64(&Sha256::digest(self.verifier(&pending.s).as_bytes()));
        let scope = self.config.scopes.join(" ");
        let redirect_uri = self.config.redirect_url.to_string();
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", &redirect_uri)
            .append_pair("scope", &scope)
            .append_pair("state", &pending.s)
            .append_pair("nonce", &pending.n)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .finish();
        let endpoint = &metadata.authorization_endpoint;
        let separator = if endpoint.contains('?') { '&' } else { '?' };
        let mut response = redirect(&format!("{endpoint}{separator}{query}"));
        let payload = b64(&serde_json::to_vec(&pending).unwrap_or_default());
        let signature = b64(&self
            .mac(b"cookie", payload.as_bytes())
            .finalize()
            .into_bytes());
        self.set_cookie(
            &mut response,
            &format!(
                "{STATE_COOKIE}={payload}.{signature}; Path=/oauth2/; Max-Age={STATE_LIFETIME_SECS}; \
                 HttpOnly; SameSite=Lax"
            ),
        );
        response
    }

    fn set_cookie(&self, response: &mut Response<Body>, cookie: &str) {
        let cookie = if self.config.secure() {
            format!("{cookie}; Secure")
        } else {
            cookie.to_owned()
        };
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }

    fn clear_state_cookie(&self, response: &mut Response<Body>) {
        self.set_cookie(
            response,
            &format!("{STATE_COOKIE}=; Path=/oauth2/; Max-Age=0; HttpOnly; SameSite=Lax"),
        );
    }

    /// The sign-in in progress this browser carries, if its signature and age are good.
    fn pending(&self, headers: &HeaderMap) -> Option<Pending> {
        let mut values = cookies(headers, STATE_COOKIE);
        let value = values.next()?;
        if values.next().is_some() {
            return None;
        }
        let (payload, signature) = value.split_once('.')?;
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(signature)
            .ok()?;
        self.mac(b"cookie", payload.as_bytes())
            .verify_slice(&signature)
            .ok()?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .ok()?;
        let pending: Pending = serde_json::from_slice(&bytes).ok()?;
        (pending.e > now_secs()).then_some(pending)
    }

    /// Records `state` as used; the refusal page when it was already, or when too many are
    /// remembered.
    fn use_state(&self, state: &str, exp: u64) -> Result<(), Box<Response<Body>>> {
        let mut used = self
            .used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if used.len() >= USED_STATES_CAPACITY {
            let now = now_secs();
            used.retain(|_, exp| *exp > now);
            if used.len() >= USED_STATES_CAPACITY {
                // Anyone can make many signed sign-ins; refusing here would let them stop every
                // sign-in. Forgetting is safe: a forgotten `state` replayed brings back a code
                // the provider already took (codes are single-use, RFC 6749 section 4.1.2).
                used.clear();
            }
        }
        if used.insert(state.to_owned(), exp).is_some() {
            return Err(Box::new(page(
                StatusCode::BAD_REQUEST,
                "This sign-in was already used",
                &[
                    "This sign-in link has already been used once.".into(),
                    start_again("/"),
                ],
            )));
        }
        Ok(())
    }

    #[expect(
        clippy::too_many_lines,
        reason = "the callback's checks read best in order"
    )]
    async fn callback(
        &self,
        query: &str,
        headers: &HeaderMap,
        store: &UserStore,
        tokens: &Tokens,
    ) -> Response<Body> {
        let Some(metadata) = self.metadata() else {
            return self.unavailable();
        };
        let mut params: HashMap<String, String> = HashMap::new();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            if params
                .insert(name.into_owned(), value.into_owned())
                .is_some()
            {
                return self.refused(
                    StatusCode::BAD_REQUEST,
                    "Sign-in failed",
                    "The identity provider's answer repeats a parameter.".into(),
                    "/",
                );
            }
        }
        let pending = self.pending(headers);
        let target = pending.as_ref().map_or("/", |p| p.r.as_str()).to_owned();
        if let Some(error) = params.get("error") {
            let description = params
                .get("error_description")
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            tracing::info!(error, "single sign-on: the provider refused the sign-in");
            return self.refused(
                StatusCode::FORBIDDEN,
                "Sign-in refused",
                format!(
                    "The identity provider did not sign you in ({}{}).",
                    escape(error),
                    escape(&description)
                ),
                &target,
            );
        }
        let Some(pending) = pending else {
            tracing::info!("single sign-on: callback without a valid sign-in cookie");
            return self.refused(
                StatusCode::BAD_REQUEST,
                "Sign-in expired or started elsewhere",
                "This sign-in was not started in this browser, or took longer than 10 minutes."
                    .into(),
                "/",
            );
        };
        let state_matches = params.get("state").is_some_and(|state| {
            use subtle::ConstantTimeEq as _;
            state.len() == pending.s.len()
                && bool::from(state.as_bytes().ct_eq(pending.s.as_bytes()))
        });
        if !state_matches {
            tracing::info!("single sign-on: callback state does not match this browser's");
            return self.refused(
                StatusCode::BAD_REQUEST,
                "Sign-in started elsewhere",
                "This sign-in answer belongs to another sign-in than the one this browser \
                 started."
                    .into(),
                &target,
            );
        }
        if let Err(response) = self.use_state(&pending.s, pending.e) {
            return *response;
        }
        // RFC 9207: the answer names its issuer; a mix-up with another provider shows here.
        match params.get("iss") {
            Some(iss) if *iss != self.config.issuer => {
                tracing::warn!(iss, "single sign-on: callback from another issuer");
                return self.refused(
                    StatusCode::BAD_REQUEST,
                    "Sign-in failed",
                    "The sign-in answer comes from another identity provider.".into(),
                    &target,
                );
            }
            None if metadata.authorization_response_iss_parameter_supported == Some(true) => {
                return self.refused(
                    StatusCode::BAD_REQUEST,
                    "Sign-in failed",
                    "The sign-in answer does not name its identity provider.".into(),
                    &target,
                );
            }
            _ => {}
        }
        let Some(code) = params.get("code").filter(|c| !c.is_empty()) else {
            return self.refused(
                StatusCode::BAD_REQUEST,
                "Sign-in failed",
                "The identity provider's answer carries no code.".into(),
                &target,
            );
        };
        let answer = match self.exchange(&metadata, code, &pending.s).await {
            Ok(answer) => answer,
            Err(http::CallError::Status { status, body }) if status.is_client_error() => {
                tracing::warn!(
                    status = status.as_u16(),
                    answer = body,
                    "single sign-on: the token endpoint refused the code"
                );
                return self.refused(
                    StatusCode::BAD_REQUEST,
                    "Sign-in failed",
                    "The identity provider did not accept this sign-in (it may have been used \
                     already or taken too long)."
                        .into(),
                    &target,
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "single sign-on: the token endpoint failed");
                return self.refused(
                    StatusCode::BAD_GATEWAY,
                    "Sign-in failed",
                    "The identity provider could not be reached to finish signing in. Try again \
                     in a minute."
                        .into(),
                    &target,
                );
            }
        };
        let Some(id_token) = answer.get("id_token").and_then(|t| t.as_str()) else {
            return self.refused(
                StatusCode::BAD_GATEWAY,
                "Sign-in failed",
                "The identity provider sent no ID token.".into(),
                &target,
            );
        };
        let claims = match self
            .provider
            .verify_id_token(&metadata, id_token, &pending.n)
            .await
        {
            Ok(claims) => claims,
            Err(e) => {
                tracing::warn!(error = %e, "single sign-on: ID token refused");
                return self.refused(
                    StatusCode::FORBIDDEN,
                    "Sign-in failed",
                    "The identity provider's answer did not pass the gateway's checks.".into(),
                    &target,
                );
            }
        };
        let access_token = answer.get("access_token").and_then(|t| t.as_str());
        let person = match self.person(&metadata, &claims, access_token).await {
            Ok(person) => person,
            Err(why) => {
                tracing::warn!(error = why, "single sign-on: userinfo failed");
                return self.refused(
                    StatusCode::BAD_GATEWAY,
                    "Sign-in failed",
                    "The identity provider's account details could not be read.".into(),
                    &target,
                );
            }
        };
        let user = match identity::map(&self.config, store, &person) {
            Ok(user) => user,
            Err(refusal) => {
                tracing::info!(
                    person = person.shown(),
                    reason = %refusal,
                    "single sign-on: no user for this person"
                );
                return self.refused(
                    StatusCode::FORBIDDEN,
                    "No access to Argilla",
                    format!(
                        "You signed in as <strong>{}</strong>, but {}. An administrator must \
                         add you to Argilla before you can use it.",
                        escape(&person.shown()),
                        escape(&refusal.to_string())
                    ),
                    "/",
                );
            }
        };
        let sid = random_id(16);
        let (token, exp) = tokens.issue_session(&user, self.config.session_lifetime, &sid);
        tracing::info!(
            user = user.username,
            person = person.shown(),
            "single sign-on: signed in"
        );
        let mut response = redirect(&pending.r);
        self.clear_state_cookie(&mut response);
        self.set_cookie(
            &mut response,
            &format!("{APP_STRATEGY}=authProvider; Path=/; SameSite=Lax"),
        );
        self.set_cookie(
            &mut response,
            &format!("{APP_TOKEN}=Bearer%20{token}; Path=/; SameSite=Lax"),
        );
        self.set_cookie(
            &mut response,
            &format!(
                "{APP_EXPIRATION}={}; Path=/; SameSite=Lax",
                exp.saturating_mul(1000)
            ),
        );
        self.set_cookie(
            &mut response,
            &format!(
                "{SESSION_COOKIE}={sid}.{}; Path=/; HttpOnly; SameSite=Lax",
                self.session_tag(&sid)
            ),
        );
        response
    }

    fn refused(
        &self,
        status: StatusCode,
        title: &str,
        message: String,
        target: &str,
    ) -> Response<Body> {
        let mut response = page(status, title, &[message, start_again(target)]);
        self.clear_state_cookie(&mut response);
        response
    }

    async fn exchange(
        &self,
        metadata: &Metadata,
        code: &str,
        state: &str,
    ) -> Result<serde_json::Value, http::CallError> {
        let uri: Uri = metadata
            .token_endpoint
            .parse()
            .map_err(|e| http::CallError::Transport(format!("token endpoint: {e}")))?;
        let verifier = self.verifier(state);
        let redirect_uri = self.config.redirect_url.to_string();
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri.as_str()),
            ("code_verifier", verifier.as_str()),
        ];
        let methods = metadata.token_endpoint_auth_methods_supported.as_deref();
        let supports = |m: &str| methods.is_none_or(|all| all.iter().any(|x| x == m));
        let basic = match &self.config.client_secret {
            Some(secret) if supports("client_secret_basic") || !supports("client_secret_post") => {
                // RFC 6749 section 2.3.1: each part form-encoded, then Basic.
                let pair = format!(
                    "{}:{}",
                    encode_form(&self.config.client_id),
                    encode_form(secret)
                );
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            }
            Some(secret) => {
                form.push(("client_id", &self.config.client_id));
                form.push(("client_secret", secret));
                None
            }
            None => {
                form.push(("client_id", &self.config.client_id));
                None
            }
        };
        self.provider
            .client()
            .post_form(&uri, &form, basic.as_deref())
            .await
    }

    /// The person: the ID token's claims, completed from userinfo when it lacks the claims the
    /// identity rule needs. `email` and `email_verified` come together from one source.
    async fn person(
        &self,
        metadata: &Metadata,
        claims: &provider::IdClaims,
        access_token: Option<&str>,
    ) -> Result<Person, String> {
        let verified = |v: Option<&serde_json::Value>| v.map(|v| v.as_bool() == Some(true));
        let mut person = Person {
            sub: claims.sub.clone(),
            email: claims.email.clone(),
            email_verified: verified(claims.email_verified.as_ref()),
            preferred_username: claims.preferred_username.clone(),
        };
        let lacking = match self.config.identity_claim {
            IdentityClaim::Email => person.email.is_none(),
            IdentityClaim::PreferredUsername => {
                person.preferred_username.is_none()
                    || (!self.config.allowed_email_domains.is_empty() && person.email.is_none())
            }
        };
        let (Some(endpoint), Some(access_token), true) =
            (&metadata.userinfo_endpoint, access_token, lacking)
        else {
            return Ok(person);
        };
        let uri: Uri = endpoint
            .parse()
            .map_err(|e| format!("userinfo endpoint: {e}"))?;
        let info = self
            .provider
            .client()
            .get_json(&uri, Some(access_token))
            .await
            .map_err(|e| e.to_string())?;
        // OpenID Connect Core 5.3.2: userinfo's `sub` must be the ID token's.
        if info.get("sub").and_then(|s| s.as_str()) != Some(claims.sub.as_str()) {
            return Err("userinfo is about another subject".into());
        }
        if person.email.is_none() {
            person.email = info
                .get("email")
                .and_then(|e| e.as_str())
                .map(str::to_owned);
            person.email_verified = verified(info.get("email_verified"));
        }
        if person.preferred_username.is_none() {
            person.preferred_username = info
                .get("preferred_username")
                .and_then(|e| e.as_str())
                .map(str::to_owned);
        }
        Ok(person)
    }

    fn sign_out(&self, headers: &HeaderMap, tokens: &Tokens) -> Response<Body> {
        // The token to end: the one presented as Bearer, else the web app's cookie. Reading
        // the cookie here ends a session; it never grants one.
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned)
            .or_else(|| {
                cookies(headers, APP_TOKEN).find_map(|value| {
                    let decoded = percent_encoding::percent_decode_str(value)
                        .decode_utf8()
                        .ok()?
                        .into_owned();
                    decoded.strip_prefix("Bearer ").map(str::to_owned)
                })
            });
        if let Some(session) = presented.as_deref().and_then(|t| tokens.session(t)) {
            if let Err(e) = self.revocations.end(&session.sid, session.exp) {
                tracing::error!(error = e, "single sign-on: sign-out could not be recorded");
                return page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Sign-out failed",
                    &[
                        "The gateway could not record the sign-out. Tell your administrator."
                            .into(),
                    ],
                );
            }
            tracing::info!("single sign-on: session ended");
        }
        let mut response = match self.metadata().and_then(|m| m.end_session_endpoint.clone()) {
            Some(endpoint) => {
                let mut query = form_urlencoded::Serializer::new(String::new());
                query.append_pair("client_id", &self.config.client_id);
                if let Some(after) = &self.config.post_logout_redirect_url {
                    query.append_pair("post_logout_redirect_uri", after);
                }
                let separator = if endpoint.contains('?') { '&' } else { '?' };
                redirect(&format!("{endpoint}{separator}{}", query.finish()))
            }
            None => page(
                StatusCode::OK,
                "Signed out",
                &[
                    "You are signed out of Argilla.".into(),
                    "<a href=\"/oauth2/start\">Sign in again</a>".into(),
                ],
            ),
        };
        // What the web app's own logout writes, so that it shows the login page at once.
        for name in [APP_TOKEN, APP_EXPIRATION] {
            self.set_cookie(
                &mut response,
                &format!("{name}=false; Path=/; SameSite=Lax"),
            );
        }
        response
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

fn encode_form(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The only value of query parameter `name`; `None` when absent or repeated.
fn param(query: &str, name: &str) -> Option<String> {
    let mut values = form_urlencoded::parse(query.as_bytes()).filter(|(n, _)| n == name);
    let (_, value) = values.next()?;
    values.next().is_none().then(|| value.into_owned())
}

/// The SSO session of a browser whose web app has logged itself out: a `GET` carrying the
/// session cookie and the app's token cookie set to `false`.
fn logged_out_by_app<'a>(method: &Method, headers: &'a HeaderMap) -> Option<&'a str> {
    if method != Method::GET || !headers.contains_key(header::COOKIE) {
        return None;
    }
    let sid = cookies(headers, SESSION_COOKIE).find(|sid| !sid.is_empty())?;
    cookies(headers, APP_TOKEN)
        .any(|value| value == "false")
        .then_some(sid)
}

/// A browser loading a page of the web app (a navigation, not a script, style or API call) with
/// no login token in the web app's cookie: never signed in, signed out, or logged out by the app.
/// The cookie only decides where to send the browser; it is never a credential.
fn signed_out_navigation(method: &Method, path: &str, headers: &HeaderMap) -> bool {
    if method != Method::GET || path.starts_with("/api/") || path.starts_with("/oauth2/") {
        return false;
    }
    navigation(headers)
        && !cookies(headers, APP_TOKEN)
            .any(|value| value.starts_with("Bearer%20") || value.starts_with("Bearer "))
}

/// A page load (not a script, style or API call).
fn navigation(headers: &HeaderMap) -> bool {
    match headers.get("sec-fetch-mode") {
        Some(mode) => mode.as_bytes() == b"navigate",
        // Browsers without Fetch Metadata: a request that asks for HTML first.
        None => headers
            .get(header::ACCEPT)
            .is_some_and(|accept| accept.as_bytes().starts_with(b"text/html")),
    }
}

/// Every value of cookie `name` in the request's `Cookie` headers.
fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (n, value) = pair.trim().split_once('=')?;
            (n == name).then_some(value)
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sso(redirect: &str) -> Sso {
        let config = config::from_raw(
            toml::from_str(&format!(
                "issuer_url = \"https://idp.example.com\"\nclient_id = \"c\"\nredirect_url = \"{redirect}\""
            ))
            .unwrap(),
            &|_| None,
            false,
        )
        .unwrap()
        .unwrap();
        Sso::new(config, Some("0123456789abcdef0123"))
    }

    #[test]
    fn cookies_are_secure_on_https_only() {
        for (redirect, secure) in [
            ("https://argilla.example.com/oauth2/callback", true),
            ("http://127.0.0.1:6900/oauth2/callback", false),
        ] {
            let mut response = Response::new(empty());
            sso(redirect).set_cookie(&mut response, "a=b; Path=/");
            let cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
            assert_eq!(cookie.ends_with("; Secure"), secure, "{redirect}: {cookie}");
        }
    }

    #[test]
    fn the_sign_in_cookie_is_checked() {
        let sso = sso("https://argilla.example.com/oauth2/callback");
        let pending = Pending {
            s: "state".into(),
            n: "nonce".into(),
            r: "/".into(),
            e: now_secs() + 60,
        };
        let cookie = |pending: &Pending, key: &Sso| {
            let payload = b64(&serde_json::to_vec(pending).unwrap());
            let signature = b64(&key
                .mac(b"cookie", payload.as_bytes())
                .finalize()
                .into_bytes());
            let mut headers = HeaderMap::new();
            headers.insert(
                header::COOKIE,
                format!("x=1; {STATE_COOKIE}={payload}.{signature}")
                    .parse()
                    .unwrap(),
            );
            headers
        };
        assert_eq!(sso.pending(&cookie(&pending, &sso)).unwrap().s, "state");
        let other = Sso::new(sso.config.clone(), Some("another-secret-0123456"));
        assert!(
            sso.pending(&cookie(&pending, &other)).is_none(),
            "another key"
        );
        let expired = Pending {
            e: now_secs() - 1,
            ..pending
        };
        assert!(sso.pending(&cookie(&expired, &sso)).is_none(), "expired");
        assert_eq!(
            sso.verifier("state").len(),
            43,
            "a PKCE verifier of 43 characters"
        );
    }
}
