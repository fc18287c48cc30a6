//! `FsObjectStore`: the `ObjectStore` port on the local file system (`file:///dir` URLs).
//!
//! # Layout
//!
//! ```text
//! <root>/<key>                       one file per object; `/` in a key makes folders
//! <root>/.tmp/<unique>               files being written, and claimed uploads being removed
//! <root>/.multipart/<upload id>/key  the key an upload is for
//! <root>/.multipart/<upload id>/<n>  part n
//! ```
//!
//! `.tmp` and `.multipart` are inside the root so that renames out of them stay on one file
//! system (a rename across file systems is a copy, not atomic). They are not keys: listings
//! skip them and keys whose first segment is one of them are rejected.
//!
//! # Keys
//!
//! A key is a relative `/`-separated path: not empty, no leading `/`, no empty, `.` or `..`
//! segments, no NUL byte, and not inside `.tmp`/`.multipart`. Anything else is rejected with
//! [`ObjectError::Backend`] naming the problem, so no key can reach outside the root. A file
//! system cannot hold both an object `a` and an object `a/b` (S3 can); such a put fails with
//! an error that says so.
//!
//! # Atomicity
//!
//! - `put` writes the body to a temp file in `.tmp`, fsyncs it, and renames it over the
//!   key, then fsyncs the folder: a reader opens either the old file or the new one, never a
//!   half-written one, and a crash leaves the old object or the new one.
//! - `put_if_absent` writes the temp file the same way and hard-links it to the key:
//!   `link(2)` fails if the target exists, atomically and on every POSIX file system, so of
//!   concurrent creators (threads or processes) exactly one wins. The temp name is removed
//!   afterwards.
//! - `complete_multipart` assembles the parts into a temp file (checking sizes and etags),
//!   claims the upload by renaming its folder into `.tmp` (so a concurrent completion or
//!   abort of the same upload loses cleanly), then renames the assembled file over the key.
//!   `abort_multipart` claims the folder the same way before deleting it. If the object
//!   cannot be placed after the claim (an object/folder conflict, see Keys), the upload is
//!   gone as after an abort and the error says why.
//! - A crash can leave files in `.tmp`; nothing reads them, and [`FsObjectStore::open`]
//!   removes the ones older than [`STALE_TEMP_AGE`].
//!
//! # Etags
//!
//! An object's etag is `<size>-<mtime in ns>-<inode>` in hex, read from the file's metadata:
//! it changes whenever the object is replaced (the replacement is a new file, with a new
//! inode and modification time) and `head` and `list` get it without reading the object.
//! A part's etag is the 64-bit FNV-1a hash of its bytes in hex, checked again when the part
//! is read back at completion, so a part that changed on disk is caught. No new dependency:
//! the etag only has to tell versions apart, it is not a checksum for integrity (chunks are
//! content-addressed with BLAKE3 by their users).
//!
//! # Listing
//!
//! `list` walks the folder the prefix points into, sorts the keys (ascending byte order, as
//! S3), and pages them; the continuation token is the last key returned. Each page costs a
//! walk of that folder: fine for the local mode, which holds one fleet's snapshots.
//!
//! # Error policy
//!
//! A missing object is `NotFound` (also when a folder stands where the key's file would be,
//! or a file where one of its folders would be); an unknown or foreign upload is
//! `InvalidMultipart`; any other I/O error is `Backend` with the path and the operation,
//! which is not worth a retry (a full disk or a permission problem does not fix itself).
//! All file-system calls run on tokio's blocking pool.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use nodefleet_ports::model::unique_suffix;
use nodefleet_ports::objects::{
    ByteRange, CompletedPart, ListPage, MAX_KEYS_PER_PAGE, MultipartUpload, ObjectError,
    ObjectMeta, ObjectStore, check_part, check_part_list, check_part_size, validate_key,
};
use nodefleet_ports::{StoreUrl, Timestamp};

