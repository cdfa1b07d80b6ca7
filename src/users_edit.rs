//! Changes to the users file made in place, for `argilla-gateway users`: one entry's own lines
//! are edited and everything else stays byte for byte (comments, order, quoting, blank lines).
//!
//! Every change goes through the same three gates before a byte is written:
//! 1. [`apply`] edits the text and re-parses it: the result must equal the file as it was read
//!    with exactly the intended change (compared as YAML values), or nothing is written. A
//!    layout the line editor does not understand is refused, never guessed at.
//! 2. [`UserStore::parse`], the loader the gateway itself uses, must accept the result; its
//!    message is the refusal.
//! 3. [`commit`] writes a temporary file in the file's own folder (same permissions and owner),
//!    checks that the file still holds what was read (SHA-256 of the bytes, under a lock on the
//!    folder that other `users` commands take too), and renames it over the file: the running
//!    gateway reloads it like any other replacement and never sees half a file.
//!
//! This module holds the changes and the first two gates; where the entries and keys are and
//! the lines that change them are `layout`'s, values are written as YAML text by `render`, and
//! reading and writing the file are `file`'s.

mod file;
mod layout;
mod render;

use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};

use self::layout::{Layout, end_line, is_content};
pub use self::{
    file::{Snapshot, commit},
    render::quote,
};
use crate::users::UserStore;

/// Why a change was not made. Messages say what to do, and never hold a key, hash or password.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The file could not be read or written.
    #[error("{path}: {what}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The file changed after it was read: another administrator or an editor wrote it.
    #[error(
        "{0}: the file changed while this command ran (another `users` command or an editor \
         wrote it); nothing was written: run the command again"
    )]
    Changed(PathBuf),
    /// No user has this name.
    #[error("no user {0:?} in the users file (`users list` shows who is there)")]
    UnknownUser(String),
    /// A user with this name exists already.
    #[error("user {0:?} exists already (change it with passwd, rotate-key, set-workspaces, …)")]
    DuplicateUser(String),
    /// The file's layout is not one the line editor can change safely.
    #[error("{0}; edit the file by hand (then run `argilla-gateway check`)")]
    Layout(String),
    /// The result would not load: the gateway's own loader says why.
    #[error("refused, nothing written: {0}")]
    Invalid(String),
    /// The line editor's result was not the intended change (a layout it misread).
    #[error(
        "refused, nothing written: the edited file would not hold exactly the intended change \
         (a layout this command does not understand); edit the file by hand"
    )]
    Mismatch,
}

