//! Checking a snapshot against its store: every chunk the manifest names is there, is as
//! long as it says, and hashes to its name. `create` runs it before publishing; the CLI's
//! `verify` runs it on demand. The pieces restore shares (manifest layout checks, range
//! planning, blob checks) live here too, so both read a pack the same way.
//!
//! # How it works
//!
//! 1. **Layout.** [`check_layout`] walks the manifest once: every chunk index of a file is
//!    in range, the chunk lengths add up to the file's size, every path is relative with no
//!    `..`, no path is under a file or symlink of the snapshot, no path appears twice. It records, per chunk, the
//!    first (file, offset) that uses it, so a problem names a path and offset, not a hash.
//! 2. **Plan.** Chunks are grouped by pack. For the packs the [`VerifyScope`] reads,
//!    [`plan_ranges`] sorts their blobs by offset and coalesces neighbours into ranged GETs
//!    of at most [`VERIFY_MAX_RANGE`] (holes up to [`MAX_GAP`] are read through: a hole
//!    costs less than another request). The other packs get a HEAD: they must exist and be
//!    at least as long as their last blob's end.
//! 3. **Check.** At most `concurrency` GETs and HEADs are in flight. Each range's blobs are
//!    checked on the blocking pool by [`check_blob`]: cut out of the response (a `Bytes`
//!    slice, no copy), decoded if zstd, length and BLAKE3 compared with the manifest.
//!
//! The first problem stops the run and comes back as [`SnapshotError::BadChunk`]; a store
//! that fails (throttled, unreachable) comes back as [`SnapshotError::Store`], retryable.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use nodefleet_ports::{ByteRange, ObjectError, ObjectStore};

use crate::error::SnapshotError;
use crate::format::{ChunkHash, ChunkLocation, EntryKind, Manifest, pack_key};

/// How much of a snapshot to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyScope {
    /// Read every chunk back and check its hash.
    Everything,
    /// Read back (and hash) every chunk of these packs; for the others check only that the
    /// pack exists and is long enough. What `create` runs before publishing: the packs it
    /// just wrote are read back, the ones it re-used were verified when they were new.
    ReadPacks(BTreeSet<String>),
    /// Check that every pack exists and is long enough for every blob it holds (so every
    /// chunk is there with its stored length), and read back and hash `chunks` chunks chosen
    /// from all of them by `seed` (the same seed picks the same chunks). What the snapshot
    /// updater runs before it publishes: cheap enough for a Lambda at any snapshot size,
    /// while `create` already read back every pack it wrote.
    Sample { chunks: u64, seed: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    pub snapshot: String,
    pub chunks_checked: u64,
    pub bytes_read: u64,
    pub packs: u64,
}

/// Largest ranged GET verify issues: the top of the 8-16 MB range where an S3 GET reaches
/// full per-connection throughput (DESIGN), and what one pack ([`crate::format::PACK_TARGET_SIZE`])
/// is, so a pack is usually one request.
pub const VERIFY_MAX_RANGE: u64 = 16 * 1024 * 1024;

/// Two blobs of a pack with a hole of at most this many bytes between them are fetched in
/// one GET, hole included. A request costs ~20-50 ms of latency on S3, which at the
/// ~100 MB/s of one connection is 2-5 MB of transfer; 256 KiB of waste is far cheaper, and
/// small enough that a restore of a few scattered chunks does not read whole packs.
pub const MAX_GAP: u64 = 256 * 1024;

/// Where a chunk is used: a file (index into [`Manifest::entries`]) and an offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkUse {
    pub entry: u32,
    pub offset: u64,
}

/// What [`check_layout`] learns from a manifest.
#[derive(Debug)]
pub(crate) struct Layout {
    /// Per chunk, the first place a file uses it (`None`: no file does).
    pub first_use: Vec<Option<ChunkUse>>,
}

