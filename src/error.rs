//! The two kinds of failure: [`Error`] stops the gateway at start (configuration, users file,
//! bind), [`Reject`] ends one request with an answer in Argilla's error shape.
//!
//! [`Reject::status`] is the only place a rejection becomes an HTTP status, and
//! [`Reject::into_response`] the only place it becomes a body, so every refusal the gateway
//! makes looks like one Argilla would have made: `{"detail":{"code":"argilla.api.errors::<Name>",
//! "params":{…}}}` (reference, section 1.4).

use std::{path::PathBuf, time::Duration};

use http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Value, json};

use crate::body::{Body, full};

/// A failure that keeps the gateway from starting (or a reload from being applied).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    ConfigRead {
        /// The file that was asked for.
        path: PathBuf,
        /// Why reading it failed.
        source: std::io::Error,
    },
    /// A configuration setting is missing, unknown or invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The users file could not be read or is not valid.
    #[error("users file {path}: {message}")]
    Users {
        /// The users file.
        path: PathBuf,
        /// Every problem found, one per line, each naming the line and the user where known.
        message: String,
    },
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address from the configuration.
        addr: std::net::SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The file watcher could not be started.
    #[error("cannot watch {path}: {source}")]
    Watch {
        /// The folder that was to be watched.
        path: PathBuf,
        /// The watcher's reason.
        source: notify::Error,
    },
}

/// Why one request is answered by the gateway instead of reaching the upstream.
#[derive(Debug, thiserror::Error)]
pub enum Reject {
    /// No credentials, or credentials that do not match a user.
    #[error("missing or invalid credentials ({reason})")]
    Unauthenticated {
        /// Whether the request tried Basic: only then is `WWW-Authenticate: Basic` sent, so
        /// that browsers never pop a dialog over the web app.
        basic: bool,
        /// What was wrong, for the log only (never a secret).
        reason: &'static str,
    },
    /// The user exists and proved who they are, but is `disabled: true`.
    #[error("user {user} is disabled")]
    Inactive {
        /// The username.
        user: String,
    },
    /// Too many failed authentications from this address or for this username.
    #[error("too many failed authentications ({scope}); retry in {}s", retry_after.as_secs())]
    TooManyRequests {
        /// `address` or `username`, for the log.
        scope: &'static str,
        /// When the budget has room again.
        retry_after: Duration,
    },
    /// The request names its workspace ambiguously or with a malformed value.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The workspace is not one of the user's (the same answer whether or not it exists).
    #[error("workspace {workspace} is not accessible")]
    WorkspaceNotFound {
        /// The workspace name as the request gave it (already validated against the pattern).
        workspace: String,
    },
    /// The user may not perform this operation.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A body the gateway must read is not what the route expects.
    #[error("invalid request body: {message}")]
    Validation {
        /// Which part of the request (`body`, `body.workspace`, …).
        location: Vec<String>,
        /// What is wrong with it.
        message: String,
        /// A pydantic-style error type (`value_error.jsondecode`, `type_error.str`, …).
        kind: &'static str,
    },
    /// A body the gateway must read is larger than its limit.
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The client did not send its request body in time (whole-body deadline or idle
    /// timeout). The connection is closed after the answer.
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    /// The upstream could not be reached or failed mid-way.
    #[error("upstream request failed")]
    Upstream(#[source] crate::upstream::Error),
    /// The upstream did not answer in time.
    #[error("upstream did not answer within {}s", .0.as_secs())]
    UpstreamTimeout(Duration),
    /// The upstream answered something the gateway had to read and could not.
    #[error("upstream answer unusable: {0}")]
    UpstreamResponse(String),
}

impl Reject {
    /// The HTTP status of this rejection: the one place where a rejection becomes a status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            Self::Inactive { .. } | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::WorkspaceNotFound { .. } => StatusCode::NOT_FOUND,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Upstream(_) | Self::UpstreamResponse(_) => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// Argilla's error class name and `params` for this rejection.
    fn code_and_params(&self) -> (&'static str, Value) {
        match self {
            Self::Unauthenticated { .. } => (
                "UnauthorizedError",
                json!({"detail": "Could not validate credentials"}),
            ),
            Self::Inactive { .. } => ("InactiveUserError", json!({"detail": "Inactive user"})),
            Self::TooManyRequests { retry_after, .. } => (
                "TooManyRequestsError",
                json!({"detail": format!(
                    "Too many failed authentication attempts. Retry in {} seconds.",
                    retry_after.as_secs().max(1)
                )}),
            ),
            Self::BadRequest(message) => ("BadRequestError", json!({"message": message})),
            Self::WorkspaceNotFound { workspace } => (
                "EntityNotFoundError",
                json!({"name": workspace, "type": "Workspace"}),
            ),
            Self::Forbidden(detail) => ("ForbiddenOperationError", json!({"detail": detail})),
            Self::Validation {
                location,
                message,
                kind,
            } => (
                "ValidationError",
                json!({"model": "Request", "errors": [{"loc": location, "msg": message, "type": kind}]}),
            ),
            Self::PayloadTooLarge { limit } => (
                "BadRequestError",
                json!({"message": format!("Request body larger than the gateway's limit of {limit} bytes")}),
            ),
            Self::RequestTimeout => (
                "BadRequestError",
                json!({"message": "The request body did not arrive in time; the connection is closed"}),
            ),
            Self::Upstream(_) => (
                "GenericServerError",
                json!({"type": "BadGateway", "message": "The Argilla server could not be reached", "args": [], "detail": "The Argilla server could not be reached"}),
            ),
            Self::UpstreamTimeout(_) => (
                "GenericServerError",
                json!({"type": "GatewayTimeout", "message": "The Argilla server did not answer in time", "args": [], "detail": "The Argilla server did not answer in time"}),
            ),
            Self::UpstreamResponse(_) => (
                "GenericServerError",
                json!({"type": "BadGateway", "message": "The Argilla server sent an answer the gateway could not read", "args": [], "detail": "The Argilla server sent an answer the gateway could not read"}),
            ),
        }
    }

    /// The response the client gets: Argilla's error JSON, plus `WWW-Authenticate` when Basic
    /// was tried and `Retry-After` on 429.
    #[must_use]
    pub fn into_response(self) -> Response<Body> {
        let (code, params) = self.code_and_params();
        let body =
            json!({"detail": {"code": format!("argilla.api.errors::{code}"), "params": params}});
        let mut response = Response::new(full(body.to_string()));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match &self {
            Self::Unauthenticated { basic: true, .. } => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"argilla\", charset=\"UTF-8\""),
                );
            }
            Self::TooManyRequests { retry_after, .. } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after.as_secs().max(1)),
                );
            }
            // The rest of the body may still be on its way: the connection cannot be reused.
            Self::RequestTimeout => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

