//! (user, parsed request) → [`Decision`]: the one workspace a forwarded request may carry, or a
//! rejection. Pure: no I/O, no async, so it is tested as a table.
//!
//! Resolution is Argilla 1.0–1.5's (reference, section 3.1) — the last non-empty `workspace`
//! query value, else the first `X-Argilla-Workspace`, else the first `X-Rubrix-Workspace`, else
//! the user's own — made strict where Argilla is ambiguous: two different query values, repeated
//! headers that disagree, `;` in the query, an encoded `workspace` name beside a plain one, and
//! any value that fails Argilla's pattern are refused before the upstream sees anything.

use http::HeaderMap;
use serde_json::Value;

use crate::{
    config::Mode,
    error::Reject,
    route::Api,
    users::{User, UserStore, is_valid_workspace},
};

/// The workspace headers Argilla 1.0–1.5 reads, in the order it reads them.
pub const WORKSPACE_HEADERS: [&str; 2] = ["x-argilla-workspace", "x-rubrix-workspace"];

/// Workspace fields read from the JSON body of dataset create and copy.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BodyFields {
    /// `workspace` (dataset create), when non-empty.
    pub workspace: Option<String>,
    /// `target_workspace` (dataset copy), when non-empty.
    pub target_workspace: Option<String>,
}

/// The parts of a request the policy looks at.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The route's kind.
    pub api: Api,
    /// The raw query string, if any.
    pub query: Option<&'a str>,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The body fields, for the routes whose body is read.
    pub body: Option<&'a BodyFields>,
}

/// What the gateway forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The one workspace the upstream sees, checked; `None` when the request names none and the
    /// route does not need one.
    pub workspace: Option<String>,
    /// The copy target, checked.
    pub target_workspace: Option<String>,
    /// The query to forward: every `workspace` parameter removed, other parameters unchanged in
    /// order and bytes, then `workspace=<checked>` when there is one. `None`: no query.
    pub query: Option<String>,
    /// For a dataset list without a workspace: the workspaces to keep in the answer.
    pub filter: Option<Vec<String>>,
}

/// Decides what `user` may send upstream for `request`.
///
/// # Errors
/// 400 for ambiguous or malformed workspaces, 404 for a workspace that is not the user's, 403
/// for operations the user may not perform.
pub fn authorize(
    store: &UserStore,
    user: &User,
    request: &Request<'_>,
    mode: Mode,
) -> Result<Decision, Reject> {
    let query = query_workspace(request.query)?;
    let argilla = header_workspace(request.headers, WORKSPACE_HEADERS[0])?;
    let rubrix = header_workspace(request.headers, WORKSPACE_HEADERS[1])?;
    let named = query.or(argilla).or(rubrix);
    let body = request.body.cloned().unwrap_or_default();

    let check = |workspace: String| -> Result<String, Reject> {
        if !is_valid_workspace(&workspace) {
            return Err(bad_workspace(&workspace));
        }
        if store.may_access(user, &workspace) {
            Ok(workspace)
        } else {
            Err(Reject::WorkspaceNotFound { workspace })
        }
    };
    let own = || user.username.clone();
    let superuser_only = |what: &str| -> Result<(), Reject> {
        if mode == Mode::Service && !user.superuser {
            return Err(Reject::Forbidden(format!(
                "User {} is not allowed to {what}: only superusers may",
                user.username
            )));
        }
        Ok(())
    };

    let mut filter = None;
    let mut target_workspace = None;
    let workspace = match request.api {
        Api::DatasetList => {
            if let Some(workspace) = named {
                Some(check(workspace)?)
            } else {
                filter = Some(store.workspaces_of(user));
                None
            }
        }
        Api::DatasetCreate => Some(check(body.workspace.or(named).unwrap_or_else(own))?),
        Api::DatasetCopy => {
            let source = check(named.unwrap_or_else(own))?;
            target_workspace = body.target_workspace.map(check).transpose()?;
            Some(source)
        }
        Api::DatasetDelete => {
            let workspace = check(named.unwrap_or_else(own))?;
            superuser_only("delete datasets")?;
            Some(workspace)
        }
        Api::RecordsDelete => {
            let workspace = check(named.unwrap_or_else(own))?;
            if !marks_as_discarded(request.query) {
                superuser_only("delete records (use mark_as_discarded=true to discard them)")?;
            }
            Some(workspace)
        }
        Api::SettingsDelete => {
            let workspace = check(named.unwrap_or_else(own))?;
            superuser_only("delete dataset settings")?;
            Some(workspace)
        }
        Api::SettingsSave => {
            let workspace = check(named.unwrap_or_else(own))?;
            superuser_only("save dataset settings (the label schema)")?;
            Some(workspace)
        }
        Api::Dataset => Some(check(named.unwrap_or_else(own))?),
        Api::V1 => {
            if mode == Mode::Service && !user.superuser {
                return Err(Reject::Forbidden(
                    "The /api/v1 routes are only available to superusers while the gateway runs \
                     in service mode; run it in passthrough mode to give every user their own \
                     upstream identity"
                        .into(),
                ));
            }
            named.map(check).transpose()?
        }
        Api::ServerStatus => named.map(check).transpose()?,
        Api::Other => {
            let workspace = named.map(check).transpose()?;
            if mode == Mode::Service && !user.superuser {
                return Err(Reject::Forbidden(
                    "This /api route is not one of Argilla 1.5's that the gateway knows; in \
                     service mode it would reach the upstream as a superuser, so it is for \
                     superusers only (passthrough mode gives every user their own upstream \
                     identity)"
                        .into(),
                ));
            }
            workspace
        }
    };
    Ok(Decision {
        query: rewrite_query(request.query, workspace.as_deref()),
        workspace,
        target_workspace,
        filter,
    })
}

