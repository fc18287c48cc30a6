//! Shared by the snapshot integration tests: scratch directories, generated data dirs,
//! a tree reader to compare data dirs, a store wrapper that counts bytes read, `create`
//! with test options, and a snapshot builder that writes packs and manifests by hand the
//! way the format says (for layouts `create` does not make on small data: many small
//! packs).
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use nodefleet_ports::{
    ByteRange, CompletedPart, ListPage, MultipartUpload, ObjectError, ObjectMeta, ObjectStore,
};
use nodefleet_snapshot::catalog;
use nodefleet_snapshot::create::{CreateOptions, create};
use nodefleet_snapshot::format::{
    ChainPoint, ChunkHash, ChunkLocation, Entry, EntryKind, FORMAT_VERSION, Manifest, pack_key,
};
use nodefleet_snapshot::profile;
use nodefleet_snapshot::progress::NoProgress;
use nodefleet_snapshot::restore::RESTORE_MARKER;

/// A directory under the system temp dir, removed when dropped.
#[derive(Debug)]
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "nodefleet-snapshot-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        Scratch { path }
    }

    pub fn join(&self, relative: &str) -> PathBuf {
        self.path.join(relative)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Read-only directories would stop the removal.
        fn open_up(path: &Path) {
            if let Ok(meta) = fs::symlink_metadata(path)
                && meta.is_dir()
            {
                let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o755));
                if let Ok(entries) = fs::read_dir(path) {
                    for entry in entries.flatten() {
                        open_up(&entry.path());
                    }
                }
            }
        }
        open_up(&self.path);
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Deterministic pseudo-random bytes (xorshift), so generated data does not compress.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn write_file(root: &Path, relative: &str, bytes: &[u8], mode: u32) {
    let path = root.join(relative);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, bytes).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Size of the largest file of [`geth_like_data_dir`]: two 4 MiB chunks and a bit.
pub const GETH_BIG: usize = 8 * 1024 * 1024 + 17;

/// A geth-like data dir: nested directories, an empty one, immutable "SSTs" of several
/// sizes (empty, one byte, multi-chunk), a compressible file, files with the same content,
/// symlinks (to a directory, dangling), assorted modes, and the files geth's profile
/// excludes (`nodekey`, `LOCK`), which must not travel.
pub fn geth_like_data_dir(root: &Path) {
    write_file(
        root,
        "geth/chaindata/000001.sst",
        &noise(1, GETH_BIG),
        0o644,
    );
    write_file(
        root,
        "geth/chaindata/000002.sst",
        &noise(2, 64 * 1024),
        0o600,
    );
    write_file(root, "geth/chaindata/empty.log", b"", 0o644);
    write_file(root, "geth/chaindata/one", b"x", 0o444);
    write_file(
        root,
        "geth/chaindata/MANIFEST-000004",
        &[b'm'; 300_000],
        0o644,
    );
    write_file(
        root,
        "geth/chaindata/ancient/headers.0000.cdat",
        &noise(3, 200_000),
        0o644,
    );
    // Two files with the same content: one chunk in the store, written twice.
    write_file(
        root,
        "geth/chaindata/ancient/copy-a",
        &noise(4, 100_000),
        0o644,
    );
    write_file(
        root,
        "geth/chaindata/ancient/copy-b",
        &noise(4, 100_000),
        0o755,
    );
    write_file(root, "geth/nodekey", b"secret node identity", 0o600);
    write_file(root, "geth/chaindata/LOCK", b"", 0o644);
    fs::create_dir_all(root.join("geth/triecache/empty")).unwrap();
    fs::set_permissions(
        root.join("geth/triecache"),
        fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    symlink("chaindata/ancient", root.join("geth/ancient-link")).unwrap();
    symlink("does/not/exist", root.join("geth/dangling")).unwrap();
    symlink("geth/chaindata", root.join("top-link")).unwrap();
}

/// What a path in a data dir is, for comparing data dirs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File {
        mode: u32,
        content: ChunkHash,
        len: u64,
    },
    Dir {
        mode: u32,
    },
    Symlink {
        target: String,
    },
}

