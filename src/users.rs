//! The users file (Argilla 1.5's `users.yml`) → one immutable [`UserStore`]; [`Users`] owns the
//! live store, reloads it and publishes every reload.
//!
//! Semantics are Argilla 1.5's (reference, section 2): `workspaces` missing or null makes a
//! superuser unless `superuser:` says otherwise, `[]` means only the user's own workspace, and
//! every user has the workspace named after them. A superuser may use every workspace named in
//! the file. YAML parsing stays in this module: `serde_yaml` is archived upstream.

use std::{
    collections::{BTreeSet, HashMap},
    fmt::Write as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Instant, SystemTime},
};

use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::error::Error;

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

/// The outcome of the last reload, published on a `watch` channel.
#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    /// Reloads attempted (file events, polls that found a change, SIGHUP, explicit calls).
    pub attempts: u64,
    /// Reloads that replaced the store.
    pub applied: u64,
    /// Reloads that found the content unchanged.
    pub unchanged: u64,
    /// Reloads that failed (the previous store stayed in force).
    pub failures: u64,
    /// Users in the store now in force.
    pub users: usize,
    /// The error of the last failed reload, if the last attempt failed.
    pub last_error: Option<String>,
    /// When the store now in force was applied.
    pub last_success: Option<SystemTime>,
}

