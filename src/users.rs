//! The users file (Argilla 1.5's `users.yml`) → one immutable, validated [`UserStore`]. The live
//! store, its reloads and the folder watcher are [`crate::reload`]'s.
//!
//! Semantics are Argilla 1.5's (reference, section 2): `workspaces` missing or null makes a
//! superuser unless `superuser:` says otherwise, `[]` means only the user's own workspace, and
//! every user has the workspace named after them. A superuser may use every workspace named in
//! the file. YAML parsing stays in this module: `serde_yaml` is archived upstream.

mod explain;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeSet, HashMap},
    fmt::Write as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::Error;
use explain::{entry_lines, explain};

/// The keys an entry may have, in the order a new entry is written.
pub(crate) const FIELDS: [&str; 8] = [
    "username",
    "hashed_password",
    "api_key",
    "email",
    "full_name",
    "disabled",
    "workspaces",
    "superuser",
];

/// A SHA-256 digest: how API keys are looked up and files compared.
pub type Digest32 = [u8; 32];

/// The digest of an API key, the only form in which keys are looked up.
#[must_use]
pub fn key_digest(key: &str) -> Digest32 {
    Sha256::digest(key.as_bytes()).into()
}

/// One entry of the users file, exactly as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    #[serde(deserialize_with = "text")]
    username: String,
    #[serde(deserialize_with = "text")]
    hashed_password: String,
    #[serde(deserialize_with = "text")]
    api_key: String,
    #[serde(default)]
    email: Option<Text>,
    #[serde(default)]
    full_name: Option<Text>,
    #[serde(default)]
    disabled: Option<bool>,
    #[serde(default)]
    workspaces: Option<Vec<Text>>,
    #[serde(default)]
    superuser: Option<bool>,
}

/// A YAML string, and only a string: a plain `true`, `0x1F` or `1e3` is a boolean or a number
/// to YAML, which Argilla's Python reader would turn into another text (`True`, `31`, `1000.0`)
/// than the one written. The error never repeats the value (it may be a key).
fn text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    struct Text;
    impl serde::de::Visitor<'_> for Text {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_string<E: serde::de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<String, E> {
            Err(E::custom(NOT_TEXT))
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<String, E> {
            Err(E::custom(NOT_TEXT))
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<String, E> {
            Err(E::custom(NOT_TEXT))
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<String, E> {
            Err(E::custom(NOT_TEXT))
        }
        fn visit_i128<E: serde::de::Error>(self, _: i128) -> Result<String, E> {
            Err(E::custom(NOT_TEXT))
        }
        fn visit_u128<E: serde::de::Error>(self, _: u128) -> Result<String, E> {
            Err(E::custom(NOT_TEXT))
        }
    }
    deserializer.deserialize_any(Text)
}

/// One YAML string, under the rule of [`text`] (a workspace or full name written `true` is
/// refused: Argilla's reader would make it `True`, the gateway's `true`).
#[derive(Debug)]
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        text(deserializer).map(Text)
    }
}

const NOT_TEXT: &str =
    "a value YAML reads as a number or a boolean where text is expected: quote it";

/// A user as the gateway uses it: validated, with the own workspace added.
pub struct User {
    /// The login name, also the user's own workspace.
    pub username: String,
    /// Optional e-mail, shown by `/api/me`.
    pub email: Option<String>,
    /// Optional full name, shown by `/api/me`.
    pub full_name: Option<String>,
    /// `disabled` as written (`None` when absent): refused on every credential type when true.
    pub disabled: Option<bool>,
    /// Whether the user may use every workspace named in the file.
    pub superuser: bool,
    /// The listed workspaces in file order, then the own workspace if it was not listed.
    pub workspaces: Vec<String>,
    /// The bcrypt hash (secret: never logged or returned).
    pub(crate) hashed_password: String,
    /// The user's own key, sent upstream in passthrough mode (secret).
    pub(crate) api_key: String,
    /// A digest of the password hash: tokens carry it, so a password change ends them.
    pub password_fingerprint: Digest32,
    /// The user's position in the file (0-based), for messages about later duplicates.
    entry_index: usize,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Hand-written so that the hash and key never reach a log through `{:?}`.
        f.debug_struct("User")
            .field("username", &self.username)
            .field("disabled", &self.disabled)
            .field("superuser", &self.superuser)
            .field("workspaces", &self.workspaces)
            .finish_non_exhaustive()
    }
}

