//! `argilla-gateway users`, the real binary: every subcommand on a file with comments and odd
//! formatting (every byte outside the changed entry kept), refusals that write nothing, the
//! digest check against a concurrent writer, permissions, and a running gateway applying the
//! changes.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic on failure, like tests"
)]
#![allow(clippy::too_many_lines, reason = "case tables are long on purpose")]

mod common;

use std::{
    io::Write as _,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use argilla_gateway::{
    users::UserStore,
    users_edit::{self, Change, EditError, Op, Snapshot, quote},
};

/// A hand-written file: comments everywhere, blank lines, three quoting styles, a block list
/// with a comment inside, an entry indented by four and keys in another order.
fn odd_file() -> String {
    let hash = common::hash("old-password");
    format!(
        "# Team users: edited by hand and by `argilla-gateway users`.\n\
         \n\
         - username: root   # the admin\n\
         \x20 hashed_password: '{hash}'\n\
         \x20 api_key: \"root-key-0123456789\"\n\
         \n\
         # alice: a block list and an indentation of four\n\
         -   username: alice\n\
         \x20   hashed_password: {hash}\n\
         \x20   api_key: alice-key-0123456789\n\
         \x20   email: alice@example.com\n\
         \x20   workspaces:\n\
         \x20     - team-a\n\
         \x20     - shared   # with bob\n\
         \n\
         - username: bob\n\
         \x20 api_key: bob-key-0123456789\n\
         \x20 hashed_password: \"{hash}\"\n\
         \x20 workspaces: [team-b]\n\
         \x20 disabled: true\n"
    )
}

/// alice's entry in [`odd_file`].
fn alice_entry() -> String {
    let hash = common::hash("old-password");
    format!(
        "-   username: alice\n    hashed_password: {hash}\n    api_key: alice-key-0123456789\n    \
         email: alice@example.com\n    workspaces:\n      - team-a\n      - shared   # with bob\n"
    )
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `argilla-gateway users --file FILE ARGS` with `stdin` as its input.
fn users(file: &Path, args: &[&str], stdin: &str) -> Run {
    let mut all = vec!["users", "--file", file.to_str().unwrap()];
    all.extend_from_slice(args);
    let mut child = common::binary(file.parent().unwrap(), &[], &all)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command refused before it reads stdin may have closed it already.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let output = child.wait_with_output().unwrap();
    Run {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The `label: value` line of a command's stdout.
fn printed(run: &Run, label: &str) -> String {
    run.stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{label}: ")))
        .unwrap_or_else(|| panic!("no {label} printed: {}", run.stdout))
        .to_owned()
}

fn setup(content: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.yml");
    std::fs::write(&file, content).unwrap();
    (dir, file)
}

/// Only the temporary files of a command would be left beside the users file.
fn assert_no_leftovers(dir: &Path) {
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(names.is_empty(), "temporary files left: {names:?}");
}

#[test]
fn add_appends_in_the_files_style_and_keeps_every_byte() {
    let (dir, file) = setup(&odd_file());
    let run = users(
        &file,
        &[
            "add",
            "carol",
            "--workspace",
            "team-c",
            "--workspace",
            "shared",
            "--email",
            "carol@example.com",
            "--full-name",
            "Carol C",
            "--cost",
            "4",
        ],
        "s3cret-of-c\ns3cret-of-c\n",
    );
    assert!(run.ok, "{}", run.stderr);
    let key = printed(&run, "api_key");
    assert_eq!(key.len(), 64, "{key}");
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(!run.stderr.contains(&key), "the key went to stderr too");
    let after = std::fs::read_to_string(&file).unwrap();
    let added = after
        .strip_prefix(&odd_file())
        .expect("the file before is kept byte for byte");
    let hash = added
        .lines()
        .find_map(|l| l.strip_prefix("  hashed_password: "))
        .unwrap();
    assert_eq!(
        added,
        format!(
            "\n- username: carol\n  hashed_password: {hash}\n  api_key: {}\n  email: carol@example.com\n  full_name: Carol C\n  workspaces: [team-c, shared]\n",
            quote(&key)
        ),
        "a blank line between entries and two-space keys, as in the file"
    );
    assert!(bcrypt::verify("s3cret-of-c", hash).unwrap());
    let store = UserStore::load(&file).unwrap();
    let carol = store.by_key(&key).expect("the printed key is carol's");
    assert_eq!(carol.username, "carol");
    assert!(!carol.superuser);
    assert_eq!(carol.workspaces, ["team-c", "shared", "carol"]);
    assert_no_leftovers(dir.path());

    // A superuser, with a generated password, in the same file.
    let run = users(
        &file,
        &[
            "add",
            "ops",
            "--superuser",
            "--generate-password",
            "--cost",
            "4",
        ],
        "",
    );
    assert!(run.ok, "{}", run.stderr);
    let password = printed(&run, "password");
    assert!(password.len() >= 20, "{password}");
    let store = UserStore::load(&file).unwrap();
    let ops = store.by_name("ops").unwrap();
    assert!(ops.superuser);
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .ends_with("  superuser: true\n")
    );
    assert!(
        store
            .warnings
            .iter()
            .all(|w| !(w.contains("(\"ops\")") && w.contains("superuser because"))),
        "an explicit superuser: {:?}",
        store.warnings
    );
}

/// Every change subcommand: the file afterwards is the file before with exactly the entry's own
/// lines changed.
#[test]
fn each_change_edits_only_its_entry() {
    let odd = odd_file();
    let alice = alice_entry();
    let cases: Vec<(&str, Vec<&str>, String)> = vec![
        (
            "disable appends the key to the entry",
            vec!["disable", "alice"],
            odd.replace(
                "      - shared   # with bob\n",
                "      - shared   # with bob\n    disabled: true\n",
            ),
        ),
        (
            "enable removes the key's line",
            vec!["enable", "bob"],
            odd.replace("  disabled: true\n", ""),
        ),
        (
            "set-workspaces keeps a block list a block list",
            vec!["set-workspaces", "alice", "team-x", "team-y"],
            odd.replace(
                "    workspaces:\n      - team-a\n      - shared   # with bob\n",
                "    workspaces:\n      - team-x\n      - team-y\n",
            ),
        ),
        (
            "set-workspaces with none: the own workspace only",
            vec!["set-workspaces", "bob"],
            odd.replace("  workspaces: [team-b]\n", "  workspaces: []\n"),
        ),
        (
            "set-workspaces --superuser on an ordinary user",
            vec!["set-workspaces", "bob", "team-b", "--superuser"],
            odd.replace(
                "  disabled: true\n",
                "  disabled: true\n  superuser: true\n",
            ),
        ),
        (
            "set-workspaces --superuser keeps an implicit superuser one",
            vec!["set-workspaces", "root", "ops", "--superuser"],
            odd.replace(
                "  api_key: \"root-key-0123456789\"\n",
                "  api_key: \"root-key-0123456789\"\n  workspaces: [ops]\n  superuser: true\n",
            ),
        ),
        (
            "set-workspaces --no-superuser makes an implicit superuser an ordinary user",
            vec!["set-workspaces", "root", "ops", "--no-superuser"],
            odd.replace(
                "  api_key: \"root-key-0123456789\"\n",
                "  api_key: \"root-key-0123456789\"\n  workspaces: [ops]\n",
            ),
        ),
        (
            "remove takes the entry's lines only",
            vec!["remove", "alice"],
            odd.replace(&alice, ""),
        ),
        (
            "remove the last entry",
            vec!["remove", "bob"],
            odd.split("\n- username: bob\n").next().unwrap().to_owned(),
        ),
    ];
    for (case, args, expected) in cases {
        let (dir, file) = setup(&odd);
        let run = users(&file, &args, "");
        assert!(run.ok, "{case}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{case}: {}", run.stdout);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), expected, "{case}");
        UserStore::load(&file).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_no_leftovers(dir.path());
    }
}

#[test]
fn rotate_key_and_passwd_change_one_line() {
    let odd = odd_file();
    let (_dir, file) = setup(&odd);
    let run = users(&file, &["rotate-key", "bob"], "");
    assert!(run.ok, "{}", run.stderr);
    let key = printed(&run, "api_key");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        odd.replace(
            "  api_key: bob-key-0123456789\n",
            &format!("  api_key: {}\n", quote(&key))
        )
    );
    let store = UserStore::load(&file).unwrap();
    assert_eq!(store.by_key(&key).unwrap().username, "bob");
    assert!(store.by_key("bob-key-0123456789").is_none());

    let before = std::fs::read_to_string(&file).unwrap();
    let run = users(
        &file,
        &["passwd", "alice", "--cost", "4"],
        "a new passphrase\na new passphrase\n",
    );
    assert!(run.ok, "{}", run.stderr);
    assert!(run.stdout.is_empty(), "nothing secret to print");
    let after = std::fs::read_to_string(&file).unwrap();
    let (old, new): (Vec<&str>, Vec<&str>) = (before.lines().collect(), after.lines().collect());
    assert_eq!(old.len(), new.len());
    let changed: Vec<usize> = (0..old.len()).filter(|&i| old[i] != new[i]).collect();
    assert_eq!(changed.len(), 1, "{after}");
    let line = new[changed[0]];
    let hash = line.strip_prefix("    hashed_password: ").unwrap();
    assert!(bcrypt::verify("a new passphrase", hash).unwrap());
    assert!(after.ends_with('\n'));
}

