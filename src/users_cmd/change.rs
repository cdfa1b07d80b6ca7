//! The subcommands that change the users file: each is planned as one [`Change`] (the user must
//! exist, or must not yet for `add`), checked in full before the password is asked for, then
//! applied again to the file as it is by then and written by [`users_edit::commit`].

use std::path::Path;

use serde_yaml::Value;

use super::{
    MIN_API_KEY_CHARS, UsersCommand, check_password, generate_api_key, generate_password,
    secret::{PLACEHOLDER_HASH, Secret, print_secrets, read_password},
};
use crate::{
    users,
    users_edit::{self, Change, EditError, Op, Snapshot},
};

/// Every subcommand that changes the file.
#[expect(clippy::too_many_lines, reason = "one short arm per subcommand")]
pub(super) fn change(path: &Path, command: UsersCommand) -> Result<(), String> {
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
