//! Single sign-on against a real `OpenID` Provider (panva/oidc-provider, run by Node from
//! `tests/oidc/provider.mjs`, installed with `npm ci`), plus a small fake provider written here
//! for the signing-side attacks a real provider will not produce. Everything runs over real
//! sockets: a browser-like client with a cookie jar follows the redirects and posts the
//! provider's login form.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic on failure, like tests"
)]
#![allow(clippy::too_many_lines, reason = "case tables are long on purpose")]

mod common;

use std::{
    collections::HashMap,
    io::BufRead as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use argilla_gateway::{
    config::Config,
    reload::Users,
    server::{self, State},
};
use base64::Engine as _;
use bytes::Bytes;
use common::{Entry, Recorded, SERVICE_KEY, Upstream, UsersFile};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::oneshot};

const SECRET: &str = "test-secret-0123456789abcdef";
const CLIENT_ID: &str = "argilla-gateway";
const CLIENT_SECRET: &str = "client-secret-for-tests";

// ---------------------------------------------------------------------------------------------
// The real provider

fn provider_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// Installs the provider's packages once per test run (`npm ci`, skipped when the installed
/// lock file is the committed one). Node missing is a failure, never a skip.
fn install_provider() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let node = Command::new("node").arg("--version").output();
        assert!(
            node.as_ref().is_ok_and(|o| o.status.success()),
            "the SSO tests need Node.js 20 or later (`node` on PATH) and npm to run the real \
             OpenID Provider in tests/oidc: install them (apt-get install nodejs npm), then run \
             cargo test again"
        );
        let dir = provider_dir();
        let lock =
            std::fs::read(dir.join("package-lock.json")).expect("tests/oidc/package-lock.json");
        let stamp = dir.join("node_modules/.argilla-gateway-lock");
        if std::fs::read(&stamp).ok().as_deref() == Some(&lock[..])
            && dir.join("node_modules/oidc-provider/package.json").exists()
        {
            return;
        }
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .status()
            .expect("npm runs (install npm with Node.js)");
        assert!(status.success(), "npm ci in tests/oidc failed");
        std::fs::write(&stamp, &lock).unwrap();
    });
}

/// A running oidc-provider; killed on drop.
struct Idp {
    child: Child,
    port: u16,
    kid: String,
}

impl Idp {
    /// Starts the provider on `port` (0: any), sending the browser back to `redirect`.
    fn start(port: u16, redirect: &str, claims_in_id_token: bool) -> Self {
        install_provider();
        let mut child = Command::new("node")
            .arg("provider.mjs")
            .current_dir(provider_dir())
            .env("PORT", port.to_string())
            .env("CLIENT_ID", CLIENT_ID)
            .env("CLIENT_SECRET", CLIENT_SECRET)
            .env("REDIRECT_URI", redirect)
            .env(
                "CLAIMS_IN_ID_TOKEN",
                if claims_in_id_token { "1" } else { "" },
            )
            .env("NODE_NO_WARNINGS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node starts");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("provider output");
        let mut words = line.split_whitespace();
        assert_eq!(
            words.next(),
            Some("READY"),
            "provider did not start: {line:?}"
        );
        let port = words.next().unwrap().parse().unwrap();
        let kid = words.next().unwrap().to_owned();
        Self { child, port, kid }
    }

    fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---------------------------------------------------------------------------------------------
// The gateway

/// A superuser, two users the provider knows by e-mail (one disabled) and one it does not;
/// every password is `pw`.
fn users_yaml() -> String {
    UsersFile::new()
        .with(Entry::new("root").password("pw"))
        .with(
            Entry::new("alice")
                .password("pw")
                .email("alice@example.com")
                .workspaces(&["team-a", "shared"]),
        )
        .with(Entry::new("bob").password("pw").workspaces(&[]))
        .with(
            Entry::new("dave")
                .password("pw")
                .email("dave@example.com")
                .disabled(),
        )
        .yaml()
}

/// A gateway whose listener is bound before its configuration is made, so that the redirect
/// URL can name its port.
struct Gateway {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: Option<oneshot::Sender<()>>,
    stopped: Option<oneshot::Receiver<()>>,
}

struct Setup {
    listener: TcpListener,
    addr: SocketAddr,
    dir: PathBuf,
    temp_dir: Option<tempfile::TempDir>,
}

impl Setup {
    async fn new() -> Self {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_owned();
        let mut setup = Self::in_dir(&dir).await;
        setup.temp_dir = Some(temp);
        setup
    }

    async fn in_dir(dir: &Path) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        std::fs::write(dir.join("users.yml"), users_yaml()).unwrap();
        Self {
            listener,
            addr,
            dir: dir.to_owned(),
            temp_dir: None,
        }
    }

    fn redirect(&self) -> String {
        format!("http://{}/oauth2/callback", self.addr)
    }