#[test]
fn refusals_write_nothing_and_print_no_secret() {
    let odd = odd_file();
    let cases: &[(&str, &[&str], &str, &str)] = &[
        (
            "duplicate username",
            &["add", "alice", "--cost", "4"],
            "pass-word-1\n",
            "user \"alice\" exists already",
        ),
        (
            "duplicate key",
            &[
                "add",
                "dave",
                "--api-key",
                "alice-key-0123456789",
                "--cost",
                "4",
            ],
            "pass-word-1\n",
            "duplicate api_key",
        ),
        (
            "invalid workspace name",
            &["add", "dave", "--workspace", "bad name", "--cost", "4"],
            "pass-word-1\n",
            "workspace \"bad name\" must be letters, digits",
        ),
        (
            "invalid workspace in set-workspaces",
            &["set-workspaces", "alice", "bad.name"],
            "",
            "workspace \"bad.name\" must be",
        ),
        (
            "invalid username",
            &["add", "Dave", "--cost", "4"],
            "pass-word-1\n",
            "not a valid username",
        ),
        (
            "short api key",
            &["add", "dave", "--api-key", "short", "--cost", "4"],
            "pass-word-1\n",
            "at least 16 characters",
        ),
        (
            "weak password",
            &["add", "dave", "--cost", "4"],
            "short\n",
            "too weak: 5 characters, at least 8",
        ),
        (
            "well-known password",
            &["passwd", "alice", "--cost", "4"],
            "password1\n",
            "a well-known password",
        ),
        (
            "mismatched passwords",
            &["add", "dave", "--cost", "4"],
            "pass-word-1\npass-word-2\n",
            "the two passwords differ",
        ),
        (
            "no password",
            &["passwd", "alice", "--cost", "4"],
            "",
            "no password on stdin",
        ),
        (
            "unknown user: passwd",
            &["passwd", "zed"],
            "pass-word-1\n",
            "no user \"zed\"",
        ),
        (
            "unknown user: rotate-key",
            &["rotate-key", "zed"],
            "",
            "no user \"zed\"",
        ),
        (
            "unknown user: disable",
            &["disable", "zed"],
            "",
            "no user \"zed\"",
        ),
        (
            "unknown user: enable",
            &["enable", "zed"],
            "",
            "no user \"zed\"",
        ),
        (
            "unknown user: set-workspaces",
            &["set-workspaces", "zed", "a"],
            "",
            "no user \"zed\"",
        ),
        (
            "unknown user: remove",
            &["remove", "zed"],
            "",
            "no user \"zed\"",
        ),
        (
            "an implicit superuser is not demoted silently",
            &["set-workspaces", "root", "team-a"],
            "",
            "pass --superuser to keep it a superuser, or --no-superuser",
        ),
    ];
    for (case, args, stdin, expected) in cases {
        let (dir, file) = setup(&odd);
        let run = users(&file, args, stdin);
        assert!(!run.ok, "{case}: accepted");
        assert!(
            run.stderr.contains(expected),
            "{case}: expected {expected:?} in {}",
            run.stderr
        );
        assert!(run.stdout.is_empty(), "{case}: printed {}", run.stdout);
        assert!(
            !run.stderr.contains("alice-key-0123456789") && !run.stderr.contains("pass-word"),
            "{case}: a secret in the message: {}",
            run.stderr
        );
        assert_eq!(std::fs::read_to_string(&file).unwrap(), odd, "{case}");
        assert_no_leftovers(dir.path());
    }
}

