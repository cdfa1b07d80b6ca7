//! The HTML pages single sign-on answers with: small, self-contained, never cached, every
//! inserted text escaped.

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{Body, full};

/// Escapes text for HTML element content and attribute values.
#[must_use]
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page with `title` and `paragraphs` (already escaped HTML) under `status`.
#[must_use]
pub fn page(status: StatusCode, title: &str, paragraphs: &[String]) -> Response<Body> {
    let mut html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title}</title><style>body{{font-family:sans-serif;max-width:40em;\
         margin:4em auto;padding:0 1em;line-height:1.5}}</style></head><body>\
         <h1>{title}</h1>\n",
        title = escape(title)
    );
    for paragraph in paragraphs {
        html.push_str("<p>");
        html.push_str(paragraph);
        html.push_str("</p>\n");
    }
    html.push_str("</body></html>\n");
    let mut response = Response::new(full(html));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    no_store(headers);
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    response
}

/// Marks an answer as not to be cached or framed.
pub fn no_store(headers: &mut http::HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// A link to start signing in again, back to `target`.
#[must_use]
pub fn start_again(target: &str) -> String {
    let href = format!(
        "/oauth2/start?rd={}",
        percent_encoding::utf8_percent_encode(target, percent_encoding::NON_ALPHANUMERIC)
    );
    format!("<a href=\"{}\">Sign in again</a>", escape(&href))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