/// Where files being written live, under the root.
const TEMP_DIR: &str = ".tmp";
/// Where multipart uploads in progress live, under the root.
const MULTIPART_DIR: &str = ".multipart";
/// The file in an upload's folder that names its key.
const UPLOAD_KEY_FILE: &str = "key";
/// Temp files older than this are leftovers of a crash: no write takes an hour without
/// touching its file (a multipart completion appends continuously).
pub const STALE_TEMP_AGE: Duration = Duration::from_secs(60 * 60);
/// How often a write retries when a folder it just created was removed under it by a
/// concurrent delete (which prunes empty folders). Once is almost always enough.
const PARENT_RACE_RETRIES: usize = 5;
/// The buffer for copying parts into the assembled object.
const COPY_BUFFER: usize = 1024 * 1024;

/// Why an `FsObjectStore` could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum FsStoreError {
    #[error("FsObjectStore needs a file:// URL, got {0}")]
    NotAFileUrl(String),
    #[error("cannot prepare the object store folder {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The `ObjectStore` on a local folder; see the module doc. Cheap to clone.
#[derive(Debug, Clone)]
pub struct FsObjectStore {
    root: PathBuf,
}

impl FsObjectStore {
    /// Opens (creating if needed) the store rooted at `root`, and removes temp files a
    /// crash left behind.
    pub fn open(root: impl Into<PathBuf>) -> Result<FsObjectStore, FsStoreError> {
        let root = root.into();
        for dir in [root.clone(), root.join(TEMP_DIR), root.join(MULTIPART_DIR)] {
            fs::create_dir_all(&dir).map_err(|source| FsStoreError::Io { path: dir, source })?;
        }
        let store = FsObjectStore { root };
        store.remove_stale_temp_files();
        Ok(store)
    }

    /// Opens the store a `file://` URL names.
    pub fn from_url(url: &StoreUrl) -> Result<FsObjectStore, FsStoreError> {
        match url {
            StoreUrl::File { root } => FsObjectStore::open(root.clone()),
            StoreUrl::S3 { .. } => Err(FsStoreError::NotAFileUrl(url.to_string())),
        }
    }

    /// The folder the objects live in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn remove_stale_temp_files(&self) {
        let Ok(entries) = fs::read_dir(self.root.join(TEMP_DIR)) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let stale = entry
                .metadata()
                .and_then(|meta| meta.modified())
                .is_ok_and(|modified| {
                    now.duration_since(modified).unwrap_or_default() > STALE_TEMP_AGE
                });
            if stale {
                // Best effort: another process may be removing it too.
                let path = entry.path();
                let _ = fs::remove_file(&path).or_else(|_| fs::remove_dir_all(&path));
            }
        }
    }

    /// Runs `work` on a copy of the paths on tokio's blocking pool.
    async fn blocking<T, F>(&self, work: F) -> Result<T, ObjectError>
    where
        T: Send + 'static,
        F: FnOnce(Paths) -> Result<T, ObjectError> + Send + 'static,
    {
        let paths = Paths {
            root: self.root.clone(),
        };
        tokio::task::spawn_blocking(move || work(paths))
            .await
            .map_err(|error| ObjectError::Backend {
                message: format!("file-system task failed: {error}"),
            })?
    }
}

/// The blocking half: every method here does file-system calls.
struct Paths {
    root: PathBuf,
}

impl Paths {
    fn object(&self, key: &str) -> Result<PathBuf, ObjectError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    fn temp(&self) -> PathBuf {
        self.root.join(TEMP_DIR).join(unique_suffix())
    }

