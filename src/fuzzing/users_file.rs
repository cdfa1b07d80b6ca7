//! The users-file loader: any bytes → a store or an error, never a panic. When a store is
//! built, it holds exactly what the file says under Argilla's rules: every hash is bcrypt in
//! a form Argilla accepts ($2a$/$2b$/$2y$), every key finds its user, every user has their own
//! workspace and only valid workspace names.

use std::path::Path;

use crate::users::{UserStore, check_bcrypt_hash, is_valid_workspace};
use serde_yaml::Value;

/// The value with every YAML tag dropped (`! workspaces` is the key `workspaces` to a typed
/// reader and to Python's `safe_load`, but a tagged key to `Value`).
fn untag(value: Value) -> Value {
    match value {
        Value::Tagged(tagged) => untag(tagged.value),
        Value::Sequence(items) => Value::Sequence(items.into_iter().map(untag).collect()),
        Value::Mapping(map) => {
            Value::Mapping(map.into_iter().map(|(k, v)| (untag(k), untag(v))).collect())
        }
        other => other,
    }
}

/// Runs one input through the properties above; panics when one breaks.
pub fn check(data: &[u8]) {
    // The hash check on its own, for any text.
    if let Ok(text) = std::str::from_utf8(data)
        && check_bcrypt_hash(text).is_ok()
    {
        assert!(
            ["$2a$", "$2b$", "$2y$"].iter().any(|p| text.starts_with(p)),
            "accepted a hash that is not $2a$/$2b$/$2y$: {text:?}"
        );
        assert_eq!(text.len(), 60);
    }
    let Ok(store) = UserStore::parse(Path::new("users.yml"), data) else {
        return;
    };
    // Read the same file independently and hold the store to it.
    let text = std::str::from_utf8(data).expect("a store was built from non-UTF-8");
    let Value::Sequence(entries) =
        untag(serde_yaml::from_str(text).expect("a store was built from bad YAML"))
    else {
        // Includes a document of comments only: as empty as an empty file, which is refused.
        panic!("a store was built from a document that is not a list");
    };
    assert_eq!(store.len(), entries.len(), "users were lost or invented");
    for entry in &entries {
        let field = |name: &str| entry.get(name).and_then(Value::as_str).map(str::to_owned);
        let username = field("username").expect("a user without a username was accepted");
        let hash = field("hashed_password").expect("a user without a hash was accepted");
        let key = field("api_key").expect("a user without a key was accepted");
        assert!(
            ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) && hash.len() == 60,
            "accepted a hash that is not $2a$/$2b$/$2y$ bcrypt: {hash:?}"
        );
        let user = store.by_name(&username).expect("a listed user is missing");
        assert_eq!(
            store.by_key(&key).map(|u| u.username.as_str()),
            Some(username.as_str()),
            "a key does not find its own user"
        );
        assert!(user.workspaces.contains(&username), "no own workspace");
        assert!(user.workspaces.iter().all(|w| is_valid_workspace(w)));
        for workspace in &user.workspaces {
            assert!(store.may_access(user, workspace));
        }
        let listed = entry.get("workspaces");
        let explicit = entry.get("superuser").and_then(Value::as_bool);
        let expected_super = explicit.unwrap_or(matches!(listed, None | Some(Value::Null)));
        assert_eq!(
            user.superuser, expected_super,
            "superuser rule broken for {username}"
        );
        assert!(!store.may_access(user, "-not-a-workspace"));
    }
}
