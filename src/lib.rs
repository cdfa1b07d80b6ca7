//! argilla-gateway: an authenticating, workspace-checking reverse proxy for Argilla 1.x.
//!
//! One request, end to end (`server::serve`):
//! 1. [`route::classify`]: public, answered here (`/healthz`, `/api/me`, login), or forwarded.
//! 2. [`auth`]: the first credential present decides (API key, gateway token, Basic).
//! 3. [`policy::authorize`]: one checked workspace, or a rejection in Argilla's shape.
//! 4. [`proxy`]: client credentials and identity headers out, ours in, bodies streamed over the
//!    client connection's own upstream connection ([`upstream`]).
//!
//! [`oidc`] answers `/oauth2/*` when single sign-on is configured.
//!
//! [`users::Users`] holds the users file as one snapshot and swaps it whole on every reload.
#![warn(missing_docs)]

pub mod admission;
pub mod answer;
pub mod auth;
pub mod body;
pub mod config;
pub mod error;
pub mod limit;
pub mod metrics;
pub mod oidc;
pub mod policy;
pub mod proxy;
pub mod route;
pub mod server;
pub mod tls;
pub mod token;
pub mod upstream;
pub mod users;
