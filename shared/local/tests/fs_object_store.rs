//! `FsObjectStore` against the `ObjectStore` contract (in a fresh folder per test), plus the
//! promises only a file system can break: a reader never sees a half-written object, keys
//! cannot reach outside the root, the store's own folders stay out of listings and are
//! cleaned up, and an object cannot also be a folder.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use nodefleet_local::objects::{FsObjectStore, FsStoreError, STALE_TEMP_AGE};
use nodefleet_ports::contract::object_store::pattern;
use nodefleet_ports::model::unique_suffix;
use nodefleet_ports::{ObjectError, ObjectStore, StoreUrl};

/// A fresh folder under the system's temp folder, for one test.
fn scratch_root() -> PathBuf {
    std::env::temp_dir().join(format!("nodefleet-fs-objects-{}", unique_suffix()))
}

async fn fresh_store() -> FsObjectStore {
    FsObjectStore::open(scratch_root()).unwrap()
}

async fn remove_store(store: FsObjectStore) {
    tokio::fs::remove_dir_all(store.root()).await.unwrap();
}

nodefleet_ports::object_store_contract!(fresh_store(), remove_store);

/// The entries directly in `dir`, sorted.
fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_never_see_a_half_written_object() {
    let store = fresh_store().await;
    // Big enough that writing one takes many write(2) calls and some milliseconds.
    let bodies = [pattern(16 << 20, 1), pattern(16 << 20, 2)];
    store
        .put("snapshots/latest", bodies[0].clone())
        .await
        .unwrap();

    let writer = {
        let store = store.clone();
        let bodies = bodies.clone();
        tokio::spawn(async move {
            for round in 0..12 {
                store
                    .put("snapshots/latest", bodies[round % 2].clone())
                    .await
                    .unwrap();
            }
        })
    };
    let mut reads = 0;
    let mut ranged_reads = 0;
    while !writer.is_finished() {
        let whole = store.get("snapshots/latest", None).await.unwrap();
        assert!(
            whole == bodies[0] || whole == bodies[1],
            "read {} bytes that are neither version",
            whole.len()
        );
        reads += 1;
        let meta = store.head("snapshots/latest").await.unwrap().unwrap();
        assert_eq!(meta.size, 16 << 20, "head saw a partial size");
        // The tail of the object is the last part written: a partial file would lack it.
        let tail = store
            .get(
                "snapshots/latest",
                Some(nodefleet_ports::ByteRange::new((16 << 20) - 100, 16 << 20)),
            )
            .await
            .unwrap();
        assert!(
            tail == bodies[0].slice((16 << 20) - 100..)
                || tail == bodies[1].slice((16 << 20) - 100..)
        );
        ranged_reads += 1;
    }
    writer.await.unwrap();
    assert!(reads > 0 && ranged_reads > 0);
    remove_store(store).await;
}

#[tokio::test]
async fn keys_that_leave_the_root_are_rejected() {
    let parent = scratch_root();
    let store = FsObjectStore::open(parent.join("store")).unwrap();
    for key in [
        "../escaped",
        "a/../../escaped",
        "/tmp/escaped",
        "./a",
        "a//b",
        "a/",
        "",
        ".tmp/x",
        ".multipart/x",
    ] {
        for result in [
            store.put(key, Bytes::from_static(b"x")).await.map(|_| ()),
            store
                .put_if_absent(key, Bytes::from_static(b"x"))
                .await
                .map(|_| ()),
            store.get(key, None).await.map(|_| ()),
            store.head(key).await.map(|_| ()),
            store.delete(key).await,
            store.create_multipart(key).await.map(|_| ()),
        ] {
            match result {
                Err(ObjectError::InvalidKey { key: rejected, .. }) => assert_eq!(rejected, key),
                other => panic!("{key:?}: expected a rejection, got {other:?}"),
            }
        }
    }
    assert_eq!(
        entries(&parent),
        ["store"],
        "nothing was written outside the root"
    );
    assert_eq!(entries(&parent.join("store")), [".multipart", ".tmp"]);
    std::fs::remove_dir_all(parent).unwrap();
}

#[tokio::test]
async fn upload_ids_cannot_name_other_folders() {
    let store = fresh_store().await;
    store
        .put("victim", Bytes::from_static(b"keep me"))
        .await
        .unwrap();
    for upload_id in ["../..", "../../victim", "", "x/y"] {
        let upload = nodefleet_ports::MultipartUpload {
            key: "victim".to_owned(),
            upload_id: upload_id.to_owned(),
        };
        assert!(matches!(
            store.abort_multipart(&upload).await,
            Err(ObjectError::InvalidMultipart { .. })
        ));
        assert!(matches!(
            store
                .upload_part(&upload, 1, Bytes::from_static(b"x"))
                .await,
            Err(ObjectError::InvalidMultipart { .. })
        ));
    }
    assert_eq!(store.get("victim", None).await.unwrap(), "keep me");
    remove_store(store).await;
}