/// What one reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new store replaced the old one.
    Applied,
    /// The file's content had not changed.
    Unchanged,
    /// The file still has the problem the last failed reload reported (the same bad content,
    /// or still missing): nothing new is logged or counted as a failure.
    StillFailing,
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

    fn digest(&self) -> Option<&Digest32> {
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
fn read_users_file(path: &Path) -> Result<Vec<u8>, Error> {
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

/// The keys an entry may have.
const FIELDS: [&str; 8] = [
    "username",
    "hashed_password",
    "api_key",
    "email",
    "full_name",
    "disabled",
    "workspaces",
    "superuser",
];

/// Turns the YAML reader's first error into every problem of the file, each named
/// `line N, user #K ("name")` with a hint of what to write. Runs only when the file failed.
fn explain(text: &str, error: &serde_yaml::Error) -> String {
    // Reading a large file a second time to name every problem would hold a reload back:
    // there, the first problem is named.
    if text.len() > EXPLAIN_LIMIT {
        return located(text, &error.to_string());
    }
    let message = error.to_string();
    if !(message.starts_with('.') || message.starts_with('[')) {
        // Not about one entry: the document's structure itself (a second read would only
        // find the same thing again).
        return structure(text, error);
    }
    // Not even a list: the structure is broken (the reader's own error says where), or the
    // file is not a list.
    let values = match serde_yaml::from_str::<Vec<serde_yaml::Value>>(text) {
        Ok(values) => values,
        Err(structure) => {
            let message = structure.to_string();
            if message.starts_with("invalid type") || message.contains(": invalid type") {
                // A value the generic reader cannot hold (a 128-bit integer): the entry
                // reader's message says what to do without echoing the value.
                return located(text, &error.to_string());
            }
            return self::structure(text, &structure);
        }
    };
    let lines = entry_lines(text, values.len());
    let mut problems = Vec::new();
    for (index, value) in values.iter().enumerate() {
        let name = value
            .get("username")
            .and_then(serde_yaml::Value::as_str)
            .unwrap_or("?");
        let entry_line = lines.as_ref().map(|l| l[index]);
        let place = |line: Option<usize>| match line {
            Some(line) => format!("line {line}, user #{} ({name:?})", index + 1),
            None => format!("user #{} ({name:?})", index + 1),
        };
        if !value.is_mapping() {
            problems.push(format!(
                "{}: an entry must be a mapping of keys (`username: …`); check its indentation",
                place(entry_line)
            ));
            continue;
        }
        // Read alone, the entry's error names its key; the position refers to the copy.
        let alone = serde_yaml::to_string(value).unwrap_or_default();
        if let Err(e) = serde_yaml::from_str::<Entry>(&alone) {
            let message = e.to_string();
            let message = message.split(" at line ").next().unwrap_or(&message);
            // The line of the key the message is about, when it names one.
            let key = message
                .split_once("unknown field `")
                .and_then(|(_, rest)| rest.split_once('`'))
                .map(|(key, _)| key)
                .or_else(|| message.split_once(": ").map(|(key, _)| key))
                .filter(|key| !key.contains(' '));
            let line = key
                .zip(entry_line)
                .and_then(|(key, from)| key_line(text, from, key))
                .or(entry_line);
            problems.push(format!("{}: {}", place(line), hint(message)));
        }
    }
    if problems.is_empty() {
        return located(text, &error.to_string());
    }
    let more = problems.len().saturating_sub(SUMMARY_NAMES);
    problems.truncate(SUMMARY_NAMES);
    if more > 0 {
        problems.push(format!("… and {more} more problems"));
    }
    problems.join("\n")
}

/// The largest file whose every problem is named (larger ones: the first).
const EXPLAIN_LIMIT: usize = 4 << 20;

/// The reader's message about one entry, with what to write instead where it can tell.
fn hint(message: &str) -> String {
    if let Some(rest) = message.split_once("unknown field `").map(|(_, rest)| rest)
        && let Some((key, _)) = rest.split_once('`')
    {
        if matches!(key, "password" | "passwd" | "plain_password") {
            return format!(
                "unknown key `{key}`: the file holds bcrypt hashes only; write \
                 `hashed_password:` with the output of `argilla-gateway hash-password`"
            );
        }
        let closest = FIELDS
            .iter()
            .map(|field| (strsim::levenshtein(key, field), field))
            .min()
            .filter(|(distance, _)| *distance <= 2);
        return match closest {
            Some((_, field)) => format!("unknown key `{key}`: did you mean `{field}`?"),
            None => format!("unknown key `{key}`; the keys are {}", FIELDS.join(", ")),
        };
    }
    if message.starts_with("workspaces: invalid type") && message.contains("expected a sequence") {
        return format!(
            "{message}: `workspaces` must be a list, like `workspaces: [team-a, team-b]` (or \
             `[]` for the own workspace only)"
        );
    }
    message.to_owned()
}

/// A structural error: the reader's message, and the line to re-indent with its entry.
fn structure(text: &str, error: &serde_yaml::Error) -> String {
    let message = error.to_string();
    if message.contains("expected a sequence") {
        return format!("expected a YAML list of users (`- username: …`): {message}");
    }
    match error.location() {
        Some(at) => {
            let line = at.line();
            let entry = entry_starts(text).filter(|&start| start <= line).count();
            let user = if entry == 0 {
                String::new()
            } else {
                format!(" (user #{entry})")
            };
            format!("{message}; check the indentation of line {line}{user}")
        }
        None => message,
    }
}

/// The 1-based line of `key:` within the entry that starts at line `from`.
fn key_line(text: &str, from: usize, key: &str) -> Option<usize> {
    text.lines()
        .enumerate()
        .skip(from - 1)
        .take_while(|(i, line)| *i + 1 == from || !line.starts_with('-'))
        .find(|(_, line)| {
            let line = line.trim_start();
            let line = line.strip_prefix('-').map_or(line, str::trim_start);
            line.strip_prefix(key)
                .is_some_and(|rest| rest.starts_with(':'))
        })
        .map(|(i, _)| i + 1)
}

/// The reader's message with its `.[K]` path made `user #K+1`.
fn located(text: &str, message: &str) -> String {
    let path = message.strip_prefix('.').unwrap_or(message);
    let Some((index, rest)) = path
        .strip_prefix('[')
        .and_then(|p| p.split_once(']'))
        .and_then(|(index, rest)| Some((index.parse::<usize>().ok()?, rest)))
    else {
        return message.to_owned();
    };
    let rest = rest.trim_start_matches('.');
    let rest = rest.split(" at line ").next().unwrap_or(rest);
    let starts: Vec<usize> = entry_starts(text).collect();
    match starts.get(index) {
        Some(line) => format!("line {line}, user #{}: {rest}", index + 1),
        None => format!("user #{}: {rest}", index + 1),
    }
}

/// The 1-based lines where a top-level list item starts (`- ` at the start of a line).
fn entry_starts(text: &str) -> impl Iterator<Item = usize> + '_ {
    text.lines()
        .enumerate()
        .filter(|(_, line)| line.starts_with("- ") || *line == "-")
        .map(|(i, _)| i + 1)
}

/// The line (1-based) of each entry's `username:` key, when the file is written in block style
/// with one `username:` per entry; `None` when that cannot be told from the text.
fn entry_lines(text: &str, entries: usize) -> Option<Vec<usize>> {
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, line)| {
            let line = line.trim_start();
            let line = line.strip_prefix('-').map_or(line, str::trim_start);
            line.starts_with("username:")
        })
        .map(|(i, _)| i + 1)
        .collect();
    (lines.len() == entries).then_some(lines)
}

