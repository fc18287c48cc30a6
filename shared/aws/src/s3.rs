//! `S3ObjectStore`: the `ObjectStore` port on one S3 bucket and key prefix
//! (`s3://bucket/prefix/`), with the official SDK.
//!
//! # Keys
//!
//! The store's keys are relative to the URL's prefix: `put("chunks/ab", ..)` on
//! `s3://chain-data/mainnet/` writes `mainnet/chunks/ab`, and `list` strips the prefix
//! again, so callers never see it. Two stores with different prefixes share a bucket
//! without seeing each other's objects.
//!
//! # Endpoints
//!
//! [`S3ObjectStore::new`] takes the process's one [`SdkConfig`] (see
//! [`crate::load_sdk_config`]), so the standard AWS environment applies, `AWS_ENDPOINT_URL`
//! included. When the configuration names an endpoint (an S3-compatible server, moto), the
//! client uses path-style addressing (`http://host/bucket/key`): such servers rarely have
//! the wildcard DNS virtual-hosted addressing (`http://bucket.host/key`) needs.
//! [`S3ObjectStore::with_path_style`] decides it explicitly, e.g. for
//! `AWS_ENDPOINT_URL_S3`, which the configuration does not expose.
//!
//! # Semantics on S3
//!
//! - `put_if_absent` is `PutObject` with `If-None-Match: *`: S3 answers 412
//!   `PreconditionFailed` when the key exists and 409 `ConditionalRequestConflict` when a
//!   concurrent conditional write to the key is in flight; both are `AlreadyExists` (the
//!   other writer wins or already won).
//! - A ranged `get` sends a `Range` header. An empty range is refused locally (S3 would
//!   ignore a malformed header and return the whole object), and a server that ignores the
//!   header is caught by the missing `Content-Range` and the range is cut locally.
//! - Multipart: part numbers, part sizes and the order of the completion's part list are
//!   checked before a request is made; completion is `CompleteMultipartUpload` followed by a `HeadObject` for the size.
//!   [`S3ObjectStore::put_large`] picks a single `PutObject` or a multipart upload by size.
//!
//! # Error policy
//!
//! SDK errors are sorted by [`crate::error::classify`] first: throttling (`SlowDown`, 429)
//! is `Throttled`, 5xx and transport failures are `Unavailable` (both retryable). Then the
//! S3 codes that mean something to the port:
//!
//! | S3 code | operation | `ObjectError` |
//! |---|---|---|
//! | `NoSuchKey`, `NotFound` (404 on HEAD) | get, head | `NotFound` (`None` for head) |
//! | `InvalidRange` (416) | get | `InvalidRange` |
//! | `PreconditionFailed` (412), `ConditionalRequestConflict` (409) | put_if_absent | `AlreadyExists` |
//! | `NoSuchUpload`, `EntityTooSmall`, `InvalidPart`, `InvalidPartOrder`, `MalformedXML`, `InvalidArgument` | multipart | `InvalidMultipart` |
//! | anything else (`NoSuchBucket`, `AccessDenied`, ...) | any | `Backend` |

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLocationConstraint, CompletedMultipartUpload, CompletedPart as S3CompletedPart,
    CreateBucketConfiguration,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use bytes::Bytes;
use nodefleet_ports::objects::{
    ByteRange, CompletedPart, ListPage, MAX_KEYS_PER_PAGE, MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE,
    MultipartUpload, ObjectError, ObjectMeta, ObjectStore, check_part, check_part_list,
    put_multipart, validate_key,
};
use nodefleet_ports::{StoreUrl, Timestamp};

use crate::error::{AwsFailure, classify};
use crate::operations::SdkCalls;
use crate::operations::s3::{
    ABORT_MULTIPART_UPLOAD, COMPLETE_MULTIPART_UPLOAD, CREATE_BUCKET, CREATE_MULTIPART_UPLOAD,
    DELETE_OBJECT, GET_OBJECT, HEAD_OBJECT, LIST_OBJECTS_V2, PUT_OBJECT, UPLOAD_PART,
};

/// The default multipart part size: 8 MiB. Above S3's 5 MiB minimum, and inside the
/// 8-16 MB range where ranged GETs reach S3's per-connection throughput (DESIGN.md), so an
/// object written in parts of this size is read back efficiently in part-sized ranges.
/// 10,000 parts of 8 MiB allow objects up to ~78 GiB; larger ones need a bigger part size.
pub const DEFAULT_PART_SIZE: u64 = 8 * 1024 * 1024;

/// The region S3 creates buckets in when the request names no location constraint.
const DEFAULT_BUCKET_REGION: &str = "us-east-1";

