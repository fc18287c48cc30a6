//! Restore under faults: a corrupt chunk (raw or zstd), a missing pack, a truncated or
//! garbage manifest, a manifest that would write outside the data dir, and a missing
//! snapshot all fail loudly (the file and offset, or the manifest, named; no marker; nothing
//! reported restored). An interrupted restore re-run fetches only what the first run did
//! not write; a restore over a complete one fetches nothing; a file damaged on disk costs
//! exactly its broken chunk.
#![allow(clippy::unwrap_used)]

mod support;

use std::fs;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use nodefleet_ports::ObjectStore;
use nodefleet_ports::fakes::MemoryObjectStore;
use nodefleet_ports::faults::{Faults, FaultyObjectStore};
use nodefleet_snapshot::catalog::{self, Selector};
use nodefleet_snapshot::error::SnapshotError;
use nodefleet_snapshot::format::{EntryKind, Manifest, manifest_key, pack_key};
use nodefleet_snapshot::progress::NoProgress;
use nodefleet_snapshot::restore::{RESTORE_MARKER, RestoreOptions, RestoreSummary, restore};
use nodefleet_snapshot::verify::MAX_GAP;
use support::{CountingStore, Scratch, noise, shared_tree, tree, write_file};

const CLIENT: &str = "generic";
const CHUNK: usize = 32 * 1024;
const BIG: &str = "data/big";
const LOG: &str = "data/log";

/// A data dir of incompressible files (one of 1 MiB + 5 bytes) and one compressible log.
fn data_dir(root: &Path) {
    write_file(root, BIG, &noise(1, 1024 * 1024 + 5), 0o644);
    write_file(root, "data/small", &noise(2, 10_000), 0o600);
    write_file(root, "data/sub/other", &noise(3, 300_000), 0o644);
    let log: Vec<u8> = (0..4000)
        .flat_map(|i| format!("block {i} imported\n").into_bytes())
        .collect();
    write_file(root, LOG, &log, 0o644);
}

/// The data dir, snapshotted with the generic profile (32 KiB chunks) into a memory store.
async fn fixture() -> (Scratch, MemoryObjectStore, Manifest) {
    let source = Scratch::new("faults-source");
    data_dir(&source.path);
    let store = MemoryObjectStore::new();
    let manifest = support::create_snapshot(
        Arc::new(store.clone()),
        &source.path,
        CLIENT,
        1_700_000_000_000,
    )
    .await;
    (source, store, manifest)
}

fn options(concurrency: usize) -> RestoreOptions {
    RestoreOptions {
        concurrency,
        max_range: 64 * 1024,
    }
}

async fn run(
    store: Arc<dyn ObjectStore>,
    id: &str,
    to: &Path,
    options: &RestoreOptions,
) -> Result<RestoreSummary, SnapshotError> {
    restore(
        store,
        &Selector::Id(id.to_owned()),
        to,
        options,
        Arc::new(NoProgress),
    )
    .await
}

/// The chunk index `path` holds at byte `offset`, and where that chunk starts in the file.
fn chunk_at(manifest: &Manifest, path: &str, offset: u64) -> (u32, u64) {
    let entry = manifest.entries.iter().find(|e| e.path == path).unwrap();
    let EntryKind::File { chunks, .. } = &entry.kind else {
        panic!("{path} is not a file");
    };
    let mut start = 0;
    for &chunk in chunks {
        let len = manifest.chunks[chunk as usize].len;
        if offset < start + len {
            return (chunk, start);
        }
        start += len;
    }
    panic!("{path} has no byte {offset}");
}

/// Flips one byte of chunk `chunk`'s blob in its pack.
async fn corrupt_blob(store: &MemoryObjectStore, manifest: &Manifest, chunk: u32) {
    let location = &manifest.chunks[chunk as usize];
    let key = pack_key(&location.pack);
    let mut pack = store.object(&key).unwrap().to_vec();
    pack[(location.offset + location.stored_len / 2) as usize] ^= 0x55;
    store.put(&key, Bytes::from(pack)).await.unwrap();
}

fn assert_bad_chunk(error: &SnapshotError, path: &str, offset: u64, problem: &str) {
    match error {
        SnapshotError::BadChunk {
            path: p,
            offset: o,
            problem: why,
            ..
        } => {
            assert_eq!((p.as_str(), *o), (path, offset), "{error}");
            assert!(why.starts_with(problem), "{error}");
        }
        other => panic!("expected a bad chunk, got {other}"),
    }
    let text = error.to_string();
    assert!(
        text.contains(path) && text.contains(&format!("offset {offset}")),
        "{text}"
    );
    assert!(!error.is_retryable());
}

