//! Workspace resolution, check and rewrite over real sockets: what the client got and exactly
//! what the upstream received (one `?workspace=`, no workspace headers) or that it received
//! nothing.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic on failure, like tests"
)]
#![allow(clippy::too_many_lines, reason = "case tables are long on purpose")]

mod common;

use common::{Gateway, Options, Upstream, get, send};
use serde_json::Value;

/// (case, key, method, path, extra headers, body, status, query the upstream saw or None if it
/// must not have been called)
type Row = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
    u16,
    Option<&'static str>,
);

const ROWS: &[Row] = &[
    (
        "own workspace by default",
        "alice-key",
        "GET",
        "/api/datasets/ds",
        &[],
        "",
        200,
        Some("workspace=alice"),
    ),
    (
        "python client headers",
        "alice-key",
        "POST",
        "/api/datasets/ds/TextClassification:bulk",
        &[
            ("x-argilla-workspace", "team-a"),
            ("x-rubrix-workspace", "team-a"),
        ],
        "{\"records\":[]}",
        200,
        Some("workspace=team-a"),
    ),
    (
        "web app header plus query",
        "alice-key",
        "DELETE",
        "/api/datasets/ds?workspace=team-a",
        &[("x-argilla-workspace", "team-a")],
        "",
        403,
        None,
    ),
    (
        "query beats header",
        "alice-key",
        "POST",
        "/api/datasets/ds/records/:search?limit=250&workspace=shared",
        &[("x-argilla-workspace", "team-a")],
        "{}",
        200,
        Some("limit=250&workspace=shared"),
    ),
    (
        "other team by query",
        "alice-key",
        "GET",
        "/api/datasets/ds?workspace=team-b",
        &[],
        "",
        404,
        None,
    ),
    (
        "other team by header",
        "alice-key",
        "GET",
        "/api/datasets/ds",
        &[("x-argilla-workspace", "team-b")],
        "",
        404,
        None,
    ),
    (
        "other team by rubrix header",
        "alice-key",
        "GET",
        "/api/datasets/ds",
        &[("x-rubrix-workspace", "team-b")],
        "",
        404,
        None,
    ),
    (
        "encoded name other team",
        "alice-key",
        "GET",
        "/api/datasets/ds?work%73pace=team-b",
        &[],
        "",
        404,
        None,
    ),
    (
        "encoded name own team",
        "alice-key",
        "GET",
        "/api/datasets/ds?work%73pace=team-a",
        &[],
        "",
        200,
        Some("workspace=team-a"),
    ),
    (
        "two query values",
        "alice-key",
        "GET",
        "/api/datasets/ds?workspace=team-a&workspace=shared",
        &[],
        "",
        400,
        None,
    ),
    (
        "semicolon",
        "alice-key",
        "GET",
        "/api/datasets/ds?workspace=team-a;workspace=team-b",
        &[],
        "",
        400,
        None,
    ),
    (
        "repeated header",
        "alice-key",
        "GET",
        "/api/datasets/ds",
        &[
            ("x-argilla-workspace", "team-a"),
            ("x-argilla-workspace", "team-b"),
        ],
        "",
        400,
        None,
    ),
    (
        "malformed",
        "alice-key",
        "GET",
        "/api/datasets/ds?workspace=..%2Fteam-b",
        &[],
        "",
        400,
        None,
    ),
    (
        "empty query falls to header",
        "alice-key",
        "GET",
        "/api/datasets/ds?workspace=",
        &[("x-argilla-workspace", "shared")],
        "",
        200,
        Some("workspace=shared"),
    ),
    (
        "workspaces: [] user",
        "bob-key",
        "GET",
        "/api/datasets/ds?workspace=team-a",
        &[],
        "",
        404,
        None,
    ),
    (
        "superuser other team",
        "root-key",
        "GET",
        "/api/datasets/ds?workspace=team-b",
        &[],
        "",
        200,
        Some("workspace=team-b"),
    ),
    (
        "superuser unknown workspace",
        "root-key",
        "GET",
        "/api/datasets/ds?workspace=ghost",
        &[],
        "",
        404,
        None,
    ),
    (
        "metrics keep their params",
        "alice-key",
        "POST",
        "/api/datasets/TextClassification/ds/metrics/m:summary?interval=2&workspace=team-a",
        &[],
        "{}",
        200,
        Some("interval=2&workspace=team-a"),
    ),
    (
        "create, body workspace wins",
        "alice-key",
        "POST",
        "/api/datasets",
        &[("x-argilla-workspace", "shared")],
        "{\"name\":\"n\",\"workspace\":\"team-a\"}",
        200,
        Some("workspace=team-a"),
    ),
    (
        "create, body other team",
        "alice-key",
        "POST",
        "/api/datasets",
        &[],
        "{\"name\":\"n\",\"workspace\":\"team-b\"}",
        404,
        None,
    ),
    (
        "create, duplicate keys last wins",
        "alice-key",
        "POST",
        "/api/datasets",
        &[],
        "{\"workspace\":\"team-a\",\"workspace\":\"team-b\"}",
        404,
        None,
    ),
    (
        "create, text/plain still JSON",
        "alice-key",
        "POST",
        "/api/datasets",
        &[("content-type", "text/plain")],
        "{\"name\":\"n\",\"workspace\":\"team-b\"}",
        404,
        None,
    ),
    (
        "create, not JSON",
        "alice-key",
        "POST",
        "/api/datasets",
        &[],
        "name=n&workspace=team-b",
        422,
        None,
    ),
    (
        "copy to own team",
        "alice-key",
        "PUT",
        "/api/datasets/ds:copy?workspace=team-a",
        &[],
        "{\"name\":\"c\",\"target_workspace\":\"shared\"}",
        200,
        Some("workspace=team-a"),
    ),
    (
        "copy to other team",
        "alice-key",
        "PUT",
        "/api/datasets/ds:copy?workspace=team-a",
        &[],
        "{\"name\":\"c\",\"target_workspace\":\"team-b\"}",
        404,
        None,
    ),
    (
        "delete, non-superuser",
        "alice-key",
        "DELETE",
        "/api/datasets/ds?workspace=team-a",
        &[],
        "",
        403,
        None,
    ),
    (
        "delete, superuser",
        "root-key",
        "DELETE",
        "/api/datasets/ds?workspace=team-a",
        &[],
        "",
        200,
        Some("workspace=team-a"),
    ),
    (
        "hard delete records",
        "alice-key",
        "DELETE",
        "/api/datasets/ds/data",
        &[],
        "",
        403,
        None,
    ),
    (
        "discard records",
        "alice-key",
        "DELETE",
        "/api/datasets/ds/data?mark_as_discarded=true",
        &[],
        "",
        200,
        Some("mark_as_discarded=true&workspace=alice"),
    ),
    (
        "delete settings",
        "alice-key",
        "DELETE",
        "/api/datasets/ds/TextClassification/settings",
        &[],
        "",
        403,
        None,
    ),
    (
        "save settings, non-superuser (Argilla 1.5: superusers only)",
        "alice-key",
        "PATCH",
        "/api/datasets/ds/TextClassification/settings?workspace=team-a",
        &[],
        r#"{"label_schema":{"labels":["a","b"]}}"#,
        403,
        None,
    ),
    (
        "save settings by the deprecated PUT, non-superuser",
        "alice-key",
        "PUT",
        "/api/datasets/TokenClassification/ds/settings",
        &[("x-argilla-workspace", "team-a")],
        r#"{"label_schema":{"labels":["PER"]}}"#,
        403,
        None,
    ),
    (
        "save settings, superuser",
        "root-key",
        "PATCH",
        "/api/datasets/ds/TextClassification/settings",
        &[("x-argilla-workspace", "team-a")],
        r#"{"label_schema":{"labels":["a","b"]}}"#,
        200,
        Some("workspace=team-a"),
    ),
    (
        "save settings by the deprecated PUT, superuser",
        "root-key",
        "PUT",
        "/api/datasets/TokenClassification/ds/settings?workspace=team-a",
        &[],
        r#"{"label_schema":{"labels":["PER"]}}"#,
        200,
        Some("workspace=team-a"),
    ),
    (
        "read settings, non-superuser",
        "alice-key",
        "GET",
        "/api/datasets/ds/TextClassification/settings",
        &[("x-argilla-workspace", "team-a")],
        "",
        200,
        Some("workspace=team-a"),
    ),
    (
        "unknown route under /api/datasets, non-superuser",
        "alice-key",
        "POST",
        "/api/datasets/ds/TextClassification:export",
        &[("x-argilla-workspace", "team-a")],
        "{}",
        403,
        None,
    ),
    (
        "v1 non-superuser",
        "alice-key",
        "GET",
        "/api/v1/me/datasets",
        &[],
        "",
        403,
        None,
    ),
    (
        "v1 superuser",
        "root-key",
        "GET",
        "/api/v1/me/datasets",
        &[],
        "",
        200,
        None,
    ),
    (
        "unknown api route, named workspace",
        "alice-key",
        "GET",
        "/api/workspaces",
        &[("x-argilla-workspace", "team-b")],
        "",
        404,
        None,
    ),
    (
        "unknown api route, non-superuser (service mode: it would reach the upstream as a superuser)",
        "alice-key",
        "POST",
        "/api/users",
        &[],
        r#"{"username": "mallory"}"#,
        403,
        None,
    ),
    (
        "unknown api route, non-superuser, GET",
        "bob-key",
        "GET",
        "/api/workspaces",
        &[],
        "",
        403,
        None,
    ),
    (
        "unknown api route, superuser",
        "root-key",
        "GET",
        "/api/workspaces",
        &[],
        "",
        200,
        None,
    ),
    (
        "_status, non-superuser",
        "bob-key",
        "GET",
        "/api/_status",
        &[],
        "",
        200,
        None,
    ),
    (
        "dot segments",
        "alice-key",
        "GET",
        "/api/datasets/../me",
        &[],
        "",
        400,
        None,
    ),
];

