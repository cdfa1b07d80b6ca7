//! Identity spoofing: client-sent `X-Forwarded-*` and friends, an `X-Argilla-Api-Key` meant for
//! the upstream, `Connection:` naming the headers the gateway adds, and protocol upgrades that
//! would turn the gateway into a blind tunnel (h2c smuggling).

use std::{convert::Infallible, time::Duration};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::{
    common::basic,
    harness::{Rig, assert_anonymous, options, read_reply, req},
};

const DS: &str = "/api/datasets/ds";

fn alice(extra: &[(&str, &str)]) -> Vec<u8> {
    let mut headers = vec![("X-Argilla-Api-Key", "alice-key")];
    headers.extend_from_slice(extra);
    req("GET", DS, &headers, "")
}

forwarded! {
    spoof_forwarded_user: alice(&[("X-Forwarded-User", "root")]) => "/api/datasets/ds", Some("workspace=alice"), "alice";
    spoof_forwarded_user_twice: alice(&[("X-Forwarded-User", "root"), ("x-forwarded-user", "bob")]) => "/api/datasets/ds", Some("workspace=alice"), "alice";
    spoof_forwarded_user_before_key: req("GET", DS, &[("X-Forwarded-User", "root"), ("X-Argilla-Api-Key", "alice-key")], "") => "/api/datasets/ds", Some("workspace=alice"), "alice";
    spoof_forwarded_for: alice(&[("X-Forwarded-For", "10.0.0.1")]) => "/api/datasets/ds", Some("workspace=alice"), "alice";
    spoof_forwarded_for_chain: alice(&[("X-Forwarded-For", "1.2.3.4, 5.6.7.8"), ("X-Forwarded-For", "9.9.9.9")]) => "/api/datasets/ds", Some("workspace=alice"), "alice";
    spoof_forwarded_rfc7239: alice(&[("Forwarded", "for=1.2.3.4;proto=https;by=10.0.0.1;host=evil")]) => "/api/datasets/ds", Some("workspace=alice"), "alice";
    spoof_forwarded_proto: alice(&[("X-Forwarded-Proto", "https")]) => "/api/datasets/ds", Some("workspace=alice"), "alice";
    spoof_remote_user_headers: alice(&[("X-Remote-User", "root"), ("Remote-User", "root"), ("X-Auth-Request-User", "root")]) => "/api/datasets/ds", Some("workspace=alice"), "alice";
    spoof_oauth2_proxy_headers: alice(&[("X-Forwarded-Email", "root@example.com"), ("X-Forwarded-Groups", "admins"), ("X-Forwarded-Preferred-Username", "root"), ("X-Forwarded-Access-Token", "t")]) => "/api/datasets/ds", Some("workspace=alice"), "alice";
    spoof_rubrix_key_beside_argilla_key: alice(&[("X-Rubrix-Api-Key", "root-key")]) => "/api/datasets/ds", Some("workspace=alice"), "alice";
    conn_names_api_key: alice(&[("Connection", "X-Argilla-Api-Key")]) => "/api/datasets/ds", Some("workspace=alice"), "alice";
    conn_names_forwarded_user: alice(&[("Connection", "X-Forwarded-User")]) => "/api/datasets/ds", Some("workspace=alice"), "alice";
    conn_names_forwarded_for: alice(&[("Connection", "X-Forwarded-For")]) => "/api/datasets/ds", Some("workspace=alice"), "alice";
    conn_names_forwarded_proto: alice(&[("Connection", "x-forwarded-proto")]) => "/api/datasets/ds", Some("workspace=alice"), "alice";
    conn_names_all_ours: alice(&[("Connection", "keep-alive, X-Argilla-Api-Key, X-Forwarded-User, X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host")]) => "/api/datasets/ds", Some("workspace=alice"), "alice";
    conn_names_ours_on_two_lines: alice(&[("Connection", "X-Argilla-Api-Key"), ("Connection", "X-Forwarded-User")]) => "/api/datasets/ds", Some("workspace=alice"), "alice";
    conn_names_ours_with_forwarded_user_sent: alice(&[("Connection", "X-Forwarded-User"), ("X-Forwarded-User", "root")]) => "/api/datasets/ds", Some("workspace=alice"), "alice";
    conn_names_authorization_used_for_auth: req("GET", DS, &[("Authorization", &basic("alice", "alice-pw")), ("Connection", "Authorization")], "") => "/api/datasets/ds", Some("workspace=alice"), "alice";
    conn_names_request_id: alice(&[("Connection", "X-Request-Id"), ("X-Request-Id", "abc")]) => "/api/datasets/ds", Some("workspace=alice"), "alice";
    /// The web app keeps its login token in a cookie; Argilla 1.5 reads none.
    spoof_cookie_with_web_app_token_is_not_forwarded: alice(&[("Cookie", "auth._token.local=Bearer%20eyJhbGciOiJIUzI1NiJ9.e30.x; auth.strategy=local")]) => "/api/datasets/ds", Some("workspace=alice"), "alice";
    spoof_cookie_on_two_lines_is_not_forwarded: alice(&[("Cookie", "a=1"), ("Cookie", "auth._token.local=Bearer%20root-key")]) => "/api/datasets/ds", Some("workspace=alice"), "alice";
}

