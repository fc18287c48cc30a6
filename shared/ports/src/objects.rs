//! The `ObjectStore` port: chain-data chunks, manifests and refs.
//!
//! Keys are `/`-separated strings relative to the store's root (an `s3://bucket/prefix` or a
//! `file:///dir`); adapters add the prefix. Semantics every adapter keeps:
//!
//! - A reader never sees a half-written object: `put` and `complete_multipart` make the
//!   whole object appear at once.
//! - [`ObjectStore::put_if_absent`] is a conditional create: of concurrent creators of one
//!   key exactly one succeeds; the others get [`ObjectError::AlreadyExists`]. Refs use it.
//! - Multipart uploads follow S3's rules, so the local store cannot hide a bug S3 would
//!   catch: parts are numbered 1..=[`MAX_PARTS`], every part but the last is at least
//!   [`MIN_PART_SIZE`], completion names the parts in ascending order with the etags
//!   `upload_part` returned, and an aborted or completed upload is gone.
//! - `list` returns keys in ascending byte order, at most `max_keys` per page, and a
//!   continuation token while more remain.
//!
//! # Error policy
//!
//! [`ObjectError::is_retryable`] is true for throttling (S3 `SlowDown`) and unreachable
//! endpoints. `NotFound`, `AlreadyExists` and `InvalidRange` are answers. `InvalidKey`,
//! `InvalidMultipart` and `Backend` (missing bucket, access denied) are bugs or
//! configuration.

use async_trait::async_trait;
use bytes::Bytes;

use crate::Timestamp;

/// S3's smallest part (all but the last): 5 MiB.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3's largest part: 5 GiB.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// S3's most parts in one upload.
pub const MAX_PARTS: u32 = 10_000;
/// The most keys one listing page returns, whatever the caller asks: S3's `ListObjectsV2`
/// cap, so code that relies on bigger pages fails in every adapter as it would on S3.
pub const MAX_KEYS_PER_PAGE: u32 = 1000;

/// Checks that `key` is a relative `/`-separated path every adapter can store: not empty,
/// no leading `/`, no empty, `.` or `..` segment, no NUL. S3 would take more, but a key the
/// file-system store cannot hold safely must fail everywhere, not only in local mode.
pub fn validate_key(key: &str) -> Result<(), ObjectError> {
    let reason = if key.is_empty() {
        "it is empty"
    } else if key.starts_with('/') {
        "it is an absolute path"
    } else if key.split('/').any(str::is_empty) {
        "it has an empty segment ('//' or a trailing '/')"
    } else if key
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        "it has a '.' or '..' segment"
    } else if key.contains('\0') {
        "it contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(ObjectError::InvalidKey {
        key: key.to_owned(),
        reason,
    })
}

/// What a store knows about an object without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    /// Opaque version tag (S3's ETag, quotes stripped).
    pub etag: Option<String>,
    pub last_modified: Option<Timestamp>,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListPage {
    pub objects: Vec<ObjectMeta>,
    /// Pass this back to get the next page; `None` on the last page.
    pub next: Option<String>,
}

/// A byte range `[start, end)`. A range past the end is cut at the end; one that starts at
/// or past the end is [`ObjectError::InvalidRange`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn new(start: u64, end: u64) -> ByteRange {
        ByteRange { start, end }
    }

    /// The HTTP `Range` header value (inclusive end).
    pub fn http_header(self) -> String {
        format!("bytes={}-{}", self.start, self.end.saturating_sub(1))
    }

    /// The part of `[0, size)` this range covers, or `None` if it starts at or past `size`
    /// or is empty.
    pub fn clamp(self, size: u64) -> Option<std::ops::Range<u64>> {
        if self.start >= size || self.start >= self.end {
            return None;
        }
        Some(self.start..self.end.min(size))
    }
}

/// An upload in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartUpload {
    pub key: String,
    pub upload_id: String,
}

