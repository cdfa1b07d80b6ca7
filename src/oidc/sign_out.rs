//! Signing out: `/oauth2/sign_out` ends the session of the token presented, clears the web
//! app's login cookies and sends the browser to the provider's `end_session_endpoint`; the web
//! app's own logout (its token cookie set to `false` while the session cookie is there) ends
//! the session too, on the browser's next request.

use ::http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri, header};

use super::{
    SESSION_COOKIE, Sso,
    cookie::{APP_EXPIRATION, APP_TOKEN, cookies},
    now_secs,
    page::{self, page},
    redirect,
};
use crate::{
    body::{Body, empty},
    token::Tokens,
};

impl Sso {
    /// The web app logged itself out (its token cookie reads `false`) in a browser that holds
    /// an SSO session: ends the session, forgets the session cookie, and sends the browser to
    /// the same address again (`307`: `fetch` follows it with the same method), which is then
    /// served as usual.
    pub(super) fn end_after_app_logout(&self, cookie: &str, uri: &Uri) -> Response<Body> {
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

    pub(super) fn sign_out(&self, headers: &HeaderMap, tokens: &Tokens) -> Response<Body> {
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

/// The SSO session of a browser whose web app has logged itself out: a `GET` carrying the
/// session cookie and the app's token cookie set to `false`.
pub(super) fn logged_out_by_app<'a>(method: &Method, headers: &'a HeaderMap) -> Option<&'a str> {
    if method != Method::GET || !headers.contains_key(header::COOKIE) {
        return None;
    }
    let sid = cookies(headers, SESSION_COOKIE).find(|sid| !sid.is_empty())?;
    cookies(headers, APP_TOKEN)
        .any(|value| value == "false")
        .then_some(sid)
}
