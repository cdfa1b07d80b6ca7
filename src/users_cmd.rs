//! `argilla-gateway users`: add, change, disable and remove users of the users file without
//! editing YAML by hand, the way `htpasswd` edits its file. The edits, their checks and the
//! atomic write are [`crate::users_edit`]'s; this module reads passwords, makes keys and prints.
//!
//! Secrets: a new API key or generated password is printed once, on stdout, after the file was
//! written; nothing else this command prints holds a key, a hash or a password.

use std::{
    fmt::Write as _,
    io::IsTerminal as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Args, Subcommand};
use rand::Rng as _;
use serde_yaml::Value;

use crate::{
    config::Config,
    users::{self, UserStore},
    users_edit::{self, Change, EditError, Op, Snapshot},
};

/// `argilla-gateway users [--file PATH] SUBCOMMAND`.
#[derive(Debug, Args)]
pub struct UsersArgs {
    /// The users file to change (default: the gateway's own, from `auth.users_file`,
    /// `ARGILLA_LOCAL_AUTH_USERS_DB_FILE`, or `.users.yml` in the working directory).
    #[arg(long, global = true, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: UsersCommand,
}

/// The bcrypt cost of a new password hash.
#[derive(Debug, Args)]
pub struct Cost {
    /// bcrypt cost (4 to 31).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(4..=31))]
    pub cost: u32,
}

/// One `users` subcommand.
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add a user: asks for the password twice without echo (or reads it from stdin), makes a
    /// random API key and prints it once. Without --workspace or --superuser the user has only
    /// its own workspace.
    Add {
        /// The login name (lowercase letters, digits, `-` and `_`).
        username: String,
        /// A workspace the user may use besides its own (repeat for more).
        #[arg(long = "workspace", value_name = "W")]
        workspaces: Vec<String>,
        /// Make the user a superuser (written `superuser: true`): every workspace of the file.
        #[arg(long)]
        superuser: bool,
        /// The user's e-mail address.
        #[arg(long)]
        email: Option<String>,
        /// The user's full name.
        #[arg(long)]
        full_name: Option<String>,
        /// Make a strong random password and print it once, instead of asking for one.
        #[arg(long)]
        generate_password: bool,
        /// Use this API key instead of a random one (to keep a key clients already have; it is
        /// then visible in the process list and shell history). At least 16 characters.
        #[arg(long, value_name = "KEY")]
        api_key: Option<String>,
        /// The bcrypt cost of the new hash.
        #[command(flatten)]
        cost: Cost,
    },
    /// Set a user's password (asked twice without echo, or read from stdin). Gateway tokens
    /// of the user stop working.
    Passwd {
        /// The user.
        username: String,
        /// Make a strong random password and print it once, instead of asking for one.
        #[arg(long)]
        generate_password: bool,
        /// The bcrypt cost of the new hash.
        #[command(flatten)]
        cost: Cost,
    },
    /// Give a user a new random API key and print it once; the old key stops working.
    RotateKey {
        /// The user.
        username: String,
    },
    /// Refuse every credential of a user (`disabled: true`), keeping the entry.
    Disable {
        /// The user.
        username: String,
    },
    /// Let a disabled user in again (removes `disabled`).
    Enable {
        /// The user.
        username: String,
    },
    /// Set the workspaces a user may use besides its own (none: only its own).
    SetWorkspaces {
        /// The user.
        username: String,
        /// The workspaces, replacing the listed ones.
        workspaces: Vec<String>,
        /// Make (or keep) the user a superuser (`superuser: true`).
        #[arg(long, conflicts_with = "no_superuser")]
        superuser: bool,
        /// Make the user an ordinary user of these workspaces.
        #[arg(long)]
        no_superuser: bool,
    },
    /// Remove a user's entry.
    Remove {
        /// The user.
        username: String,
    },
    /// List the users: username, e-mail, superuser, disabled, workspaces (never a key or hash).
    List,
}

/// The fewest characters a password set by this command may have (later Argilla versions
/// require the same of passwords set through their API).
pub const MIN_PASSWORD_CHARS: usize = 8;

/// The most bytes a password may have: bcrypt reads only 72, and the gateway refuses longer
/// passwords at login.
pub const MAX_PASSWORD_BYTES: usize = 72;

