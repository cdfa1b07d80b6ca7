//! The route table: method + path → public, answered here, or forwarded, and for forwarded
//! routes what the policy must do with the workspace. It reads like the reference's route list
//! (section 3.2).
//!
//! Paths are classified in their percent-decoded form, because that is what the upstream
//! (uvicorn + Starlette) routes on: `/api/datasets/d%73` is the dataset `ds` there, so it is here
//! too. Dot segments are refused outright: Starlette does not normalise them, but anything
//! between the gateway and Argilla might, and no Argilla route needs one.

use std::borrow::Cow;

use http::{HeaderMap, Method};
use percent_encoding::percent_decode_str;

use crate::error::Reject;

/// What the gateway does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Forwarded without credentials: the web app's files and SPA routes, `/api/docs*`,
    /// `/api/_info`, CORS preflights.
    Public,
    /// `GET /healthz`: answered here.
    Health,
    /// `GET /readyz`: answered here.
    Ready,
    /// `POST /api/security/token`: the web app's login, answered here.
    Login,
    /// `GET /api/me`: answered here for the authenticated user.
    Me,
    /// Authenticated, then forwarded.
    Api(Api),
}

/// An authenticated, forwarded route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `GET /api/datasets[/]`: a workspace is optional; without one the answer is filtered.
    DatasetList,
    /// `POST /api/datasets`: a non-empty body `workspace` wins over the request's.
    DatasetCreate,
    /// `PUT /api/datasets/{name}:copy`: body `target_workspace` must be allowed too.
    DatasetCopy,
    /// `DELETE /api/datasets/{name}`: superusers only in service mode.
    DatasetDelete,
    /// `DELETE /api/datasets/{name}/data`: a hard delete is for superusers only in service mode.
    RecordsDelete,
    /// `DELETE /api/datasets/{name}/{task}/settings`: superusers only in service mode.
    SettingsDelete,
    /// `PATCH /api/datasets/{name}/{task}/settings` and the deprecated
    /// `PUT /api/datasets/{task}/{name}/settings` (the label schema): superusers only in service
    /// mode, as Argilla 1.5 refuses them to other users.
    SettingsSave,
    /// The table's other routes under `/api/datasets`: one workspace, the user's own by default.
    Dataset,
    /// `/api/v1/*` (Argilla 1.8+, keyed by UUID).
    V1,
    /// `/api/_status` (Argilla 1.5: search-engine and memory details): authenticated.
    ServerStatus,
    /// An `/api/` route outside the table, under `/api/datasets` too: authenticated; a workspace
    /// it names is checked; in service mode for superusers only, since the gateway cannot know
    /// which of Argilla's identity rules such a route would need.
    Other,
}

impl Api {
    /// A short label for logs and metrics.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::DatasetList => "dataset_list",
            Self::DatasetCreate => "dataset_create",
            Self::DatasetCopy => "dataset_copy",
            Self::DatasetDelete => "dataset_delete",
            Self::RecordsDelete => "records_delete",
            Self::SettingsDelete => "settings_delete",
            Self::SettingsSave => "settings_save",
            Self::Dataset => "dataset",
            Self::V1 => "v1",
            Self::ServerStatus => "status",
            Self::Other => "other",
        }
    }
}

/// A route class: the `route` of the access log and of the request metrics, one value per
/// class so that a class cannot be counted under another's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A request that was refused before it had a route (bad target, bad `Host`, …).
    Invalid,
    /// [`Route::Public`].
    Public,
    /// [`Route::Health`] and [`Route::Ready`].
    Health,
    /// [`Route::Login`].
    Login,
    /// [`Route::Me`].
    Me,
    /// [`Route::Api`].
    Api(Api),
    /// `/oauth2/*` and the sign-in redirects, answered by single sign-on (not a [`Route`]).
    Sso,
}