#[tokio::test]
async fn workspace_table() {
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(&upstream).await;
    for &(case, key, method, path, headers, body, status, query) in ROWS {
        upstream.clear();
        let mut all = vec![("x-argilla-api-key", key)];
        all.extend_from_slice(headers);
        let reply = send(method, &gateway.url(path), &all, body.as_bytes().to_vec()).await;
        assert_eq!(
            reply.status,
            status,
            "{case}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        let seen = upstream.requests();
        if status == 200 {
            assert_eq!(seen.len(), 1, "{case}");
            let got = &seen[0];
            assert_eq!(got.query.as_deref(), query, "{case}");
            assert!(
                got.header("x-argilla-workspace").is_none(),
                "{case}: workspace header forwarded"
            );
            assert!(
                got.header("x-rubrix-workspace").is_none(),
                "{case}: workspace header forwarded"
            );
            assert_eq!(
                got.body,
                body.as_bytes(),
                "{case}: body forwarded unchanged"
            );
        } else {
            assert!(seen.is_empty(), "{case}: upstream was called: {seen:?}");
            let code = reply.error_code();
            let expected = match status {
                400 => "BadRequestError",
                403 => "ForbiddenOperationError",
                404 => "EntityNotFoundError",
                422 => "ValidationError",
                _ => unreachable!(),
            };
            assert_eq!(code, expected, "{case}");
            if status == 404 {
                assert_eq!(
                    reply.json()["detail"]["params"]["type"],
                    "Workspace",
                    "{case}"
                );
            }
        }
    }
}

async fn listed(gateway: &Gateway, key: &str, path: &str) -> Vec<String> {
    let reply = get(&gateway.url(path), &[("x-argilla-api-key", key)]).await;
    assert_eq!(reply.status, 200);
    let length: usize = reply.header("content-length").unwrap().parse().unwrap();
    assert_eq!(length, reply.body.len(), "content-length recomputed");
    reply
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn dataset_list_is_filtered_to_the_users_workspaces() {
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(&upstream).await;
    assert_eq!(
        listed(&gateway, "alice-key", "/api/datasets/").await,
        ["a1", "s1", "al"]
    );
    assert_eq!(
        listed(&gateway, "alice-key", "/api/datasets").await,
        ["a1", "s1", "al"]
    );
    assert_eq!(listed(&gateway, "bob-key", "/api/datasets/").await, ["bo"]);
    assert_eq!(
        listed(&gateway, "carol-key", "/api/datasets/").await,
        ["b1"]
    );
    assert_eq!(
        listed(&gateway, "root-key", "/api/datasets/").await.len(),
        6
    );
    for request in upstream.requests() {
        assert_eq!(request.header("accept-encoding"), Some("identity"));
        assert!(request.query.is_none());
    }
}

#[tokio::test]
async fn inspected_bodies_have_a_size_limit() {
    let upstream = Upstream::start().await;
    let gateway = Options::new(&upstream)
        .env("ARGILLA_GATEWAY_MAX_BODY_BYTES", "1024")
        .start()
        .await;
    let body = format!("{{\"name\":\"n\",\"metadata\":\"{}\"}}", "x".repeat(2000));
    let reply = send(
        "POST",
        &gateway.url("/api/datasets"),
        &[("x-argilla-api-key", "alice-key")],
        body,
    )
    .await;
    assert_eq!(reply.status, 413);
    assert!(upstream.requests().is_empty());
    // Routes whose body is not inspected stream any size.
    let big = vec![b'x'; 64 * 1024];
    let reply = send(
        "POST",
        &gateway.url("/api/datasets/ds/TextClassification:bulk"),
        &[("x-argilla-api-key", "alice-key")],
        big,
    )
    .await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn list_errors_pass_through_unfiltered() {
    let upstream = Upstream::with(std::sync::Arc::new(|_| {
        http::Response::builder()
            .status(500)
            .body(argilla_gateway::body::full("{\"detail\":\"boom\"}"))
            .unwrap()
    }))
    .await;
    let gateway = Gateway::start(&upstream).await;
    let reply = get(
        &gateway.url("/api/datasets/"),
        &[("x-argilla-api-key", "alice-key")],
    )
    .await;
    assert_eq!(reply.status, 500);
    assert_eq!(reply.json(), serde_json::json!({"detail": "boom"}));
    let _: Value = reply.json();
}
