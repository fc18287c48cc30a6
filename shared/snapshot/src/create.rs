//! Creating a snapshot: walk the data dir, upload only the chunks the store lacks, write the
//! manifest, verify it, and publish it as `latest`.
//!
//! # Steps, and the order of writes
//!
//! 1. **Walk** the data dir (blocking, on tokio's blocking pool): directories, regular files
//!    and symlinks, by relative `/`-separated UTF-8 path. Left out: what the client profile
//!    excludes (a directory it excludes is left out whole) and the restore marker
//!    ([`RESTORE_MARKER`]) at the top. A socket, fifo or device is skipped with a warning (a
//!    running client's IPC socket is normal); a name or symlink target that is not UTF-8 is
//!    [`SnapshotError::Unsupported`] (the format could not carry it). A symlink is recorded
//!    with its target as it is, never followed; one that leaves the data dir (absolute, or
//!    `..` past the top, checked lexically) gets a warning, since what it points at is not
//!    in the snapshot (a restore never writes through a symlink: verify's layout check
//!    refuses a path under one).
//! 2. **Known chunks**: the union of the chunk tables of every manifest in the store (newest
//!    first, so a chunk stored twice is re-used from its newest pack). A manifest that cannot
//!    be read is skipped with a warning: the worst that costs is uploading its chunks again.
//!    Then the packs are listed (one request per 1000 packs), and a chunk whose pack is gone
//!    or too short is not re-used but uploaded again, with a warning: a store that lost a
//!    pack heals on the next create instead of failing every verification from then on.
//! 3. **Hash and pack**, in one read of the data: files are cut into fixed-size chunks
//!    ([`crate::chunker`]) and hashed in work units of ~64 MiB (so one large file uses every
//!    core), at most `concurrency` units at once on the blocking pool, each with one read
//!    buffer. A chunk neither known nor already claimed by another unit of this snapshot is
//!    claimed (a shared set, so it is packed once however many files hold it), compressed
//!    with zstd if that saves at least [`ZSTD_MIN_SAVING_PERCENT`], and sent in batches over
//!    a bounded channel to the packer. The packer appends blobs to a pack until it holds
//!    [`PACK_TARGET_SIZE`], then uploads it with `put` under its BLAKE3 (a task per pack, at
//!    most `concurrency` in flight; when they are all busy the packer stops reading the
//!    channel, and the hashing units wait). Memory is bounded by about
//!    `concurrency x (pack in flight + read block + batch + compression scratch + channel
//!    slot)`, ~`concurrency x 40 MiB`, whatever the data dir's size.
//! 4. **Manifest**: entries sorted by path; the chunk table lists each distinct chunk once,
//!    in order of first use. Its id is `<now_ms, 13 digits>-<first 16 hex digits of the
//!    BLAKE3 of the manifest's JSON with an empty id>`: it sorts by creation time and names
//!    the content. Written only after every pack is stored.
//! 5. **Verify** ([`crate::verify::verify`]) with [`VerifyScope::ReadPacks`] of the packs
//!    this run wrote: they are read back and hashed; re-used packs are checked to exist and
//!    be long enough.
//! 6. **Publish** (if asked): the next generation of `latest`, a conditional create.
//!
//! A crash or an error at any step leaves the previous `latest` published: packs without a
//! manifest, or a manifest without a ref, are not visible to readers, and
//! [`crate::prune`] removes them once they are older than its grace period. A re-run uploads
//! the packs of a failed run again (they are not in any manifest, so nothing names their
//! chunks); the S3 adapter's SDK already retries throttled requests.
//!
//! # The summary
//!
//! `bytes_transferred` is what was written to the store: the new packs and the manifest
//! (the ref is ~100 bytes, left out). `bytes_skipped` is the raw bytes of the data dir that
//! were not uploaded: `bytes_total` minus the raw size of the new chunks (a chunk the store
//! had, or a second copy of a chunk within this snapshot). `chunks` counts the manifest's
//! distinct chunks, `chunks_new` the ones this run uploaded.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use nodefleet_ports::ObjectStore;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::catalog;
use crate::chunker;
use crate::error::SnapshotError;
use crate::format::{
    ChainPoint, ChunkHash, ChunkLocation, Entry, EntryKind, FORMAT_VERSION, Manifest,
    PACK_TARGET_SIZE, PACKS_PREFIX, ZSTD_MIN_SAVING_PERCENT, pack_key,
};
use crate::profile::ClientProfile;
use crate::progress::Progress;
use crate::prune::list_objects;
use crate::restore::RESTORE_MARKER;
use crate::verify::{VerifyScope, verify};

