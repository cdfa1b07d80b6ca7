//! The hostile suite: the gateway attacked the way the advisories of oauth2-proxy, Traefik,
//! Caddy and nginx describe, and through Argilla's own holes. Every case runs over real
//! sockets (raw TCP where an HTTP client would normalise the attack away) and asserts both what
//! the client got and what the upstream did or did not receive.
//!
//! Modules: `credentials`, `spoofing`, `paths`, `queries`, `framing`, `users_file`, `faults`,
//! `slow`, `nothing_lost`; `harness` holds the recording upstream and the raw client.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic on failure, like tests"
)]
#![allow(clippy::too_many_lines, reason = "case tables are long on purpose")]

#[path = "../common/mod.rs"]
mod common;

/// A case whose request must be refused in Argilla's error shape with nothing reaching the
/// upstream.
macro_rules! refused {
    ($($(#[$meta:meta])* $name:ident: $request:expr => $status:literal $code:literal;)*) => {$(
        $(#[$meta])*
        #[tokio::test]
        async fn $name() {
            let rig = $crate::harness::Rig::start().await;
            let reply = rig.raw($request).await;
            reply.assert_error($status, $code);
            rig.up.assert_nothing();
        }
    )*};
}

/// A case that must be forwarded exactly once, to `path` with `query`, speaking for `user`
/// and nobody else.
macro_rules! forwarded {
    ($($(#[$meta:meta])* $name:ident: $request:expr => $path:literal, $query:expr, $user:literal;)*) => {$(
        $(#[$meta])*
        #[tokio::test]
        async fn $name() {
            let rig = $crate::harness::Rig::start().await;
            let reply = rig.raw($request).await;
            assert_eq!(reply.status(), 200, "{}\n{}", reply.head, reply.text());
            $crate::harness::assert_one(&rig.up, $path, $query, $user);
        }
    )*};
}

/// A case the HTTP parser must refuse (one of `statuses`, or a closed connection) with
/// nothing reaching the upstream.
macro_rules! malformed {
    ($($(#[$meta:meta])* $name:ident: $request:expr => [$($status:literal),+];)*) => {$(
        $(#[$meta])*
        #[tokio::test]
        async fn $name() {
            let rig = $crate::harness::Rig::start().await;
            let reply = rig.raw($request).await;
            reply.assert_refused(&[$($status),+]);
            rig.up.assert_nothing();
        }
    )*};
}

mod credentials;
mod faults;
mod framing;
mod harness;
mod nothing_lost;
mod paths;
mod queries;
mod slow;
mod spoofing;
mod users_file;

/// The token secret the suite's gateways use (so tokens can be forged with and without it).
pub const TEST_SECRET: &str = "test-secret-0123456789abcdef";
