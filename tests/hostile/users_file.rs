//! A hostile users file: invalid YAML, wrong types, alias bombs, deep nesting, a huge file, a
//! symlink loop, a directory, a FIFO, and a file written in place while it is being read. Each
//! time the last good users must stay in force, the new file's users must not get in, and the
//! error must not repeat a secret.

use std::{io::Write as _, path::Path, time::Duration};

use crate::{
    common::{self, Gateway},
    harness::{PATIENCE, Rig, alice_get, assert_one, req},
};

/// A user the hostile files try to add; their key must never work.
fn mallory() -> String {
    common::Entry::new("mallory").yaml()
}

/// Runs `change` on the users file's folder and waits until the gateway has tried to reload
/// (and failed). Returns the published error.
async fn failed_reload(gw: &Gateway, change: impl FnOnce(&Path, &Path)) -> String {
    let mut reloads = gw.users.subscribe();
    let before = reloads.borrow_and_update().failures;
    change(gw.dir.path(), &gw.users_file);
    tokio::time::timeout(PATIENCE, reloads.wait_for(|s| s.failures > before))
        .await
        .expect("the gateway tried the new file and refused it")
        .unwrap()
        .last_error
        .clone()
        .unwrap_or_default()
}

/// Replaces the file atomically with `content`.
fn replace_with(content: &[u8]) -> impl FnOnce(&Path, &Path) {
    let content = content.to_vec();
    move |dir, file| {
        let temp = dir.join(".users.yml.tmp");
        std::fs::write(&temp, content).unwrap();
        std::fs::rename(&temp, file).unwrap();
    }
}

/// The old users still work, mallory does not, and nothing reached the upstream but alice.
async fn still_the_old_users(rig: &Rig, error: &str) {
    for secret in [
        common::hash("alice-pw"),
        "alice-key".to_owned(),
        "mallory-key".to_owned(),
    ] {
        assert!(
            !error.contains(&secret),
            "the reload error repeats a secret: {error}"
        );
    }
    rig.up.clear();
    let reply = rig.raw(alice_get("/api/datasets/ds")).await;
    assert_eq!(
        reply.status(),
        200,
        "the last good users are gone: {}",
        reply.text()
    );
    assert_one(
        &rig.up,
        "/api/datasets/ds",
        Some("workspace=alice"),
        "alice",
    );
    rig.up.clear();
    let reply = rig
        .raw(req(
            "GET",
            "/api/datasets/ds",
            &[("X-Argilla-Api-Key", "mallory-key")],
            "",
        ))
        .await;
    reply.assert_error(401, "UnauthorizedError");
    rig.up.assert_nothing();
}

async fn refused_file(content: &[u8]) {
    let rig = Rig::start().await;
    let error = failed_reload(&rig.gw, replace_with(content)).await;
    still_the_old_users(&rig, &error).await;
}

fn with_mallory(extra: &str) -> Vec<u8> {
    format!("{}{}{extra}", common::users_yaml(), mallory()).into_bytes()
}

#[tokio::test]
async fn users_invalid_yaml() {
    refused_file(&with_mallory("- username: [unclosed\n")).await;
}

#[tokio::test]
async fn users_wrong_type_workspaces_string() {
    refused_file(&with_mallory(
        "- username: eve\n  hashed_password: x\n  api_key: eve-key\n  workspaces: team-b\n",
    ))
    .await;
}

#[tokio::test]
async fn users_wrong_type_disabled_word() {
    // Argilla's pydantic reads `disabled: 'yes'` as true; a gateway that read it as false would
    // let a disabled user in. Refusing the file is the safe answer.
    let yaml = common::users_yaml().replace("disabled: true", "disabled: 'yes'");
    refused_file(format!("{yaml}{}", mallory()).as_bytes()).await;
}

#[tokio::test]
async fn users_wrong_type_api_key_list() {
    refused_file(&with_mallory(
        "- username: eve\n  hashed_password: x\n  api_key: [eve-key, other]\n",
    ))
    .await;
}

#[tokio::test]
async fn users_unknown_field_typo() {
    // `disable:` instead of `disabled:` must not silently enable a user.
    refused_file(&with_mallory(&format!(
        "{}  disable: true\n",
        common::Entry::new("eve").yaml()
    )))
    .await;
}

