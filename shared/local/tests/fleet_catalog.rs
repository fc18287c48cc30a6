//! The local fleet's snapshot catalog: seeded from the kept object store when the fleet opens
//! (the store's `latest` becomes one `Published` record unless the catalog has it, so the
//! reactor launches nodes on it), kept across runs with the entries the store lost retired,
//! and the updater node shown apart from the serving nodes.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use nodefleet_local::catalog::{SeedError, seed_from_store};
use nodefleet_local::healing::{FleetError, STATE_FILE, STORE_DIR, store_url};
use nodefleet_local::scheduler::NodeCommand;
use nodefleet_local::{EmbeddedStateStore, FsObjectStore, HealingFleet, LocalFleetOptions};
use nodefleet_ports::model::unique_suffix;
use nodefleet_ports::{
    NodeId, NodeRecord, NodeState, ObjectStore, Role, SnapshotId, SnapshotState, StateStore,
    StoreUrl, Timestamp, Version, Zone,
};
use nodefleet_snapshot::create::{CreateOptions, CreateSummary, create};
use nodefleet_snapshot::format::{ChainPoint, manifest_key};
use nodefleet_snapshot::profile;
use nodefleet_snapshot::progress::NoProgress;

/// A fresh folder, removed when dropped.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("nodefleet-catalog-{name}-{}", unique_suffix()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A small anvil-like data dir: a state file and a folder with a file in it.
fn data_dir(root: &Path, state: &str) -> PathBuf {
    let dir = root.join(format!("data-{}", unique_suffix()));
    std::fs::create_dir_all(dir.join("extra")).unwrap();
    std::fs::write(dir.join("state.json"), state).unwrap();
    std::fs::write(dir.join("extra/notes"), vec![7u8; 5_000]).unwrap();
    dir
}