/// The live users: one snapshot, swapped whole by [`Users::reload`].
pub struct Users {
    path: Option<PathBuf>,
    current: ArcSwap<UserStore>,
    reloads: watch::Sender<ReloadStatus>,
    /// The last failure: the digest of the content that failed (`None` when nothing could be
    /// read) and its message, so that a poll finding the same problem again says nothing new.
    last_failure: std::sync::Mutex<Option<(Option<Digest32>, String)>>,
    /// Called on the loading thread after a reload applied or refused a file.
    after_apply: Option<fn()>,
    /// A further rule a file must pass to be applied (single sign-on's unique e-mails).
    check: Option<Check>,
}

/// A rule over a whole users file; `Err` says what is wrong.
pub type Check = Box<dyn Fn(&UserStore) -> Result<(), String> + Send + Sync>;

impl Users {
    /// Loads the configured file, or the default user when there is none.
    ///
    /// # Errors
    /// A configured file that is missing or invalid: never a silent fallback.
    pub fn open(config: &crate::config::Auth) -> Result<Self, Error> {
        let store = match &config.users_file {
            Some(path) => UserStore::load(path)?,
            None => {
                UserStore::default_user(&config.default_api_key, &config.default_password_hash)?
            }
        };
        Ok(Self::from_store(config.users_file.clone(), store))
    }

    /// Wraps an already-built store (tests, benchmarks).
    #[must_use]
    pub fn from_store(path: Option<PathBuf>, store: UserStore) -> Self {
        let status = ReloadStatus {
            users: store.len(),
            last_success: Some(SystemTime::now()),
            ..ReloadStatus::default()
        };
        Self {
            path,
            current: ArcSwap::from_pointee(store),
            reloads: watch::Sender::new(status),
            last_failure: std::sync::Mutex::new(None),
            after_apply: None,
            check: None,
        }
    }

    /// Refuses, from the next reload on, any file that fails `check` (the caller checks the
    /// store already loaded).
    #[must_use]
    pub fn with_check(mut self, check: Check) -> Self {
        self.check = Some(check);
        self
    }

    /// Runs `hook` on the loading thread each time a reload has applied or refused a file (not
    /// when the content was unchanged or failed the same way again). The binary uses it to hand
    /// the parser's working memory back to the system at once.
    #[must_use]
    pub fn after_apply(mut self, hook: fn()) -> Self {
        self.after_apply = Some(hook);
        self
    }

    /// The store as of now: an owned `Arc`, safe to hold across `.await`.
    #[must_use]
    pub fn snapshot(&self) -> Arc<UserStore> {
        self.current.load_full()
    }

