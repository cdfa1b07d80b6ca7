//! Signing in: `GET /oauth2/start` sends the browser to the provider with a fresh `state`,
//! `nonce` and PKCE challenge; `GET /oauth2/callback` checks what comes back (cookie, `state`,
//! `iss`), has the code exchanged and the ID token checked, maps the person onto a user of
//! `users.yml`, and logs the web app in with a gateway token carrying a new session id.

use std::collections::HashMap;

use ::http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use hmac::Mac as _;
use sha2::{Digest as _, Sha256};

use super::{
    SESSION_COOKIE, STATE_COOKIE, STATE_LIFETIME_SECS, Sso, b64,
    cookie::{APP_EXPIRATION, APP_STRATEGY, APP_TOKEN, Pending},
    http, identity, now_secs,
    page::{escape, page, start_again},
    param, random_id, redirect,
};
use crate::{body::Body, token::Tokens, users::UserStore};

impl Sso {
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

    pub(super) fn start(&self, query: &str) -> Response<Body> {
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

    #[expect(
        clippy::too_many_lines,
        reason = "the callback's checks read best in order"
    )]
    pub(super) async fn callback(
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
}
