//! The property checks of the fuzz targets (`fuzz/`), here so that the targets and `cargo test`
//! run the same checks: `tests/fuzz_corpus.rs` replays every committed corpus input through them,
//! so an input a fuzzing run once found keeps failing a plain test run until it is fixed. Not
//! part of the gateway's interface.

pub mod credential;
pub mod policy;
pub mod users_file;