/// The fewest characters of an API key given with `--api-key`.
pub const MIN_API_KEY_CHARS: usize = 16;

/// Characters in a generated password (alphanumeric: about 119 bits).
const GENERATED_PASSWORD_CHARS: usize = 20;

/// Passwords refused whatever their length: the first a guesser tries.
const WELL_KNOWN: [&str; 8] = [
    "password",
    "password1",
    "12345678",
    "123456789",
    "1234567890",
    "qwertyuiop",
    "argilla1",
    "iloveyou",
];

/// Checks a new password: at least [`MIN_PASSWORD_CHARS`] characters, at most
/// [`MAX_PASSWORD_BYTES`] bytes, not the username, not one character repeated, not a
/// well-known password.
///
/// # Errors
/// What is wrong with it, without repeating it.
pub fn check_password(username: &str, password: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(format!(
            "the password is too weak: {chars} characters, at least {MIN_PASSWORD_CHARS} are \
             needed (or use --generate-password)"
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "the password is longer than {MAX_PASSWORD_BYTES} bytes: bcrypt reads only the first \
             {MAX_PASSWORD_BYTES}, and the gateway refuses longer passwords at login"
        ));
    }
    let lower = password.to_lowercase();
    if username.len() >= 3 && lower.contains(username) {
        return Err("the password is too weak: it contains the username".into());
    }
    if password.chars().all(|c| password.starts_with(c)) {
        return Err("the password is too weak: one character repeated".into());
    }
    if WELL_KNOWN.contains(&lower.as_str()) {
        return Err("the password is too weak: a well-known password".into());
    }
    Ok(())
}