/// Why an `S3ObjectStore` could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum S3StoreError {
    #[error("S3ObjectStore needs an s3:// URL, got {0} (a file:// URL is for FsObjectStore)")]
    NotAnS3Url(String),
}

/// The `ObjectStore` on an S3 bucket and prefix; see the module doc. Cheap to clone.
#[derive(Debug, Clone)]
pub struct S3ObjectStore {
    client: Client,
    bucket: String,
    /// Empty, or ends with `/` (as [`StoreUrl`] guarantees).
    prefix: String,
    /// The part size [`S3ObjectStore::put_large`] uploads with; see [`DEFAULT_PART_SIZE`].
    part_size: u64,
}

/// Which S3 codes an operation gives a meaning to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Read,
    ConditionalCreate,
    Multipart,
    Other,
}

impl S3ObjectStore {
    /// The S3 operations each `ObjectStore` method calls: one each, except completing a
    /// multipart upload, which heads the object after for its size. `put_if_absent` is a
    /// conditional `PutObject`.
    pub const SDK_CALLS: SdkCalls = &[
        ("put", &[PUT_OBJECT]),
        ("put_if_absent", &[PUT_OBJECT]),
        ("get", &[GET_OBJECT]),
        ("head", &[HEAD_OBJECT]),
        ("list", &[LIST_OBJECTS_V2]),
        ("delete", &[DELETE_OBJECT]),
        ("create_multipart", &[CREATE_MULTIPART_UPLOAD]),
        ("upload_part", &[UPLOAD_PART]),
        (
            "complete_multipart",
            &[COMPLETE_MULTIPART_UPLOAD, HEAD_OBJECT],
        ),
        ("abort_multipart", &[ABORT_MULTIPART_UPLOAD]),
    ];

    /// What [`S3ObjectStore::create_bucket`] calls: tooling's and tests', not a function
    /// role's (deployments create the bucket with the rest of the infrastructure).
    pub const PROVISIONING: &'static [crate::AwsOperation] = &[CREATE_BUCKET];

    /// A store on `url`'s bucket and prefix, with path-style addressing when `config` names
    /// an endpoint (see the module doc).
    pub fn new(config: &SdkConfig, url: &StoreUrl) -> Result<S3ObjectStore, S3StoreError> {
        S3ObjectStore::with_path_style(config, url, config.endpoint_url().is_some())
    }

    /// A store on `url`'s bucket and prefix, addressing buckets by path or not.
    pub fn with_path_style(
        config: &SdkConfig,
        url: &StoreUrl,
        path_style: bool,
    ) -> Result<S3ObjectStore, S3StoreError> {
        let s3_config = aws_sdk_s3::config::Builder::from(config)
            .force_path_style(path_style)
            .build();
        S3ObjectStore::from_client(Client::from_conf(s3_config), url)
    }

    /// A store using a client built elsewhere (tests with mocked responses, unusual
    /// configurations).
    pub fn from_client(client: Client, url: &StoreUrl) -> Result<S3ObjectStore, S3StoreError> {
        match url {
            StoreUrl::S3 { bucket, prefix } => Ok(S3ObjectStore {
                client,
                bucket: bucket.clone(),
                prefix: prefix.clone(),
                part_size: DEFAULT_PART_SIZE,
            }),
            StoreUrl::File { .. } => Err(S3StoreError::NotAnS3Url(url.to_string())),
        }
    }

    /// Uses `part_size` for [`S3ObjectStore::put_large`], kept within S3's part limits.
    pub fn with_part_size(mut self, part_size: u64) -> S3ObjectStore {
        self.part_size = part_size.clamp(MIN_PART_SIZE, MAX_PART_SIZE);
        self
    }