/// zstd level for chunks: the fastest. Chain data is mostly hashes and does not compress at
/// any level; the parts that do (headers, indexes) compress well at level 1, and an initial
/// snapshot compresses every chunk, so speed is what matters.
const CHUNK_ZSTD_LEVEL: i32 = 1;

/// A hashing unit sends new blobs to the packer in batches of about this much: one
/// allocation and one channel message per 4 MiB instead of per 32 KiB chunk.
const BATCH_TARGET: usize = 4 * 1024 * 1024;

/// How much of the id is the content hash: 64 bits, so two snapshots made in the same
/// millisecond of different data do not collide.
const ID_HASH_HEX_DIGITS: usize = 16;

#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub profile: &'static ClientProfile,
    pub chain: ChainPoint,
    /// Pack uploads (and file hashing jobs) in flight.
    pub concurrency: usize,
    /// Creation time (Unix millis): names the snapshot. Passed in, not read from a clock.
    pub now_ms: u64,
    /// Publish as `latest` after verification (false: upload and verify only).
    pub publish: bool,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CreateSummary {
    pub snapshot: String,
    pub files: u64,
    pub chunks: u64,
    pub chunks_new: u64,
    pub bytes_total: u64,
    /// Bytes written to the store: new packs and the manifest.
    pub bytes_transferred: u64,
    /// Raw bytes of chunks the store already had.
    pub bytes_skipped: u64,
    pub seconds: f64,
    pub throughput_bytes_per_sec: f64,
    /// The `latest` generation it was published as, if it was.
    pub published_generation: Option<u64>,
}

/// Creates a snapshot of `data_dir` in `store`; see the module doc for the steps.
pub async fn create(
    store: Arc<dyn ObjectStore>,
    data_dir: &Path,
    options: &CreateOptions,
    progress: Arc<dyn Progress>,
) -> Result<CreateSummary, SnapshotError> {
    let started = Instant::now();
    let concurrency = options.concurrency.max(1);

    let root = data_dir.to_path_buf();
    let profile = options.profile;
    let mut entries = tokio::task::spawn_blocking(move || walk(&root, profile))
        .await
        .map_err(|e| task_failed(data_dir, e))??;
    let bytes_total: u64 = entries.iter().map(file_size).sum();
    progress.set_total(bytes_total);

    let known = Arc::new(known_chunks(store.as_ref(), concurrency).await?);

    let jobs = hashing_jobs(data_dir, &entries, profile);
    let (file_chunks, packed) = hash_and_pack(&store, jobs, &known, concurrency, &progress).await?;

    let new_raw_bytes: u64 = packed.locations.values().map(|l| l.len).sum();
    let chunks_new = packed.locations.len() as u64;
    let new_packs = packed.packs;
    let mut chunks = ChunkTable::default();
    for (entry, hashes) in file_chunks {
        if let Some(Entry {
            kind: EntryKind::File {
                chunks: indexes, ..
            },
            ..
        }) = entries.get_mut(entry)
        {
            *indexes = hashes
                .iter()
                .map(|hash| chunks.index_of(hash, &known, &packed.locations))
                .collect::<Option<Vec<u32>>>()
                .ok_or_else(|| SnapshotError::NotVerified {
                    snapshot: String::new(),
                    reason: "a chunk was neither in the store nor uploaded (a bug)".to_owned(),
                })?;
        }
    }
    let files = entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::File { .. }))
        .count() as u64;

    let mut manifest = Manifest {
        format: FORMAT_VERSION,
        id: String::new(),
        created_at_ms: options.now_ms,
        chain: options.chain.clone(),
        entries,
        chunks: chunks.locations,
    };
    manifest.id = snapshot_id(&manifest)?;
    let manifest_bytes = catalog::write_manifest(store.as_ref(), &manifest).await?;

    match verify(
        store.clone(),
        &manifest,
        &VerifyScope::ReadPacks(new_packs.keys().cloned().collect()),
        concurrency,
    )
    .await
    {
        Ok(_) => {}
        Err(error @ SnapshotError::NotVerified { .. }) => return Err(error),
        Err(error) if error.is_retryable() => return Err(error),
        Err(error) => {
            return Err(SnapshotError::NotVerified {
                snapshot: manifest.id.clone(),
                reason: error.to_string(),
            });
        }
    }

    let published_generation = if options.publish {
        Some(
            catalog::publish(store.as_ref(), &manifest.id, options.now_ms)
                .await?
                .generation,
        )
    } else {
        None
    };

    let seconds = started.elapsed().as_secs_f64();
    Ok(CreateSummary {
        snapshot: manifest.id.clone(),
        files,
        chunks: manifest.chunks.len() as u64,
        chunks_new,
        bytes_total,
        bytes_transferred: new_packs.values().sum::<u64>() + manifest_bytes,
        bytes_skipped: bytes_total.saturating_sub(new_raw_bytes),
        seconds,
        throughput_bytes_per_sec: if seconds > 0.0 {
            bytes_total as f64 / seconds
        } else {
            0.0
        },
        published_generation,
    })
}

