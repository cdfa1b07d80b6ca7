//! The command line of `argilla-gateway users`: its global `--file`, and each subcommand with
//! its arguments and help text (clap derives the parser and the help from these).

use std::path::PathBuf;

use clap::{Args, Subcommand};

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