/// On a terminal (a pseudo-terminal made by util-linux `script`), the password is asked twice,
/// each answer typed once its prompt has appeared. (Echo is off while `rpassword` reads, but
/// not yet when the prompt appears, so an answer typed at once may still be echoed: this test
/// does not assert on echo.)
#[test]
fn a_terminal_is_asked_twice() {
    use std::io::Read as _;
    let (_dir, file) = setup(&odd_file());
    let answer = |first: &str, second: &str| -> (bool, String) {
        let command = format!(
            "{} users --file {} passwd alice --cost 4",
            env!("CARGO_BIN_EXE_argilla-gateway"),
            file.display()
        );
        let mut child = std::process::Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("util-linux `script` runs");
        let mut stdout = child.stdout.take().unwrap();
        let (chunks, seen) = std::sync::mpsc::channel::<Vec<u8>>();
        let reader = std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buffer) {
                if n == 0 || chunks.send(buffer[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let mut input = child.stdin.take().unwrap();
        let mut output = String::new();
        let started = Instant::now();
        for (prompt, line) in [("New password: ", first), ("again: ", second)] {
            while !output.contains(prompt) {
                let left = Duration::from_secs(20).saturating_sub(started.elapsed());
                let chunk = seen
                    .recv_timeout(left)
                    .unwrap_or_else(|_| panic!("no prompt {prompt:?}: {output}"));
                output.push_str(&String::from_utf8_lossy(&chunk));
            }
            input.write_all(format!("{line}\n").as_bytes()).unwrap();
            input.flush().unwrap();
        }
        let ok = child.wait().unwrap().success();
        drop(input);
        while let Ok(chunk) = seen.recv_timeout(Duration::from_secs(5)) {
            output.push_str(&String::from_utf8_lossy(&chunk));
        }
        reader.join().unwrap();
        (ok, output)
    };
    let (ok, output) = answer("first-answer-1", "second-answer-2");
    assert!(!ok, "{output}");
    assert!(output.contains("the two passwords differ"), "{output}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), odd_file());
    let (ok, output) = answer("typed-on-a-tty", "typed-on-a-tty");
    assert!(ok, "{output}");
    let text = std::fs::read_to_string(&file).unwrap();
    let hash = text
        .lines()
        .find_map(|l| l.strip_prefix("    hashed_password: "))
        .unwrap();
    assert!(bcrypt::verify("typed-on-a-tty", hash).unwrap());
}

#[test]
fn changes_that_change_nothing_write_nothing() {
    let (_dir, file) = setup(&odd_file());
    let inode = std::fs::metadata(&file).unwrap().ino();
    for (args, said) in [
        (["disable", "bob"], "disabled already"),
        (["enable", "alice"], "not disabled"),
    ] {
        let run = users(&file, &args, "");
        assert!(run.ok, "{}", run.stderr);
        assert!(run.stderr.contains(said), "{}", run.stderr);
        assert_eq!(std::fs::metadata(&file).unwrap().ino(), inode, "rewritten");
    }
}

#[test]
fn invalid_file_layouts_are_refused_not_guessed() {
    let hash = common::hash("old-password");
    let cases = [
        (
            "flow entry",
            format!(
                "- {{username: ann, hashed_password: '{hash}', api_key: ann-key-0123456789}}\n"
            ),
        ),
        (
            "broken YAML",
            format!("- username: ann\n  hashed_password: '{hash}'\n  api_key: [\n"),
        ),
        (
            "flow list",
            format!(
                "[{{username: ann, hashed_password: '{hash}', api_key: ann-key-0123456789}}]\n"
            ),
        ),
    ];
    for (case, content) in cases {
        let (_dir, file) = setup(&content);
        let run = users(&file, &["disable", "ann"], "");
        assert!(!run.ok, "{case}");
        assert!(
            run.stderr.contains("edit the file by hand") || run.stderr.contains("fix it first"),
            "{case}: {}",
            run.stderr
        );
        assert_eq!(std::fs::read_to_string(&file).unwrap(), content, "{case}");
    }
}

#[test]
fn list_shows_users_in_file_order_without_secrets() {
    let (dir, file) = setup(&odd_file());
    // Resolved like the gateway: ARGILLA_LOCAL_AUTH_USERS_DB_FILE, no --file.
    let output = common::binary(
        dir.path(),
        &[("ARGILLA_LOCAL_AUTH_USERS_DB_FILE", file.to_str().unwrap())],
        &["users", "list"],
    )
    .output()
    .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines,
        vec![
            vec!["USERNAME", "EMAIL", "SUPERUSER", "DISABLED", "WORKSPACES"],
            vec!["root", "-", "yes", "no", "root"],
            vec![
                "alice",
                "alice@example.com",
                "no",
                "no",
                "team-a,shared,alice"
            ],
            vec!["bob", "-", "no", "yes", "team-b,bob"],
        ],
        "{text}"
    );
    assert!(!text.contains("key-0123456789") && !text.contains("$2"));
}

#[test]
fn add_creates_a_missing_file_private() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.yml");
    let run = users(
        &file,
        &[
            "add",
            "admin",
            "--superuser",
            "--generate-password",
            "--cost",
            "4",
        ],
        "",
    );
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let store = UserStore::load(&file).unwrap();
    let admin = store.by_key(&printed(&run, "api_key")).unwrap();
    assert!(admin.superuser);
    let run = users(&dir.path().join("other.yml"), &["disable", "x"], "");
    assert!(!run.ok);
    assert!(
        run.stderr.contains("`users add` creates it"),
        "{}",
        run.stderr
    );
}

#[test]
fn permissions_and_owner_are_kept() {
    let (dir, file) = setup(&odd_file());
    for mode in [0o640, 0o600, 0o644] {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        let before = std::fs::metadata(&file).unwrap();
        let run = users(&file, &["rotate-key", "alice"], "");
        assert!(run.ok, "{}", run.stderr);
        let after = std::fs::metadata(&file).unwrap();
        assert_ne!(
            before.ino(),
            after.ino(),
            "replaced by rename, not rewritten"
        );
        assert_eq!(after.permissions().mode() & 0o7777, mode);
        assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
    }
    // Another owner (possible when the tests run as root, as CI does): the new file gets it too,
    // not the owner of the process that wrote it.
    if std::os::unix::fs::chown(&file, Some(4321), Some(4322)).is_ok() {
        let run = users(&file, &["disable", "alice"], "");
        assert!(run.ok, "{}", run.stderr);
        let after = std::fs::metadata(&file).unwrap();
        assert_eq!((after.uid(), after.gid()), (4321, 4322));
    }
    assert_no_leftovers(dir.path());
}

#[test]
fn a_symlinked_file_is_written_where_it_points() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.yml");
    std::fs::write(&real, odd_file()).unwrap();
    let link = dir.path().join("users.yml");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let run = users(&link, &["disable", "alice"], "");
    assert!(run.ok, "{}", run.stderr);
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        UserStore::load(&real)
            .unwrap()
            .by_name("alice")
            .unwrap()
            .is_disabled()
    );
}