impl Class {
    /// Every class, in the order of [`Class::index`].
    pub const ALL: [Self; 17] = [
        Self::Public,
        Self::Health,
        Self::Login,
        Self::Me,
        Self::Api(Api::DatasetList),
        Self::Api(Api::DatasetCreate),
        Self::Api(Api::DatasetCopy),
        Self::Api(Api::DatasetDelete),
        Self::Api(Api::RecordsDelete),
        Self::Api(Api::SettingsDelete),
        Self::Api(Api::SettingsSave),
        Self::Api(Api::Dataset),
        Self::Api(Api::V1),
        Self::Api(Api::ServerStatus),
        Self::Api(Api::Other),
        Self::Invalid,
        Self::Sso,
    ];

    /// This class's place in [`Class::ALL`] (a counter's index).
    #[must_use]
    pub fn index(self) -> usize {
        match self {
            Self::Public => 0,
            Self::Health => 1,
            Self::Login => 2,
            Self::Me => 3,
            Self::Api(api) => 4 + api as usize,
            Self::Invalid => 15,
            Self::Sso => 16,
        }
    }

    /// The `route` label value.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::Public => "public",
            Self::Health => "health",
            Self::Login => "login",
            Self::Me => "me",
            Self::Sso => "sso",
            Self::Api(api) => api.label(),
        }
    }
}

impl Route {
    /// The class this route is logged and counted under.
    #[must_use]
    pub fn class(self) -> Class {
        match self {
            Self::Public => Class::Public,
            Self::Health | Self::Ready => Class::Health,
            Self::Login => Class::Login,
            Self::Me => Class::Me,
            Self::Api(api) => Class::Api(api),
        }
    }
}