/// A part that was uploaded: hand these to `complete_multipart`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPart {
    pub number: u32,
    pub etag: String,
}

/// Why an object-store call failed. See the module doc for the error policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    #[error("object {key} does not exist")]
    NotFound { key: String },
    #[error("object {key} already exists")]
    AlreadyExists { key: String },
    /// The key breaks [`validate_key`]'s rules (or an adapter's reserved names).
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("range {start}..{end} is outside object {key}")]
    InvalidRange { key: String, start: u64, end: u64 },
    /// A multipart rule was broken, or the upload is unknown (aborted, completed).
    #[error("multipart upload of {key} rejected: {message}")]
    InvalidMultipart { key: String, message: String },
    #[error("object store throttled the request: {message}")]
    Throttled { message: String },
    #[error("object store unavailable: {message}")]
    Unavailable { message: String },
    #[error("object store error: {message}")]
    Backend { message: String },
}

impl ObjectError {
    /// A broken multipart rule, or an unknown upload.
    pub fn invalid_multipart(key: &str, message: impl Into<String>) -> ObjectError {
        ObjectError::InvalidMultipart {
            key: key.to_owned(),
            message: message.into(),
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ObjectError::Throttled { .. } | ObjectError::Unavailable { .. }
        )
    }
}

/// Stores and reads immutable objects. See the module doc for the semantics.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Writes the whole object, replacing any previous one.
    async fn put(&self, key: &str, body: Bytes) -> Result<ObjectMeta, ObjectError>;
    /// Writes the object only if `key` is free.
    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<ObjectMeta, ObjectError>;
    /// Reads the object, or the part of it `range` covers.
    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<Bytes, ObjectError>;
    /// The object's metadata, or `None` if it does not exist.
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, ObjectError>;
    /// One page of the keys under `prefix`.
    async fn list(
        &self,
        prefix: &str,
        continuation: Option<&str>,
        max_keys: u32,
    ) -> Result<ListPage, ObjectError>;
    /// Deletes the object; deleting an absent object is fine.
    async fn delete(&self, key: &str) -> Result<(), ObjectError>;

    async fn create_multipart(&self, key: &str) -> Result<MultipartUpload, ObjectError>;
    async fn upload_part(
        &self,
        upload: &MultipartUpload,
        number: u32,
        body: Bytes,
    ) -> Result<CompletedPart, ObjectError>;
    async fn complete_multipart(
        &self,
        upload: &MultipartUpload,
        parts: &[CompletedPart],
    ) -> Result<ObjectMeta, ObjectError>;
    async fn abort_multipart(&self, upload: &MultipartUpload) -> Result<(), ObjectError>;
}

/// S3's rules for one part, checked before it is stored: number in 1..=[`MAX_PARTS`], size at
/// most [`MAX_PART_SIZE`]. Every adapter checks them, so no store accepts what S3 refuses.
pub fn check_part(key: &str, number: u32, size: u64) -> Result<(), ObjectError> {
    if !(1..=MAX_PARTS).contains(&number) {
        return Err(ObjectError::invalid_multipart(
            key,
            format!("part number {number} is outside 1..={MAX_PARTS}"),
        ));
    }
    if size > MAX_PART_SIZE {
        return Err(ObjectError::invalid_multipart(
            key,
            format!("part {number} is {size} bytes, more than {MAX_PART_SIZE}"),
        ));
    }
    Ok(())
}

/// S3's rules for the part list of a completion: at least one part, strictly ascending
/// (`MalformedXML`, `InvalidPartOrder`). Checked before the request too: not every
/// S3-compatible server checks them (moto 5.2.5 accepts a descending list).
pub fn check_part_list(key: &str, parts: &[CompletedPart]) -> Result<(), ObjectError> {
    if parts.is_empty() {
        return Err(ObjectError::invalid_multipart(
            key,
            "no parts to complete".to_owned(),
        ));
    }
    if parts
        .windows(2)
        .any(|pair| pair[0].number >= pair[1].number)
    {
        return Err(ObjectError::invalid_multipart(
            key,
            "parts must be listed in strictly ascending order (S3: InvalidPartOrder)".to_owned(),
        ));
    }
    Ok(())
}

