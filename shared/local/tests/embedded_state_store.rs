//! `EmbeddedStateStore` against the `StateStore` contract, in memory (the fake every scenario
//! test uses) and on a redb file (what `nodefleet up` uses), plus what only the embedded store
//! promises: its data survives reopening the file, `purge_expired` reclaims expired keys
//! and events without touching live ones, and `forget_claims` drops a dead owner's claims.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use nodefleet_local::state::EmbeddedStateStore;
use nodefleet_ports::contract::state_store::{T0, sample_config, sample_event, sample_node};
use nodefleet_ports::{NodeId, StateError, StateStore};

/// A database file in a folder of its own under the system temp dir, removed when dropped,
/// so file-backed cases never share a file (redb locks it) and leave nothing behind.
struct TempDatabase {
    dir: PathBuf,
}

impl TempDatabase {
    fn new() -> TempDatabase {
        let dir = std::env::temp_dir().join(format!(
            "nodefleet-state-test-{}",
            nodefleet_ports::model::unique_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDatabase { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("state.redb")
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A store on a fresh file for one contract case. The file's folder is removed as soon as
/// the store has opened it: on Linux the open file lives on until the store (and with it the
/// file handle) is dropped, so a case runs on a real file and leaves nothing behind, even
/// when it panics.
fn store_on_a_fresh_file() -> EmbeddedStateStore {
    let dir = TempDatabase::new();
    EmbeddedStateStore::open(dir.path()).unwrap()
}

mod in_memory {
    use super::*;

    nodefleet_ports::state_store_contract!(async { EmbeddedStateStore::in_memory().unwrap() });
}

mod on_file {
    use super::*;

    nodefleet_ports::state_store_contract!(async { store_on_a_fresh_file() });
}

#[tokio::test]
async fn data_survives_reopening_the_file() {
    let dir = TempDatabase::new();
    let (node, lease, claim) = {
        let store = EmbeddedStateStore::open(dir.path()).unwrap();
        assert_eq!(store.path(), Some(dir.path().as_path()));
        store.save_config(&sample_config()).await.unwrap();
        let node = store.save_node(&sample_node("node-a")).await.unwrap();
        let lease = store
            .acquire_lease("updater", "alpha", Duration::from_secs(30), T0)
            .await
            .unwrap();
        let claim = store
            .claim_idempotency_key("launch-1", "request-1", Duration::from_secs(60), T0)
            .await
            .unwrap();
        store
            .append_event(&sample_event(T0, "e1", Duration::from_secs(3600)))
            .await
            .unwrap();
        (node, lease, claim)
    }; // the store is dropped here, closing the file

    let reopened = EmbeddedStateStore::open(dir.path()).unwrap();
    assert_eq!(reopened.get_config().await.unwrap().unwrap().version.0, 1);
    assert_eq!(reopened.list_nodes().await.unwrap(), vec![node.clone()]);
    assert_eq!(
        reopened
            .get_lease("updater", T0.plus(Duration::from_secs(1)))
            .await
            .unwrap(),
        Some(lease)
    );
    assert_eq!(
        reopened.get_idempotency_key("launch-1", T0).await.unwrap(),
        Some(claim)
    );
    assert_eq!(reopened.list_events(T0, T0, 10).await.unwrap().len(), 1);
    // Conditions still hold across the reopen: the stored version is the one that counts.
    assert!(matches!(
        reopened.save_node(&sample_node("node-a")).await,
        Err(StateError::Conflict { .. })
    ));
    reopened.save_node(&node).await.unwrap();
}

#[tokio::test]
async fn a_file_is_opened_by_one_store_at_a_time() {
    let dir = TempDatabase::new();
    let _first = EmbeddedStateStore::open(dir.path()).unwrap();
    match EmbeddedStateStore::open(dir.path()) {
        Err(StateError::Backend { message }) => {
            assert!(message.contains("state.redb"), "names the file: {message}")
        }
        other => panic!("a second open of a locked file must fail, got {other:?}"),
    }
}

#[tokio::test]
async fn purge_expired_removes_only_expired_keys_and_events() {
    let store = EmbeddedStateStore::in_memory().unwrap();
    let minute = Duration::from_secs(60);
    let hour = Duration::from_secs(3600);
    store
        .claim_idempotency_key("short", "a", minute, T0)
        .await
        .unwrap();
    store
        .claim_idempotency_key("long", "a", hour, T0)
        .await
        .unwrap();
    store
        .append_event(&sample_event(T0, "short", minute))
        .await
        .unwrap();
    store
        .append_event(&sample_event(T0, "long", hour))
        .await
        .unwrap();
    let lease = store.acquire_lease("l", "a", minute, T0).await.unwrap();
    let node = store.save_node(&sample_node("n")).await.unwrap();

    let later = T0.plus(Duration::from_secs(120));
    assert_eq!(store.purge_expired(later).await.unwrap(), 2);
    assert_eq!(
        store.purge_expired(later).await.unwrap(),
        0,
        "nothing left to purge"
    );

    // The expired records are gone even for a reader that passes an old `now`.
    assert_eq!(store.get_idempotency_key("short", T0).await.unwrap(), None);
    assert!(
        store
            .get_idempotency_key("long", later)
            .await
            .unwrap()
            .is_some()
    );
    let events = store.list_events(T0, T0, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].id, "long");
    // Leases and nodes are not the sweeper's business: an expired lease keeps its version.
    assert_eq!(store.get_lease("l", T0).await.unwrap(), Some(lease.clone()));
    assert_eq!(store.list_nodes().await.unwrap(), vec![node]);
    let next = store.acquire_lease("l", "b", minute, later).await.unwrap();
    assert!(next.version > lease.version);
}

#[tokio::test]
async fn a_corrupt_record_is_reported_as_corrupt() {
    // The store writes only JSON it encoded itself; a record damaged on disk must surface
    // as Corrupt naming the record, not as a panic or a silent None.
    let dir = TempDatabase::new();
    {
        let db = redb_write_raw(&dir.path(), "node/broken", b"{not json");
        drop(db);
    }
    let store = EmbeddedStateStore::open(dir.path()).unwrap();
    match store.get_node(&NodeId::from("broken")).await {
        Err(StateError::Corrupt { key, .. }) => assert_eq!(key, "broken"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(matches!(
        store.list_nodes().await,
        Err(StateError::Corrupt { .. })
    ));
}

/// Writes one raw value into the store's table, as a damaged file would hold it.
fn redb_write_raw(path: &std::path::Path, key: &str, value: &[u8]) -> redb::Database {
    const TABLE: redb::TableDefinition<'static, &str, &[u8]> = redb::TableDefinition::new("state");
    let db = redb::Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(TABLE).unwrap();
        table.insert(key, value).unwrap();
    }
    txn.commit().unwrap();
    db
}

#[tokio::test]
async fn forget_claims_drops_the_keys_and_releases_the_leases_of_dead_owners_only() {
    let store = EmbeddedStateStore::in_memory().unwrap();
    let ttl = Duration::from_secs(600);
    for (key, owner) in [
        ("launch/a#1", "nodefleet-up-41"),
        ("launch/b#1", "nodefleet-up-42"),
        ("launch/c#1", "reactor-request-7"),
    ] {
        store
            .claim_idempotency_key(key, owner, ttl, T0)
            .await
            .unwrap();
    }
    let held = store
        .acquire_lease("snapshot-updater", "nodefleet-up-41", ttl, T0)
        .await
        .unwrap();
    store
        .acquire_lease("other", "lambda-9", ttl, T0)
        .await
        .unwrap();

    let forgotten = store.forget_claims("nodefleet-up-").await.unwrap();
    assert_eq!(forgotten.keys, 2);
    assert_eq!(forgotten.leases, ["snapshot-updater"]);
    for key in ["launch/a#1", "launch/b#1"] {
        assert!(store.get_idempotency_key(key, T0).await.unwrap().is_none());
        // Free to claim again at once.
        store
            .claim_idempotency_key(key, "nodefleet-up-43", ttl, T0)
            .await
            .unwrap();
    }
    assert!(
        store
            .get_idempotency_key("launch/c#1", T0)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .get_lease("snapshot-updater", T0)
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.get_lease("other", T0).await.unwrap().is_some());
    // The released lease's next grant fences out the old holder's version.
    let next = store
        .acquire_lease("snapshot-updater", "nodefleet-up-43", ttl, T0)
        .await
        .unwrap();
    assert!(next.version > held.version);
    assert!(matches!(
        store.renew_lease(&held, ttl, T0).await,
        Err(StateError::LeaseLost { .. })
    ));
    // Nothing of that owner is left to forget.
    let again = store.forget_claims("nodefleet-up-41").await.unwrap();
    assert_eq!((again.keys, again.leases.len()), (0, 0));
}