#[tokio::test]
async fn an_upload_belongs_to_its_key() {
    let store = fresh_store().await;
    let upload = store.create_multipart("mine").await.unwrap();
    let part = store.upload_part(&upload, 1, pattern(10, 0)).await.unwrap();
    let foreign = nodefleet_ports::MultipartUpload {
        key: "theirs".to_owned(),
        upload_id: upload.upload_id.clone(),
    };
    assert!(matches!(
        store
            .complete_multipart(&foreign, std::slice::from_ref(&part))
            .await,
        Err(ObjectError::InvalidMultipart { .. })
    ));
    assert_eq!(store.head("theirs").await.unwrap(), None);
    store.complete_multipart(&upload, &[part]).await.unwrap();
    assert_eq!(store.get("mine", None).await.unwrap(), pattern(10, 0));
    remove_store(store).await;
}

#[tokio::test]
async fn internal_folders_stay_out_of_listings_and_leave_nothing_behind() {
    let store = fresh_store().await;
    store.put("a/b/c", pattern(10, 0)).await.unwrap();
    store.put_if_absent("a/d", pattern(10, 0)).await.unwrap();
    let pending = store.create_multipart("a/pending").await.unwrap();
    store
        .upload_part(&pending, 1, pattern(10, 0))
        .await
        .unwrap();
    let page = store.list("", None, 100).await.unwrap();
    let keys: Vec<&str> = page.objects.iter().map(|meta| meta.key.as_str()).collect();
    assert_eq!(keys, ["a/b/c", "a/d"]);
    assert!(
        entries(&store.root().join(".tmp")).is_empty(),
        "no temp file leaked"
    );
    assert_eq!(entries(&store.root().join(".multipart")).len(), 1);

    store.abort_multipart(&pending).await.unwrap();
    store.delete("a/b/c").await.unwrap();
    store.delete("a/d").await.unwrap();
    assert!(entries(&store.root().join(".tmp")).is_empty());
    assert!(entries(&store.root().join(".multipart")).is_empty());
    assert_eq!(
        entries(store.root()),
        [".multipart", ".tmp"],
        "deleting the last objects removed their empty folders"
    );
    remove_store(store).await;
}

#[tokio::test]
async fn open_removes_stale_temp_files_only() {
    let root = scratch_root();
    let store = FsObjectStore::open(&root).unwrap();
    let stale = root.join(".tmp/left-by-a-crash");
    let fresh = root.join(".tmp/being-written");
    std::fs::write(&stale, b"x").unwrap();
    std::fs::write(&fresh, b"x").unwrap();
    let long_ago = SystemTime::now() - STALE_TEMP_AGE - Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(long_ago)
        .unwrap();
    FsObjectStore::open(&root).unwrap();
    assert_eq!(entries(&root.join(".tmp")), ["being-written"]);
    remove_store(store).await;
}

#[tokio::test]
async fn an_object_cannot_also_be_a_folder() {
    let store = fresh_store().await;
    store.put("a", pattern(3, 0)).await.unwrap();
    for result in [
        store.put("a/b", pattern(3, 0)).await,
        store.put_if_absent("a/b", pattern(3, 0)).await,
    ] {
        match result {
            Err(ObjectError::Backend { message }) => {
                assert!(message.contains("conflict"), "{message}")
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
    }
    assert!(matches!(
        store.get("a/b", None).await,
        Err(ObjectError::NotFound { .. })
    ));
    assert_eq!(store.head("a/b").await.unwrap(), None);
    store.delete("a/b").await.unwrap();

    store.put("x/y", pattern(3, 0)).await.unwrap();
    match store.put("x", pattern(3, 0)).await {
        Err(ObjectError::Backend { message }) => assert!(message.contains("conflict"), "{message}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        store.head("x").await.unwrap(),
        None,
        "a folder is not an object"
    );
    store.delete("x").await.unwrap();
    assert_eq!(store.get("x/y", None).await.unwrap(), pattern(3, 0));
    remove_store(store).await;
}

#[tokio::test]
async fn opens_from_file_urls_only() {
    let root = scratch_root();
    let url = StoreUrl::parse(&format!("file://{}", root.display())).unwrap();
    let store = FsObjectStore::from_url(&url).unwrap();
    assert_eq!(store.root(), root);
    store.put("k", Bytes::from_static(b"v")).await.unwrap();
    assert_eq!(std::fs::read(root.join("k")).unwrap(), b"v");

    let s3 = StoreUrl::parse("s3://bucket/prefix").unwrap();
    match FsObjectStore::from_url(&s3) {
        Err(error @ FsStoreError::NotAFileUrl(_)) => {
            assert!(error.to_string().contains("file://"), "{error}")
        }
        other => panic!("expected NotAFileUrl, got {other:?}"),
    }
    remove_store(store).await;
}
