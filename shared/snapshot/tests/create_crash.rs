//! Invariant 4 of the snapshot format: a reader can always restore `latest`. Snapshot A is
//! published; then B is created through a fault-injecting store that breaks one call of
//! `create` (every write: each `put` and each `put_if_absent`, failing before it lands and
//! losing its answer after it landed; and every read: `get`, `list`, `head`), for every n
//! from 1 until `create` gets through without the fault firing. After each broken create,
//! `latest` names a complete snapshot that verifies (every chunk read back) and restores
//! byte-identical: A, or B if its ref landed and only the answer was lost. A broken write
//! always fails the create; a broken read may be worked around, and then B is published
//! and sound.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::sync::Arc;

use nodefleet_ports::ObjectStore;
use nodefleet_ports::fakes::MemoryObjectStore;
use nodefleet_ports::faults::{Faults, FaultyObjectStore};
use nodefleet_snapshot::catalog::{self, Selector};
use nodefleet_snapshot::create::{CreateOptions, create};
use nodefleet_snapshot::format::ChainPoint;
use nodefleet_snapshot::profile;
use nodefleet_snapshot::progress::NoProgress;
use nodefleet_snapshot::restore::{RestoreOptions, restore};
use nodefleet_snapshot::verify::{VerifyScope, verify};
use support::{Scratch, noise, shared_tree, tree, write_file};

const CLIENT: &str = "reth";
const A_AT: u64 = 1_700_000_000_000;
const B_AT: u64 = 1_700_000_060_000;

/// A reth-like data dir: an MDBX file (rewritten in place), static files, and the node's
/// own discovery key (excluded).
fn data_dir_a(root: &Path) {
    write_file(root, "db/mdbx.dat", &noise(1, 2 * 1024 * 1024), 0o644);
    write_file(
        root,
        "static_files/headers_0_499999",
        &noise(2, 3 * 1024 * 1024),
        0o644,
    );
    write_file(root, "discovery-secret", b"node identity", 0o600);
    std::fs::create_dir_all(root.join("static_files/empty")).unwrap();
}

/// A after a while: pages of the MDBX file changed in place, a new static file.
fn data_dir_b(root: &Path) {
    data_dir_a(root);
    let mut mdbx = noise(1, 2 * 1024 * 1024);
    for page in (0..mdbx.len()).step_by(300 * 1024) {
        mdbx[page] ^= 0xa5;
    }
    write_file(root, "db/mdbx.dat", &mdbx, 0o644);
    write_file(
        root,
        "static_files/headers_500000_999999",
        &noise(3, 1024 * 1024 + 1),
        0o644,
    );
}

fn is_write(operation: &str) -> bool {
    matches!(operation, "put" | "put_if_absent")
}

fn options(now_ms: u64) -> CreateOptions {
    CreateOptions {
        profile: profile::by_name(CLIENT).unwrap(),
        chain: ChainPoint {
            client: CLIENT.to_owned(),
            chain_id: 1,
            block_height: now_ms / 12_000,
            ..ChainPoint::default()
        },
        concurrency: 2,
        now_ms,
        publish: true,
    }
}

async fn create_in(
    store: Arc<dyn ObjectStore>,
    dir: &Path,
    now_ms: u64,
) -> Result<String, nodefleet_snapshot::error::SnapshotError> {
    create(store, dir, &options(now_ms), Arc::new(NoProgress))
        .await
        .map(|summary| summary.snapshot)
}

/// An independent copy of every object of `from`.
async fn copy_of(from: &MemoryObjectStore) -> MemoryObjectStore {
    let to = MemoryObjectStore::new();
    for key in from.keys() {
        to.put(&key, from.object(&key).unwrap()).await.unwrap();
    }
    to
}