/// Snapshots `dir` at `block` into `store` and publishes it.
async fn publish(
    store: &Arc<dyn ObjectStore>,
    dir: &Path,
    block: u64,
    now_ms: u64,
) -> CreateSummary {
    let options = CreateOptions {
        profile: &profile::ANVIL,
        chain: ChainPoint {
            client: "anvil".into(),
            client_version: "anvil 1.7.1".into(),
            chain_id: 31_337,
            block_height: block,
            block_hash: format!("0x{block:064x}"),
        },
        concurrency: 2,
        now_ms,
        publish: true,
    };
    let summary = create(store.clone(), dir, &options, Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(summary.published_generation.is_some());
    summary
}

fn options(dir: &Path) -> LocalFleetOptions {
    LocalFleetOptions {
        dir: dir.to_path_buf(),
        // Opening starts no node; nothing here runs one.
        command: NodeCommand::new("sh", ["-c", "exec sleep 1000"]),
        nodes: Some(3),
        zones: Some(3),
        gateway: "http://127.0.0.1:8545".into(),
        snapshot_interval: None,
    }
}

#[tokio::test]
async fn seeding_records_the_stores_latest_as_one_published_snapshot() {
    let scratch = TempDir::new("seed");
    let store: Arc<dyn ObjectStore> =
        Arc::new(FsObjectStore::open(scratch.0.join("store")).unwrap());
    let state = EmbeddedStateStore::open(scratch.0.join(STATE_FILE)).unwrap();
    let now = Timestamp::now();

    // Nothing published: nothing recorded.
    assert_eq!(
        seed_from_store(&state, store.as_ref(), now).await.unwrap(),
        None
    );
    assert!(state.list_snapshots().await.unwrap().is_empty());

    let first = publish(&store, &data_dir(&scratch.0, "{\"block\":5}"), 5, 1_000).await;
    let newer_dir = data_dir(&scratch.0, "{\"block\":12, \"more\": true}");
    let newer = publish(&store, &newer_dir, 12, 2_000).await;

    let seeded = seed_from_store(&state, store.as_ref(), now)
        .await
        .unwrap()
        .unwrap();
    let records = state.list_snapshots().await.unwrap();
    assert_eq!(
        records,
        std::slice::from_ref(&seeded),
        "only latest is seeded"
    );
    assert_eq!(seeded.id, SnapshotId::new(newer.snapshot.clone()));
    assert_ne!(seeded.id.as_str(), first.snapshot);
    assert_eq!(seeded.state, SnapshotState::Published);
    assert_eq!(seeded.block_height, 12);
    assert_eq!(
        (seeded.client.as_str(), seeded.client_version.as_str()),
        ("anvil", "anvil 1.7.1")
    );
    assert_eq!(seeded.manifest_key, manifest_key(&newer.snapshot));
    assert_eq!(seeded.bytes, newer.bytes_total, "the data dir's raw bytes");
    assert_eq!(seeded.uploaded_bytes, 0, "unknown");
    assert_eq!(seeded.created_at, Timestamp::from_millis(2_000));
    assert_eq!(seeded.updated_at, now);

    // Again: the same record, nothing added.
    let again = seed_from_store(
        &state,
        store.as_ref(),
        now.plus(std::time::Duration::from_secs(1)),
    )
    .await
    .unwrap();
    assert_eq!(again, Some(seeded));
    assert_eq!(state.list_snapshots().await.unwrap().len(), 1);
}

#[tokio::test]
async fn open_keeps_the_store_and_the_catalog_and_retires_what_the_store_lost() {
    let dir = TempDir::new("open");
    let store_root = dir.0.join(STORE_DIR);
    let store: Arc<dyn ObjectStore> = Arc::new(FsObjectStore::open(&store_root).unwrap());
    let made = publish(&store, &data_dir(&dir.0, "{}"), 9, 3_000).await;
    let gone = "0000000000001-gone";
    {
        // An earlier run's state, with a published catalog entry the store does not have
        // (its snapshot deleted, or the store moved away).
        let old = EmbeddedStateStore::open(dir.0.join(STATE_FILE)).unwrap();
        let mut stale = nodefleet_local::catalog::record_of(
            &nodefleet_snapshot::catalog::read_manifest(store.as_ref(), &made.snapshot)
                .await
                .unwrap(),
            Timestamp::now(),
        );
        stale.id = SnapshotId::new(gone);
        stale.manifest_key = manifest_key(gone);
        stale.block_height = 99;
        old.save_snapshot(&stale).await.unwrap();
    }

    for run in 0..2 {
        let fleet = HealingFleet::open(options(&dir.0)).await.unwrap();
        let records = fleet.state().list_snapshots().await.unwrap();
        let states: Vec<(&str, SnapshotState)> =
            records.iter().map(|r| (r.id.as_str(), r.state)).collect();
        assert_eq!(
            states,
            [
                (gone, SnapshotState::Retired),
                (made.snapshot.as_str(), SnapshotState::Published)
            ],
            "run {run}: the catalog is kept, the entry the store lost is retired"
        );
        assert_eq!(
            fleet.store().root(),
            std::path::absolute(&store_root).unwrap()
        );
        assert!(
            store_root.join(manifest_key(&made.snapshot)).is_file(),
            "run {run}: the store is kept"
        );

        let view = fleet.view().await.unwrap();
        assert_eq!(
            view.latest_snapshot,
            Some(SnapshotId::new(made.snapshot.clone())),
            "run {run}: new nodes are launched on what the store has, not the higher block it lost"
        );
        assert_eq!(view.snapshots.len(), 2);
        assert!(view.nodes.is_empty() && view.updater.is_none());
    }

    // The agents are given the same folder as a file:// URL.
    let url = store_url(&dir.0).unwrap();
    assert_eq!(
        StoreUrl::parse(&url).unwrap(),
        StoreUrl::File {
            root: std::path::absolute(&store_root).unwrap()
        }
    );
}

#[tokio::test]
async fn a_store_whose_latest_cannot_be_read_fails_the_open_and_says_what_to_do() {
    let dir = TempDir::new("corrupt");
    let store_root = dir.0.join(STORE_DIR);
    let store: Arc<dyn ObjectStore> = Arc::new(FsObjectStore::open(&store_root).unwrap());
    let made = publish(&store, &data_dir(&dir.0, "{}"), 3, 4_000).await;
    std::fs::write(
        store_root.join(manifest_key(&made.snapshot)),
        b"not a manifest",
    )
    .unwrap();

    let error = HealingFleet::open(options(&dir.0)).await.unwrap_err();
    assert!(
        matches!(&error, FleetError::Seed { source, .. } if matches!(**source, SeedError::Store(_))),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(&made.snapshot), "{message}");
    assert!(message.contains("move that folder away"), "{message}");
}

#[tokio::test]
async fn the_updater_is_shown_apart_from_the_serving_nodes() {
    let dir = TempDir::new("updater");
    let fleet = HealingFleet::open(options(&dir.0)).await.unwrap();
    let now = Timestamp::now();
    let record = |id: &str, role: Role, state: NodeState| NodeRecord {
        id: NodeId::new(id),
        task: None,
        zone: Zone::new("local-b"),
        target: None,
        role,
        state,
        snapshot: Some(SnapshotId::new("1764620000000-0123456789abcdef")),
        created_at: now,
        updated_at: now,
        version: Version::NEW,
    };
    for saved in [
        record("local-b-1", Role::Serving, NodeState::Serving),
        record("updater-old", Role::Updater, NodeState::Stopped),
        record("updater-1", Role::Updater, NodeState::Syncing),
    ] {
        fleet.state().save_node(&saved).await.unwrap();
    }

    let view = fleet.view().await.unwrap();
    let ids: Vec<&str> = view.nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["local-b-1"], "the updater is not a serving node");
    let updater = view.updater.unwrap();
    assert_eq!(
        updater.id.as_str(),
        "updater-1",
        "a stopped updater is not shown"
    );
    assert_eq!(updater.state, NodeState::Syncing);
    assert_eq!(
        updater.snapshot,
        Some(SnapshotId::new("1764620000000-0123456789abcdef"))
    );
    assert!(!updater.healthy && updater.pid.is_none());
    assert!(view.routes.is_empty());
}
