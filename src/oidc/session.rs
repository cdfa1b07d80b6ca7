//! Ended SSO sessions. A gateway token issued at an SSO login carries a random session id
//! (`sid`); `/oauth2/sign_out` adds that id here, with the token's expiry, and every token check
//! refuses an id found here. The list is kept in `revoked-sessions` under `oidc.state_dir`
//! (appended line by line, `<sid> <exp>`), so a restart keeps refusing them; entries past their
//! expiry are dropped when the file is rewritten at start.

use std::{
    collections::HashMap,
    io::Write as _,
    path::{Path, PathBuf},
    sync::RwLock,
    time::{SystemTime, UNIX_EPOCH},
};

/// The file name under `oidc.state_dir`.
pub const FILE_NAME: &str = "revoked-sessions";

/// Most ended sessions remembered at once. Each lives at most the SSO session lifetime; past
/// the bound, sign-out answers an error rather than forgetting an ended session.
pub const CAPACITY: usize = 1_000_000;

/// Ended session ids, by expiry.
pub struct Revocations {
    path: Option<PathBuf>,
    ended: RwLock<HashMap<String, u64>>,
    /// Set when the file could not be read at start: then every SSO token is refused, since
    /// the gateway cannot tell which ones were signed out.
    broken: bool,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether `sid` looks like one the gateway makes (so that a file line cannot be forged into
/// two by a crafted id: ids are never client input anyway).
fn plain(sid: &str) -> bool {
    !sid.is_empty()
        && sid.len() <= 64
        && sid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Revocations {
    /// Nothing remembered and nowhere to keep it (tokens die with the process then: the token
    /// key is random per process).
    #[must_use]
    pub fn in_memory() -> Self {
        Self {
            path: None,
            ended: RwLock::new(HashMap::new()),
            broken: false,
        }
    }

    /// The sessions ended before, from `dir`, which is created when missing. On an error the
    /// list is "broken": every SSO token is refused until the file can be read.
    #[must_use]
    pub fn open(dir: &Path) -> Self {
        let path = dir.join(FILE_NAME);
        match Self::read(dir, &path) {
            Ok(ended) => {
                tracing::info!(
                    file = %path.display(),
                    ended = ended.len(),
                    "single sign-on: ended sessions loaded"
                );
                Self {
                    path: Some(path),
                    ended: RwLock::new(ended),
                    broken: false,
                }
            }
            Err(e) => {
                tracing::error!(
                    file = %path.display(),
                    error = %e,
                    "single sign-on: the ended-sessions file cannot be read or written; every \
                     SSO token is refused until it can (fix oidc.state_dir and restart)"
                );
                Self {
                    path: Some(path),
                    ended: RwLock::new(HashMap::new()),
                    broken: true,
                }
            }
        }
    }

    fn read(dir: &Path, path: &Path) -> std::io::Result<HashMap<String, u64>> {
        std::fs::create_dir_all(dir)?;
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let now = now_secs();
        let ended: HashMap<String, u64> = text
            .lines()
            .filter_map(|line| {
                let (sid, exp) = line.split_once(' ')?;
                let exp = exp.trim().parse::<u64>().ok()?;
                (plain(sid) && exp > now).then(|| (sid.to_owned(), exp))
            })
            .collect();
        // Rewrite without the expired entries: write aside, then rename over.
        let temp = path.with_extension("tmp");
        let mut out = String::new();
        for (sid, exp) in &ended {
            out.push_str(sid);
            out.push(' ');
            out.push_str(&exp.to_string());
            out.push('\n');
        }
        std::fs::write(&temp, out)?;
        std::fs::rename(&temp, path)?;
        Ok(ended)
    }

    /// Whether the session `sid` has ended.
    #[must_use]
    pub fn is_ended(&self, sid: &str) -> bool {
        self.broken
            || self
                .ended
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains_key(sid)
    }

    /// Ends the session `sid`, whose token expires at `exp`: written to the file before this
    /// returns.
    ///
    /// # Errors
    /// The file cannot be appended to, or the list is full.
    pub fn end(&self, sid: &str, exp: u64) -> Result<(), String> {
        if !plain(sid) {
            return Err("not a session id".into());
        }
        let mut ended = self
            .ended
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if ended.contains_key(sid) {
            return Ok(());
        }
        if ended.len() >= CAPACITY {
            let now = now_secs();
            ended.retain(|_, exp| *exp > now);
            if ended.len() >= CAPACITY {
                return Err("too many ended sessions remembered".into());
            }
        }
        if let Some(path) = &self.path {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            file.write_all(format!("{sid} {exp}\n").as_bytes())
                .and_then(|()| file.sync_data())
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        ended.insert(sid.to_owned(), exp);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_sessions_survive_a_reopen_and_expired_ones_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let revocations = Revocations::open(&state);
        assert!(!revocations.is_ended("abc"));
        revocations.end("abc", now_secs() + 100).unwrap();
        revocations
            .end("old", now_secs().saturating_sub(1))
            .unwrap();
        assert!(revocations.is_ended("abc"));
        assert!(revocations.end("a b", now_secs() + 100).is_err());
        let again = Revocations::open(&state);
        assert!(again.is_ended("abc"));
        assert!(!again.is_ended("old"));
        let text = std::fs::read_to_string(state.join(FILE_NAME)).unwrap();
        assert!(!text.contains("old"), "{text}");
    }

    #[test]
    fn an_unreadable_file_refuses_every_session() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir_all(state.join(FILE_NAME)).unwrap(); // a directory, not a file
        let revocations = Revocations::open(&state);
        assert!(revocations.is_ended("anything"));
    }
}
