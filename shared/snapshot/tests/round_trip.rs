//! Round trips: a data dir snapshotted and restored comes back byte-identical (contents,
//! modes, symlinks, empty directories), whether the destination is empty or holds another,
//! stale tree; files the client's profile excludes never travel and survive in the
//! destination. Checked on a generated geth-like data dir, through both the in-memory and
//! the file-system store, and as a property over small random trees.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use nodefleet_local::FsObjectStore;
use nodefleet_ports::ObjectStore;
use nodefleet_ports::fakes::MemoryObjectStore;
use nodefleet_snapshot::catalog::Selector;
use nodefleet_snapshot::format::{EntryKind, Manifest};
use nodefleet_snapshot::profile;
use nodefleet_snapshot::progress::{CountingProgress, NoProgress};
use nodefleet_snapshot::restore::{RESTORE_MARKER, RestoreOptions, RestoreSummary, restore};
use nodefleet_snapshot::verify::{VerifyScope, verify};
use proptest::prelude::*;
use support::{
    GETH_BIG, Node, Scratch, create_snapshot, geth_like_data_dir, noise, shared_tree, tree,
    write_file,
};

/// Chunks and packs of the hand-made layout: small, so a few MiB make many packs.
const CHUNK: usize = 32 * 1024;
const PACK: usize = 256 * 1024;

fn options() -> RestoreOptions {
    RestoreOptions {
        concurrency: 4,
        max_range: 128 * 1024,
    }
}

fn file_bytes(manifest: &Manifest) -> u64 {
    manifest
        .entries
        .iter()
        .map(|e| match e.kind {
            EntryKind::File { size, .. } => size,
            _ => 0,
        })
        .sum()
}

