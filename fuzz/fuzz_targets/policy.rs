//! Fuzz target: see [`argilla_gateway::fuzzing::policy`], which holds the properties checked (and
//! which `cargo test` also runs on every input committed under `fuzz/corpus/policy`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| argilla_gateway::fuzzing::policy::check(data));
