use super::*;

/// bcrypt of `pw` at cost 4, computed once.
fn hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| bcrypt::hash("pw", 4).unwrap())
}

fn parse(text: &str) -> Result<UserStore, String> {
    UserStore::parse(
        Path::new("users.yml"),
        text.replace("HASH", hash()).as_bytes(),
    )
    .map_err(|e| e.to_string())
}

#[test]
fn argilla_semantics_for_workspaces_and_superuser() {
    let store = parse(
        "- username: root\n  hashed_password: HASH\n  api_key: k1\n\
         - username: nullws\n  hashed_password: HASH\n  api_key: k2\n  workspaces:\n\
         - username: own\n  hashed_password: HASH\n  api_key: k3\n  workspaces: []\n\
         - username: team\n  hashed_password: HASH\n  api_key: k4\n  workspaces: [team-a, Team-B, team-a]\n\
         - username: erin\n  hashed_password: HASH\n  api_key: k5\n  workspaces: [team-e]\n  superuser: true\n\
         - username: notsuper\n  hashed_password: HASH\n  api_key: k6\n  superuser: false\n",
    )
    .unwrap();
    let user = |name: &str| store.by_name(name).unwrap().clone();
    assert!(user("root").superuser, "missing workspaces");
    assert!(user("nullws").superuser, "null workspaces");
    assert!(!user("own").superuser, "[] is not a superuser");
    assert_eq!(user("own").workspaces, ["own"]);
    assert_eq!(user("team").workspaces, ["team-a", "Team-B", "team"]);
    assert!(user("erin").superuser, "explicit superuser: true");
    assert!(!user("notsuper").superuser, "explicit superuser: false");
    assert_eq!(user("notsuper").workspaces, ["notsuper"]);
    assert!(store.may_access(&user("root"), "team-e"));
    assert!(store.may_access(&user("root"), "own"));
    assert!(!store.may_access(&user("root"), "nowhere"));
    assert!(!store.may_access(&user("team"), "team-e"));
    assert!(store.may_access(&user("team"), "Team-B"));
    assert_eq!(store.by_key("k4").unwrap().username, "team");
    assert!(store.by_key("k").is_none());
}

#[test]
#[expect(clippy::too_many_lines, reason = "the table is the test")]
fn load_errors_name_line_and_user() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "plaintext password",
            "- username: a\n  hashed_password: '1234'\n  api_key: k\n",
            &["line 1", "\"a\"", "bcrypt"],
        ),
        (
            "md5 crypt",
            "- username: a\n  hashed_password: '$1$abc$def'\n  api_key: k\n",
            &["bcrypt"],
        ),
        (
            "2x hash",
            "- username: a\n  hashed_password: '$2x$04$abcdefghijklmnopqrstuu5Ff6qLPG6qk0aK3sJ1nMlXYrXbGZk1C'\n  api_key: k\n",
            &["bcrypt"],
        ),
        (
            "uppercase username",
            "- username: Alice\n  hashed_password: HASH\n  api_key: k\n",
            &["\"Alice\"", "username must be"],
        ),
        (
            "leading dash username",
            "- username: -a\n  hashed_password: HASH\n  api_key: k\n",
            &["username must be"],
        ),
        (
            "bad workspace",
            "- username: a\n  hashed_password: HASH\n  api_key: k\n  workspaces: ['../x']\n",
            &["workspace \"../x\""],
        ),
        (
            "empty key",
            "- username: a\n  hashed_password: HASH\n  api_key: ''\n",
            &["api_key"],
        ),
        (
            "bad email",
            "- username: a\n  hashed_password: HASH\n  api_key: k\n  email: nope\n",
            &["email"],
        ),
        (
            "duplicate username",
            "- username: a\n  hashed_password: HASH\n  api_key: k1\n- username: a\n  hashed_password: HASH\n  api_key: k2\n",
            &["line 4", "duplicate username", "line 1"],
        ),
        (
            "duplicate key",
            "- username: a\n  hashed_password: HASH\n  api_key: same\n- username: b\n  hashed_password: HASH\n  api_key: same\n",
            &["\"b\"", "duplicate api_key", "\"a\""],
        ),
        (
            "unknown field",
            "- username: a\n  hashed_password: HASH\n  api_key: k\n  disable: true\n",
            &["disable", "line 4"],
        ),
        (
            "missing key",
            "- username: a\n  hashed_password: HASH\n",
            &["api_key"],
        ),
        ("not a list", "username: a\n", &["list of users"]),
        ("empty file", "\n", &["empty"]),
        ("comments only", "# nobody here\n", &["no list of users"]),
        ("a bare tag", "!", &["no list of users"]),
        (
            "boolean key",
            "- username: a\n  hashed_password: HASH\n  api_key: true\n",
            &["quote it", "line 3"],
        ),
        (
            "numeric key",
            "- username: a\n  hashed_password: HASH\n  api_key: 1234567\n",
            &["quote it"],
        ),
        (
            "numeric username",
            "- username: 42\n  hashed_password: HASH\n  api_key: k\n",
            &["quote it"],
        ),
        ("a tagged null", "!!null ~\n", &["no list of users"]),
        ("invalid yaml", "- username: [a\n", &["line"]),
        (
            "wrong type",
            "- username: a\n  hashed_password: HASH\n  api_key: k\n  workspaces: team-a\n",
            &["workspaces", "line 4"],
        ),
    ];
    for (case, text, needles) in cases {
        let message = parse(text).expect_err(case);
        for needle in *needles {
            assert!(
                message.contains(needle),
                "{case}: {needle:?} not in {message}"
            );
        }
        assert!(
            !message.contains(hash()),
            "{case}: hash leaked into {message}"
        );
    }
}

