//! Restore (hydration): makes a data dir identical to a snapshot, streaming chunks from the
//! store straight into the destination files, verifying every one, and resuming where an
//! earlier run stopped.
//!
//! # How it works
//!
//! 1. **Resolve and read.** The selector names a snapshot ([`catalog::resolve`]); its
//!    manifest is read and its layout checked ([`check_layout`]: safe relative paths,
//!    nothing under a file or symlink, chunk lengths add up to file sizes). A bad manifest
//!    stops here, before the data dir is touched.
//! 2. **Prepare the tree** (blocking pool). The [`RESTORE_MARKER`] is removed first, so a
//!    data dir is never marked restored while it is being changed. Then whatever the
//!    snapshot does not have is removed (files, symlinks, directories), except paths the
//!    snapshot's client profile excludes ([`profile::by_name`]: a node's own `nodekey`
//!    survives); a path whose kind differs (a file where the snapshot has a directory, a
//!    symlink with another target) is removed too. This happens before any data is
//!    written, so stale files free their space first. Directories and symlinks are
//!    created; every file is opened *without* truncating and sized with `set_len`.
//! 3. **Plan.** Every chunk occurrence (file, offset) is either already right on disk or
//!    needed. Bytes that were in a file before this run (below its old length) are read
//!    back and hashed, in batches of [`CHECK_BATCH`] per job, `concurrency` jobs at once;
//!    if they hash to the chunk they are skipped (that is how a re-run resumes). Bytes past
//!    the old length were zeros from `set_len` and are needed without reading them, so a
//!    fresh restore costs no read-back. Needed chunks are grouped by pack and coalesced
//!    into ranged GETs of at most `max_range` ([`plan_ranges`]: sorted by pack offset,
//!    holes up to [`MAX_GAP`] read through). Ranges run front to back within each file,
//!    taking files in turn ([`interleave_by_file`]), so the ranges in flight write to
//!    different files: buffered writes to one file serialize on its inode lock.
//! 4. **Fetch, verify, write.** At most `concurrency` ranges are in flight, so memory is
//!    bounded by about `concurrency x max_range`. Each range is handed whole to the blocking
//!    pool, which walks its blobs in groups of about [`WRITE_GROUP`]: every blob of a group
//!    is checked ([`check_blob`]: length, zstd decode, BLAKE3) *before* any of it is
//!    written, then each chunk goes to every (file, offset) that needs it with positioned
//!    writes. Raw blobs are `Bytes` slices of the response (no copy), blobs adjacent in the
//!    pack and in a file are merged into one write, and a group is written while the bytes
//!    just hashed are still in the CPU's cache.
//! 5. **Finish.** Modes are applied (files, then directories deepest first, so a read-only
//!    directory is filled before it is closed), and only then is the marker written, with
//!    the snapshot id. Data is not fsynced (nor does `cp -r` sync): a data dir lives on
//!    instance storage that does not outlive its host, and a re-run re-checks every chunk
//!    it finds on disk.
//!
//! # Failure
//!
//! Any missing or corrupt chunk fails the whole restore with [`SnapshotError::BadChunk`]
//! naming the file and offset that needed it; a missing pack is reported the same way. The
//! marker is not written, so the agent will not start a client on the data dir. What was
//! written stays: it is verified data, and a re-run (perhaps of another snapshot) keeps
//! whatever still matches.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use nodefleet_ports::ObjectStore;

use crate::catalog::{self, Selector};
use crate::error::SnapshotError;
use crate::format::{ChunkHash, EntryKind, Manifest};
use crate::profile::{self, ClientProfile};
use crate::progress::Progress;
use crate::verify::{
    ChunkUse, MAX_GAP, RangePlan, bad_chunk_at, check_blob, check_layout, fetch_range, plan_ranges,
};

/// The file a finished restore leaves in the data dir, naming the snapshot; removed when a
/// restore starts. The agent starts a client only on a data dir that has it.
pub const RESTORE_MARKER: &str = ".nodefleet-restored";

/// Ranged GETs in flight by default: one S3 connection reaches ~100 MB/s, so 8 reach the
/// ~0.8 GB/s an i3.2xlarge NVMe can write (DESIGN), while memory stays at 8 x 16 MiB.
pub const DEFAULT_CONCURRENCY: usize = 8;