    /// The users file, if one is in use.
    #[must_use]
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// A receiver that sees every reload attempt.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<ReloadStatus> {
        self.reloads.subscribe()
    }

    /// The status of the last reload.
    #[must_use]
    pub fn status(&self) -> ReloadStatus {
        self.reloads.borrow().clone()
    }

    /// Re-reads the users file. On any error the previous store stays in place. Blocking (file
    /// read, YAML parse): call it from a blocking context.
    ///
    /// # Errors
    /// The file is missing, unreadable or invalid; the message names file, line and user.
    pub fn reload(&self) -> Result<ReloadOutcome, Error> {
        let Some(path) = &self.path else {
            return Ok(ReloadOutcome::Unchanged);
        };
        let started = Instant::now();
        let mut read = None;
        let result = read_users_file(path).and_then(|bytes| {
            let digest: Digest32 = Sha256::digest(&bytes).into();
            read = Some(digest);
            if self.current.load().digest() == Some(&digest) {
                return Ok(None);
            }
            let store = UserStore::parse(path, &bytes)?;
            if let Some(check) = &self.check {
                check(&store).map_err(|message| Error::Users {
                    path: path.clone(),
                    message,
                })?;
            }
            Ok(Some(store))
        });
        let mut last_failure = self
            .last_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let was_failing = last_failure.is_some();
        let outcome = match result {
            Ok(None) => {
                *last_failure = None;
                if was_failing {
                    tracing::info!(
                        file = %path.display(),
                        users = self.current.load().len(),
                        "users file valid again (the same users as in force before the failure)"
                    );
                }
                Ok(ReloadOutcome::Unchanged)
            }
            Err(e) if last_failure.as_ref() == Some(&(read, e.to_string())) => {
                Ok(ReloadOutcome::StillFailing)
            }
            Ok(Some(next)) => {
                *last_failure = None;
                let before = self.current.load();
                let changes = Changes::between(&before, &next);
                let (users_before, users_after) = (before.len(), next.len());
                drop(before);
                log_warnings(&next);
                self.current.store(Arc::new(next));
                tracing::info!(
                    file = %path.display(),
                    users_before,
                    users_after,
                    added = changes.added,
                    removed = changes.removed,
                    disabled = changes.disabled,
                    reenabled = changes.reenabled,
                    changed = changes.changed,
                    duration_ms = started.elapsed().as_secs_f64() * 1e3,
                    "{}",
                    if was_failing {
                        "users file valid again and reloaded"
                    } else {
                        "users file reloaded"
                    }
                );
                Ok(ReloadOutcome::Applied)
            }
            Err(e) => {
                tracing::error!(error = %e, "users file reload failed; the last good users stay in force");
                *last_failure = Some((read, e.to_string()));
                Err(e)
            }
        };
        drop(last_failure);
        let users = self.current.load().len();
        self.reloads.send_modify(|status| {
            status.attempts += 1;
            status.users = users;
            match &outcome {
                Ok(ReloadOutcome::Applied) => {
                    status.applied += 1;
                    status.last_error = None;
                    status.last_success = Some(SystemTime::now());
                }
                Ok(ReloadOutcome::Unchanged) => {
                    status.unchanged += 1;
                    status.last_error = None;
                }
                Ok(ReloadOutcome::StillFailing) => status.unchanged += 1,
                Err(e) => {
                    status.failures += 1;
                    status.last_error = Some(e.to_string());
                }
            }
        });
        if let (Ok(ReloadOutcome::Applied) | Err(_), Some(hook)) = (&outcome, self.after_apply) {
            hook();
        }
        outcome
    }
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

/// What a reload changed, in counts (never values).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Changes {
    /// Users in the new file only.
    pub added: usize,
    /// Users in the old file only.
    pub removed: usize,
    /// Users now `disabled: true` that were not.
    pub disabled: usize,
    /// Users no longer disabled.
    pub reenabled: usize,
    /// Users whose password, key, workspaces, superuser flag, e-mail or name changed.
    pub changed: usize,
}