/// The digest check, made deterministic at the library level: the file is rewritten between
/// the read and the commit.
#[test]
fn a_change_made_meanwhile_is_never_lost() {
    let (dir, file) = setup(&odd_file());
    let snapshot = Snapshot::read(&file).unwrap();
    let change = Change::Update {
        username: "alice".into(),
        ops: vec![Op::Set("disabled", serde_yaml::Value::Bool(true))],
    };
    let edited = users_edit::apply(snapshot.text().unwrap(), &change).unwrap();
    users_edit::validate(&snapshot.path, &edited).unwrap();
    let other = odd_file().replace("bob-key-0123456789", "bob-key-edited-by-hand");
    std::fs::write(&file, &other).unwrap();
    let error = users_edit::commit(&snapshot, edited.as_bytes()).unwrap_err();
    assert!(matches!(error, EditError::Changed(_)), "{error}");
    assert!(
        error.to_string().contains("run the command again"),
        "{error}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), other);
    assert_no_leftovers(dir.path());
    // Read again, the same change applies on top of the other one.
    let snapshot = Snapshot::read(&file).unwrap();
    let edited = users_edit::apply(snapshot.text().unwrap(), &change).unwrap();
    users_edit::commit(&snapshot, edited.as_bytes()).unwrap();
    let store = UserStore::load(&file).unwrap();
    assert!(store.by_name("alice").unwrap().is_disabled());
    assert!(store.by_key("bob-key-edited-by-hand").is_some());
}

/// The same through the binary: the test holds the folder lock that `users` commands take to
/// write, waits until the command is blocked on it (after its read), edits the file, and lets
/// it go on.
#[test]
fn the_binary_refuses_to_overwrite_a_change_made_meanwhile() {
    let (dir, file) = setup(&odd_file());
    let folder = std::fs::File::open(dir.path()).unwrap();
    folder.lock().unwrap();
    let child = common::binary(
        dir.path(),
        &[],
        &[
            "users",
            "--file",
            file.to_str().unwrap(),
            "disable",
            "alice",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let waiting = format!(" {} ", child.id());
    let started = Instant::now();
    loop {
        let locks = std::fs::read_to_string("/proc/locks").unwrap();
        if locks
            .lines()
            .any(|l| l.contains("-> FLOCK") && l.contains(&waiting))
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the command never waited on the lock: {locks}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let other = odd_file().replace("bob-key-0123456789", "bob-key-edited-by-hand");
    std::fs::write(&file, &other).unwrap();
    folder.unlock().unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("the file changed while this command ran"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), other);
    assert_no_leftovers(dir.path());
}

/// A running gateway (the binary, against a recording upstream) applies `add`, `disable` and
/// `rotate-key` within its reload time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_gateway_applies_each_change() {
    let upstream = common::Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.yml");
    std::fs::write(&file, common::users_yaml()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let gateway = common::binary(
        dir.path(),
        &[
            ("ARGILLA_GATEWAY_LISTEN", &listen),
            ("ARGILLA_GATEWAY_UPSTREAM_URL", &upstream.url()),
            ("ARGILLA_GATEWAY_UPSTREAM_API_KEY", common::SERVICE_KEY),
            ("ARGILLA_LOCAL_AUTH_USERS_DB_FILE", file.to_str().unwrap()),
            (
                "ARGILLA_LOCAL_AUTH_SECRET_KEY",
                "users-cmd-secret-0123456789",
            ),
            ("ARGILLA_GATEWAY_RELOAD_DEBOUNCE_MILLIS", "20"),
            ("ARGILLA_GATEWAY_RELOAD_POLL_INTERVAL_SECS", "1"),
        ],
        &[],
    )
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let _gateway = Kill(gateway);
    let base = format!("http://{listen}");
    let me = format!("{base}/api/me");
    let started = Instant::now();
    while common::get_opt(&format!("{base}/healthz")).await != Some(200) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "gateway did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status(&me, ("x-argilla-api-key", "alice-key")).await, 200);

    let file2 = file.clone();
    let run = tokio::task::spawn_blocking(move || {
        users(
            &file2,
            &["add", "erin", "--workspace", "team-a", "--cost", "4"],
            "tulip-s3cret-pw\n",
        )
    })
    .await
    .unwrap();
    assert!(run.ok, "{}", run.stderr);
    let erin_key = printed(&run, "api_key");
    until(&me, &erin_key, 200, "the added user's key").await;
    let basic = common::basic("erin", "tulip-s3cret-pw");
    assert_eq!(
        status(&me, ("authorization", &basic)).await,
        200,
        "the added user's password"
    );

    let file2 = file.clone();
    let run = tokio::task::spawn_blocking(move || users(&file2, &["disable", "erin"], ""))
        .await
        .unwrap();
    assert!(run.ok, "{}", run.stderr);
    until(&me, &erin_key, 400, "the disabled user (InactiveUserError)").await;

    let file2 = file.clone();
    let run = tokio::task::spawn_blocking(move || users(&file2, &["rotate-key", "alice"], ""))
        .await
        .unwrap();
    assert!(run.ok, "{}", run.stderr);
    let alice_key = printed(&run, "api_key");
    until(&me, &alice_key, 200, "the rotated key").await;
    assert_eq!(
        status(&me, ("x-argilla-api-key", "alice-key")).await,
        401,
        "the old key"
    );
}

/// Kills the gateway however the test ends.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn status(url: &str, header: (&str, &str)) -> u16 {
    common::get(url, &[header]).await.status.as_u16()
}

/// Polls until `key` gets `want` from `/api/me`, within the reload time (debounce 20 ms, poll
/// 1 s) and a margin for a busy machine.
async fn until(me: &str, key: &str, want: u16, what: &str) {
    let started = Instant::now();
    loop {
        let got = status(me, ("x-argilla-api-key", key)).await;
        if got == want {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: still {got} after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