/// The id of `manifest` (whose `id` is ignored): creation time, then a content hash.
pub fn snapshot_id(manifest: &Manifest) -> Result<String, SnapshotError> {
    let encoded = if manifest.id.is_empty() {
        serde_json::to_vec(manifest)
    } else {
        let mut body = manifest.clone();
        body.id = String::new();
        serde_json::to_vec(&body)
    };
    let json = encoded.map_err(|e| SnapshotError::BadManifest {
        snapshot: String::new(),
        reason: format!("cannot encode: {e}"),
    })?;
    let hash = blake3::hash(&json).to_hex();
    Ok(format!(
        "{:013}-{}",
        manifest.created_at_ms,
        &hash[..ID_HASH_HEX_DIGITS]
    ))
}

/// True if a symlink at `link` (a relative path in the data dir) pointing at `target` stays
/// inside the data dir, resolving `target` lexically: not absolute, and no `..` climbs
/// above the top. (Lexically: a chain of symlinks can still leave; this is for a warning,
/// not a security check.)
pub fn symlink_stays_inside(link: &str, target: &str) -> bool {
    if target.is_empty() || target.starts_with('/') {
        return false;
    }
    let mut depth: usize = link.split('/').count().saturating_sub(1);
    for segment in target.split('/') {
        match segment {
            "" | "." => {}
            ".." => match depth.checked_sub(1) {
                Some(up) => depth = up,
                None => return false,
            },
            _ => depth += 1,
        }
    }
    true
}

fn file_size(entry: &Entry) -> u64 {
    match entry.kind {
        EntryKind::File { size, .. } => size,
        _ => 0,
    }
}

fn task_failed(path: &Path, error: tokio::task::JoinError) -> SnapshotError {
    SnapshotError::io(
        "run a blocking task for",
        path,
        std::io::Error::other(error),
    )
}