/// Largest ranged GET by default: the top of S3's 8-16 MB sweet spot (DESIGN), one pack.
pub const DEFAULT_MAX_RANGE: u64 = 16 * 1024 * 1024;

/// Bytes of existing file data one read-back job checks: large enough that a job is mostly
/// reading and hashing, small enough that a 512 MiB file is spread over both cores.
pub const CHECK_BATCH: u64 = 64 * 1024 * 1024;

/// Checked blobs are written once a group of them holds this much: small enough that the
/// bytes just hashed are still in the CPU's cache when they are copied into the file, large
/// enough that a group of 32 KiB chunks is one write of 1 MiB.
const WRITE_GROUP: u64 = 1024 * 1024;

/// Largest single read of the read-back: consecutive chunks are read together up to this.
const CHECK_READ: u64 = 8 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Ranged GETs in flight.
    pub concurrency: usize,
    /// Adjacent blobs of one pack are fetched together up to this many bytes.
    pub max_range: u64,
}

impl Default for RestoreOptions {
    /// [`DEFAULT_CONCURRENCY`] GETs of up to [`DEFAULT_MAX_RANGE`]: see their docs.
    fn default() -> Self {
        RestoreOptions {
            concurrency: DEFAULT_CONCURRENCY,
            max_range: DEFAULT_MAX_RANGE,
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RestoreSummary {
    pub snapshot: String,
    pub files: u64,
    pub chunks: u64,
    pub bytes_total: u64,
    pub bytes_transferred: u64,
    pub bytes_skipped: u64,
    pub seconds: f64,
    pub throughput_bytes_per_sec: f64,
}

/// A file of the snapshot, as laid out in the destination.
#[derive(Debug)]
struct FileSlot {
    /// Index into [`Manifest::entries`].
    entry: u32,
    path: PathBuf,
    /// Its length before this run (bytes below it may already be right).
    old_len: u64,
}

/// One place a chunk goes: file (index into the slots), offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Occurrence {
    chunk: u32,
    file: u32,
    offset: u64,
}

/// What the fetch tasks share.
#[derive(Debug)]
struct Plan {
    manifest: Arc<Manifest>,
    files: Arc<Vec<FileSlot>>,
    /// Occurrences still to write, sorted by chunk.
    needed: Vec<Occurrence>,
}

impl Plan {
    /// Where `chunk` is needed.
    fn targets(&self, chunk: u32) -> &[Occurrence] {
        let start = self.needed.partition_point(|o| o.chunk < chunk);
        let end = self.needed.partition_point(|o| o.chunk <= chunk);
        self.needed.get(start..end).unwrap_or(&[])
    }

    fn bad_chunk(&self, chunk: u32, problem: String) -> SnapshotError {
        let location = self.targets(chunk).first().and_then(|o| {
            self.files.get(o.file as usize).map(|slot| ChunkUse {
                entry: slot.entry,
                offset: o.offset,
            })
        });
        bad_chunk_at(&self.manifest, chunk, location, problem)
    }
}

/// Makes `to` identical to the snapshot `selector` names; see the module doc.
pub async fn restore(
    store: Arc<dyn ObjectStore>,
    selector: &Selector,
    to: &Path,
    options: &RestoreOptions,
    progress: Arc<dyn Progress>,
) -> Result<RestoreSummary, SnapshotError> {
    let started = Instant::now();
    let concurrency = options.concurrency.max(1);
    let snapshot = catalog::resolve(store.as_ref(), selector).await?;
    let manifest = catalog::read_manifest(store.as_ref(), &snapshot).await?;
    check_layout(&manifest)?;
    let bytes_total: u64 = manifest
        .entries
        .iter()
        .map(|e| match e.kind {
            EntryKind::File { size, .. } => size,
            _ => 0,
        })
        .sum();
    progress.set_total(bytes_total);

    let manifest = Arc::new(manifest);
    let files = {
        let manifest = Arc::clone(&manifest);
        let to = to.to_path_buf();
        blocking(move || prepare_tree(&to, &manifest)).await?
    };

    // Every chunk occurrence, in file order.
    let mut occurrences = Vec::new();
    for (file, slot) in files.iter().enumerate() {
        if let Some(EntryKind::File { chunks, .. }) =
            manifest.entries.get(slot.entry as usize).map(|e| &e.kind)
        {
            let mut offset = 0;
            for &chunk in chunks {
                occurrences.push(Occurrence {
                    chunk,
                    file: file as u32,
                    offset,
                });
                offset += chunk_len(&manifest, chunk);
            }
        }
    }
    let files = Arc::new(files);
    let (mut needed, bytes_skipped) = check_existing(
        Arc::clone(&manifest),
        Arc::clone(&files),
        occurrences,
        concurrency,
    )
    .await?;
    progress.advance(bytes_skipped);

    // Ranges in the order their first target lands in the files.
    let mut first_target: Vec<Option<(u32, u64)>> = vec![None; manifest.chunks.len()];
    let mut by_pack: HashMap<&str, Vec<u32>> = HashMap::new();
    for o in &needed {
        let Some(slot) = first_target.get_mut(o.chunk as usize) else {
            continue;
        };
        match slot {
            Some(first) => *first = (*first).min((o.file, o.offset)),
            None => {
                *slot = Some((o.file, o.offset));
                if let Some(location) = manifest.chunks.get(o.chunk as usize) {
                    by_pack
                        .entry(location.pack.as_str())
                        .or_default()
                        .push(o.chunk);
                }
            }
        }
    }
    let ranges: Vec<RangePlan> = by_pack
        .into_iter()
        .flat_map(|(pack, chunks)| {
            plan_ranges(pack, &manifest.chunks, chunks, options.max_range, MAX_GAP)
        })
        .collect();
    let ranges = interleave_by_file(ranges, |range| {
        range
            .chunks
            .iter()
            .filter_map(|&c| first_target.get(c as usize).copied().flatten())
            .min()
    });
    drop(first_target);
    needed.sort_unstable();

    let plan = Arc::new(Plan {
        manifest,
        files,
        needed,
    });

    let (bytes_transferred, _written) = stream::iter(ranges)
        .map(|range| {
            let store = Arc::clone(&store);
            let plan = Arc::clone(&plan);
            let progress = Arc::clone(&progress);
            async move {
                let Some(body) = fetch_range(store.as_ref(), &range).await? else {
                    let first = range.chunks.first().copied().unwrap_or(0);
                    return Err(plan.bad_chunk(
                        first,
                        format!(
                            "missing: pack {} is not in the store or ends before byte {}",
                            range.pack, range.start
                        ),
                    ));
                };
                let fetched = body.len() as u64;
                let written = blocking(move || apply_range(&plan, &range, body)).await?;
                progress.advance(written);
                Ok((fetched, written))
            }
        })
        .buffer_unordered(concurrency)
        .try_fold((0u64, 0u64), |(fetched, written), (f, w)| async move {
            Ok((fetched + f, written + w))
        })
        .await?;

    {
        let plan = Arc::clone(&plan);
        let to = to.to_path_buf();
        blocking(move || finish_tree(&to, &plan.manifest)).await?;
    }

    let seconds = started.elapsed().as_secs_f64();
    Ok(RestoreSummary {
        snapshot,
        files: plan.files.len() as u64,
        chunks: plan.manifest.chunks.len() as u64,
        bytes_total,
        bytes_transferred,
        bytes_skipped,
        seconds,
        throughput_bytes_per_sec: if seconds > 0.0 {
            bytes_total as f64 / seconds
        } else {
            0.0
        },
    })
}

/// The order ranges run in: each file's ranges by offset, files taken in turn (the first
/// range of every file, then the second of every file, ...). `first_place` is where a
/// range's data first lands (file, offset). Buffered writes to one file serialize on its
/// inode lock, so ranges in flight at once should land in different files; within a file
/// they still land front to back.
fn interleave_by_file<T>(items: Vec<T>, first_place: impl Fn(&T) -> Option<(u32, u64)>) -> Vec<T> {
    let mut keyed: Vec<(Option<(u32, u64)>, T)> = items
        .into_iter()
        .map(|item| (first_place(&item), item))
        .collect();
    keyed.sort_by_key(|(place, _)| *place);
    // Rank of each range within its file: the round it runs in.
    let mut ranked: Vec<(usize, Option<u32>, T)> = Vec::with_capacity(keyed.len());
    let mut previous: Option<Option<u32>> = None;
    let mut rank = 0;
    for (place, item) in keyed {
        let file = place.map(|(file, _)| file);
        rank = if previous == Some(file) { rank + 1 } else { 0 };
        previous = Some(file);
        ranked.push((rank, file, item));
    }
    ranked.sort_by_key(|(rank, file, _)| (*rank, *file));
    ranked.into_iter().map(|(_, _, item)| item).collect()
}

fn chunk_len(manifest: &Manifest, chunk: u32) -> u64 {
    manifest.chunks.get(chunk as usize).map_or(0, |c| c.len)
}

/// Runs `work` on the blocking pool; a task that panicked is reported as an I/O failure.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, SnapshotError> + Send + 'static,
) -> Result<T, SnapshotError> {
    tokio::task::spawn_blocking(work).await.map_err(|error| {
        SnapshotError::io(
            "run a restore task in",
            "",
            io::Error::other(error.to_string()),
        )
    })?
}

/// The kind of a snapshot path, as prune compares it with what is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted<'a> {
    File,
    Dir,
    Symlink(&'a str),
}

/// Step 2 of the module doc: marker off, extras out, directories, symlinks and files in.
fn prepare_tree(to: &Path, manifest: &Manifest) -> Result<Vec<FileSlot>, SnapshotError> {
    fs::create_dir_all(to).map_err(|e| SnapshotError::io("create", to, e))?;
    let marker = to.join(RESTORE_MARKER);
    match fs::remove_file(&marker) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(SnapshotError::io("remove", marker, e)),
    }
    let wanted: HashMap<&str, Wanted<'_>> = manifest
        .entries
        .iter()
        .map(|e| {
            let kind = match &e.kind {
                EntryKind::File { .. } => Wanted::File,
                EntryKind::Dir { .. } => Wanted::Dir,
                EntryKind::Symlink { target } => Wanted::Symlink(target),
            };
            (e.path.as_str(), kind)
        })
        .collect();
    let profile = profile::by_name(&manifest.chain.client).unwrap_or(&profile::GENERIC);
    prune(to, "", &wanted, profile)?;