/// A random API key: 32 bytes from the thread's CSPRNG (`rand`'s, seeded by the operating
/// system), as 64 hexadecimal characters (what `openssl rand -hex 32` gives).
#[must_use]
pub fn generate_api_key() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().fold(String::with_capacity(64), |mut out, b| {
        use std::fmt::Write as _;
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// A random password of letters and digits.
#[must_use]
pub fn generate_password() -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(GENERATED_PASSWORD_CHARS)
        .map(char::from)
        .collect()
}

/// A valid bcrypt hash of nothing anyone knows: stands in for the real one while a change is
/// checked before the password is asked for.
const PLACEHOLDER_HASH: &str = "$2b$12$C6UzMDM.H6dfI/f/IKxGhuo0GrNHjm8q3K/NO8q0ptbdgY0X8EhYu";

/// Runs `users`; `config_path` is the global `--config`.
#[must_use]
pub fn run(config_path: Option<&Path>, args: UsersArgs) -> ExitCode {
    let path = match args.file {
        Some(path) => path,
        None => match Config::load(config_path) {
            Ok(config) => {
                let Some(path) = config.auth.users_file else {
                    eprintln!(
                        "users: no users file configured: pass --file PATH, or set \
                         ARGILLA_LOCAL_AUTH_USERS_DB_FILE (or auth.users_file)"
                    );
                    return ExitCode::FAILURE;
                };
                path
            }
            Err(e) => {
                eprintln!("users: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let result = match args.command {
        UsersCommand::List => list(&path),
        command => change(&path, command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("users: {message}");
            ExitCode::FAILURE
        }
    }
}

#[expect(clippy::print_stdout, reason = "the list is this command's output")]
fn list(path: &Path) -> Result<(), String> {
    let store = UserStore::load(path).map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // File order, as written (the store's own order is a hash map's).
    let order: Vec<String> = serde_yaml::from_str::<Vec<Value>>(&text)
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.get("username").and_then(Value::as_str).map(str::to_owned))
        .collect();
    let mut rows = vec![[
        "USERNAME".to_owned(),
        "EMAIL".to_owned(),
        "SUPERUSER".to_owned(),
        "DISABLED".to_owned(),
        "WORKSPACES".to_owned(),
    ]];
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
    for name in &order {
        let Some(user) = store.by_name(name) else {
            continue;
        };
        rows.push([
            user.username.clone(),
            user.email.clone().unwrap_or_else(|| "-".into()),
            yes_no(user.superuser),
            yes_no(user.is_disabled()),
            user.workspaces.join(","),
        ]);
    }
    let widths: Vec<usize> = (0..4)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        line.push_str(&row[4]);
        println!("{line}");
    }
    Ok(())
}

/// A secret to print once, after the file was written.
struct Secret {
    label: &'static str,
    value: String,
}

/// Every subcommand that changes the file.
#[expect(clippy::too_many_lines, reason = "one short arm per subcommand")]
fn change(path: &Path, command: UsersCommand) -> Result<(), String> {
    let fail = |e: EditError| format!("{}: {e}", path.display());
    let snapshot = Snapshot::read(path).map_err(fail)?;
    let text = snapshot.text().map_err(fail)?;
    let entry = |username: &str| -> Result<Value, String> {
        let list = serde_yaml::from_str::<Vec<Value>>(text).map_err(|e| {
            format!(
                "{}: not a YAML list of users now ({e}); fix it first (`argilla-gateway check` \
                 says where)",
                path.display()
            )
        })?;
        list.into_iter()
            .find(|v| v.get("username").and_then(Value::as_str) == Some(username))
            .ok_or_else(|| fail(EditError::UnknownUser(username.to_owned())))
    };
    let disabled = |entry: &Value| entry.get("disabled").and_then(Value::as_bool) == Some(true);
    if snapshot.bytes.is_none() && !matches!(command, UsersCommand::Add { .. }) {
        return Err(format!(
            "{}: file not found (`users add` creates it)",
            path.display()
        ));
    }
    let mut secrets = Vec::new();
    // The change, and how to finish it once the password (if any) is known.
    let (username, change, password, done) = match command {
        UsersCommand::Add {
            username,
            workspaces,
            superuser,
            email,
            full_name,
            generate_password,
            api_key,
            cost,
        } => plan_add(
            NewUser {
                username,
                workspaces,
                superuser,
                email,
                full_name,
                api_key,
            },
            (generate_password, cost.cost),
            &mut secrets,
        )?,
        UsersCommand::Passwd {
            username,
            generate_password: generate,
            cost,
        } => {
            entry(&username)?;
            let change = Change::Update {
                username: username.clone(),
                ops: vec![Op::Set(
                    "hashed_password",
                    Value::String(PLACEHOLDER_HASH.into()),
                )],
            };
            (
                username,
                change,
                Some((generate, cost.cost)),
                "password changed; its gateway tokens no longer work".to_owned(),
            )
        }
        UsersCommand::RotateKey { username } => {
            entry(&username)?;
            let key = generate_api_key();
            secrets.push(Secret {
                label: "api_key",
                value: key.clone(),
            });
            let change = Change::Update {
                username: username.clone(),
                ops: vec![Op::Set("api_key", Value::String(key))],
            };
            (
                username,
                change,
                None,
                "has a new API key; the old one no longer works".to_owned(),
            )
        }
        UsersCommand::Disable { username } => {
            if disabled(&entry(&username)?) {
                eprintln!("users: {username} is disabled already; the file was not written");
                return Ok(());
            }
            let change = Change::Update {
                username: username.clone(),
                ops: vec![Op::Set("disabled", Value::Bool(true))],
            };
            (
                username,
                change,
                None,
                "disabled: every credential of it is refused".to_owned(),
            )
        }
        UsersCommand::Enable { username } => {
            if !disabled(&entry(&username)?) {
                eprintln!("users: {username} is not disabled; the file was not written");
                return Ok(());
            }
            let change = Change::Update {
                username: username.clone(),
                ops: vec![Op::Unset("disabled", Some(Value::Bool(false)))],
            };
            (username, change, None, "enabled".to_owned())
        }
        UsersCommand::SetWorkspaces {
            username,
            workspaces,
            superuser,
            no_superuser,
        } => {
            let current = entry(&username)?;
            plan_set_workspaces(&current, username, &workspaces, superuser, no_superuser)?
        }
        UsersCommand::Remove { username } => {
            entry(&username)?;
            (
                username.clone(),
                Change::Remove(username),
                None,
                "removed".to_owned(),
            )
        }
        UsersCommand::List => return Ok(()),
    };
    finish(path, snapshot, (username, change, password, done), secrets)
}

/// The fields of `users add` that become the entry.
struct NewUser {
    username: String,
    workspaces: Vec<String>,
    superuser: bool,
    email: Option<String>,
    full_name: Option<String>,
    api_key: Option<String>,
}

/// A change, planned: the user, the change (with a placeholder hash while the password is not
/// known), how to get the password (generate it?, bcrypt cost), and what to say when done.
type Plan = (String, Change, Option<(bool, u32)>, String);

fn plan_add(
    user: NewUser,
    password: (bool, u32),
    secrets: &mut Vec<Secret>,
) -> Result<Plan, String> {
    let NewUser {
        username,
        workspaces,
        superuser,
        email,
        full_name,
        api_key,
    } = user;
    if !users::is_valid_username(&username) {
        return Err(format!(
            "{username:?} is not a valid username: lowercase letters, digits, `-` and \
             `_`, not starting with `-` or `_`"
        ));
    }
    let api_key = match api_key {
        Some(key) if key.chars().count() < MIN_API_KEY_CHARS => {
            return Err(format!(
                "--api-key: at least {MIN_API_KEY_CHARS} characters (a short key can \
                 be guessed); leave it out for a random one"
            ));
        }
        Some(key) => key,
        None => {
            let key = generate_api_key();
            secrets.push(Secret {
                label: "api_key",
                value: key.clone(),
            });
            key
        }
    };
    let mut fields: Vec<(&'static str, Value)> = vec![
        ("username", Value::String(username.clone())),
        ("hashed_password", Value::String(PLACEHOLDER_HASH.into())),
        ("api_key", Value::String(api_key)),
    ];
    if let Some(email) = email {
        fields.push(("email", Value::String(email)));
    }
    if let Some(name) = full_name {
        fields.push(("full_name", Value::String(name)));
    }
    if !superuser || !workspaces.is_empty() {
        fields.push(("workspaces", strings(&workspaces)));
    }
    if superuser {
        fields.push(("superuser", Value::Bool(true)));
    }
    let what = if superuser {
        "a superuser".to_owned()
    } else {
        describe_workspaces(&username, &workspaces)
    };
    Ok((
        username,
        Change::Add(fields),
        Some(password),
        format!("added as {what}"),
    ))
}

fn plan_set_workspaces(
    current: &Value,
    username: String,
    workspaces: &[String],
    superuser: bool,
    no_superuser: bool,
) -> Result<Plan, String> {
    let listed = current.get("workspaces").is_some_and(|v| !v.is_null());
    let flag = current.get("superuser").and_then(Value::as_bool);
    let mut ops = vec![Op::Set("workspaces", strings(workspaces))];
    let is_superuser = if superuser {
        ops.push(Op::Set("superuser", Value::Bool(true)));
        true
    } else if no_superuser {
        if current.get("superuser").is_some() {
            ops.push(Op::Unset("superuser", Some(Value::Bool(false))));
        }
        false
    } else if flag.is_none() && !listed {
        return Err(format!(
            "{username} is a superuser because its entry has no `workspaces`; listing \
             workspaces would make it an ordinary user: pass --superuser to keep it a \
             superuser, or --no-superuser to limit it to these workspaces"
        ));
    } else {
        flag == Some(true)
    };
    let what = if is_superuser {
        format!(
            "a superuser; listed workspaces: {}",
            describe_list(workspaces)
        )
    } else {
        describe_workspaces(&username, workspaces)
    };
    let change = Change::Update {
        username: username.clone(),
        ops,
    };
    Ok((username, change, None, format!("now {what}")))
}

/// Checks the planned change, asks for the password if it needs one, and writes the file.
fn finish(
    path: &Path,
    snapshot: Snapshot,
    (username, change, password, done): Plan,
    mut secrets: Vec<Secret>,
) -> Result<(), String> {
    let fail = |e: EditError| format!("{}: {e}", path.display());
    let text = snapshot.text().map_err(fail)?;
    // Everything but the password is checked before the password is asked for.
    let edited = users_edit::apply(text, &change).map_err(fail)?;
    users_edit::validate(&snapshot.path, &edited).map_err(fail)?;
    let (snapshot, change) = match password {
        None => (snapshot, change),
        Some((generate, cost)) => {
            let password = if generate {
                let password = generate_password();
                secrets.push(Secret {
                    label: "password",
                    value: password.clone(),
                });
                password
            } else {
                read_password()?
            };
            check_password(&username, &password)?;
            let hash =
                bcrypt::non_truncating_hash(&password, cost).map_err(|e| format!("bcrypt: {e}"))?;
            // Read again: typing a password takes a while, and the file may have changed.
            (
                Snapshot::read(path).map_err(fail)?,
                with_hash(change, &hash),
            )
        }
    };
    let text = snapshot.text().map_err(fail)?;
    let edited = users_edit::apply(text, &change).map_err(fail)?;
    if edited == text {
        eprintln!("users: {username}: nothing to change; the file was not written");
        return Ok(());
    }
    let store = users_edit::validate(&snapshot.path, &edited).map_err(fail)?;
    users_edit::commit(&snapshot, edited.as_bytes()).map_err(fail)?;
    eprintln!(
        "users: {}: {username} {done}. A running gateway applies the change by itself.",
        snapshot.path.display()
    );
    let place = format!("({username:?})");
    for warning in store.warnings.iter().filter(|w| w.contains(&place)) {
        eprintln!("users: warning: {warning}");
    }
    print_secrets(&username, &secrets);
    Ok(())
}

#[expect(
    clippy::print_stdout,
    reason = "the new secrets are this command's output"
)]
fn print_secrets(username: &str, secrets: &[Secret]) {
    if secrets.is_empty() {
        return;
    }
    for secret in secrets {
        println!("{}: {}", secret.label, secret.value);
    }
    let what: Vec<&str> = secrets.iter().map(|s| s.label).collect();
    eprintln!(
        "users: store {username}'s {} now: shown only this once",
        what.join(" and ")
    );
}