/// Every path under `root` a snapshot holds, sorted by path (so a directory comes before
/// what it holds). Files get an empty chunk list, filled in later.
fn walk(root: &Path, profile: &ClientProfile) -> Result<Vec<Entry>, SnapshotError> {
    let mut entries = Vec::new();
    let mut pending = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, relative)) = pending.pop() {
        let listing = fs::read_dir(&dir).map_err(|e| SnapshotError::io("list", &dir, e))?;
        for item in listing {
            let item = item.map_err(|e| SnapshotError::io("list", &dir, e))?;
            let absolute = item.path();
            let name = item.file_name();
            let Some(name) = name.to_str() else {
                return Err(SnapshotError::Unsupported {
                    path: absolute,
                    reason: "the name is not UTF-8".to_owned(),
                });
            };
            let path = if relative.is_empty() {
                name.to_owned()
            } else {
                format!("{relative}/{name}")
            };
            if path == RESTORE_MARKER || profile.is_excluded(&path) {
                continue;
            }
            // `DirEntry::metadata` does not follow symlinks.
            let meta = item
                .metadata()
                .map_err(|e| SnapshotError::io("stat", &absolute, e))?;
            let kind = meta.file_type();
            let mode = meta.permissions().mode() & 0o7777;
            if kind.is_dir() {
                entries.push(Entry {
                    path: path.clone(),
                    kind: EntryKind::Dir { mode },
                });
                pending.push((absolute, path));
            } else if kind.is_file() {
                entries.push(Entry {
                    path,
                    kind: EntryKind::File {
                        mode,
                        size: meta.len(),
                        chunks: Vec::new(),
                    },
                });
            } else if kind.is_symlink() {
                let target = fs::read_link(&absolute)
                    .map_err(|e| SnapshotError::io("read the symlink", &absolute, e))?;
                let Some(target) = target.to_str() else {
                    return Err(SnapshotError::Unsupported {
                        path: absolute,
                        reason: "the symlink's target is not UTF-8".to_owned(),
                    });
                };
                if !symlink_stays_inside(&path, target) {
                    tracing::warn!(path = %absolute.display(), target, "a symlink leaves the data dir: it is recorded as it is, what it points at is not in the snapshot");
                }
                entries.push(Entry {
                    path,
                    kind: EntryKind::Symlink {
                        target: target.to_owned(),
                    },
                });
            } else {
                tracing::warn!(path = %absolute.display(), "not a file, directory or symlink: left out of the snapshot");
            }
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(entries)
}

/// Where a chunk the store already has is, with its pack named by an index into
/// [`KnownChunks::packs`] (a store holds thousands of packs and millions of chunks).
#[derive(Debug, Clone, Copy)]
struct KnownChunk {
    pack: u32,
    len: u64,
    offset: u64,
    stored_len: u64,
    zstd: bool,
}

#[derive(Debug, Default)]
struct KnownChunks {
    packs: Vec<String>,
    chunks: HashMap<ChunkHash, KnownChunk>,
}

impl KnownChunks {
    fn contains(&self, hash: &ChunkHash) -> bool {
        self.chunks.contains_key(hash)
    }

    fn location(&self, hash: &ChunkHash) -> Option<ChunkLocation> {
        let known = self.chunks.get(hash)?;
        Some(ChunkLocation {
            hash: *hash,
            len: known.len,
            pack: self.packs.get(known.pack as usize)?.clone(),
            offset: known.offset,
            stored_len: known.stored_len,
            zstd: known.zstd,
        })
    }
}

/// The union of the chunk tables of the store's manifests, newest first.
async fn known_chunks(
    store: &dyn ObjectStore,
    concurrency: usize,
) -> Result<KnownChunks, SnapshotError> {
    let mut ids = catalog::manifest_ids(store).await?;
    ids.reverse();
    let mut manifests = stream::iter(ids)
        .map(|id| async move {
            let read = catalog::read_manifest(store, &id).await;
            (id, read)
        })
        .buffered(concurrency);
    let mut known = KnownChunks::default();
    let mut pack_index: HashMap<String, u32> = HashMap::new();
    while let Some((id, read)) = manifests.next().await {
        let manifest = match read {
            Ok(manifest) => manifest,
            Err(error) => {
                tracing::warn!(snapshot = %id, %error, "cannot read a manifest: its chunks will be uploaded again if needed");
                continue;
            }
        };
        for chunk in manifest.chunks {
            if known.chunks.contains_key(&chunk.hash) {
                continue;
            }
            let next = u32::try_from(known.packs.len()).unwrap_or(u32::MAX);
            let pack = *pack_index.entry(chunk.pack).or_insert_with_key(|pack| {
                known.packs.push(pack.clone());
                next
            });
            known.chunks.insert(
                chunk.hash,
                KnownChunk {
                    pack,
                    len: chunk.len,
                    offset: chunk.offset,
                    stored_len: chunk.stored_len,
                    zstd: chunk.zstd,
                },
            );
        }
    }
    drop(manifests);

    // Re-use only chunks whose pack is there and long enough.
    let pack_sizes: HashMap<String, u64> = list_objects(store, PACKS_PREFIX)
        .await?
        .into_iter()
        .map(|meta| (meta.key, meta.size))
        .collect();
    let present: Vec<Option<u64>> = known
        .packs
        .iter()
        .map(|pack| pack_sizes.get(&pack_key(pack)).copied())
        .collect();
    let before = known.chunks.len();
    known.chunks.retain(|_, chunk| {
        present
            .get(chunk.pack as usize)
            .copied()
            .flatten()
            .is_some_and(|size| size >= chunk.offset.saturating_add(chunk.stored_len))
    });
    let lost = before - known.chunks.len();
    if lost > 0 {
        tracing::warn!(
            chunks = lost,
            "chunks named by manifests are missing from their packs: they will be uploaded again"
        );
    }
    Ok(known)
}

/// One unit of hashing: a run of whole chunks of one file.
#[derive(Debug, Clone)]
struct HashJob {
    /// Index of the file's entry.
    entry: usize,
    path: PathBuf,
    offset: u64,
    len: u64,
    chunk_size: u64,
}

fn hashing_jobs(root: &Path, entries: &[Entry], profile: &ClientProfile) -> Vec<HashJob> {
    let mut jobs = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        if let EntryKind::File { size, .. } = entry.kind {
            let chunk_size = profile.chunk_size(&entry.path);
            let path = root.join(&entry.path);
            for (offset, len) in chunker::segments(size, chunk_size) {
                jobs.push(HashJob {
                    entry: index,
                    path: path.clone(),
                    offset,
                    len,
                    chunk_size,
                });
            }
        }
    }
    jobs
}

