//! `argilla-gateway users`: add, change, disable and remove users of the users file without
//! editing YAML by hand, the way `htpasswd` edits its file. The edits, their checks and the
//! atomic write are [`crate::users_edit`]'s; this module reads passwords, makes keys and prints.
//!
//! Secrets: a new API key or generated password is printed once, on stdout, after the file was
//! written; nothing else this command prints holds a key, a hash or a password.
//!
//! This module runs the command and lists the users; the arguments are `args`'s, the
//! subcommands that change the file `change`'s, and passwords and keys `secret`'s.

mod args;
mod change;
mod secret;

use std::{fmt::Write as _, path::Path, process::ExitCode};

use serde_yaml::Value;

use self::change::change;
pub use self::{
    args::{Cost, UsersArgs, UsersCommand},
    secret::{
        MAX_PASSWORD_BYTES, MIN_API_KEY_CHARS, MIN_PASSWORD_CHARS, check_password,
        generate_api_key, generate_password,
    },
};
use crate::{config::Config, users::UserStore};

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
