//! The routes the gateway answers itself: `GET /healthz`, `GET /api/me` and the web app's login
//! `POST /api/security/token`, in Argilla 1.5's shapes.

use std::{net::IpAddr, time::Duration};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{Map, Value, json};

use crate::{
    auth::{Authenticator, Identity},
    body::{Body, full},
    error::Reject,
    token::Tokens,
};

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `GET /healthz`: the process is up. Says nothing else.
#[must_use]
pub fn health() -> Response<Body> {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

/// `GET /readyz`: 200 when the gateway can serve, 503 otherwise. Says nothing else.
#[must_use]
pub fn ready(ready: bool) -> Response<Body> {
    if ready {
        json_response(StatusCode::OK, &json!({"status": "ready"}))
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "not ready"}),
        )
    }
}

/// `GET /api/me` for the authenticated user: Argilla 1.5's `User` with `exclude_none`. Never a
/// key or a hash.
#[must_use]
pub fn me(identity: &Identity) -> Response<Body> {
    let user = &identity.user;
    let mut body = Map::new();
    body.insert("username".into(), json!(user.username));
    if let Some(email) = &user.email {
        body.insert("email".into(), json!(email));
    }
    if let Some(full_name) = &user.full_name {
        body.insert("full_name".into(), json!(full_name));
    }
    if let Some(disabled) = user.disabled {
        body.insert("disabled".into(), json!(disabled));
    }
    body.insert("superuser".into(), json!(user.superuser));
    body.insert(
        "workspaces".into(),
        json!(identity.store.workspaces_of(user)),
    );
    json_response(StatusCode::OK, &Value::Object(body))
}

/// Reads a body the gateway must see, up to `limit` bytes and within `deadline` for all of it.
///
/// # Errors
/// 413 past the limit, 408 past the deadline, 400 when the client's body breaks off.
pub async fn read_body(body: Incoming, limit: usize, deadline: Duration) -> Result<Bytes, Reject> {
    use hyper::body::Body as _;
    // A declared length over the limit is refused before anything is read (and before a client
    // that sent `Expect: 100-continue` is told to go on).
    if body.size_hint().lower() > limit as u64 {
        return Err(Reject::PayloadTooLarge { limit });
    }
    let read = tokio::time::timeout(deadline, Limited::new(body, limit).collect());
    match read.await.map_err(|_| Reject::RequestTimeout)? {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(Reject::PayloadTooLarge { limit })
        }
        Err(_) => Err(Reject::BadRequest(
            "The request body could not be read".into(),
        )),
    }
}

fn missing(field: &str) -> Reject {
    Reject::Validation {
        location: vec!["body".into(), field.into()],
        message: "field required".into(),
        kind: "value_error.missing",
    }
}

/// `POST /api/security/token`: form-urlencoded `username` and `password` → a gateway token.
///
/// # Errors
/// 422 for a body that is not a form with both fields, 401 for wrong credentials, 400 for a
/// disabled user, 429 when a failure budget is spent, 413 and 408 for a body over `limit` or
/// not sent within `deadline`.
pub async fn login(
    auth: &Authenticator<'_>,
    tokens: &Tokens,
    request: Request<Incoming>,
    client: IpAddr,
    limit: usize,
    deadline: Duration,
) -> Result<Response<Body>, Reject> {
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    let bytes = read_body(request.into_body(), limit, deadline).await?;
    if !is_form {
        return Err(missing("username"));
    }
    let mut username = None;
    let mut password = None;
    for (name, value) in form_urlencoded::parse(&bytes) {
        match &*name {
            "username" => username = Some(value.into_owned()),
            "password" => password = Some(value.into_owned()),
            _ => {}
        }
    }
    let username = username.ok_or_else(|| missing("username"))?;
    let password = password.ok_or_else(|| missing("password"))?;
    let store = auth.users.snapshot();
    let user = auth
        .password(&store, &username, &password, client)
        .await
        .map_err(|reject| match reject {
            // The web app must never see a Basic challenge (it would pop a browser dialog).
            Reject::Unauthenticated { reason, .. } => Reject::Unauthenticated {
                basic: false,
                reason,
            },
            other => other,
        })?;
    if user.is_disabled() {
        return Err(Reject::Inactive {
            user: user.username.clone(),
        });
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"access_token": tokens.issue(&user), "token_type": "bearer"}),
    ))
}