    pub fn part_size(&self) -> u64 {
        self.part_size
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Writes `body` with one `PutObject` up to the part size, and as a multipart upload
    /// in parts of the part size above it (aborted if any step fails).
    pub async fn put_large(&self, key: &str, body: Bytes) -> Result<ObjectMeta, ObjectError> {
        if body.len() as u64 <= self.part_size {
            self.put(key, body).await
        } else {
            put_multipart(self, key, body, self.part_size).await
        }
    }

    /// Creates the bucket in the client's region (for tests and tooling; deployments create
    /// it with the rest of the infrastructure). A bucket this account already owns is fine.
    pub async fn create_bucket(&self) -> Result<(), ObjectError> {
        let region = self
            .client
            .config()
            .region()
            .map(|region| region.as_ref().to_owned());
        let mut request = self.client.create_bucket().bucket(&self.bucket);
        if let Some(region) = region.filter(|region| region != DEFAULT_BUCKET_REGION) {
            request = request.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(region.as_str()))
                    .build(),
            );
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(error) if code_of(&error) == Some("BucketAlreadyOwnedByYou") => Ok(()),
            Err(error) => Err(object_error(&error, &self.bucket, Operation::Other)),
        }
    }

    fn full_key(&self, key: &str) -> Result<String, ObjectError> {
        validate_key(key)?;
        Ok(format!("{}{key}", self.prefix))
    }

    fn meta(
        &self,
        key: &str,
        size: Option<i64>,
        etag: Option<&str>,
        last_modified: Option<&aws_smithy_types::DateTime>,
    ) -> ObjectMeta {
        ObjectMeta {
            key: key.to_owned(),
            size: size.and_then(|size| u64::try_from(size).ok()).unwrap_or(0),
            etag: etag.map(strip_quotes),
            last_modified: last_modified.and_then(|time| {
                time.to_millis()
                    .ok()
                    .and_then(|millis| u64::try_from(millis).ok())
                    .map(Timestamp::from_millis)
            }),
        }
    }

    async fn put_object(
        &self,
        key: &str,
        body: Bytes,
        if_absent: bool,
    ) -> Result<ObjectMeta, ObjectError> {
        let full_key = self.full_key(key)?;
        let size = body.len() as u64;
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(full_key)
            .body(ByteStream::from(body));
        let operation = if if_absent {
            request = request.if_none_match("*");
            Operation::ConditionalCreate
        } else {
            Operation::Other
        };
        let output = request
            .send()
            .await
            .map_err(|error| object_error(&error, key, operation))?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size,
            etag: output.e_tag().map(strip_quotes),
            // PutObject does not say; a HEAD would cost a request for a value nobody needs.
            last_modified: None,
        })
    }
}