impl User {
    /// Whether the user is `disabled: true`.
    #[must_use]
    pub fn is_disabled(&self) -> bool {
        self.disabled == Some(true)
    }
}

/// Where a store came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default user (no users file).
    Default,
    /// A users file, with the digest of the content it was built from.
    File {
        /// The file.
        path: PathBuf,
        /// SHA-256 of the bytes read.
        digest: Digest32,
    },
}

/// Every user, indexed for the hot path. Immutable: a reload builds a new one.
#[derive(Debug)]
pub struct UserStore {
    by_name: HashMap<String, Arc<User>>,
    by_key: HashMap<Digest32, Arc<User>>,
    all_workspaces: BTreeSet<String>,
    /// The cost of the most common hash, used for the dummy check of unknown usernames.
    typical_cost: u32,
    /// Where these users came from.
    pub origin: Origin,
    /// What is valid but probably not meant: superusers only because `workspaces` is missing,
    /// weak bcrypt costs. At most [`SUMMARY_NAMES`] of them; `warning_count` counts all.
    pub warnings: Vec<String>,
    /// How many warnings there are in all.
    pub warning_count: usize,
}

const USERNAME_RULE: &str = "lowercase letters, digits, `-` and `_`, not starting with `-` or `_`";
const WORKSPACE_RULE: &str = "letters, digits, `-` and `_`, starting with a letter or digit";

