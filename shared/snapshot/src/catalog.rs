//! Reading and writing the catalog objects of a store: manifests and `latest` refs (layout
//! in [`crate::format`]). Every operation goes through here, so the encoding is in one place.

use bytes::Bytes;
use nodefleet_ports::{ObjectError, ObjectStore};

use crate::error::SnapshotError;
use crate::format::{
    FORMAT_VERSION, LATEST_REF_PREFIX, MANIFESTS_PREFIX, Manifest, RefRecord, generation_of,
    latest_ref_key, manifest_key,
};

/// zstd level for manifests: fast, and hashes do not compress harder at higher levels.
const MANIFEST_ZSTD_LEVEL: i32 = 3;

/// Listing page size: S3's maximum.
const LIST_PAGE: u32 = 1000;

/// Which snapshot an operation means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Latest,
    Id(String),
}

impl Selector {
    /// `latest` or an id.
    pub fn parse(text: &str) -> Selector {
        if text == "latest" {
            Selector::Latest
        } else {
            Selector::Id(text.to_owned())
        }
    }
}

/// The manifest's bytes as stored: JSON compressed with zstd.
pub fn encode_manifest(manifest: &Manifest) -> Result<Vec<u8>, SnapshotError> {
    let json = serde_json::to_vec(manifest).map_err(|e| SnapshotError::BadManifest {
        snapshot: manifest.id.clone(),
        reason: format!("cannot encode: {e}"),
    })?;
    zstd::bulk::compress(&json, MANIFEST_ZSTD_LEVEL).map_err(|e| SnapshotError::BadManifest {
        snapshot: manifest.id.clone(),
        reason: format!("cannot compress: {e}"),
    })
}

/// Reads a stored manifest back, refusing anything truncated, corrupt or of another format.
pub fn decode_manifest(snapshot: &str, bytes: &[u8]) -> Result<Manifest, SnapshotError> {
    let bad = |reason: String| SnapshotError::BadManifest {
        snapshot: snapshot.to_owned(),
        reason,
    };
    let json =
        zstd::stream::decode_all(bytes).map_err(|e| bad(format!("not a zstd frame: {e}")))?;
    let manifest: Manifest =
        serde_json::from_slice(&json).map_err(|e| bad(format!("not a manifest: {e}")))?;
    if manifest.format != FORMAT_VERSION {
        return Err(bad(format!(
            "format {} (this build reads {FORMAT_VERSION})",
            manifest.format
        )));
    }
    if manifest.id != snapshot {
        return Err(bad(format!("it names itself {}", manifest.id)));
    }
    Ok(manifest)
}

pub async fn write_manifest(
    store: &dyn ObjectStore,
    manifest: &Manifest,
) -> Result<u64, SnapshotError> {
    let body = encode_manifest(manifest)?;
    let len = body.len() as u64;
    store
        .put(&manifest_key(&manifest.id), Bytes::from(body))
        .await?;
    Ok(len)
}

pub async fn read_manifest(
    store: &dyn ObjectStore,
    snapshot: &str,
) -> Result<Manifest, SnapshotError> {
    match store.get(&manifest_key(snapshot), None).await {
        Ok(bytes) => decode_manifest(snapshot, &bytes),
        Err(ObjectError::NotFound { .. }) => Err(SnapshotError::NotFound(snapshot.to_owned())),
        Err(error) => Err(error.into()),
    }
}

/// Every key under `prefix`, following pagination.
pub async fn list_keys(
    store: &dyn ObjectStore,
    prefix: &str,
) -> Result<Vec<String>, SnapshotError> {
    let mut keys = Vec::new();
    let mut continuation: Option<String> = None;
    loop {
        let page = store
            .list(prefix, continuation.as_deref(), LIST_PAGE)
            .await?;
        keys.extend(page.objects.into_iter().map(|o| o.key));
        match page.next {
            Some(next) => continuation = Some(next),
            None => return Ok(keys),
        }
    }
}

/// Ids of every manifest in the store, oldest first (ids sort by creation time).
pub async fn manifest_ids(store: &dyn ObjectStore) -> Result<Vec<String>, SnapshotError> {
    let mut ids: Vec<String> = list_keys(store, MANIFESTS_PREFIX)
        .await?
        .into_iter()
        .filter_map(|key| key.strip_prefix(MANIFESTS_PREFIX).map(str::to_owned))
        .collect();
    ids.sort();
    Ok(ids)
}

/// Every published generation of `latest`, oldest first.
pub async fn latest_refs(store: &dyn ObjectStore) -> Result<Vec<RefRecord>, SnapshotError> {
    let mut generations: Vec<u64> = list_keys(store, LATEST_REF_PREFIX)
        .await?
        .iter()
        .filter_map(|key| generation_of(key))
        .collect();
    generations.sort_unstable();
    let mut refs = Vec::with_capacity(generations.len());
    for generation in generations {
        refs.push(read_ref(store, generation).await?);
    }
    Ok(refs)
}

/// The current `latest`: the highest generation, or `None` if nothing was ever published.
pub async fn latest(store: &dyn ObjectStore) -> Result<Option<RefRecord>, SnapshotError> {
    let newest = list_keys(store, LATEST_REF_PREFIX)
        .await?
        .iter()
        .filter_map(|key| generation_of(key))
        .max();
    match newest {
        Some(generation) => Ok(Some(read_ref(store, generation).await?)),
        None => Ok(None),
    }
}

async fn read_ref(store: &dyn ObjectStore, generation: u64) -> Result<RefRecord, SnapshotError> {
    let key = latest_ref_key(generation);
    let bytes = store.get(&key, None).await?;
    serde_json::from_slice(&bytes).map_err(|e| SnapshotError::BadManifest {
        snapshot: key,
        reason: format!("unreadable ref: {e}"),
    })
}

/// The snapshot id `selector` names; `latest` in a store with none is `NotFound`.
pub async fn resolve(
    store: &dyn ObjectStore,
    selector: &Selector,
) -> Result<String, SnapshotError> {
    match selector {
        Selector::Id(id) => Ok(id.clone()),
        Selector::Latest => latest(store)
            .await?
            .map(|r| r.snapshot)
            .ok_or_else(|| SnapshotError::NotFound("latest".to_owned())),
    }
}

/// Publishes `snapshot` as the next generation of `latest`, with a conditional create: if
/// someone else took that generation first, [`SnapshotError::PublishRace`] (retryable: the
/// caller may re-read and try the next one, or give up).
pub async fn publish(
    store: &dyn ObjectStore,
    snapshot: &str,
    now_ms: u64,
) -> Result<RefRecord, SnapshotError> {
    let generation = latest(store).await?.map_or(1, |r| r.generation + 1);
    let record = RefRecord {
        snapshot: snapshot.to_owned(),
        generation,
        published_at_ms: now_ms,
    };
    let body = serde_json::to_vec(&record).map_err(|e| SnapshotError::BadManifest {
        snapshot: snapshot.to_owned(),
        reason: format!("cannot encode ref: {e}"),
    })?;
    match store
        .put_if_absent(&latest_ref_key(generation), Bytes::from(body))
        .await
    {
        Ok(_) => Ok(record),
        Err(ObjectError::AlreadyExists { .. }) => Err(SnapshotError::PublishRace { generation }),
        Err(error) => Err(error.into()),
    }
}
