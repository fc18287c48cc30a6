//! The `ObjectStore` contract: what every adapter (S3 on moto, the file system, the
//! in-memory fake) must do, one `pub async fn` per promise.
//!
//! Run it from an adapter's test file with [`object_store_contract!`](crate::object_store_contract):
//!
//! ```text
//! nodefleet_ports::object_store_contract!(async { MemoryObjectStore::new() });
//! // with a teardown that gets the store back after each test (delete a bucket, a folder):
//! nodefleet_ports::object_store_contract!(make_store(), |store| async move { drop_store(store).await });
//! ```
//!
//! Every case gets a fresh, empty store. Bodies are made with [`pattern`], whose bytes
//! repeat only every 251 bytes, so a range read from the wrong offset cannot pass by luck.
//! The multipart cases upload real 5 MiB parts ([`MIN_PART_SIZE`]) because the minimum
//! part size is one of the rules the stores must enforce.

use std::collections::BTreeSet;

use bytes::Bytes;

use crate::objects::{
    ByteRange, CompletedPart, MAX_PARTS, MIN_PART_SIZE, ObjectError, ObjectStore, put_multipart,
};

/// Expands into one `#[tokio::test]` per promise of the `ObjectStore` contract.
///
/// `$make` is an expression evaluated once per test (an `async` block or a call) whose
/// future yields a fresh, empty store; the optional `$teardown` is a closure that takes the
/// store back after the case and returns a future (to delete a bucket or a folder); the
/// optional `$gaps` is a [`KnownGaps`](crate::contract::object_store::KnownGaps) for an
/// emulator that deviates from S3 (default: none).
#[macro_export]
macro_rules! object_store_contract {
    (@cases $make:expr, $teardown:expr, $gaps:expr; $($case:ident),+ $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let store = $make.await;
                $crate::contract::object_store::$case(&store).await;
                ($teardown)(store).await;
            }
        )+
    };
    (@gapped_cases $make:expr, $teardown:expr, $gaps:expr; $($case:ident),+ $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let store = $make.await;
                let gaps: $crate::contract::object_store::KnownGaps = $gaps;
                $crate::contract::object_store::$case(&store, gaps).await;
                ($teardown)(store).await;
            }
        )+
    };
    ($make:expr) => {
        $crate::object_store_contract!($make, |_store| async {});
    };
    ($make:expr, $teardown:expr) => {
        $crate::object_store_contract!(
            $make,
            $teardown,
            $crate::contract::object_store::KnownGaps::NONE
        );
    };
    ($make:expr, $teardown:expr, $gaps:expr) => {
        $crate::object_store_contract!(@cases $make, $teardown, $gaps;
            put_then_get_round_trips,
            put_overwrites,
            head_reports_size_and_absence,
            get_of_absent_key_is_not_found,
            ranged_get_reads_the_covered_bytes,
            ranged_get_starting_at_or_past_the_end_is_invalid,
            list_filters_by_prefix,
            list_is_ascending_with_sizes,
            list_paginates_past_one_page,
            delete_removes_and_deleting_absent_is_fine,
            put_if_absent_creates_then_conflicts,
            put_if_absent_race_has_exactly_one_winner,
            put_multipart_round_trips,
            multipart_completes_with_explicit_parts,
            multipart_small_part_before_the_last_is_rejected,
            multipart_completion_checks_order_and_etags,
            multipart_part_numbers_are_checked,
            multipart_abort_leaves_nothing,
            multipart_upload_is_invisible_until_complete,
        );
        $crate::object_store_contract!(@gapped_cases $make, $teardown, $gaps;
            multipart_finished_uploads_are_gone,
        );
    };
}

/// Known deviations of an S3 emulator from S3, which the contract then checks in a weaker
/// form. Only a test backend sets one, with a comment naming the emulator and the test
/// that covers what the gap hides (the adapter's mapping of the real S3 answer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KnownGaps {
    /// `UploadPart` and `CompleteMultipartUpload` on an upload that was aborted or completed
    /// fail with a server error (moto 5.2.5: a 500 from a `KeyError`) instead of S3's 404
    /// `NoSuchUpload`; the contract then only requires that they fail.
    pub gone_upload_is_a_server_error: bool,
}