/// One change to the users file.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Append a user: its keys and values, in the order to write them when the file has no
    /// entry to copy the order from.
    Add(Vec<(&'static str, Value)>),
    /// Change keys of one user's entry.
    Update {
        /// The user.
        username: String,
        /// What to do to which key, in order.
        ops: Vec<Op>,
    },
    /// Remove one user's entry.
    Remove(String),
}

/// One key of an entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Set the key to this value (replacing its lines, or adding a line at the entry's end).
    Set(&'static str, Value),
    /// Remove the key's lines. When the key shares the entry's `- ` line, which cannot simply be
    /// removed, it is set to `fallback` instead (when given; else the change is refused).
    Unset(&'static str, Option<Value>),
}

/// Applies `change` to `text` (the file's content; empty for a new file) and returns the new
/// content, checked to be exactly `text` with `change` applied, as YAML values. The result is
/// not yet validated: see [`validate`].
///
/// # Errors
/// An unknown or duplicate user, a layout the editor cannot change safely, or a result that is
/// not the intended change.
#[expect(
    clippy::too_many_lines,
    reason = "one arm per kind of change, then the check"
)]
pub fn apply(text: &str, change: &Change) -> Result<String, EditError> {
    let before = parse_list(text)?;
    let layout = Layout::of(text)?;
    if layout.entries.len() != before.len() {
        return Err(EditError::Layout(format!(
            "found {} entries starting with `- ` but the file holds {} users (flow style or \
             unusual indentation)",
            layout.entries.len(),
            before.len()
        )));
    }
    let mut expected = before.clone();
    let mut lines = layout.lines.clone();
    match change {
        Change::Add(fields) => {
            let username = fields
                .iter()
                .find(|(key, _)| *key == "username")
                .and_then(|(_, v)| v.as_str())
                .unwrap_or_default();
            if find(&before, username).is_ok() {
                return Err(EditError::DuplicateUser(username.to_owned()));
            }
            let mut mapping = Mapping::new();
            for (key, value) in fields {
                mapping.insert(Value::String((*key).to_owned()), value.clone());
            }
            expected.push(Value::Mapping(mapping));
            layout.append(&mut lines, fields);
        }
        Change::Update { username, ops } => {
            let index = find(&before, username)?;
            let entry = &layout.entries[index];
            let Some(Value::Mapping(mapping)) = expected.get_mut(index) else {
                return Err(EditError::Layout(format!(
                    "the entry of {username:?} is not a mapping"
                )));
            };
            // Applied from the last line up, so that earlier line numbers stay valid.
            let mut edits: Vec<(usize, usize, Vec<String>)> = Vec::new();
            let mut appended: Vec<String> = Vec::new();
            for op in ops {
                let key = match op {
                    Op::Set(key, _) | Op::Unset(key, _) => *key,
                };
                let span = entry.keys.iter().find(|k| k.name == key);
                match (op, span) {
                    (Op::Set(_, value), Some(span)) => {
                        mapping.insert(Value::String(key.into()), value.clone());
                        edits.push((span.start, span.end, layout.key_lines(span, key, value)));
                    }
                    (Op::Set(_, value), None) => {
                        mapping.insert(Value::String(key.into()), value.clone());
                        appended.extend(layout.key_lines_new(entry.key_indent, key, value));
                    }
                    (Op::Unset(..), None) => {}
                    (Op::Unset(_, fallback), Some(span)) if span.start == entry.start => {
                        let Some(value) = fallback else {
                            return Err(EditError::Layout(format!(
                                "`{key}` is on the `- ` line of {username:?}'s entry"
                            )));
                        };
                        mapping.insert(Value::String(key.into()), value.clone());
                        edits.push((span.start, span.end, layout.key_lines(span, key, value)));
                    }
                    (Op::Unset(..), Some(span)) => {
                        mapping.remove(key);
                        edits.push((span.start, span.end, Vec::new()));
                    }
                }
            }
            if !appended.is_empty() {
                edits.push((entry.end, entry.end, appended));
            }
            edits.sort_by_key(|&(start, _, _)| std::cmp::Reverse(start));
            for (start, end, new) in edits {
                if start > 0 && start == lines.len() {
                    end_line(&mut lines[start - 1], layout.newline);
                }
                lines.splice(start..end, new);
            }
        }
        Change::Remove(username) => {
            let index = find(&before, username)?;
            expected.remove(index);
            let entry = &layout.entries[index];
            lines.drain(entry.start..entry.end);
            // Entries separated by blank lines: take one of the two around the gap with it.
            let blank = |i: usize| lines.get(i).is_some_and(|l: &String| l.trim().is_empty());
            if blank(entry.start) && (entry.start == 0 || blank(entry.start - 1)) {
                lines.remove(entry.start);
            } else if entry.start == lines.len() && entry.start > 0 && blank(entry.start - 1) {
                lines.pop();
            }
            if expected.is_empty() && !lines.iter().any(|l| is_content(l)) {
                // The last user: the file must still be a list, `[]`.
                lines.push(format!("[]{}", layout.newline));
            }
        }
    }
    let result = lines.concat();
    let after = parse_list(&result).map_err(|_| EditError::Mismatch)?;
    if after != expected {
        return Err(EditError::Mismatch);
    }
    Ok(result)
}

/// Validates `text` with the gateway's own loader, as the file at `path`.
///
/// # Errors
/// The loader's message, every problem with its line and user.
pub fn validate(path: &Path, text: &str) -> Result<UserStore, EditError> {
    UserStore::parse(path, text.as_bytes()).map_err(|e| match e {
        crate::error::Error::Users { message, .. } => EditError::Invalid(message),
        other => EditError::Invalid(other.to_string()),
    })
}

/// The file's users as YAML values (a missing or empty file: none).
fn parse_list(text: &str) -> Result<Vec<Value>, EditError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    match serde_yaml::from_str::<Value>(text) {
        Ok(Value::Sequence(list)) => Ok(list),
        Ok(Value::Null) => Ok(Vec::new()),
        Ok(_) => Err(EditError::Layout(
            "the users file is not a YAML list of users".into(),
        )),
        Err(e) => Err(EditError::Layout(format!(
            "the users file is not valid YAML now ({e})"
        ))),
    }
}