/// Every path under `root` (the restore marker left out), with what it is.
pub fn tree(root: &Path) -> BTreeMap<String, Node> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Node>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            let relative = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            if relative == RESTORE_MARKER {
                continue;
            }
            let meta = fs::symlink_metadata(entry.path()).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.file_type().is_symlink() {
                let target = fs::read_link(entry.path()).unwrap();
                out.insert(
                    relative,
                    Node::Symlink {
                        target: target.to_str().unwrap().to_owned(),
                    },
                );
            } else if meta.is_dir() {
                out.insert(relative.clone(), Node::Dir { mode });
                walk(&entry.path(), &relative, out);
            } else {
                let bytes = fs::read(entry.path()).unwrap();
                out.insert(
                    relative,
                    Node::File {
                        mode,
                        content: ChunkHash::of(&bytes),
                        len: bytes.len() as u64,
                    },
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, "", &mut out);
    out
}

/// `tree(root)` without the paths `client`'s profile excludes, nor anything under them
/// (what a snapshot holds).
pub fn shared_tree(root: &Path, client: &str) -> BTreeMap<String, Node> {
    let profile = profile::by_name(client).unwrap();
    tree(root)
        .into_iter()
        .filter(|(path, _)| {
            let segments: Vec<&str> = path.split('/').collect();
            (1..=segments.len()).all(|n| !profile.is_excluded(&segments[..n].join("/")))
        })
        .collect()
}

/// Creates and publishes a snapshot of `dir` with `create` (the chain point names `client`,
/// whose profile a restore uses), and returns its manifest.
pub async fn create_snapshot(
    store: Arc<dyn ObjectStore>,
    dir: &Path,
    client: &str,
    now_ms: u64,
) -> Manifest {
    let options = CreateOptions {
        profile: profile::by_name(client).unwrap(),
        chain: ChainPoint {
            client: client.to_owned(),
            ..ChainPoint::default()
        },
        concurrency: 3,
        now_ms,
        publish: true,
    };
    let summary = create(store.clone(), dir, &options, Arc::new(NoProgress))
        .await
        .unwrap();
    catalog::read_manifest(store.as_ref(), &summary.snapshot)
        .await
        .unwrap()
}