/// A path segment pattern.
#[derive(Clone, Copy)]
enum Seg {
    /// Exactly this text.
    Lit(&'static str),
    /// A dataset name, metric name, record id, …: any non-empty segment.
    Any,
    /// One of Argilla's task names.
    Task,
    /// `{name}` followed by this literal suffix, like `{name}:copy`.
    Suffix(&'static str),
    /// `{task}` followed by this literal suffix, like `{task}:bulk`.
    TaskSuffix(&'static str),
    /// `{query:path}`: one or more segments, to the end.
    Rest,
}

use Seg::{Any, Lit, Rest, Suffix, Task, TaskSuffix};

const TASKS: [&str; 3] = ["TextClassification", "TokenClassification", "Text2Text"];
const GET: &[Method] = &[Method::GET];
const POST: &[Method] = &[Method::POST];
const PUT: &[Method] = &[Method::PUT];
const DELETE: &[Method] = &[Method::DELETE];
const GET_PATCH: &[Method] = &[Method::GET, Method::PATCH];
const PATCH: &[Method] = &[Method::PATCH];
const GET_POST: &[Method] = &[Method::GET, Method::POST];
const GET_PATCH_DELETE: &[Method] = &[Method::GET, Method::PATCH, Method::DELETE];

/// Argilla 1.5's v0 dataset routes (after `/api/datasets`), both task-first and name-first.
const DATASET_ROUTES: &[(&[Method], &[Seg], Api)] = &[
    (GET, &[], Api::DatasetList),
    (GET, &[Lit("")], Api::DatasetList),
    (POST, &[], Api::DatasetCreate),
    (POST, &[Lit("")], Api::DatasetCreate),
    (GET_PATCH, &[Any], Api::Dataset),
    (DELETE, &[Any], Api::DatasetDelete),
    (PUT, &[Suffix(":close")], Api::Dataset),
    (PUT, &[Suffix(":open")], Api::Dataset),
    (PUT, &[Suffix(":copy")], Api::DatasetCopy),
    (POST, &[Any, TaskSuffix(":bulk")], Api::Dataset),
    (POST, &[Any, TaskSuffix(":search")], Api::Dataset),
    (POST, &[Any, Lit("records"), Lit(":search")], Api::Dataset),
    (GET_PATCH, &[Any, Lit("records"), Any], Api::Dataset),
    (DELETE, &[Any, Lit("data")], Api::RecordsDelete),
    (GET, &[Any, Task, Lit("metrics")], Api::Dataset),
    (
        POST,
        &[Any, Task, Lit("metrics"), Suffix(":summary")],
        Api::Dataset,
    ),
    (GET, &[Task, Any, Lit("metrics")], Api::Dataset),
    (
        POST,
        &[Task, Any, Lit("metrics"), Suffix(":summary")],
        Api::Dataset,
    ),
    (
        GET_POST,
        &[
            Any,
            Lit("TextClassification"),
            Lit("labeling"),
            Lit("rules"),
        ],
        Api::Dataset,
    ),
    (
        GET,
        &[
            Any,
            Lit("TextClassification"),
            Lit("labeling"),
            Lit("rules"),
            Lit("metrics"),
        ],
        Api::Dataset,
    ),
    (
        GET_PATCH_DELETE,
        &[
            Any,
            Lit("TextClassification"),
            Lit("labeling"),
            Lit("rules"),
            Rest,
        ],
        Api::Dataset,
    ),
    (
        GET_POST,
        &[
            Lit("TextClassification"),
            Any,
            Lit("labeling"),
            Lit("rules"),
        ],
        Api::Dataset,
    ),
    (
        GET,
        &[
            Lit("TextClassification"),
            Any,
            Lit("labeling"),
            Lit("rules"),
            Lit("metrics"),
        ],
        Api::Dataset,
    ),
    (
        GET_PATCH_DELETE,
        &[
            Lit("TextClassification"),
            Any,
            Lit("labeling"),
            Lit("rules"),
            Rest,
        ],
        Api::Dataset,
    ),
    // Settings: GET, PATCH (save), DELETE; the deprecated task-first form saves with PUT.
    (GET, &[Any, Task, Lit("settings")], Api::Dataset),
    (PATCH, &[Any, Task, Lit("settings")], Api::SettingsSave),
    (DELETE, &[Any, Task, Lit("settings")], Api::SettingsDelete),
    (GET, &[Task, Any, Lit("settings")], Api::Dataset),
    (PUT, &[Task, Any, Lit("settings")], Api::SettingsSave),
    (DELETE, &[Task, Any, Lit("settings")], Api::SettingsDelete),
];

fn is_task(segment: &str) -> bool {
    TASKS.contains(&segment)
}

fn matches(pattern: &[Seg], segments: &[&str]) -> bool {
    let mut rest = segments;
    for (i, seg) in pattern.iter().enumerate() {
        if let Rest = seg {
            return i == pattern.len() - 1 && !rest.is_empty();
        }
        let Some((&first, tail)) = rest.split_first() else {
            return false;
        };
        let ok = match *seg {
            Lit(text) => first == text,
            Any => !first.is_empty(),
            Task => is_task(first),
            Suffix(suffix) => first.len() > suffix.len() && first.ends_with(suffix),
            TaskSuffix(suffix) => first.strip_suffix(suffix).is_some_and(is_task),
            Rest => unreachable!("handled above"),
        };
        if !ok {
            return false;
        }
        rest = tail;
    }
    rest.is_empty()
}

/// The percent-decoded path, as the upstream routes on it.
///
/// # Errors
/// 400 when the decoded path is not UTF-8, contains a control character or a dot segment.
pub fn decoded_path(raw: &str) -> Result<Cow<'_, str>, Reject> {
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| Reject::BadRequest("The request path is not valid UTF-8".into()))?;
    if decoded.chars().any(char::is_control) {
        return Err(Reject::BadRequest(
            "The request path contains a control character".into(),
        ));
    }
    // A segment's `;` parameters are ignored by some servers (`..;` is `..` to Tomcat).
    if decoded
        .split(['/', '\\'])
        .map(|s| s.split(';').next().unwrap_or(s))
        .any(|s| s == "." || s == "..")
    {
        return Err(Reject::BadRequest(
            "The request path contains a `.` or `..` segment".into(),
        ));
    }
    // `//api/…` is `/api/…` to anything that merges slashes (nginx does by default).
    let inner = decoded.strip_prefix('/').unwrap_or(&decoded);
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    if inner.split('/').any(str::is_empty) && !inner.is_empty() || decoded.starts_with("//") {
        return Err(Reject::BadRequest(
            "The request path contains an empty segment (`//`)".into(),
        ));
    }
    Ok(decoded)
}

/// Classifies a request.
///
/// # Errors
/// 400 for paths that [`decoded_path`] refuses.
pub fn classify(method: &Method, raw_path: &str, headers: &HeaderMap) -> Result<Route, Reject> {
    let path = decoded_path(raw_path)?;
    if method == Method::GET || method == Method::HEAD {
        match &*path {
            "/healthz" => return Ok(Route::Health),
            "/readyz" => return Ok(Route::Ready),
            _ => {}
        }
    }
    let Some(api_path) = path.strip_prefix("/api/") else {
        return Ok(Route::Public);
    };
    if method == Method::OPTIONS
        && headers.contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return Ok(Route::Public);
    }
    if api_path == "docs" || api_path.starts_with("docs/") || api_path == "_info" {
        return Ok(Route::Public);
    }
    if api_path == "security/token" && method == Method::POST {
        return Ok(Route::Login);
    }
    if api_path == "me" && method == Method::GET {
        return Ok(Route::Me);
    }
    if api_path == "v1" || api_path.starts_with("v1/") {
        return Ok(Route::Api(Api::V1));
    }
    if api_path == "_status" {
        return Ok(Route::Api(Api::ServerStatus));
    }
    let segments: Vec<&str> = api_path.split('/').collect();
    if segments[0] != "datasets" {
        return Ok(Route::Api(Api::Other));
    }
    let mut tail = &segments[1..];
    // One trailing slash does not hide a route from the table (`DELETE /api/datasets/ds/`);
    // `GET /api/datasets/` keeps it, as that is a route of its own.
    if tail.len() > 1 && tail.last() == Some(&"") {
        tail = &tail[..tail.len() - 1];
    }
    let kind = DATASET_ROUTES
        .iter()
        .find(|(methods, pattern, _)| methods.contains(method) && matches(pattern, tail))
        .map_or(Api::Other, |&(_, _, kind)| kind);
    Ok(Route::Api(kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_has_its_own_index_and_label() {
        let labels: Vec<&str> = Class::ALL.iter().map(|c| c.label()).collect();
        assert_eq!(
            labels,
            [
                "public",
                "health",
                "login",
                "me",
                "dataset_list",
                "dataset_create",
                "dataset_copy",
                "dataset_delete",
                "records_delete",
                "settings_delete",
                "settings_save",
                "dataset",
                "v1",
                "status",
                "other",
                "invalid",
                "sso",
            ]
        );
        for (i, class) in Class::ALL.iter().enumerate() {
            assert_eq!(class.index(), i, "{class:?}");
        }
    }

    fn route(method: &str, path: &str) -> Result<Route, u16> {
        let mut headers = HeaderMap::new();
        if method == "PREFLIGHT" {
            headers.insert("access-control-request-method", "POST".parse().unwrap());
        }
        let method = if method == "PREFLIGHT" {
            "OPTIONS"
        } else {
            method
        };
        classify(&method.parse().unwrap(), path, &headers).map_err(|r| r.status().as_u16())
    }

    #[test]
    #[expect(clippy::too_many_lines, reason = "the table is the test")]
    fn route_table() {
        use Api::*;
        let cases: &[(&str, &str, &str, Result<Route, u16>)] = &[
            ("spa root", "GET", "/", Ok(Route::Public)),
            ("static asset", "GET", "/_nuxt/app.js", Ok(Route::Public)),
            (
                "spa dataset page",
                "GET",
                "/datasets/team-a/ds",
                Ok(Route::Public),
            ),
            ("api without slash", "GET", "/api", Ok(Route::Public)),
            (
                "upper-case api is not api",
                "GET",
                "/API/me",
                Ok(Route::Public),
            ),
            ("docs", "GET", "/api/docs", Ok(Route::Public)),
            ("docs spec", "GET", "/api/docs/spec.json", Ok(Route::Public)),
            ("docs lookalike", "GET", "/api/docsx", Ok(Route::Api(Other))),
            ("info", "GET", "/api/_info", Ok(Route::Public)),
            (
                "status needs auth",
                "GET",
                "/api/_status",
                Ok(Route::Api(ServerStatus)),
            ),
            ("preflight", "PREFLIGHT", "/api/datasets", Ok(Route::Public)),
            (
                "options without preflight is no route of the table",
                "OPTIONS",
                "/api/datasets",
                Ok(Route::Api(Other)),
            ),
            ("login", "POST", "/api/security/token", Ok(Route::Login)),
            (
                "login GET is not login",
                "GET",
                "/api/security/token",
                Ok(Route::Api(Other)),
            ),
            ("me", "GET", "/api/me", Ok(Route::Me)),
            (
                "me trailing slash",
                "GET",
                "/api/me/",
                Ok(Route::Api(Other)),
            ),
            ("health", "GET", "/healthz", Ok(Route::Health)),
            ("ready", "GET", "/readyz", Ok(Route::Ready)),
            ("health is GET only", "POST", "/healthz", Ok(Route::Public)),
            ("list", "GET", "/api/datasets", Ok(Route::Api(DatasetList))),
            (
                "list slash",
                "GET",
                "/api/datasets/",
                Ok(Route::Api(DatasetList)),
            ),
            (
                "create",
                "POST",
                "/api/datasets",
                Ok(Route::Api(DatasetCreate)),
            ),
            (
                "create slash",
                "POST",
                "/api/datasets/",
                Ok(Route::Api(DatasetCreate)),
            ),
            (
                "get dataset",
                "GET",
                "/api/datasets/ds",
                Ok(Route::Api(Dataset)),
            ),
            (
                "encoded name",
                "DELETE",
                "/api/datasets/d%73",
                Ok(Route::Api(DatasetDelete)),
            ),
            (
                "delete",
                "DELETE",
                "/api/datasets/ds",
                Ok(Route::Api(DatasetDelete)),
            ),
            (
                "copy",
                "PUT",
                "/api/datasets/ds:copy",
                Ok(Route::Api(DatasetCopy)),
            ),
            (
                "encoded colon copy",
                "PUT",
                "/api/datasets/ds%3Acopy",
                Ok(Route::Api(DatasetCopy)),
            ),
            (
                "close",
                "PUT",
                "/api/datasets/ds:close",
                Ok(Route::Api(Dataset)),
            ),
            (
                "bulk",
                "POST",
                "/api/datasets/ds/TextClassification:bulk",
                Ok(Route::Api(Dataset)),
            ),
            (
                "records delete",
                "DELETE",
                "/api/datasets/ds/data",
                Ok(Route::Api(RecordsDelete)),
            ),
            (
                "settings delete",
                "DELETE",
                "/api/datasets/ds/TokenClassification/settings",
                Ok(Route::Api(SettingsDelete)),
            ),
            (
                "settings delete task-first",
                "DELETE",
                "/api/datasets/TextClassification/ds/settings",
                Ok(Route::Api(SettingsDelete)),
            ),
            (
                "settings get",
                "GET",
                "/api/datasets/ds/TextClassification/settings",
                Ok(Route::Api(Dataset)),
            ),
            (
                "settings get task-first",
                "GET",
                "/api/datasets/TokenClassification/ds/settings",
                Ok(Route::Api(Dataset)),
            ),
            (
                "settings save",
                "PATCH",
                "/api/datasets/ds/TextClassification/settings",
                Ok(Route::Api(SettingsSave)),
            ),
            (
                "settings save task-first (deprecated PUT)",
                "PUT",
                "/api/datasets/TokenClassification/ds/settings",
                Ok(Route::Api(SettingsSave)),
            ),
            (
                "settings save trailing slash",
                "PATCH",
                "/api/datasets/ds/TokenClassification/settings/",
                Ok(Route::Api(SettingsSave)),
            ),
            (
                "settings PUT on the name-first form is not Argilla's",
                "PUT",
                "/api/datasets/ds/TextClassification/settings",
                Ok(Route::Api(Other)),
            ),
            (
                "settings PATCH on the task-first form is not Argilla's",
                "PATCH",
                "/api/datasets/TextClassification/ds/settings",
                Ok(Route::Api(Other)),
            ),
            (
                "rule with slash",
                "DELETE",
                "/api/datasets/ds/TextClassification/labeling/rules/a%2Fb",
                Ok(Route::Api(Dataset)),
            ),
            (
                "rules task-first",
                "GET",
                "/api/datasets/TextClassification/ds/labeling/rules",
                Ok(Route::Api(Dataset)),
            ),
            (
                "metrics summary",
                "POST",
                "/api/datasets/TextClassification/ds/metrics/m:summary",
                Ok(Route::Api(Dataset)),
            ),
            (
                "unknown dataset route",
                "GET",
                "/api/datasets/ds/whatever",
                Ok(Route::Api(Other)),
            ),
            (
                "known path, method Argilla 1.5 does not serve",
                "PUT",
                "/api/datasets/ds/records/r1",
                Ok(Route::Api(Other)),
            ),
            (
                "head is no method of the table",
                "HEAD",
                "/api/datasets/ds",
                Ok(Route::Api(Other)),
            ),
            ("v1", "GET", "/api/v1/me/datasets", Ok(Route::Api(V1))),
            (
                "unknown api",
                "GET",
                "/api/workspaces",
                Ok(Route::Api(Other)),
            ),
            ("dot segment", "GET", "/api/docs/../datasets", Err(400)),
            (
                "encoded dot segment",
                "GET",
                "/api/_info/%2e%2e/datasets",
                Err(400),
            ),
            (
                "encoded slash dot",
                "GET",
                "/api/_info/..%2Fdatasets",
                Err(400),
            ),
            ("static dot segment", "GET", "/static/../api/me", Err(400)),
            ("backslash dot", "GET", "/api/docs\\..\\datasets", Err(400)),
            ("control char", "GET", "/api/me%00", Err(400)),
            ("not utf-8", "GET", "/api/datasets/%ff", Err(400)),
            ("double slash", "GET", "/api//me", Err(400)),
            ("leading double slash", "GET", "//api/datasets", Err(400)),
            (
                "double slash in static path",
                "GET",
                "/_nuxt//a.js",
                Err(400),
            ),
            (
                "tomcat dot dot semicolon",
                "GET",
                "/api/docs/..;/datasets",
                Err(400),
            ),
            ("dot with parameter", "GET", "/static/.;x/a", Err(400)),
            (
                "semicolon in a name is kept",
                "GET",
                "/api/datasets/ds;v=1",
                Ok(Route::Api(Dataset)),
            ),
            (
                "delete with trailing slash",
                "DELETE",
                "/api/datasets/ds/",
                Ok(Route::Api(DatasetDelete)),
            ),
            (
                "settings delete trailing slash",
                "DELETE",
                "/api/datasets/ds/TextClassification/settings/",
                Ok(Route::Api(SettingsDelete)),
            ),
            ("root with slash", "GET", "/", Ok(Route::Public)),
        ];
        for (case, method, path, expected) in cases {
            assert_eq!(&route(method, path), expected, "{case}");
        }
    }
}
