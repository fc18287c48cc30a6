//! `S3ObjectStore` against the `ObjectStore` contract on moto, twice: on a fresh bucket per
//! test, and on a fresh bucket under a non-empty prefix (the prefix is added to every key
//! and stripped from listings). Plus what only this adapter promises: the prefix is really
//! on the wire and keeps stores apart, an `SdkConfig` from the standard loader with an
//! endpoint URL (what `AWS_ENDPOINT_URL` produces) leads to path-style requests that work,
//! `put_large` switches to multipart above the part size, a `file://` URL is refused; and,
//! with aws-smithy-mocks, the error paths moto never takes (`SlowDown`, a 503, a 412 or
//! 409 on the conditional create, which must also carry `If-None-Match: *`).
//!
//! What moto 5.2.5 does and does not do (checked in its source, `moto/s3/`):
//!
//! - It honours `If-None-Match: *` on PutObject (412 `PreconditionFailed` when the key
//!   exists), and the 20-way race of the contract has one winner on it. The 409
//!   `ConditionalRequestConflict` S3 sends while another conditional write is in flight
//!   never happens on moto: covered with aws-smithy-mocks below.
//! - It enforces the 5 MiB minimum part size (`EntityTooSmall`), part etags (`InvalidPart`)
//!   and `NoSuchUpload` on AbortMultipartUpload.
//! - Gap: it does not check the order of the completion's part list (`prev` is never
//!   updated in `_complete_multipart_body`), so a repeated or descending list would
//!   succeed. The adapter checks the order itself before the request (as S3 would reject
//!   it), which the contract's `multipart_completion_checks_order_and_etags` proves here.
//! - Gap: UploadPart and CompleteMultipartUpload on an aborted or completed upload fail with
//!   a 500 (a Python `KeyError`) instead of 404 `NoSuchUpload`. The contract runs with
//!   `KnownGaps { gone_upload_is_a_server_error: true }` (it then only requires an error),
//!   and `no_such_upload_is_invalid_multipart` maps the real answer with aws-smithy-mocks.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::{Arc, Mutex};

use aws_config::BehaviorVersion;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Credentials, Region};
use aws_smithy_mocks::{Rule, create_mock_http_client, mock};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use bytes::Bytes;
use nodefleet_aws::S3ObjectStore;
use nodefleet_aws::s3::{DEFAULT_PART_SIZE, S3StoreError};
use nodefleet_ports::contract::object_store::{KnownGaps, pattern};
use nodefleet_ports::objects::MIN_PART_SIZE;
use nodefleet_ports::{ObjectError, ObjectStore, StoreUrl};

/// A store on a new bucket of its own, under `prefix` (empty or ending with `/`).
async fn store_in_new_bucket(prefix: &str) -> S3ObjectStore {
    let url = StoreUrl::parse(&format!(
        "s3://{}/{prefix}",
        support::unique_name("objects")
    ))
    .unwrap();
    let store = S3ObjectStore::new(&support::moto_config(), &url).unwrap();
    store.create_bucket().await.unwrap();
    store
}

async fn fresh_store() -> S3ObjectStore {
    store_in_new_bucket("").await
}

async fn fresh_prefixed_store() -> S3ObjectStore {
    store_in_new_bucket("fleets/mainnet/").await
}

/// Empties and deletes the store's bucket (moto keeps every byte in memory), including
/// objects outside the store's prefix and uploads in progress.
async fn remove_bucket(store: S3ObjectStore) {
    let client = store.client();
    let bucket = store.bucket();
    let uploads = client
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    for upload in uploads.uploads() {
        client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(upload.key().unwrap())
            .upload_id(upload.upload_id().unwrap())
            .send()
            .await
            .unwrap();
    }
    let mut token = None;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .set_continuation_token(token)
            .send()
            .await
            .unwrap();
        for object in page.contents() {
            client
                .delete_object()
                .bucket(bucket)
                .key(object.key().unwrap())
                .send()
                .await
                .unwrap();
        }
        token = page.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    client.delete_bucket().bucket(bucket).send().await.unwrap();
}

/// moto's deviation from S3 on uploads that are gone (see the module doc).
const MOTO_GAPS: KnownGaps = KnownGaps {
    gone_upload_is_a_server_error: true,
};