/// Whether `name` matches Argilla's username pattern `^(?!-|_)[a-z0-9-_]+$`.
#[must_use]
pub fn is_valid_username(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(['-', '_'])
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Whether `name` matches Argilla's workspace pattern `^[a-zA-Z0-9][a-zA-Z0-9_\-]*$`.
#[must_use]
pub fn is_valid_workspace(name: &str) -> bool {
    name.as_bytes()
        .first()
        .is_some_and(u8::is_ascii_alphanumeric)
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Checks that `hash` is a bcrypt hash in a form Argilla accepts (`$2a$`, `$2b$`, `$2y$`).
///
/// # Errors
/// A text saying what is wrong, without repeating the value.
pub fn check_bcrypt_hash(hash: &str) -> Result<u32, String> {
    if !(hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$")) {
        return Err(
            "hashed_password is not a bcrypt hash (expected $2a$, $2b$ or $2y$, as written by \
             `argilla-gateway hash-password` or `htpasswd -nbB`)"
                .into(),
        );
    }
    let parts: bcrypt::HashParts = hash
        .parse()
        .map_err(|e| format!("hashed_password is not a valid bcrypt hash ({e})"))?;
    if hash.len() != 60 {
        return Err("hashed_password is not a valid bcrypt hash (wrong length)".into());
    }
    Ok(parts.get_cost())
}

impl UserStore {
    /// The store used when no users file exists: Argilla's default superuser `argilla`.
    ///
    /// # Errors
    /// The configured default password is not a bcrypt hash.
    pub fn default_user(api_key: &str, password_hash: &str) -> Result<Self, Error> {
        let entry = Entry {
            username: "argilla".into(),
            hashed_password: password_hash.into(),
            api_key: api_key.into(),
            email: None,
            full_name: None,
            disabled: None,
            workspaces: None,
            superuser: None,
        };
        Self::build(vec![entry], None, Origin::Default).map_err(|problems| Error::Users {
            path: "(default user)".into(),
            message: problems.join("\n"),
        })
    }

    /// Reads and validates a users file.
    ///
    /// # Errors
    /// The file cannot be read, is not a YAML list of users, or breaks a rule; the message names
    /// every problem with its line and user where known.
    pub fn load(path: &Path) -> Result<Self, Error> {
        Self::parse(path, &read_users_file(path)?)
    }

    /// Validates users-file content read from `path`.
    ///
    /// # Errors
    /// As [`UserStore::load`].
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self, Error> {
        let fail = |message: String| Error::Users {
            path: path.to_owned(),
            message,
        };
        let digest: Digest32 = Sha256::digest(bytes).into();
        let text = std::str::from_utf8(bytes).map_err(|e| {
            fail(format!(
                "not UTF-8 text (first bad byte at offset {})",
                e.valid_up_to()
            ))
        })?;
        if text.trim().is_empty() {
            return Err(fail(
                "the file is empty; expected a YAML list of users (write `[]` for none)".into(),
            ));
        }
        // `Option`: a document that is only comments (or an empty tagged node) is null, which
        // must not load as "no users" and lock everyone out.
        let entries: Option<Vec<Entry>> =
            serde_yaml::from_str(text).map_err(|e| fail(explain(text, &e)))?;
        // An empty result must come from a real empty list (`[]`), not from a node that serde
        // reads as one (a bare tag such as `!`): checked on the (then small) document itself.
        let entries = entries
            .filter(|entries| !entries.is_empty() || is_sequence(text))
            .ok_or_else(|| fail("the file holds no list of users (write `[]` for none)".into()))?;
        let lines = entry_lines(text, entries.len());
        Self::build(
            entries,
            lines.as_deref(),
            Origin::File {
                path: path.to_owned(),
                digest,
            },
        )
        .map_err(|problems| fail(problems.join("\n")))
    }

    /// Validates and indexes `entries`; `lines` holds each entry's line in the file, when known.
    fn build(
        entries: Vec<Entry>,
        lines: Option<&[usize]>,
        origin: Origin,
    ) -> Result<Self, Vec<String>> {
        // Where an entry is, for messages: formatted only when something is wrong.
        let place_of = |index: usize, username: &str| match lines.map(|l| l[index]) {
            Some(line) => format!("line {line}, user #{} ({username:?})", index + 1),
            None => format!("user #{} ({username:?})", index + 1),
        };
        let mut problems = Vec::new();
        let mut by_name: HashMap<String, Arc<User>> = HashMap::with_capacity(entries.len());
        let mut by_key: HashMap<Digest32, Arc<User>> = HashMap::with_capacity(entries.len());
        let mut all_workspaces = BTreeSet::new();
        let mut costs: HashMap<u32, usize> = HashMap::new();
        let mut warnings = Vec::new();
        let mut warning_count = 0;
        let mut warn = |text: String| {
            warning_count += 1;
            if warnings.len() < SUMMARY_NAMES {
                warnings.push(text);
            }
        };
        for (index, entry) in entries.into_iter().enumerate() {
            let place = || place_of(index, &entry.username);
            let before = problems.len();
            let cost = check_entry(&entry, &place, &mut problems, &mut costs);
            if problems.len() > before {
                continue;
            }
            if origin != Origin::Default {
                entry_warnings(&entry, cost, &place, &mut warn);
            }
            if let Some(first) = by_name.get(&entry.username) {
                let first = first.entry_index;
                problems.push(format!(
                    "{}: duplicate username, also at {}",
                    place(),
                    place_of(first, &entry.username)
                ));
                continue;
            }
            let key = key_digest(&entry.api_key);
            if let Some(first) = by_key.get(&key) {
                problems.push(format!(
                    "{}: duplicate api_key, the same key as {} (keys must be unique)",
                    place(),
                    place_of(first.entry_index, &first.username)
                ));
                continue;
            }
            let superuser = entry.superuser.unwrap_or(entry.workspaces.is_none());
            let mut workspaces: Vec<String> = Vec::new();
            for Text(workspace) in entry.workspaces.into_iter().flatten() {
                if !workspaces.contains(&workspace) {
                    workspaces.push(workspace);
                }
            }
            if !workspaces.contains(&entry.username) {
                workspaces.push(entry.username.clone());
            }
            for workspace in &workspaces {
                if !all_workspaces.contains(workspace) {
                    all_workspaces.insert(workspace.clone());
                }
            }
            let user = Arc::new(User {
                password_fingerprint: Sha256::digest(entry.hashed_password.as_bytes()).into(),
                username: entry.username,
                email: entry.email.map(|Text(email)| email),
                full_name: entry.full_name.map(|Text(name)| name),
                disabled: entry.disabled,
                superuser,
                workspaces,
                hashed_password: entry.hashed_password,
                api_key: entry.api_key,
                entry_index: index,
            });
            by_key.insert(key, user.clone());
            by_name.insert(user.username.clone(), user);
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let typical_cost = costs
            .into_iter()
            .max_by_key(|&(cost, count)| (count, cost))
            .map_or(12, |(cost, _)| cost);
        Ok(Self {
            by_name,
            by_key,
            all_workspaces,
            typical_cost,
            origin,
            warnings,
            warning_count,
        })
    }

    /// The user with this API key.
    #[must_use]
    pub fn by_key(&self, key: &str) -> Option<&Arc<User>> {
        self.by_key.get(&key_digest(key))
    }

    /// The user with this username.
    #[must_use]
    pub fn by_name(&self, username: &str) -> Option<&Arc<User>> {
        self.by_name.get(username)
    }

    /// Every user, in no particular order.
    pub fn users(&self) -> impl Iterator<Item = &Arc<User>> {
        self.by_name.values()
    }

    /// How many users there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there are no users.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Every workspace named in the file (listed ones and usernames), sorted.
    #[must_use]
    pub fn all_workspaces(&self) -> &BTreeSet<String> {
        &self.all_workspaces
    }

    /// The workspaces `user` may use: every known one for a superuser, else the user's own list.
    #[must_use]
    pub fn workspaces_of(&self, user: &User) -> Vec<String> {
        if user.superuser {
            self.all_workspaces.iter().cloned().collect()
        } else {
            user.workspaces.clone()
        }
    }

    /// Whether `user` may use `workspace`.
    #[must_use]
    pub fn may_access(&self, user: &User, workspace: &str) -> bool {
        if user.superuser {
            self.all_workspaces.contains(workspace)
        } else {
            user.workspaces.iter().any(|w| w == workspace)
        }
    }

    /// The bcrypt cost most hashes in this store use.
    #[must_use]
    pub fn typical_cost(&self) -> u32 {
        self.typical_cost
    }

    pub(crate) fn digest(&self) -> Option<&Digest32> {
        match &self.origin {
            Origin::File { digest, .. } => Some(digest),
            Origin::Default => None,
        }
    }
}

/// Checks one entry on its own (names, hash, key, e-mail, workspaces), adding what is wrong to
/// `problems` and counting its bcrypt cost.
/// Checks one entry's fields; returns its bcrypt cost when the hash is valid.
fn check_entry(
    entry: &Entry,
    place: &dyn Fn() -> String,
    problems: &mut Vec<String>,
    costs: &mut HashMap<u32, usize>,
) -> Option<u32> {
    if !is_valid_username(&entry.username) {
        problems.push(format!("{}: username must be {USERNAME_RULE}", place()));
    }
    let cost = match check_bcrypt_hash(&entry.hashed_password) {
        Ok(cost) => {
            *costs.entry(cost).or_default() += 1;
            Some(cost)
        }
        Err(why) => {
            problems.push(format!("{}: {why}", place()));
            None
        }
    };
    if entry.api_key.is_empty() || http::HeaderValue::from_str(&entry.api_key).is_err() {
        problems.push(format!(
            "{}: api_key must be a non-empty string of printable characters",
            place()
        ));
    }
    if let Some(Text(email)) = &entry.email {
        let valid = email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !email.contains(char::is_whitespace)
        });
        if !valid {
            problems.push(format!("{}: email is not an e-mail address", place()));
        }
    }
    for Text(workspace) in entry.workspaces.iter().flatten() {
        if !is_valid_workspace(workspace) {
            problems.push(format!(
                "{}: workspace {workspace:?} must be {WORKSPACE_RULE}",
                place()
            ));
        }
    }
    cost
}

/// What is valid in an entry but probably not meant.
fn entry_warnings(
    entry: &Entry,
    cost: Option<u32>,
    place: &dyn Fn() -> String,
    warn: &mut dyn FnMut(String),
) {
    if entry.superuser.is_none() && entry.workspaces.is_none() {
        warn(format!(
            "{}: {} is a superuser because `workspaces` is empty; write `superuser: true` to \
             say so, or `workspaces: []` for the own workspace only",
            place(),
            entry.username
        ));
    }
    if let Some(cost) = cost.filter(|&cost| cost < MIN_GOOD_COST) {
        warn(format!(
            "{}: the password hash has bcrypt cost {cost}, below {MIN_GOOD_COST}: fast to guess \
             if the file leaks; hash it again with `argilla-gateway hash-password` (cost 12)",
            place()
        ));
    }
}

/// The lowest bcrypt cost not warned about (OWASP's floor is 10).
pub const MIN_GOOD_COST: u32 = 10;

/// Whether a YAML document is a sequence, tags aside.
fn is_sequence(text: &str) -> bool {
    let mut value = serde_yaml::from_str::<serde_yaml::Value>(text);
    while let Ok(serde_yaml::Value::Tagged(tagged)) = value {
        value = Ok(tagged.value);
    }
    matches!(value, Ok(serde_yaml::Value::Sequence(_)))
}

/// Largest users file read (about 1.5 million users): a bigger one is a mistake, not a file.
const MAX_FILE_BYTES: u64 = 256 << 20;

/// Reads the users file, refusing anything but a regular file of sane size: a FIFO or a device
/// in its place would block the reload forever.
pub(crate) fn read_users_file(path: &Path) -> Result<Vec<u8>, Error> {
    let fail = |message: String| Error::Users {
        path: path.to_owned(),
        message,
    };
    let metadata = std::fs::metadata(path).map_err(|e| {
        fail(match e.kind() {
            std::io::ErrorKind::NotFound => "file not found".to_owned(),
            _ => format!("cannot read: {e}"),
        })
    })?;
    if !metadata.is_file() {
        return Err(fail("not a regular file".into()));
    }
    if metadata.len() > MAX_FILE_BYTES {
        return Err(fail(format!(
            "{} bytes, more than the {MAX_FILE_BYTES} a users file may have",
            metadata.len()
        )));
    }
    std::fs::read(path).map_err(|e| fail(format!("cannot read: {e}")))
}

/// Renders a summary of a store for `check` and the start-up log: counts, never secrets.
#[must_use]
pub fn describe(store: &UserStore) -> String {
    let mut superusers: Vec<&str> = store
        .users()
        .filter(|u| u.superuser)
        .map(|u| u.username.as_str())
        .collect();
    superusers.sort_unstable();
    let disabled = store.users().filter(|u| u.is_disabled()).count();
    let mut out = format!(
        "{} users ({} superusers, {} disabled), {} workspaces",
        store.len(),
        superusers.len(),
        disabled,
        store.all_workspaces().len()
    );
    let _ = write!(out, "; superusers: {}", capped(superusers.iter().copied()));
    let _ = write!(
        out,
        "; workspaces: {}",
        capped(store.all_workspaces().iter().map(String::as_str))
    );
    out
}

/// Logs a store's warnings, one line each (and how many more there are).
pub fn log_warnings(store: &UserStore) {
    for warning in &store.warnings {
        tracing::warn!("users file: {warning}");
    }
    if store.warning_count > store.warnings.len() {
        tracing::warn!(
            "users file: {} more warnings like these",
            store.warning_count - store.warnings.len()
        );
    }
}

/// How many names a summary lists before it only counts.
const SUMMARY_NAMES: usize = 50;

/// The first [`SUMMARY_NAMES`] names, comma-separated, and how many more there are.
fn capped<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> String {
    let total = names.len();
    let mut out = names.take(SUMMARY_NAMES).collect::<Vec<_>>().join(", ");
    if total > SUMMARY_NAMES {
        let _ = write!(out, ", … and {} more", total - SUMMARY_NAMES);
    }
    out
}