    fn upload_dir(&self, upload: &MultipartUpload) -> Result<PathBuf, ObjectError> {
        let valid = !upload.upload_id.is_empty()
            && upload
                .upload_id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b'-');
        if !valid {
            return Err(ObjectError::invalid_multipart(
                &upload.key,
                format!("{:?} is not an upload id of this store", upload.upload_id),
            ));
        }
        Ok(self.root.join(MULTIPART_DIR).join(&upload.upload_id))
    }

    /// The upload's folder, after checking the upload exists and is for its key.
    fn open_upload(&self, upload: &MultipartUpload) -> Result<PathBuf, ObjectError> {
        let dir = self.upload_dir(upload)?;
        match fs::read_to_string(dir.join(UPLOAD_KEY_FILE)) {
            Ok(key) if key == upload.key => Ok(dir),
            Ok(other) => Err(ObjectError::invalid_multipart(
                &upload.key,
                format!("upload {} is for key {other:?}", upload.upload_id),
            )),
            Err(error) if is_missing(&error) => Err(no_such_upload(upload)),
            Err(error) => Err(io_error("read the upload key of", &dir, error)),
        }
    }

    /// Moves the upload's folder into `.tmp` so nobody else can use it, and returns where.
    fn claim_upload(&self, upload: &MultipartUpload, dir: &Path) -> Result<PathBuf, ObjectError> {
        let claimed = self.temp();
        match fs::rename(dir, &claimed) {
            Ok(()) => Ok(claimed),
            Err(error) if is_missing(&error) => Err(no_such_upload(upload)),
            Err(error) => Err(io_error("claim the upload folder", dir, error)),
        }
    }

    /// Writes `body` to a new temp file, fsynced, and returns its path and metadata.
    fn write_temp(&self, body: &[u8]) -> Result<(PathBuf, fs::Metadata), ObjectError> {
        let temp = self.temp();
        let written = File::create(&temp).and_then(|mut file| {
            file.write_all(body)?;
            file.sync_all()?;
            file.metadata()
        });
        match written {
            Ok(meta) => Ok((temp, meta)),
            Err(error) => {
                let _ = fs::remove_file(&temp);
                Err(io_error("write", &temp, error))
            }
        }
    }

    /// Puts the temp file at `target` with `place` (rename or hard link), creating the
    /// key's folders, and retrying if a concurrent delete pruned a folder in between.
    fn place(
        &self,
        key: &str,
        temp: &Path,
        target: &Path,
        place: fn(&Path, &Path) -> io::Result<()>,
    ) -> Result<(), ObjectError> {
        let parent = target.parent().unwrap_or(&self.root);
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Err(error) = fs::create_dir_all(parent) {
                return Err(match error.kind() {
                    io::ErrorKind::AlreadyExists | io::ErrorKind::NotADirectory => {
                        folder_conflict(key, parent)
                    }
                    _ => io_error("create the folder", parent, error),
                });
            }
            match place(temp, target) {
                Ok(()) => break,
                Err(error)
                    if error.kind() == io::ErrorKind::NotFound && attempt < PARENT_RACE_RETRIES => {
                }
                Err(error) => {
                    return Err(match error.kind() {
                        _ if target.is_dir() => folder_conflict(key, target),
                        io::ErrorKind::AlreadyExists => ObjectError::AlreadyExists {
                            key: key.to_owned(),
                        },
                        io::ErrorKind::NotADirectory | io::ErrorKind::IsADirectory => {
                            folder_conflict(key, target)
                        }
                        _ => io_error("store the object at", target, error),
                    });
                }
            }
        }
        sync_dir(parent);
        Ok(())
    }

    /// Deletes the empty folders between `path` and the root, as S3 has no folders.
    fn prune_empty_parents(&self, path: &Path) {
        let mut dir = path.parent();
        while let Some(current) = dir {
            if current == self.root || !current.starts_with(&self.root) {
                break;
            }
            // Fails (and stops) as soon as a folder is not empty.
            if fs::remove_dir(current).is_err() {
                break;
            }
            dir = current.parent();
        }
    }

    fn put(&self, key: &str, body: &[u8]) -> Result<ObjectMeta, ObjectError> {
        let target = self.object(key)?;
        let (temp, meta) = self.write_temp(body)?;
        let placed = self.place(key, &temp, &target, |from, to| fs::rename(from, to));
        if placed.is_err() {
            let _ = fs::remove_file(&temp);
        }
        placed?;
        Ok(object_meta(key, &meta))
    }

    fn put_if_absent(&self, key: &str, body: &[u8]) -> Result<ObjectMeta, ObjectError> {
        let target = self.object(key)?;
        let (temp, meta) = self.write_temp(body)?;
        let placed = self.place(key, &temp, &target, |from, to| fs::hard_link(from, to));
        // The object (if placed) keeps its own name for the file; the temp name goes.
        let _ = fs::remove_file(&temp);
        placed?;
        Ok(object_meta(key, &meta))
    }

    fn get(&self, key: &str, range: Option<ByteRange>) -> Result<Bytes, ObjectError> {
        let path = self.object(key)?;
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if is_missing(&error) => return Err(not_found(key)),
            Err(error) => return Err(io_error("open", &path, error)),
        };
        let meta = file
            .metadata()
            .map_err(|error| io_error("read the metadata of", &path, error))?;
        if !meta.is_file() {
            return Err(not_found(key));
        }
        let (start, len) = match range {
            None => (0, meta.len()),
            Some(range) => {
                let covered = range.clamp(meta.len()).ok_or(ObjectError::InvalidRange {
                    key: key.to_owned(),
                    start: range.start,
                    end: range.end,
                })?;
                (covered.start, covered.end - covered.start)
            }
        };
        let len = usize::try_from(len).map_err(|_| ObjectError::Backend {
            message: format!("{key}: {len} bytes do not fit in memory on this platform"),
        })?;
        let mut body = vec![0; len];
        file.seek(SeekFrom::Start(start))
            .and_then(|_| file.read_exact(&mut body))
            .map_err(|error| io_error("read", &path, error))?;
        Ok(body.into())
    }

    fn head(&self, key: &str) -> Result<Option<ObjectMeta>, ObjectError> {
        let path = self.object(key)?;
        match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(Some(object_meta(key, &meta))),
            Ok(_) => Ok(None),
            Err(error) if is_missing(&error) => Ok(None),
            Err(error) => Err(io_error("read the metadata of", &path, error)),
        }
    }

    fn list(
        &self,
        prefix: &str,
        continuation: Option<&str>,
        max_keys: u32,
    ) -> Result<ListPage, ObjectError> {
        let page_size = max_keys.clamp(1, MAX_KEYS_PER_PAGE) as usize;
        // Walk only the folder the prefix points into: its part up to the last `/`, when
        // that part is itself a valid key (otherwise nothing under the root can match it
        // more narrowly than the root does).
        let folder = match prefix.rfind('/') {
            Some(slash) if check_key(&prefix[..slash]).is_ok() => &prefix[..slash],
            _ => "",
        };
        let mut keys = Vec::new();
        walk(&self.root, &self.root.join(folder), folder, &mut keys)?;
        keys.retain(|key| {
            key.starts_with(prefix) && continuation.is_none_or(|token| key.as_str() > token)
        });
        keys.sort_unstable();
        let more = keys.len() > page_size;
        keys.truncate(page_size);
        let mut objects = Vec::with_capacity(keys.len());
        for key in &keys {
            // An object deleted since the walk is simply not on the page.
            if let Some(meta) = self.head(key)? {
                objects.push(meta);
            }
        }
        let next = if more { keys.last().cloned() } else { None };
        Ok(ListPage { objects, next })
    }

    fn delete(&self, key: &str) -> Result<(), ObjectError> {
        let path = self.object(key)?;
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => return Ok(()),
            Ok(_) => {}
            Err(error) if is_missing(&error) => return Ok(()),
            Err(error) => return Err(io_error("read the metadata of", &path, error)),
        }
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if is_missing(&error) => return Ok(()),
            Err(error) => return Err(io_error("delete", &path, error)),
        }
        self.prune_empty_parents(&path);
        Ok(())
    }

    fn create_multipart(&self, key: &str) -> Result<MultipartUpload, ObjectError> {
        check_key(key)?;
        let upload_id = unique_suffix();
        // Prepared in `.tmp` and renamed into place, so the upload appears complete.
        let staging = self.temp();
        let target = self.root.join(MULTIPART_DIR).join(&upload_id);
        let created = fs::create_dir(&staging)
            .and_then(|()| fs::write(staging.join(UPLOAD_KEY_FILE), key))
            .and_then(|()| fs::rename(&staging, &target));
        if let Err(error) = created {
            let _ = fs::remove_dir_all(&staging);
            return Err(io_error("create the upload folder", &target, error));
        }
        Ok(MultipartUpload {
            key: key.to_owned(),
            upload_id,
        })
    }

    fn upload_part(
        &self,
        upload: &MultipartUpload,
        number: u32,
        body: &[u8],
    ) -> Result<CompletedPart, ObjectError> {
        check_part(&upload.key, number, body.len() as u64)?;
        let dir = self.open_upload(upload)?;
        let (temp, _) = self.write_temp(body)?;
        // Replacing a part number again is allowed, as in S3.
        if let Err(error) = fs::rename(&temp, dir.join(number.to_string())) {
            let _ = fs::remove_file(&temp);
            return Err(if is_missing(&error) {
                no_such_upload(upload)
            } else {
                io_error("store part in", &dir, error)
            });
        }
        Ok(CompletedPart {
            number,
            etag: content_etag(fnv1a(FNV_OFFSET_BASIS, body)),
        })
    }

    fn complete_multipart(
        &self,
        upload: &MultipartUpload,
        parts: &[CompletedPart],
    ) -> Result<ObjectMeta, ObjectError> {
        check_part_list(&upload.key, parts)?;
        let target = self.object(&upload.key)?;
        let dir = self.open_upload(upload)?;
        // Sizes first: cheap, and the commonest mistake.
        let mut part_files = Vec::with_capacity(parts.len());
        for (index, part) in parts.iter().enumerate() {
            let path = dir.join(part.number.to_string());
            let size = match fs::metadata(&path) {
                Ok(meta) => meta.len(),
                Err(error) if is_missing(&error) => {
                    return Err(ObjectError::invalid_multipart(
                        &upload.key,
                        format!("part {} was not uploaded (S3: InvalidPart)", part.number),
                    ));
                }
                Err(error) => return Err(io_error("read the metadata of", &path, error)),
            };
            check_part_size(&upload.key, part.number, size, index + 1 == parts.len())?;
            part_files.push((part, path));
        }
        let temp = self.temp();
        let assembled = assemble(&upload.key, &temp, part_files);
        let meta = match assembled {
            Ok(meta) => meta,
            Err(error) => {
                let _ = fs::remove_file(&temp);
                return Err(error);
            }
        };
        let claimed = match self.claim_upload(upload, &dir) {
            Ok(claimed) => claimed,
            Err(error) => {
                let _ = fs::remove_file(&temp);
                return Err(error);
            }
        };
        let placed = self.place(&upload.key, &temp, &target, |from, to| fs::rename(from, to));
        let _ = fs::remove_dir_all(&claimed);
        if placed.is_err() {
            let _ = fs::remove_file(&temp);
        }
        placed?;
        Ok(object_meta(&upload.key, &meta))
    }

    fn abort_multipart(&self, upload: &MultipartUpload) -> Result<(), ObjectError> {
        let dir = self.open_upload(upload)?;
        let claimed = self.claim_upload(upload, &dir)?;
        fs::remove_dir_all(&claimed).map_err(|error| io_error("delete", &claimed, error))
    }
}