    let mut files = Vec::new();
    for (index, entry) in manifest.entries.iter().enumerate() {
        let path = to.join(&entry.path);
        match &entry.kind {
            EntryKind::Dir { .. } => match fs::create_dir_all(&path) {
                Ok(()) => {}
                Err(e) => return Err(SnapshotError::io("create directory", path, e)),
            },
            EntryKind::Symlink { target } => {
                create_parent(&path)?;
                // prune left only a symlink with the right target here, or nothing.
                if fs::symlink_metadata(&path).is_err() {
                    symlink(target, &path)
                        .map_err(|e| SnapshotError::io("create symlink", &path, e))?;
                }
            }
            EntryKind::File { size, .. } => {
                create_parent(&path)?;
                let file = open_for_writing(&path, true)?;
                let old_len = file
                    .metadata()
                    .map_err(|e| SnapshotError::io("inspect", &path, e))?
                    .len();
                if old_len != *size {
                    file.set_len(*size)
                        .map_err(|e| SnapshotError::io("size", &path, e))?;
                }
                files.push(FileSlot {
                    entry: index as u32,
                    path,
                    old_len: old_len.min(*size),
                });
            }
        }
    }
    Ok(files)
}

fn create_parent(path: &Path) -> Result<(), SnapshotError> {
    match path.parent() {
        Some(parent) => {
            fs::create_dir_all(parent).map_err(|e| SnapshotError::io("create directory", parent, e))
        }
        None => Ok(()),
    }
}

