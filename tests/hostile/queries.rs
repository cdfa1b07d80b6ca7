//! Queries, workspace headers and inspected bodies: every way to name a workspace twice, in
//! disguise, or in a place the policy might not look, and very many parameters.

use std::sync::Arc;

use http::Response;

use crate::{
    common::basic,
    harness::{Recorder, Rig, alice_get, assert_one, options, req, req_bytes},
};

fn alice_with(target: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut all = vec![("X-Argilla-Api-Key", "alice-key")];
    all.extend_from_slice(headers);
    req("GET", target, &all, "")
}

fn alice_post(method: &str, target: &str, content_type: &str, body: &str) -> Vec<u8> {
    req(
        method,
        target,
        &[
            ("X-Argilla-Api-Key", "alice-key"),
            ("Content-Type", content_type),
        ],
        body,
    )
}

const JSON: &str = "application/json";

fn many(param: &str, n: usize) -> String {
    (0..n)
        .map(|i| ["p", &i.to_string(), "=", param, "&"].concat())
        .collect()
}

refused! {
    q_two_different_workspaces: alice_get("/api/datasets/ds?workspace=team-a&workspace=shared") => 400 "BadRequestError";
    q_allowed_then_forbidden: alice_get("/api/datasets/ds?workspace=team-a&workspace=team-b") => 400 "BadRequestError";
    q_forbidden_then_empty: alice_get("/api/datasets/ds?workspace=team-b&workspace=") => 404 "EntityNotFoundError";
    q_forbidden: alice_get("/api/datasets/ds?workspace=team-b") => 404 "EntityNotFoundError";
    q_unknown_workspace: alice_get("/api/datasets/ds?workspace=nowhere") => 404 "EntityNotFoundError";
    q_semicolon_separator: alice_get("/api/datasets/ds?workspace=team-a;workspace=team-b") => 400 "BadRequestError";
    q_semicolon_elsewhere: alice_get("/api/datasets/ds?a=1;workspace=team-b") => 400 "BadRequestError";
    q_encoded_semicolon_in_value: alice_get("/api/datasets/ds?workspace=team-a%3Bworkspace%3Dteam-b") => 400 "BadRequestError";
    q_encoded_name_forbidden: alice_get("/api/datasets/ds?work%73pace=team-b") => 404 "EntityNotFoundError";
    q_fully_encoded_name_forbidden: alice_get("/api/datasets/ds?%77%6F%72%6B%73%70%61%63%65=team-b") => 404 "EntityNotFoundError";
    q_encoded_name_beside_plain: alice_get("/api/datasets/ds?workspace=team-a&work%73pace=team-b") => 400 "BadRequestError";
    q_encoded_value_forbidden: alice_get("/api/datasets/ds?workspace=team%2Db") => 404 "EntityNotFoundError";
    q_plus_in_value: alice_get("/api/datasets/ds?workspace=team+a") => 400 "BadRequestError";
    q_encoded_slash_in_value: alice_get("/api/datasets/ds?workspace=team-a%2F..%2Fteam-b") => 400 "BadRequestError";
    q_dot_dot_value: alice_get("/api/datasets/ds?workspace=../team-b") => 400 "BadRequestError";
    q_nul_in_value: alice_get("/api/datasets/ds?workspace=team-a%00") => 400 "BadRequestError";
    q_cyrillic_lookalike: alice_get("/api/datasets/ds?workspace=te%D0%B0m-a") => 400 "BadRequestError";
    q_fullwidth_letter: alice_get("/api/datasets/ds?workspace=%EF%BD%94eam-a") => 400 "BadRequestError";
    q_invalid_utf8_value: alice_get("/api/datasets/ds?workspace=%C0%AE") => 400 "BadRequestError";
    q_leading_dash: alice_get("/api/datasets/ds?workspace=-team-a") => 400 "BadRequestError";
    q_argilla_header_forbidden: alice_with("/api/datasets/ds", &[("X-Argilla-Workspace", "team-b")]) => 404 "EntityNotFoundError";
    q_rubrix_header_forbidden: alice_with("/api/datasets/ds", &[("X-Rubrix-Workspace", "team-b")]) => 404 "EntityNotFoundError";
    q_header_repeated_different: alice_with("/api/datasets/ds", &[("X-Argilla-Workspace", "team-a"), ("X-Argilla-Workspace", "team-b")]) => 400 "BadRequestError";
    q_header_repeated_case_variant: alice_with("/api/datasets/ds", &[("X-Argilla-Workspace", "team-a"), ("x-argilla-workspace", "shared")]) => 400 "BadRequestError";
    q_header_folded_list: alice_with("/api/datasets/ds", &[("X-Argilla-Workspace", "team-a, team-b")]) => 400 "BadRequestError";
    q_header_with_space: alice_with("/api/datasets/ds", &[("X-Argilla-Workspace", "team a")]) => 400 "BadRequestError";
    q_empty_query_falls_to_forbidden_header: alice_with("/api/datasets/ds?workspace=", &[("X-Argilla-Workspace", "team-b")]) => 404 "EntityNotFoundError";
    q_list_forbidden: alice_get("/api/datasets?workspace=team-b") => 404 "EntityNotFoundError";
    q_superuser_unknown_workspace: req("GET", "/api/datasets/ds?workspace=nowhere", &[("X-Argilla-Api-Key", "root-key")], "") => 404 "EntityNotFoundError";
    q_many_params_then_forbidden: alice_get(&format!("/api/datasets/ds?{}workspace=team-b", many("1", 3000))) => 404 "EntityNotFoundError";
    q_many_same_then_one_different: alice_get(&format!("/api/datasets/ds?{}workspace=shared", "workspace=team-a&".repeat(1000))) => 400 "BadRequestError";
    q_create_body_forbidden: alice_post("POST", "/api/datasets", JSON, r#"{"name":"x","workspace":"team-b"}"#) => 404 "EntityNotFoundError";
    q_create_body_beats_allowed_query: alice_post("POST", "/api/datasets?workspace=team-a", JSON, r#"{"name":"x","workspace":"team-b"}"#) => 404 "EntityNotFoundError";
    q_create_body_duplicate_keys_last_wins: alice_post("POST", "/api/datasets", JSON, r#"{"name":"x","workspace":"team-a","workspace":"team-b"}"#) => 404 "EntityNotFoundError";
    q_create_body_unicode_escape: alice_post("POST", "/api/datasets", JSON, r#"{"name":"x","workspace":"te\u0061m-b"}"#) => 404 "EntityNotFoundError";
    q_create_body_text_plain_still_read: alice_post("POST", "/api/datasets/", "text/plain", r#"{"name":"x","workspace":"team-b"}"#) => 404 "EntityNotFoundError";
    q_create_body_without_content_type: req("POST", "/api/datasets", &[("X-Argilla-Api-Key", "alice-key")], r#"{"name":"x","workspace":"team-b"}"#) => 404 "EntityNotFoundError";
    q_create_body_not_json: alice_post("POST", "/api/datasets", JSON, "name=x&workspace=team-b") => 422 "ValidationError";
    q_create_body_workspace_not_a_string: alice_post("POST", "/api/datasets", JSON, r#"{"name":"x","workspace":["team-a","team-b"]}"#) => 422 "ValidationError";
    q_create_body_gzip_is_not_json: req_bytes("POST", "/api/datasets", &[("X-Argilla-Api-Key", "alice-key"), ("Content-Type", JSON), ("Content-Encoding", "gzip")], b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xab\xae\x05\x00\x43\xbf\xa6\xa3\x02\x00\x00\x00") => 422 "ValidationError";
    q_create_body_chunked_forbidden: {
        let body = r#"{"name":"x","workspace":"team-b"}"#;
        format!("POST /api/datasets HTTP/1.1\r\nHost: gw\r\nX-Argilla-Api-Key: alice-key\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n", &body[..5], body.len() - 5, &body[5..]).into_bytes()
    } => 404 "EntityNotFoundError";
    q_copy_target_forbidden: alice_post("PUT", "/api/datasets/ds:copy", JSON, r#"{"name":"y","target_workspace":"team-b"}"#) => 404 "EntityNotFoundError";
    q_copy_encoded_colon_target_forbidden: alice_post("PUT", "/api/datasets/ds%3Acopy", JSON, r#"{"name":"y","target_workspace":"team-b"}"#) => 404 "EntityNotFoundError";
    q_copy_source_forbidden: alice_post("PUT", "/api/datasets/ds:copy?workspace=team-b", JSON, r#"{"name":"y","target_workspace":"team-a"}"#) => 404 "EntityNotFoundError";
    q_delete_dataset_by_user: req("DELETE", "/api/datasets/ds?workspace=team-a", &[("X-Argilla-Api-Key", "alice-key")], "") => 403 "ForbiddenOperationError";
    q_hard_delete_last_value_false: req("DELETE", "/api/datasets/ds/data?mark_as_discarded=true&mark_as_discarded=false", &[("X-Argilla-Api-Key", "alice-key")], "") => 403 "ForbiddenOperationError";
    q_settings_delete_by_user: req("DELETE", "/api/datasets/ds/TextClassification/settings", &[("Authorization", &basic("alice", "alice-pw"))], "") => 403 "ForbiddenOperationError";
    q_settings_save_by_user: alice_post("PATCH", "/api/datasets/ds/TextClassification/settings?workspace=team-a", JSON, r#"{"label_schema":{"labels":["a"]}}"#) => 403 "ForbiddenOperationError";
    q_settings_save_deprecated_put_by_user: alice_post("PUT", "/api/datasets/TokenClassification/ds/settings", JSON, r#"{"label_schema":{"labels":["PER"]}}"#) => 403 "ForbiddenOperationError";
    q_settings_save_encoded_path: alice_post("PATCH", "/api/datasets/ds/Text%43lassification/setting%73", JSON, r#"{"label_schema":{"labels":["a"]}}"#) => 403 "ForbiddenOperationError";
    q_settings_save_trailing_slash: alice_post("PATCH", "/api/datasets/ds/TokenClassification/settings/", JSON, r#"{"label_schema":{"labels":["a"]}}"#) => 403 "ForbiddenOperationError";
    q_settings_save_other_method_spelling: alice_post("patch", "/api/datasets/ds/TextClassification/settings", JSON, r#"{"label_schema":{"labels":["a"]}}"#) => 403 "ForbiddenOperationError";
    q_unknown_dataset_route_by_user: alice_post("POST", "/api/datasets/ds/TextClassification:export", JSON, "{}") => 403 "ForbiddenOperationError";
}

/// (name, request, query the upstream must see)
#[tokio::test]
async fn q_rewrites_to_one_canonical_workspace() {
    let long = many("x", 3000);
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        (
            "encoded value",
            alice_get("/api/datasets/ds?workspace=%74eam-a"),
            "workspace=team-a".into(),
        ),
        (
            "encoded name alone",
            alice_get("/api/datasets/ds?work%73pace=team-a"),
            "workspace=team-a".into(),
        ),
        (
            "empty then allowed",
            alice_get("/api/datasets/ds?workspace=&workspace=team-a"),
            "workspace=team-a".into(),
        ),
        (
            "bare name means own",
            alice_get("/api/datasets/ds?workspace"),
            "workspace=alice".into(),
        ),
        (
            "case variant name is another parameter",
            alice_get("/api/datasets/ds?Workspace=team-b"),
            "Workspace=team-b&workspace=alice".into(),
        ),
        (
            "other parameters keep order and bytes",
            alice_get("/api/datasets/ds?limit=10&workspace=team-a&from=5&q=a%20b+c"),
            "limit=10&from=5&q=a%20b+c&workspace=team-a".into(),
        ),
        (
            "query beats forbidden header",
            alice_with(
                "/api/datasets/ds?workspace=team-a",
                &[("X-Argilla-Workspace", "team-b")],
            ),
            "workspace=team-a".into(),
        ),
        (
            "argilla header beats rubrix header",
            alice_with(
                "/api/datasets/ds",
                &[
                    ("X-Rubrix-Workspace", "team-b"),
                    ("X-Argilla-Workspace", "team-a"),
                ],
            ),
            "workspace=team-a".into(),
        ),
        (
            "a thousand identical workspaces become one",
            alice_get(&format!(
                "/api/datasets/ds?{}",
                "workspace=team-a&".repeat(1000)
            )),
            "workspace=team-a".into(),
        ),
        (
            "three thousand parameters arrive intact",
            alice_get(&format!("/api/datasets/ds?{long}workspace=team-a")),
            format!("{}&workspace=team-a", long.trim_end_matches('&')),
        ),
        (
            "workspace lookalike names are kept, not obeyed",
            alice_get("/api/datasets/ds?workspace%3Dteam-b&workspace[]=team-b&workspace.=team-b"),
            "workspace%3Dteam-b&workspace[]=team-b&workspace.=team-b&workspace=alice".into(),
        ),
    ];
    let rig = Rig::start().await;
    for (name, request, query) in cases {
        rig.up.clear();
        let reply = rig.raw(request).await;
        assert_eq!(reply.status(), 200, "{name}: {}", reply.text());
        let rec = rig.up.only();
        assert_eq!(rec.query.as_deref(), Some(query.as_str()), "{name}");
        assert_eq!(rec.workspace_params().len(), 1, "{name}");
        crate::harness::assert_speaks_for(&rec, "alice");
    }
}

/// Dataset create: an allowed body workspace is the one the upstream hears, and the body
/// arrives byte for byte.
#[tokio::test]
async fn q_create_body_allowed_arrives_intact() {
    let rig = Rig::start().await;
    let body = r#"{"name":"x","workspace":"team-a","tags":{"k":"v"}}"#;
    let reply = rig
        .raw(alice_post(
            "POST",
            "/api/datasets?workspace=shared",
            JSON,
            body,
        ))
        .await;
    assert_eq!(reply.status(), 200, "{}", reply.text());
    let rec = assert_one(&rig.up, "/api/datasets", Some("workspace=team-a"), "alice");
    assert_eq!(rec.body, body.as_bytes());
    assert!(rec.complete);
}

/// An unscoped dataset list is filtered to the user's workspaces and asked for uncompressed.
#[tokio::test]
async fn q_list_without_workspace_is_filtered() {
    let rig = Rig::start().await;
    for target in [
        "/api/datasets",
        "/api/datasets/",
        "/api/datasets/?workspace=",
    ] {
        rig.up.clear();
        let reply = rig
            .raw(alice_with(target, &[("Accept-Encoding", "br, gzip")]))
            .await;
        assert_eq!(reply.status(), 200, "{target}");
        let mut seen: Vec<String> = reply
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["workspace"].as_str().unwrap().to_owned())
            .collect();
        seen.sort();
        assert_eq!(seen, ["alice", "shared", "team-a"], "{target}");
        let rec = rig.up.only();
        assert!(rec.workspace_params().is_empty(), "{target}: {rec:#?}");
        assert_eq!(rec.all("accept-encoding"), ["identity"], "{target}");
    }
}

/// An upstream that compresses a list anyway: the gateway cannot filter it, so it must not pass
/// it on unfiltered.
#[tokio::test]
async fn q_list_compressed_anyway_is_not_passed_on() {
    let up = Recorder::with(Arc::new(|_: &crate::harness::Rec| {
        Response::builder()
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(argilla_gateway::body::full(crate::common::DATASETS))
            .unwrap()
    }))
    .await;
    let gw = options(&up.url()).start().await;
    let reply = crate::harness::exchange(gw.addr, &alice_get("/api/datasets")).await;
    reply.assert_error(502, "GenericServerError");
    assert!(!reply.text().contains("team-b"));
}