/// Copies the parts into a new file at `temp`, checking each part's etag against its bytes,
/// and returns the file's metadata after an fsync.
fn assemble(
    key: &str,
    temp: &Path,
    parts: Vec<(&CompletedPart, PathBuf)>,
) -> Result<fs::Metadata, ObjectError> {
    let mut output = File::create(temp).map_err(|error| io_error("create", temp, error))?;
    let mut buffer = vec![0; COPY_BUFFER];
    for (part, path) in parts {
        // One part open at a time: an upload can have 10,000 of them.
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if is_missing(&error) => {
                return Err(ObjectError::invalid_multipart(
                    key,
                    format!("part {} vanished: the upload was aborted", part.number),
                ));
            }
            Err(error) => return Err(io_error("open", &path, error)),
        };
        let mut hash = FNV_OFFSET_BASIS;
        loop {
            let read = file
                .read(&mut buffer)
                .map_err(|error| io_error("read", &path, error))?;
            if read == 0 {
                break;
            }
            hash = fnv1a(hash, &buffer[..read]);
            output
                .write_all(&buffer[..read])
                .map_err(|error| io_error("write", temp, error))?;
        }
        if content_etag(hash) != part.etag {
            return Err(ObjectError::invalid_multipart(
                key,
                format!(
                    "part {} has etag {}, not {} (S3: InvalidPart)",
                    part.number,
                    content_etag(hash),
                    part.etag
                ),
            ));
        }
    }
    output
        .sync_all()
        .and_then(|()| output.metadata())
        .map_err(|error| io_error("write", temp, error))
}