impl KnownGaps {
    /// A backend that behaves as S3 does.
    pub const NONE: KnownGaps = KnownGaps {
        gone_upload_is_a_server_error: false,
    };
}

/// `len` bytes that repeat only every 251 bytes (a prime), starting at `seed`.
pub fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|index| ((index % 251) as u8).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

/// Two minimum-size parts and a 1 MiB tail: a three-part upload at the smallest part size
/// S3 accepts.
fn multipart_body(seed: u8) -> Bytes {
    let min_part = usize::try_from(MIN_PART_SIZE).unwrap_or(usize::MAX);
    pattern(2 * min_part + 1024 * 1024, seed)
}

fn min_part_len() -> usize {
    usize::try_from(MIN_PART_SIZE).unwrap_or(usize::MAX)
}

async fn get_all<S: ObjectStore + ?Sized>(store: &S, key: &str) -> Bytes {
    match store.get(key, None).await {
        Ok(body) => body,
        Err(error) => panic!("get {key}: {error}"),
    }
}

async fn list_all<S: ObjectStore + ?Sized>(store: &S, prefix: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let page = store
            .list(prefix, token.as_deref(), 1000)
            .await
            .expect("list");
        keys.extend(page.objects.into_iter().map(|meta| meta.key));
        match page.next {
            Some(next) => token = Some(next),
            None => return keys,
        }
    }
}

fn assert_invalid_multipart<T: std::fmt::Debug>(result: Result<T, ObjectError>, what: &str) {
    match result {
        Err(ObjectError::InvalidMultipart { .. }) => {}
        other => panic!("{what}: expected InvalidMultipart, got {other:?}"),
    }
}

/// Bodies come back byte-exact, the empty one included, under keys with nested slashes;
/// `put` reports the key and size it stored.
pub async fn put_then_get_round_trips<S: ObjectStore + ?Sized>(store: &S) {
    let cases = [
        ("manifest.json", Bytes::from_static(b"{\"height\":1}")),
        ("chunks/ab/cd/abcdef0123", pattern(70_000, 7)),
        ("chunks/ab/cd/empty", Bytes::new()),
        ("a/b/c/d/e/f/deep", pattern(3, 200)),
    ];
    for (key, body) in &cases {
        let meta = store.put(key, body.clone()).await.expect("put");
        assert_eq!(meta.key, *key);
        assert_eq!(meta.size, body.len() as u64, "{key}");
    }
    for (key, body) in &cases {
        assert_eq!(get_all(store, key).await, *body, "{key}");
    }
}

/// A second `put` replaces the object: new body, new size, new etag.
pub async fn put_overwrites<S: ObjectStore + ?Sized>(store: &S) {
    let first = store
        .put("refs/head", pattern(100, 1))
        .await
        .expect("first put");
    let second = store
        .put("refs/head", pattern(40, 2))
        .await
        .expect("second put");
    assert_eq!(get_all(store, "refs/head").await, pattern(40, 2));
    let head = store
        .head("refs/head")
        .await
        .expect("head")
        .expect("exists");
    assert_eq!(head.size, 40);
    assert_eq!(head.etag, second.etag);
    assert_ne!(first.etag, second.etag, "a new body must get a new etag");
}

/// `head` gives the size and an etag of a present object and `None` for an absent one.
pub async fn head_reports_size_and_absence<S: ObjectStore + ?Sized>(store: &S) {
    let put = store
        .put("chunks/00/head-me", pattern(1234, 3))
        .await
        .expect("put");
    let head = store
        .head("chunks/00/head-me")
        .await
        .expect("head")
        .expect("present object has metadata");
    assert_eq!(head.key, "chunks/00/head-me");
    assert_eq!(head.size, 1234);
    assert!(head.etag.is_some(), "an etag is reported");
    assert_eq!(head.etag, put.etag, "head reports the etag put returned");
    assert_eq!(store.head("chunks/00/absent").await.expect("head"), None);
    assert_eq!(store.head("nowhere/at/all").await.expect("head"), None);
}

