//! Paths: `%2F`, `%2e%2e`, `//`, case variants, `;` parameters, absolute-form and authority-form
//! targets, overlong paths, and paths that look public but lead elsewhere.

use crate::harness::{Rig, alice_get, req};

fn anon(target: &str) -> Vec<u8> {
    req("GET", target, &[], "")
}

refused! {
    path_dot_dot_after_docs: anon("/api/docs/../datasets") => 400 "BadRequestError";
    path_encoded_dot_dot_after_docs: anon("/api/docs/%2e%2e/datasets") => 400 "BadRequestError";
    path_encoded_dot_dot_upper_case: anon("/api/docs/%2E%2E/datasets") => 400 "BadRequestError";
    path_half_encoded_dot_dot: anon("/api/docs/.%2e/datasets") => 400 "BadRequestError";
    path_info_dot_dot_encoded_slash: anon("/api/_info/..%2Fdatasets") => 400 "BadRequestError";
    path_docs_encoded_slashes_dot_dot: anon("/api/docs%2f..%2fdatasets") => 400 "BadRequestError";
    path_single_dot_segment: anon("/api/./datasets/ds") => 400 "BadRequestError";
    path_encoded_single_dot_segment: anon("/api/%2e/datasets/ds") => 400 "BadRequestError";
    path_static_dot_dot_into_api: anon("/static/../api/datasets") => 400 "BadRequestError";
    path_encoded_backslash_dot_dot: anon("/api/docs%5c..%5cdatasets") => 400 "BadRequestError";
    path_dot_dot_to_me_with_key: alice_get("/api/datasets/x/../../me") => 400 "BadRequestError";
    path_trailing_dot_dot: alice_get("/api/datasets/..") => 400 "BadRequestError";
    path_encoded_nul: alice_get("/api/datasets/ds%00") => 400 "BadRequestError";
    path_encoded_crlf_header_injection: alice_get("/api/datasets/ds%0d%0aX-Argilla-Api-Key:%20root-key") => 400 "BadRequestError";
    path_not_utf8: alice_get("/api/datasets/%ff") => 400 "BadRequestError";
    /// Raw bytes past ASCII: uvicorn would answer a plain-text 400 of its own.
    path_raw_non_ascii_bytes: alice_get("/api/datasets/caf\u{e9}") => 400 "BadRequestError";
    path_raw_non_ascii_bytes_in_query: alice_get("/api/datasets/ds?q=caf\u{e9}") => 400 "BadRequestError";
    path_raw_non_ascii_bytes_on_a_public_route: anon("/static/caf\u{e9}.js") => 400 "BadRequestError";
    path_overlong_utf8_dots: anon("/api/docs/%c0%ae%c0%ae/datasets") => 400 "BadRequestError";
    path_encoded_docs_then_dot_dot: anon("/api/%64ocs/../datasets") => 400 "BadRequestError";
    /// Tomcat and Spring read `..;` as `..`: a proxy in front of such a server must not call it
    /// a harmless name (the reference: "normalise or reject `;` in paths").
    path_tomcat_dot_dot_semicolon: anon("/api/docs/..;/datasets") => 400 "BadRequestError";
    path_encoded_api_prefix_needs_auth: anon("/%61pi/datasets/ds") => 401 "UnauthorizedError";
    path_encoded_me_segment_needs_auth: anon("/api/m%65") => 401 "UnauthorizedError";
    path_api_upper_me_needs_auth: anon("/api/ME") => 401 "UnauthorizedError";
    path_datasets_case_variant_needs_auth: anon("/api/Datasets") => 401 "UnauthorizedError";
    path_docs_lookalike_needs_auth: anon("/api/docs-internal") => 401 "UnauthorizedError";
    path_info_lookalike_needs_auth: anon("/api/_infox") => 401 "UnauthorizedError";
    path_info_semicolon_needs_auth: anon("/api/_info;/datasets") => 401 "UnauthorizedError";
    path_status_needs_auth: anon("/api/_status") => 401 "UnauthorizedError";
    // Not a route of Argilla 1.5 the gateway knows: in service mode it would reach the upstream
    // as a superuser.
    path_me_trailing_slash_is_not_forwarded_for_a_user: alice_get("/api/me/") => 403 "ForbiddenOperationError";
    path_newer_upstream_users_route_is_not_forwarded_for_a_user: alice_get("/api/users") => 403 "ForbiddenOperationError";
    path_login_get_needs_auth: anon("/api/security/token") => 401 "UnauthorizedError";
    path_v1_for_non_superuser: alice_get("/api/v1/me/datasets") => 403 "ForbiddenOperationError";
    path_v1_encoded_for_non_superuser: alice_get("/api/v%31/me/datasets") => 403 "ForbiddenOperationError";
    path_encoded_dataset_delete: req("DELETE", "/api/datasets/d%73", &[("X-Argilla-Api-Key", "alice-key")], "") => 403 "ForbiddenOperationError";
    /// Superuser-only routes stay superuser-only in their trailing-slash spelling.
    path_delete_dataset_trailing_slash: req("DELETE", "/api/datasets/ds/", &[("X-Argilla-Api-Key", "alice-key")], "") => 403 "ForbiddenOperationError";
    path_absolute_form_dot_dot: req("GET", "http://gw/api/docs/../datasets", &[], "") => 400 "BadRequestError";
}