    async fn start(
        self,
        upstream: &Upstream,
        issuer: &str,
        extra: &[(&str, &str)],
    ) -> (Gateway, Self) {
        let mut env: HashMap<String, String> = [
            ("ARGILLA_GATEWAY_UPSTREAM_URL", upstream.url()),
            ("ARGILLA_GATEWAY_UPSTREAM_API_KEY", SERVICE_KEY.to_owned()),
            ("ARGILLA_LOCAL_AUTH_SECRET_KEY", SECRET.to_owned()),
            (
                "ARGILLA_LOCAL_AUTH_USERS_DB_FILE",
                self.dir.join("users.yml").display().to_string(),
            ),
            ("ARGILLA_GATEWAY_OIDC_ISSUER_URL", issuer.to_owned()),
            ("ARGILLA_GATEWAY_OIDC_CLIENT_ID", CLIENT_ID.to_owned()),
            (
                "ARGILLA_GATEWAY_OIDC_CLIENT_SECRET",
                CLIENT_SECRET.to_owned(),
            ),
            ("ARGILLA_GATEWAY_OIDC_REDIRECT_URL", self.redirect()),
            (
                "ARGILLA_GATEWAY_OIDC_STATE_DIR",
                self.dir.join("state").display().to_string(),
            ),
            (
                "ARGILLA_GATEWAY_OIDC_ALLOWED_EMAIL_DOMAINS",
                "example.com".to_owned(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (k, v) in extra {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        let config = Config::from_sources(None, &|name| env.get(name).cloned()).unwrap();
        let users = Arc::new(Users::open(&config.auth).unwrap());
        let state = Arc::new(State::new(config, users));
        let (shutdown, signal) = oneshot::channel::<()>();
        let (done, stopped) = oneshot::channel::<()>();
        let serving = state.clone();
        let Self {
            listener,
            addr,
            dir,
            temp_dir,
        } = self;
        tokio::spawn(async move {
            server::run(listener, serving, async {
                let _ = signal.await;
            })
            .await;
            let _ = done.send(());
        });
        let gateway = Gateway {
            addr,
            state,
            shutdown: Some(shutdown),
            stopped: Some(stopped),
        };
        // What is left of the setup: its directory (for a restart).
        let rest = Self {
            listener: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            addr,
            dir,
            temp_dir,
        };
        (gateway, rest)
    }
}

impl Gateway {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Waits until the provider is discovered.
    async fn discovered(&self) {
        let sso = self.state.sso.clone().unwrap();
        tokio::time::timeout(Duration::from_secs(30), async {
            while sso.provider().metadata().is_none() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("provider discovered within 30 s");
    }

    async fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(stopped) = self.stopped.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), stopped).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A browser: cookie jar, manual redirects, the provider's login form

#[derive(Debug, Clone)]
struct Cookie {
    host: String,
    path: String,
    name: String,
    value: String,
    http_only: bool,
}

#[derive(Debug)]
struct Page {
    url: String,
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> Option<&str> {
        self.headers.get("location").and_then(|v| v.to_str().ok())
    }
    fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }
}

#[derive(Default, Clone)]
struct Browser {
    jar: Arc<Mutex<Vec<Cookie>>>,
}

fn client() -> &'static Client<HttpConnector, Full<Bytes>> {
    static CLIENT: OnceLock<Client<HttpConnector, Full<Bytes>>> = OnceLock::new();
    CLIENT.get_or_init(|| {
        Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build_http()
    })
}

fn resolve(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_owned();
    }
    let uri: http::Uri = base.parse().unwrap();
    let origin = format!("http://{}", uri.authority().unwrap());
    if location.starts_with('/') {
        format!("{origin}{location}")
    } else {
        let path = uri.path();
        let dir = &path[..=path.rfind('/').unwrap()];
        format!("{origin}{dir}{location}")
    }
}

impl Browser {
    fn cookie(&self, name: &str) -> Option<Cookie> {
        self.jar
            .lock()
            .unwrap()
            .iter()
            .find(|c| c.name == name)
            .cloned()
    }

    /// Copies the cookies of `other` (an attacker holding a victim's sign-in cookie).
    fn copy_from(&self, other: &Browser) {
        let theirs = other.jar.lock().unwrap().clone();
        *self.jar.lock().unwrap() = theirs;
    }

    fn store(&self, url: &str, set_cookie: &str) {
        let uri: http::Uri = url.parse().unwrap();
        let host = uri.host().unwrap().to_owned();
        let mut parts = set_cookie.split(';');
        let (name, value) = parts.next().unwrap().trim().split_once('=').unwrap();
        let mut path = "/".to_owned();
        let mut delete = false;
        let mut http_only = false;
        for attribute in parts {
            let attribute = attribute.trim();
            let (key, val) = attribute.split_once('=').unwrap_or((attribute, ""));
            match key.to_ascii_lowercase().as_str() {
                "path" => val.clone_into(&mut path),
                "max-age" if val.trim() == "0" => delete = true,
                "expires" if val.contains("1970") => delete = true,
                "httponly" => http_only = true,
                _ => {}
            }
        }
        let mut jar = self.jar.lock().unwrap();
        jar.retain(|c| !(c.host == host && c.path == path && c.name == name));
        if !delete {
            jar.push(Cookie {
                host,
                path,
                name: name.to_owned(),
                value: value.to_owned(),
                http_only,
            });
        }
    }

    fn cookie_header(&self, url: &str) -> Option<String> {
        let uri: http::Uri = url.parse().unwrap();
        let host = uri.host().unwrap();
        let path = uri.path();
        let jar = self.jar.lock().unwrap();
        let pairs: Vec<String> = jar
            .iter()
            .filter(|c| c.host == host && path.starts_with(&c.path))
            .map(|c| format!("{}={}", c.name, c.value))
            .collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }

    async fn request(&self, method: &str, url: &str, form: Option<&[(&str, &str)]>) -> Page {
        let mut builder = Request::builder().method(method).uri(url);
        if let Some(cookies) = self.cookie_header(url) {
            builder = builder.header("cookie", cookies);
        }
        let body = match form {
            Some(pairs) => {
                builder = builder.header("content-type", "application/x-www-form-urlencoded");
                form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(pairs)
                    .finish()
            }
            None => String::new(),
        };
        let response = tokio::time::timeout(
            Duration::from_secs(30),
            client().request(builder.body(Full::new(Bytes::from(body))).unwrap()),
        )
        .await
        .expect("answer within 30 s")
        .expect("request sent");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        for value in parts.headers.get_all("set-cookie") {
            self.store(url, value.to_str().unwrap());
        }
        Page {
            url: url.to_owned(),
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    async fn get(&self, url: &str) -> Page {
        self.request("GET", url, None).await
    }

    /// Follows redirects from `url` and signs in at the provider's form as `user` when it
    /// shows, until the next page would be the gateway's callback: returns the callback URL.
    async fn to_callback(&self, url: &str, user: &str) -> String {
        let mut url = url.to_owned();
        for _ in 0..20 {
            if url.contains("/oauth2/callback") {
                return url;
            }
            let page = self.get(&url).await;
            if let Some(location) = page.location() {
                url = resolve(&page.url, location);
                continue;
            }
            assert!(
                page.status == StatusCode::OK && page.body.contains("<form"),
                "expected the provider's login form at {url}, got {} {}",
                page.status,
                page.body
            );
            let action = page
                .body
                .split("action=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap();
            let password = format!("{user}-idp-pw");
            let posted = self
                .request(
                    "POST",
                    &resolve(&page.url, action),
                    Some(&[("username", user), ("password", &password)]),
                )
                .await;
            let location = posted
                .location()
                .unwrap_or_else(|| panic!("login form refused {user}: {}", posted.body));
            url = resolve(&posted.url, location);
        }
        panic!("no callback after 20 steps");
    }

    /// Signs in as `user` from `/oauth2/start?rd=<rd>`: the gateway's answer to the callback.
    async fn sign_in(&self, gateway: &Gateway, user: &str, rd: &str) -> Page {
        let start = gateway.url(&format!(
            "/oauth2/start?rd={}",
            form_urlencoded::byte_serialize(rd.as_bytes()).collect::<String>()
        ));
        let callback = self.to_callback(&start, user).await;
        self.get(&callback).await
    }

    /// The gateway token the web app would read from its cookie.
    fn app_token(&self) -> Option<String> {
        let cookie = self.cookie("auth._token.authProvider")?;
        let decoded = percent_encoding::percent_decode_str(&cookie.value)
            .decode_utf8()
            .unwrap()
            .into_owned();
        decoded.strip_prefix("Bearer ").map(str::to_owned)
    }
}

async fn me(gateway: &Gateway, token: &str) -> (StatusCode, Value) {
    let reply = common::get(
        &gateway.url("/api/me"),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    let json = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    (reply.status, json)
}

fn signed_in(page: &Page, rd: &str) {
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.location(), Some(rd));
    assert_eq!(page.headers.get("cache-control").unwrap(), "no-store");
    let cookies = page.set_cookies();
    for name in [
        "auth.strategy=authProvider",
        "auth._token.authProvider=Bearer%20",
        "auth._token_expiration.authProvider=",
    ] {
        let cookie = cookies
            .iter()
            .find(|c| c.starts_with(name))
            .unwrap_or_else(|| panic!("{name} in {cookies:?}"));
        assert!(
            cookie.contains("Path=/;") || cookie.ends_with("Path=/"),
            "{cookie}"
        );
        assert!(cookie.contains("SameSite=Lax"), "{cookie}");
        assert!(
            !cookie.to_ascii_lowercase().contains("httponly"),
            "{cookie}"
        );
        assert!(!cookie.to_ascii_lowercase().contains("domain"), "{cookie}");
    }
}

fn refused(page: &Page, status: u16, says: &[&str]) {
    assert_eq!(page.status.as_u16(), status, "{}", page.body);
    assert!(
        page.headers
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/html"),
        "an HTML page"
    );
    for text in says {
        assert!(page.body.contains(text), "{text:?} in {}", page.body);
    }
    assert!(
        !page
            .set_cookies()
            .iter()
            .any(|c| c.starts_with("auth._token.authProvider=Bearer")),
        "no login cookie"
    );
}

// ---------------------------------------------------------------------------------------------
// Tests with the real provider

#[tokio::test]
async fn the_whole_flow_logs_the_web_app_in_and_its_token_works_as_bearer_only() {
    let upstream = Upstream::start().await;
    let setup = Setup::new().await;
    let idp = Idp::start(0, &setup.redirect(), false);
    let (gateway, _rest) = setup.start(&upstream, &idp.issuer(), &[]).await;
    gateway.discovered().await;

    let browser = Browser::default();
    let landed = browser
        .sign_in(&gateway, "alice", "/datasets/team-a/ds?tab=1")
        .await;
    signed_in(&landed, "/datasets/team-a/ds?tab=1");
    assert!(
        browser.cookie("argilla_gateway_oidc").is_none(),
        "sign-in cookie cleared"
    );
    let expiration: u64 = browser
        .cookie("auth._token_expiration.authProvider")
        .unwrap()
        .value
        .parse()
        .unwrap();
    let now_ms = u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let minutes = (expiration - now_ms) / 60_000;
    assert!(
        (475..=480).contains(&minutes),
        "8 h session, got {minutes} min"
    );

    let token = browser.app_token().unwrap();
    let (status, json) = me(&gateway, &token).await;
    assert_eq!(status, 200);
    assert_eq!(json["username"], "alice");

    // The token works as a Bearer token on forwarded routes; the upstream sees the service
    // key, never the token or the cookies.
    upstream.clear();
    let cookie = browser.cookie_header(&gateway.url("/")).unwrap();
    let reply = common::get(
        &gateway.url("/api/datasets/ds?workspace=team-a"),
        &[
            ("authorization", &format!("Bearer {token}")),
            ("cookie", &cookie),
        ],
    )
    .await;
    assert_eq!(reply.status, 200);
    let seen: Recorded = upstream.only();
    assert_eq!(seen.header("x-argilla-api-key"), Some(SERVICE_KEY));
    assert!(seen.header("authorization").is_none());
    assert_eq!(seen.query.as_deref(), Some("workspace=team-a"));

    // The cookies alone are no credential (CSRF): 401, nothing forwarded.
    upstream.clear();
    let reply = common::get(
        &gateway.url("/api/datasets/ds?workspace=team-a"),
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(reply.status, 401);
    let reply = common::get(&gateway.url("/api/me"), &[("cookie", &cookie)]).await;
    assert_eq!(reply.status, 401);
    assert!(upstream.requests().is_empty());

    // API keys and the password login keep working beside SSO.
    let reply = common::get(&gateway.url("/api/me"), &[("x-argilla-api-key", "bob-key")]).await;
    assert_eq!(reply.status, 200);
    let reply = common::send(
        "POST",
        &gateway.url("/api/security/token"),
        &[("content-type", "application/x-www-form-urlencoded")],
        "username=bob&password=pw",
    )
    .await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn claims_in_the_id_token_and_case_insensitive_e_mail() {
    let upstream = Upstream::start().await;
    let setup = Setup::new().await;
    let idp = Idp::start(0, &setup.redirect(), true);
    let (gateway, _rest) = setup.start(&upstream, &idp.issuer(), &[]).await;
    gateway.discovered().await;
    let browser = Browser::default();
    // `ALICE@example.COM`, verified: alice.
    let landed = browser.sign_in(&gateway, "alice2", "/").await;
    signed_in(&landed, "/");
    let (status, json) = me(&gateway, &browser.app_token().unwrap()).await;
    assert_eq!(
        (status.as_u16(), json["username"].as_str()),
        (200, Some("alice"))
    );
    // The unverified copy is refused with the ID-token shape too.
    let page = Browser::default().sign_in(&gateway, "mallory", "/").await;
    refused(&page, 403, &["Alice@Example.com", "not verified"]);
}

#[tokio::test]
async fn people_who_are_not_enabled_users_get_a_page_saying_who_they_are() {
    let upstream = Upstream::start().await;
    let setup = Setup::new().await;
    let idp = Idp::start(0, &setup.redirect(), false);
    let (gateway, _rest) = setup.start(&upstream, &idp.issuer(), &[]).await;
    gateway.discovered().await;
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "unverified e-mail copying alice's",
            "mallory",
            &["Alice@Example.com", "not verified"],
        ),
        (
            "domain not allowed",
            "eve",
            &["eve@evil.test", "not allowed"],
        ),
        (
            "unknown to users.yml",
            "zoe",
            &["zoe@example.com", "administrator must add you"],
        ),
        ("disabled user", "dave", &["dave@example.com", "disabled"]),
        (
            "two @ in the address",
            "trick",
            &["alice@example.com@evil.test", "not a usable e-mail address"],
        ),
    ];
    for (case, user, says) in cases {
        upstream.clear();
        let browser = Browser::default();
        let page = browser.sign_in(&gateway, user, "/datasets").await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{case}: {}", page.body);
        refused(&page, 403, says);
        assert!(browser.app_token().is_none(), "{case}");
        assert!(upstream.requests().is_empty(), "{case}: nothing forwarded");
    }
}

#[tokio::test]
async fn replayed_callbacks_and_callbacks_from_another_browser_are_refused() {
    let upstream = Upstream::start().await;
    let setup = Setup::new().await;
    let idp = Idp::start(0, &setup.redirect(), false);
    let (gateway, _rest) = setup.start(&upstream, &idp.issuer(), &[]).await;
    gateway.discovered().await;
    let start = gateway.url("/oauth2/start?rd=%2F");

    // State from another browser: the attacker's callback URL in the victim's browser.
    let attacker = Browser::default();
    let attackers_callback = attacker.to_callback(&start, "alice").await;
    let victim = Browser::default();
    let _victims_callback = victim.to_callback(&start, "zoe").await;
    let page = victim.get(&attackers_callback).await;
    refused(&page, 400, &["another sign-in"]);
    assert!(victim.app_token().is_none());
    // No sign-in cookie at all.
    let page = Browser::default().get(&attackers_callback).await;
    refused(&page, 400, &["not started in this browser"]);

    // A good callback, then the same one again (the browser's cookie is gone by then), and
    // again with a copy of the cookie taken before (the state is used up; the code too).
    let browser = Browser::default();
    let callback = browser.to_callback(&start, "alice").await;
    assert!(browser.cookie("argilla_gateway_oidc").unwrap().http_only);
    let thief = Browser::default();
    thief.copy_from(&browser);
    signed_in(&browser.get(&callback).await, "/");
    refused(
        &browser.get(&callback).await,
        400,
        &["not started in this browser"],
    );
    refused(&thief.get(&callback).await, 400, &["already been used"]);

    // A callback naming another issuer (mix-up), and one with the state tampered.
    let browser = Browser::default();
    let callback = browser.to_callback(&start, "alice").await;
    let issuer = form_urlencoded::byte_serialize(idp.issuer().as_bytes()).collect::<String>();
    let mixed = callback.replace(&format!("iss={issuer}"), "iss=http%3A%2F%2Fevil.test");
    assert_ne!(mixed, callback);
    refused(
        &browser.get(&mixed).await,
        400,
        &["another identity provider"],
    );

    let browser = Browser::default();
    let callback = browser.to_callback(&start, "alice").await;
    let tampered = callback.replace("state=", "state=x");
    refused(&browser.get(&tampered).await, 400, &["another sign-in"]);
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn post_login_targets_are_paths_of_this_site_only() {
    let upstream = Upstream::start().await;
    let setup = Setup::new().await;
    let idp = Idp::start(0, &setup.redirect(), false);
    let (gateway, _rest) = setup
        .start(
            &upstream,
            &idp.issuer(),
            &[("ARGILLA_GATEWAY_OIDC_PASSWORD_LOGIN", "false")],
        )
        .await;
    gateway.discovered().await;
    // (case, rd as sent, raw: already encoded)
    let cases: &[(&str, &str)] = &[
        ("protocol-relative", "//evil.test/x"),
        ("backslash", "/\\evil.test"),
        ("scheme", "https://evil.test/"),
        ("javascript", "javascript:alert(1)"),
        ("encoded slashes", "%2F%2Fevil.test"),
        ("encoded after slash", "/%2Fevil.test"),
        ("encoded backslash", "/%5Cevil.test"),
        ("double-encoded backslash", "/%255Cevil.test"),
        ("tab", "/%09/evil.test"),
        ("dot segments", "/../evil.test"),
        ("no leading slash", "evil.test"),
    ];
    for (case, rd) in cases {
        let raw = form_urlencoded::byte_serialize(rd.as_bytes()).collect::<String>();
        let page = Browser::default()
            .get(&gateway.url(&format!("/oauth2/start?rd={raw}")))
            .await;
        assert_eq!(
            page.status,
            StatusCode::BAD_REQUEST,
            "{case}: {}",
            page.body
        );
        assert!(page.location().is_none(), "{case}");
        // Through the web app's login page: the target is dropped, not followed.
        let page = Browser::default()
            .get(&gateway.url(&format!("/login?redirect={raw}")))
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{case}");
        assert_eq!(page.location(), Some("/oauth2/start?rd=%2F"), "{case}");
    }
    // A good target through /login lands there after signing in.
    let browser = Browser::default();
    let page = browser
        .get(&gateway.url("/login?redirect=%2Fdatasets"))
        .await;
    assert_eq!(page.location(), Some("/oauth2/start?rd=%2Fdatasets"));
    let callback = browser
        .to_callback(&gateway.url(page.location().unwrap()), "alice")
        .await;
    signed_in(&browser.get(&callback).await, "/datasets");
    // The password form is off.
    let reply = common::send(
        "POST",
        &gateway.url("/api/security/token"),
        &[("content-type", "application/x-www-form-urlencoded")],
        "username=bob&password=pw",
    )
    .await;
    assert_eq!(reply.status, 403);
    assert!(upstream.requests().is_empty());
    // A signed-out browser opening any page of the app goes to the provider and comes back
    // there; what is not a page load, or carries the app's token, is forwarded as before.
    let navigate = [("sec-fetch-mode", "navigate"), ("accept", "text/html")];
    let cases: [(&str, &str, &[(&str, &str)], Option<&str>); 7] = [
        ("first visit", "/", &navigate, Some("/oauth2/start?rd=%2F")),
        (
            "deep link",
            "/datasets?workspace=team-a",
            &navigate,
            Some("/oauth2/start?rd=%2Fdatasets%3Fworkspace%3Dteam%2Da"),
        ),
        (
            "app logged out",
            "/datasets",
            &[
                ("sec-fetch-mode", "navigate"),
                ("cookie", "auth._token.authProvider=false"),
            ],
            Some("/oauth2/start?rd=%2Fdatasets"),
        ),
        (
            "no fetch metadata",
            "/",
            &[("accept", "text/html,application/xhtml+xml")],
            Some("/oauth2/start?rd=%2F"),
        ),
        (
            "signed in",
            "/datasets",
            &[
                ("sec-fetch-mode", "navigate"),
                ("cookie", "auth._token.authProvider=Bearer%20x"),
            ],
            None,
        ),
        (
            "script",
            "/_nuxt/app.js",
            &[("sec-fetch-mode", "no-cors"), ("accept", "*/*")],
            None,
        ),
        ("api", "/api/_info", &navigate, None),
    ];
    for (case, path, headers, location) in cases {
        let before = upstream.requests().len();
        let reply = common::send("GET", &gateway.url(path), headers, "").await;
        if let Some(location) = location {
            assert_eq!(reply.status, 303, "{case}");
            assert_eq!(reply.header("location"), Some(location), "{case}");
            assert_eq!(
                upstream.requests().len(),
                before,
                "{case}: nothing forwarded"
            );
        } else {
            assert_eq!(reply.status, 200, "{case}: {:?}", reply.body);
            assert_eq!(upstream.requests().len(), before + 1, "{case}: forwarded");
            // A page the browser must ask for again, so that a later signed-out load comes here.
            let page =
                headers.contains(&("sec-fetch-mode", "navigate")) && !path.starts_with("/api/");
            assert_eq!(
                reply.header("cache-control") == Some("no-cache"),
                page,
                "{case}: {:?}",
                reply.header("cache-control")
            );
        }
    }
}

#[tokio::test]
async fn a_new_signing_key_after_a_provider_restart_is_fetched() {
    let upstream = Upstream::start().await;
    let setup = Setup::new().await;
    let mut idp = Idp::start(0, &setup.redirect(), false);
    let (gateway, _rest) = setup.start(&upstream, &idp.issuer(), &[]).await;
    gateway.discovered().await;
    let browser = Browser::default();
    signed_in(&browser.sign_in(&gateway, "alice", "/").await, "/");
    let (port, old_kid) = (idp.port, idp.kid.clone());
    idp.stop();
    let idp = Idp::start(
        port,
        &format!("http://{}/oauth2/callback", gateway.addr),
        false,
    );
    assert_ne!(idp.kid, old_kid, "a new key");
    let browser = Browser::default();
    signed_in(&browser.sign_in(&gateway, "alice", "/").await, "/");
}

#[tokio::test]
async fn provider_down_at_start_then_back_and_down_during_a_login() {
    let upstream = Upstream::start().await;
    let setup = Setup::new().await;
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let redirect = setup.redirect();
    let (gateway, _rest) = setup.start(&upstream, &issuer, &[]).await;

    // API keys work; SSO answers a clear 503.
    let reply = common::get(
        &gateway.url("/api/me"),
        &[("x-argilla-api-key", "alice-key")],
    )
    .await;
    assert_eq!(reply.status, 200);
    let page = Browser::default().get(&gateway.url("/oauth2/start")).await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        page.body.contains("identity provider cannot be reached"),
        "{}",
        page.body
    );
    assert!(page.headers.contains_key("retry-after"));

    // The provider comes up: the background discovery finds it.
    let mut idp = Idp::start(port, &redirect, false);
    gateway.discovered().await;
    let browser = Browser::default();
    signed_in(&browser.sign_in(&gateway, "alice", "/").await, "/");

    // Down between the provider's login and the callback: a clear page, no login.
    let browser = Browser::default();
    let callback = browser
        .to_callback(&gateway.url("/oauth2/start"), "alice")
        .await;
    idp.stop();
    let page = browser.get(&callback).await;
    refused(&page, 502, &["could not be reached"]);
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn sign_out_ends_the_session_for_good_even_across_a_restart() {
    let upstream = Upstream::start().await;
    let temp = tempfile::tempdir().unwrap();
    let setup = Setup::in_dir(temp.path()).await;
    let idp = Idp::start(0, &setup.redirect(), false);
    let redirect_port = setup.addr;
    let (mut gateway, _rest) = setup.start(&upstream, &idp.issuer(), &[]).await;
    gateway.discovered().await;

    let browser = Browser::default();
    signed_in(&browser.sign_in(&gateway, "alice", "/").await, "/");
    let token = browser.app_token().unwrap();
    let other = Browser::default();
    signed_in(&other.sign_in(&gateway, "alice", "/").await, "/");
    let other_token = other.app_token().unwrap();
    assert_eq!(me(&gateway, &token).await.0, 200);

    let page = browser.get(&gateway.url("/oauth2/sign_out")).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let location = page.location().unwrap();
    assert!(
        location.starts_with(&format!("{}/session/end?", idp.issuer())),
        "{location}"
    );
    assert!(location.contains(&format!("client_id={CLIENT_ID}")));
    assert_eq!(
        browser.cookie("auth._token.authProvider").unwrap().value,
        "false"
    );
    assert_eq!(me(&gateway, &token).await.0, 401, "ended");
    assert_eq!(
        me(&gateway, &other_token).await.0,
        200,
        "another session goes on"
    );
    // The provider's sign-out page answers (its own confirmation form).
    let ended = browser.get(location).await;
    assert_eq!(ended.status, StatusCode::OK, "{}", ended.body);

    // A restart with the same secret and state directory still refuses the ended token.
    gateway.stop().await;
    let setup = Setup::in_dir(temp.path()).await;
    let (gateway, _rest) = setup.start(&upstream, &idp.issuer(), &[]).await;
    assert_ne!(gateway.addr, redirect_port);
    assert_eq!(
        me(&gateway, &token).await.0,
        401,
        "still ended after a restart"
    );
    assert_eq!(me(&gateway, &other_token).await.0, 200);
}

#[tokio::test]
async fn the_web_apps_own_logout_ends_the_session_on_its_next_request() {
    let upstream = Upstream::start().await;
    let setup = Setup::new().await;
    let idp = Idp::start(0, &setup.redirect(), false);
    let (gateway, rest) = setup.start(&upstream, &idp.issuer(), &[]).await;
    gateway.discovered().await;
    let ended_file = rest.dir.join("state/revoked-sessions");

    // A made-up session cookie beside a logged-out app is sent on, and written nowhere.
    let stranger = Browser::default();
    stranger.store(&gateway.url("/"), "auth._token.authProvider=false; Path=/");
    stranger.store(
        &gateway.url("/"),
        "argilla_gateway_sso=made-up.AAAA; Path=/",
    );
    let page = stranger.get(&gateway.url("/deployment.json")).await;
    assert_eq!(page.status, StatusCode::TEMPORARY_REDIRECT);
    let ended = std::fs::read_to_string(&ended_file).unwrap_or_default();
    assert!(!ended.contains("made-up"), "{ended}");

    let browser = Browser::default();
    signed_in(&browser.sign_in(&gateway, "alice", "/").await, "/");
    let token = browser.app_token().unwrap();
    let session = browser.cookie("argilla_gateway_sso").unwrap();
    assert!(session.http_only);
    // Requests while logged in are served as usual.
    upstream.clear();
    let page = browser.get(&gateway.url("/deployment.json")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(upstream.requests().len(), 1);

    // The app's logout: `false` in its token cookie, no request. Its login page then fetches
    // deployment.json with the cookies.
    browser.store(&gateway.url("/"), "auth._token.authProvider=false; Path=/");
    upstream.clear();
    let page = browser.get(&gateway.url("/deployment.json?x=1")).await;
    assert_eq!(page.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(page.location(), Some("/deployment.json?x=1"));
    assert!(browser.cookie("argilla_gateway_sso").is_none());
    assert!(upstream.requests().is_empty());
    assert_eq!(me(&gateway, &token).await.0, 401, "the session is over");
    let sid = session.value.split('.').next().unwrap();
    assert!(std::fs::read_to_string(&ended_file).unwrap().contains(sid));
    let page = browser.get(&gateway.url("/deployment.json?x=1")).await;
    assert_eq!(page.status, StatusCode::OK, "then served as usual");
    assert_eq!(upstream.only().path, "/deployment.json");
}

// ---------------------------------------------------------------------------------------------
// A fake provider for the signing-side attacks: ES256 keys made here, ID tokens made per case

type Mint = Arc<dyn Fn(&str) -> String + Send + Sync>;

struct Fake {
    issuer: String,
    /// Makes the ID token from the nonce the gateway sent.
    mint: Arc<Mutex<Mint>>,
    jwks_fetches: Arc<std::sync::atomic::AtomicUsize>,
}

struct Signer {
    kid: String,
    key: jsonwebtoken::EncodingKey,
    jwk: Value,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Signer {
    fn new(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = pair.public_key_raw(); // 0x04 || x || y
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
            "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
        });
        Self {
            kid: kid.to_owned(),
            key: jsonwebtoken::EncodingKey::from_ec_der(&pair.serialize_der()),
            jwk,
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl Fake {
    async fn start(signer: &Signer, redirect: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let mint: Arc<Mutex<Mint>> = Arc::new(Mutex::new(Arc::new(|_: &str| String::new())));
        let jwks_fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let nonce: Arc<Mutex<String>> = Arc::default();
        let jwks = json!({"keys": [signer.jwk]}).to_string();
        let (iss, minting, fetches) = (issuer.clone(), mint.clone(), jwks_fetches.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (iss, minting, fetches, nonce, jwks, redirect) = (
                    iss.clone(),
                    minting.clone(),
                    fetches.clone(),
                    nonce.clone(),
                    jwks.clone(),
                    redirect.clone(),
                );
                let service = service_fn(move |request: Request<Incoming>| {
                    let (iss, minting, fetches, nonce, jwks, redirect) = (
                        iss.clone(),
                        minting.clone(),
                        fetches.clone(),
                        nonce.clone(),
                        jwks.clone(),
                        redirect.clone(),
                    );
                    async move {
                        let path = request.uri().path().to_owned();
                        let query = request.uri().query().unwrap_or("").to_owned();
                        let json_answer = |body: String| {
                            Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(body)))
                                .unwrap()
                        };
                        let response = match path.as_str() {
                            "/.well-known/openid-configuration" => json_answer(
                                json!({
                                    "issuer": iss,
                                    "authorization_endpoint": format!("{iss}/authorize"),
                                    "token_endpoint": format!("{iss}/token"),
                                    "jwks_uri": format!("{iss}/jwks"),
                                    "id_token_signing_alg_values_supported": ["ES256"],
                                })
                                .to_string(),
                            ),
                            "/jwks" => {
                                fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                json_answer(jwks)
                            }
                            "/authorize" => {
                                let params: HashMap<String, String> =
                                    form_urlencoded::parse(query.as_bytes())
                                        .into_owned()
                                        .collect();
                                params["nonce"].clone_into(&mut nonce.lock().unwrap());
                                let state =
                                    form_urlencoded::byte_serialize(params["state"].as_bytes())
                                        .collect::<String>();
                                Response::builder()
                                    .status(303)
                                    .header(
                                        "location",
                                        format!("{redirect}?code=c0de&state={state}"),
                                    )
                                    .body(Full::new(Bytes::new()))
                                    .unwrap()
                            }
                            "/token" => {
                                let mint = minting.lock().unwrap().clone();
                                let token = mint(&nonce.lock().unwrap());
                                json_answer(
                                    json!({"id_token": token, "access_token": "at", "token_type": "Bearer"})
                                        .to_string(),
                                )
                            }
                            _ => Response::builder()
                                .status(404)
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        };
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            issuer,
            mint,
            jwks_fetches,
        }
    }
}

#[tokio::test]
async fn forged_and_wrong_id_tokens_are_refused() {
    let upstream = Upstream::start().await;
    let setup = Setup::new().await;
    let signer = Arc::new(Signer::new("k1"));
    let fake = Fake::start(&signer, setup.redirect()).await;
    let (gateway, _rest) = setup.start(&upstream, &fake.issuer, &[]).await;
    gateway.discovered().await;

    let issuer = fake.issuer.clone();
    let good = {
        let issuer = issuer.clone();
        move |nonce: &str| {
            json!({
                "iss": issuer, "sub": "alice-sub", "aud": CLIENT_ID, "nonce": nonce,
                "iat": now(), "exp": now() + 300,
                "email": "alice@example.com", "email_verified": true,
            })
        }
    };
    let other_key = Arc::new(Signer::new("k1")); // same kid, another key
    let public_key = signer.jwk.to_string();
    let cases: Vec<(&str, Mint)> = vec![
        ("forged signature (another key, same kid)", {
            let (good, other_key) = (good.clone(), other_key.clone());
            Arc::new(move |n: &str| other_key.sign(&good(n)))
        }),
        ("expired", {
            let (good, signer) = (good.clone(), signer.clone());
            Arc::new(move |n: &str| {
                let mut claims = good(n);
                claims["iat"] = json!(now() - 7200);
                claims["exp"] = json!(now() - 3600);
                signer.sign(&claims)
            })
        }),
        ("wrong audience", {
            let (good, signer) = (good.clone(), signer.clone());
            Arc::new(move |n: &str| {
                let mut claims = good(n);
                claims["aud"] = json!("another-client");
                signer.sign(&claims)
            })
        }),
        ("several audiences, no azp", {
            let (good, signer) = (good.clone(), signer.clone());
            Arc::new(move |n: &str| {
                let mut claims = good(n);
                claims["aud"] = json!([CLIENT_ID, "another-client"]);
                signer.sign(&claims)
            })
        }),
        ("azp another client", {
            let (good, signer) = (good.clone(), signer.clone());
            Arc::new(move |n: &str| {
                let mut claims = good(n);
                claims["azp"] = json!("another-client");
                signer.sign(&claims)
            })
        }),
        ("wrong issuer", {
            let (good, signer) = (good.clone(), signer.clone());
            Arc::new(move |n: &str| {
                let mut claims = good(n);
                claims["iss"] = json!("http://evil.test");
                signer.sign(&claims)
            })
        }),
        ("nonce mismatch", {
            let (good, signer) = (good.clone(), signer.clone());
            Arc::new(move |n: &str| signer.sign(&good(&format!("{n}x"))))
        }),
        ("no nonce", {
            let (good, signer) = (good.clone(), signer.clone());
            Arc::new(move |n: &str| {
                let mut claims = good(n);
                claims.as_object_mut().unwrap().remove("nonce");
                signer.sign(&claims)
            })
        }),
        ("issued in the future", {
            let (good, signer) = (good.clone(), signer.clone());
            Arc::new(move |n: &str| {
                let mut claims = good(n);
                claims["iat"] = json!(now() + 3600);
                signer.sign(&claims)
            })
        }),
        ("alg none", {
            let good = good.clone();
            Arc::new(move |n: &str| {
                format!(
                    "{}.{}.",
                    b64(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#),
                    b64(good(n).to_string().as_bytes())
                )
            })
        }),
        ("HS256 keyed with the provider's public key", {
            let (good, public_key) = (good.clone(), public_key.clone());
            Arc::new(move |n: &str| {
                use hmac::Mac as _;
                let signing = format!(
                    "{}.{}",
                    b64(br#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#),
                    b64(good(n).to_string().as_bytes())
                );
                let mut mac =
                    hmac::Hmac::<sha2::Sha256>::new_from_slice(public_key.as_bytes()).unwrap();
                mac.update(signing.as_bytes());
                format!("{signing}.{}", b64(&mac.finalize().into_bytes()))
            })
        }),
        ("unknown key id", {
            let good = good.clone();
            let stranger = Arc::new(Signer::new("k2"));
            Arc::new(move |n: &str| stranger.sign(&good(n)))
        }),
        ("unverified e-mail in the ID token", {
            let (good, signer) = (good.clone(), signer.clone());
            Arc::new(move |n: &str| {
                let mut claims = good(n);
                claims["email_verified"] = json!(false);
                signer.sign(&claims)
            })
        }),
        ("email_verified as a string", {
            let (good, signer) = (good.clone(), signer.clone());
            Arc::new(move |n: &str| {
                let mut claims = good(n);
                claims["email_verified"] = json!("true");
                signer.sign(&claims)
            })
        }),
        ("garbage", Arc::new(|_: &str| "not-a-jwt".to_owned())),
    ];
    for (case, mint) in cases {
        upstream.clear();
        *fake.mint.lock().unwrap() = mint;
        let browser = Browser::default();
        let page = browser.sign_in(&gateway, "-", "/").await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{case}: {}", page.body);
        let why = if case.contains("e-mail") || case.contains("email_verified") {
            "not verified"
        } else {
            "did not pass the gateway's checks"
        };
        refused(&page, 403, &[why]);
        assert!(browser.app_token().is_none(), "{case}");
        assert!(upstream.requests().is_empty(), "{case}: nothing forwarded");
    }
    // Unknown key ids cause at most one key-set fetch per interval, however many arrive.
    let before = fake.jwks_fetches.load(std::sync::atomic::Ordering::SeqCst);
    let stranger = Arc::new(Signer::new("k3"));
    let minted = {
        let good = good.clone();
        Arc::new(move |n: &str| stranger.sign(&good(n))) as Mint
    };
    *fake.mint.lock().unwrap() = minted;
    for _ in 0..5 {
        let page = Browser::default().sign_in(&gateway, "-", "/").await;
        assert_eq!(page.status, StatusCode::FORBIDDEN);
    }
    let fetched = fake.jwks_fetches.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(
        fetched <= 1,
        "{fetched} key-set fetches for 5 unknown key ids"
    );

    // The same fake provider with a good token signs in: the refusals above were the checks.
    let good_mint = {
        let signer = signer.clone();
        Arc::new(move |n: &str| signer.sign(&good(n))) as Mint
    };
    *fake.mint.lock().unwrap() = good_mint;
    let browser = Browser::default();
    signed_in(&browser.sign_in(&gateway, "-", "/").await, "/");
    let (status, json) = me(&gateway, &browser.app_token().unwrap()).await;
    assert_eq!(
        (status.as_u16(), json["username"].as_str()),
        (200, Some("alice"))
    );
}

#[test]
fn duplicate_e_mails_stop_the_gateway_while_sso_maps_by_e_mail() {
    let dir = tempfile::tempdir().unwrap();
    UsersFile::new()
        .with(
            Entry::new("a")
                .password("pw")
                .key("k1")
                .email("x@example.com"),
        )
        .with(
            Entry::new("b")
                .password("pw")
                .key("k2")
                .email("X@Example.com"),
        )
        .write(&dir.path().join("users.yml"));
    let env = [
        ("ARGILLA_LOCAL_AUTH_USERS_DB_FILE", "users.yml"),
        ("ARGILLA_GATEWAY_OIDC_ISSUER_URL", "http://127.0.0.1:9"),
        ("ARGILLA_GATEWAY_OIDC_CLIENT_ID", "c"),
        (
            "ARGILLA_GATEWAY_OIDC_REDIRECT_URL",
            "http://127.0.0.1:6900/oauth2/callback",
        ),
    ];
    let output = common::binary(dir.path(), &env, &[]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("share the e-mail address x@example.com"),
        "{stderr}"
    );
    let output = common::binary(dir.path(), &env, &["check"])
        .output()
        .unwrap();
    assert!(!output.status.success(), "check says so too");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("users a, b share the e-mail address"),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_reload_that_would_share_an_e_mail_is_refused_and_the_last_good_users_stay() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.yml");
    std::fs::write(&file, users_yaml()).unwrap();
    let env: HashMap<&str, String> = [
        (
            "ARGILLA_LOCAL_AUTH_USERS_DB_FILE",
            file.display().to_string(),
        ),
        (
            "ARGILLA_GATEWAY_OIDC_ISSUER_URL",
            "http://127.0.0.1:9".into(),
        ),
        ("ARGILLA_GATEWAY_OIDC_CLIENT_ID", "c".into()),
        (
            "ARGILLA_GATEWAY_OIDC_REDIRECT_URL",
            "http://127.0.0.1:6900/oauth2/callback".into(),
        ),
    ]
    .into_iter()
    .collect();
    let config = Config::from_sources(None, &|name| env.get(name).cloned()).unwrap();
    let oidc = config.oidc.clone().unwrap();
    let users = Users::open(&config.auth)
        .unwrap()
        .with_check(Box::new(move |store| {
            argilla_gateway::oidc::check_users(&oidc, store)
        }));
    let mallory = Entry::new("mallory")
        .password("pw")
        .key("m-key")
        .email("ALICE@example.com");
    std::fs::write(&file, format!("{}{}", users_yaml(), mallory.yaml())).unwrap();
    let error = users.reload().unwrap_err().to_string();
    assert!(
        error.contains("users alice, mallory share the e-mail address alice@example.com"),
        "{error}"
    );
    assert!(
        users.snapshot().by_name("mallory").is_none(),
        "the last good users stay"
    );
}
