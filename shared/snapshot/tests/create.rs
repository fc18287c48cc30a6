//! `create`: what the walk records and leaves out, that a chunk is stored once however many
//! files hold it, that the summary's figures match what landed in the store, that the
//! manifest's chunk lists rebuild every file byte for byte (across work units and packs),
//! and that a second create of unchanged data uploads only its manifest.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use nodefleet_local::FsObjectStore;
use nodefleet_ports::ObjectStore;
use nodefleet_ports::fakes::MemoryObjectStore;
use nodefleet_snapshot::catalog::{self, Selector};
use nodefleet_snapshot::create::{CreateOptions, CreateSummary, create};
use nodefleet_snapshot::error::SnapshotError;
use nodefleet_snapshot::format::{
    ChainPoint, EntryKind, MANIFESTS_PREFIX, Manifest, PACKS_PREFIX, manifest_key, pack_key,
};
use nodefleet_snapshot::list::list;
use nodefleet_snapshot::profile::{self, ClientProfile};
use nodefleet_snapshot::progress::{CountingProgress, NoProgress};
use nodefleet_snapshot::restore::RESTORE_MARKER;
use support::{Scratch, noise, write_file};

const MIB: usize = 1024 * 1024;

fn options(profile: &'static ClientProfile, now_ms: u64) -> CreateOptions {
    CreateOptions {
        profile,
        chain: ChainPoint {
            client: profile.name.to_owned(),
            client_version: "1.14.0".to_owned(),
            chain_id: 1,
            block_height: 21_000_000,
            block_hash: "0xabc".to_owned(),
        },
        concurrency: 4,
        now_ms,
        publish: true,
    }
}

async fn run(
    store: &Arc<dyn ObjectStore>,
    dir: &Path,
    options: &CreateOptions,
) -> Result<CreateSummary, SnapshotError> {
    create(store.clone(), dir, options, Arc::new(NoProgress)).await
}

/// The bytes of `path` as the manifest describes them, read from the packs.
async fn read_back(store: &dyn ObjectStore, manifest: &Manifest, path: &str) -> Vec<u8> {
    let entry = manifest.entries.iter().find(|e| e.path == path).unwrap();
    let EntryKind::File { chunks, .. } = &entry.kind else {
        panic!("{path} is not a file");
    };
    let mut bytes = Vec::new();
    for &index in chunks {
        let chunk = &manifest.chunks[index as usize];
        let blob = store
            .get(
                &pack_key(&chunk.pack),
                Some(nodefleet_ports::ByteRange::new(
                    chunk.offset,
                    chunk.offset + chunk.stored_len,
                )),
            )
            .await
            .unwrap();
        let raw = if chunk.zstd {
            zstd::bulk::decompress(&blob, chunk.len as usize).unwrap()
        } else {
            blob.to_vec()
        };
        assert_eq!(raw.len() as u64, chunk.len);
        bytes.extend(raw);
    }
    bytes
}

