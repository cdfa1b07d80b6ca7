//! Forwarding over the client connection's upstream connection ([`crate::upstream`]); request headers cleaned
//! (hop-by-hop, anything named in `Connection`, every client credential and identity header)
//! and ours added (the upstream credential, `X-Forwarded-*`); bodies streamed both ways.
//!
//! Only the dataset list is read on its way back, to filter it to the user's workspaces.

use std::{collections::HashSet, net::IpAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{
    HeaderMap, HeaderName, HeaderValue, Response, Uri, header, request::Parts, uri::PathAndQuery,
};
use http_body_util::{BodyExt, Limited};
use serde_json::Value;

use crate::{
    auth::CREDENTIAL_HEADERS,
    body::{Body, full},
    config::Upstream,
    error::Reject,
    metrics::Metrics,
    policy::WORKSPACE_HEADERS,
    upstream::{Affinity, Error as UpstreamError, Outgoing},
};

/// Hop-by-hop headers (RFC 9110 section 7.6.1, plus the non-standard ones proxies still see).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Identity and forwarding headers a client might send to impersonate someone or to make the
/// upstream believe a different origin; the gateway removes them all and sets its own.
pub const IDENTITY_HEADERS: [&str; 16] = [
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-preferred-username",
    "x-forwarded-groups",
    "x-forwarded-access-token",
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-preferred-username",
    "x-auth-request-groups",
    "x-auth-request-access-token",
    "x-remote-user",
    "remote-user",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
];

/// Removes hop-by-hop headers, including every header named in `Connection`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    strip(headers, |name| HOP_BY_HOP.contains(&name));
}

/// Removes everything a client could use to speak for someone: hop-by-hop headers, `Host`,
/// credentials, identity and forwarding headers, the workspace headers (the workspace
/// travels in the rewritten query), and `Cookie`: Argilla 1.5 reads no cookie, and the web
/// app keeps its login token in one (`auth._token.local`).
pub fn clean_request_headers(headers: &mut HeaderMap) {
    strip(headers, |name| {
        name == "host"
            || name == "cookie"
            || HOP_BY_HOP.contains(&name)
            || CREDENTIAL_HEADERS.contains(&name)
            || IDENTITY_HEADERS.contains(&name)
            || WORKSPACE_HEADERS.contains(&name)
    });
}

/// Removes, in one pass over the headers present, those `removed` names and those named in
/// `Connection` (header names in a `HeaderMap` are lowercase).
fn strip(headers: &mut HeaderMap, removed: impl Fn(&str) -> bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| removed(name.as_str()) || named.contains(name))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

const X_ARGILLA_API_KEY: HeaderName = HeaderName::from_static("x-argilla-api-key");
const X_FORWARDED_USER: HeaderName = HeaderName::from_static("x-forwarded-user");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the gateway adds to a forwarded request.
pub struct Added<'a> {
    /// The upstream credential (`X-Argilla-Api-Key`), for authenticated routes.
    pub api_key: Option<HeaderValue>,
    /// The authenticated username (`X-Forwarded-User`).
    pub user: Option<&'a str>,
    /// The value for `X-Forwarded-For`.
    pub forwarded_for: Option<HeaderValue>,
    /// The host the client asked for (`X-Forwarded-Host`).
    pub forwarded_host: Option<HeaderValue>,
    /// The request id (`X-Request-Id`).
    pub request_id: Option<HeaderValue>,
    /// Whether the client connection is TLS (`X-Forwarded-Proto: https`).
    pub secure: bool,
}

/// Adds the gateway's headers after [`clean_request_headers`].
pub fn add_request_headers(headers: &mut HeaderMap, added: Added<'_>) {
    if let Some(key) = added.api_key {
        headers.insert(X_ARGILLA_API_KEY, key);
    }
    if let Some(user) = added.user.and_then(|u| HeaderValue::from_str(u).ok()) {
        headers.insert(X_FORWARDED_USER, user);
    }
    if let Some(value) = added.forwarded_for {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if added.secure { "https" } else { "http" }),
    );
    if let Some(host) = added.forwarded_host {
        headers.insert(X_FORWARDED_HOST, host);
    }
    if let Some(id) = added.request_id {
        headers.insert(X_REQUEST_ID, id);
    }
}

