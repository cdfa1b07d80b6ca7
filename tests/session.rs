//! The web app's session: login, gateway tokens, revocation through real reloads of the users
//! file, and brute-force limits.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic on failure, like tests"
)]
#![allow(clippy::too_many_lines, reason = "case tables are long on purpose")]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::{Entry, Gateway, Options, SERVICE_KEY, Upstream, UsersFile, basic, get, send};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

const SECRET: &str = "test-secret-0123456789abcdef";
const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

async fn login(gateway: &Gateway, form: &str) -> common::Reply {
    send(
        "POST",
        &gateway.url("/api/security/token"),
        &[FORM],
        form.to_owned(),
    )
    .await
}

async fn token(gateway: &Gateway, user: &str) -> String {
    let reply = login(gateway, &format!("username={user}&password={user}-pw")).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.json()["token_type"], "bearer");
    reply.json()["access_token"].as_str().unwrap().to_owned()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn forge(header: &Value, claims: &Value, key: &[u8]) -> String {
    let signing = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(signing.as_bytes());
    format!("{signing}.{}", b64(&mac.finalize().into_bytes()))
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

async fn with_token(gateway: &Gateway, path: &str, token: &str) -> common::Reply {
    get(
        &gateway.url(path),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
}

#[tokio::test]
async fn login_token_me_and_forwarded_call() {
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(&upstream).await;
    let token = token(&gateway, "alice").await;
    let claims = claims_of(&token);
    assert_eq!(claims["sub"], "alice");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let exp = claims["exp"].as_u64().unwrap();
    assert!(
        exp > now + 30_000 * 60 - 60 && exp <= now + 30_000 * 60 + 1,
        "Argilla's default lifetime"
    );
    assert!(claims["iat"].is_u64() && claims["fpr"].is_string());

    let me = with_token(&gateway, "/api/me", &token).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["username"], "alice");

    let reply = get(
        &gateway.url("/api/datasets/ds"),
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-argilla-workspace", "team-a"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200);
    let got = upstream.only();
    assert_eq!(got.header("x-argilla-api-key"), Some(SERVICE_KEY));
    assert!(
        got.header("authorization").is_none(),
        "the token never reaches the upstream"
    );
    assert_eq!(got.query.as_deref(), Some("workspace=team-a"));
}

#[tokio::test]
async fn login_answers_in_argilla_shapes() {
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(&upstream).await;
    let cases: &[(&str, &[(&str, &str)], &str, u16, &str)] = &[
        (
            "form with extra oauth fields",
            &[FORM],
            "grant_type=password&username=bob&password=bob-pw&scope=",
            200,
            "",
        ),
        (
            "encoded form values",
            &[FORM],
            "username=bob&password=bob%2Dpw",
            200,
            "",
        ),
        (
            "json body",
            &[("content-type", "application/json")],
            "{\"username\":\"bob\",\"password\":\"bob-pw\"}",
            422,
            "ValidationError",
        ),
        (
            "missing password",
            &[FORM],
            "username=bob",
            422,
            "ValidationError",
        ),
        (
            "missing username",
            &[FORM],
            "password=bob-pw",
            422,
            "ValidationError",
        ),
        (
            "wrong password",
            &[FORM],
            "username=bob&password=nope",
            401,
            "UnauthorizedError",
        ),
        (
            "unknown user",
            &[FORM],
            "username=nobody&password=x",
            401,
            "UnauthorizedError",
        ),
        (
            "disabled user",
            &[FORM],
            "username=dave&password=dave-pw",
            400,
            "InactiveUserError",
        ),
    ];
    for (case, headers, body, status, code) in cases {
        let reply = send(
            "POST",
            &gateway.url("/api/security/token"),
            headers,
            (*body).to_owned(),
        )
        .await;
        assert_eq!(reply.status, *status, "{case}: {:?}", reply.body);
        assert!(
            reply.header("www-authenticate").is_none(),
            "{case}: no browser dialog"
        );
        if code.is_empty() {
            assert!(reply.json()["access_token"].is_string(), "{case}");
        } else {
            assert_eq!(reply.error_code(), *code, "{case}");
        }
    }
    assert!(
        upstream.requests().is_empty(),
        "login is answered by the gateway"
    );
}

#[tokio::test]
async fn bad_tokens_are_refused() {
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(&upstream).await;
    let good = token(&gateway, "alice").await;
    let claims = claims_of(&good);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let hs256 = json!({"alg": "HS256", "typ": "JWT"});
    let with = |patch: Value| {
        let mut c = claims.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let mut tampered: Vec<&str> = good.split('.').collect();
    let other_payload = b64(with(json!({"sub": "root"})).to_string().as_bytes());
    tampered[1] = &other_payload;
    let cases: Vec<(&str, String)> = vec![
        (
            "expired",
            forge(&hs256, &with(json!({"exp": now - 5})), SECRET.as_bytes()),
        ),
        (
            "no exp",
            forge(&hs256, &with(json!({"exp": null})), SECRET.as_bytes()),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(json!({"alg": "none", "typ": "JWT"}).to_string().as_bytes()),
                b64(claims.to_string().as_bytes())
            ),
        ),
        (
            "alg none with signature",
            format!(
                "{}.{}.{}",
                b64(json!({"alg": "none"}).to_string().as_bytes()),
                b64(claims.to_string().as_bytes()),
                good.split('.').nth(2).unwrap()
            ),
        ),
        (
            "HS384",
            forge(
                &json!({"alg": "HS384", "typ": "JWT"}),
                &claims,
                SECRET.as_bytes(),
            ),
        ),
        (
            "argilla's default secret",
            forge(&hs256, &claims, b"secret"),
        ),
        (
            "foreign key",
            forge(&hs256, &claims, b"another-secret-of-some-length"),
        ),
        ("tampered payload", tampered.join(".")),
        (
            "forged superuser sub",
            forge(&hs256, &with(json!({"sub": "root"})), b"secret"),
        ),
        ("garbage", "a.b.c".to_owned()),
    ];
    assert_eq!(
        with_token(
            &gateway,
            "/api/me",
            &forge(&hs256, &claims, SECRET.as_bytes())
        )
        .await
        .status,
        200,
        "forge helper is sound"
    );
    for (case, token) in cases {
        let reply = with_token(&gateway, "/api/me", &token).await;
        assert_eq!(reply.status, 401, "{case}");
        assert_eq!(reply.error_code(), "UnauthorizedError", "{case}");
        let reply = with_token(&gateway, "/api/datasets/ds", &token).await;
        assert_eq!(reply.status, 401, "{case}");
    }
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn tokens_end_with_password_change_removal_and_disable() {
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(&upstream).await;
    let alice = token(&gateway, "alice").await;
    let bob = token(&gateway, "bob").await;
    let carol = token(&gateway, "carol").await;
    // Basic credentials remembered before the change must be forgotten too.
    assert_eq!(
        get(
            &gateway.url("/api/me"),
            &[("authorization", &basic("alice", "alice-pw"))]
        )
        .await
        .status,
        200
    );

    let yaml = UsersFile::standard()
        .change("alice", |alice| alice.password("alice-new"))
        .change("bob", |bob| Entry {
            username: "bobby".into(),
            ..bob
        })
        .change("carol", Entry::disabled)
        .yaml();
    gateway.replace_users(&yaml).await;

    assert_eq!(
        with_token(&gateway, "/api/me", &alice).await.status,
        401,
        "password changed"
    );
    assert_eq!(
        get(
            &gateway.url("/api/me"),
            &[("authorization", &basic("alice", "alice-pw"))]
        )
        .await
        .status,
        401,
        "old password"
    );
    assert_eq!(
        get(
            &gateway.url("/api/me"),
            &[("authorization", &basic("alice", "alice-new"))]
        )
        .await
        .status,
        200,
        "new password"
    );
    assert_eq!(
        with_token(&gateway, "/api/me", &bob).await.status,
        401,
        "user removed"
    );
    let disabled = with_token(&gateway, "/api/me", &carol).await;
    assert_eq!(
        (disabled.status.as_u16(), disabled.error_code().as_str()),
        (400, "InactiveUserError")
    );
    let fresh = login(&gateway, "username=alice&password=alice-new").await;
    assert_eq!(fresh.status, 200);
}

#[tokio::test]
async fn failure_budgets() {
    let upstream = Upstream::start().await;
    let gateway = Options::new(&upstream)
        .env("ARGILLA_GATEWAY_RATE_LIMIT_FAILURES_PER_USERNAME", "3")
        .env("ARGILLA_GATEWAY_RATE_LIMIT_FAILURES_PER_ADDRESS", "8")
        // Long enough that a busy host still spends both budgets before the window ends.
        .env("ARGILLA_GATEWAY_RATE_LIMIT_WINDOW_SECS", "4")
        .start()
        .await;
    for _ in 0..3 {
        assert_eq!(
            login(&gateway, "username=alice&password=wrong")
                .await
                .status,
            401
        );
    }
    let refused = login(&gateway, "username=alice&password=alice-pw").await;
    assert_eq!(
        refused.status, 429,
        "budget of alice spent, even for the right password"
    );
    assert_eq!(refused.error_code(), "TooManyRequestsError");
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=4).contains(&retry));
    let basic_refused = get(
        &gateway.url("/api/me"),
        &[("authorization", &basic("alice", "nope"))],
    )
    .await;
    assert_eq!(
        basic_refused.status, 429,
        "Basic shares the username budget"
    );
    assert_eq!(
        login(&gateway, "username=bob&password=bob-pw").await.status,
        200,
        "another user is unaffected"
    );
    assert_eq!(
        get(&gateway.url("/api/me"), &[("x-argilla-api-key", "bob-key")])
            .await
            .status,
        200
    );

    // The address budget: wrong keys from one address.
    for _ in 0..5 {
        assert_eq!(
            get(&gateway.url("/api/me"), &[("x-argilla-api-key", "guess")])
                .await
                .status,
            401
        );
    }
    let refused = get(&gateway.url("/api/me"), &[("x-argilla-api-key", "guess")]).await;
    assert_eq!(
        refused.status, 429,
        "3 + 5 failures spent the address budget of 8"
    );
    assert_eq!(
        get(&gateway.url("/api/me"), &[("x-argilla-api-key", "bob-key")])
            .await
            .status,
        429,
        "even right keys from that address"
    );

    // Budgets recover when their window ends: asked again until then (a refused attempt
    // counts as no failure), never past it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4) + Duration::from_secs(5);
    let recovered = loop {
        let status = login(&gateway, "username=alice&password=alice-pw")
            .await
            .status;
        if status != 429 || tokio::time::Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(recovered, 200);
    assert_eq!(
        get(&gateway.url("/api/me"), &[("x-argilla-api-key", "bob-key")])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn static_files_stay_public() {
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(&upstream).await;
    for path in ["/login", "/datasets", "/_nuxt/2dbec4c.js", "/favicon.ico"] {
        assert_eq!(get(&gateway.url(path), &[]).await.status, 200, "{path}");
    }
}

#[tokio::test]
async fn budgets_follow_x_forwarded_for_only_from_trusted_proxies() {
    let upstream = Upstream::start().await;
    let trusted = Options::new(&upstream)
        .env("ARGILLA_GATEWAY_TRUSTED_PROXIES", "127.0.0.1")
        .env("ARGILLA_GATEWAY_RATE_LIMIT_FAILURES_PER_ADDRESS", "2")
        .start()
        .await;
    let from = |addr: &'static str, key: &'static str| {
        let url = trusted.url("/api/datasets/ds");
        async move {
            get(
                &url,
                &[("x-forwarded-for", addr), ("x-argilla-api-key", key)],
            )
            .await
            .status
            .as_u16()
        }
    };
    assert_eq!(from("10.0.0.1", "guess").await, 401);
    assert_eq!(from("10.0.0.1", "guess").await, 401);
    assert_eq!(
        from("10.0.0.1", "alice-key").await,
        429,
        "10.0.0.1 spent its budget"
    );
    assert_eq!(
        from("10.0.0.2", "alice-key").await,
        200,
        "another client behind the proxy is unaffected"
    );
    assert_eq!(
        upstream.only().header("x-forwarded-for"),
        Some("10.0.0.2, 127.0.0.1"),
        "the trusted chain is kept and the proxy appended"
    );

    // From an untrusted peer the header is ignored: the budget is the peer's own.
    let untrusted = Options::new(&upstream)
        .env("ARGILLA_GATEWAY_RATE_LIMIT_FAILURES_PER_ADDRESS", "2")
        .start()
        .await;
    let url = untrusted.url("/api/datasets/ds");
    for spoofed in ["10.9.9.1", "10.9.9.2"] {
        assert_eq!(
            get(
                &url,
                &[("x-forwarded-for", spoofed), ("x-argilla-api-key", "guess")]
            )
            .await
            .status,
            401
        );
    }
    let refused = get(
        &url,
        &[
            ("x-forwarded-for", "10.9.9.3"),
            ("x-argilla-api-key", "alice-key"),
        ],
    )
    .await;
    assert_eq!(
        refused.status, 429,
        "rotating X-Forwarded-For does not escape the budget"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_flood_is_refused_at_the_bcrypt_queue_not_queued_forever() {
    let upstream = Upstream::start().await;
    // One bcrypt thread (8 may wait), slow hashes, budgets out of the way.
    let slow = bcrypt::hash("victim-pw", 11).unwrap();
    let yaml = UsersFile::standard()
        .with(Entry::new("victim").hashed(slow))
        .yaml();
    let mut options = Options::new(&upstream)
        .env("ARGILLA_GATEWAY_BCRYPT_CONCURRENCY", "1")
        .env("ARGILLA_GATEWAY_RATE_LIMIT_FAILURES_PER_ADDRESS", "1000000")
        .env(
            "ARGILLA_GATEWAY_RATE_LIMIT_FAILURES_PER_USERNAME",
            "1000000",
        );
    options.users_yaml = Some(yaml);
    let gateway = std::sync::Arc::new(options.start().await);
    let flood: Vec<_> = (0..40)
        .map(|i| {
            let gateway = gateway.clone();
            tokio::spawn(async move {
                let credentials = basic("victim", &format!("guess-{i}"));
                get(
                    &gateway.url("/api/me"),
                    &[("authorization", credentials.as_str())],
                )
                .await
            })
        })
        .collect();
    // Key traffic is answered while the flood is being refused.
    let started = std::time::Instant::now();
    assert_eq!(
        get(
            &gateway.url("/api/datasets/ds"),
            &[("x-argilla-api-key", "alice-key")]
        )
        .await
        .status,
        200
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "key traffic waited {:?}",
        started.elapsed()
    );
    let mut refused = 0;
    let mut wrong = 0;
    for reply in flood {
        let reply = reply.await.unwrap();
        match reply.status.as_u16() {
            429 => {
                refused += 1;
                assert_eq!(reply.header("retry-after"), Some("1"));
            }
            401 => wrong += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        refused >= 20,
        "most of the flood is refused at once: {refused} refused, {wrong} checked"
    );
    assert!(wrong >= 1, "the queue still serves: {wrong} checked");
}

/// `n` concurrent GETs with Basic `user:password`; their statuses.
async fn together(url: &str, user: &str, password: &str, n: usize) -> Vec<u16> {
    let requests: Vec<_> = (0..n)
        .map(|_| {
            let (url, credential) = (url.to_owned(), basic(user, password));
            tokio::spawn(async move { get(&url, &[("authorization", &credential)]).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for request in requests {
        statuses.push(request.await.unwrap().status.as_u16());
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_with_the_same_password_run_bcrypt_once() {
    use std::sync::atomic::Ordering::Relaxed;
    // Cost 10: one check takes long enough for all requests to arrive while it runs.
    let hash = bcrypt::hash("alice-pw", 10).unwrap();
    let upstream = Upstream::start().await;
    let mut options = Options::new(&upstream);
    options.users_yaml = Some(
        UsersFile::new()
            .with(Entry::new("alice").hashed(hash).workspaces(&["team-a"]))
            .yaml(),
    );
    let gateway = options.start().await;
    let url = gateway.url("/api/datasets/a1?workspace=team-a");
    // More than the per-username budget (10): requests that wait for the running check take
    // no place in it, so a client's own burst of first requests is not refused.
    let statuses = together(&url, "alice", "alice-pw", 16).await;
    assert_eq!(statuses, [200; 16]);
    assert_eq!(
        gateway.state.verifier.checks.load(Relaxed),
        1,
        "one bcrypt check for sixteen requests that arrived together"
    );
    assert_eq!(upstream.requests().len(), 16);

    // Wrong guesses coalesce too, and each still counts as a failure: twelve of them spend the
    // budget of ten, so the next guess is refused before bcrypt.
    let statuses = together(&url, "alice", "wrong", 12).await;
    assert_eq!(statuses, [401; 12], "each wrong guess is refused");
    let checks = gateway.state.verifier.checks.load(Relaxed);
    assert!(
        checks < 12,
        "coalesced: {checks} bcrypt runs for the twelve"
    );
    let next = together(&url, "alice", "another-guess", 1).await;
    assert_eq!(next, [429], "the waiters' failures were counted");
    assert_eq!(upstream.requests().len(), 16, "no guess went upstream");
}
