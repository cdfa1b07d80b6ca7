//! The test users and their users file: one set of names, passwords, keys and workspaces for
//! every test binary, and a builder for files with fewer, more or changed users.
//!
//! The standard users are `root` (a superuser: no `workspaces`), `alice` (`team-a`, `shared`, an
//! e-mail and a full name), `bob` (`workspaces: []`: his own workspace only), `carol`
//! (`team-b`) and `dave` (disabled, `team-a`). Each user's password is `<name>-pw` and key
//! `<name>-key`; hashes are bcrypt at cost 4, made by the `bcrypt` crate once per password and
//! test binary.

use std::{
    collections::HashMap,
    fmt::Write as _,
    path::Path,
    sync::{Mutex, OnceLock},
};

/// bcrypt of `password` at cost 4, once per test binary.
pub fn hash(password: &str) -> String {
    static HASHES: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    HASHES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap()
        .entry(password.to_owned())
        .or_insert_with(|| bcrypt::hash(password, 4).unwrap())
        .clone()
}

/// One user of a users file.
#[derive(Debug, Clone)]
pub struct Entry {
    pub username: String,
    pub hashed_password: String,
    pub api_key: String,
    pub email: Option<String>,
    pub full_name: Option<String>,
    pub disabled: bool,
    /// `None`: no `workspaces` key at all.
    pub workspaces: Option<Vec<String>>,
}

impl Entry {
    /// `name` with password `<name>-pw`, key `<name>-key` and no other field.
    pub fn new(name: &str) -> Self {
        Self {
            username: name.to_owned(),
            hashed_password: hash(&format!("{name}-pw")),
            api_key: format!("{name}-key"),
            email: None,
            full_name: None,
            disabled: false,
            workspaces: None,
        }
    }

    /// Another password (hashed at cost 4).
    pub fn password(self, password: &str) -> Self {
        self.hashed(hash(password))
    }

    /// A hash made by the caller (a costlier one, for tests that time bcrypt).
    pub fn hashed(mut self, hash: impl Into<String>) -> Self {
        self.hashed_password = hash.into();
        self
    }

    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.api_key = key.into();
        self
    }

    pub fn email(mut self, email: &str) -> Self {
        self.email = Some(email.to_owned());
        self
    }

    pub fn full_name(mut self, name: &str) -> Self {
        self.full_name = Some(name.to_owned());
        self
    }

    /// `disabled: true`.
    pub fn disabled(mut self) -> Self {
        self.disabled = true;
        self
    }

    /// `workspaces: [..]` (an empty slice writes `workspaces: []`).
    pub fn workspaces(mut self, workspaces: &[&str]) -> Self {
        self.workspaces = Some(workspaces.iter().map(|&w| w.to_owned()).collect());
        self
    }

    /// The entry as the users file holds it: `- username: …` and two-space keys, one a line.
    pub fn yaml(&self) -> String {
        let mut text = format!(
            "- username: {}\n  hashed_password: '{}'\n  api_key: {}\n",
            self.username, self.hashed_password, self.api_key
        );
        if let Some(email) = &self.email {
            let _ = writeln!(text, "  email: {email}");
        }
        if let Some(name) = &self.full_name {
            let _ = writeln!(text, "  full_name: {name}");
        }
        if self.disabled {
            text += "  disabled: true\n";
        }
        if let Some(workspaces) = &self.workspaces {
            let _ = writeln!(text, "  workspaces: [{}]", workspaces.join(", "));
        }
        text
    }
}

/// The standard users, in file order (see the module documentation).
pub fn standard() -> Vec<Entry> {
    vec![
        Entry::new("root"),
        Entry::new("alice")
            .email("alice@example.com")
            .full_name("Alice A")
            .workspaces(&["team-a", "shared"]),
        Entry::new("bob").workspaces(&[]),
        Entry::new("carol").workspaces(&["team-b"]),
        Entry::new("dave").disabled().workspaces(&["team-a"]),
    ]
}

/// A users file, built from entries.
#[derive(Debug, Clone, Default)]
pub struct UsersFile {
    pub entries: Vec<Entry>,
}

impl UsersFile {
    /// No users (add some with [`UsersFile::with`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// The standard users.
    pub fn standard() -> Self {
        Self {
            entries: standard(),
        }
    }

    /// `entry` added at the end (a username already present is kept: duplicates are for tests
    /// that want them refused).
    pub fn with(mut self, entry: Entry) -> Self {
        self.entries.push(entry);
        self
    }

    /// The user `name` changed by `change`, in place.
    pub fn change(mut self, name: &str, change: impl FnOnce(Entry) -> Entry) -> Self {
        let entry = self
            .entries
            .iter_mut()
            .find(|e| e.username == name)
            .unwrap_or_else(|| panic!("no user {name} to change"));
        *entry = change(entry.clone());
        self
    }

    /// The file's text.
    pub fn yaml(&self) -> String {
        self.entries.iter().map(Entry::yaml).collect()
    }

    /// Writes the file to `path`.
    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.yaml()).expect("write users file");
    }
}

/// The standard users file's text.
pub fn users_yaml() -> String {
    UsersFile::standard().yaml()
}
