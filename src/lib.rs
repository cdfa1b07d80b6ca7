//! argilla-gateway: an authenticating, workspace-checking reverse proxy for Argilla 1.x.
//!
//! One request, end to end ([`request`], fed by [`server`]'s accept loop):
//! 1. [`route::classify`]: public, answered here (`/healthz`, `/api/me`, login), or forwarded.
//! 2. [`auth`]: the first credential present decides (API key, gateway token, Basic); passwords
//!    are checked by [`password`] (bcrypt on its own threads, remembered, coalesced).
//! 3. [`policy::authorize`]: one checked workspace, or a rejection in Argilla's shape.
//! 4. [`proxy`]: client credentials and identity headers out, ours in, bodies streamed over the
//!    client connection's own upstream connection ([`upstream`]).
//!
//! [`oidc`] answers `/oauth2/*` when single sign-on is configured.
//!
//! [`users`] reads and validates the users file; [`reload::Users`] holds it as one snapshot and
//! swaps it whole on every reload, and [`reload::Reloader`] watches its folder.
//! [`users_cmd`] is the `users` command, which changes that file through [`users_edit`].
//!
//! [`config`] holds every setting as one row (key, environment variable, default);
//! [`server::State::start`] sets up everything but the listeners.
#![warn(missing_docs)]

pub mod admission;
pub(crate) mod answer;
pub(crate) mod auth;
pub mod body;
pub mod config;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod limit;
pub mod metrics;
pub mod oidc;
pub mod password;
pub(crate) mod policy;
pub(crate) mod proxy;
pub mod reload;
pub(crate) mod request;
pub(crate) mod route;
pub mod server;
pub mod tls;
pub(crate) mod token;
pub mod upstream;
pub mod users;
pub mod users_cmd;
pub mod users_edit;