/// A rejection's message with its `source()` chain, for the log.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn body_json(response: Response<Body>) -> Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn unauthorized_has_argilla_shape_and_no_challenge_without_basic() {
        let response = Reject::Unauthenticated {
            basic: false,
            reason: "test",
        }
        .into_response();
        assert_eq!(response.status(), 401);
        assert!(response.headers().get(header::WWW_AUTHENTICATE).is_none());
        assert_eq!(
            body_json(response).await,
            json!({"detail":{"code":"argilla.api.errors::UnauthorizedError","params":{"detail":"Could not validate credentials"}}})
        );
    }

    #[tokio::test]
    async fn basic_attempt_gets_a_challenge() {
        let response = Reject::Unauthenticated {
            basic: true,
            reason: "test",
        }
        .into_response();
        assert!(
            response.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Basic ")
        );
    }

    #[tokio::test]
    async fn workspace_not_found_names_the_workspace() {
        let response = Reject::WorkspaceNotFound {
            workspace: "team-b".into(),
        }
        .into_response();
        assert_eq!(response.status(), 404);
        assert_eq!(
            body_json(response).await,
            json!({"detail":{"code":"argilla.api.errors::EntityNotFoundError","params":{"name":"team-b","type":"Workspace"}}})
        );
    }

    #[tokio::test]
    async fn too_many_requests_carries_retry_after() {
        let response = Reject::TooManyRequests {
            scope: "address",
            retry_after: Duration::from_secs(7),
        }
        .into_response();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
        let body = body_json(response).await;
        assert!(body["detail"]["params"]["detail"].is_string());
    }

    #[test]
    fn every_status_is_an_error_status() {
        let all = [
            Reject::Inactive { user: "u".into() },
            Reject::BadRequest("b".into()),
            Reject::Forbidden("f".into()),
            Reject::PayloadTooLarge { limit: 1 },
            Reject::RequestTimeout,
            Reject::UpstreamTimeout(Duration::from_secs(1)),
            Reject::UpstreamResponse("x".into()),
            Reject::Validation {
                location: vec!["body".into()],
                message: "m".into(),
                kind: "value_error",
            },
        ];
        let statuses: Vec<u16> = all.iter().map(|r| r.status().as_u16()).collect();
        assert_eq!(statuses, [400, 400, 403, 413, 408, 504, 502, 422]);
    }
}