/// The client's address as the gateway believes it: the socket peer, unless the peer is a
/// trusted proxy, in which case the last address that proxy put in `X-Forwarded-For`.
#[must_use]
pub fn client_address(trusted: &[IpAddr], peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let last = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .next_back();
    last.unwrap_or(peer)
}

/// The `X-Forwarded-For` value to send: the peer alone, or appended to the chain a trusted
/// proxy sent.
#[must_use]
pub fn forwarded_for(trusted: &[IpAddr], peer: IpAddr, headers: &HeaderMap) -> String {
    if trusted.contains(&peer) {
        let chain: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if !chain.is_empty() {
            return format!("{}, {peer}", chain.join(", "));
        }
    }
    peer.to_string()
}

/// The upstream URL's path prefix, without a trailing slash.
#[derive(Debug, Clone)]
pub struct Base {
    prefix: String,
}

impl Base {
    /// The prefix of the configured upstream URL.
    #[must_use]
    pub fn new(url: &Uri) -> Self {
        Self {
            prefix: url.path().trim_end_matches('/').to_owned(),
        }
    }

    /// The origin-form target sent upstream for a client path and a (possibly rewritten)
    /// query.
    ///
    /// # Errors
    /// 400 if the result is not a valid target (it always is for a path hyper accepted).
    pub fn uri(&self, path: &str, query: Option<&str>) -> Result<Uri, Reject> {
        let mut text =
            String::with_capacity(self.prefix.len() + path.len() + 1 + query.map_or(0, str::len));
        text.push_str(&self.prefix);
        text.push_str(path);
        if let Some(query) = query {
            text.push('?');
            text.push_str(query);
        }
        PathAndQuery::try_from(text)
            .map(Uri::from)
            .map_err(|_| Reject::BadRequest("The request target cannot be forwarded".into()))
    }
}

/// The WebSocket upgrade a client asks for (`Connection: upgrade` plus `Upgrade: websocket`);
/// `None` otherwise. No other protocol is passed through: an `h2c` upgrade would open a raw
/// tunnel to the upstream in which requests bypass the gateway (request smuggling).
#[must_use]
pub fn requested_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    let mut upgrades = headers.get_all(header::UPGRADE).iter();
    let protocol = upgrades.next()?;
    let websocket = upgrades.next().is_none()
        && protocol
            .to_str()
            .is_ok_and(|p| p.trim().eq_ignore_ascii_case("websocket"));
    (asks && websocket).then(|| protocol.clone())
}