/// The index of `username`'s entry.
fn find(list: &[Value], username: &str) -> Result<usize, EditError> {
    let mut found = list
        .iter()
        .enumerate()
        .filter(|(_, v)| v.get("username").and_then(Value::as_str) == Some(username))
        .map(|(i, _)| i);
    let first = found
        .next()
        .ok_or_else(|| EditError::UnknownUser(username.to_owned()))?;
    if found.next().is_some() {
        return Err(EditError::Layout(format!(
            "user {username:?} appears more than once"
        )));
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::String(v.into())
    }

    const FILE: &str = "# users\n\n- username: ann   # first\n  hashed_password: \"$2b$04$x\"\n  api_key: k1\n  workspaces:\n    - a\n    - b\n\n# bob next\n-   username: bob\n    api_key: 'k2'\n    disabled: true\n";

    #[test]
    fn set_keeps_every_other_line() {
        let change = Change::Update {
            username: "ann".into(),
            ops: vec![Op::Set("api_key", s("new"))],
        };
        let out = apply(FILE, &change).unwrap();
        assert_eq!(out, FILE.replace("api_key: k1", "api_key: new"));
    }

    #[test]
    fn block_list_stays_block() {
        let change = Change::Update {
            username: "ann".into(),
            ops: vec![Op::Set("workspaces", Value::Sequence(vec![s("c")]))],
        };
        let out = apply(FILE, &change).unwrap();
        assert_eq!(out, FILE.replace("    - a\n    - b\n", "    - c\n"));
    }

    #[test]
    fn unset_and_add_key_in_odd_indent() {
        let change = Change::Update {
            username: "bob".into(),
            ops: vec![
                Op::Unset("disabled", Some(Value::Bool(false))),
                Op::Set("email", s("b@x.org")),
            ],
        };
        let out = apply(FILE, &change).unwrap();
        assert_eq!(
            out,
            FILE.replace("    disabled: true\n", "    email: b@x.org\n")
        );
    }

    #[test]
    fn append_follows_the_file_style() {
        let change = Change::Add(vec![
            ("username", s("cy")),
            ("hashed_password", s("$2b$04$y")),
            ("api_key", s("0abc")),
            ("workspaces", Value::Sequence(vec![])),
        ]);
        let out = apply(FILE, &change).unwrap();
        assert_eq!(
            out,
            format!(
                "{FILE}\n- username: cy\n  hashed_password: $2b$04$y\n  api_key: '0abc'\n  workspaces: []\n"
            )
        );
        let out = apply("[]\n", &change).unwrap();
        assert!(out.starts_with("- username: cy\n"), "{out}");
        let out = apply("", &change).unwrap();
        assert!(out.starts_with("- username: cy\n"), "{out}");
    }

    #[test]
    fn remove_takes_one_blank_line() {
        let out = apply(FILE, &Change::Remove("ann".into())).unwrap();
        assert_eq!(
            out,
            "# users\n\n# bob next\n-   username: bob\n    api_key: 'k2'\n    disabled: true\n"
        );
    }

    #[test]
    fn crlf_no_final_newline_and_compact_lists() {
        let crlf = "- username: ann\r\n  api_key: k1\r\n  workspaces:\r\n  - a\r\n  - b";
        let change = Change::Update {
            username: "ann".into(),
            ops: vec![
                Op::Set("workspaces", Value::Sequence(vec![s("c"), s("d")])),
                Op::Set("disabled", Value::Bool(true)),
            ],
        };
        assert_eq!(
            apply(crlf, &change).unwrap(),
            "- username: ann\r\n  api_key: k1\r\n  workspaces:\r\n  - c\r\n  - d\r\n  disabled: true\r\n"
        );
        let dash_alone = "-\n  username: ann\n  api_key: k1\n";
        let change = Change::Update {
            username: "ann".into(),
            ops: vec![Op::Set("api_key", s("k2"))],
        };
        assert_eq!(
            apply(dash_alone, &change).unwrap(),
            "-\n  username: ann\n  api_key: k2\n"
        );
    }

    #[test]
    fn removing_the_last_user_leaves_an_empty_list() {
        let out = apply(
            "# c\n- username: ann\n  api_key: k\n",
            &Change::Remove("ann".into()),
        );
        assert_eq!(out.unwrap(), "# c\n[]\n");
    }

    #[test]
    fn unset_on_the_dash_line_uses_the_fallback() {
        let text = "- disabled: true\n  username: ann\n";
        let op = |fallback| Change::Update {
            username: "ann".into(),
            ops: vec![Op::Unset("disabled", fallback)],
        };
        assert_eq!(
            apply(text, &op(Some(Value::Bool(false)))).unwrap(),
            "- disabled: false\n  username: ann\n"
        );
        assert!(matches!(apply(text, &op(None)), Err(EditError::Layout(_))));
    }

    #[test]
    fn refusals() {
        let change = Change::Remove("zed".into());
        assert!(matches!(
            apply(FILE, &change),
            Err(EditError::UnknownUser(_))
        ));
        let flow = "- {username: a, api_key: k}\n";
        assert!(matches!(
            apply(flow, &Change::Remove("a".into())),
            Err(EditError::Layout(_))
        ));
    }

    /// Mangled files (lines dropped, duplicated, re-indented, cut) never make the editor panic,
    /// and whatever it returns is exactly the intended change (`apply` checks it; this checks
    /// that the check holds by re-checking one case).
    #[test]
    fn mangled_files_never_panic() {
        use rand::{Rng as _, SeedableRng as _};
        let mut rng = rand::rngs::StdRng::seed_from_u64(20);
        let base: Vec<&str> = FILE.split_inclusive('\n').collect();
        let changes = [
            Change::Remove("ann".into()),
            Change::Remove("bob".into()),
            Change::Update {
                username: "bob".into(),
                ops: vec![
                    Op::Set("workspaces", Value::Sequence(vec![s("x")])),
                    Op::Unset("disabled", Some(Value::Bool(false))),
                ],
            },
            Change::Update {
                username: "ann".into(),
                ops: vec![Op::Set("workspaces", Value::Sequence(vec![]))],
            },
            Change::Add(vec![("username", s("cy")), ("api_key", s("k3"))]),
        ];
        let mut accepted = 0;
        for _ in 0..3000 {
            let mut lines: Vec<String> = base.iter().map(|l| (*l).to_owned()).collect();
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..lines.len());
                match rng.random_range(0..5) {
                    0 => {
                        lines.remove(i);
                    }
                    1 => lines.insert(i, lines[i].clone()),
                    2 => lines[i].insert(0, ' '),
                    3 => lines[i] = lines[i].trim_start_matches(' ').to_owned(),
                    _ => {
                        let cut = rng.random_range(0..=lines[i].len());
                        if lines[i].is_char_boundary(cut) {
                            lines[i].truncate(cut);
                        }
                    }
                }
                if lines.is_empty() {
                    break;
                }
            }
            let text = lines.concat();
            let change = &changes[rng.random_range(0..changes.len())];
            if let Ok(out) = apply(&text, change) {
                accepted += 1;
                let before = parse_list(&text).unwrap();
                let after = parse_list(&out).unwrap();
                let kept = |list: &[Value]| {
                    list.iter()
                        .filter(|v| {
                            let name = v.get("username").and_then(Value::as_str);
                            !matches!(change, Change::Update { username, .. } | Change::Remove(username) if name == Some(username.as_str()))
                                && !matches!(change, Change::Add(_) if name == Some("cy"))
                        })
                        .cloned()
                        .collect::<Vec<_>>()
                };
                assert_eq!(kept(&before), kept(&after), "{text:?} -> {out:?}");
            }
        }
        assert!(
            accepted > 300,
            "only {accepted} mangled files were editable"
        );
    }

    #[test]
    fn quoting() {
        for (raw, written) in [
            ("alice", "alice"),
            ("yes", "'yes'"),
            ("2024", "'2024'"),
            (".inf", "'.inf'"),
            ("it's", "'it''s'"),
            ("a #b", "'a #b'"),
            ("Alice A", "Alice A"),
            ("team_a", "team_a"),
            (" padded", "' padded'"),
            ("$2b$12$abc./", "$2b$12$abc./"),
        ] {
            assert_eq!(quote(raw), written, "{raw}");
        }
    }
}