impl Layout {
    /// A [`SnapshotError::BadChunk`] for `chunk`, named by its first user.
    pub fn bad_chunk(&self, manifest: &Manifest, chunk: u32, problem: String) -> SnapshotError {
        let location = self.first_use.get(chunk as usize).copied().flatten();
        bad_chunk_at(manifest, chunk, location, problem)
    }
}

/// A [`SnapshotError::BadChunk`] for `chunk` used at `location`.
pub(crate) fn bad_chunk_at(
    manifest: &Manifest,
    chunk: u32,
    location: Option<ChunkUse>,
    problem: String,
) -> SnapshotError {
    let (path, offset) = match location {
        Some(used) => (
            manifest
                .entries
                .get(used.entry as usize)
                .map_or_else(String::new, |e| e.path.clone()),
            used.offset,
        ),
        None => ("(no file)".to_owned(), 0),
    };
    SnapshotError::BadChunk {
        snapshot: manifest.id.clone(),
        path,
        offset,
        chunk: manifest
            .chunks
            .get(chunk as usize)
            .map_or_else(|| format!("#{chunk}"), |c| c.hash.to_hex()),
        problem,
    }
}

/// True if `path` is a relative, `/`-separated path with no empty, `.` or `..` segment.
pub(crate) fn is_safe_path(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\0')
        && path
            .split('/')
            .all(|segment| !segment.is_empty() && segment != "." && segment != "..")
}

/// Checks that `manifest` describes a tree that can be laid out safely and consistently
/// (see the module doc), and finds each chunk's first user.
pub(crate) fn check_layout(manifest: &Manifest) -> Result<Layout, SnapshotError> {
    let bad = |reason: String| SnapshotError::BadManifest {
        snapshot: manifest.id.clone(),
        reason,
    };
    let chunk_count = manifest.chunks.len();
    if u32::try_from(chunk_count).is_err() || u32::try_from(manifest.entries.len()).is_err() {
        return Err(bad("too many chunks or entries".to_owned()));
    }
    let mut first_use: Vec<Option<ChunkUse>> = vec![None; chunk_count];
    let mut kinds: HashMap<&str, bool> = HashMap::with_capacity(manifest.entries.len());
    for entry in &manifest.entries {
        let path = entry.path.as_str();
        if !is_safe_path(path) {
            return Err(bad(format!("unsafe path {path:?}")));
        }
        let is_dir = matches!(entry.kind, EntryKind::Dir { .. });
        if kinds.insert(path, is_dir).is_some() {
            return Err(bad(format!("{path} appears twice")));
        }
    }
    for (index, entry) in manifest.entries.iter().enumerate() {
        let path = entry.path.as_str();
        // Nothing may be written through a file or a symlink of the snapshot: every
        // ancestor is a directory of the snapshot, or not in it (then it is created).
        let mut ancestor = path;
        while let Some((parent, _)) = ancestor.rsplit_once('/') {
            if kinds.get(parent) == Some(&false) {
                return Err(bad(format!(
                    "{path} is under {parent}, which is not a directory"
                )));
            }
            ancestor = parent;
        }
        match &entry.kind {
            EntryKind::Dir { .. } => {}
            EntryKind::Symlink { target } => {
                if target.is_empty() || target.contains('\0') {
                    return Err(bad(format!("symlink {path} has an empty or NUL target")));
                }
            }
            EntryKind::File { size, chunks, .. } => {
                let mut offset = 0u64;
                for &chunk in chunks {
                    let location = manifest.chunks.get(chunk as usize).ok_or_else(|| {
                        bad(format!("{path} names chunk #{chunk}, which does not exist"))
                    })?;
                    if let Some(slot) = first_use.get_mut(chunk as usize)
                        && slot.is_none()
                    {
                        *slot = Some(ChunkUse {
                            entry: index as u32,
                            offset,
                        });
                    }
                    offset = offset
                        .checked_add(location.len)
                        .ok_or_else(|| bad(format!("{path}: chunk lengths overflow")))?;
                }
                if offset != *size {
                    return Err(bad(format!(
                        "{path} is {size} bytes but its chunks add up to {offset}"
                    )));
                }
            }
        }
    }
    for (index, chunk) in manifest.chunks.iter().enumerate() {
        if chunk.offset.checked_add(chunk.stored_len).is_none() {
            return Err(bad(format!("chunk #{index} has an impossible pack range")));
        }
        if !chunk.zstd && chunk.stored_len != chunk.len {
            return Err(bad(format!(
                "chunk #{index} is stored raw but its stored length {} is not its length {}",
                chunk.stored_len, chunk.len
            )));
        }
    }
    Ok(Layout { first_use })
}