#[tokio::test]
async fn users_plaintext_password() {
    refused_file(&with_mallory(
        "- username: eve\n  hashed_password: eve-pw\n  api_key: eve-key\n",
    ))
    .await;
}

#[tokio::test]
async fn users_2x_hash_prefix() {
    let hash = common::hash("eve-pw").replacen("$2b$", "$2x$", 1);
    refused_file(&with_mallory(
        &common::Entry::new("eve").hashed(hash).yaml(),
    ))
    .await;
}

#[tokio::test]
async fn users_duplicate_api_key() {
    refused_file(&with_mallory(
        &common::Entry::new("eve").key("alice-key").yaml(),
    ))
    .await;
}

#[tokio::test]
async fn users_top_level_mapping() {
    refused_file(b"users:\n  - username: mallory\n    api_key: mallory-key\n").await;
}

#[tokio::test]
async fn users_empty_file() {
    refused_file(b"").await;
}

/// A file of comments only is as empty as an empty file: refused, not read as "no users"
/// (which would lock everyone out).
#[tokio::test]
async fn users_comments_only() {
    refused_file(b"# all users commented out while editing\n# - username: alice\n").await;
}

#[tokio::test]
async fn users_null_document() {
    refused_file(b"~\n").await;
}

#[tokio::test]
async fn users_not_utf8() {
    let mut bytes = with_mallory("");
    bytes.extend_from_slice(b"# \xff\xfe\n");
    refused_file(&bytes).await;
}

#[tokio::test]
async fn users_alias_bomb() {
    let mut yaml = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let mut previous = 'a';
    for name in 'b'..='j' {
        let refs = vec![format!("*{previous}"); 9].join(",");
        yaml.push_str(
            &[
                &name.to_string(),
                ": &",
                &name.to_string(),
                " [",
                &refs,
                "]\n",
            ]
            .concat(),
        );
        previous = name;
    }
    refused_file(yaml.as_bytes()).await;
}

#[tokio::test]
async fn users_deep_nesting() {
    let depth = 100_000;
    let yaml = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    refused_file(yaml.as_bytes()).await;
}

#[tokio::test]
async fn users_huge_file() {
    // 20 MB: a list of junk entries, then mallory. Refused, in bounded time, while serving.
    let mut yaml = String::with_capacity(21 << 20);
    while yaml.len() < 20 << 20 {
        yaml.push_str("- junk-entry-that-is-not-a-user-mapping-at-all\n");
    }
    yaml.push_str(&mallory());
    refused_file(yaml.as_bytes()).await;
}

#[tokio::test]
async fn users_symlink_loop() {
    let rig = Rig::start().await;
    let error = failed_reload(&rig.gw, |dir, file| {
        let a = dir.join("loop-a.yml");
        let b = dir.join("loop-b.yml");
        std::os::unix::fs::symlink(&b, &a).unwrap();
        std::os::unix::fs::symlink(&a, &b).unwrap();
        let temp = dir.join(".users.link.tmp");
        std::os::unix::fs::symlink(&a, &temp).unwrap();
        std::fs::rename(&temp, file).unwrap();
    })
    .await;
    still_the_old_users(&rig, &error).await;
}

#[tokio::test]
async fn users_dangling_symlink() {
    let rig = Rig::start().await;
    let error = failed_reload(&rig.gw, |dir, file| {
        let temp = dir.join(".users.link.tmp");
        std::os::unix::fs::symlink(dir.join("nowhere.yml"), &temp).unwrap();
        std::fs::rename(&temp, file).unwrap();
    })
    .await;
    still_the_old_users(&rig, &error).await;
}

#[tokio::test]
async fn users_replaced_by_directory() {
    let rig = Rig::start().await;
    let error = failed_reload(&rig.gw, |_, file| {
        std::fs::remove_file(file).unwrap();
        std::fs::create_dir(file).unwrap();
    })
    .await;
    still_the_old_users(&rig, &error).await;
}

#[tokio::test]
async fn users_deleted() {
    let rig = Rig::start().await;
    let error = failed_reload(&rig.gw, |_, file| std::fs::remove_file(file).unwrap()).await;
    still_the_old_users(&rig, &error).await;
}

/// `O_NONBLOCK` on Linux: opening a FIFO for writing then fails at once unless a reader has it
/// open (a reader blocked in `open` counts, and is woken).
const O_NONBLOCK: i32 = 0o4000;