/// Every stored object under `prefix` and its size.
async fn objects(store: &dyn ObjectStore, prefix: &str) -> Vec<(String, u64)> {
    store
        .list(prefix, None, 1000)
        .await
        .unwrap()
        .objects
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walk_records_dirs_files_and_symlinks_and_leaves_out_what_must_not_travel() {
    let data = Scratch::new("create-walk");
    let root = &data.path;
    write_file(root, "geth/chaindata/000001.sst", &noise(1, 100_000), 0o640);
    write_file(root, "geth/chaindata/empty.log", b"", 0o600);
    write_file(root, "geth/nodekey", b"identity", 0o600);
    write_file(root, "geth/chaindata/LOCK", b"", 0o644);
    write_file(root, "geth/jwtsecret", b"secret", 0o600);
    write_file(
        root,
        RESTORE_MARKER,
        b"1700000000000-0000000000000000",
        0o644,
    );
    std::fs::create_dir_all(root.join("geth/triecache/empty")).unwrap();
    std::fs::set_permissions(
        root.join("geth/triecache"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    symlink("chaindata", root.join("geth/link")).unwrap();
    symlink("/usr/share", root.join("outside")).unwrap();
    // A running client's IPC socket: skipped with a warning, not an error.
    let _socket = std::os::unix::net::UnixListener::bind(root.join("geth/geth.sock")).unwrap();

    let memory = MemoryObjectStore::new();
    let store: Arc<dyn ObjectStore> = Arc::new(memory.clone());
    let progress = Arc::new(CountingProgress::default());
    let summary = create(
        store.clone(),
        root,
        &options(&profile::GETH, 1_700_000_000_000),
        progress.clone(),
    )
    .await
    .unwrap();

    let manifest = catalog::read_manifest(store.as_ref(), &summary.snapshot)
        .await
        .unwrap();
    let recorded: Vec<(&str, &EntryKind)> = manifest
        .entries
        .iter()
        .map(|e| (e.path.as_str(), &e.kind))
        .collect();
    let paths: Vec<&str> = recorded.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        paths,
        [
            "geth",
            "geth/chaindata",
            "geth/chaindata/000001.sst",
            "geth/chaindata/empty.log",
            "geth/link",
            "geth/triecache",
            "geth/triecache/empty",
            "outside",
        ]
    );
    assert!(matches!(
        recorded[2].1,
        EntryKind::File { mode: 0o640, size: 100_000, chunks } if chunks.len() == 1
    ));
    assert!(matches!(
        recorded[3].1,
        EntryKind::File { mode: 0o600, size: 0, chunks } if chunks.is_empty()
    ));
    assert_eq!(
        recorded[4].1,
        &EntryKind::Symlink {
            target: "chaindata".to_owned()
        }
    );
    assert_eq!(recorded[5].1, &EntryKind::Dir { mode: 0o700 });
    assert!(matches!(recorded[6].1, EntryKind::Dir { .. }));
    assert_eq!(
        recorded[7].1,
        &EntryKind::Symlink {
            target: "/usr/share".to_owned()
        }
    );
    assert_eq!(
        read_back(store.as_ref(), &manifest, "geth/chaindata/000001.sst").await,
        noise(1, 100_000)
    );

    assert_eq!(manifest.chain.client, "geth");
    assert_eq!(manifest.chain.block_height, 21_000_000);
    assert_eq!(manifest.created_at_ms, 1_700_000_000_000);
    assert!(summary.snapshot.starts_with("1700000000000-"));
    assert_eq!(summary.files, 2);
    assert_eq!(summary.bytes_total, 100_000);
    assert_eq!(progress.total.load(Ordering::Relaxed), 100_000);
    assert_eq!(progress.done.load(Ordering::Relaxed), 100_000);
    // Published, and `latest` names it.
    assert_eq!(summary.published_generation, Some(1));
    assert_eq!(
        catalog::resolve(store.as_ref(), &Selector::Latest)
            .await
            .unwrap(),
        summary.snapshot
    );
    // Nothing excluded reached the store in any form.
    for key in memory.keys() {
        let body = memory.object(&key).unwrap();
        assert!(
            !body.windows(8).any(|w| w == b"identity"),
            "{key} holds the node key"
        );
    }
}

#[tokio::test]
async fn a_name_that_is_not_utf8_is_unsupported_and_nothing_is_written() {
    let data = Scratch::new("create-utf8");
    write_file(&data.path, "ok", b"fine", 0o644);
    let bad = std::ffi::OsStr::from_bytes(b"bad-\xff-name");
    std::fs::write(data.path.join(bad), b"x").unwrap();
    let memory = MemoryObjectStore::new();
    let store: Arc<dyn ObjectStore> = Arc::new(memory.clone());
    let error = run(&store, &data.path, &options(&profile::GETH, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, SnapshotError::Unsupported { reason, .. } if reason.contains("UTF-8")),
        "{error}"
    );
    assert!(memory.is_empty(), "{:?}", memory.keys());
}

#[tokio::test]
async fn a_missing_data_dir_is_an_io_error() {
    let data = Scratch::new("create-missing");
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryObjectStore::new());
    let error = run(&store, &data.join("nope"), &options(&profile::GETH, 1))
        .await
        .unwrap_err();
    assert!(matches!(error, SnapshotError::Io { .. }), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_is_stored_once_and_the_figures_match_the_store() {
    let data = Scratch::new("create-dedup");
    let root = &data.path;
    // geth: 4 MiB chunks. Two copies of 5 MiB of noise, and 2 MiB of zeros (compresses).
    let copy = noise(7, 5 * MIB);
    write_file(root, "a/copy-1", &copy, 0o644);
    write_file(root, "b/copy-2", &copy, 0o644);
    write_file(root, "zeros", &vec![0; 2 * MIB], 0o644);
    let memory = MemoryObjectStore::new();
    let store: Arc<dyn ObjectStore> = Arc::new(memory.clone());
    let summary = run(&store, root, &options(&profile::GETH, 5))
        .await
        .unwrap();
    let manifest = catalog::read_manifest(store.as_ref(), &summary.snapshot)
        .await
        .unwrap();

    // 4 MiB + 1 MiB of the copies, once; the zeros: one chunk.
    assert_eq!(manifest.chunks.len(), 3);
    assert_eq!(summary.chunks, 3);
    assert_eq!(summary.chunks_new, 3);
    assert_eq!(summary.files, 3);
    assert_eq!(summary.bytes_total, (12 * MIB) as u64);
    assert_eq!(summary.bytes_skipped, (5 * MIB) as u64);
    let zeros = manifest
        .chunks
        .iter()
        .find(|c| c.len == 2 * MIB as u64)
        .unwrap();
    assert!(zeros.zstd && zeros.stored_len < 64 * 1024, "{zeros:?}");
    assert!(manifest.chunks.iter().filter(|c| !c.zstd).count() == 2);

    let packs = objects(store.as_ref(), PACKS_PREFIX).await;
    let manifests = objects(store.as_ref(), MANIFESTS_PREFIX).await;
    assert_eq!(manifests.len(), 1);
    let stored: u64 = packs.iter().map(|(_, size)| size).sum();
    assert_eq!(summary.bytes_transferred, stored + manifests[0].1);
    assert_eq!(
        stored,
        manifest.chunks.iter().map(|c| c.stored_len).sum::<u64>()
    );
    // Every pack is named by the BLAKE3 of its bytes.
    for (key, _) in &packs {
        let body = memory.object(key).unwrap();
        assert_eq!(key, &pack_key(&blake3::hash(&body).to_hex()));
    }
    for path in ["a/copy-1", "b/copy-2"] {
        assert_eq!(read_back(store.as_ref(), &manifest, path).await, copy);
    }
    assert_eq!(
        read_back(store.as_ref(), &manifest, "zeros").await,
        vec![0; 2 * MIB]
    );
}

/// 70 MiB at 32 KiB chunks: two work units for one file, several packs, one pack upload in
/// flight at a time. The chunk list must still rebuild the file in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_is_rebuilt_across_work_units_and_packs() {
    let data = Scratch::new("create-large");
    let big = noise(11, 70 * MIB + 12_345);
    write_file(&data.path, "db/mdbx.dat", &big, 0o644);
    write_file(&data.path, "small", &noise(12, 1000), 0o644);
    let memory = MemoryObjectStore::new();
    let store: Arc<dyn ObjectStore> = Arc::new(memory.clone());
    for concurrency in [1, 3] {
        let options = CreateOptions {
            concurrency,
            ..options(&profile::RETH, 10 + concurrency as u64)
        };
        let summary = run(&store, &data.path, &options).await.unwrap();
        let manifest = catalog::read_manifest(store.as_ref(), &summary.snapshot)
            .await
            .unwrap();
        assert_eq!(manifest.chunks.len(), (70 * 32) + 1 + 1);
        assert_eq!(
            read_back(store.as_ref(), &manifest, "db/mdbx.dat").await,
            big
        );
        let packs: BTreeSet<&str> = manifest.chunks.iter().map(|c| c.pack.as_str()).collect();
        assert!(packs.len() >= 4, "{} packs", packs.len());
        if concurrency == 3 {
            // The second run re-used everything the first stored.
            assert_eq!(summary.chunks_new, 0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_create_of_unchanged_data_uploads_only_the_manifest() {
    let data = Scratch::new("create-again");
    let root = &data.path;
    write_file(root, "static/a", &noise(21, 6 * MIB), 0o644);
    write_file(root, "db/mdbx.dat", &noise(22, 3 * MIB), 0o644);
    std::fs::create_dir_all(root.join("empty")).unwrap();
    let store_dir = Scratch::new("create-again-store");
    let store: Arc<dyn ObjectStore> = Arc::new(FsObjectStore::open(&store_dir.path).unwrap());

    let first = run(&store, root, &options(&profile::RETH, 1_000))
        .await
        .unwrap();
    let packs_before = objects(store.as_ref(), PACKS_PREFIX).await;
    let second = run(&store, root, &options(&profile::RETH, 2_000))
        .await
        .unwrap();

    assert_ne!(first.snapshot, second.snapshot);
    assert_eq!(first.chunks_new, first.chunks);
    assert_eq!(second.chunks, first.chunks);
    assert_eq!(second.chunks_new, 0);
    assert_eq!(second.bytes_skipped, second.bytes_total);
    assert_eq!(second.bytes_total, (9 * MIB) as u64);
    assert_eq!(objects(store.as_ref(), PACKS_PREFIX).await, packs_before);
    let manifest_size = store
        .head(&manifest_key(&second.snapshot))
        .await
        .unwrap()
        .unwrap()
        .size;
    assert_eq!(second.bytes_transferred, manifest_size);
    assert_eq!(first.published_generation, Some(1));
    assert_eq!(second.published_generation, Some(2));
    assert_eq!(
        catalog::resolve(store.as_ref(), &Selector::Latest)
            .await
            .unwrap(),
        second.snapshot
    );
}

#[tokio::test]
async fn an_unreadable_manifest_in_the_store_is_skipped_not_fatal() {
    let data = Scratch::new("create-unreadable");
    write_file(&data.path, "f", &noise(31, 100_000), 0o644);
    let memory = MemoryObjectStore::new();
    let store: Arc<dyn ObjectStore> = Arc::new(memory.clone());
    let first = run(&store, &data.path, &options(&profile::GETH, 1))
        .await
        .unwrap();
    store
        .put(
            &manifest_key(&first.snapshot),
            bytes::Bytes::from_static(b"truncated"),
        )
        .await
        .unwrap();
    // Its chunks are not known any more, so they are uploaded again, and all is well.
    let second = run(&store, &data.path, &options(&profile::GETH, 2))
        .await
        .unwrap();
    assert_eq!(second.chunks_new, 1);
    assert_eq!(second.published_generation, Some(2));
}

#[tokio::test]
async fn without_publish_the_snapshot_is_stored_but_latest_does_not_move() {
    let data = Scratch::new("create-unpublished");
    write_file(&data.path, "f", &noise(41, 10_000), 0o644);
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryObjectStore::new());
    let first = run(&store, &data.path, &options(&profile::GETH, 1))
        .await
        .unwrap();
    write_file(&data.path, "g", &noise(42, 10_000), 0o644);
    let unpublished = CreateOptions {
        publish: false,
        ..options(&profile::GETH, 2)
    };
    let second = run(&store, &data.path, &unpublished).await.unwrap();
    assert_eq!(second.published_generation, None);
    assert!(
        catalog::read_manifest(store.as_ref(), &second.snapshot)
            .await
            .is_ok()
    );
    assert_eq!(
        catalog::resolve(store.as_ref(), &Selector::Latest)
            .await
            .unwrap(),
        first.snapshot
    );
}

#[tokio::test]
async fn an_empty_data_dir_makes_an_empty_snapshot() {
    let data = Scratch::new("create-empty");
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryObjectStore::new());
    let summary = run(&store, &data.path, &options(&profile::GENERIC, 1))
        .await
        .unwrap();
    assert_eq!(
        (summary.files, summary.chunks, summary.bytes_total),
        (0, 0, 0)
    );
    assert!(objects(store.as_ref(), PACKS_PREFIX).await.is_empty());
    let manifest = catalog::read_manifest(store.as_ref(), &summary.snapshot)
        .await
        .unwrap();
    assert!(manifest.entries.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_of_a_lost_pack_are_uploaded_again_not_re_used() {
    let data = Scratch::new("create-lost-pack");
    write_file(&data.path, "a", &noise(51, 300_000), 0o644);
    let memory = MemoryObjectStore::new();
    let store: Arc<dyn ObjectStore> = Arc::new(memory.clone());
    let first = run(&store, &data.path, &options(&profile::GETH, 1))
        .await
        .unwrap();
    for (key, _) in objects(store.as_ref(), PACKS_PREFIX).await {
        store.delete(&key).await.unwrap();
    }
    // Re-using the chunk would fail verification; it is uploaded again instead.
    let second = run(&store, &data.path, &options(&profile::GETH, 2))
        .await
        .unwrap();
    assert_eq!(first.chunks_new, 1);
    assert_eq!(second.chunks_new, 1);
    let manifest = catalog::read_manifest(store.as_ref(), &second.snapshot)
        .await
        .unwrap();
    assert_eq!(
        read_back(store.as_ref(), &manifest, "a").await,
        noise(51, 300_000)
    );
}

#[tokio::test]
async fn list_shows_each_snapshot_its_figures_and_publication() {
    let data = Scratch::new("create-list");
    write_file(&data.path, "a", &noise(61, 5 * MIB), 0o644);
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryObjectStore::new());
    let first = run(&store, &data.path, &options(&profile::GETH, 1_000))
        .await
        .unwrap();
    write_file(&data.path, "b", &noise(62, 1000), 0o644);
    let second = run(&store, &data.path, &options(&profile::GETH, 2_000))
        .await
        .unwrap();
    let unpublished = CreateOptions {
        publish: false,
        ..options(&profile::GETH, 3_000)
    };
    let third = run(&store, &data.path, &unpublished).await.unwrap();
    let broken = "4000-0000000000000000";
    store
        .put(&manifest_key(broken), bytes::Bytes::from_static(b"junk"))
        .await
        .unwrap();

    let rows = list(store.as_ref()).await.unwrap();
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            first.snapshot.as_str(),
            &second.snapshot,
            &third.snapshot,
            broken
        ]
    );
    assert_eq!(rows[0].published_generations, [1]);
    assert!(!rows[0].is_latest);
    assert_eq!(
        (rows[0].files, rows[0].chunks, rows[0].bytes_total),
        (1, 2, 5 * MIB as u64)
    );
    assert_eq!(rows[0].bytes_stored, 5 * MIB as u64);
    assert_eq!(rows[0].chain.client, "geth");
    assert_eq!(rows[1].published_generations, [2]);
    assert!(rows[1].is_latest);
    assert_eq!((rows[1].files, rows[1].chunks), (2, 3));
    assert_eq!(rows[1].created_at_ms, 2_000);
    assert!(rows[2].published_generations.is_empty() && !rows[2].is_latest);
    assert!(rows[2].unreadable.is_none());
    assert!(rows[3].unreadable.is_some());
    assert_eq!(rows[3].created_at_ms, 4_000);
}
