//! Replays the cargo-fuzz seed corpus (`fuzz/corpus/request_path/`) through the gateway's
//! pure request path on stable Rust, with the fuzz target's invariant checks, so the seeds
//! (and any crash input added to the corpus) are regression tests in every `cargo test`.
//!
//! The input format and the checks are in `nodefleet_gateway_core::conformance`, which the
//! fuzz target calls too. The test fails when the corpus folder is missing or empty.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use nodefleet_gateway_core::conformance::check_request_path;

/// Where the seeds live, relative to this crate.
const CORPUS: &str = "../../fuzz/corpus/request_path";

#[test]
fn every_corpus_input_keeps_the_invariants() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(CORPUS);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the seed corpus {} is missing: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "the seed corpus {} is empty",
        dir.display()
    );
    let mut failures = Vec::new();
    for path in &files {
        let input = std::fs::read(path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        match catch_unwind(AssertUnwindSafe(|| check_request_path(&input))) {
            Ok(Ok(())) => {}
            Ok(Err(violation)) => failures.push(format!("{name}: {violation}")),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                failures.push(format!("{name}: panicked: {message}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus inputs break an invariant:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}
