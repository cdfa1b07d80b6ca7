//! Every input committed under `fuzz/corpus/<target>` runs through the same property checks as
//! the fuzz target, in a plain `cargo test`: a crash found once stays a failing test until fixed.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    path::Path,
};

use argilla_gateway::fuzzing;

/// Runs each saved input of `target` through `check`; names every input that broke a property.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .expect("the corpus folder")
        .map(|entry| entry.expect("a corpus entry").path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no corpus in {}", dir.display());
    let failed: Vec<String> = inputs
        .iter()
        .filter(|input| {
            let data = std::fs::read(input).expect("a corpus input");
            catch_unwind(AssertUnwindSafe(|| check(&data))).is_err()
        })
        .map(|input| input.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{target}: {failed:#?}");
}

#[test]
fn credential_corpus() {
    replay("credential", fuzzing::credential::check);
}

#[test]
fn policy_corpus() {
    replay("policy", fuzzing::policy::check);
}

#[test]
fn users_file_corpus() {
    replay("users_file", fuzzing::users_file::check);
}