/// One ranged GET: `[start, end)` of a pack, holding the blobs of `chunks` (indexes into
/// [`Manifest::chunks`], by pack offset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RangePlan {
    pub pack: String,
    pub start: u64,
    pub end: u64,
    pub chunks: Vec<u32>,
}

/// Coalesces the blobs `chunks` of pack `pack` into ranged GETs: sorted by offset, a blob
/// joins the current range if the hole before it is at most `max_gap` and the range stays
/// within `max_range` (a blob larger than `max_range` gets a range of its own).
pub(crate) fn plan_ranges(
    pack: &str,
    locations: &[ChunkLocation],
    mut chunks: Vec<u32>,
    max_range: u64,
    max_gap: u64,
) -> Vec<RangePlan> {
    let span = |chunk: u32| {
        locations.get(chunk as usize).map_or((0, 0), |l| {
            (l.offset, l.offset.saturating_add(l.stored_len))
        })
    };
    chunks.sort_by_key(|&chunk| span(chunk));
    chunks.dedup();
    let mut ranges: Vec<RangePlan> = Vec::new();
    for chunk in chunks {
        let (start, end) = span(chunk);
        if let Some(current) = ranges.last_mut()
            && start <= current.end.saturating_add(max_gap)
            && end.max(current.end) - current.start <= max_range
        {
            current.end = current.end.max(end);
            current.chunks.push(chunk);
            continue;
        }
        ranges.push(RangePlan {
            pack: pack.to_owned(),
            start,
            end,
            chunks: vec![chunk],
        });
    }
    ranges
}

