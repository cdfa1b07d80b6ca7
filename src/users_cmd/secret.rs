//! The secrets `users` makes or asks for: the rules a new password must pass, the password
//! asked for without echo (or read from stdin), generated passwords and API keys, the
//! placeholder hash that stands in while a change is checked, and the new secrets printed once.

use std::io::IsTerminal as _;

use rand::Rng as _;

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
pub(super) const PLACEHOLDER_HASH: &str =
    "$2b$12$C6UzMDM.H6dfI/f/IKxGhuo0GrNHjm8q3K/NO8q0ptbdgY0X8EhYu";

/// A secret to print once, after the file was written.
pub(super) struct Secret {
    pub(super) label: &'static str,
    pub(super) value: String,
}

#[expect(
    clippy::print_stdout,
    reason = "the new secrets are this command's output"
)]
pub(super) fn print_secrets(username: &str, secrets: &[Secret]) {
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

/// Reads a new password: twice without echo on a terminal; from stdin otherwise, one line, or
/// two that must be equal (as a terminal would be answered).
pub(super) fn read_password() -> Result<String, String> {
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