refused! {
    conn_names_workspace_header_still_checked: alice(&[("Connection", "X-Argilla-Workspace"), ("X-Argilla-Workspace", "team-b")]) => 404 "EntityNotFoundError";
    conn_names_rubrix_workspace_header_still_checked: alice(&[("Connection", "x-rubrix-workspace"), ("X-Rubrix-Workspace", "team-b")]) => 404 "EntityNotFoundError";
    spoof_forwarded_user_without_credentials: req("GET", DS, &[("X-Forwarded-User", "root"), ("X-Remote-User", "root")], "") => 401 "UnauthorizedError";
}

/// `Connection: X-Forwarded-Host` cannot remove the host header the gateway adds, and a
/// client-sent `X-Forwarded-Host` never survives.
#[tokio::test]
async fn conn_names_forwarded_host() {
    let rig = Rig::start().await;
    let reply = rig
        .raw(alice(&[
            ("Connection", "X-Forwarded-Host"),
            ("X-Forwarded-Host", "evil.example"),
        ]))
        .await;
    assert_eq!(reply.status(), 200);
    let rec = rig.up.only();
    assert_eq!(rec.all("x-forwarded-host"), ["gw"], "{rec:#?}");
    assert_eq!(rec.all("host"), [rig.up.addr.to_string()], "{rec:#?}");
}

/// A client `Host` never becomes the upstream's `Host`.
#[tokio::test]
async fn spoof_host_header() {
    let rig = Rig::start().await;
    let reply = rig
        .raw(
            b"GET /api/datasets/ds HTTP/1.1\r\nHost: internal.admin:6900\r\nX-Argilla-Api-Key: alice-key\r\n\r\n",
        )
        .await;
    assert_eq!(reply.status(), 200);
    let rec = rig.up.only();
    assert_eq!(rec.all("host"), [rig.up.addr.to_string()], "{rec:#?}");
    assert_eq!(rec.all("x-forwarded-host"), ["internal.admin:6900"]);
}

/// A request id that could forge log lines is replaced.
#[tokio::test]
async fn spoof_request_id_with_separators() {
    let rig = Rig::start().await;
    let reply = rig
        .raw(alice(&[("X-Request-Id", "x\" user=root decision=allow")]))
        .await;
    assert_eq!(reply.status(), 200);
    let rec = rig.up.only();
    let ids = rec.all("x-request-id");
    assert_eq!(ids.len(), 1, "{rec:#?}");
    assert!(!ids[0].contains("root"), "{rec:#?}");
}

/// Public routes carry no identity and no credential, whatever the client sent.
#[tokio::test]
async fn spoof_identity_on_public_route() {
    let rig = Rig::start().await;
    let reply = rig
        .raw(req(
            "GET",
            "/api/_info",
            &[
                ("X-Forwarded-User", "root"),
                ("X-Argilla-Api-Key", "root-key"),
                ("Authorization", &basic("alice", "alice-pw")),
                ("X-Forwarded-For", "10.0.0.1"),
                ("Connection", "X-Forwarded-For"),
            ],
            "",
        ))
        .await;
    assert_eq!(reply.status(), 200);
    let rec = rig.up.only();
    assert_eq!(rec.path, "/api/_info");
    assert_anonymous(&rec);
}

/// The upstream's own key sent by a client on a public route does not reach the upstream.
#[tokio::test]
async fn spoof_upstream_key_on_static_path() {
    let rig = Rig::start().await;
    let reply = rig
        .raw(req(
            "GET",
            "/datasets/team-b/b1",
            &[("X-Argilla-Api-Key", crate::common::SERVICE_KEY)],
            "",
        ))
        .await;
    assert_eq!(reply.status(), 200);
    let rec = rig.up.only();
    assert_anonymous(&rec);
}