impl Changes {
    /// Compares two stores user by user.
    #[must_use]
    pub fn between(before: &UserStore, after: &UserStore) -> Self {
        let mut changes = Self::default();
        for user in after.users() {
            match before.by_name(&user.username) {
                None => changes.added += 1,
                Some(old) => {
                    match (old.is_disabled(), user.is_disabled()) {
                        (false, true) => changes.disabled += 1,
                        (true, false) => changes.reenabled += 1,
                        _ => {}
                    }
                    if old.hashed_password != user.hashed_password
                        || old.api_key != user.api_key
                        || old.workspaces != user.workspaces
                        || old.superuser != user.superuser
                        || old.email != user.email
                        || old.full_name != user.full_name
                    {
                        changes.changed += 1;
                    }
                }
            }
        }
        changes.removed = before
            .users()
            .filter(|u| after.by_name(&u.username).is_none())
            .count();
        changes
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

/// Keeps the users file watched: file events in its folder (debounced), a slow content poll,
/// and explicit requests (SIGHUP) all lead to [`Users::reload`] on the blocking pool.
pub struct Reloader {
    requests: tokio::sync::mpsc::Sender<()>,
    // Dropping the watcher stops the events; it lives as long as the reloader.
    _watcher: Option<notify::RecommendedWatcher>,
}

/// Longest a stream of file events can hold a reload back.
const SETTLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);
/// Longest a writer that keeps the file open can hold a reload back.
const WRITER_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits until no event has arrived for `quiet` and nobody is writing the file in place (a
/// trailing debounce that waits for the writer to close), so that a file is read once its
/// writer is done; but never longer than [`SETTLE_LIMIT`], or [`WRITER_LIMIT`] while a writer
/// holds the file open.
async fn settle(
    rx: &mut tokio::sync::mpsc::Receiver<()>,
    quiet: std::time::Duration,
    writing: &AtomicBool,
) {
    let started = tokio::time::Instant::now();
    loop {
        let open = writing.load(Ordering::Acquire);
        let limit = started + if open { WRITER_LIMIT } else { SETTLE_LIMIT };
        let left = limit.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return;
        }
        match tokio::time::timeout(if open { left } else { quiet.min(left) }, rx.recv()).await {
            Ok(None) => return,
            Err(_) if !writing.load(Ordering::Acquire) => return,
            // An event, or quiet while a writer holds the file: keep waiting.
            Ok(Some(())) | Err(_) => {}
        }
    }
}

/// Whether an event says the file is being written in place (`Some(true)`), was closed after
/// writing or replaced whole (`Some(false)`), or neither (`None`).
fn write_state(kind: notify::EventKind) -> Option<bool> {
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    match kind {
        notify::EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) => Some(true),
        notify::EventKind::Access(AccessKind::Close(AccessMode::Write))
        | notify::EventKind::Create(_)
        | notify::EventKind::Remove(_)
        | notify::EventKind::Modify(ModifyKind::Name(_)) => Some(false),
        _ => None,
    }
}

impl Reloader {
    /// Starts watching. Without a users file there is nothing to watch and nothing runs.
    ///
    /// # Errors
    /// The folder of the users file cannot be watched.
    pub fn start(users: Arc<Users>, config: &crate::config::Reload) -> Result<Self, Error> {
        let (requests, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let Some(path) = users.path().map(Path::to_owned) else {
            return Ok(Self {
                requests,
                _watcher: None,
            });
        };
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        let name = path.file_name().map(std::ffi::OsStr::to_owned);
        let events = requests.clone();
        let writing = Arc::new(AtomicBool::new(false));
        let writer_seen = writing.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else { return };
                // Reads are no change; a close after writing is the best sign a write is done.
                if matches!(event.kind, notify::EventKind::Access(kind)
                    if kind != notify::event::AccessKind::Close(notify::event::AccessMode::Write))
                {
                    return;
                }
                // The file itself, or Kubernetes' `..data` symlink and `..<timestamp>` folders.
                let ours = event
                    .paths
                    .iter()
                    .any(|p| p.file_name().is_some_and(|n| Some(n) == name.as_deref()));
                let relevant = ours
                    || event.paths.iter().any(|p| {
                        p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with(".."))
                    });
                if let (true, Some(open)) = (ours, write_state(event.kind)) {
                    writer_seen.store(open, Ordering::Release);
                }
                if relevant {
                    let _ = events.try_send(());
                }
            })
            .map_err(|source| Error::Watch {
                path: dir.clone(),
                source,
            })?;
        notify::Watcher::watch(&mut watcher, &dir, notify::RecursiveMode::NonRecursive).map_err(
            |source| Error::Watch {
                path: dir.clone(),
                source,
            },
        )?;
        let debounce = config.debounce;
        let mut poll = tokio::time::interval(config.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::spawn(async move {
            poll.tick().await;
            loop {
                tokio::select! {
                    received = rx.recv() => {
                        if received.is_none() {
                            break;
                        }
                        settle(&mut rx, debounce, &writing).await;
                    }
                    _ = poll.tick() => {
                        // A writer holds the file open: its close will bring an event.
                        if writing.load(Ordering::Acquire) {
                            continue;
                        }
                    }
                }
                let users = users.clone();
                // Errors are logged and published by `reload` itself.
                let _ = tokio::task::spawn_blocking(move || users.reload()).await;
            }
        });
        Ok(Self {
            requests,
            _watcher: Some(watcher),
        })
    }

    /// Asks for a reload (SIGHUP); bursts of requests become one reload.
    pub fn request(&self) {
        let _ = self.requests.try_send(());
    }
}

