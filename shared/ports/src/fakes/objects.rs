//! `MemoryObjectStore`: an in-memory object store that keeps S3's rules, for scenario tests.
//!
//! The model:
//!
//! - **Objects** live in a sorted map from key to body, so listings come out in ascending
//!   byte order and a continuation token is simply the last key of the previous page.
//! - **Keys** must be relative `/`-separated paths: not empty, no leading `/`, no empty, `.`
//!   or `..` segments. S3 would take such keys, but the file-system store cannot, and the
//!   fake must not accept a key the local store would reject.
//! - **Conditional create**: every operation holds the one lock for its whole check-and-write,
//!   so of concurrent `put_if_absent` calls on one key exactly one wins.
//! - **Multipart** follows S3: part numbers 1..=[`MAX_PARTS`](crate::objects::MAX_PARTS), parts at most
//!   [`MAX_PART_SIZE`](crate::objects::MAX_PART_SIZE), completion names at least one part, in strictly ascending order, each
//!   with the etag `upload_part` returned, and every part but the last is at least
//!   [`MIN_PART_SIZE`](crate::objects::MIN_PART_SIZE). A failed completion leaves the upload in place (S3 does, so the caller
//!   can abort it); a completed or aborted upload is gone, and using it again is
//!   [`ObjectError::InvalidMultipart`] (S3's `NoSuchUpload`). An upload is invisible until
//!   it completes.
//! - **Etags** are a 64-bit FNV-1a hash of the body in hex; a multipart object's etag is the
//!   hash of its parts' etags followed by `-<part count>`, the shape S3 gives them.
//!
//! The handle is cheap to clone; clones share one state, so a test keeps one to inspect what
//! the code under test stored ([`MemoryObjectStore::keys`], [`MemoryObjectStore::object`],
//! [`MemoryObjectStore::uploads_in_progress`]).

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use crate::Timestamp;
use crate::objects::{
    ByteRange, CompletedPart, ListPage, MAX_KEYS_PER_PAGE, MultipartUpload, ObjectError,
    ObjectMeta, ObjectStore, check_part, check_part_list, check_part_size, validate_key,
};

/// An in-memory [`ObjectStore`]; see the module doc.
#[derive(Debug, Clone, Default)]
pub struct MemoryObjectStore {
    state: Arc<Mutex<MemoryObjects>>,
}

#[derive(Debug, Default)]
struct MemoryObjects {
    objects: BTreeMap<String, StoredObject>,
    uploads: HashMap<String, PendingUpload>,
    uploads_created: u64,
}

#[derive(Debug)]
struct StoredObject {
    body: Bytes,
    etag: String,
    last_modified: Timestamp,
}

#[derive(Debug)]
struct PendingUpload {
    key: String,
    parts: BTreeMap<u32, StoredPart>,
}

#[derive(Debug)]
struct StoredPart {
    body: Bytes,
    etag: String,
}

impl MemoryObjectStore {
    pub fn new() -> MemoryObjectStore {
        MemoryObjectStore::default()
    }

    /// Every stored key, ascending.
    pub fn keys(&self) -> Vec<String> {
        self.lock().objects.keys().cloned().collect()
    }

    /// The body stored under `key`, if any.
    pub fn object(&self, key: &str) -> Option<Bytes> {
        self.lock()
            .objects
            .get(key)
            .map(|object| object.body.clone())
    }

