use std::path::Path;

use http::HeaderValue;

use super::*;

fn store() -> UserStore {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let hash = HASH.get_or_init(|| bcrypt::hash("pw", 4).unwrap());
    let text = format!(
        "- username: root\n  hashed_password: '{hash}'\n  api_key: k-root\n\
         - username: alice\n  hashed_password: '{hash}'\n  api_key: k-alice\n  workspaces: [team-a, shared]\n\
         - username: bob\n  hashed_password: '{hash}'\n  api_key: k-bob\n  workspaces: []\n\
         - username: carol\n  hashed_password: '{hash}'\n  api_key: k-carol\n  workspaces: [team-b, Team-C]\n"
    );
    UserStore::parse(Path::new("users.yml"), text.as_bytes()).unwrap()
}

/// What a case expects: the forwarded query, or a rejection status.
#[derive(Debug, PartialEq)]
enum Want {
    Query(Option<&'static str>),
    Status(u16),
}
use Want::{Query, Status};

struct Case {
    name: &'static str,
    user: &'static str,
    api: Api,
    query: Option<&'static str>,
    headers: &'static [(&'static str, &'static str)],
    body: Option<&'static str>,
    mode: Mode,
    want: Want,
}

const fn case(
    name: &'static str,
    user: &'static str,
    api: Api,
    query: Option<&'static str>,
    want: Want,
) -> Case {
    Case {
        name,
        user,
        api,
        query,
        headers: &[],
        body: None,
        mode: Mode::Service,
        want,
    }
}

impl Case {
    const fn headers(mut self, headers: &'static [(&'static str, &'static str)]) -> Self {
        self.headers = headers;
        self
    }
    const fn body(mut self, body: &'static str) -> Self {
        self.body = Some(body);
        self
    }
    const fn passthrough(mut self) -> Self {
        self.mode = Mode::Passthrough;
        self
    }
}

fn run(store: &UserStore, c: &Case) -> Result<Decision, Reject> {
    let user = store.by_name(c.user).unwrap();
    let mut headers = HeaderMap::new();
    for (name, value) in c.headers {
        headers.append(*name, HeaderValue::from_bytes(value.as_bytes()).unwrap());
    }
    let body = c.body.map(|b| body_fields(b.as_bytes())).transpose()?;
    authorize(
        store,
        user,
        &Request {
            api: c.api,
            query: c.query,
            headers: &headers,
            body: body.as_ref(),
        },
        c.mode,
    )
}

#[test]
#[rustfmt::skip]
#[expect(clippy::too_many_lines, reason = "the table is the test")]
fn policy_table() {
    use Api::*;
    let cases = [
        // Resolution sources.
        case("no workspace: own", "alice", Dataset, None, Query(Some("workspace=alice"))),
        case("query", "alice", Dataset, Some("workspace=team-a"), Query(Some("workspace=team-a"))),
        case("argilla header", "alice", Dataset, None, Query(Some("workspace=team-a"))).headers(&[("x-argilla-workspace", "team-a")]),
        case("rubrix header", "alice", Dataset, None, Query(Some("workspace=shared"))).headers(&[("x-rubrix-workspace", "shared")]),
        case("query beats headers", "alice", Dataset, Some("workspace=team-a"), Query(Some("workspace=team-a"))).headers(&[("x-argilla-workspace", "shared")]),
        case("argilla beats rubrix", "alice", Dataset, None, Query(Some("workspace=team-a"))).headers(&[("x-argilla-workspace", "team-a"), ("x-rubrix-workspace", "shared")]),
        case("query beats forbidden header", "alice", Dataset, Some("workspace=team-a"), Query(Some("workspace=team-a"))).headers(&[("x-argilla-workspace", "team-b")]),
        case("forbidden query beats allowed header", "alice", Dataset, Some("workspace=team-b"), Status(404)).headers(&[("x-argilla-workspace", "team-a")]),
        case("empty query falls to header", "alice", Dataset, Some("workspace="), Query(Some("workspace=shared"))).headers(&[("x-argilla-workspace", "shared")]),
        case("bare name is empty", "alice", Dataset, Some("workspace"), Query(Some("workspace=alice"))),
        case("last non-empty query value", "alice", Dataset, Some("workspace=team-a&workspace="), Query(Some("workspace=team-a"))),
        case("empty then value", "alice", Dataset, Some("workspace=&workspace=team-a"), Query(Some("workspace=team-a"))),
        case("same value twice", "alice", Dataset, Some("workspace=team-a&workspace=team-a"), Query(Some("workspace=team-a"))),
        case("empty header falls to rubrix", "alice", Dataset, None, Query(Some("workspace=shared"))).headers(&[("x-argilla-workspace", ""), ("x-rubrix-workspace", "shared")]),
        case("header name case-insensitive", "alice", Dataset, None, Query(Some("workspace=team-a"))).headers(&[("X-ARGILLA-WORKSPACE", "team-a")]),
        case("repeated header same value", "alice", Dataset, None, Query(Some("workspace=team-a"))).headers(&[("x-argilla-workspace", "team-a"), ("x-argilla-workspace", "team-a")]),
        // Ambiguity refused.
        case("two query values", "alice", Dataset, Some("workspace=team-a&workspace=shared"), Status(400)),
        case("two query values, second forbidden", "alice", Dataset, Some("workspace=team-a&workspace=team-b"), Status(400)),
        case("repeated header different", "alice", Dataset, None, Status(400)).headers(&[("x-argilla-workspace", "team-a"), ("x-argilla-workspace", "shared")]),
        case("repeated rubrix header different", "alice", Dataset, None, Status(400)).headers(&[("x-rubrix-workspace", "team-a"), ("x-rubrix-workspace", "shared")]),
        case("folded header", "alice", Dataset, None, Status(400)).headers(&[("x-argilla-workspace", "team-a, shared")]),
        case("semicolon in query", "alice", Dataset, Some("workspace=team-a;workspace=team-b"), Status(400)),
        case("semicolon elsewhere in query", "alice", Dataset, Some("a=1;b=2"), Status(400)),
        case("encoded name with plain", "alice", Dataset, Some("work%73pace=team-a&workspace=team-a"), Status(400)),
        case("plus-encoded name with plain", "alice", Dataset, Some("workspace=team-a&%77orkspace=team-a"), Status(400)),
        // Percent-encoding.
        case("encoded name alone", "alice", Dataset, Some("work%73pace=team-a"), Query(Some("workspace=team-a"))),
        case("encoded value", "alice", Dataset, Some("workspace=team%2Da"), Query(Some("workspace=team-a"))),
        case("encoded forbidden value", "alice", Dataset, Some("workspace=team%2Db"), Status(404)),
        case("encoded name forbidden value", "alice", Dataset, Some("work%73pace=team-b"), Status(404)),
        case("encoded slash", "alice", Dataset, Some("workspace=team-a%2F..%2Fteam-b"), Status(400)),
        case("plus is space", "alice", Dataset, Some("workspace=team+a"), Status(400)),
        case("encoded space", "alice", Dataset, Some("workspace=team%20a"), Status(400)),
        case("dot dot", "alice", Dataset, Some("workspace=../x"), Status(400)),
        case("leading dash", "alice", Dataset, Some("workspace=-team"), Status(400)),
        case("unicode lookalike", "alice", Dataset, Some("workspace=te%D0%B0m-a"), Status(400)),
        case("header with space", "alice", Dataset, None, Status(400)).headers(&[("x-argilla-workspace", "team a")]),
        case("header non-ascii", "alice", Dataset, None, Status(400)).headers(&[("x-argilla-workspace", "t\u{e9}am")]),
        case("malformed rubrix header while argilla wins", "alice", Dataset, None, Status(400)).headers(&[("x-argilla-workspace", "team-a"), ("x-rubrix-workspace", "../x")]),
        case("query names are case-sensitive", "alice", Dataset, Some("Workspace=team-b"), Query(Some("Workspace=team-b&workspace=alice"))),
        case("WORKSPACE upper is another param", "alice", Dataset, Some("WORKSPACE=team-b&workspace=team-a"), Query(Some("WORKSPACE=team-b&workspace=team-a"))),
        // Rewrite keeps other parameters in order and bytes.
        case("other params kept", "alice", Dataset, Some("limit=10&workspace=team-a&from=5"), Query(Some("limit=10&from=5&workspace=team-a"))),
        case("encoded bytes kept", "alice", Dataset, Some("q=a%20b+c&workspace=team-a"), Query(Some("q=a%20b+c&workspace=team-a"))),
        case("empty pairs dropped", "alice", Dataset, Some("&&limit=1&"), Query(Some("limit=1&workspace=alice"))),
        case("encoded workspace name removed", "alice", Dataset, Some("x=1&work%73pace=shared"), Query(Some("x=1&workspace=shared"))),
        // Users.
        case("own workspace for []", "bob", Dataset, Some("workspace=bob"), Query(Some("workspace=bob"))),
        case("[] user other workspace", "bob", Dataset, Some("workspace=team-a"), Status(404)),
        case("[] user default", "bob", Dataset, None, Query(Some("workspace=bob"))),
        case("listed user other user's own", "alice", Dataset, Some("workspace=bob"), Status(404)),
        case("uppercase listed workspace", "carol", Dataset, Some("workspace=Team-C"), Query(Some("workspace=Team-C"))),
        case("case matters for workspaces", "carol", Dataset, Some("workspace=team-c"), Status(404)),
        case("superuser any named workspace", "root", Dataset, Some("workspace=team-b"), Query(Some("workspace=team-b"))),
        case("superuser another user's own", "root", Dataset, Some("workspace=bob"), Query(Some("workspace=bob"))),
        case("superuser unknown workspace", "root", Dataset, Some("workspace=nowhere"), Status(404)),
        case("superuser default own", "root", Dataset, None, Query(Some("workspace=root"))),
        case("unknown and forbidden look alike", "alice", Dataset, Some("workspace=nowhere"), Status(404)),
        // Dataset list.
        case("list without workspace is filtered", "alice", DatasetList, None, Query(None)),
        case("list empty workspace is filtered", "alice", DatasetList, Some("workspace="), Query(None)),
        case("list keeps other params", "alice", DatasetList, Some("x=1&workspace="), Query(Some("x=1"))),
        case("list with workspace", "alice", DatasetList, Some("workspace=team-a"), Query(Some("workspace=team-a"))),
        case("list forbidden workspace", "alice", DatasetList, Some("workspace=team-b"), Status(404)),
        case("list by header", "alice", DatasetList, None, Query(Some("workspace=shared"))).headers(&[("x-argilla-workspace", "shared")]),
        // Body fields.
        case("create body workspace wins", "alice", DatasetCreate, Some("workspace=shared"), Query(Some("workspace=team-a"))).body(r#"{"name":"ds","workspace":"team-a"}"#),
        case("create body forbidden", "alice", DatasetCreate, Some("workspace=team-a"), Status(404)).body(r#"{"name":"ds","workspace":"team-b"}"#),
        case("create empty body workspace", "alice", DatasetCreate, Some("workspace=shared"), Query(Some("workspace=shared"))).body(r#"{"name":"ds","workspace":""}"#),
        case("create null body workspace", "alice", DatasetCreate, None, Query(Some("workspace=alice"))).body(r#"{"name":"ds","workspace":null}"#),
        case("create duplicate keys last wins", "alice", DatasetCreate, None, Status(404)).body(r#"{"workspace":"team-a","workspace":"team-b"}"#),
        case("create duplicate keys last allowed", "alice", DatasetCreate, None, Query(Some("workspace=team-a"))).body(r#"{"workspace":"team-b","workspace":"team-a"}"#),
        case("create escaped body workspace", "alice", DatasetCreate, None, Status(404)).body(r#"{"workspace":"te\u0061m-b"}"#),
        case("create malformed body workspace", "alice", DatasetCreate, None, Status(400)).body(r#"{"workspace":"a/b"}"#),
        case("create numeric body workspace", "alice", DatasetCreate, None, Status(422)).body(r#"{"workspace":7}"#),
        case("create body not json", "alice", DatasetCreate, None, Status(422)).body("workspace=team-b"),
        case("create body array", "alice", DatasetCreate, None, Status(422)).body("[]"),
        case("create body NaN", "alice", DatasetCreate, None, Status(422)).body(r#"{"workspace":"team-b","x":NaN}"#),
        case("create key case", "alice", DatasetCreate, None, Query(Some("workspace=alice"))).body(r#"{"Workspace":"team-b"}"#),
        case("copy target allowed", "alice", DatasetCopy, Some("workspace=team-a"), Query(Some("workspace=team-a"))).body(r#"{"name":"c","target_workspace":"shared"}"#),
        case("copy target forbidden", "alice", DatasetCopy, Some("workspace=team-a"), Status(404)).body(r#"{"name":"c","target_workspace":"team-b"}"#),
        case("copy source forbidden", "alice", DatasetCopy, Some("workspace=team-b"), Status(404)).body(r#"{"name":"c","target_workspace":"team-a"}"#),
        case("copy without target", "alice", DatasetCopy, None, Query(Some("workspace=alice"))).body(r#"{"name":"c"}"#),
        case("copy malformed target", "alice", DatasetCopy, None, Status(400)).body(r#"{"name":"c","target_workspace":"../x"}"#),
        // Destructive routes.
        case("delete by non-superuser, service", "alice", DatasetDelete, Some("workspace=team-a"), Status(403)),
        case("delete by superuser, service", "root", DatasetDelete, Some("workspace=team-a"), Query(Some("workspace=team-a"))),
        case("delete by non-superuser, passthrough", "alice", DatasetDelete, Some("workspace=team-a"), Query(Some("workspace=team-a"))).passthrough(),
        case("delete forbidden workspace is 404 first", "alice", DatasetDelete, Some("workspace=team-b"), Status(404)),
        case("hard delete records, service", "alice", RecordsDelete, Some("workspace=team-a"), Status(403)),
        case("discard records", "alice", RecordsDelete, Some("workspace=team-a&mark_as_discarded=true"), Query(Some("mark_as_discarded=true&workspace=team-a"))),
        case("discard with pydantic word", "alice", RecordsDelete, Some("mark_as_discarded=Yes"), Query(Some("mark_as_discarded=Yes&workspace=alice"))),
        case("discard false is hard", "alice", RecordsDelete, Some("mark_as_discarded=false"), Status(403)),
        case("discard last value wins", "alice", RecordsDelete, Some("mark_as_discarded=true&mark_as_discarded=0"), Status(403)),
        case("hard delete records, superuser", "root", RecordsDelete, None, Query(Some("workspace=root"))),
        case("hard delete records, passthrough", "alice", RecordsDelete, None, Query(Some("workspace=alice"))).passthrough(),
        case("settings delete, service", "alice", SettingsDelete, None, Status(403)),
        case("settings delete, superuser", "root", SettingsDelete, None, Query(Some("workspace=root"))),
        case("settings delete, passthrough", "alice", SettingsDelete, None, Query(Some("workspace=alice"))).passthrough(),
        case("settings save, service", "alice", SettingsSave, Some("workspace=team-a"), Status(403)),
        case("settings save (deprecated PUT), service", "alice", SettingsSave, None, Status(403)).headers(&[("x-argilla-workspace", "team-a")]),
        case("settings save, other team: the workspace answer comes first", "alice", SettingsSave, Some("workspace=team-b"), Status(404)),
        case("settings save, superuser", "root", SettingsSave, Some("workspace=team-a"), Query(Some("workspace=team-a"))),
        case("settings save, passthrough", "alice", SettingsSave, Some("workspace=team-a"), Query(Some("workspace=team-a"))).passthrough(),
        // v1 and unknown routes.
        case("v1 non-superuser, service", "alice", V1, None, Status(403)),
        case("v1 superuser, service", "root", V1, Some("a=1"), Query(Some("a=1"))),
        case("v1 passthrough", "alice", V1, Some("a=1"), Query(Some("a=1"))).passthrough(),
        case("v1 passthrough forbidden workspace", "alice", V1, Some("workspace=team-b"), Status(404)).passthrough(),
        case("unknown route without workspace, passthrough", "alice", Other, Some("a=1"), Query(Some("a=1"))).passthrough(),
        case("unknown route with workspace, passthrough", "alice", Other, None, Query(Some("workspace=team-a"))).headers(&[("x-rubrix-workspace", "team-a")]).passthrough(),
        case("unknown route, non-superuser, service", "alice", Other, Some("a=1"), Status(403)),
        case("unknown route, non-superuser with own workspace, service", "alice", Other, None, Status(403)).headers(&[("x-rubrix-workspace", "team-a")]),
        case("unknown route, superuser, service", "root", Other, Some("a=1"), Query(Some("a=1"))),
        case("status, non-superuser, service", "bob", ServerStatus, None, Query(None)),
        case("unknown route forbidden workspace", "alice", Other, Some("workspace=team-b"), Status(404)),
        case("unknown route ambiguous", "alice", Other, Some("workspace=team-a&workspace=shared"), Status(400)),
    ];
    assert!(cases.len() >= 80, "{} cases", cases.len());
    let store = store();
    for c in &cases {
        match (run(&store, c), &c.want) {
            (Ok(decision), Query(query)) => {
                assert_eq!(decision.query.as_deref(), *query, "case {:?}", c.name);
            }
            (Err(reject), Status(status)) => {
                assert_eq!(
                    reject.status().as_u16(),
                    *status,
                    "case {:?}: {reject}",
                    c.name
                );
            }
            (got, want) => panic!("case {:?}: got {got:?}, want {want:?}", c.name),
        }
    }
}

#[test]
fn list_filter_is_the_users_workspaces() {
    let store = store();
    let c = case("list", "alice", Api::DatasetList, None, Query(None));
    assert_eq!(
        run(&store, &c).unwrap().filter.unwrap(),
        ["team-a", "shared", "alice"]
    );
    let c = case("list", "root", Api::DatasetList, None, Query(None));
    let all = run(&store, &c).unwrap().filter.unwrap();
    assert!(all.contains(&"bob".to_owned()) && all.contains(&"Team-C".to_owned()));
}

#[test]
fn copy_target_is_reported() {
    let store = store();
    let c = case("copy", "alice", Api::DatasetCopy, None, Query(None))
        .body(r#"{"target_workspace":"shared"}"#);
    assert_eq!(
        run(&store, &c).unwrap().target_workspace.as_deref(),
        Some("shared")
    );
}

#[test]
fn not_found_names_the_workspace() {
    let store = store();
    let c = case(
        "x",
        "alice",
        Api::Dataset,
        Some("workspace=team-b"),
        Status(404),
    );
    match run(&store, &c) {
        Err(Reject::WorkspaceNotFound { workspace }) => assert_eq!(workspace, "team-b"),
        other => panic!("{other:?}"),
    }
}
