//! Fuzz target: see [`argilla_gateway::fuzzing::credential`], which holds the properties checked (and
//! which `cargo test` also runs on every input committed under `fuzz/corpus/credential`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| argilla_gateway::fuzzing::credential::check(data));
