//! Incremental `create` with the reth profile: after 1% of a 32 MiB `mdbx.dat` is rewritten
//! in scattered 4 KiB pages and one immutable file is added, the second snapshot uploads
//! exactly the 32 KiB chunks that hold a changed page, the new file, and the manifest, and
//! nothing else; its chunk lists rebuild the changed file. Run on both store kinds.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use nodefleet_local::FsObjectStore;
use nodefleet_ports::fakes::MemoryObjectStore;
use nodefleet_ports::{ByteRange, ObjectStore};
use nodefleet_snapshot::catalog;
use nodefleet_snapshot::create::{CreateOptions, create};
use nodefleet_snapshot::format::{ChainPoint, EntryKind, Manifest, manifest_key, pack_key};
use nodefleet_snapshot::profile::{self, IN_PLACE_CHUNK_SIZE};
use nodefleet_snapshot::progress::NoProgress;
use support::{Scratch, noise, write_file};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// MDBX's page size.
const PAGE: u64 = 4 * KIB;
const MDBX_SIZE: u64 = 32 * MIB;
const STATIC_FILE: u64 = 8 * MIB;

fn options(now_ms: u64) -> CreateOptions {
    CreateOptions {
        profile: &profile::RETH,
        chain: ChainPoint::default(),
        concurrency: 4,
        now_ms,
        publish: true,
    }
}

/// Distinct page numbers, spread over the file by a seeded generator.
fn scattered_pages(count: usize, pages: u64, seed: u64) -> BTreeSet<u64> {
    let mut state = seed;
    let mut chosen = BTreeSet::new();
    while chosen.len() < count {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        chosen.insert((state >> 33) % pages);
    }
    chosen
}

async fn file_bytes(store: &dyn ObjectStore, manifest: &Manifest, path: &str) -> Vec<u8> {
    let entry = manifest.entries.iter().find(|e| e.path == path).unwrap();
    let EntryKind::File { chunks, .. } = &entry.kind else {
        panic!("{path} is not a file");
    };
    let mut bytes = Vec::new();
    for &index in chunks {
        let chunk = &manifest.chunks[index as usize];
        let range = ByteRange::new(chunk.offset, chunk.offset + chunk.stored_len);
        let blob = store
            .get(&pack_key(&chunk.pack), Some(range))
            .await
            .unwrap();
        if chunk.zstd {
            bytes.extend(zstd::bulk::decompress(&blob, chunk.len as usize).unwrap());
        } else {
            bytes.extend_from_slice(&blob);
        }
    }
    bytes
}

async fn one_percent_in_place_change(store: Arc<dyn ObjectStore>) {
    let data = Scratch::new("incremental");
    let root = &data.path;
    let mut mdbx = noise(1, MDBX_SIZE as usize);
    write_file(root, "db/mdbx.dat", &mdbx, 0o644);
    for (index, name) in [
        "headers_0_499999",
        "transactions_0_499999",
        "receipts_0_499999",
    ]
    .iter()
    .enumerate()
    {
        let path = format!("static_files/{name}");
        write_file(
            root,
            &path,
            &noise(10 + index as u64, STATIC_FILE as usize),
            0o644,
        );
    }
    let first = create(store.clone(), root, &options(1_000), Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(first.chunks_new, first.chunks);

    // 1% of the file's bytes, as whole random pages rewritten in place.
    let pages = scattered_pages((MDBX_SIZE / 100 / PAGE) as usize, MDBX_SIZE / PAGE, 7);
    let changed = pages.len() as u64 * PAGE;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(root.join("db/mdbx.dat"))
        .unwrap();
    for (n, &page) in pages.iter().enumerate() {
        let fresh = noise(1_000 + n as u64, PAGE as usize);
        file.write_all_at(&fresh, page * PAGE).unwrap();
        mdbx[(page * PAGE) as usize..((page + 1) * PAGE) as usize].copy_from_slice(&fresh);
    }
    drop(file);
    write_file(
        root,
        "static_files/headers_500000_999999",
        &noise(99, STATIC_FILE as usize),
        0o644,
    );

    let second = create(store.clone(), root, &options(2_000), Arc::new(NoProgress))
        .await
        .unwrap();
    let manifest_len = store
        .head(&manifest_key(&second.snapshot))
        .await
        .unwrap()
        .unwrap()
        .size;

    // Each changed page lies in exactly one 32 KiB chunk; the new 8 MiB file is 2 chunks.
    let touched: BTreeSet<u64> = pages
        .iter()
        .map(|page| page * PAGE / IN_PLACE_CHUNK_SIZE)
        .collect();
    let touched_bytes = touched.len() as u64 * IN_PLACE_CHUNK_SIZE;
    assert_eq!(second.chunks_new, touched.len() as u64 + 2);
    assert_eq!(
        second.bytes_transferred,
        touched_bytes + STATIC_FILE + manifest_len
    );
    assert_eq!(second.bytes_total, MDBX_SIZE + 4 * STATIC_FILE);
    assert_eq!(
        second.bytes_skipped,
        second.bytes_total - touched_bytes - STATIC_FILE
    );
    // "About the changed bytes": at most one chunk per changed page (8x a page), which for
    // 1% of pages is ~7.6% of the file, against the whole file for a file-level sync.
    let in_place_upload = second.bytes_transferred - STATIC_FILE - manifest_len;
    assert!(
        in_place_upload <= changed * (IN_PLACE_CHUNK_SIZE / PAGE),
        "{in_place_upload} bytes uploaded for {changed} changed"
    );
    assert!(
        in_place_upload * 10 <= MDBX_SIZE,
        "{in_place_upload} bytes uploaded of a {MDBX_SIZE}-byte file"
    );

    let manifest = catalog::read_manifest(store.as_ref(), &second.snapshot)
        .await
        .unwrap();
    assert_eq!(
        file_bytes(store.as_ref(), &manifest, "db/mdbx.dat").await,
        mdbx
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_percent_in_place_change_uploads_about_the_changed_bytes_in_memory() {
    one_percent_in_place_change(Arc::new(MemoryObjectStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_percent_in_place_change_uploads_about_the_changed_bytes_on_disk() {
    let store_dir = Scratch::new("incremental-store");
    one_percent_in_place_change(Arc::new(FsObjectStore::open(&store_dir.path).unwrap())).await;
}