/// A file replaced mid-read: the users file is a FIFO whose writer sends half a file and
/// pauses; meanwhile a good file replaces it. The reloader must not hang on the half-read file
/// for ever: the good file takes effect.
#[tokio::test]
async fn users_replaced_mid_read_does_not_wedge_reloads() {
    use std::os::unix::fs::OpenOptionsExt as _;
    /// Closes the writer however the test ends, so a reader stuck on the FIFO gets end-of-file.
    struct Writer(Option<std::fs::File>);
    let rig = Rig::start().await;
    let dir = rig.gw.dir.path().to_owned();
    let fifo = dir.join("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let link = dir.join(".users.fifo.tmp");
    std::fs::hard_link(&fifo, &link).unwrap();
    let mut reloads = rig.gw.users.subscribe();
    let before = reloads.borrow_and_update().attempts;
    std::fs::rename(&link, &rig.gw.users_file).unwrap();
    // Wait until the gateway either refuses the FIFO (an attempt is published) or opens it
    // for reading (our non-blocking open for writing succeeds).
    let mut writer = Writer(None);
    tokio::time::timeout(PATIENCE, async {
        loop {
            if reloads.borrow().attempts > before {
                return;
            }
            if let Ok(file) = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(O_NONBLOCK)
                .open(&fifo)
            {
                writer.0 = Some(file);
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the gateway looks at the replaced file");
    if let Some(file) = writer.0.as_mut() {
        let full = common::users_yaml();
        file.write_all(&full.as_bytes()[..full.len() / 2]).unwrap();
    }
    // Mid-read, a good file with a new user replaces the FIFO.
    let erin = common::UsersFile::standard()
        .with(common::Entry::new("erin"))
        .yaml();
    let applied = reloads.borrow().applied;
    let temp = dir.join(".users.yml.tmp");
    std::fs::write(&temp, &erin).unwrap();
    std::fs::rename(&temp, &rig.gw.users_file).unwrap();
    let waited = tokio::time::timeout(
        Duration::from_secs(3),
        reloads.wait_for(|s| s.applied > applied),
    )
    .await;
    drop(writer.0.take());
    assert!(
        waited.is_ok(),
        "a good users file was not applied within 3 s: the reloader is stuck reading the \
         file it replaced"
    );
    let reply = rig
        .raw(req(
            "GET",
            "/api/datasets/ds",
            &[("X-Argilla-Api-Key", "erin-key")],
            "",
        ))
        .await;
    assert_eq!(reply.status(), 200);
}

/// A file rewritten in place: a reader that catches it half-written (a valid prefix: fewer
/// users) must not apply it. Requests never see half a file.
#[tokio::test]
async fn users_half_written_in_place_is_not_applied() {
    let rig = Rig::start().await;
    let full = common::users_yaml();
    // The prefix up to carol: root, alice and bob only. A valid file on its own.
    let cut = full.find("- username: carol").unwrap();
    let mut reloads = rig.gw.users.subscribe();
    let before = reloads.borrow_and_update().attempts;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&rig.gw.users_file)
        .unwrap();
    file.write_all(&full.as_bytes()[..cut]).unwrap();
    file.flush().unwrap();
    // Either the gateway waits for the writer (no reload attempt while the file is open) or it
    // reads now; give it the time a debounced reload takes (20 ms here), waiting on the event
    // itself. A writer that pauses for less than a second is ordinary.
    let _ = tokio::time::timeout(
        Duration::from_millis(800),
        reloads.wait_for(|s| s.attempts > before && s.last_error.is_none()),
    )
    .await;
    rig.up.clear();
    let reply = rig
        .raw(req(
            "GET",
            "/api/datasets/ds",
            &[("X-Argilla-Api-Key", "carol-key")],
            "",
        ))
        .await;
    assert_eq!(
        reply.status(),
        200,
        "carol was locked out by a half-written users file"
    );
    file.write_all(&full.as_bytes()[cut..]).unwrap();
    drop(file);
    let reply = rig
        .raw(req(
            "GET",
            "/api/datasets/ds",
            &[("X-Argilla-Api-Key", "carol-key")],
            "",
        ))
        .await;
    assert_eq!(reply.status(), 200);
}