#[async_trait]
impl ObjectStore for S3ObjectStore {
    async fn put(&self, key: &str, body: Bytes) -> Result<ObjectMeta, ObjectError> {
        self.put_object(key, body, false).await
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<ObjectMeta, ObjectError> {
        self.put_object(key, body, true).await
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<Bytes, ObjectError> {
        let full_key = self.full_key(key)?;
        let invalid_range = |range: ByteRange| ObjectError::InvalidRange {
            key: key.to_owned(),
            start: range.start,
            end: range.end,
        };
        if let Some(range) = range
            && range.start >= range.end
        {
            return Err(invalid_range(range));
        }
        let output = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(full_key)
            .set_range(range.map(ByteRange::http_header))
            .send()
            .await
            .map_err(|error| match (range, code_of(&error)) {
                (Some(range), Some("InvalidRange")) => invalid_range(range),
                _ => object_error(&error, key, Operation::Read),
            })?;
        let ranged_by_server = output.content_range().is_some();
        let body = output
            .body
            .collect()
            .await
            .map_err(|error| ObjectError::Unavailable {
                message: format!("reading {key}: {error}"),
            })?
            .into_bytes();
        match range {
            // The server ignored the Range header and sent the whole object: cut it here.
            Some(range) if !ranged_by_server => {
                let covered = range
                    .clamp(body.len() as u64)
                    .ok_or_else(|| invalid_range(range))?;
                let start = usize::try_from(covered.start).unwrap_or(usize::MAX);
                let end = usize::try_from(covered.end).unwrap_or(usize::MAX);
                Ok(body.slice(start..end))
            }
            _ => Ok(body),
        }
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, ObjectError> {
        let full_key = self.full_key(key)?;
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(full_key)
            .send()
            .await
        {
            Ok(output) => Ok(Some(self.meta(
                key,
                output.content_length(),
                output.e_tag(),
                output.last_modified(),
            ))),
            Err(error) => match object_error(&error, key, Operation::Read) {
                ObjectError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn list(
        &self,
        prefix: &str,
        continuation: Option<&str>,
        max_keys: u32,
    ) -> Result<ListPage, ObjectError> {
        let page_size = i32::try_from(max_keys.clamp(1, MAX_KEYS_PER_PAGE)).unwrap_or(1000);
        let output = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(format!("{}{prefix}", self.prefix))
            .max_keys(page_size)
            .set_continuation_token(continuation.map(str::to_owned))
            .send()
            .await
            .map_err(|error| object_error(&error, prefix, Operation::Other))?;
        let objects = output
            .contents()
            .iter()
            .filter_map(|object| {
                let key = object.key()?.strip_prefix(self.prefix.as_str())?;
                Some(self.meta(key, object.size(), object.e_tag(), object.last_modified()))
            })
            .collect();
        let next = if output.is_truncated().unwrap_or(false) {
            output.next_continuation_token().map(str::to_owned)
        } else {
            None
        };
        Ok(ListPage { objects, next })
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        let full_key = self.full_key(key)?;
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(full_key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // S3 answers 204 for an absent key; some compatible servers say NoSuchKey.
            Err(error) => match object_error(&error, key, Operation::Read) {
                ObjectError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn create_multipart(&self, key: &str) -> Result<MultipartUpload, ObjectError> {
        let full_key = self.full_key(key)?;
        let output = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(full_key)
            .send()
            .await
            .map_err(|error| object_error(&error, key, Operation::Multipart))?;
        let upload_id = output.upload_id().ok_or_else(|| ObjectError::Backend {
            message: format!("CreateMultipartUpload for {key} returned no upload id"),
        })?;
        Ok(MultipartUpload {
            key: key.to_owned(),
            upload_id: upload_id.to_owned(),
        })
    }

    async fn upload_part(
        &self,
        upload: &MultipartUpload,
        number: u32,
        body: Bytes,
    ) -> Result<CompletedPart, ObjectError> {
        let full_key = self.full_key(&upload.key)?;
        check_part(&upload.key, number, body.len() as u64)?;
        let part_number = i32::try_from(number).map_err(|_| ObjectError::InvalidMultipart {
            key: upload.key.clone(),
            message: format!("part number {number} is outside 1..={MAX_PARTS}"),
        })?;
        let output = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(full_key)
            .upload_id(&upload.upload_id)
            .part_number(part_number)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|error| object_error(&error, &upload.key, Operation::Multipart))?;
        let etag = output.e_tag().ok_or_else(|| ObjectError::Backend {
            message: format!("UploadPart {number} of {} returned no etag", upload.key),
        })?;
        // Kept as S3 sent it (quoted): it goes back to S3 verbatim at completion.
        Ok(CompletedPart {
            number,
            etag: etag.to_owned(),
        })
    }

    async fn complete_multipart(
        &self,
        upload: &MultipartUpload,
        parts: &[CompletedPart],
    ) -> Result<ObjectMeta, ObjectError> {
        let full_key = self.full_key(&upload.key)?;
        check_part_list(&upload.key, parts)?;
        let s3_parts = parts
            .iter()
            .map(|part| {
                S3CompletedPart::builder()
                    .part_number(i32::try_from(part.number).unwrap_or(i32::MAX))
                    .e_tag(&part.etag)
                    .build()
            })
            .collect();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(full_key)
            .upload_id(&upload.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(s3_parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|error| object_error(&error, &upload.key, Operation::Multipart))?;
        // CompleteMultipartUpload does not report the size; the object exists now.
        self.head(&upload.key)
            .await?
            .ok_or_else(|| ObjectError::Backend {
                message: format!(
                    "{} is missing right after its multipart upload completed",
                    upload.key
                ),
            })
    }

    async fn abort_multipart(&self, upload: &MultipartUpload) -> Result<(), ObjectError> {
        let full_key = self.full_key(&upload.key)?;
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(full_key)
            .upload_id(&upload.upload_id)
            .send()
            .await
            .map_err(|error| object_error(&error, &upload.key, Operation::Multipart))?;
        Ok(())
    }
}

fn strip_quotes(etag: &str) -> String {
    etag.trim_matches('"').to_owned()
}

/// The S3 error code of a service error, if it is one.
fn code_of<E>(error: &SdkError<E, HttpResponse>) -> Option<&str>
where
    E: ProvideErrorMetadata,
{
    match error {
        SdkError::ServiceError(service) => service.err().code(),
        _ => None,
    }
}

/// Sorts an SDK error into the port's taxonomy (see the module doc's table).
fn object_error<E>(
    error: &SdkError<E, HttpResponse>,
    key: &str,
    operation: Operation,
) -> ObjectError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match classify(error) {
        AwsFailure::Throttled(message) => ObjectError::Throttled { message },
        AwsFailure::Unavailable(message) => ObjectError::Unavailable { message },
        AwsFailure::Service { code, message } => match (code.as_str(), operation) {
            ("NoSuchKey" | "NotFound", Operation::Read) => ObjectError::NotFound {
                key: key.to_owned(),
            },
            ("PreconditionFailed" | "ConditionalRequestConflict", Operation::ConditionalCreate) => {
                ObjectError::AlreadyExists {
                    key: key.to_owned(),
                }
            }
            (
                "NoSuchUpload" | "EntityTooSmall" | "InvalidPart" | "InvalidPartOrder"
                | "MalformedXML" | "InvalidArgument",
                Operation::Multipart,
            ) => ObjectError::InvalidMultipart {
                key: key.to_owned(),
                message: format!("{code}: {message}"),
            },
            _ => ObjectError::Backend {
                message: format!("{key}: {code}: {message}"),
            },
        },
    }
}