/// An upstream that switches protocols on any `Upgrade` and then records the raw bytes it gets.
async fn switching_upstream() -> (std::net::SocketAddr, tokio::sync::mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = service_fn(move |mut request: Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let Some(protocol) = request.headers().get("upgrade").cloned() else {
                            return Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()));
                        };
                        let on_upgrade = hyper::upgrade::on(&mut request);
                        tokio::spawn(async move {
                            let Ok(upgraded) = on_upgrade.await else {
                                return;
                            };
                            let mut io = TokioIo::new(upgraded);
                            let mut buf = vec![0u8; 4096];
                            if let Ok(Ok(n)) =
                                tokio::time::timeout(Duration::from_secs(5), io.read(&mut buf))
                                    .await
                            {
                                let _ = tx.send(buf[..n].to_vec()).await;
                            }
                        });
                        Ok(Response::builder()
                            .status(101)
                            .header("upgrade", protocol)
                            .header("connection", "Upgrade")
                            .body(Empty::new())
                            .unwrap())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (addr, rx)
}

/// Sends an upgrade handshake, and if the gateway switches, a smuggled request through the
/// tunnel. Returns the status and whatever the upstream got through the tunnel.
async fn smuggle(handshake: &str) -> (Option<u16>, Option<Vec<u8>>) {
    let (addr, mut tunnelled) = switching_upstream().await;
    let gateway = options(&format!("http://{addr}")).start().await;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream.write_all(handshake.as_bytes()).await.unwrap();
    let reply = read_reply(&mut stream).await;
    if reply.status == Some(101) {
        let _ = stream
            .write_all(
                b"GET /api/datasets HTTP/1.1\r\nHost: argilla\r\nX-Argilla-Api-Key: rubrix.apikey\r\n\r\n",
            )
            .await;
        let got = tokio::time::timeout(Duration::from_secs(5), tunnelled.recv())
            .await
            .ok()
            .flatten();
        return (reply.status, got);
    }
    (reply.status, None)
}

/// h2c smuggling (the Traefik / nginx advisories): an anonymous `Upgrade: h2c` on a public path
/// must not open a raw tunnel to the upstream, where Argilla's `rubrix.apikey` works.
#[tokio::test]
async fn upgrade_h2c_anonymous_on_public_path() {
    let (status, tunnelled) = smuggle(
        "GET /api/_info HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert_ne!(status, Some(101), "the gateway opened an h2c tunnel");
    assert!(
        tunnelled.is_none(),
        "smuggled bytes reached the upstream: {tunnelled:?}"
    );
}

/// The same with credentials: an authenticated tunnel is still a tunnel past the gateway.
#[tokio::test]
async fn upgrade_h2c_authenticated() {
    let (status, tunnelled) = smuggle(
        "GET /api/datasets/ds HTTP/1.1\r\nHost: gw\r\nX-Argilla-Api-Key: alice-key\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert_ne!(status, Some(101), "the gateway opened an h2c tunnel");
    assert!(
        tunnelled.is_none(),
        "smuggled bytes reached the upstream: {tunnelled:?}"
    );
}

/// An anonymous WebSocket upgrade on a public path: nothing in Argilla's public surface speaks
/// WebSocket, and after the switch the gateway sees nothing.
#[tokio::test]
async fn upgrade_websocket_anonymous_on_public_path() {
    let (status, tunnelled) = smuggle(
        "GET /api/docs HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    assert_ne!(status, Some(101), "the gateway opened an anonymous tunnel");
    assert!(
        tunnelled.is_none(),
        "smuggled bytes reached the upstream: {tunnelled:?}"
    );
}

/// `Upgrade` without `Connection: upgrade` is a plain request: the header is hop-by-hop and
/// must not reach the upstream.
#[tokio::test]
async fn upgrade_header_without_connection_is_dropped() {
    let rig = Rig::start().await;
    let reply = rig
        .raw(alice(&[
            ("Upgrade", "h2c"),
            ("TE", "trailers"),
            ("Keep-Alive", "timeout=5"),
        ]))
        .await;
    assert_eq!(reply.status(), 200);
    let rec = rig.up.only();
    for name in ["upgrade", "te", "keep-alive"] {
        assert!(
            rec.all(name).is_empty(),
            "{name} reached the upstream: {rec:#?}"
        );
    }
}