#[cfg(test)]
mod tests {
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
        let store =
            parse("- username: '42'\n  hashed_password: HASH\n  api_key: \"true\"\n").unwrap();
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
        let store = UserStore::default_user("argilla.apikey", crate::config::DEFAULT_PASSWORD_HASH)
            .unwrap();
        let user = store.by_key("argilla.apikey").unwrap();
        assert_eq!(user.username, "argilla");
        assert!(user.superuser);
        assert!(store.by_key("rubrix.apikey").is_none());
        assert_eq!(store.typical_cost(), 12);
    }

    #[test]
    fn debug_output_has_no_secrets() {
        let store =
            parse("- username: a\n  hashed_password: HASH\n  api_key: topsecret\n").unwrap();
        let text = format!("{store:?}");
        assert!(
            !text.contains("topsecret") && !text.contains(hash()),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn settle_waits_for_quiet_but_not_forever() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let quiet = std::time::Duration::from_millis(50);
        let writing = AtomicBool::new(false);
        let started = tokio::time::Instant::now();
        settle(&mut rx, quiet, &writing).await;
        assert_eq!(started.elapsed(), quiet, "no events: one quiet period");

        let feeder = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(std::time::Duration::from_millis(30)).await;
                tx.send(()).await.unwrap();
            }
            // Keep the channel open: an endless writer.
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(30)).await;
                if tx.send(()).await.is_err() {
                    return;
                }
            }
        });
        let started = tokio::time::Instant::now();
        settle(&mut rx, quiet, &writing).await;
        assert_eq!(
            started.elapsed(),
            SETTLE_LIMIT,
            "endless events are cut off at the limit"
        );
        feeder.abort();

        // A writer that holds the file open is waited for, up to its limit.
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        writing.store(true, Ordering::Release);
        let started = tokio::time::Instant::now();
        settle(&mut rx, quiet, &writing).await;
        assert_eq!(
            started.elapsed(),
            WRITER_LIMIT,
            "a writer that never closes"
        );

        // A writer that closes after 700 ms: the close event, then one quiet period.
        let writing = Arc::new(writing);
        let flag = writing.clone();
        let closer = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(700)).await;
            flag.store(false, Ordering::Release);
            tx.send(()).await.unwrap();
            tx
        });
        let started = tokio::time::Instant::now();
        settle(&mut rx, quiet, &writing).await;
        assert_eq!(started.elapsed(), std::time::Duration::from_millis(750));
        drop(closer.await.unwrap());
    }

    #[test]
    fn reload_keeps_the_last_good_store_and_skips_unchanged_content() {
        static HOOK_RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.yml");
        let good =
            "- username: a\n  hashed_password: HASH\n  api_key: k1\n".replace("HASH", hash());
        std::fs::write(&path, &good).unwrap();
        let users = Users::from_store(Some(path.clone()), UserStore::load(&path).unwrap())
            .after_apply(|| {
                HOOK_RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        assert_eq!(users.reload().unwrap(), ReloadOutcome::Unchanged);
        std::fs::write(&path, "- username: [broken\n").unwrap();
        assert!(users.reload().is_err());
        assert!(users.snapshot().by_key("k1").is_some());
        let said_once = users.reload().unwrap();
        assert_eq!(said_once, ReloadOutcome::StillFailing, "same bad content");
        std::fs::remove_file(&path).unwrap();
        let missing = users.reload().unwrap_err().to_string();
        assert!(missing.contains("not found"), "{missing}");
        let said_once = users.reload().unwrap();
        assert_eq!(said_once, ReloadOutcome::StillFailing, "still missing");
        assert!(users.snapshot().by_key("k1").is_some());
        std::fs::write(&path, good.replace("k1", "k2")).unwrap();
        assert_eq!(users.reload().unwrap(), ReloadOutcome::Applied);
        assert!(users.snapshot().by_key("k1").is_none());
        assert!(users.snapshot().by_key("k2").is_some());
        let status = users.status();
        assert_eq!(
            (
                status.attempts,
                status.applied,
                status.unchanged,
                status.failures
            ),
            (6, 1, 3, 2)
        );
        assert!(status.last_error.is_none());
        assert_eq!(
            HOOK_RUNS.load(std::sync::atomic::Ordering::SeqCst),
            3,
            "after the refused file, the missing file and the applied one; not when unchanged"
        );
    }
}