forwarded! {
    path_encoded_slash_in_dataset_route: alice_get("/api/datasets%2Fds") => "/api/datasets%2Fds", Some("workspace=alice"), "alice";
    path_encoded_question_mark_is_not_a_query: alice_get("/api/datasets/ds%3Fworkspace=team-b") => "/api/datasets/ds%3Fworkspace=team-b", Some("workspace=alice"), "alice";
    path_encoded_hash_is_not_a_fragment: alice_get("/api/datasets/ds%23workspace=team-b") => "/api/datasets/ds%23workspace=team-b", Some("workspace=alice"), "alice";
    path_double_encoded_dots_stay_a_name: alice_get("/api/datasets/%252e%252e") => "/api/datasets/%252e%252e", Some("workspace=alice"), "alice";
    path_absolute_form_uses_our_upstream: req("GET", "http://evil.example/api/datasets/ds", &[("X-Argilla-Api-Key", "alice-key")], "") => "/api/datasets/ds", Some("workspace=alice"), "alice";
}

malformed! {
    path_overlong_request_line: alice_get(&format!("/api/datasets/{}", "a".repeat(70_000))) => [400, 414, 431];
    path_raw_control_character: b"GET /api/datasets/d\x01s HTTP/1.1\r\nHost: gw\r\nX-Argilla-Api-Key: alice-key\r\n\r\n".to_vec() => [400];
    path_raw_space_in_target: b"GET /api/docs /../datasets HTTP/1.1\r\nHost: gw\r\n\r\n".to_vec() => [400];
    path_connect_authority_form: b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n".to_vec() => [400, 401, 403, 405];
    path_absolute_form_with_userinfo: req("GET", "http://root:root-pw@gw/api/datasets/ds", &[], "") => [400, 401];
}

/// `/api/m%65` is `/api/me` to the upstream, so it is answered here, never forwarded.
#[tokio::test]
async fn path_encoded_me_is_answered_here() {
    let rig = Rig::start().await;
    let reply = rig.raw(alice_get("/api/m%65")).await;
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.json()["username"], "alice");
    rig.up.assert_nothing();
}

/// A case-variant `/API/...` is not Argilla's API (paths are case-sensitive there): it may go to
/// the web app, but only anonymously.
#[tokio::test]
async fn path_upper_case_api_is_anonymous() {
    let rig = Rig::start().await;
    let reply = rig
        .raw(req(
            "GET",
            "/API/datasets",
            &[("X-Argilla-Api-Key", "root-key")],
            "",
        ))
        .await;
    assert_eq!(reply.status(), 200);
    let rec = rig.up.only();
    assert_eq!(rec.path, "/API/datasets");
    crate::harness::assert_anonymous(&rec);
}

/// `//api/datasets` is `/api/datasets` to anything that merges slashes (nginx does by default):
/// it must never reach the upstream without authentication.
#[tokio::test]
async fn path_double_slash_prefix_is_not_public() {
    let rig = Rig::start().await;
    let reply = rig.raw(anon("//api/datasets")).await;
    reply.assert_refused(&[400, 401, 404]);
    rig.up.assert_nothing();
}

/// An empty segment inside `/api/` must not smuggle a request past the route table: if it is
/// forwarded at all, it carries the user's checked workspace like the route it imitates.
#[tokio::test]
async fn path_double_slash_inside_api() {
    let rig = Rig::start().await;
    for target in [
        "/api//datasets/ds",
        "/api/datasets//ds",
        "/api//v1/me/datasets",
    ] {
        rig.up.clear();
        let reply = rig.raw(alice_get(target)).await;
        match reply.status() {
            400 | 403 | 404 => rig.up.assert_nothing(),
            200 => {
                let rec = rig.up.only();
                assert_eq!(
                    rec.workspace_params(),
                    ["workspace=alice"],
                    "{target} forwarded without the checked workspace: {rec:#?}"
                );
            }
            other => panic!("{target}: unexpected {other}"),
        }
    }
}

/// `;` path parameters never change the workspace the upstream hears.
#[tokio::test]
async fn path_semicolon_parameter_on_dataset() {
    let rig = Rig::start().await;
    let reply = rig
        .raw(alice_get("/api/datasets/ds;workspace=team-b"))
        .await;
    match reply.status() {
        400 => rig.up.assert_nothing(),
        200 => {
            let rec = rig.up.only();
            assert_eq!(rec.query.as_deref(), Some("workspace=alice"), "{rec:#?}");
        }
        other => panic!("unexpected {other}"),
    }
}

/// An absolute-form target naming another port is not a way to reach another service: the
/// request goes to the configured upstream, with the configured authority.
#[tokio::test]
async fn path_absolute_form_is_not_ssrf() {
    let rig = Rig::start().await;
    let reply = rig
        .raw(req("GET", "http://127.0.0.1:1/api/_info", &[], ""))
        .await;
    assert_eq!(reply.status(), 200);
    let rec = rig.up.only();
    assert_eq!(rec.path, "/api/_info");
    assert_eq!(rec.all("host"), [rig.up.addr.to_string()]);
}

/// A long but legal path arrives byte for byte.
#[tokio::test]
async fn path_long_name_arrives_intact() {
    let rig = Rig::start().await;
    let target = format!("/api/datasets/{}", "n".repeat(8000));
    let reply = rig.raw(alice_get(&target)).await;
    assert_eq!(reply.status(), 200);
    let rec = rig.up.only();
    assert_eq!(rec.path, target);
    assert_eq!(rec.query.as_deref(), Some("workspace=alice"));
}

/// A fragment in the request target cannot hide a dot segment.
#[tokio::test]
async fn path_fragment_cannot_hide_dot_segments() {
    let rig = Rig::start().await;
    let reply = rig.raw(alice_get("/api/datasets/ds#/../../me")).await;
    match reply.status {
        None | Some(400) => rig.up.assert_nothing(),
        Some(200) => {
            let rec = rig.up.only();
            assert!(!rec.path.contains(".."), "{rec:#?}");
            assert_eq!(rec.query.as_deref(), Some("workspace=alice"));
        }
        Some(other) => panic!("unexpected {other}"),
    }
}