/// A new chunk's blob, in a [`Batch`] or a pack.
#[derive(Debug, Clone, Copy)]
struct Blob {
    hash: ChunkHash,
    len: u64,
    /// Where it starts in the batch's (later the pack's) bytes.
    offset: u64,
    stored_len: u64,
    zstd: bool,
}

/// New blobs back to back, on their way from a hashing unit to the packer.
#[derive(Debug, Default)]
struct Batch {
    bytes: Vec<u8>,
    blobs: Vec<Blob>,
}

/// What a hashing unit keeps between chunks: its zstd context and compression scratch.
struct Packing {
    compressor: zstd::bulk::Compressor<'static>,
    scratch: Vec<u8>,
    batch: Batch,
}

impl Packing {
    fn new(path: &Path) -> Result<Packing, SnapshotError> {
        Ok(Packing {
            compressor: zstd::bulk::Compressor::new(CHUNK_ZSTD_LEVEL)
                .map_err(|e| SnapshotError::io("set up zstd for", path, e))?,
            scratch: Vec::new(),
            batch: Batch::default(),
        })
    }

    /// Adds a new chunk to the batch: its zstd frame if that is at most
    /// `100 - ZSTD_MIN_SAVING_PERCENT` percent of it, else its raw bytes.
    fn add(&mut self, hash: ChunkHash, raw: &[u8]) {
        let limit = raw.len() - raw.len() * ZSTD_MIN_SAVING_PERCENT as usize / 100;
        if self.scratch.len() < limit {
            self.scratch.resize(limit, 0);
        }
        // A frame that does not fit in `limit` bytes is an error: not worth storing.
        let compressed = self
            .compressor
            .compress_to_buffer(raw, &mut self.scratch[..limit])
            .ok();
        let offset = self.batch.bytes.len() as u64;
        let (stored, zstd) = match compressed {
            Some(written) => (&self.scratch[..written], true),
            None => (raw, false),
        };
        self.batch.bytes.extend_from_slice(stored);
        self.batch.blobs.push(Blob {
            hash,
            len: raw.len() as u64,
            offset,
            stored_len: stored.len() as u64,
            zstd,
        });
    }