/// The change with the placeholder hash replaced by the real one.
fn with_hash(change: Change, hash: &str) -> Change {
    let real = |(key, value): (&'static str, Value)| {
        if key == "hashed_password" {
            (key, Value::String(hash.to_owned()))
        } else {
            (key, value)
        }
    };
    match change {
        Change::Add(fields) => Change::Add(fields.into_iter().map(real).collect()),
        Change::Update { username, ops } => Change::Update {
            username,
            ops: ops
                .into_iter()
                .map(|op| match op {
                    Op::Set(key, value) => {
                        let (key, value) = real((key, value));
                        Op::Set(key, value)
                    }
                    unset @ Op::Unset(..) => unset,
                })
                .collect(),
        },
        remove @ Change::Remove(_) => remove,
    }
}

fn strings(items: &[String]) -> Value {
    Value::Sequence(items.iter().cloned().map(Value::String).collect())
}

fn describe_list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

fn describe_workspaces(username: &str, workspaces: &[String]) -> String {
    if workspaces.is_empty() {
        format!("a user of its own workspace {username} only")
    } else {
        format!(
            "a user of workspaces {} and its own {username}",
            workspaces.join(", ")
        )
    }
}

/// Reads a new password: twice without echo on a terminal; from stdin otherwise, one line, or
/// two that must be equal (as a terminal would be answered).
fn read_password() -> Result<String, String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("New password: ")
            .map_err(|e| format!("cannot read the password: {e}"))?;
        let again = rpassword::prompt_password("The same password again: ")
            .map_err(|e| format!("cannot read the password: {e}"))?;
        if first != again {
            return Err("the two passwords differ; nothing was changed".into());
        }
        return Ok(first);
    }
    let stdin = std::io::stdin();
    let mut first = String::new();
    stdin
        .read_line(&mut first)
        .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
    let mut again = String::new();
    stdin
        .read_line(&mut again)
        .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
    let trim = |s: &str| s.trim_end_matches(['\n', '\r']).to_owned();
    let (first, again) = (trim(&first), trim(&again));
    if first.is_empty() {
        return Err(
            "no password on stdin (give it on one line, or use --generate-password)".into(),
        );
    }
    if !again.is_empty() && again != first {
        return Err("the two passwords differ; nothing was changed".into());
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_rules() {
        assert!(check_password("alice", "correct horse").is_ok());
        for weak in ["short", "aaaaaaaaaa", "alice1234", "Password", "12345678"] {
            assert!(check_password("alice", weak).is_err(), "{weak}");
        }
        assert!(check_password("alice", &"ab".repeat(40)).is_err());
    }

    #[test]
    fn generated_secrets_are_strong_and_differ() {
        let (a, b) = (generate_api_key(), generate_api_key());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        let password = generate_password();
        assert!(check_password("alice", &password).is_ok());
        assert!(crate::users::check_bcrypt_hash(PLACEHOLDER_HASH).is_ok());
    }
}