/// A destination that looks restored (an old marker): a failed restore must unmark it.
fn marked_dest(tag: &str) -> Scratch {
    let dest = Scratch::new(tag);
    fs::write(dest.join(RESTORE_MARKER), "an-older-snapshot").unwrap();
    dest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_raw_chunk_fails_naming_file_and_offset() {
    let (_source, store, manifest) = fixture().await;
    let (chunk, start) = chunk_at(&manifest, BIG, 5 * CHUNK as u64 + 100);
    assert!(!manifest.chunks[chunk as usize].zstd);
    corrupt_blob(&store, &manifest, chunk).await;

    let dest = marked_dest("corrupt-raw");
    let error = run(Arc::new(store), &manifest.id, &dest.path, &options(4))
        .await
        .unwrap_err();
    assert_bad_chunk(&error, BIG, start, "corrupt");
    assert_eq!(start, 5 * CHUNK as u64);
    assert!(!dest.join(RESTORE_MARKER).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_zstd_chunk_fails_naming_file_and_offset() {
    let (_source, store, manifest) = fixture().await;
    let (chunk, start) = chunk_at(&manifest, LOG, 40_000);
    assert!(manifest.chunks[chunk as usize].zstd, "the log compresses");
    corrupt_blob(&store, &manifest, chunk).await;

    let dest = marked_dest("corrupt-zstd");
    let error = run(Arc::new(store), &manifest.id, &dest.path, &options(2))
        .await
        .unwrap_err();
    assert_bad_chunk(&error, LOG, start, "corrupt");
    assert!(!dest.join(RESTORE_MARKER).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_pack_fails_naming_a_file_that_needs_it() {
    let (_source, store, manifest) = fixture().await;
    let (chunk, _) = chunk_at(&manifest, BIG, 600_000);
    let pack = manifest.chunks[chunk as usize].pack.clone();
    store.delete(&pack_key(&pack)).await.unwrap();

    let dest = marked_dest("missing-pack");
    let error = run(Arc::new(store), &manifest.id, &dest.path, &options(3))
        .await
        .unwrap_err();
    let SnapshotError::BadChunk { path, offset, .. } = &error else {
        panic!("expected a bad chunk, got {error}");
    };
    // The file and offset named hold a chunk of the missing pack.
    let (named, _) = chunk_at(&manifest, path, *offset);
    assert_eq!(manifest.chunks[named as usize].pack, pack);
    assert_bad_chunk(&error, path, *offset, "missing");
    assert!(!dest.join(RESTORE_MARKER).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_or_garbage_manifest_fails_before_the_dir_is_touched() {
    let (_source, store, manifest) = fixture().await;
    let key = manifest_key(&manifest.id);
    let body = store.object(&key).unwrap();
    let mut escaping = manifest.clone();
    escaping.entries[0].path = "../escaped".to_owned();
    let escaping = catalog::encode_manifest(&escaping).unwrap();
    let not_json = zstd::bulk::compress(b"{\"format\": 1, \"id\": 7", 3).unwrap();

    for (what, bad) in [
        ("truncated", body.slice(..body.len() / 2)),
        ("garbage", Bytes::from_static(b"this is not a manifest")),
        ("not JSON", Bytes::from(not_json)),
        ("escaping", Bytes::from(escaping)),
    ] {
        store.put(&key, bad).await.unwrap();
        let dest = Scratch::new("bad-manifest");
        write_file(&dest.path, "stray", b"left alone", 0o644);
        let error = run(
            Arc::new(store.clone()),
            &manifest.id,
            &dest.path,
            &options(2),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&error, SnapshotError::BadManifest { snapshot, .. } if *snapshot == manifest.id),
            "{what}: {error}"
        );
        assert!(error.to_string().contains(&manifest.id), "{what}: {error}");
        assert_eq!(
            fs::read(dest.join("stray")).unwrap(),
            b"left alone",
            "{what}"
        );
        assert!(!dest.join(RESTORE_MARKER).exists(), "{what}");
        assert!(
            !dest.path.parent().unwrap().join("escaped").exists(),
            "{what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_snapshot_is_not_found() {
    let (_source, store, _) = fixture().await;
    let dest = Scratch::new("not-found");
    let error = run(
        Arc::new(store),
        "0000000000000-nope",
        &dest.path,
        &options(1),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, SnapshotError::NotFound(_)), "{error}");
    let empty: Arc<dyn ObjectStore> = Arc::new(MemoryObjectStore::new());
    let error = restore(
        empty,
        &Selector::Latest,
        &dest.path,
        &options(1),
        Arc::new(NoProgress),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, SnapshotError::NotFound(_)), "{error}");
    assert!(!dest.join(RESTORE_MARKER).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_restore_resumes_with_only_the_rest() {
    let (source, store, manifest) = fixture().await;
    let stored: u64 = manifest.chunks.iter().map(|c| c.stored_len).sum();

    for concurrency in [1, 4] {
        // What an uninterrupted restore transfers.
        let clean = Scratch::new("resume-clean");
        let full = run(
            Arc::new(store.clone()),
            &manifest.id,
            &clean.path,
            &options(concurrency),
        )
        .await
        .unwrap()
        .bytes_transferred;
        assert!(full >= stored);
        let ranges = full.div_ceil(64 * 1024);

        // The first run fails halfway: its GET of a range never reaches the store.
        let faults = Faults::new();
        let counting = CountingStore::new(FaultyObjectStore::new(store.clone(), faults.clone()));
        faults.fail_nth("get", 1 + ranges / 2);
        let dest = Scratch::new("resume");
        let error = run(
            counting.clone(),
            &manifest.id,
            &dest.path,
            &options(concurrency),
        )
        .await
        .unwrap_err();
        assert!(error.is_retryable(), "{error}");
        assert!(!dest.join(RESTORE_MARKER).exists());
        let first = counting.read();
        assert!(first > 0 && first < full, "{first} of {full}");

        // The re-run fetches only the rest.
        let second = run(
            counting.clone(),
            &manifest.id,
            &dest.path,
            &options(concurrency),
        )
        .await
        .unwrap();
        assert!(second.bytes_transferred > 0, "{second:?}");
        assert!(second.bytes_transferred < full, "{second:?}");
        assert!(second.bytes_skipped > 0, "{second:?}");
        let both = first + second.bytes_transferred;
        // Each blob was fetched once, give or take the ranges in flight when the first run
        // stopped and the holes read through.
        let slack = concurrency as u64 * 64 * 1024 + MAX_GAP;
        assert!(
            both >= full && both <= full + slack,
            "concurrency {concurrency}: {first} + {} vs {full}",
            second.bytes_transferred
        );
        assert_eq!(tree(&dest.path), shared_tree(&source.path, CLIENT));
        assert_eq!(
            fs::read_to_string(dest.join(RESTORE_MARKER)).unwrap(),
            manifest.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_over_a_complete_restore_transfers_nothing() {
    let (source, store, manifest) = fixture().await;
    let counting = CountingStore::new(store);
    let dest = Scratch::new("complete");
    let first = run(counting.clone(), &manifest.id, &dest.path, &options(4))
        .await
        .unwrap();
    assert_eq!(first.bytes_skipped, 0);
    let read = counting.read();

    let again = run(counting.clone(), &manifest.id, &dest.path, &options(4))
        .await
        .unwrap();
    assert_eq!(again.bytes_transferred, 0, "{again:?}");
    assert_eq!(again.bytes_skipped, again.bytes_total);
    assert_eq!(counting.read(), read, "no pack was read");
    assert_eq!(tree(&dest.path), shared_tree(&source.path, CLIENT));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_damaged_on_disk_costs_exactly_that_chunk() {
    let (source, store, manifest) = fixture().await;
    let dest = Scratch::new("damaged");
    run(
        Arc::new(store.clone()),
        &manifest.id,
        &dest.path,
        &options(4),
    )
    .await
    .unwrap();

    let damaged_at = 700_001u64;
    let mut bytes = fs::read(dest.join(BIG)).unwrap();
    bytes[damaged_at as usize] ^= 1;
    fs::write(dest.join(BIG), bytes).unwrap();
    let (chunk, _) = chunk_at(&manifest, BIG, damaged_at);

    let repair = run(Arc::new(store), &manifest.id, &dest.path, &options(4))
        .await
        .unwrap();
    let location = &manifest.chunks[chunk as usize];
    assert_eq!(repair.bytes_transferred, location.stored_len, "{repair:?}");
    assert_eq!(repair.bytes_skipped, repair.bytes_total - location.len);
    assert_eq!(tree(&dest.path), shared_tree(&source.path, CLIENT));
}