/// Collects the keys of the files under `dir` (whose key prefix is `folder`), skipping the
/// store's own folders at the root.
fn walk(root: &Path, dir: &Path, folder: &str, keys: &mut Vec<String>) -> Result<(), ObjectError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if is_missing(&error) => return Ok(()),
        Err(error) => return Err(io_error("list", dir, error)),
    };
    for entry in entries {
        let entry = entry.map_err(|error| io_error("list", dir, error))?;
        // Names that are not UTF-8 cannot be keys: something else put them there.
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if dir == root && (name == TEMP_DIR || name == MULTIPART_DIR) {
            continue;
        }
        let key = if folder.is_empty() {
            name
        } else {
            format!("{folder}/{name}")
        };
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => walk(root, &entry.path(), &key, keys)?,
            Ok(kind) if kind.is_file() => keys.push(key),
            // Symbolic links and special files are not objects; an entry that vanished
            // since `read_dir` is not either.
            _ => {}
        }
    }
    Ok(())
}

#[async_trait]
impl ObjectStore for FsObjectStore {
    async fn put(&self, key: &str, body: Bytes) -> Result<ObjectMeta, ObjectError> {
        let key = key.to_owned();
        self.blocking(move |paths| paths.put(&key, &body)).await
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<ObjectMeta, ObjectError> {
        let key = key.to_owned();
        self.blocking(move |paths| paths.put_if_absent(&key, &body))
            .await
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<Bytes, ObjectError> {
        let key = key.to_owned();
        self.blocking(move |paths| paths.get(&key, range)).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, ObjectError> {
        let key = key.to_owned();
        self.blocking(move |paths| paths.head(&key)).await
    }

    async fn list(
        &self,
        prefix: &str,
        continuation: Option<&str>,
        max_keys: u32,
    ) -> Result<ListPage, ObjectError> {
        let prefix = prefix.to_owned();
        let continuation = continuation.map(str::to_owned);
        self.blocking(move |paths| paths.list(&prefix, continuation.as_deref(), max_keys))
            .await
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        let key = key.to_owned();
        self.blocking(move |paths| paths.delete(&key)).await
    }

    async fn create_multipart(&self, key: &str) -> Result<MultipartUpload, ObjectError> {
        let key = key.to_owned();
        self.blocking(move |paths| paths.create_multipart(&key))
            .await
    }

    async fn upload_part(
        &self,
        upload: &MultipartUpload,
        number: u32,
        body: Bytes,
    ) -> Result<CompletedPart, ObjectError> {
        let upload = upload.clone();
        self.blocking(move |paths| paths.upload_part(&upload, number, &body))
            .await
    }

    async fn complete_multipart(
        &self,
        upload: &MultipartUpload,
        parts: &[CompletedPart],
    ) -> Result<ObjectMeta, ObjectError> {
        let upload = upload.clone();
        let parts = parts.to_vec();
        self.blocking(move |paths| paths.complete_multipart(&upload, &parts))
            .await
    }

    async fn abort_multipart(&self, upload: &MultipartUpload) -> Result<(), ObjectError> {
        let upload = upload.clone();
        self.blocking(move |paths| paths.abort_multipart(&upload))
            .await
    }
}

/// Rejects keys that are not relative paths inside the root: the port's rules
/// ([`validate_key`]) plus the folder names this store keeps for itself.
fn check_key(key: &str) -> Result<(), ObjectError> {
    validate_key(key)?;
    let first = key.split('/').next().unwrap_or_default();
    if first == TEMP_DIR || first == MULTIPART_DIR {
        return Err(ObjectError::InvalidKey {
            key: key.to_owned(),
            reason: "its first segment is reserved for the store's own files",
        });
    }
    Ok(())
}

fn object_meta(key: &str, meta: &fs::Metadata) -> ObjectMeta {
    let modified_nanos = meta
        .modified()
        .ok()
        .and_then(|time| time.duration_since(SystemTime::UNIX_EPOCH).ok())
        .unwrap_or_default();
    ObjectMeta {
        key: key.to_owned(),
        size: meta.len(),
        etag: Some(format!(
            "{:x}-{:x}-{:x}",
            meta.len(),
            modified_nanos.as_nanos(),
            meta.ino()
        )),
        last_modified: Some(Timestamp::from_millis(
            u64::try_from(modified_nanos.as_millis()).unwrap_or(u64::MAX),
        )),
    }
}

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Continues a 64-bit FNV-1a hash over `bytes` (start with [`FNV_OFFSET_BASIS`]).
fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    })
}