    fn take_batch(&mut self) -> Batch {
        std::mem::take(&mut self.batch)
    }
}

/// The chunks of one hashing unit, in order.
fn hash_segment(
    job: &HashJob,
    known: &KnownChunks,
    claimed: &Mutex<HashSet<ChunkHash>>,
    packer: &mpsc::Sender<Batch>,
    progress: &dyn Progress,
) -> Result<Vec<ChunkHash>, SnapshotError> {
    let file = File::open(&job.path).map_err(|e| SnapshotError::io("open", &job.path, e))?;
    let mut packing = Packing::new(&job.path)?;
    let mut buffer = Vec::new();
    let mut hashes =
        Vec::with_capacity(usize::try_from(job.len.div_ceil(job.chunk_size.max(1))).unwrap_or(0));
    let packer_gone = || std::io::Error::other("the packer stopped");
    chunker::for_each_chunk(
        &file,
        job.offset,
        job.len,
        job.chunk_size,
        &mut buffer,
        |_, bytes| {
            let hash = ChunkHash::of(bytes);
            hashes.push(hash);
            if !known.contains(&hash)
                && claimed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(hash)
            {
                packing.add(hash, bytes);
                if packing.batch.bytes.len() >= BATCH_TARGET {
                    packer
                        .blocking_send(packing.take_batch())
                        .map_err(|_| packer_gone())?;
                }
            }
            progress.advance(bytes.len() as u64);
            Ok(())
        },
    )
    .map_err(|e| SnapshotError::io("read", &job.path, e))?;
    if !packing.batch.blobs.is_empty() {
        packer
            .blocking_send(packing.take_batch())
            .map_err(|_| SnapshotError::io("read", &job.path, packer_gone()))?;
    }
    Ok(hashes)
}

/// The packs this run uploaded and where its new chunks are in them.
#[derive(Debug, Default)]
struct Packed {
    locations: HashMap<ChunkHash, ChunkLocation>,
    /// Pack id -> its size in bytes.
    packs: BTreeMap<String, u64>,
}

/// Hashes every job (bounded, on the blocking pool) while the packer uploads new chunks.
/// Returns each file's chunk hashes in order, by entry index, and what was uploaded.
async fn hash_and_pack(
    store: &Arc<dyn ObjectStore>,
    jobs: Vec<HashJob>,
    known: &Arc<KnownChunks>,
    concurrency: usize,
    progress: &Arc<dyn Progress>,
) -> Result<(Vec<(usize, Vec<ChunkHash>)>, Packed), SnapshotError> {
    let (sender, receiver) = mpsc::channel::<Batch>(concurrency);
    let claimed = Arc::new(Mutex::new(HashSet::new()));
    let job_count = jobs.len();
    let hashing = {
        let known = known.clone();
        let progress = progress.clone();
        async move {
            let mut results: Vec<Option<(usize, Vec<ChunkHash>)>> = vec![None; job_count];
            // The stream owns the sender: when it is dropped, after the last unit, the
            // packer's channel closes and it uploads its last pack.
            let mut done = stream::iter(jobs.into_iter().enumerate())
                .map(move |(index, job)| {
                    let (known, claimed, sender, progress) = (
                        known.clone(),
                        claimed.clone(),
                        sender.clone(),
                        progress.clone(),
                    );
                    let handle = tokio::task::spawn_blocking(move || {
                        let hashes =
                            hash_segment(&job, &known, &claimed, &sender, progress.as_ref());
                        (job, hashes)
                    });
                    async move { (index, handle.await) }
                })
                .buffer_unordered(concurrency);
            while let Some((index, joined)) = done.next().await {
                let (job, hashes) = joined.map_err(|e| task_failed(Path::new("a data file"), e))?;
                if let Some(slot) = results.get_mut(index) {
                    *slot = Some((job.entry, hashes?));
                }
            }
            drop(done);
            Ok::<_, SnapshotError>(results)
        }
    };
    let packing = pack(store.clone(), receiver, concurrency);
    let (results, packed) = tokio::try_join!(hashing, packing)?;

    // Concatenate the units of each file, in order (jobs were made in entry order).
    let mut files: Vec<(usize, Vec<ChunkHash>)> = Vec::new();
    for result in results {
        let Some((entry, hashes)) = result else {
            return Err(SnapshotError::NotVerified {
                snapshot: String::new(),
                reason: "a hashing unit finished without a result (a bug)".to_owned(),
            });
        };
        match files.last_mut() {
            Some((last, all)) if *last == entry => all.extend(hashes),
            _ => files.push((entry, hashes)),
        }
    }
    Ok((files, packed))
}

