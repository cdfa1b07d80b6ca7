//! Authentication and forwarding over real sockets: what the client got and what the upstream
//! received, for every credential type right, wrong and disabled.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic on failure, like tests"
)]
#![allow(clippy::too_many_lines, reason = "case tables are long on purpose")]

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{Gateway, Options, SERVICE_KEY, Upstream, basic, get, send};
use http::Response;
use http_body_util::{BodyExt, channel::Channel};
use sha2::{Digest, Sha256};

/// (case, headers, client status, Argilla error code or "", user the upstream was told or "")
type Row = (
    &'static str,
    Vec<(&'static str, String)>,
    u16,
    &'static str,
    &'static str,
);

#[tokio::test]
async fn credential_table() {
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(&upstream).await;
    let h = |name: &'static str, value: &str| (name, value.to_owned());
    let rows: Vec<Row> = vec![
        ("no credentials", vec![], 401, "UnauthorizedError", ""),
        (
            "argilla key",
            vec![h("x-argilla-api-key", "alice-key")],
            200,
            "",
            "alice",
        ),
        (
            "argilla key, lowercase name",
            vec![h("X-ARGILLA-API-KEY", "alice-key")],
            200,
            "",
            "alice",
        ),
        (
            "argilla key wrong",
            vec![h("x-argilla-api-key", "nope")],
            401,
            "UnauthorizedError",
            "",
        ),
        (
            "rubrix key",
            vec![h("x-rubrix-api-key", "bob-key")],
            200,
            "",
            "bob",
        ),
        (
            "rubrix key wrong",
            vec![h("x-rubrix-api-key", "nope")],
            401,
            "UnauthorizedError",
            "",
        ),
        (
            "bearer api key",
            vec![h("authorization", "Bearer carol-key")],
            200,
            "",
            "carol",
        ),
        (
            "bearer lowercase scheme",
            vec![h("authorization", "bearer carol-key")],
            200,
            "",
            "carol",
        ),
        (
            "bearer wrong",
            vec![h("authorization", "Bearer nope")],
            401,
            "UnauthorizedError",
            "",
        ),
        (
            "basic",
            vec![h("authorization", &basic("alice", "alice-pw"))],
            200,
            "",
            "alice",
        ),
        (
            "basic wrong password",
            vec![h("authorization", &basic("alice", "nope"))],
            401,
            "UnauthorizedError",
            "",
        ),
        (
            "basic unknown user",
            vec![h("authorization", &basic("mallory", "x"))],
            401,
            "UnauthorizedError",
            "",
        ),
        (
            "basic key as password",
            vec![h("authorization", &basic("alice", "alice-key"))],
            401,
            "UnauthorizedError",
            "",
        ),
        (
            "python client 1.5 headers",
            vec![
                h("authorization", "Bearer alice-key"),
                h("x-argilla-api-key", "alice-key"),
                h("x-rubrix-api-key", "alice-key"),
            ],
            200,
            "",
            "alice",
        ),
        (
            "wrong key never falls through to basic",
            vec![
                h("x-argilla-api-key", "nope"),
                h("authorization", &basic("alice", "alice-pw")),
            ],
            401,
            "UnauthorizedError",
            "",
        ),
        (
            "wrong argilla key never falls through to rubrix",
            vec![
                h("x-argilla-api-key", "nope"),
                h("x-rubrix-api-key", "alice-key"),
            ],
            401,
            "UnauthorizedError",
            "",
        ),
        (
            "empty key headers then basic",
            vec![
                h("x-argilla-api-key", ""),
                h("x-rubrix-api-key", ""),
                h("authorization", &basic("bob", "bob-pw")),
            ],
            200,
            "",
            "bob",
        ),
        (
            "argilla key decides over bearer",
            vec![
                h("x-argilla-api-key", "alice-key"),
                h("authorization", "Bearer bob-key"),
            ],
            200,
            "",
            "alice",
        ),
        (
            "rubrix.apikey is nobody's",
            vec![h("x-argilla-api-key", "rubrix.apikey")],
            401,
            "UnauthorizedError",
            "",
        ),
        (
            "default key with a users file",
            vec![h("x-argilla-api-key", "argilla.apikey")],
            401,
            "UnauthorizedError",
            "",
        ),
        (
            "service key is not a client key",
            vec![h("x-argilla-api-key", SERVICE_KEY)],
            401,
            "UnauthorizedError",
            "",
        ),
        (
            "disabled by key",
            vec![h("x-argilla-api-key", "dave-key")],
            400,
            "InactiveUserError",
            "",
        ),
        (
            "disabled by bearer key",
            vec![h("authorization", "Bearer dave-key")],
            400,
            "InactiveUserError",
            "",
        ),
        (
            "disabled by basic",
            vec![h("authorization", &basic("dave", "dave-pw"))],
            400,
            "InactiveUserError",
            "",
        ),
        (
            "disabled, wrong password",
            vec![h("authorization", &basic("dave", "nope"))],
            401,
            "UnauthorizedError",
            "",
        ),
        (
            "unknown scheme",
            vec![h("authorization", "Digest x")],
            401,
            "UnauthorizedError",
            "",
        ),
    ];
    for (case, headers, status, code, upstream_user) in rows {
        upstream.clear();
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let reply = get(&gateway.url("/api/datasets/ds"), &headers).await;
        assert_eq!(reply.status, status, "{case}: {:?}", reply.body);
        let seen = upstream.requests();
        if upstream_user.is_empty() {
            assert_eq!(reply.error_code(), code, "{case}");
            assert!(seen.is_empty(), "{case}: upstream was called: {seen:?}");
            // Basic was tried only when it was the credential that decided.
            let key_sent = headers
                .iter()
                .any(|(n, v)| n.ends_with("api-key") && !v.is_empty());
            let tried_basic = !key_sent
                && headers
                    .iter()
                    .any(|(n, v)| *n == "authorization" && v.starts_with("Basic"))
                && code == "UnauthorizedError";
            assert_eq!(
                reply.header("www-authenticate").is_some(),
                tried_basic,
                "{case}: challenge"
            );
        } else {
            assert_eq!(seen.len(), 1, "{case}");
            let got = &seen[0];
            let own_workspace = format!("workspace={upstream_user}");
            assert_eq!(got.query.as_deref(), Some(own_workspace.as_str()), "{case}");
            assert_eq!(got.header("x-argilla-api-key"), Some(SERVICE_KEY), "{case}");
            assert_eq!(
                got.header("x-forwarded-user"),
                Some(upstream_user),
                "{case}"
            );
            assert!(got.header("authorization").is_none(), "{case}");
            assert!(got.header("x-rubrix-api-key").is_none(), "{case}");
            assert_eq!(
                got.headers.get_all("x-argilla-api-key").iter().count(),
                1,
                "{case}"
            );
        }
    }
}

#[tokio::test]
async fn spoofed_identity_headers_are_replaced() {
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(&upstream).await;
    let reply = get(
        &gateway.url("/api/datasets/ds"),
        &[
            ("x-argilla-api-key", "bob-key"),
            ("x-forwarded-user", "root"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=203.0.113.9;host=evil.example"),
            ("x-remote-user", "root"),
            ("x-auth-request-user", "root"),
            (
                "connection",
                "X-Argilla-Api-Key, X-Forwarded-User, X-Forwarded-For",
            ),
            ("x-custom", "kept"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200);
    let got = upstream.only();
    assert_eq!(got.header("x-argilla-api-key"), Some(SERVICE_KEY));
    assert_eq!(got.header("x-forwarded-user"), Some("bob"));
    assert_eq!(got.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(got.header("x-forwarded-proto"), Some("http"));
    assert_eq!(
        got.header("x-forwarded-host"),
        Some(gateway.addr.to_string().as_str())
    );
    assert_eq!(got.header("x-custom"), Some("kept"));
    for gone in [
        "forwarded",
        "x-remote-user",
        "x-auth-request-user",
        "connection",
    ] {
        assert!(got.header(gone).is_none(), "{gone} reached the upstream");
    }
    assert_eq!(got.headers.get_all("x-forwarded-user").iter().count(), 1);
}

#[tokio::test]
async fn passthrough_mode_sends_the_users_own_key() {
    let upstream = Upstream::start().await;
    let gateway = Options::new(&upstream)
        .env("ARGILLA_GATEWAY_UPSTREAM_MODE", "passthrough")
        .start()
        .await;
    for headers in [
        vec![("authorization".to_owned(), basic("alice", "alice-pw"))],
        vec![("x-rubrix-api-key".to_owned(), "alice-key".to_owned())],
    ] {
        upstream.clear();
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            get(&gateway.url("/api/datasets/ds"), &headers).await.status,
            200
        );
        assert_eq!(
            upstream.only().header("x-argilla-api-key"),
            Some("alice-key")
        );
    }
}

#[tokio::test]
async fn me_shapes() {
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(&upstream).await;
    let me = |key: &'static str| {
        let url = gateway.url("/api/me");
        async move { get(&url, &[("x-argilla-api-key", key)]).await.json() }
    };
    assert_eq!(
        me("alice-key").await,
        serde_json::json!({"username":"alice","email":"alice@example.com","full_name":"Alice A","superuser":false,"workspaces":["team-a","shared","alice"]})
    );
    assert_eq!(
        me("bob-key").await,
        serde_json::json!({"username":"bob","superuser":false,"workspaces":["bob"]})
    );
    assert_eq!(
        me("root-key").await,
        serde_json::json!({"username":"root","superuser":true,"workspaces":["alice","bob","carol","dave","root","shared","team-a","team-b"]})
    );
    let disabled = get(
        &gateway.url("/api/me"),
        &[("x-argilla-api-key", "dave-key")],
    )
    .await;
    assert_eq!(
        (disabled.status.as_u16(), disabled.error_code().as_str()),
        (400, "InactiveUserError")
    );
    let body = String::from_utf8_lossy(
        &get(
            &gateway.url("/api/me"),
            &[("authorization", &basic("alice", "alice-pw"))],
        )
        .await
        .body,
    )
    .into_owned();
    assert!(
        !body.contains("alice-key") && !body.contains("$2"),
        "{body}"
    );
    assert!(
        upstream.requests().is_empty(),
        "/api/me is answered by the gateway"
    );
}

#[tokio::test]
async fn public_routes_pass_without_credentials_and_lose_any_sent() {
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(&upstream).await;
    let cases: &[(&str, &str, &[(&str, &str)])] = &[
        ("spa root", "/", &[]),
        ("spa route", "/datasets/team-a/ds", &[]),
        (
            "asset with stray credentials",
            "/_nuxt/app.js",
            &[
                ("authorization", "Bearer x"),
                ("x-argilla-api-key", "alice-key"),
            ],
        ),
        ("info", "/api/_info", &[("x-argilla-api-key", "whatever")]),
        ("docs", "/api/docs/spec.json", &[]),
    ];
    for (case, path, headers) in cases {
        upstream.clear();
        let reply = get(&gateway.url(path), headers).await;
        assert_eq!(reply.status, 200, "{case}");
        let got = upstream.only();
        assert_eq!(got.path, *path, "{case}");
        assert!(got.header("authorization").is_none(), "{case}");
        assert!(
            got.header("x-argilla-api-key").is_none(),
            "{case}: no credential added or kept"
        );
        assert!(got.header("x-forwarded-user").is_none(), "{case}");
    }
    upstream.clear();
    let preflight = send(
        "OPTIONS",
        &gateway.url("/api/datasets"),
        &[
            ("origin", "http://app"),
            ("access-control-request-method", "POST"),
        ],
        Bytes::new(),
    )
    .await;
    assert_eq!(preflight.status, 200);
    assert_eq!(upstream.only().method, "OPTIONS");
    upstream.clear();
    assert_eq!(
        get(&gateway.url("/api/_status"), &[]).await.status,
        401,
        "_status needs credentials"
    );
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn health_is_answered_here() {
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(&upstream).await;
    let reply = get(&gateway.url("/healthz"), &[]).await;
    assert_eq!(reply.status, 200);
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn multi_megabyte_bodies_stream_intact_both_ways() {
    const SIZE: usize = 12 * 1024 * 1024;
    let payload: Bytes = (0..SIZE)
        .map(|i| u8::try_from(i * 7 % 251).unwrap())
        .collect::<Vec<u8>>()
        .into();
    let digest = Sha256::digest(&payload);
    let echo = payload.clone();
    let upstream = Upstream::with(Arc::new(move |request| {
        if request.path.ends_with("/download") {
            // A streamed (chunked) response of many small frames.
            let (mut sender, body) = Channel::<Bytes>::new(4);
            let echo = echo.clone();
            tokio::spawn(async move {
                for chunk in echo.chunks(64 * 1024) {
                    if sender
                        .send_data(Bytes::copy_from_slice(chunk))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
            return Response::new(body.map_err(|never| match never {}).boxed());
        }
        let digest = hex(&Sha256::digest(&request.body));
        Response::new(argilla_gateway::body::full(digest))
    }))
    .await;
    let gateway = Gateway::start(&upstream).await;

    // Upload: a chunked request body (no Content-Length), fed while the request is in flight.
    let (mut sender, body) = Channel::<Bytes>::new(4);
    let request = http::Request::post(gateway.url("/api/datasets/ds/TextClassification:bulk"))
        .header("x-argilla-api-key", "alice-key")
        .body(body)
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Channel<Bytes>>();
    let responding = tokio::spawn(async move { client.request(request).await });
    for chunk in payload.chunks(256 * 1024) {
        sender
            .send_data(Bytes::copy_from_slice(chunk))
            .await
            .unwrap();
    }
    drop(sender);
    let response = responding.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let answer = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        answer,
        hex(&digest).as_bytes(),
        "upstream got the exact bytes"
    );
    let got = upstream.only();
    assert_eq!(got.body.len(), SIZE);
    assert!(
        got.header("content-length").is_none(),
        "forwarded chunked, not buffered"
    );

    // Download: a streamed response of the same size.
    let reply = get(
        &gateway.url("/api/datasets/ds/records/download"),
        &[("x-argilla-api-key", "alice-key")],
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), SIZE);
    assert_eq!(Sha256::digest(&reply.body), digest);
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_is_504_in_argilla_shape() {
    // A port with nothing listening: bind, read the port, close.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let upstream = Upstream::start().await;
    let gateway = Options::new(&upstream)
        .env("ARGILLA_GATEWAY_UPSTREAM_URL", format!("http://{closed}"))
        .start()
        .await;
    let reply = get(
        &gateway.url("/api/datasets/ds"),
        &[("x-argilla-api-key", "alice-key")],
    )
    .await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.error_code(), "GenericServerError");
    assert!(reply.json()["detail"]["params"]["detail"].is_string());

    // An upstream that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let gateway = Options::new(&upstream)
        .env(
            "ARGILLA_GATEWAY_UPSTREAM_URL",
            format!("http://{silent_addr}"),
        )
        .env("ARGILLA_GATEWAY_UPSTREAM_RESPONSE_TIMEOUT_SECS", "1")
        .start()
        .await;
    let reply = get(
        &gateway.url("/api/datasets/ds"),
        &[("x-argilla-api-key", "alice-key")],
    )
    .await;
    assert_eq!(reply.status, 504);
    assert_eq!(reply.error_code(), "GenericServerError");
}

#[tokio::test]
async fn default_user_when_no_users_file() {
    let upstream = Upstream::start().await;
    let gateway = Options::new(&upstream).no_users_file().start().await;
    let reply = get(
        &gateway.url("/api/me"),
        &[("x-argilla-api-key", "argilla.apikey")],
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["username"], "argilla");
    assert_eq!(reply.json()["superuser"], true);
    let reply = get(
        &gateway.url("/api/me"),
        &[("authorization", &basic("argilla", "1234"))],
    )
    .await;
    assert_eq!(reply.status, 200, "default password 1234");
    let reply = get(
        &gateway.url("/api/me"),
        &[("x-argilla-api-key", "rubrix.apikey")],
    )
    .await;
    assert_eq!(reply.status, 401);

    let gateway = Options::new(&upstream)
        .no_users_file()
        .env("ARGILLA_LOCAL_AUTH_DEFAULT_APIKEY", "custom-default-key")
        .env(
            "ARGILLA_LOCAL_AUTH_DEFAULT_PASSWORD",
            common::hash("s3cret"),
        )
        .start()
        .await;
    assert_eq!(
        get(
            &gateway.url("/api/me"),
            &[("x-argilla-api-key", "argilla.apikey")]
        )
        .await
        .status,
        401
    );
    assert_eq!(
        get(
            &gateway.url("/api/me"),
            &[("x-argilla-api-key", "custom-default-key")]
        )
        .await
        .status,
        200
    );
    assert_eq!(
        get(
            &gateway.url("/api/me"),
            &[("authorization", &basic("argilla", "s3cret"))]
        )
        .await
        .status,
        200
    );
}
