//! Credentials in every wrong shape: empty, repeated, two keys in two headers, broken Basic,
//! non-UTF-8, 72+-byte passwords, Argilla's default keys with a users file loaded, and tokens
//! forged with Argilla's default secret `secret`.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{
    common::{self, SERVICE_KEY, basic},
    harness::{Rig, assert_one, req, req_bytes},
};

const DS: &str = "/api/datasets/ds";

fn with(headers: &[(&str, &str)]) -> Vec<u8> {
    req("GET", DS, headers, "")
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The fingerprint the gateway puts in its tokens for a user with this password.
fn fingerprint(password: &str) -> String {
    b64url(&Sha256::digest(common::hash(password).as_bytes())[..16])
}

/// An HS-signed JWT with any header and claims.
fn forge(header: &Value, claims: &Value, key: &[u8]) -> String {
    let signing = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(signing.as_bytes());
    format!("{signing}.{}", b64url(&mac.finalize().into_bytes()))
}

fn far() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600
}

fn bearer(token: &str) -> Vec<u8> {
    with(&[("Authorization", &format!("Bearer {token}"))])
}

fn hs256() -> Value {
    json!({"alg": "HS256", "typ": "JWT"})
}

refused! {
    cred_none: req("GET", DS, &[], "") => 401 "UnauthorizedError";
    cred_empty_argilla_key_is_absent: with(&[("X-Argilla-Api-Key", "")]) => 401 "UnauthorizedError";
    cred_blank_argilla_key_is_absent: with(&[("X-Argilla-Api-Key", "   ")]) => 401 "UnauthorizedError";
    cred_all_three_headers_empty: with(&[("X-Argilla-Api-Key", ""), ("X-Rubrix-Api-Key", ""), ("Authorization", "")]) => 401 "UnauthorizedError";
    cred_repeated_argilla_key_two_users: with(&[("X-Argilla-Api-Key", "alice-key"), ("X-Argilla-Api-Key", "bob-key")]) => 401 "UnauthorizedError";
    cred_repeated_argilla_key_valid_then_wrong: with(&[("X-Argilla-Api-Key", "alice-key"), ("x-argilla-api-key", "nope")]) => 401 "UnauthorizedError";
    cred_repeated_argilla_key_wrong_then_valid: with(&[("X-Argilla-Api-Key", "nope"), ("X-Argilla-Api-Key", "alice-key")]) => 401 "UnauthorizedError";
    cred_repeated_rubrix_key_two_users: with(&[("X-Rubrix-Api-Key", "alice-key"), ("X-Rubrix-Api-Key", "root-key")]) => 401 "UnauthorizedError";
    cred_repeated_authorization_two_bearers: with(&[("Authorization", "Bearer alice-key"), ("Authorization", "Bearer root-key")]) => 401 "UnauthorizedError";
    cred_repeated_authorization_bearer_and_basic: with(&[("Authorization", "Bearer alice-key"), ("Authorization", &basic("root", "root-pw"))]) => 401 "UnauthorizedError";
    cred_comma_joined_keys: with(&[("X-Argilla-Api-Key", "alice-key, root-key")]) => 401 "UnauthorizedError";
    cred_wrong_argilla_never_falls_to_rubrix: with(&[("X-Argilla-Api-Key", "nope"), ("X-Rubrix-Api-Key", "alice-key")]) => 401 "UnauthorizedError";
    cred_wrong_argilla_never_falls_to_bearer: with(&[("X-Argilla-Api-Key", "nope"), ("Authorization", "Bearer alice-key")]) => 401 "UnauthorizedError";
    cred_wrong_rubrix_never_falls_to_basic: with(&[("X-Rubrix-Api-Key", "nope"), ("Authorization", &basic("alice", "alice-pw"))]) => 401 "UnauthorizedError";
    cred_bearer_without_token: with(&[("Authorization", "Bearer")]) => 401 "UnauthorizedError";
    cred_bearer_two_spaces: with(&[("Authorization", "Bearer  alice-key")]) => 401 "UnauthorizedError";
    cred_bearer_tab_separator: with(&[("Authorization", "Bearer\talice-key")]) => 401 "UnauthorizedError";
    cred_bearer_quoted_key: with(&[("Authorization", "Bearer \"alice-key\"")]) => 401 "UnauthorizedError";
    cred_basic_without_colon: with(&[("Authorization", &format!("Basic {}", b64(b"alice")))]) => 401 "UnauthorizedError";
    cred_basic_invalid_base64: with(&[("Authorization", "Basic !!not*base64!!")]) => 401 "UnauthorizedError";
    cred_basic_not_utf8: with(&[("Authorization", &format!("Basic {}", b64(b"al\xffice:alice-pw")))]) => 401 "UnauthorizedError";
    cred_basic_empty_username: with(&[("Authorization", &format!("Basic {}", b64(b":alice-pw")))]) => 401 "UnauthorizedError";
    cred_basic_username_with_colon: with(&[("Authorization", &format!("Basic {}", b64(b"alice:x:alice-pw")))]) => 401 "UnauthorizedError";
    cred_basic_scheme_only: with(&[("Authorization", "Basic")]) => 401 "UnauthorizedError";
    cred_basic_key_as_username: with(&[("Authorization", &basic("alice-key", ""))]) => 401 "UnauthorizedError";
    cred_basic_huge_password: with(&[("Authorization", &basic("alice", &"x".repeat(40_000)))]) => 401 "UnauthorizedError";
    cred_rubrix_apikey_in_argilla_header: with(&[("X-Argilla-Api-Key", "rubrix.apikey")]) => 401 "UnauthorizedError";
    cred_rubrix_apikey_in_rubrix_header: with(&[("X-Rubrix-Api-Key", "rubrix.apikey")]) => 401 "UnauthorizedError";
    cred_rubrix_apikey_as_bearer: with(&[("Authorization", "Bearer rubrix.apikey")]) => 401 "UnauthorizedError";
    cred_default_key_with_users_file: with(&[("X-Argilla-Api-Key", "argilla.apikey")]) => 401 "UnauthorizedError";
    cred_default_basic_with_users_file: with(&[("Authorization", &basic("argilla", "1234"))]) => 401 "UnauthorizedError";
    cred_default_login_with_users_file: req("POST", "/api/security/token", &[("Content-Type", "application/x-www-form-urlencoded")], "username=argilla&password=1234") => 401 "UnauthorizedError";
    cred_service_key_from_client: with(&[("X-Argilla-Api-Key", SERVICE_KEY)]) => 401 "UnauthorizedError";
    cred_proxy_authorization_is_not_a_credential: with(&[("Proxy-Authorization", &basic("root", "root-pw"))]) => 401 "UnauthorizedError";
    cred_cookie_token_is_not_a_credential: with(&[("Cookie", "auth._token.authProvider=Bearer%20alice-key; auth.strategy=authProvider")]) => 401 "UnauthorizedError";
    cred_key_in_query_is_not_a_credential: req("GET", "/api/datasets/ds?api_key=alice-key&x-argilla-api-key=alice-key", &[], "") => 401 "UnauthorizedError";
    cred_key_not_utf8: req_bytes("GET", DS, &[("X-Argilla-Api-Key", "alice-key\u{e9}")], &[]) => 401 "UnauthorizedError";
    cred_unknown_scheme_digest: with(&[("Authorization", "Digest username=\"alice\", response=\"x\"")]) => 401 "UnauthorizedError";
    cred_unknown_scheme_with_key: with(&[("Authorization", "Token alice-key")]) => 401 "UnauthorizedError";
    cred_disabled_user_key: with(&[("X-Argilla-Api-Key", "dave-key")]) => 400 "InactiveUserError";
    cred_disabled_user_rubrix_key: with(&[("X-Rubrix-Api-Key", "dave-key")]) => 400 "InactiveUserError";
    cred_disabled_user_basic: with(&[("Authorization", &basic("dave", "dave-pw"))]) => 400 "InactiveUserError";
    cred_disabled_user_login: req("POST", "/api/security/token", &[("Content-Type", "application/x-www-form-urlencoded")], "username=dave&password=dave-pw") => 400 "InactiveUserError";
    cred_forged_token_default_secret_root: bearer(&forge(&hs256(), &json!({"sub": "root", "exp": far(), "fpr": fingerprint("root-pw")}), b"secret")) => 401 "UnauthorizedError";
    cred_forged_token_default_secret_argilla: bearer(&forge(&hs256(), &json!({"sub": "argilla", "exp": far()}), b"secret")) => 401 "UnauthorizedError";
    cred_forged_token_default_secret_no_exp: bearer(&forge(&hs256(), &json!({"sub": "root", "fpr": fingerprint("root-pw")}), b"secret")) => 401 "UnauthorizedError";
    cred_forged_token_alg_none: bearer(&format!("{}.{}.", b64url(br#"{"alg":"none","typ":"JWT"}"#), b64url(json!({"sub": "root", "exp": far(), "fpr": fingerprint("root-pw")}).to_string().as_bytes()))) => 401 "UnauthorizedError";
    cred_token_hs512_with_real_secret: bearer(&{
        // HS512 is signed like HS256 here only by name: the gateway must insist on HS256.
        let header = json!({"alg": "HS512", "typ": "JWT"});
        forge(&header, &json!({"sub": "root", "exp": far(), "fpr": fingerprint("root-pw")}), crate::TEST_SECRET.as_bytes())
    }) => 401 "UnauthorizedError";
    cred_token_expired_with_real_secret: bearer(&forge(&hs256(), &json!({"sub": "root", "exp": 1_000_000_000, "fpr": fingerprint("root-pw")}), crate::TEST_SECRET.as_bytes())) => 401 "UnauthorizedError";
    cred_token_without_exp_with_real_secret: bearer(&forge(&hs256(), &json!({"sub": "root", "fpr": fingerprint("root-pw")}), crate::TEST_SECRET.as_bytes())) => 401 "UnauthorizedError";
    cred_token_wrong_fingerprint_with_real_secret: bearer(&forge(&hs256(), &json!({"sub": "root", "exp": far(), "fpr": "AAAAAAAAAAAAAAAAAAAAAA"}), crate::TEST_SECRET.as_bytes())) => 401 "UnauthorizedError";
    cred_token_for_unknown_user_with_real_secret: bearer(&forge(&hs256(), &json!({"sub": "mallory", "exp": far(), "fpr": fingerprint("root-pw")}), crate::TEST_SECRET.as_bytes())) => 401 "UnauthorizedError";
    cred_login_json_body: req("POST", "/api/security/token", &[("Content-Type", "application/json")], r#"{"username":"alice","password":"alice-pw"}"#) => 422 "ValidationError";
    cred_login_duplicate_username_last_wins: req("POST", "/api/security/token", &[("Content-Type", "application/x-www-form-urlencoded")], "username=alice&username=root&password=alice-pw") => 401 "UnauthorizedError";
}

forwarded! {
    cred_two_keys_in_two_headers_first_decides: with(&[("X-Rubrix-Api-Key", "root-key"), ("X-Argilla-Api-Key", "alice-key")]) => "/api/datasets/ds", Some("workspace=alice"), "alice";
    cred_valid_key_beside_garbage_bearer: with(&[("X-Argilla-Api-Key", "alice-key"), ("Authorization", "Bearer root-key")]) => "/api/datasets/ds", Some("workspace=alice"), "alice";
    cred_header_name_any_case: with(&[("x-ArGiLlA-aPi-KeY", "alice-key")]) => "/api/datasets/ds", Some("workspace=alice"), "alice";
    cred_repeated_identical_key: with(&[("X-Argilla-Api-Key", "alice-key"), ("X-Argilla-Api-Key", "alice-key")]) => "/api/datasets/ds", Some("workspace=alice"), "alice";
    cred_empty_argilla_then_rubrix: with(&[("X-Argilla-Api-Key", ""), ("X-Rubrix-Api-Key", "bob-key")]) => "/api/datasets/ds", Some("workspace=bob"), "bob";
    cred_bearer_scheme_any_case: with(&[("Authorization", "bEaReR carol-key")]) => "/api/datasets/ds", Some("workspace=carol"), "carol";
    cred_basic_with_proxy_authorization_stripped: with(&[("Authorization", &basic("alice", "alice-pw")), ("Proxy-Authorization", &basic("root", "root-pw"))]) => "/api/datasets/ds", Some("workspace=alice"), "alice";
}

/// A password longer than bcrypt's 72 bytes: another password with the same first 72 bytes
/// must not open the account.
#[tokio::test]
async fn cred_basic_72_byte_prefix_collision() {
    let long = format!("{}-tail-one", "p".repeat(72));
    let hash = bcrypt::hash(&long, 4).unwrap();
    let yaml = common::UsersFile::standard()
        .with(common::Entry::new("long").hashed(hash))
        .yaml();
    let rig = Rig::with(|mut o| {
        o.users_yaml = Some(yaml);
        o
    })
    .await;
    let twin = format!("{}-tail-two", "p".repeat(72));
    let reply = rig
        .raw(with(&[("Authorization", &basic("long", &twin))]))
        .await;
    reply.assert_error(401, "UnauthorizedError");
    rig.up.assert_nothing();
}

/// A gateway token is a Bearer credential only: in a key header it is an unknown key.
#[tokio::test]
async fn cred_gateway_token_in_key_header() {
    let rig = Rig::start().await;
    let login = rig
        .raw(req(
            "POST",
            "/api/security/token",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            "username=alice&password=alice-pw",
        ))
        .await;
    assert_eq!(login.status(), 200, "{}", login.text());
    let token = login.json()["access_token"].as_str().unwrap().to_owned();
    let reply = rig.raw(with(&[("X-Argilla-Api-Key", &token)])).await;
    reply.assert_error(401, "UnauthorizedError");
    rig.up.assert_nothing();

    // As Bearer it works, and the token itself never reaches the upstream.
    let reply = rig.raw(bearer(&token)).await;
    assert_eq!(reply.status(), 200, "{}", reply.text());
    let rec = assert_one(&rig.up, DS, Some("workspace=alice"), "alice");
    for (name, value) in &rec.headers {
        assert!(
            !String::from_utf8_lossy(value.as_bytes()).contains(&token),
            "the gateway token reached the upstream in {name}"
        );
    }
}

/// Passthrough mode: the upstream hears the user's own key, once, whatever else was sent.
#[tokio::test]
async fn cred_passthrough_forwards_only_the_users_own_key() {
    let rig = Rig::with(|o| o.env("ARGILLA_GATEWAY_UPSTREAM_MODE", "passthrough")).await;
    let reply = rig
        .raw(with(&[
            ("Authorization", &basic("alice", "alice-pw")),
            ("X-Rubrix-Api-Key", "root-key"),
        ]))
        .await;
    // The Authorization header decides only when no key header is present: here the rubrix key
    // is present, so it decides (root).
    assert_eq!(reply.status(), 200, "{}", reply.text());
    let rec = rig.up.only();
    assert_eq!(rec.all("x-argilla-api-key"), ["root-key"], "{rec:#?}");
    assert!(rec.all("x-rubrix-api-key").is_empty(), "{rec:#?}");
    assert!(rec.all("authorization").is_empty(), "{rec:#?}");
    assert_eq!(rec.all("x-forwarded-user"), ["root"], "{rec:#?}");

    rig.up.clear();
    let reply = rig
        .raw(with(&[
            ("X-Argilla-Api-Key", "alice-key"),
            ("X-Forwarded-User", "root"),
        ]))
        .await;
    assert_eq!(reply.status(), 200, "{}", reply.text());
    let rec = rig.up.only();
    assert_eq!(rec.all("x-argilla-api-key"), ["alice-key"], "{rec:#?}");
    assert_eq!(rec.all("x-forwarded-user"), ["alice"], "{rec:#?}");
}

/// A login body over the limit is refused before it is read whole.
#[tokio::test]
async fn cred_login_body_over_limit() {
    let rig = Rig::with(|o| o.env("ARGILLA_GATEWAY_MAX_BODY_BYTES", "1024")).await;
    let body = format!("username=alice&password={}", "x".repeat(4096));
    let reply = rig
        .raw(req(
            "POST",
            "/api/security/token",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            &body,
        ))
        .await;
    reply.assert_error(413, "BadRequestError");
    rig.up.assert_nothing();
}

/// `/api/me` with a spoofed identity header answers for the credential, not the header.
#[tokio::test]
async fn cred_me_ignores_spoofed_identity() {
    let rig = Rig::start().await;
    let reply = rig
        .raw(req(
            "GET",
            "/api/me",
            &[
                ("X-Argilla-Api-Key", "alice-key"),
                ("X-Forwarded-User", "root"),
                ("X-Remote-User", "root"),
            ],
            "",
        ))
        .await;
    assert_eq!(reply.status(), 200);
    let me = reply.json();
    assert_eq!(me["username"], "alice", "{me}");
    assert_eq!(me["superuser"], false, "{me}");
    let text = reply.text();
    assert!(
        !text.contains("alice-key") && !text.contains("$2"),
        "/api/me leaks a secret: {text}"
    );
    rig.up.assert_nothing();
    // The same spoofed headers without a credential are refused.
    let reply = rig
        .raw(req("GET", "/api/me", &[("X-Forwarded-User", "root")], ""))
        .await;
    reply.assert_error(401, "UnauthorizedError");
}