/// S3's size rule at completion: every part but the last at least [`MIN_PART_SIZE`]
/// (`EntityTooSmall`).
pub fn check_part_size(
    key: &str,
    number: u32,
    size: u64,
    is_last: bool,
) -> Result<(), ObjectError> {
    if !is_last && size < MIN_PART_SIZE {
        return Err(ObjectError::invalid_multipart(
            key,
            format!(
                "part {number} is {size} bytes; every part but the last must be at least \
                 {MIN_PART_SIZE} (S3: EntityTooSmall)"
            ),
        ));
    }
    Ok(())
}

/// Uploads `body` in parts of `part_size` (at least [`MIN_PART_SIZE`]), aborting the upload
/// if any step fails, so no orphaned parts are left to pay for.
pub async fn put_multipart<S: ObjectStore + ?Sized>(
    store: &S,
    key: &str,
    body: Bytes,
    part_size: u64,
) -> Result<ObjectMeta, ObjectError> {
    let part_size = part_size.clamp(MIN_PART_SIZE, MAX_PART_SIZE);
    let parts_needed = body
        .len()
        .div_ceil(usize::try_from(part_size).unwrap_or(usize::MAX));
    if parts_needed > MAX_PARTS as usize {
        return Err(ObjectError::InvalidMultipart {
            key: key.to_owned(),
            message: format!(
                "{} bytes in parts of {part_size} would need {parts_needed} parts (at most {MAX_PARTS})",
                body.len()
            ),
        });
    }
    let upload = store.create_multipart(key).await?;
    let result = upload_all_parts(store, &upload, body, part_size).await;
    match result {
        Ok(meta) => Ok(meta),
        Err(error) => {
            // Best effort: the upload's own error is the one worth reporting.
            let _ = store.abort_multipart(&upload).await;
            Err(error)
        }
    }
}

async fn upload_all_parts<S: ObjectStore + ?Sized>(
    store: &S,
    upload: &MultipartUpload,
    body: Bytes,
    part_size: u64,
) -> Result<ObjectMeta, ObjectError> {
    let part_size = usize::try_from(part_size).unwrap_or(usize::MAX);
    let mut parts = Vec::new();
    let mut offset = 0;
    let mut number = 1;
    // An empty body still needs one (empty) part.
    while offset < body.len() || parts.is_empty() {
        let end = offset.saturating_add(part_size).min(body.len());
        parts.push(
            store
                .upload_part(upload, number, body.slice(offset..end))
                .await?,
        );
        offset = end;
        number += 1;
    }
    store.complete_multipart(upload, &parts).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_clamp_and_render() {
        assert_eq!(ByteRange::new(0, 10).clamp(4), Some(0..4));
        assert_eq!(ByteRange::new(2, 3).clamp(4), Some(2..3));
        assert_eq!(ByteRange::new(4, 5).clamp(4), None);
        assert_eq!(ByteRange::new(3, 3).clamp(4), None);
        assert_eq!(ByteRange::new(0, 100).http_header(), "bytes=0-99");
    }

    #[test]
    fn keys_are_relative_paths() {
        for good in ["a", "chunks/ab/cd", "refs/latest.json", "a-/b_c/.hidden"] {
            assert_eq!(validate_key(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("/abs", "absolute"),
            ("a//b", "empty segment"),
            ("a/", "empty segment"),
            ("a/../b", "'..'"),
            ("./a", "'.'"),
            ("a\0b", "NUL"),
        ] {
            let error = validate_key(bad).expect_err(bad);
            assert!(error.to_string().contains(why), "{bad}: {error}");
            assert!(!error.is_retryable());
        }
    }
}