/// Opens `path` for positioned writes, never truncating; a read-only file (its mode from
/// an earlier restore) is made writable for the owner first.
fn open_for_writing(path: &Path, create: bool) -> Result<File, SnapshotError> {
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)
    };
    match open() {
        Ok(file) => Ok(file),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            let mode = fs::metadata(path)
                .map_err(|e| SnapshotError::io("inspect", path, e))?
                .permissions()
                .mode();
            fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o600))
                .map_err(|e| SnapshotError::io("make writable", path, e))?;
            open().map_err(|e| SnapshotError::io("open", path, e))
        }
        Err(e) => Err(SnapshotError::io("open", path, e)),
    }
}

/// Removes everything under `dir` (relative path `prefix`) the snapshot does not have, or
/// has as another kind, except profile-excluded paths. Returns whether anything was kept.
fn prune(
    dir: &Path,
    prefix: &str,
    wanted: &HashMap<&str, Wanted<'_>>,
    profile: &ClientProfile,
) -> Result<bool, SnapshotError> {
    let entries = fs::read_dir(dir).map_err(|e| SnapshotError::io("list", dir, e))?;
    let mut kept_any = false;
    for entry in entries {
        let entry = entry.map_err(|e| SnapshotError::io("list", dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let relative = if prefix.is_empty() {
            name.into_owned()
        } else {
            format!("{prefix}/{name}")
        };
        let path = entry.path();
        let file_type = entry
            .file_type()
            .map_err(|e| SnapshotError::io("inspect", &path, e))?;
        let is_dir = file_type.is_dir();
        let keep = match wanted.get(relative.as_str()) {
            Some(Wanted::Dir) if is_dir => {
                // Its own mode is put back by finish_tree.
                make_traversable(&path)?;
                prune(&path, &relative, wanted, profile)?;
                true
            }
            Some(Wanted::File) => file_type.is_file(),
            Some(Wanted::Symlink(target)) => {
                file_type.is_symlink()
                    && fs::read_link(&path).is_ok_and(|t| t.as_os_str() == *target)
            }
            Some(Wanted::Dir) => false,
            None if prefix.is_empty() && relative == RESTORE_MARKER => true,
            None if profile.is_excluded(&relative) => true,
            None if is_dir => {
                // Not in the snapshot, but it may hold excluded files that must survive:
                // empty it of everything else, and remove it if nothing is left.
                let original = make_traversable(&path)?;
                let kept = prune(&path, &relative, wanted, profile)?;
                if !kept {
                    fs::remove_dir(&path).map_err(|e| SnapshotError::io("remove", &path, e))?;
                } else if let Some(mode) = original {
                    fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                        .map_err(|e| SnapshotError::io("set the mode of", &path, e))?;
                }
                kept_any |= kept;
                continue;
            }
            None => false,
        };
        if keep {
            kept_any = true;
        } else {
            remove_any(&path, is_dir)?;
        }
    }
    Ok(kept_any)
}

/// Makes a directory listable and writable for its owner, so it can be pruned and filled;
/// returns its mode if it had to change it, so it can be put back.
fn make_traversable(path: &Path) -> Result<Option<u32>, SnapshotError> {
    let mode = fs::symlink_metadata(path)
        .map_err(|e| SnapshotError::io("inspect", path, e))?
        .permissions()
        .mode();
    if mode & 0o700 == 0o700 {
        return Ok(None);
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o700))
        .map_err(|e| SnapshotError::io("make writable", path, e))?;
    Ok(Some(mode & 0o7777))
}

fn remove_any(path: &Path, is_dir: bool) -> Result<(), SnapshotError> {
    let result = if is_dir {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    result.map_err(|e| SnapshotError::io("remove", path, e))
}

/// Step 3 of the module doc: reads back the occurrences that lie below their file's old
/// length and keeps those that do not hash to their chunk. Returns the needed occurrences
/// and the bytes found already right.
async fn check_existing(
    manifest: Arc<Manifest>,
    files: Arc<Vec<FileSlot>>,
    occurrences: Vec<Occurrence>,
    concurrency: usize,
) -> Result<(Vec<Occurrence>, u64), SnapshotError> {
    let mut needed = Vec::with_capacity(occurrences.len());
    let mut jobs: Vec<Vec<Occurrence>> = Vec::new();
    let mut batch: Vec<Occurrence> = Vec::new();
    let mut batch_bytes = 0;
    for o in occurrences {
        let len = chunk_len(&manifest, o.chunk);
        let old_len = files.get(o.file as usize).map_or(0, |f| f.old_len);
        if len == 0 || o.offset + len > old_len {
            needed.push(o);
            continue;
        }
        if batch
            .last()
            .is_some_and(|last| last.file != o.file || batch_bytes + len > CHECK_BATCH)
        {
            jobs.push(std::mem::take(&mut batch));
            batch_bytes = 0;
        }
        batch_bytes += len;
        batch.push(o);
    }
    if !batch.is_empty() {
        jobs.push(batch);
    }
    let (wrong, skipped) = stream::iter(jobs)
        .map(|job| {
            let manifest = Arc::clone(&manifest);
            let files = Arc::clone(&files);
            blocking(move || check_on_disk(&manifest, &files, job))
        })
        .buffer_unordered(concurrency)
        .try_fold(
            (Vec::new(), 0u64),
            |(mut wrong, skipped), (bad, ok)| async move {
                wrong.extend(bad);
                Ok((wrong, skipped + ok))
            },
        )
        .await?;
    needed.extend(wrong);
    Ok((needed, skipped))
}

/// Reads `job` (occurrences of one file, in offset order) back from disk; returns those
/// whose bytes do not hash to their chunk, and the bytes of those that do.
fn check_on_disk(
    manifest: &Manifest,
    files: &[FileSlot],
    job: Vec<Occurrence>,
) -> Result<(Vec<Occurrence>, u64), SnapshotError> {
    let Some(slot) = job.first().and_then(|o| files.get(o.file as usize)) else {
        return Ok((Vec::new(), 0));
    };
    let file = File::open(&slot.path).map_err(|e| SnapshotError::io("open", &slot.path, e))?;
    let mut wrong = Vec::new();
    let mut right_bytes = 0;
    let mut buffer = Vec::new();
    let mut rest = job.as_slice();
    while let Some(first) = rest.first() {
        // Consecutive occurrences read in one go, up to CHECK_READ (or one larger chunk).
        let mut end = first.offset + chunk_len(manifest, first.chunk);
        let mut count = 1;
        while let Some(next) = rest.get(count) {
            let next_end = next.offset + chunk_len(manifest, next.chunk);
            if next.offset != end || next_end - first.offset > CHECK_READ {
                break;
            }
            end = next_end;
            count += 1;
        }
        let (group, tail) = rest.split_at(count);
        rest = tail;
        let span = usize::try_from(end - first.offset).map_err(|_| {
            SnapshotError::io("read back", &slot.path, io::Error::other("chunk too large"))
        })?;
        buffer.resize(span, 0);
        match file.read_exact_at(&mut buffer, first.offset) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                wrong.extend_from_slice(group);
                continue;
            }
            Err(e) => return Err(SnapshotError::io("read back", &slot.path, e)),
        }
        for o in group {
            let Some(location) = manifest.chunks.get(o.chunk as usize) else {
                continue;
            };
            let start = (o.offset - first.offset) as usize;
            let bytes = buffer
                .get(start..start + location.len as usize)
                .unwrap_or(&[]);
            if ChunkHash::of(bytes) == location.hash {
                right_bytes += location.len;
            } else {
                wrong.push(*o);
            }
        }
    }
    Ok((wrong, right_bytes))
}

