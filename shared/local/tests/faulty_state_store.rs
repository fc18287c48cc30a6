//! `FaultyStateStore` around the embedded store: with no fault set it passes the whole
//! `StateStore` contract, and a lost answer on an idempotency claim shows why claims exist:
//! the retry finds the claim already made, and nothing happens twice.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use nodefleet_local::state::EmbeddedStateStore;
use nodefleet_ports::faults::{Faults, FaultyStateStore};
use nodefleet_ports::{StateError, StateStore, Timestamp};

mod contract_through_the_wrapper {
    use super::*;

    nodefleet_ports::state_store_contract!(async {
        FaultyStateStore::new(EmbeddedStateStore::in_memory().unwrap(), Faults::new())
    });
}

const NOW: Timestamp = Timestamp::from_millis(4_102_444_800_000);
const TTL: Duration = Duration::from_secs(600);

#[tokio::test]
async fn a_claim_whose_answer_was_lost_is_found_by_the_retry() {
    let faults = Faults::new();
    let store = FaultyStateStore::new(EmbeddedStateStore::in_memory().unwrap(), faults.clone());
    faults.lose_answer_nth("claim_idempotency_key", 1);

    let error = store
        .claim_idempotency_key("replace/node-3/gen-7", "reactor-a", TTL, NOW)
        .await
        .unwrap_err();
    assert!(error.is_retryable(), "{error}");

    let retry = store
        .claim_idempotency_key("replace/node-3/gen-7", "reactor-a", TTL, NOW)
        .await
        .unwrap_err();
    assert!(
        matches!(retry, StateError::AlreadyClaimed { .. }),
        "{retry}"
    );
    let claim = store
        .get_idempotency_key("replace/node-3/gen-7", NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claim.owner, "reactor-a", "the first call's claim stands");
}

#[tokio::test]
async fn a_failed_save_changes_nothing() {
    let faults = Faults::new();
    let inner = EmbeddedStateStore::in_memory().unwrap();
    let store = FaultyStateStore::new(inner, faults.clone());
    faults.fail_nth("acquire_lease", 1);

    let error = store
        .acquire_lease("snapshot-updater", "run-1", TTL, NOW)
        .await
        .unwrap_err();
    assert!(matches!(error, StateError::Unavailable { .. }), "{error}");
    assert_eq!(
        store
            .inner()
            .get_lease("snapshot-updater", NOW)
            .await
            .unwrap(),
        None
    );

    let lease = store
        .acquire_lease("snapshot-updater", "run-1", TTL, NOW)
        .await
        .unwrap();
    assert_eq!(lease.holder, "run-1");
    assert_eq!(faults.calls("acquire_lease"), 2);
}