/// Reading an absent key is `NotFound`, whole or ranged.
pub async fn get_of_absent_key_is_not_found<S: ObjectStore + ?Sized>(store: &S) {
    for range in [None, Some(ByteRange::new(0, 10))] {
        match store.get("missing/key", range).await {
            Err(ObjectError::NotFound { key }) => assert_eq!(key, "missing/key"),
            other => panic!("expected NotFound, got {other:?}"),
        }
    }
}

/// A range reads exactly its bytes: the middle, up to the end, and past the end (cut at
/// the end).
pub async fn ranged_get_reads_the_covered_bytes<S: ObjectStore + ?Sized>(store: &S) {
    let body = pattern(1000, 9);
    store.put("ranged/object", body.clone()).await.expect("put");
    for (start, end, expected) in [
        (100, 350, body.slice(100..350)),
        (0, 1, body.slice(0..1)),
        (999, 1000, body.slice(999..1000)),
        (600, 1000, body.slice(600..1000)),
        (600, 5000, body.slice(600..1000)),
        (0, u64::MAX, body.clone()),
    ] {
        let got = store
            .get("ranged/object", Some(ByteRange::new(start, end)))
            .await
            .unwrap_or_else(|error| panic!("range {start}..{end}: {error}"));
        assert_eq!(got, expected, "range {start}..{end}");
    }
}

/// A range that starts at or after the end, or is empty, is `InvalidRange`.
pub async fn ranged_get_starting_at_or_past_the_end_is_invalid<S: ObjectStore + ?Sized>(store: &S) {
    store
        .put("ranged/short", pattern(10, 0))
        .await
        .expect("put");
    for (start, end) in [(10, 20), (11, 12), (500, 1000), (4, 4), (6, 5)] {
        match store
            .get("ranged/short", Some(ByteRange::new(start, end)))
            .await
        {
            Err(ObjectError::InvalidRange { key, .. }) => assert_eq!(key, "ranged/short"),
            other => panic!("range {start}..{end}: expected InvalidRange, got {other:?}"),
        }
    }
}

/// `list` returns exactly the keys that start with the prefix (a string prefix, not a
/// folder), and an empty last page for a prefix nothing has.
pub async fn list_filters_by_prefix<S: ObjectStore + ?Sized>(store: &S) {
    for key in ["a/1", "a/2", "ab", "b/1", "a/x/deep"] {
        store.put(key, pattern(5, 1)).await.expect("put");
    }
    assert_eq!(list_all(store, "a/").await, ["a/1", "a/2", "a/x/deep"]);
    assert_eq!(list_all(store, "a").await, ["a/1", "a/2", "a/x/deep", "ab"]);
    assert_eq!(list_all(store, "b/").await, ["b/1"]);
    assert_eq!(list_all(store, "").await.len(), 5);
    let nothing = store.list("zzz/", None, 10).await.expect("list");
    assert!(nothing.objects.is_empty());
    assert_eq!(nothing.next, None);
}

/// Keys come back in ascending byte order with their sizes: `m/a-` < `m/a/b` < `m/a0`
/// (`-` < `/` < `0`), so a store that lists a folder's files before its subfolders, or
/// sorts per folder, fails.
pub async fn list_is_ascending_with_sizes<S: ObjectStore + ?Sized>(store: &S) {
    let keys = ["m/z", "m/a0", "m/B", "m/a/b", "m/_", "m/a-", "m/0"];
    for (size, key) in keys.iter().enumerate() {
        store.put(key, pattern(size, 0)).await.expect("put");
    }
    let page = store.list("m/", None, 100).await.expect("list");
    let listed: Vec<&str> = page.objects.iter().map(|meta| meta.key.as_str()).collect();
    let mut expected = keys.to_vec();
    expected.sort_unstable();
    assert_eq!(listed, expected);
    assert_eq!(page.next, None);
    for meta in &page.objects {
        let size = keys
            .iter()
            .position(|key| *key == meta.key)
            .expect("known key");
        assert_eq!(meta.size, size as u64, "{}", meta.key);
    }
}

