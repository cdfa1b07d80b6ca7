//! The workspace resolver and rewriter: any route, method, query, workspace headers and body
//! → a decision or a refusal; never a panic. An allowed decision's workspace is one the user
//! may use, and the forwarded query names exactly that one workspace, once.

use std::{path::Path, sync::OnceLock};

use crate::{
    config::{DEFAULT_PASSWORD_HASH, Mode},
    policy::{self, Request, authorize, body_fields, rewrite_query},
    route::{self, Api, Route},
    users::{UserStore, is_valid_workspace},
};
use http::{HeaderMap, HeaderValue, Method};

fn store() -> &'static UserStore {
    static STORE: OnceLock<UserStore> = OnceLock::new();
    STORE.get_or_init(|| {
        let h = DEFAULT_PASSWORD_HASH;
        let text = format!(
            "- username: root\n  hashed_password: '{h}'\n  api_key: k-root\n\
             - username: alice\n  hashed_password: '{h}'\n  api_key: k-alice\n  workspaces: [team-a, shared]\n\
             - username: bob\n  hashed_password: '{h}'\n  api_key: k-bob\n  workspaces: []\n\
             - username: carol\n  hashed_password: '{h}'\n  api_key: k-carol\n  workspaces: [team-b, Team-C]\n\
             - username: erin\n  hashed_password: '{h}'\n  api_key: k-erin\n  workspaces: [team-e]\n  superuser: true\n"
        );
        UserStore::parse(Path::new("users.yml"), text.as_bytes()).expect("fixed store parses")
    })
}

const USERS: [&str; 5] = ["root", "alice", "bob", "carol", "erin"];
const APIS: [Api; 11] = [
    Api::DatasetList,
    Api::DatasetCreate,
    Api::DatasetCopy,
    Api::DatasetDelete,
    Api::RecordsDelete,
    Api::SettingsDelete,
    Api::SettingsSave,
    Api::Dataset,
    Api::V1,
    Api::ServerStatus,
    Api::Other,
];
const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
];
const HEADERS: [&str; 4] = [
    "x-argilla-workspace",
    "x-rubrix-workspace",
    "X-Argilla-Workspace",
    "x-other",
];

/// The decoded `workspace` values of a query, as the upstream (Starlette) reads them.
fn workspace_values(query: &str) -> Vec<String> {
    form_urlencoded::parse(query.as_bytes())
        .filter(|(name, _)| name == "workspace")
        .map(|(_, value)| value.into_owned())
        .collect()
}

/// Runs one input through the properties above; panics when one breaks.
#[expect(clippy::too_many_lines, reason = "one input, one chain of properties")]
pub fn check(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    // Sections separated by 0xff: path, query, header lines, body.
    let mut parts = rest.split(|b| *b == 0xff);
    let path = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let query_bytes = parts.next().unwrap_or_default();
    let header_bytes = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();

    let store = store();
    let user = store
        .by_name(USERS[usize::from(control) % USERS.len()])
        .expect("every listed user is in the store");
    let method = &METHODS[usize::from(control / 5) % METHODS.len()];
    let mode = if control & 0x80 == 0 {
        Mode::Service
    } else {
        Mode::Passthrough
    };

    // The route table on the path: never a panic, never a dot segment let through.
    let mut headers = HeaderMap::new();
    for line in header_bytes.split(|b| *b == b'\n') {
        let Some((&selector, value)) = line.split_first() else {
            continue;
        };
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(HEADERS[usize::from(selector) % HEADERS.len()], value);
        }
    }
    let target = format!("/{path}");
    let classified = route::classify(method, &target, &headers);
    if let Ok(decoded) = route::decoded_path(&target) {
        assert!(!decoded.split(['/', '\\']).any(|s| s == ".." || s == "."));
    } else {
        assert!(classified.is_err());
    }
    let api = match classified {
        Ok(Route::Api(api)) if control & 0x40 == 0 => api,
        _ => APIS[usize::from(control) % APIS.len()],
    };

    let Ok(query) = std::str::from_utf8(query_bytes) else {
        return;
    };
    let query = (!query.is_empty()).then_some(query);
    let fields = match api {
        Api::DatasetCreate | Api::DatasetCopy => match body_fields(body) {
            Ok(fields) => Some(fields),
            Err(reject) => {
                assert_eq!(reject.status(), 422);
                return;
            }
        },
        _ => None,
    };
    let request = Request {
        api,
        query,
        headers: &headers,
        body: fields.as_ref(),
    };
    let Ok(decision) = authorize(store, user, &request, mode) else {
        return;
    };
    let forwarded = decision.query.as_deref().unwrap_or_default();
    assert!(!forwarded.contains(';') || query.is_some_and(|q| q.contains(';')));
    let values = workspace_values(forwarded);
    if let Some(workspace) = &decision.workspace {
        assert!(is_valid_workspace(workspace), "{workspace:?}");
        assert!(
            store.may_access(user, workspace),
            "{} may not use {workspace}",
            user.username
        );
        assert_eq!(
            values,
            std::slice::from_ref(workspace),
            "forwarded query {forwarded:?}"
        );
    } else {
        assert!(
            values.is_empty(),
            "unchecked workspace forwarded: {forwarded:?}"
        );
        assert!(matches!(
            api,
            Api::DatasetList | Api::V1 | Api::ServerStatus | Api::Other
        ));
    }
    if let Some(target) = &decision.target_workspace {
        assert!(store.may_access(user, target));
    }
    if let Some(filter) = &decision.filter {
        assert!(decision.workspace.is_none());
        assert_eq!(filter, &store.workspaces_of(user));
    }
    if mode == Mode::Service && !user.superuser {
        assert!(!matches!(
            api,
            Api::DatasetDelete | Api::SettingsDelete | Api::SettingsSave | Api::V1 | Api::Other
        ));
    }
    // The rewriter alone: whatever the query, one checked workspace comes out.
    let rewritten = rewrite_query(query, Some("team-a")).expect("a query with a workspace");
    assert_eq!(workspace_values(&rewritten), ["team-a"], "{rewritten:?}");
    let _ = policy::WORKSPACE_HEADERS;
}