/// Reads `range` of its pack. `Ok(None)`: the pack is missing, or shorter than the start.
pub(crate) async fn fetch_range(
    store: &dyn ObjectStore,
    range: &RangePlan,
) -> Result<Option<Bytes>, SnapshotError> {
    if range.start == range.end {
        return Ok(Some(Bytes::new()));
    }
    match store
        .get(
            &pack_key(&range.pack),
            Some(ByteRange::new(range.start, range.end)),
        )
        .await
    {
        Ok(body) => Ok(Some(body)),
        Err(ObjectError::NotFound { .. } | ObjectError::InvalidRange { .. }) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// The raw bytes of the chunk at `location`, cut from `body` (which holds its pack from
/// `body_start`), decoded and checked; `Err` is the problem, in words.
pub(crate) fn check_blob(
    location: &ChunkLocation,
    body_start: u64,
    body: &Bytes,
) -> Result<Bytes, String> {
    let start = location.offset.saturating_sub(body_start);
    let end = start.saturating_add(location.stored_len);
    if end > body.len() as u64 {
        return Err(format!(
            "missing: pack {} ends before byte {}",
            location.pack,
            location.offset.saturating_add(location.stored_len)
        ));
    }
    // Both fit in `body`'s length, so they fit in a usize.
    let blob = body.slice(start as usize..end as usize);
    let raw = if location.zstd {
        let capacity = usize::try_from(location.len)
            .map_err(|_| format!("corrupt: {} bytes cannot be decoded here", location.len))?;
        match zstd::bulk::decompress(&blob, capacity) {
            Ok(decoded) => Bytes::from(decoded),
            Err(error) => return Err(format!("corrupt: its zstd frame does not decode: {error}")),
        }
    } else {
        blob
    };
    if raw.len() as u64 != location.len {
        return Err(format!(
            "corrupt: {} bytes instead of {}",
            raw.len(),
            location.len
        ));
    }
    let hash = ChunkHash::of(&raw);
    if hash != location.hash {
        return Err(format!("corrupt: its bytes hash to {hash}"));
    }
    Ok(raw)
}

/// `count` distinct chunk indexes out of `total`, picked by `seed` (splitmix64): the same
/// seed picks the same chunks, so a failed sample can be re-checked. All of them when
/// `count` is at least `total`.
pub(crate) fn sample_chunks(total: usize, count: u64, seed: u64) -> BTreeSet<u32> {
    let total = u32::try_from(total).unwrap_or(u32::MAX);
    if count >= u64::from(total) {
        return (0..total).collect();
    }
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut picked = BTreeSet::new();
    // count < total <= u32::MAX, so the loop ends: each round adds one index with
    // probability at least 1 - count/total.
    while (picked.len() as u64) < count {
        picked.insert((next() % u64::from(total)) as u32);
    }
    picked
}

/// One unit of verification work.
enum Job {
    Read(RangePlan),
    /// A pack only checked for existence and length: the chunk whose blob ends last.
    Head {
        pack: String,
        last_chunk: u32,
    },
}

/// What one job found.
#[derive(Default)]
struct Checked {
    chunks: u64,
    bytes: u64,
}

/// Checks `manifest` against the store; the first problem is a [`SnapshotError::BadChunk`]
/// naming the file and offset.
pub async fn verify(
    store: Arc<dyn ObjectStore>,
    manifest: &Manifest,
    scope: &VerifyScope,
    concurrency: usize,
) -> Result<VerifyReport, SnapshotError> {
    let layout = check_layout(manifest)?;
    let mut by_pack: HashMap<&str, Vec<u32>> = HashMap::new();
    for (index, chunk) in manifest.chunks.iter().enumerate() {
        // check_layout refused more than u32::MAX chunks.
        by_pack
            .entry(chunk.pack.as_str())
            .or_default()
            .push(index as u32);
    }
    let mut packs: Vec<(&str, Vec<u32>)> = by_pack.into_iter().collect();
    packs.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let pack_count = packs.len() as u64;
    let sampled = match scope {
        VerifyScope::Sample { chunks, seed } => {
            sample_chunks(manifest.chunks.len(), *chunks, *seed)
        }
        _ => BTreeSet::new(),
    };
    let mut jobs = Vec::new();
    for (pack, chunks) in packs {
        let read = match scope {
            VerifyScope::Everything => true,
            VerifyScope::ReadPacks(read) => read.contains(pack),
            VerifyScope::Sample { .. } => {
                let picked: Vec<u32> = chunks
                    .iter()
                    .copied()
                    .filter(|c| sampled.contains(c))
                    .collect();
                if !picked.is_empty() {
                    jobs.extend(
                        plan_ranges(pack, &manifest.chunks, picked, VERIFY_MAX_RANGE, MAX_GAP)
                            .into_iter()
                            .map(Job::Read),
                    );
                }
                false
            }
        };
        if read {
            jobs.extend(
                plan_ranges(pack, &manifest.chunks, chunks, VERIFY_MAX_RANGE, MAX_GAP)
                    .into_iter()
                    .map(Job::Read),
            );
        } else if let Some(&last_chunk) = chunks.iter().max_by_key(|&&c| {
            manifest
                .chunks
                .get(c as usize)
                .map_or(0, |l| l.offset.saturating_add(l.stored_len))
        }) {
            jobs.push(Job::Head {
                pack: pack.to_owned(),
                last_chunk,
            });
        }
    }

    let manifest = Arc::new(manifest.clone());
    let layout = Arc::new(layout);
    let totals = stream::iter(jobs)
        .map(|job| {
            let store = Arc::clone(&store);
            let manifest = Arc::clone(&manifest);
            let layout = Arc::clone(&layout);
            async move { run_job(store.as_ref(), manifest, layout, job).await }
        })
        .buffer_unordered(concurrency.max(1))
        .try_fold(Checked::default(), |mut sum, one| async move {
            sum.chunks += one.chunks;
            sum.bytes += one.bytes;
            Ok(sum)
        })
        .await?;
    Ok(VerifyReport {
        snapshot: manifest.id.clone(),
        chunks_checked: totals.chunks,
        bytes_read: totals.bytes,
        packs: pack_count,
    })
}

async fn run_job(
    store: &dyn ObjectStore,
    manifest: Arc<Manifest>,
    layout: Arc<Layout>,
    job: Job,
) -> Result<Checked, SnapshotError> {
    match job {
        Job::Head { pack, last_chunk } => {
            let needed = manifest
                .chunks
                .get(last_chunk as usize)
                .map_or(0, |l| l.offset.saturating_add(l.stored_len));
            match store.head(&pack_key(&pack)).await? {
                None => Err(layout.bad_chunk(
                    &manifest,
                    last_chunk,
                    format!("missing: pack {pack} is not in the store"),
                )),
                Some(meta) if meta.size < needed => Err(layout.bad_chunk(
                    &manifest,
                    last_chunk,
                    format!(
                        "missing: pack {pack} is {} bytes, its blobs need {needed}",
                        meta.size
                    ),
                )),
                Some(_) => Ok(Checked::default()),
            }
        }
        Job::Read(range) => {
            let Some(body) = fetch_range(store, &range).await? else {
                let first = range.chunks.first().copied().unwrap_or(0);
                return Err(layout.bad_chunk(
                    &manifest,
                    first,
                    format!(
                        "missing: pack {} is not in the store or ends before byte {}",
                        range.pack, range.start
                    ),
                ));
            };
            let bytes = body.len() as u64;
            let snapshot = manifest.id.clone();
            tokio::task::spawn_blocking(move || {
                for &chunk in &range.chunks {
                    let Some(location) = manifest.chunks.get(chunk as usize) else {
                        continue;
                    };
                    check_blob(location, range.start, &body)
                        .map_err(|problem| layout.bad_chunk(&manifest, chunk, problem))?;
                }
                Ok(Checked {
                    chunks: range.chunks.len() as u64,
                    bytes,
                })
            })
            .await
            .map_err(|error| SnapshotError::NotVerified {
                snapshot,
                reason: format!("checking task failed: {error}"),
            })?
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{ChainPoint, Entry, FORMAT_VERSION};
    use nodefleet_ports::fakes::MemoryObjectStore;

    fn location(pack: &str, offset: u64, raw: &[u8]) -> ChunkLocation {
        ChunkLocation {
            hash: ChunkHash::of(raw),
            len: raw.len() as u64,
            pack: pack.to_owned(),
            offset,
            stored_len: raw.len() as u64,
            zstd: false,
        }
    }

    /// A snapshot of one file `f` holding two 4-byte chunks, in pack `p`, and one
    /// zstd-compressed chunk in file `g`, in pack `q`.
    async fn fixture() -> (MemoryObjectStore, Manifest) {
        let store = MemoryObjectStore::new();
        store
            .put(&pack_key("pp"), Bytes::from_static(b"aaaabbbb"))
            .await
            .unwrap();
        let raw = vec![7u8; 1000];
        let frame = zstd::bulk::compress(&raw, 3).unwrap();
        store
            .put(&pack_key("qq"), Bytes::from(frame.clone()))
            .await
            .unwrap();
        let manifest = Manifest {
            format: FORMAT_VERSION,
            id: "s".to_owned(),
            created_at_ms: 0,
            chain: ChainPoint::default(),
            entries: vec![
                Entry {
                    path: "d".to_owned(),
                    kind: EntryKind::Dir { mode: 0o755 },
                },
                Entry {
                    path: "d/f".to_owned(),
                    kind: EntryKind::File {
                        mode: 0o644,
                        size: 8,
                        chunks: vec![0, 1],
                    },
                },
                Entry {
                    path: "g".to_owned(),
                    kind: EntryKind::File {
                        mode: 0o644,
                        size: 1000,
                        chunks: vec![2],
                    },
                },
            ],
            chunks: vec![
                location("pp", 0, b"aaaa"),
                location("pp", 4, b"bbbb"),
                ChunkLocation {
                    hash: ChunkHash::of(&raw),
                    len: 1000,
                    pack: "qq".to_owned(),
                    offset: 0,
                    stored_len: frame.len() as u64,
                    zstd: true,
                },
            ],
        };
        (store, manifest)
    }

    #[tokio::test]
    async fn a_sound_snapshot_verifies() {
        let (store, manifest) = fixture().await;
        let report = verify(Arc::new(store), &manifest, &VerifyScope::Everything, 4)
            .await
            .unwrap();
        assert_eq!(report.chunks_checked, 3);
        assert_eq!(report.packs, 2);
        assert!(report.bytes_read >= 8);
    }

    #[tokio::test]
    async fn a_flipped_byte_is_named_by_file_and_offset() {
        let (store, manifest) = fixture().await;
        store
            .put(&pack_key("pp"), Bytes::from_static(b"aaaabXbb"))
            .await
            .unwrap();
        let error = verify(Arc::new(store), &manifest, &VerifyScope::Everything, 4)
            .await
            .unwrap_err();
        match error {
            SnapshotError::BadChunk {
                path,
                offset,
                problem,
                ..
            } => {
                assert_eq!((path.as_str(), offset), ("d/f", 4));
                assert!(problem.starts_with("corrupt"), "{problem}");
            }
            other => panic!("expected BadChunk, got {other}"),
        }
    }

    #[test]
    fn samples_are_distinct_deterministic_and_capped() {
        let a = sample_chunks(1000, 10, 42);
        assert_eq!(a.len(), 10);
        assert_eq!(a, sample_chunks(1000, 10, 42));
        assert_ne!(a, sample_chunks(1000, 10, 43));
        assert!(a.iter().all(|&c| c < 1000));
        assert_eq!(sample_chunks(5, 10, 1).len(), 5);
        assert!(sample_chunks(5, 0, 1).is_empty());
    }

    #[tokio::test]
    async fn a_sample_reads_its_chunks_and_heads_every_pack() {
        let (store, manifest) = fixture().await;
        let store = Arc::new(store);
        // No chunk read: every pack is still checked for presence and length.
        let none = VerifyScope::Sample { chunks: 0, seed: 7 };
        let report = verify(store.clone(), &manifest, &none, 2).await.unwrap();
        assert_eq!((report.chunks_checked, report.packs), (0, 2));
        // All chunks sampled: a flipped byte is caught, as by a full verify.
        store
            .put(&pack_key("pp"), Bytes::from_static(b"aaaabXbb"))
            .await
            .unwrap();
        let all = VerifyScope::Sample { chunks: 3, seed: 7 };
        assert!(matches!(
            verify(store.clone(), &manifest, &all, 2).await,
            Err(SnapshotError::BadChunk { .. })
        ));
        // A pack cut short fails even an empty sample.
        store
            .put(&pack_key("qq"), Bytes::from_static(b"x"))
            .await
            .unwrap();
        assert!(matches!(
            verify(store, &manifest, &none, 2).await,
            Err(SnapshotError::BadChunk { .. })
        ));
    }

    #[tokio::test]
    async fn unread_packs_are_checked_for_presence_and_length() {
        let (store, manifest) = fixture().await;
        store
            .put(&pack_key("pp"), Bytes::from_static(b"aaaabXbb"))
            .await
            .unwrap();
        let store = Arc::new(store);
        // Reading only qq does not see the flipped byte in pp, but sees it is long enough.
        let only_q = VerifyScope::ReadPacks(BTreeSet::from(["qq".to_owned()]));
        let report = verify(store.clone(), &manifest, &only_q, 2).await.unwrap();
        assert_eq!(report.chunks_checked, 1);
        // A pack cut short is caught by the HEAD.
        store
            .put(&pack_key("pp"), Bytes::from_static(b"aaaabbb"))
            .await
            .unwrap();
        let error = verify(store.clone(), &manifest, &only_q, 2)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, SnapshotError::BadChunk { path, offset: 4, .. } if path == "d/f"),
            "{error}"
        );
        store.delete(&pack_key("pp")).await.unwrap();
        let error = verify(store, &manifest, &only_q, 2).await.unwrap_err();
        assert!(error.to_string().contains("not in the store"), "{error}");
    }

    #[tokio::test]
    async fn a_missing_pack_fails_a_full_verify() {
        let (store, manifest) = fixture().await;
        store.delete(&pack_key("qq")).await.unwrap();
        let error = verify(Arc::new(store), &manifest, &VerifyScope::Everything, 1)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, SnapshotError::BadChunk { path, offset: 0, .. } if path == "g"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn inconsistent_manifests_are_refused() {
        let (_, mut manifest) = fixture().await;
        if let EntryKind::File { size, .. } = &mut manifest.entries[1].kind {
            *size = 9;
        }
        assert!(matches!(
            check_layout(&manifest),
            Err(SnapshotError::BadManifest { .. })
        ));
        let (_, mut manifest) = fixture().await;
        manifest.entries[2].path = "../g".to_owned();
        assert!(check_layout(&manifest).is_err());
        let (_, mut manifest) = fixture().await;
        manifest.entries[0].kind = EntryKind::Symlink {
            target: "/etc".to_owned(),
        };
        assert!(check_layout(&manifest).is_err());
        let (_, mut manifest) = fixture().await;
        manifest.entries[2].path = "d/f".to_owned();
        assert!(check_layout(&manifest).is_err());
    }

    #[test]
    fn ranges_coalesce_neighbours_up_to_the_limit() {
        let chunks: Vec<ChunkLocation> = [(0, 10), (10, 10), (20, 10), (1000, 10), (30, 100)]
            .iter()
            .map(|&(offset, len)| ChunkLocation {
                hash: ChunkHash([0; 32]),
                len,
                pack: "p".to_owned(),
                offset,
                stored_len: len,
                zstd: false,
            })
            .collect();
        let ranges = plan_ranges("p", &chunks, vec![3, 2, 1, 0, 4], 100, 0);
        let spans: Vec<(u64, u64, Vec<u32>)> = ranges
            .into_iter()
            .map(|r| (r.start, r.end, r.chunks))
            .collect();
        assert_eq!(
            spans,
            vec![
                (0, 30, vec![0, 1, 2]),
                (30, 130, vec![4]),
                (1000, 1010, vec![3])
            ]
        );
        // A hole within the gap allowance is read through.
        let ranges = plan_ranges("p", &chunks, vec![0, 3], 2000, 1000);
        assert_eq!(ranges.len(), 1);
        assert_eq!((ranges[0].start, ranges[0].end), (0, 1010));
    }

    #[test]
    fn blobs_are_checked_for_length_hash_and_presence() {
        let body = Bytes::from_static(b"xxaaaa");
        let good = location("p", 2, b"aaaa");
        assert_eq!(
            check_blob(&good, 0, &body).unwrap(),
            Bytes::from_static(b"aaaa")
        );
        let wrong = location("p", 2, b"aaab");
        assert!(
            check_blob(&wrong, 0, &body)
                .unwrap_err()
                .starts_with("corrupt")
        );
        let beyond = location("p", 4, b"aaaa");
        assert!(
            check_blob(&beyond, 0, &body)
                .unwrap_err()
                .starts_with("missing")
        );
    }
}