/// 25 keys in pages of 10: three pages (10, 10, 5), a token on all but the last, every key
/// exactly once, ascending across pages.
pub async fn list_paginates_past_one_page<S: ObjectStore + ?Sized>(store: &S) {
    let mut expected = BTreeSet::new();
    for index in 0..25 {
        let key = format!("paged/{index:03}/chunk");
        store.put(&key, pattern(1, 0)).await.expect("put");
        expected.insert(key);
    }
    // Noise outside the prefix must not leak into the pages.
    store.put("paged0", pattern(1, 0)).await.expect("put");
    store.put("pagea/x", pattern(1, 0)).await.expect("put");

    let mut seen = Vec::new();
    let mut page_sizes = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = store
            .list("paged/", token.as_deref(), 10)
            .await
            .expect("list");
        page_sizes.push(page.objects.len());
        seen.extend(page.objects.into_iter().map(|meta| meta.key));
        match page.next {
            Some(next) => token = Some(next),
            None => break,
        }
        assert!(page_sizes.len() < 10, "pagination does not end");
    }
    assert_eq!(page_sizes, [10, 10, 5]);
    assert_eq!(seen, expected.into_iter().collect::<Vec<_>>());
}

/// `delete` removes the object from reads and listings; deleting it again, or a key that
/// never existed, is fine.
pub async fn delete_removes_and_deleting_absent_is_fine<S: ObjectStore + ?Sized>(store: &S) {
    store
        .put("chunks/ff/gone", pattern(10, 0))
        .await
        .expect("put");
    store
        .put("chunks/ff/kept", pattern(10, 0))
        .await
        .expect("put");
    store.delete("chunks/ff/gone").await.expect("delete");
    assert_eq!(store.head("chunks/ff/gone").await.expect("head"), None);
    assert!(matches!(
        store.get("chunks/ff/gone", None).await,
        Err(ObjectError::NotFound { .. })
    ));
    assert_eq!(list_all(store, "chunks/").await, ["chunks/ff/kept"]);
    store.delete("chunks/ff/gone").await.expect("delete again");
    store.delete("never/existed").await.expect("delete absent");
    assert_eq!(get_all(store, "chunks/ff/kept").await, pattern(10, 0));
}