/// The invariant: `latest` is one of `expected` (a snapshot's creation time, its source
/// dir; ids also hash pack names, which depend on upload order, so time tells them apart),
/// verifies with every chunk read back, and restores byte-identical to its source. Returns
/// its creation time and id.
async fn latest_is_sound(
    store: &MemoryObjectStore,
    expected: &[(u64, &Path)],
    what: &str,
) -> (u64, String) {
    let store: Arc<dyn ObjectStore> = Arc::new(store.clone());
    let latest = catalog::latest(store.as_ref())
        .await
        .unwrap()
        .unwrap()
        .snapshot;
    let manifest = catalog::read_manifest(store.as_ref(), &latest)
        .await
        .unwrap();
    let source = expected
        .iter()
        .find(|(at, _)| *at == manifest.created_at_ms)
        .unwrap_or_else(|| panic!("{what}: latest is {latest}, not one of {expected:?}"))
        .1;
    let report = verify(store.clone(), &manifest, &VerifyScope::Everything, 2)
        .await
        .unwrap_or_else(|e| panic!("{what}: latest {latest} does not verify: {e}"));
    assert_eq!(
        report.chunks_checked,
        manifest.chunks.len() as u64,
        "{what}"
    );
    let dest = Scratch::new("crash-restore");
    restore(
        store,
        &Selector::Latest,
        &dest.path,
        &RestoreOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap_or_else(|e| panic!("{what}: latest {latest} does not restore: {e}"));
    assert_eq!(tree(&dest.path), shared_tree(source, CLIENT), "{what}");
    (manifest.created_at_ms, latest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_survives_a_broken_create_at_every_step() {
    let dir_a = Scratch::new("crash-a");
    data_dir_a(&dir_a.path);
    let dir_b = Scratch::new("crash-b");
    data_dir_b(&dir_b.path);

    let base = MemoryObjectStore::new();
    create_in(Arc::new(base.clone()), &dir_a.path, A_AT)
        .await
        .unwrap();
    let expected = [(A_AT, dir_a.path.as_path()), (B_AT, dir_b.path.as_path())];

    let mut broken = 0;
    let mut b_landed_anyway = 0;
    for (operation, lose_answer) in [
        ("put", false),
        ("put", true),
        ("put_if_absent", false),
        ("put_if_absent", true),
        ("get", false),
        ("list", false),
        ("head", false),
    ] {
        for n in 1.. {
            let store = copy_of(&base).await;
            let faults = Faults::new();
            if lose_answer {
                faults.lose_answer_nth(operation, n);
            } else {
                faults.fail_nth(operation, n);
            }
            let faulty = Arc::new(FaultyObjectStore::new(store.clone(), faults.clone()));
            let result = create_in(faulty, &dir_b.path, B_AT).await;
            let what = format!("{operation} #{n}, lose answer {lose_answer}: {result:?}");
            if faults.injected().is_empty() {
                // Fewer than n calls: create got through every step.
                let id = result.unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(latest_is_sound(&store, &expected, &what).await, (B_AT, id));
                assert!(n > 1, "{what}: the fault never fired");
                break;
            }
            let (at, latest) = latest_is_sound(&store, &expected, &what).await;
            if let Ok(id) = &result {
                // create may work around a failed read (an old manifest it cannot read
                // only costs re-uploading its chunks); then it published B, soundly.
                assert!(!is_write(operation), "{what}: create hid a failed write");
                assert_eq!((at, id), (B_AT, &latest), "{what}");
                continue;
            }
            broken += 1;
            if at == B_AT {
                // Only a ref that landed and lost its answer can publish a failed create.
                assert_eq!((operation, lose_answer), ("put_if_absent", true), "{what}");
                b_landed_anyway += 1;
            }
            assert!(n < 1000, "{what}: create never finished");
        }
    }
    // Every write was broken at least once: the packs, the manifest, the ref.
    assert!(broken >= 6, "{broken} broken creates");
    assert_eq!(b_landed_anyway, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_re_run_after_a_crash_publishes() {
    let dir_a = Scratch::new("rerun-a");
    data_dir_a(&dir_a.path);
    let dir_b = Scratch::new("rerun-b");
    data_dir_b(&dir_b.path);
    let store = MemoryObjectStore::new();
    create_in(Arc::new(store.clone()), &dir_a.path, A_AT)
        .await
        .unwrap();

    // The manifest lands (the second put), and its answer is lost: nothing is published.
    let faults = Faults::new();
    faults.lose_answer_nth("put", 2);
    let faulty = Arc::new(FaultyObjectStore::new(store.clone(), faults.clone()));
    assert!(create_in(faulty.clone(), &dir_b.path, B_AT).await.is_err());
    assert_eq!(faults.injected().len(), 1);
    let expected = [(A_AT, dir_a.path.as_path())];
    latest_is_sound(&store, &expected, "after the crash").await;

    // The same create again, on the same store, goes through.
    let b = create_in(faulty, &dir_b.path, B_AT).await.unwrap();
    let expected = [(B_AT, dir_b.path.as_path())];
    assert_eq!(
        latest_is_sound(&store, &expected, "after the re-run").await,
        (B_AT, b)
    );
}