/// Where the bytes of one write come from.
#[derive(Debug)]
enum Source {
    /// `[start, start + len)` of the range's response: a raw blob, merged with neighbours.
    Body(usize),
    /// A decoded (zstd) chunk.
    Decoded(Bytes),
}

#[derive(Debug)]
struct Write {
    file: u32,
    offset: u64,
    len: u64,
    source: Source,
}

/// Step 4 of the module doc, on the blocking pool: checks the blobs of `range` and writes
/// each to every place that needs it, [`WRITE_GROUP`] bytes at a time (every blob of a
/// group is checked before any of it is written). Returns the bytes written.
fn apply_range(plan: &Plan, range: &RangePlan, body: Bytes) -> Result<u64, SnapshotError> {
    let mut written = 0;
    let mut open: Option<(u32, File)> = None;
    let mut writes = Vec::new();
    let mut group_bytes = 0;
    let last = range.chunks.len().saturating_sub(1);
    for (position, &chunk) in range.chunks.iter().enumerate() {
        if let Some(location) = plan.manifest.chunks.get(chunk as usize) {
            let raw = check_blob(location, range.start, &body)
                .map_err(|problem| plan.bad_chunk(chunk, problem))?;
            for target in plan.targets(chunk) {
                let source = if location.zstd {
                    Source::Decoded(raw.clone())
                } else {
                    Source::Body((location.offset - range.start) as usize)
                };
                writes.push(Write {
                    file: target.file,
                    offset: target.offset,
                    len: location.len,
                    source,
                });
                group_bytes += location.len;
            }
        }
        if group_bytes >= WRITE_GROUP || position == last {
            written += write_group(plan, &body, std::mem::take(&mut writes), &mut open)?;
            group_bytes = 0;
        }
    }
    Ok(written)
}

