//! The browser's side of single sign-on, and the cookies that carry it: the short-lived, signed
//! sign-in cookie (`state`, `nonce`, where to go afterwards), each `state` accepted once, the PKCE
//! verifier derived from `state`, the signed session cookie, and the web app's own login
//! cookies. Kept apart from the flows that use them so that every cookie is written (and made
//! `Secure` on HTTPS) in one place.

use ::http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{
    SESSION_COOKIE, STATE_COOKIE, Sso, USED_STATES_CAPACITY, b64, now_secs,
    page::{page, start_again},
};
use crate::body::Body;

/// The web app's cookies (`@nuxtjs/auth-next`, local scheme, strategy `authProvider`).
pub(super) const APP_STRATEGY: &str = "auth.strategy";
pub(super) const APP_TOKEN: &str = "auth._token.authProvider";
pub(super) const APP_EXPIRATION: &str = "auth._token_expiration.authProvider";

pub(super) type HmacSha256 = Hmac<Sha256>;

/// A sign-in in progress, as the cookie carries it.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Pending {
    /// `state`.
    pub(super) s: String,
    /// `nonce`.
    pub(super) n: String,
    /// Where to go afterwards (checked at start).
    pub(super) r: String,
    /// Expiry.
    pub(super) e: u64,
}

impl Sso {
    pub(super) fn clear_session_cookie(&self, response: &mut Response<Body>) {
        self.set_cookie(
            response,
            &format!("{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"),
        );
    }

    pub(super) fn mac(&self, purpose: &[u8], data: &[u8]) -> HmacSha256 {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(purpose);
        mac.update(&[0]);
        mac.update(data);
        mac
    }

    /// The signature of a session id in the session cookie.
    pub(super) fn session_tag(&self, sid: &str) -> String {
        b64(&self.mac(b"session", sid.as_bytes()).finalize().into_bytes())
    }

    /// The PKCE verifier of a sign-in: derived from its `state`, so it never leaves the gateway
    /// except to the token endpoint.
    pub(super) fn verifier(&self, state: &str) -> String {
        b64(&self.mac(b"pkce", state.as_bytes()).finalize().into_bytes())
    }

    pub(super) fn set_cookie(&self, response: &mut Response<Body>, cookie: &str) {
        let cookie = if self.config.secure() {
            format!("{cookie}; Secure")
        } else {
            cookie.to_owned()
        };
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }

    pub(super) fn clear_state_cookie(&self, response: &mut Response<Body>) {
        self.set_cookie(
            response,
            &format!("{STATE_COOKIE}=; Path=/oauth2/; Max-Age=0; HttpOnly; SameSite=Lax"),
        );
    }

    /// The sign-in in progress this browser carries, if its signature and age are good.
    pub(super) fn pending(&self, headers: &HeaderMap) -> Option<Pending> {
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
    pub(super) fn use_state(&self, state: &str, exp: u64) -> Result<(), Box<Response<Body>>> {
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
}

/// Every value of cookie `name` in the request's `Cookie` headers.
pub(super) fn cookies<'a>(
    headers: &'a HeaderMap,
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{body::empty, oidc::config};

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
