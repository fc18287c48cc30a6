//! cargo-fuzz target: arbitrary bytes through the gateway's whole pure request path
//! (`prepare` -> `resolve_head` -> `upstream_request` -> `finish`), checking the invariants
//! every answer must keep (DESIGN.md invariants 1 and 8).
//! The input format and the checks are in `nodefleet_gateway_core::conformance`, shared with
//! the seed-corpus replay (`shared/gateway-core/tests/fuzz_corpus.rs`) and the property tests.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nodefleet_gateway_core::conformance::check_request_path;

fuzz_target!(|input: &[u8]| {
    if let Err(violation) = check_request_path(input) {
        panic!(
            "invariant violated: {violation}\ninput: {:?}",
            String::from_utf8_lossy(input)
        );
    }
});