/// Builds and publishes a snapshot of `dir` by hand, as the format describes it: files cut
/// into `chunk_size` chunks, deduplicated, zstd where it saves 10%, appended to packs of
/// about `pack_size`. Returns the manifest.
pub async fn snapshot_by_hand(
    store: &dyn ObjectStore,
    dir: &Path,
    client: &str,
    now_ms: u64,
    chunk_size: usize,
    pack_size: usize,
) -> Manifest {
    let mut entries = Vec::new();
    let mut chunks: Vec<ChunkLocation> = Vec::new();
    let mut known: HashMap<ChunkHash, u32> = HashMap::new();
    let mut pack: Vec<u8> = Vec::new();
    let mut pending: Vec<usize> = Vec::new();

    async fn flush(
        store: &dyn ObjectStore,
        pack: &mut Vec<u8>,
        pending: &mut Vec<usize>,
        chunks: &mut [ChunkLocation],
    ) {
        if pending.is_empty() {
            return;
        }
        let id = blake3::hash(pack).to_hex().to_string();
        store
            .put(&pack_key(&id), Bytes::from(std::mem::take(pack)))
            .await
            .unwrap();
        for index in pending.drain(..) {
            chunks[index].pack = id.clone();
        }
    }

    for (path, node) in shared_tree(dir, client) {
        let kind = match node {
            Node::Dir { mode } => EntryKind::Dir { mode },
            Node::Symlink { target } => EntryKind::Symlink { target },
            Node::File { mode, len, .. } => {
                let bytes = fs::read(dir.join(&path)).unwrap();
                let mut indexes = Vec::new();
                for piece in bytes.chunks(chunk_size) {
                    let hash = ChunkHash::of(piece);
                    if let Some(&index) = known.get(&hash) {
                        indexes.push(index);
                        continue;
                    }
                    let frame = zstd::bulk::compress(piece, 3).unwrap();
                    let zstd = (frame.len() as u64) * 100 <= (piece.len() as u64) * 90;
                    let blob: &[u8] = if zstd { &frame } else { piece };
                    let index = chunks.len() as u32;
                    chunks.push(ChunkLocation {
                        hash,
                        len: piece.len() as u64,
                        pack: String::new(),
                        offset: pack.len() as u64,
                        stored_len: blob.len() as u64,
                        zstd,
                    });
                    pack.extend_from_slice(blob);
                    pending.push(index as usize);
                    known.insert(hash, index);
                    indexes.push(index);
                    if pack.len() >= pack_size {
                        flush(store, &mut pack, &mut pending, &mut chunks).await;
                    }
                }
                EntryKind::File {
                    mode,
                    size: len,
                    chunks: indexes,
                }
            }
        };
        entries.push(Entry { path, kind });
    }
    flush(store, &mut pack, &mut pending, &mut chunks).await;

    let body = serde_json::to_vec(&(&entries, &chunks)).unwrap();
    let id = format!(
        "{now_ms:013}-{}",
        &blake3::hash(&body).to_hex().to_string()[..16]
    );
    let manifest = Manifest {
        format: FORMAT_VERSION,
        id,
        created_at_ms: now_ms,
        chain: ChainPoint {
            client: client.to_owned(),
            ..ChainPoint::default()
        },
        entries,
        chunks,
    };
    catalog::write_manifest(store, &manifest).await.unwrap();
    catalog::publish(store, &manifest.id, now_ms).await.unwrap();
    manifest
}

/// An `ObjectStore` that counts the bytes `get` returned.
#[derive(Debug)]
pub struct CountingStore<S> {
    pub inner: S,
    pub bytes_read: AtomicU64,
}

impl<S> CountingStore<S> {
    pub fn new(inner: S) -> Arc<CountingStore<S>> {
        Arc::new(CountingStore {
            inner,
            bytes_read: AtomicU64::new(0),
        })
    }

    pub fn read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for CountingStore<S> {
    async fn put(&self, key: &str, body: Bytes) -> Result<ObjectMeta, ObjectError> {
        self.inner.put(key, body).await
    }
    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<ObjectMeta, ObjectError> {
        self.inner.put_if_absent(key, body).await
    }
    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<Bytes, ObjectError> {
        let body = self.inner.get(key, range).await?;
        if key.starts_with("packs/") {
            self.bytes_read
                .fetch_add(body.len() as u64, Ordering::Relaxed);
        }
        Ok(body)
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, ObjectError> {
        self.inner.head(key).await
    }
    async fn list(
        &self,
        prefix: &str,
        continuation: Option<&str>,
        max_keys: u32,
    ) -> Result<ListPage, ObjectError> {
        self.inner.list(prefix, continuation, max_keys).await
    }
    async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        self.inner.delete(key).await
    }
    async fn create_multipart(&self, key: &str) -> Result<MultipartUpload, ObjectError> {
        self.inner.create_multipart(key).await
    }
    async fn upload_part(
        &self,
        upload: &MultipartUpload,
        number: u32,
        body: Bytes,
    ) -> Result<CompletedPart, ObjectError> {
        self.inner.upload_part(upload, number, body).await
    }
    async fn complete_multipart(
        &self,
        upload: &MultipartUpload,
        parts: &[CompletedPart],
    ) -> Result<ObjectMeta, ObjectError> {
        self.inner.complete_multipart(upload, parts).await
    }
    async fn abort_multipart(&self, upload: &MultipartUpload) -> Result<(), ObjectError> {
        self.inner.abort_multipart(upload).await
    }
}