fn bad_workspace(value: &str) -> Reject {
    let shown: String = value.chars().take(64).collect();
    Reject::BadRequest(format!(
        "Wrong workspace name {shown:?}: it must match ^[a-zA-Z0-9][a-zA-Z0-9_\\-]*$"
    ))
}

/// The query's `workspace` value: the last non-empty one, after refusing the ambiguous forms.
fn query_workspace(query: Option<&str>) -> Result<Option<String>, Reject> {
    let Some(query) = query else {
        return Ok(None);
    };
    if query.contains(';') {
        return Err(Reject::BadRequest(
            "`;` is not allowed in the query string".into(),
        ));
    }
    let mut plain = false;
    let mut encoded = false;
    let mut chosen: Option<String> = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let Some((name, value)) = form_urlencoded::parse(pair.as_bytes()).next() else {
            continue;
        };
        if name != "workspace" {
            continue;
        }
        if pair.split('=').next() == Some("workspace") {
            plain = true;
        } else {
            encoded = true;
        }
        if value.is_empty() {
            continue;
        }
        if !is_valid_workspace(&value) {
            return Err(bad_workspace(&value));
        }
        match &chosen {
            Some(previous) if *previous != value => {
                return Err(Reject::BadRequest(
                    "The query names two different workspaces".into(),
                ));
            }
            _ => chosen = Some(value.into_owned()),
        }
    }
    if plain && encoded {
        return Err(Reject::BadRequest(
            "The query names `workspace` both plainly and percent-encoded".into(),
        ));
    }
    Ok(chosen)
}

/// A workspace header's value: refused when repeated with different values or malformed.
fn header_workspace(headers: &HeaderMap, name: &str) -> Result<Option<String>, Reject> {
    let mut chosen: Option<&str> = None;
    for value in headers.get_all(name) {
        let value = value
            .to_str()
            .map_err(|_| Reject::BadRequest(format!("The {name} header is not ASCII text")))?;
        if value.is_empty() {
            continue;
        }
        if !is_valid_workspace(value) {
            return Err(bad_workspace(value));
        }
        match chosen {
            Some(previous) if previous != value => {
                return Err(Reject::BadRequest(format!(
                    "The {name} header is repeated with different values"
                )));
            }
            _ => chosen = Some(value),
        }
    }
    Ok(chosen.map(str::to_owned))
}

/// Whether `mark_as_discarded` (last value, pydantic's boolean words) is true.
fn marks_as_discarded(query: Option<&str>) -> bool {
    let value = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(name, _)| name == "mark_as_discarded")
        .last()
        .map(|(_, value)| value.to_ascii_lowercase());
    matches!(
        value.as_deref(),
        Some("1" | "on" | "t" | "true" | "y" | "yes")
    )
}

/// The query with every `workspace` parameter removed and `workspace=<workspace>` appended.
#[must_use]
pub fn rewrite_query(query: Option<&str>, workspace: Option<&str>) -> Option<String> {
    let mut out = String::new();
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let is_workspace = form_urlencoded::parse(pair.as_bytes())
            .next()
            .is_some_and(|(name, _)| name == "workspace");
        if !is_workspace {
            if !out.is_empty() {
                out.push('&');
            }
            out.push_str(pair);
        }
    }
    if let Some(workspace) = workspace {
        if !out.is_empty() {
            out.push('&');
        }
        // Checked against Argilla's pattern: nothing in it needs encoding.
        out.push_str("workspace=");
        out.push_str(workspace);
    }
    (!out.is_empty()).then_some(out)
}

/// Reads the workspace fields of a dataset create or copy body: JSON whatever the content type
/// says (as `FastAPI` does), duplicate keys resolved last-wins (as Python's `json` does).
///
/// # Errors
/// 422 when the body is not a JSON object or a field is not a string.
pub fn body_fields(bytes: &[u8]) -> Result<BodyFields, Reject> {
    let invalid = |location: &[&str], message: &str, kind: &'static str| Reject::Validation {
        location: location.iter().map(|s| (*s).to_owned()).collect(),
        message: message.to_owned(),
        kind,
    };
    let value: Value = serde_json::from_slice(bytes).map_err(|_| {
        invalid(
            &["body"],
            "the body must be a JSON object",
            "value_error.jsondecode",
        )
    })?;
    let Value::Object(map) = value else {
        return Err(invalid(
            &["body"],
            "value is not a valid dict",
            "type_error.dict",
        ));
    };
    let field = |name: &'static str| -> Result<Option<String>, Reject> {
        match map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(invalid(
                &["body", name],
                "str type expected",
                "type_error.str",
            )),
        }
    };
    Ok(BodyFields {
        workspace: field("workspace")?,
        target_workspace: field("target_workspace")?,
    })
}

#[cfg(test)]
mod tests;