async fn restore_latest(
    store: Arc<dyn ObjectStore>,
    to: &Path,
    options: &RestoreOptions,
) -> RestoreSummary {
    restore(store, &Selector::Latest, to, options, Arc::new(NoProgress))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_data_dir_restores_byte_identical() {
    let source = Scratch::new("rt-source");
    geth_like_data_dir(&source.path);
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryObjectStore::new());
    let manifest = create_snapshot(store.clone(), &source.path, "geth", 1_700_000_000_000).await;
    let stored: u64 = manifest.chunks.iter().map(|c| c.stored_len).sum();
    assert!(
        manifest.chunks.iter().any(|c| c.zstd) && manifest.chunks.iter().any(|c| !c.zstd),
        "the fixture exercises raw and zstd blobs"
    );

    let dest = Scratch::new("rt-dest");
    let progress = Arc::new(CountingProgress::default());
    let summary = restore(
        store,
        &Selector::Latest,
        &dest.path,
        &options(),
        progress.clone(),
    )
    .await
    .unwrap();

    let expected = shared_tree(&source.path, "geth");
    assert_eq!(tree(&dest.path), expected);
    assert!(
        !dest.join("geth/nodekey").exists(),
        "excluded files do not travel"
    );
    assert!(expected.contains_key("geth/triecache/empty"));
    assert_eq!(
        fs::read_to_string(dest.join(RESTORE_MARKER)).unwrap(),
        manifest.id
    );
    assert_eq!(summary.snapshot, manifest.id);
    assert_eq!(summary.bytes_total, file_bytes(&manifest));
    assert_eq!(summary.bytes_skipped, 0);
    // Every blob is read once (holes between them at most), never more than the packs.
    assert!(summary.bytes_transferred >= stored, "{summary:?}");
    assert_eq!(
        summary.files,
        expected
            .values()
            .filter(|n| matches!(n, Node::File { .. }))
            .count() as u64
    );
    assert_eq!(summary.chunks, manifest.chunks.len() as u64);
    assert_eq!(progress.total.load(Ordering::Relaxed), summary.bytes_total);
    assert_eq!(progress.done.load(Ordering::Relaxed), summary.bytes_total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_store_round_trips_and_verifies() {
    let source = Scratch::new("rt-fs-source");
    geth_like_data_dir(&source.path);
    let root = Scratch::new("rt-fs-store");
    let store: Arc<dyn ObjectStore> = Arc::new(FsObjectStore::open(&root.path).unwrap());
    let manifest = create_snapshot(store.clone(), &source.path, "geth", 1_700_000_000_000).await;

    let report = verify(store.clone(), &manifest, &VerifyScope::Everything, 3)
        .await
        .unwrap();
    assert_eq!(report.chunks_checked, manifest.chunks.len() as u64);

    let dest = Scratch::new("rt-fs-dest");
    let summary = restore_latest(store, &dest.path, &RestoreOptions::default()).await;
    assert_eq!(tree(&dest.path), shared_tree(&source.path, "geth"));
    assert_eq!(summary.bytes_total, file_bytes(&manifest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restoring_over_a_stale_dir_makes_it_identical_and_keeps_the_node_key() {
    let source = Scratch::new("rt-dirty-source");
    geth_like_data_dir(&source.path);
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryObjectStore::new());
    let manifest = create_snapshot(store.clone(), &source.path, "geth", 1_700_000_000_000).await;

    let dest = Scratch::new("rt-dirty-dest");
    let d = &dest.path;
    // This node's own identity and lock: excluded by geth's profile, so they stay.
    write_file(d, "geth/nodekey", b"this node's key", 0o600);
    write_file(d, "geth/chaindata/LOCK", b"", 0o644);
    // Extra files and directories the snapshot does not have.
    write_file(d, "geth/chaindata/000999.sst", &noise(99, 5000), 0o644);
    write_file(d, "stray/deep/er/file", b"stray", 0o644);
    fs::create_dir_all(d.join("stray/empty")).unwrap();
    write_file(
        d,
        "keepme/nodekey",
        b"an excluded file in a stray dir",
        0o600,
    );
    // Same size, other bytes; longer; shorter; a stale copy of a deduplicated file.
    let mut stale = noise(1, GETH_BIG);
    stale[40_000] ^= 0xff;
    stale[GETH_BIG - 1] ^= 0xff;
    write_file(d, "geth/chaindata/000001.sst", &stale, 0o600);
    write_file(d, "geth/chaindata/000002.sst", &noise(2, 200 * 1024), 0o644);
    write_file(
        d,
        "geth/chaindata/ancient/headers.0000.cdat",
        &noise(3, 1000),
        0o644,
    );
    write_file(
        d,
        "geth/chaindata/ancient/copy-b",
        &noise(5, 100_000),
        0o644,
    );
    // Wrong kinds: a directory where a file is, a file where a directory is, a symlink
    // where a file is, a symlink with another target, a file where a symlink is.
    write_file(
        d,
        "geth/chaindata/one/inner",
        b"dir in place of a file",
        0o644,
    );
    write_file(d, "geth/triecache", b"file in place of a dir", 0o644);
    symlink("/etc/passwd", d.join("geth/chaindata/empty.log")).unwrap();
    symlink("elsewhere", d.join("geth/ancient-link")).unwrap();
    write_file(d, "geth/dangling", b"file in place of a symlink", 0o644);
    fs::create_dir_all(d.join("top-link/inner")).unwrap();

    let summary = restore_latest(store, d, &options()).await;

    let mut expected = shared_tree(&source.path, "geth");
    let mut kept = BTreeMap::new();
    for path in [
        "geth/nodekey",
        "geth/chaindata/LOCK",
        "keepme/nodekey",
        "keepme",
    ] {
        kept.insert(path.to_owned(), tree(d).remove(path).unwrap());
    }
    expected.extend(kept);
    assert_eq!(tree(d), expected);
    assert_eq!(
        fs::read(d.join("geth/nodekey")).unwrap(),
        b"this node's key".to_vec()
    );
    assert_eq!(
        fs::read_to_string(d.join(RESTORE_MARKER)).unwrap(),
        manifest.id
    );
    // The unchanged middle chunk of the stale big file was kept, not fetched again.
    assert!(summary.bytes_skipped >= 4 * 1024 * 1024, "{summary:?}");
    assert!(summary.bytes_skipped < summary.bytes_total, "{summary:?}");
    let stored: u64 = manifest.chunks.iter().map(|c| c.stored_len).sum();
    assert!(summary.bytes_transferred < stored, "{summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layout_of_many_small_packs_restores_identically() {
    // create packs 16 MiB at a time; this layout has chunks spread over dozens of packs,
    // shared between files, raw and zstd, so ranges cross pack boundaries.
    let source = Scratch::new("rt-packs-source");
    geth_like_data_dir(&source.path);
    let store = MemoryObjectStore::new();
    let manifest =
        support::snapshot_by_hand(&store, &source.path, "geth", 1_000, CHUNK, PACK).await;
    let packs: std::collections::BTreeSet<&str> =
        manifest.chunks.iter().map(|c| c.pack.as_str()).collect();
    assert!(packs.len() > 20, "{} packs", packs.len());

    let dest = Scratch::new("rt-packs-dest");
    let summary = restore_latest(Arc::new(store), &dest.path, &options()).await;
    assert_eq!(tree(&dest.path), shared_tree(&source.path, "geth"));
    assert_eq!(summary.bytes_total, file_bytes(&manifest));
}

/// One path of a generated tree.
#[derive(Debug, Clone)]
enum Spec {
    File { seed: u64, len: usize, mode: u32 },
    Dir { mode: u32 },
    Symlink { target: String },
}

const NAMES: &[&str] = &["a", "b", "c", "LOCK", "nodekey"];

fn spec_strategy() -> impl Strategy<Value = Vec<(Vec<usize>, Spec)>> {
    let spec = prop_oneof![
        4 => (any::<u64>(), 0usize..100_000, prop::sample::select(vec![0o644u32, 0o600, 0o755, 0o444]))
            .prop_map(|(seed, len, mode)| Spec::File { seed, len, mode }),
        2 => prop::sample::select(vec![0o755u32, 0o700, 0o555]).prop_map(|mode| Spec::Dir { mode }),
        1 => prop::sample::select(vec!["a", "b/c", "c/../a", "."])
            .prop_map(|t| Spec::Symlink { target: t.to_owned() }),
    ];
    prop::collection::vec((prop::collection::vec(0..NAMES.len(), 1..4), spec), 0..12)
}

/// Builds `specs` under `root`, skipping paths that collide with what is there already.
fn build(root: &Path, specs: &[(Vec<usize>, Spec)]) {
    for (segments, spec) in specs {
        let relative: Vec<&str> = segments.iter().map(|&i| NAMES[i]).collect();
        let path = root.join(relative.join("/"));
        // Every ancestor must be a directory (or absent), and the path itself free.
        let blocked = (1..relative.len()).any(|n| {
            fs::symlink_metadata(root.join(relative[..n].join("/"))).is_ok_and(|m| !m.is_dir())
        }) || fs::symlink_metadata(&path).is_ok();
        if blocked {
            continue;
        }
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        match spec {
            Spec::File { seed, len, mode } => {
                fs::write(&path, noise(*seed, *len)).unwrap();
                fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).unwrap();
            }
            Spec::Dir { mode } => {
                fs::create_dir(&path).unwrap();
                fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).unwrap();
            }
            Spec::Symlink { target } => symlink(target, &path).unwrap(),
        }
    }
}

/// What a restore of a snapshot over `before` must leave: the snapshot's tree, plus every
/// path of `before` at or under an excluded path the snapshot does not have, unless a file
/// or symlink of the snapshot displaced it; with the directories that hold them.
fn expected_after(
    snapshot: &BTreeMap<String, Node>,
    before: &BTreeMap<String, Node>,
    client: &str,
) -> BTreeMap<String, Node> {
    let profile = profile::by_name(client).unwrap();
    let prefix = |segments: &[&str], n: usize| segments[..n].join("/");
    let mut expected = snapshot.clone();
    for (path, node) in before {
        if snapshot.contains_key(path) {
            continue;
        }
        let segments: Vec<&str> = path.split('/').collect();
        let survives = (1..=segments.len()).any(|n| {
            let q = prefix(&segments, n);
            profile.is_excluded(&q)
                && !snapshot.contains_key(&q)
                && (1..n).all(|m| {
                    !matches!(snapshot.get(&prefix(&segments, m)), Some(n) if !matches!(n, Node::Dir { .. }))
                })
        });
        if !survives {
            continue;
        }
        expected.insert(path.clone(), node.clone());
        for n in 1..segments.len() {
            let ancestor = prefix(&segments, n);
            if let Some(dir) = before.get(&ancestor) {
                expected.entry(ancestor).or_insert_with(|| dir.clone());
            }
        }
    }
    expected
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_restore_identically_over_random_trees(
        source_specs in spec_strategy(),
        stale_specs in spec_strategy(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let source = Scratch::new("prop-source");
        build(&source.path, &source_specs);
        let store: Arc<dyn ObjectStore> = Arc::new(MemoryObjectStore::new());
        let manifest = runtime.block_on(create_snapshot(store.clone(), &source.path, "generic", 1_000));
        let snapshot = shared_tree(&source.path, "generic");

        // Into an empty directory.
        let fresh = Scratch::new("prop-fresh");
        runtime.block_on(restore_latest(store.clone(), &fresh.path, &options()));
        prop_assert_eq!(tree(&fresh.path), snapshot.clone());

        // Over another tree.
        let stale = Scratch::new("prop-stale");
        build(&stale.path, &stale_specs);
        let before = tree(&stale.path);
        let summary = runtime.block_on(restore_latest(store.clone(), &stale.path, &options()));
        prop_assert_eq!(tree(&stale.path), expected_after(&snapshot, &before, "generic"));
        prop_assert_eq!(summary.bytes_total, file_bytes(&manifest));
        prop_assert_eq!(
            fs::read_to_string(stale.join(RESTORE_MARKER)).unwrap(),
            manifest.id.clone()
        );

        // Again: everything is right on disk, nothing is fetched.
        let again = runtime.block_on(restore_latest(store, &stale.path, &options()));
        prop_assert_eq!(again.bytes_transferred, 0);
        prop_assert_eq!(again.bytes_skipped, again.bytes_total);
    }
}