#[test]
fn quoted_look_alikes_are_text_and_errors_hide_values() {
    let store = parse("- username: '42'\n  hashed_password: HASH\n  api_key: \"true\"\n").unwrap();
    assert_eq!(store.by_key("true").unwrap().username, "42");
    let message =
        parse("- username: a\n  hashed_password: HASH\n  api_key: 987654321\n").unwrap_err();
    assert!(!message.contains("987654321"), "{message}");
    let huge = "111111111111111111111111111111111"; // beyond 64 bits
    let message = parse(&format!(
        "- username: a\n  hashed_password: HASH\n  api_key: {huge}\n"
    ))
    .unwrap_err();
    assert!(
        message.contains("quote it") && !message.contains(huge),
        "{message}"
    );
    let message =
        parse("- username: a\n  hashed_password: HASH\n  api_key: k\n  full_name: true\n")
            .unwrap_err();
    assert!(message.contains("quote it"), "{message}");
    for workspace in ["2024", "true", huge, "1.5"] {
        let message = parse(&format!(
            "- username: a\n  hashed_password: HASH\n  api_key: k\n  workspaces: [team-a, {workspace}]\n"
        ))
        .unwrap_err();
        assert!(message.contains("quote it"), "{workspace}: {message}");
    }
    let store = parse(
        "- username: a\n  hashed_password: HASH\n  api_key: k\n  workspaces: ['2024', \"true\"]\n",
    )
    .unwrap();
    assert_eq!(store.by_key("k").unwrap().workspaces, ["2024", "true", "a"]);
}

#[test]
fn duplicate_key_error_never_shows_the_key() {
    let message = parse(
        "- username: a\n  hashed_password: HASH\n  api_key: s3cr3t-key\n- username: b\n  hashed_password: HASH\n  api_key: s3cr3t-key\n",
    )
    .unwrap_err();
    assert!(!message.contains("s3cr3t-key"), "{message}");
}

#[test]
fn summary_lists_a_bounded_number_of_names_and_counts_the_rest() {
    use std::fmt::Write as _;
    let mut text = String::new();
    for i in 0..120 {
        let workspaces = if i < 3 { "" } else { "\n  workspaces: []" };
        let _ = write!(
            text,
            "- username: u{i:03}\n  hashed_password: HASH\n  api_key: key-{i}{workspaces}\n"
        );
    }
    let store = UserStore::parse(
        Path::new("users.yml"),
        text.replace("HASH", hash()).as_bytes(),
    )
    .unwrap();
    let summary = describe(&store);
    assert!(
        summary.starts_with("120 users (3 superusers, 0 disabled), 120 workspaces"),
        "{summary}"
    );
    assert!(
        summary.contains("; superusers: u000, u001, u002; "),
        "{summary}"
    );
    let workspaces = summary.split("; ").last().unwrap();
    assert!(
        workspaces.starts_with("workspaces: u000, u001, "),
        "{workspaces}"
    );
    assert!(
        workspaces.ends_with(", u049, … and 70 more"),
        "{workspaces}"
    );
    assert!(!summary.contains("key-"), "no key in a summary");
}

#[test]
fn accepts_every_bcrypt_prefix_argilla_accepts() {
    let b = hash().to_owned();
    for prefix in ["$2a$", "$2b$", "$2y$"] {
        let h = format!("{prefix}{}", &b[4..]);
        assert!(check_bcrypt_hash(&h).is_ok(), "{prefix}");
        assert!(bcrypt::verify("pw", &h).unwrap(), "{prefix} verifies");
    }
    assert!(check_bcrypt_hash(crate::config::DEFAULT_PASSWORD_HASH).is_ok());
}

#[test]
fn empty_list_is_a_valid_file_with_no_users() {
    assert!(parse("[]\n").unwrap().is_empty());
    assert!(parse("!!seq []\n").unwrap().is_empty());
    assert!(parse("# nobody yet\n[]\n").unwrap().is_empty());
}

#[test]
fn default_user_is_an_argilla_superuser() {
    let store =
        UserStore::default_user("argilla.apikey", crate::config::DEFAULT_PASSWORD_HASH).unwrap();
    let user = store.by_key("argilla.apikey").unwrap();
    assert_eq!(user.username, "argilla");
    assert!(user.superuser);
    assert!(store.by_key("rubrix.apikey").is_none());
    assert_eq!(store.typical_cost(), 12);
}

#[test]
fn debug_output_has_no_secrets() {
    let store = parse("- username: a\n  hashed_password: HASH\n  api_key: topsecret\n").unwrap();
    let text = format!("{store:?}");
    assert!(
        !text.contains("topsecret") && !text.contains(hash()),
        "{text}"
    );
}