/// Writes checked blobs: sorted by place, raw blobs adjacent both in the response and in
/// a file merged into one positioned write. `open` keeps the last file open between
/// groups. Returns the bytes written.
fn write_group(
    plan: &Plan,
    body: &Bytes,
    mut writes: Vec<Write>,
    open: &mut Option<(u32, File)>,
) -> Result<u64, SnapshotError> {
    writes.sort_unstable_by_key(|w| (w.file, w.offset));
    let mut merged: Vec<Write> = Vec::with_capacity(writes.len());
    for write in writes {
        if let Some(last) = merged.last_mut()
            && last.file == write.file
            && last.offset + last.len == write.offset
            && let (Source::Body(a), Source::Body(b)) = (&last.source, &write.source)
            && *a as u64 + last.len == *b as u64
        {
            last.len += write.len;
            continue;
        }
        merged.push(write);
    }

    let mut written = 0;
    for write in merged {
        let Some(slot) = plan.files.get(write.file as usize) else {
            continue;
        };
        let file = match open {
            Some((index, file)) if *index == write.file => file,
            _ => {
                let file = open_for_writing(&slot.path, false)?;
                &open.insert((write.file, file)).1
            }
        };
        let data = match &write.source {
            Source::Body(start) => body.slice(*start..*start + write.len as usize),
            Source::Decoded(bytes) => bytes.clone(),
        };
        file.write_all_at(&data, write.offset)
            .map_err(|e| SnapshotError::io("write", &slot.path, e))?;
        written += write.len;
    }
    Ok(written)
}