    /// How many objects are stored.
    pub fn len(&self) -> usize {
        self.lock().objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many multipart uploads were created and neither completed nor aborted: parts
    /// S3 would keep charging for.
    pub fn uploads_in_progress(&self) -> usize {
        self.lock().uploads.len()
    }

    fn lock(&self) -> MutexGuard<'_, MemoryObjects> {
        // A panic while holding the lock cannot leave the maps half-updated (every update
        // is a single insert or remove), so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl MemoryObjects {
    fn store(&mut self, key: &str, body: Bytes, etag: String) -> ObjectMeta {
        let object = StoredObject {
            body,
            etag,
            last_modified: Timestamp::now(),
        };
        let meta = meta_of(key, &object);
        self.objects.insert(key.to_owned(), object);
        meta
    }

    fn upload(&mut self, upload: &MultipartUpload) -> Result<&mut PendingUpload, ObjectError> {
        match self.uploads.get_mut(&upload.upload_id) {
            Some(pending) if pending.key == upload.key => Ok(pending),
            _ => Err(ObjectError::invalid_multipart(
                &upload.key,
                format!(
                    "no upload {} for this key (it was completed, aborted, or never created)",
                    upload.upload_id
                ),
            )),
        }
    }
}

#[async_trait]
impl ObjectStore for MemoryObjectStore {
    async fn put(&self, key: &str, body: Bytes) -> Result<ObjectMeta, ObjectError> {
        validate_key(key)?;
        let etag = content_etag(&body);
        Ok(self.lock().store(key, body, etag))
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<ObjectMeta, ObjectError> {
        validate_key(key)?;
        let etag = content_etag(&body);
        let mut state = self.lock();
        if state.objects.contains_key(key) {
            return Err(ObjectError::AlreadyExists {
                key: key.to_owned(),
            });
        }
        Ok(state.store(key, body, etag))
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<Bytes, ObjectError> {
        validate_key(key)?;
        let state = self.lock();
        let object = state
            .objects
            .get(key)
            .ok_or_else(|| ObjectError::NotFound {
                key: key.to_owned(),
            })?;
        let Some(range) = range else {
            return Ok(object.body.clone());
        };
        let size = object.body.len() as u64;
        let covered = range.clamp(size).ok_or_else(|| ObjectError::InvalidRange {
            key: key.to_owned(),
            start: range.start,
            end: range.end,
        })?;
        // `clamp` keeps the range within `size`, which is a `usize`.
        let start = usize::try_from(covered.start).unwrap_or(usize::MAX);
        let end = usize::try_from(covered.end).unwrap_or(usize::MAX);
        Ok(object.body.slice(start..end))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, ObjectError> {
        validate_key(key)?;
        Ok(self
            .lock()
            .objects
            .get(key)
            .map(|object| meta_of(key, object)))
    }

    async fn list(
        &self,
        prefix: &str,
        continuation: Option<&str>,
        max_keys: u32,
    ) -> Result<ListPage, ObjectError> {
        let page_size = max_keys.clamp(1, MAX_KEYS_PER_PAGE) as usize;
        let state = self.lock();
        // Start after the token when it is past the prefix, else at the prefix itself.
        let start = match continuation {
            Some(token) if token >= prefix => Bound::Excluded(token),
            _ => Bound::Included(prefix),
        };
        let mut matching = state
            .objects
            .range::<str, _>((start, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix));
        let objects: Vec<ObjectMeta> = matching
            .by_ref()
            .take(page_size)
            .map(|(key, object)| meta_of(key, object))
            .collect();
        let more = matching.next().is_some();
        let next = if more {
            objects.last().map(|meta| meta.key.clone())
        } else {
            None
        };
        Ok(ListPage { objects, next })
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        validate_key(key)?;
        self.lock().objects.remove(key);
        Ok(())
    }

    async fn create_multipart(&self, key: &str) -> Result<MultipartUpload, ObjectError> {
        validate_key(key)?;
        let mut state = self.lock();
        state.uploads_created += 1;
        let upload_id = format!("memory-upload-{}", state.uploads_created);
        state.uploads.insert(
            upload_id.clone(),
            PendingUpload {
                key: key.to_owned(),
                parts: BTreeMap::new(),
            },
        );
        Ok(MultipartUpload {
            key: key.to_owned(),
            upload_id,
        })
    }

    async fn upload_part(
        &self,
        upload: &MultipartUpload,
        number: u32,
        body: Bytes,
    ) -> Result<CompletedPart, ObjectError> {
        check_part(&upload.key, number, body.len() as u64)?;
        let etag = content_etag(&body);
        let mut state = self.lock();
        let pending = state.upload(upload)?;
        // Uploading a part number again replaces the part, as in S3.
        pending.parts.insert(
            number,
            StoredPart {
                body,
                etag: etag.clone(),
            },
        );
        Ok(CompletedPart { number, etag })
    }

    async fn complete_multipart(
        &self,
        upload: &MultipartUpload,
        parts: &[CompletedPart],
    ) -> Result<ObjectMeta, ObjectError> {
        check_part_list(&upload.key, parts)?;
        let mut state = self.lock();
        let pending = state.upload(upload)?;
        let mut body = BytesMut::new();
        let mut etags = String::new();
        for (index, part) in parts.iter().enumerate() {
            let stored = pending
                .parts
                .get(&part.number)
                .filter(|stored| stored.etag == part.etag)
                .ok_or_else(|| {
                    ObjectError::invalid_multipart(
                        &upload.key,
                        format!(
                            "part {} with etag {} was not uploaded (S3: InvalidPart)",
                            part.number, part.etag
                        ),
                    )
                })?;
            let is_last = index + 1 == parts.len();
            check_part_size(&upload.key, part.number, stored.body.len() as u64, is_last)?;
            body.extend_from_slice(&stored.body);
            etags.push_str(&stored.etag);
        }
        let etag = format!("{}-{}", content_etag(etags.as_bytes()), parts.len());
        state.uploads.remove(&upload.upload_id);
        Ok(state.store(&upload.key, body.freeze(), etag))
    }

    async fn abort_multipart(&self, upload: &MultipartUpload) -> Result<(), ObjectError> {
        let mut state = self.lock();
        state.upload(upload)?;
        state.uploads.remove(&upload.upload_id);
        Ok(())
    }
}

fn meta_of(key: &str, object: &StoredObject) -> ObjectMeta {
    ObjectMeta {
        key: key.to_owned(),
        size: object.body.len() as u64,
        etag: Some(object.etag.clone()),
        last_modified: Some(object.last_modified),
    }
}

/// 64-bit FNV-1a of `bytes`, in hex: a stable, dependency-free content tag.
fn content_etag(bytes: &[u8]) -> String {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = bytes.iter().fold(OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    });
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn clones_share_contents() {
        let store = MemoryObjectStore::new();
        let observer = store.clone();
        store
            .put("refs/latest", Bytes::from_static(b"v1"))
            .await
            .ok();
        assert_eq!(observer.keys(), vec!["refs/latest".to_owned()]);
        assert_eq!(
            observer.object("refs/latest"),
            Some(Bytes::from_static(b"v1"))
        );
        let upload = store.create_multipart("big").await.ok();
        assert!(upload.is_some());
        assert_eq!(observer.uploads_in_progress(), 1);
    }

    #[tokio::test]
    async fn bad_keys_are_rejected() {
        let store = MemoryObjectStore::new();
        for key in ["", "/abs", "a//b", "a/", "a/../b", "./a"] {
            let error = store.put(key, Bytes::new()).await.expect_err(key);
            assert!(error.to_string().contains("invalid object key"), "{error}");
        }
    }

    #[test]
    fn etags_are_stable_fnv1a() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(content_etag(b""), "cbf29ce484222325");
        assert_eq!(content_etag(b"a"), "af63dc4c8601ec8c");
    }
}