/// A pack being filled.
#[derive(Debug)]
struct OpenPack {
    bytes: Vec<u8>,
    blobs: Vec<Blob>,
}

impl OpenPack {
    fn new() -> OpenPack {
        OpenPack {
            // Room for the target and one more batch, so appending never reallocates.
            bytes: Vec::with_capacity(PACK_TARGET_SIZE as usize + BATCH_TARGET * 2),
            blobs: Vec::new(),
        }
    }
}

/// Receives batches of new blobs, fills packs and uploads them, at most `concurrency` at
/// once.
async fn pack(
    store: Arc<dyn ObjectStore>,
    mut batches: mpsc::Receiver<Batch>,
    concurrency: usize,
) -> Result<Packed, SnapshotError> {
    let mut packed = Packed::default();
    let mut uploads: JoinSet<Result<StoredPack, SnapshotError>> = JoinSet::new();
    let mut open = OpenPack::new();
    loop {
        let batch = batches.recv().await;
        let finished = batch.is_none();
        if let Some(batch) = batch {
            let base = open.bytes.len() as u64;
            open.bytes.extend_from_slice(&batch.bytes);
            open.blobs.extend(batch.blobs.into_iter().map(|blob| Blob {
                offset: base + blob.offset,
                ..blob
            }));
        }
        let full = open.bytes.len() as u64 >= PACK_TARGET_SIZE;
        if full || (finished && !open.blobs.is_empty()) {
            while uploads.len() >= concurrency {
                if let Some(done) = uploads.join_next().await {
                    record(&mut packed, done)?;
                }
            }
            let sealed = std::mem::replace(&mut open, OpenPack::new());
            uploads.spawn(upload_pack(store.clone(), sealed));
        }
        if finished {
            break;
        }
    }
    while let Some(done) = uploads.join_next().await {
        record(&mut packed, done)?;
    }
    Ok(packed)
}

fn record(
    packed: &mut Packed,
    done: Result<Result<StoredPack, SnapshotError>, tokio::task::JoinError>,
) -> Result<(), SnapshotError> {
    let StoredPack { pack, blobs, size } =
        done.map_err(|e| task_failed(Path::new("a pack upload"), e))??;
    for blob in blobs {
        packed.locations.insert(
            blob.hash,
            ChunkLocation {
                hash: blob.hash,
                len: blob.len,
                pack: pack.clone(),
                offset: blob.offset,
                stored_len: blob.stored_len,
                zstd: blob.zstd,
            },
        );
    }
    packed.packs.insert(pack, size);
    Ok(())
}

/// A pack that is in the store.
#[derive(Debug)]
struct StoredPack {
    pack: String,
    blobs: Vec<Blob>,
    size: u64,
}

/// Names a full pack by the BLAKE3 of its bytes and stores it.
async fn upload_pack(
    store: Arc<dyn ObjectStore>,
    pack: OpenPack,
) -> Result<StoredPack, SnapshotError> {
    let bytes = Bytes::from(pack.bytes);
    let size = bytes.len() as u64;
    let hashing = bytes.clone();
    let id = tokio::task::spawn_blocking(move || blake3::hash(&hashing).to_hex().to_string())
        .await
        .map_err(|e| task_failed(Path::new("a pack"), e))?;
    store.put(&pack_key(&id), bytes).await?;
    Ok(StoredPack {
        pack: id,
        blobs: pack.blobs,
        size,
    })
}

