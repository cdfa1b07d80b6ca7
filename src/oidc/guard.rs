//! Which page loads single sign-on guards: with the password login off, a signed-out browser
//! opening any page of the web app is sent to the provider rather than to the web app's own
//! password form, and forwarded pages are asked for again each time so that a copy kept from
//! when the browser was signed in never shows that form instead.

use ::http::{HeaderMap, Method, header};

use super::{
    Sso,
    cookie::{APP_TOKEN, cookies},
};

impl Sso {
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
}

/// A browser loading a page of the web app (a navigation, not a script, style or API call) with
/// no login token in the web app's cookie: never signed in, signed out, or logged out by the app.
/// The cookie only decides where to send the browser; it is never a credential.
pub(super) fn signed_out_navigation(method: &Method, path: &str, headers: &HeaderMap) -> bool {
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