fn content_etag(hash: u64) -> String {
    format!("{hash:016x}")
}

/// Makes a rename or link in `dir` durable. Best effort: the object is in place either
/// way, and a folder that cannot be opened for syncing is no reason to fail the write.
fn sync_dir(dir: &Path) {
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
}

/// A missing file, or a file where a folder of the path should be.
fn is_missing(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

fn folder_conflict(key: &str, path: &Path) -> ObjectError {
    ObjectError::Backend {
        message: format!(
            "cannot store {key:?}: an object and a folder of the same name conflict at {} \
             (a file-system store cannot hold both `a` and `a/b`)",
            path.display()
        ),
    }
}

fn not_found(key: &str) -> ObjectError {
    ObjectError::NotFound {
        key: key.to_owned(),
    }
}

fn no_such_upload(upload: &MultipartUpload) -> ObjectError {
    ObjectError::invalid_multipart(
        &upload.key,
        format!(
            "no upload {} (it was completed, aborted, or never created; S3: NoSuchUpload)",
            upload.upload_id
        ),
    )
}

fn io_error(action: &str, path: &Path, error: io::Error) -> ObjectError {
    ObjectError::Backend {
        message: format!("cannot {action} {}: {error}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_stay_inside_the_root() {
        for key in [
            "a",
            "a/b/c",
            "chunks/ab/cd/ef",
            ".hidden",
            "a/.tmp/b",
            "a..b",
        ] {
            assert!(check_key(key).is_ok(), "{key}");
        }
        for key in [
            "",
            "/etc/passwd",
            "a//b",
            "a/",
            "..",
            "../x",
            "a/../../x",
            "./a",
            "a\0b",
            ".tmp/x",
            ".multipart/x",
            ".tmp",
        ] {
            assert!(check_key(key).is_err(), "{key:?}");
        }
    }

    #[test]
    fn part_etags_are_fnv1a() {
        // Published FNV-1a 64 test vectors, and incremental hashing equals one pass.
        assert_eq!(
            content_etag(fnv1a(FNV_OFFSET_BASIS, b"")),
            "cbf29ce484222325"
        );
        assert_eq!(
            content_etag(fnv1a(FNV_OFFSET_BASIS, b"a")),
            "af63dc4c8601ec8c"
        );
        assert_eq!(
            fnv1a(fnv1a(FNV_OFFSET_BASIS, b"foo"), b"bar"),
            fnv1a(FNV_OFFSET_BASIS, b"foobar")
        );
    }
}