/// The manifest's chunk table being built: each distinct chunk once, in order of first use.
#[derive(Debug, Default)]
struct ChunkTable {
    locations: Vec<ChunkLocation>,
    index: HashMap<ChunkHash, u32>,
}

impl ChunkTable {
    /// The index of `hash` in the table, adding it from the new or known chunks; `None` if
    /// it is in neither.
    fn index_of(
        &mut self,
        hash: &ChunkHash,
        known: &KnownChunks,
        new: &HashMap<ChunkHash, ChunkLocation>,
    ) -> Option<u32> {
        if let Some(&index) = self.index.get(hash) {
            return Some(index);
        }
        let location = new.get(hash).cloned().or_else(|| known.location(hash))?;
        let index = u32::try_from(self.locations.len()).ok()?;
        self.locations.push(location);
        self.index.insert(*hash, index);
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn symlinks_must_stay_inside() {
        assert!(symlink_stays_inside("a", "b"));
        assert!(symlink_stays_inside("d/a", "../b"));
        assert!(symlink_stays_inside("d/e/a", "../../b/./c"));
        assert!(symlink_stays_inside("d/a", ".."));
        assert!(!symlink_stays_inside("a", "../b"));
        assert!(!symlink_stays_inside("d/a", "../../b"));
        assert!(!symlink_stays_inside("d/a", "x/../../../b"));
        assert!(!symlink_stays_inside("a", "/etc/passwd"));
        assert!(!symlink_stays_inside("a", ""));
    }

    #[test]
    fn ids_sort_by_time_and_name_the_content() {
        let manifest = Manifest {
            format: FORMAT_VERSION,
            id: String::new(),
            created_at_ms: 1_700_000_000_000,
            chain: ChainPoint::default(),
            entries: Vec::new(),
            chunks: Vec::new(),
        };
        let id = snapshot_id(&manifest).unwrap();
        assert_eq!(id.len(), 13 + 1 + ID_HASH_HEX_DIGITS);
        assert!(id.starts_with("1700000000000-"));
        // The id it already has does not change it.
        let named = Manifest {
            id: id.clone(),
            ..manifest.clone()
        };
        assert_eq!(snapshot_id(&named).unwrap(), id);
        let other = Manifest {
            entries: vec![Entry {
                path: "a".to_owned(),
                kind: EntryKind::Dir { mode: 0o755 },
            }],
            ..manifest.clone()
        };
        assert_ne!(snapshot_id(&other).unwrap(), id);
        let later = Manifest {
            created_at_ms: 1_700_000_000_001,
            ..manifest
        };
        assert!(snapshot_id(&later).unwrap() > id);
    }

    #[test]
    fn blobs_are_compressed_only_when_it_pays() {
        let mut packing = Packing::new(Path::new("test")).unwrap();
        let zeros = vec![0u8; 32 * 1024];
        let mut noise = vec![0u8; 32 * 1024];
        let mut state = 1u64;
        for byte in &mut noise {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *byte = (state >> 56) as u8;
        }
        packing.add(ChunkHash::of(&zeros), &zeros);
        packing.add(ChunkHash::of(&noise), &noise);
        let batch = packing.take_batch();
        assert!(batch.blobs[0].zstd);
        assert!(batch.blobs[0].stored_len < 1024);
        assert!(!batch.blobs[1].zstd);
        assert_eq!(batch.blobs[1].stored_len, noise.len() as u64);
        assert_eq!(batch.blobs[1].offset, batch.blobs[0].stored_len);
        let zeros_blob = &batch.bytes[..batch.blobs[0].stored_len as usize];
        assert_eq!(
            zstd::bulk::decompress(zeros_blob, zeros.len()).unwrap(),
            zeros
        );
        assert_eq!(&batch.bytes[batch.blobs[1].offset as usize..], &noise[..]);
    }
}