/// `put_if_absent` creates a free key; on a taken key it is `AlreadyExists` and the object
/// is untouched; after a delete the key is free again.
pub async fn put_if_absent_creates_then_conflicts<S: ObjectStore + ?Sized>(store: &S) {
    let created = store
        .put_if_absent("refs/latest", Bytes::from_static(b"snapshot-1"))
        .await
        .expect("create");
    assert_eq!(created.key, "refs/latest");
    assert_eq!(created.size, 10);
    match store
        .put_if_absent("refs/latest", Bytes::from_static(b"snapshot-2"))
        .await
    {
        Err(ObjectError::AlreadyExists { key }) => assert_eq!(key, "refs/latest"),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(get_all(store, "refs/latest").await, "snapshot-1");
    store.delete("refs/latest").await.expect("delete");
    store
        .put_if_absent("refs/latest", Bytes::from_static(b"snapshot-3"))
        .await
        .expect("create after delete");
    assert_eq!(get_all(store, "refs/latest").await, "snapshot-3");
}

/// How many creators race in [`put_if_absent_race_has_exactly_one_winner`]: enough that
/// several requests are in flight at once on every adapter.
pub const RACERS: usize = 20;

/// [`RACERS`] concurrent `put_if_absent` calls on one key: exactly one succeeds, the rest
/// are `AlreadyExists`, and the stored body is the winner's.
pub async fn put_if_absent_race_has_exactly_one_winner<S: ObjectStore + Clone + 'static>(
    store: &S,
) {
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(RACERS));
    let mut racers = tokio::task::JoinSet::new();
    for racer in 0..RACERS {
        let store = store.clone();
        let start = start.clone();
        racers.spawn(async move {
            let body = Bytes::from(format!("racer-{racer}"));
            start.wait().await;
            (racer, store.put_if_absent("refs/raced", body).await)
        });
    }
    let mut winners = Vec::new();
    while let Some(joined) = racers.join_next().await {
        let (racer, result) = joined.expect("racer task");
        match result {
            Ok(_) => winners.push(racer),
            Err(ObjectError::AlreadyExists { .. }) => {}
            Err(other) => panic!("racer {racer}: unexpected {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    assert_eq!(
        get_all(store, "refs/raced").await,
        format!("racer-{}", winners[0])
    );
}

/// `put_multipart` in minimum-size parts (three parts, the last one short) round-trips
/// byte-exact, and a range across a part boundary reads the right bytes. A small body
/// goes up as a single short part.
pub async fn put_multipart_round_trips<S: ObjectStore + ?Sized>(store: &S) {
    let body = multipart_body(11);
    let meta = put_multipart(store, "snapshots/1/blob", body.clone(), MIN_PART_SIZE)
        .await
        .expect("put_multipart");
    assert_eq!(meta.key, "snapshots/1/blob");
    assert_eq!(meta.size, body.len() as u64);
    assert_eq!(get_all(store, "snapshots/1/blob").await, body);
    let head = store
        .head("snapshots/1/blob")
        .await
        .expect("head")
        .expect("present");
    assert_eq!(head.size, body.len() as u64);
    let boundary = MIN_PART_SIZE;
    let across = store
        .get(
            "snapshots/1/blob",
            Some(ByteRange::new(boundary - 300, boundary + 300)),
        )
        .await
        .expect("ranged get across a part boundary");
    let boundary = min_part_len();
    assert_eq!(across, body.slice(boundary - 300..boundary + 300));

    let small = pattern(4096, 5);
    put_multipart(store, "snapshots/1/small", small.clone(), MIN_PART_SIZE)
        .await
        .expect("single-part upload");
    assert_eq!(get_all(store, "snapshots/1/small").await, small);
}

/// The parts can be uploaded in any order (and one re-uploaded); completion with the
/// ascending list of the last etags assembles them in number order.
pub async fn multipart_completes_with_explicit_parts<S: ObjectStore + ?Sized>(store: &S) {
    let min_part = min_part_len();
    let first = pattern(min_part, 1);
    let second = pattern(min_part, 2);
    let last = pattern(777, 3);
    let upload = store
        .create_multipart("explicit/object")
        .await
        .expect("create");
    assert_eq!(upload.key, "explicit/object");
    let part3 = store
        .upload_part(&upload, 3, last.clone())
        .await
        .expect("part 3");
    // A first attempt at part 1 that is replaced by a second upload of the number.
    store
        .upload_part(&upload, 1, pattern(min_part, 99))
        .await
        .expect("part 1, first attempt");
    let part1 = store
        .upload_part(&upload, 1, first.clone())
        .await
        .expect("part 1");
    let part2 = store
        .upload_part(&upload, 2, second.clone())
        .await
        .expect("part 2");
    assert_eq!((part1.number, part2.number, part3.number), (1, 2, 3));
    let meta = store
        .complete_multipart(&upload, &[part1, part2, part3])
        .await
        .expect("complete");
    let expected: Vec<u8> = [first, second, last].concat();
    assert_eq!(meta.size, expected.len() as u64);
    assert_eq!(get_all(store, "explicit/object").await, expected);
}

/// A part below [`MIN_PART_SIZE`] that is not the last fails completion with
/// `InvalidMultipart`, publishes nothing, and the upload can still be aborted.
pub async fn multipart_small_part_before_the_last_is_rejected<S: ObjectStore + ?Sized>(store: &S) {
    let upload = store.create_multipart("small/parts").await.expect("create");
    let small = store
        .upload_part(&upload, 1, pattern(min_part_len() - 1, 0))
        .await
        .expect("a small part is accepted until completion");
    let last = store
        .upload_part(&upload, 2, pattern(min_part_len(), 1))
        .await
        .expect("part 2");
    assert_invalid_multipart(
        store.complete_multipart(&upload, &[small, last]).await,
        "completion with a small first part",
    );
    assert_eq!(store.head("small/parts").await.expect("head"), None);
    store
        .abort_multipart(&upload)
        .await
        .expect("the failed upload is still there to abort");
}

/// Completion names the parts in strictly ascending order with the etags `upload_part`
/// returned; anything else is `InvalidMultipart` and publishes nothing.
pub async fn multipart_completion_checks_order_and_etags<S: ObjectStore + ?Sized>(store: &S) {
    let upload = store
        .create_multipart("checked/parts")
        .await
        .expect("create");
    let part1 = store
        .upload_part(&upload, 1, pattern(min_part_len(), 1))
        .await
        .expect("part 1");
    let part2 = store
        .upload_part(&upload, 2, pattern(100, 2))
        .await
        .expect("part 2");
    assert_invalid_multipart(
        store
            .complete_multipart(&upload, &[part2.clone(), part1.clone()])
            .await,
        "descending parts",
    );
    assert_invalid_multipart(
        store
            .complete_multipart(&upload, &[part1.clone(), part1.clone(), part2.clone()])
            .await,
        "a repeated part",
    );
    let wrong_etag = CompletedPart {
        number: 2,
        etag: part1.etag.clone(),
    };
    assert_invalid_multipart(
        store
            .complete_multipart(&upload, &[part1.clone(), wrong_etag])
            .await,
        "an etag of another part",
    );
    let never_uploaded = CompletedPart {
        number: 3,
        etag: part2.etag.clone(),
    };
    assert_invalid_multipart(
        store
            .complete_multipart(&upload, &[part1.clone(), part2.clone(), never_uploaded])
            .await,
        "a part that was never uploaded",
    );
    assert_eq!(store.head("checked/parts").await.expect("head"), None);
    // The failures left the upload intact: the right list still completes it.
    store
        .complete_multipart(&upload, &[part1, part2])
        .await
        .expect("complete");
    assert_eq!(
        get_all(store, "checked/parts").await.len(),
        min_part_len() + 100
    );
}

/// Part numbers outside 1..=[`MAX_PARTS`] are `InvalidMultipart`.
pub async fn multipart_part_numbers_are_checked<S: ObjectStore + ?Sized>(store: &S) {
    let upload = store
        .create_multipart("numbers/object")
        .await
        .expect("create");
    for number in [0, MAX_PARTS + 1] {
        assert_invalid_multipart(
            store.upload_part(&upload, number, pattern(10, 0)).await,
            &format!("part number {number}"),
        );
    }
    store
        .upload_part(&upload, MAX_PARTS, pattern(10, 0))
        .await
        .expect("the highest part number is fine");
    store.abort_multipart(&upload).await.expect("abort");
}

/// An aborted upload leaves no object, and aborting it again is `InvalidMultipart` (S3's
/// `NoSuchUpload`).
pub async fn multipart_abort_leaves_nothing<S: ObjectStore + ?Sized>(store: &S) {
    let upload = store
        .create_multipart("aborted/object")
        .await
        .expect("create");
    store
        .upload_part(&upload, 1, pattern(1000, 0))
        .await
        .expect("part");
    store.abort_multipart(&upload).await.expect("abort");
    assert_eq!(store.head("aborted/object").await.expect("head"), None);
    assert!(matches!(
        store.get("aborted/object", None).await,
        Err(ObjectError::NotFound { .. })
    ));
    assert!(list_all(store, "").await.is_empty(), "nothing is listed");
    assert_invalid_multipart(
        store.abort_multipart(&upload).await,
        "aborting an aborted upload",
    );
}

/// A completed or aborted upload is gone: uploading a part to it or completing it fails
/// with `InvalidMultipart` (S3's `NoSuchUpload`) and publishes nothing.
pub async fn multipart_finished_uploads_are_gone<S: ObjectStore + ?Sized>(
    store: &S,
    gaps: KnownGaps,
) {
    let expect_gone = |result: Result<(), ObjectError>, what: &str| {
        if gaps.gone_upload_is_a_server_error {
            assert!(result.is_err(), "{what}: expected an error, got Ok");
        } else {
            assert_invalid_multipart(result, what);
        }
    };

    let completed = store
        .create_multipart("finished/completed")
        .await
        .expect("create");
    let part = store
        .upload_part(&completed, 1, pattern(100, 1))
        .await
        .expect("part");
    store
        .complete_multipart(&completed, &[part])
        .await
        .expect("complete");
    expect_gone(
        store
            .upload_part(&completed, 2, pattern(10, 0))
            .await
            .map(|_| ()),
        "a part for a completed upload",
    );
    assert_eq!(get_all(store, "finished/completed").await, pattern(100, 1));

    let aborted = store
        .create_multipart("finished/aborted")
        .await
        .expect("create");
    let part = store
        .upload_part(&aborted, 1, pattern(100, 2))
        .await
        .expect("part");
    store.abort_multipart(&aborted).await.expect("abort");
    expect_gone(
        store
            .complete_multipart(&aborted, &[part])
            .await
            .map(|_| ()),
        "completing an aborted upload",
    );
    expect_gone(
        store
            .upload_part(&aborted, 2, pattern(10, 0))
            .await
            .map(|_| ()),
        "a part for an aborted upload",
    );
    assert_eq!(store.head("finished/aborted").await.expect("head"), None);
}

/// An object uploaded in parts is invisible (head, get, list) until completion, and a
/// previous object under the key stays readable until then.
pub async fn multipart_upload_is_invisible_until_complete<S: ObjectStore + ?Sized>(store: &S) {
    store
        .put("visible/previous", Bytes::from_static(b"old"))
        .await
        .expect("put");
    let fresh = store
        .create_multipart("visible/fresh")
        .await
        .expect("create");
    let replacing = store
        .create_multipart("visible/previous")
        .await
        .expect("create");
    let body = multipart_body(21);
    let (head_part, tail_part) = body.split_at(min_part_len());
    let mut fresh_parts = Vec::new();
    let mut replacing_parts = Vec::new();
    for (number, chunk) in [(1, head_part), (2, tail_part)] {
        let chunk = Bytes::copy_from_slice(chunk);
        fresh_parts.push(
            store
                .upload_part(&fresh, number, chunk.clone())
                .await
                .expect("part"),
        );
        replacing_parts.push(
            store
                .upload_part(&replacing, number, chunk)
                .await
                .expect("part"),
        );
    }
    assert_eq!(store.head("visible/fresh").await.expect("head"), None);
    assert!(matches!(
        store.get("visible/fresh", None).await,
        Err(ObjectError::NotFound { .. })
    ));
    assert_eq!(list_all(store, "visible/").await, ["visible/previous"]);
    assert_eq!(get_all(store, "visible/previous").await, "old");

    store
        .complete_multipart(&fresh, &fresh_parts)
        .await
        .expect("complete fresh");
    store
        .complete_multipart(&replacing, &replacing_parts)
        .await
        .expect("complete replacing");
    assert_eq!(
        list_all(store, "visible/").await,
        ["visible/fresh", "visible/previous"]
    );
    assert_eq!(get_all(store, "visible/fresh").await, body);
    assert_eq!(get_all(store, "visible/previous").await, body);
}