/// Sends a cleaned request upstream and returns its response with hop-by-hop headers removed
/// (except, on a `101 Switching Protocols`, the two that say what was switched to).
///
/// # Errors
/// 502 when the upstream cannot be reached, 504 when it does not answer in time, 408 when the
/// client's streamed body stalled before the upstream answered.
pub async fn send(
    affinity: &Arc<Affinity>,
    upstream: &Upstream,
    metrics: &Metrics,
    mut parts: Parts,
    uri: Uri,
    body: Outgoing,
) -> Result<Response<Body>, Reject> {
    parts.uri = uri;
    let started = std::time::Instant::now();
    let response = tokio::time::timeout(upstream.response_timeout, affinity.send(parts, body))
        .await
        .map_err(|_| Reject::UpstreamTimeout(upstream.response_timeout))?
        .map_err(|e| match e {
            UpstreamError::Stalled(_) => Reject::RequestTimeout,
            other => Reject::Upstream(other),
        })?;
    metrics.upstream_answered(started.elapsed());
    let (mut parts, body) = response.into_parts();
    let switched = (parts.status == http::StatusCode::SWITCHING_PROTOCOLS)
        .then(|| parts.headers.get(header::UPGRADE).cloned())
        .flatten();
    remove_hop_by_hop(&mut parts.headers);
    if let Some(protocol) = switched {
        parts.headers.insert(header::UPGRADE, protocol);
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    Ok(Response::from_parts(parts, body))
}

/// Keeps only the datasets of `workspaces` in a dataset-list answer, read whole within
/// `deadline`.
///
/// # Errors
/// 502 when the upstream's answer is compressed, too large, late or not a JSON array.
pub async fn filter_datasets(
    response: Response<Body>,
    workspaces: &[String],
    limit: usize,
    deadline: Duration,
) -> Result<Response<Body>, Reject> {
    if !response.status().is_success() {
        return Ok(response);
    }
    let (mut parts, body) = response.into_parts();
    if parts
        .headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v != "identity")
    {
        return Err(Reject::UpstreamResponse(
            "dataset list arrived compressed although identity was asked for".into(),
        ));
    }
    let bytes: Bytes = tokio::time::timeout(deadline, Limited::new(body, limit).collect())
        .await
        .map_err(|_| {
            Reject::UpstreamResponse(format!(
                "dataset list not read within {}s",
                deadline.as_secs()
            ))
        })?
        .map_err(|e| Reject::UpstreamResponse(format!("dataset list unreadable: {e}")))?
        .to_bytes();
    let Value::Array(items) = serde_json::from_slice(&bytes)
        .map_err(|e| Reject::UpstreamResponse(format!("dataset list is not JSON: {e}")))?
    else {
        return Err(Reject::UpstreamResponse(
            "dataset list is not a JSON array".into(),
        ));
    };
    let allowed: HashSet<&str> = workspaces.iter().map(String::as_str).collect();
    let kept: Vec<Value> = items
        .into_iter()
        .filter(|item| {
            item.get("workspace")
                .or_else(|| item.get("owner"))
                .and_then(Value::as_str)
                .is_some_and(|w| allowed.contains(w))
        })
        .collect();
    let out = serde_json::to_vec(&kept).map_err(|e| Reject::UpstreamResponse(e.to_string()))?;
    parts.headers.remove(header::CONTENT_ENCODING);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
    Ok(Response::from_parts(parts, full(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        headers
    }

    #[test]
    fn cleaning_removes_everything_a_client_could_speak_with() {
        let mut headers = map(&[
            ("host", "gw"),
            ("connection", "keep-alive, X-Custom, x-forwarded-user"),
            ("x-custom", "dropped because named in Connection"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic eA=="),
            ("authorization", "Bearer t"),
            ("x-argilla-api-key", "k"),
            ("X-Rubrix-Api-Key", "k"),
            ("x-forwarded-user", "root"),
            ("x-forwarded-for", "1.2.3.4"),
            ("forwarded", "for=1.2.3.4"),
            ("x-argilla-workspace", "team-b"),
            ("x-rubrix-workspace", "team-b"),
            ("x-remote-user", "root"),
            (
                "cookie",
                "auth._token.local=Bearer%20eyJ; auth.strategy=local",
            ),
            ("accept", "application/json"),
            ("content-type", "application/json"),
        ]);
        clean_request_headers(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "content-type"]);
    }

    #[test]
    fn connection_cannot_remove_what_the_gateway_adds() {
        let mut headers = map(&[(
            "connection",
            "X-Argilla-Api-Key, X-Forwarded-User, X-Forwarded-For",
        )]);
        clean_request_headers(&mut headers);
        add_request_headers(
            &mut headers,
            Added {
                api_key: Some(HeaderValue::from_static("service")),
                user: Some("alice"),
                forwarded_for: Some(HeaderValue::from_static("127.0.0.1")),
                forwarded_host: Some(HeaderValue::from_static("gw:6900")),
                request_id: None,
                secure: false,
            },
        );
        assert_eq!(headers["x-argilla-api-key"], "service");
        assert_eq!(headers["x-forwarded-user"], "alice");
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], "gw:6900");
        assert!(headers.get("connection").is_none());
    }

    #[test]
    fn only_websocket_upgrades_are_passed_through() {
        let ws = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ]);
        assert_eq!(requested_upgrade(&ws).unwrap(), "WebSocket");
        for headers in [
            map(&[
                ("connection", "Upgrade, HTTP2-Settings"),
                ("upgrade", "h2c"),
            ]),
            map(&[("upgrade", "websocket")]),
            map(&[("connection", "upgrade")]),
            map(&[("connection", "upgrade"), ("upgrade", "websocket, h2c")]),
            map(&[
                ("connection", "upgrade"),
                ("upgrade", "websocket"),
                ("upgrade", "h2c"),
            ]),
        ] {
            assert!(requested_upgrade(&headers).is_none(), "{headers:?}");
        }
    }

    #[test]
    fn forwarded_for_trusts_only_configured_proxies() {
        let proxy: IpAddr = "10.0.0.9".parse().unwrap();
        let other: IpAddr = "10.0.0.7".parse().unwrap();
        let headers = map(&[("x-forwarded-for", "1.1.1.1, 2.2.2.2")]);
        assert_eq!(
            client_address(&[proxy], proxy, &headers),
            "2.2.2.2".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_address(&[proxy], other, &headers), other);
        assert_eq!(client_address(&[proxy], proxy, &HeaderMap::new()), proxy);
        assert_eq!(
            forwarded_for(&[proxy], proxy, &headers),
            "1.1.1.1, 2.2.2.2, 10.0.0.9"
        );
        assert_eq!(forwarded_for(&[proxy], other, &headers), "10.0.0.7");
    }

    #[test]
    fn base_keeps_prefix_and_raw_path() {
        let base = Base::new(&"http://argilla:6900/prefix/".parse().unwrap());
        let uri = base
            .uri("/api/datasets/a%2Fb", Some("x=1&workspace=w"))
            .unwrap();
        assert_eq!(
            uri.to_string(),
            "/prefix/api/datasets/a%2Fb?x=1&workspace=w"
        );
        let base = Base::new(&"http://127.0.0.1:1".parse().unwrap());
        assert_eq!(base.uri("/", None).unwrap().to_string(), "/");
    }

    #[tokio::test]
    async fn dataset_list_is_filtered_and_resized() {
        let body = r#"[{"name":"a","workspace":"team-a"},{"name":"b","workspace":"team-b"},{"name":"c","owner":"alice"},{"name":"d"}]"#;
        let response = Response::builder()
            .header(header::CONTENT_LENGTH, body.len())
            .body(full(body))
            .unwrap();
        let filtered = filter_datasets(
            response,
            &["team-a".into(), "alice".into()],
            1 << 20,
            SECOND,
        )
        .await
        .unwrap();
        let length: usize = filtered.headers()[header::CONTENT_LENGTH]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let bytes = filtered.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(bytes.len(), length);
        let names: Vec<String> = serde_json::from_slice::<Vec<Value>>(&bytes)
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["a", "c"]);
    }

    #[tokio::test]
    async fn compressed_or_oversized_lists_are_refused() {
        let response = Response::builder()
            .header(header::CONTENT_ENCODING, "br")
            .body(full("xx"))
            .unwrap();
        assert_eq!(
            filter_datasets(response, &[], 100, SECOND)
                .await
                .unwrap_err()
                .status(),
            502
        );
        let response = Response::new(full(vec![b' '; 200]));
        assert_eq!(
            filter_datasets(response, &[], 100, SECOND)
                .await
                .unwrap_err()
                .status(),
            502
        );
        let response = Response::builder().status(404).body(full("nope")).unwrap();
        assert_eq!(
            filter_datasets(response, &[], 100, SECOND)
                .await
                .unwrap()
                .status(),
            404
        );
    }
}