mod unprefixed {
    use super::*;
    nodefleet_ports::object_store_contract!(fresh_store(), remove_bucket, MOTO_GAPS);
}

mod prefixed {
    use super::*;
    nodefleet_ports::object_store_contract!(fresh_prefixed_store(), remove_bucket, MOTO_GAPS);
}

/// The bucket's raw keys, as S3 holds them.
async fn raw_keys(store: &S3ObjectStore) -> Vec<String> {
    let page = store
        .client()
        .list_objects_v2()
        .bucket(store.bucket())
        .send()
        .await
        .unwrap();
    page.contents()
        .iter()
        .map(|object| object.key().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_prefix_is_on_the_wire_and_keeps_stores_apart() {
    let mainnet = fresh_prefixed_store().await;
    let sepolia_url =
        StoreUrl::parse(&format!("s3://{}/fleets/sepolia", mainnet.bucket())).unwrap();
    let sepolia = S3ObjectStore::new(&support::moto_config(), &sepolia_url).unwrap();

    mainnet
        .put("refs/latest", Bytes::from_static(b"m"))
        .await
        .unwrap();
    sepolia
        .put("refs/latest", Bytes::from_static(b"s"))
        .await
        .unwrap();
    let upload = mainnet.create_multipart("chunks/big").await.unwrap();
    let part = mainnet
        .upload_part(&upload, 1, pattern(10, 0))
        .await
        .unwrap();
    mainnet.complete_multipart(&upload, &[part]).await.unwrap();

    assert_eq!(
        raw_keys(&mainnet).await,
        [
            "fleets/mainnet/chunks/big",
            "fleets/mainnet/refs/latest",
            "fleets/sepolia/refs/latest"
        ]
    );
    let listed: Vec<String> = mainnet
        .list("", None, 100)
        .await
        .unwrap()
        .objects
        .into_iter()
        .map(|meta| meta.key)
        .collect();
    assert_eq!(
        listed,
        ["chunks/big", "refs/latest"],
        "prefix stripped, other fleet absent"
    );
    assert_eq!(mainnet.get("refs/latest", None).await.unwrap(), "m");
    assert_eq!(sepolia.get("refs/latest", None).await.unwrap(), "s");
    assert_eq!(sepolia.head("chunks/big").await.unwrap(), None);
    remove_bucket(mainnet).await;
}

/// An interceptor that records the URI of every request the client sends.
#[derive(Debug, Clone, Default)]
struct UriRecorder(Arc<Mutex<Vec<String>>>);

impl Intercept for UriRecorder {
    fn name(&self) -> &'static str {
        "UriRecorder"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0
            .lock()
            .unwrap()
            .push(context.request().uri().to_owned());
        Ok(())
    }
}

impl UriRecorder {
    fn uris(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// The same store with `interceptors` added to its client, keeping the rest of the client
/// configuration `S3ObjectStore::new` chose (path style included).
fn intercepted(
    store: &S3ObjectStore,
    url: &StoreUrl,
    interceptors: Vec<aws_sdk_s3::config::SharedInterceptor>,
) -> S3ObjectStore {
    let mut config = store.client().config().to_builder();
    for interceptor in interceptors {
        config.push_interceptor(interceptor);
    }
    S3ObjectStore::from_client(Client::from_conf(config.build()), url).unwrap()
}

#[tokio::test]
async fn aws_endpoint_url_in_the_environment_means_path_style_requests_to_it() {
    // The standard loader (what `load_sdk_config()` runs) given only the standard AWS
    // environment: `AWS_ENDPOINT_URL` aims every client at moto. The environment is handed
    // to the loader rather than set on the process (unsafe with tests running in threads),
    // and no ~/.aws files are read.
    let endpoint = support::moto_endpoint();
    let config = aws_config::defaults(BehaviorVersion::latest())
        .env(aws_types::os_shim_internal::Env::from_slice(&[
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ]))
        .fs(aws_types::os_shim_internal::Fs::from_slice(&[]))
        .load()
        .await;
    assert_eq!(config.endpoint_url(), Some(endpoint.as_str()));
    let bucket = support::unique_name("path-style");
    let url = StoreUrl::parse(&format!("s3://{bucket}/p")).unwrap();
    let recorder = UriRecorder::default();
    let store = intercepted(
        &S3ObjectStore::new(&config, &url).unwrap(),
        &url,
        vec![aws_sdk_s3::config::SharedInterceptor::new(recorder.clone())],
    );
    store.create_bucket().await.unwrap();
    store
        .put("k/v", Bytes::from_static(b"path style"))
        .await
        .unwrap();
    assert_eq!(store.get("k/v", None).await.unwrap(), "path style");

    let uris = recorder.uris();
    assert_eq!(uris.len(), 3, "{uris:?}");
    for uri in &uris {
        assert!(
            uri.starts_with(&format!("{endpoint}/{bucket}")),
            "not a path-style request to the endpoint: {uri}"
        );
    }
    assert!(
        uris[1].starts_with(&format!("{endpoint}/{bucket}/p/k/v")),
        "{}",
        uris[1]
    );
    remove_bucket(store).await;
}

#[tokio::test]
async fn without_an_endpoint_url_buckets_are_addressed_by_host() {
    // AWS itself: virtual-hosted addressing, the style S3 recommends. No network: the
    // mocked answer is given before the request would leave.
    let put = mock!(Client::put_object).then_output(|| {
        aws_sdk_s3::operation::put_object::PutObjectOutput::builder()
            .e_tag("\"etag\"")
            .build()
    });
    let mock_interceptor = aws_smithy_mocks::MockResponseInterceptor::new().with_rule(&put);
    let config = aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("eu-west-1"))
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(Credentials::new(
                "test", "test", None, None, "mock",
            )),
        )
        .http_client(create_mock_http_client())
        .build();
    let url = StoreUrl::parse("s3://chain-data/mainnet/").unwrap();
    let recorder = UriRecorder::default();
    let store = intercepted(
        &S3ObjectStore::new(&config, &url).unwrap(),
        &url,
        vec![
            aws_sdk_s3::config::SharedInterceptor::new(recorder.clone()),
            aws_sdk_s3::config::SharedInterceptor::new(mock_interceptor),
        ],
    );
    let meta = store
        .put("refs/latest", Bytes::from_static(b"v"))
        .await
        .unwrap();
    assert_eq!(meta.etag.as_deref(), Some("etag"), "quotes stripped");
    let uris = recorder.uris();
    assert_eq!(uris.len(), 1);
    assert!(
        uris[0].starts_with("https://chain-data.s3.eu-west-1.amazonaws.com/mainnet/refs/latest"),
        "{}",
        uris[0]
    );
}

#[tokio::test]
async fn put_large_uses_multipart_above_the_part_size() {
    let store = fresh_store().await.with_part_size(MIN_PART_SIZE);
    assert_eq!(store.part_size(), MIN_PART_SIZE);
    let min_part = usize::try_from(MIN_PART_SIZE).unwrap();
    let small = pattern(min_part, 1);
    let large = pattern(min_part * 2 + 10, 2);
    let small_meta = store.put_large("small", small.clone()).await.unwrap();
    let large_meta = store.put_large("large", large.clone()).await.unwrap();
    // S3 marks a multipart object's etag with the part count.
    assert!(!small_meta.etag.unwrap().contains('-'));
    assert!(large_meta.etag.unwrap().ends_with("-3"));
    assert_eq!(large_meta.size, large.len() as u64);
    assert_eq!(store.get("small", None).await.unwrap(), small);
    assert_eq!(store.get("large", None).await.unwrap(), large);
    let uploads = store
        .client()
        .list_multipart_uploads()
        .bucket(store.bucket())
        .send()
        .await
        .unwrap();
    assert!(uploads.uploads().is_empty(), "no upload left behind");
    remove_bucket(store).await;
}

#[tokio::test]
async fn part_size_defaults_to_8_mib_and_stays_within_s3_limits() {
    let url = StoreUrl::parse("s3://any-bucket").unwrap();
    let store = S3ObjectStore::new(&support::moto_config(), &url).unwrap();
    assert_eq!(store.part_size(), DEFAULT_PART_SIZE);
    assert_eq!(store.clone().with_part_size(1).part_size(), MIN_PART_SIZE);
    assert_eq!(
        store.with_part_size(u64::MAX).part_size(),
        nodefleet_ports::objects::MAX_PART_SIZE
    );
}

#[tokio::test]
async fn a_file_url_is_refused() {
    let url = StoreUrl::parse("file:///var/lib/nodefleet").unwrap();
    match S3ObjectStore::new(&support::moto_config(), &url) {
        Err(error @ S3StoreError::NotAnS3Url(_)) => {
            assert!(error.to_string().contains("s3://"), "{error}")
        }
        other => panic!("expected NotAnS3Url, got {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_bucket_is_a_backend_error() {
    let url = StoreUrl::parse(&format!("s3://{}", support::unique_name("absent"))).unwrap();
    let store = S3ObjectStore::new(&support::moto_config(), &url).unwrap();
    match store.put("k", Bytes::from_static(b"v")).await {
        Err(error @ ObjectError::Backend { .. }) => {
            assert!(!error.is_retryable());
            assert!(error.to_string().contains("NoSuchBucket"), "{error}");
        }
        other => panic!("expected Backend, got {other:?}"),
    }
}

// ---- error paths moto cannot produce, with aws-smithy-mocks ----

/// A store whose client answers only from `rules`, without retries (so an error reaches the
/// adapter on the first answer) and without a network.
fn mocked_store(rules: &[&Rule]) -> S3ObjectStore {
    let config = aws_sdk_s3::config::Builder::from(&support::mock_config())
        .interceptor(support::mock_interceptor(rules))
        .force_path_style(true)
        .build();
    S3ObjectStore::from_client(
        Client::from_conf(config),
        &StoreUrl::parse("s3://mocked-bucket/prefix/").unwrap(),
    )
    .unwrap()
}

/// An S3 error answer as it comes over the wire (restXml).
fn error_body(code: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>mocked {code}</Message><RequestId>mock</RequestId></Error>"
    )
}

#[tokio::test]
async fn slow_down_is_retryable_throttled() {
    let put = mock!(Client::put_object)
        .sequence()
        .http_status(503, Some(error_body("SlowDown")))
        .build();
    let get = mock!(Client::get_object)
        .sequence()
        .http_status(503, Some(error_body("SlowDown")))
        .build();
    let store = mocked_store(&[&put, &get]);
    match store.put("k", Bytes::from_static(b"v")).await {
        Err(error @ ObjectError::Throttled { .. }) => {
            assert!(error.is_retryable());
            assert!(error.to_string().contains("SlowDown"), "{error}");
        }
        other => panic!("SlowDown must be Throttled, got {other:?}"),
    }
    assert!(matches!(
        store.get("k", None).await,
        Err(ObjectError::Throttled { .. })
    ));
    assert_eq!((put.num_calls(), get.num_calls()), (1, 1));
}

#[tokio::test]
async fn a_server_error_is_retryable_unavailable() {
    let head = mock!(Client::head_object)
        .sequence()
        .http_status(503, None)
        .build();
    let list = mock!(Client::list_objects_v2)
        .sequence()
        .http_status(500, Some(error_body("InternalError")))
        .build();
    let store = mocked_store(&[&head, &list]);
    match store.head("k").await {
        Err(error @ ObjectError::Unavailable { .. }) => assert!(error.is_retryable()),
        other => panic!("a 503 must be Unavailable, got {other:?}"),
    }
    match store.list("", None, 10).await {
        Err(error @ ObjectError::Unavailable { .. }) => assert!(error.is_retryable()),
        other => panic!("a 500 must be Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_failed_conditional_create_is_already_exists() {
    // Only a request with `If-None-Match: *` on the prefixed key matches: anything else
    // finds no rule and fails the test.
    let conditional = |request: &aws_sdk_s3::operation::put_object::PutObjectInput| {
        request.if_none_match() == Some("*") && request.key() == Some("prefix/refs/latest")
    };
    let put = mock!(Client::put_object)
        .match_requests(conditional)
        .sequence()
        .http_status(412, Some(error_body("PreconditionFailed")))
        .http_status(409, Some(error_body("ConditionalRequestConflict")))
        .build();
    let store = mocked_store(&[&put]);
    for expected in ["412 PreconditionFailed", "409 ConditionalRequestConflict"] {
        match store
            .put_if_absent("refs/latest", Bytes::from_static(b"v"))
            .await
        {
            Err(ObjectError::AlreadyExists { key }) => assert_eq!(key, "refs/latest"),
            other => panic!("{expected} must be AlreadyExists, got {other:?}"),
        }
    }
    assert_eq!(put.num_calls(), 2);
}

#[tokio::test]
async fn a_precondition_failure_outside_a_conditional_create_is_not_already_exists() {
    let put = mock!(Client::put_object)
        .match_requests(|request| request.if_none_match().is_none())
        .sequence()
        .http_status(412, Some(error_body("PreconditionFailed")))
        .build();
    let store = mocked_store(&[&put]);
    assert!(matches!(
        store.put("k", Bytes::from_static(b"v")).await,
        Err(ObjectError::Backend { .. })
    ));
}

#[tokio::test]
async fn a_server_that_ignores_ranges_is_cut_locally() {
    // Some S3-compatible servers answer a ranged GET with 200 and the whole object.
    let get = mock!(Client::get_object)
        .match_requests(|request| request.range() == Some("bytes=2-4"))
        .then_output(|| {
            aws_sdk_s3::operation::get_object::GetObjectOutput::builder()
                .body(aws_sdk_s3::primitives::ByteStream::from_static(
                    b"0123456789",
                ))
                .build()
        });
    let store = mocked_store(&[&get]);
    let got = store
        .get("k", Some(nodefleet_ports::ByteRange::new(2, 5)))
        .await
        .unwrap();
    assert_eq!(got, "234");
}

#[tokio::test]
async fn no_such_upload_is_invalid_multipart() {
    // What S3 answers for a part or a completion of an upload that is gone; moto answers
    // 500 instead (see the module doc).
    let part = mock!(Client::upload_part)
        .sequence()
        .http_status(404, Some(error_body("NoSuchUpload")))
        .build();
    let complete = mock!(Client::complete_multipart_upload)
        .sequence()
        .http_status(404, Some(error_body("NoSuchUpload")))
        .http_status(400, Some(error_body("EntityTooSmall")))
        .http_status(400, Some(error_body("InvalidPart")))
        .build();
    let abort = mock!(Client::abort_multipart_upload)
        .sequence()
        .http_status(404, Some(error_body("NoSuchUpload")))
        .build();
    let store = mocked_store(&[&part, &complete, &abort]);
    let upload = nodefleet_ports::MultipartUpload {
        key: "k".to_owned(),
        upload_id: "gone".to_owned(),
    };
    let parts = [nodefleet_ports::CompletedPart {
        number: 1,
        etag: "\"e\"".to_owned(),
    }];
    let results = [
        store
            .upload_part(&upload, 1, Bytes::from_static(b"x"))
            .await
            .map(|_| ()),
        store.complete_multipart(&upload, &parts).await.map(|_| ()),
        store.complete_multipart(&upload, &parts).await.map(|_| ()),
        store.complete_multipart(&upload, &parts).await.map(|_| ()),
        store.abort_multipart(&upload).await,
    ];
    for (result, code) in results.into_iter().zip([
        "NoSuchUpload",
        "NoSuchUpload",
        "EntityTooSmall",
        "InvalidPart",
        "NoSuchUpload",
    ]) {
        match result {
            Err(ObjectError::InvalidMultipart { key, message }) => {
                assert_eq!(key, "k");
                assert!(message.contains(code), "{message}");
            }
            other => panic!("{code} must be InvalidMultipart, got {other:?}"),
        }
    }
    assert_eq!(
        (part.num_calls(), complete.num_calls(), abort.num_calls()),
        (1, 3, 1)
    );
}

#[tokio::test]
async fn an_invalid_range_answer_is_invalid_range() {
    let get = mock!(Client::get_object)
        .sequence()
        .http_status(416, Some(error_body("InvalidRange")))
        .build();
    let store = mocked_store(&[&get]);
    match store
        .get("k", Some(nodefleet_ports::ByteRange::new(100, 200)))
        .await
    {
        Err(ObjectError::InvalidRange { key, start, end }) => {
            assert_eq!((key.as_str(), start, end), ("k", 100, 200))
        }
        other => panic!("expected InvalidRange, got {other:?}"),
    }
}
