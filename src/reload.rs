//! The live users: [`Users`] holds one [`UserStore`] snapshot, swaps it whole on every reload
//! and publishes each reload's outcome; [`Reloader`] watches the users file's folder (debounced
//! file events, a slow content poll, SIGHUP) and reloads on the blocking pool.
//!
//! Build and validate first (in [`crate::users`]), then swap one snapshot: requests never see
//! half a file, and a failed reload keeps the last good store.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Instant, SystemTime},
};

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::{
    error::Error,
    users::{Digest32, UserStore, log_warnings, read_users_file},
};

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