/// Step 5 of the module doc: modes, then the marker.
fn finish_tree(to: &Path, manifest: &Manifest) -> Result<(), SnapshotError> {
    let mut modes: Vec<(usize, &str, u32)> = manifest
        .entries
        .iter()
        .filter_map(|entry| match entry.kind {
            // Files count as deeper than any directory, so they go first.
            EntryKind::File { mode, .. } => Some((usize::MAX, entry.path.as_str(), mode)),
            EntryKind::Dir { mode } => {
                Some((entry.path.matches('/').count(), entry.path.as_str(), mode))
            }
            EntryKind::Symlink { .. } => None,
        })
        .collect();
    modes.sort_unstable_by_key(|m| std::cmp::Reverse(m.0));
    for (_, relative, mode) in modes {
        let path = to.join(relative);
        fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777))
            .map_err(|e| SnapshotError::io("set the mode of", path, e))?;
    }
    let marker = to.join(RESTORE_MARKER);
    fs::write(&marker, manifest.id.as_bytes()).map_err(|e| SnapshotError::io("write", marker, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_take_files_in_turn_and_each_file_front_to_back() {
        let places = vec![
            Some((1, 0)),
            Some((0, 20)),
            Some((0, 0)),
            Some((1, 10)),
            Some((0, 10)),
            Some((2, 0)),
            None,
        ];
        let order = interleave_by_file(places, |place| *place);
        assert_eq!(
            order,
            vec![
                None,
                Some((0, 0)),
                Some((1, 0)),
                Some((2, 0)),
                Some((0, 10)),
                Some((1, 10)),
                Some((0, 20)),
            ]
        );
    }

    #[test]
    fn defaults_bound_memory_to_128_mib() {
        let options = RestoreOptions::default();
        assert_eq!(options.concurrency as u64 * options.max_range, 128 << 20);
    }
}
