//! Listing the snapshots of a store, for `nodefleet snapshot list`: one row per manifest,
//! oldest first, with what it was taken of, its size, and the `latest` generations that
//! published it.
//!
//! Manifests are read a few at a time (`LIST_CONCURRENCY`). A manifest that cannot be
//! decoded (truncated, corrupt, or of another format version) is listed with the reason in
//! `unreadable` and zero figures, so a person sees it; a manifest deleted between the listing
//! and its read (a concurrent prune) is left out; any other store error fails the listing.

use std::collections::BTreeMap;

use futures_util::{StreamExt, stream};
use nodefleet_ports::ObjectStore;

use crate::catalog;
use crate::error::SnapshotError;
use crate::format::{ChainPoint, EntryKind};

/// Manifests read at once: they are small objects, and a listing should not wait on them
/// one by one, nor flood the store.
const LIST_CONCURRENCY: usize = 8;

/// One snapshot, as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotInfo {
    pub id: String,
    pub created_at_ms: u64,
    #[serde(flatten)]
    pub chain: ChainPoint,
    /// Raw size of its files.
    pub bytes_total: u64,
    /// Stored size of its distinct chunks (compressed where that paid).
    pub bytes_stored: u64,
    pub files: u64,
    pub chunks: u64,
    /// The `latest` generations that named it, oldest first; empty if never published.
    pub published_generations: Vec<u64>,
    /// It is the current `latest` (the highest generation names it).
    pub is_latest: bool,
    /// Why the manifest could not be read (the figures are then zero).
    pub unreadable: Option<String>,
}

/// The creation time in a snapshot id (`<13-digit millis>-<hash>`), if it has one.
pub fn created_at_of(id: &str) -> Option<u64> {
    let (millis, _) = id.split_once('-')?;
    if millis.is_empty() || !millis.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    millis.parse().ok()
}

/// Every snapshot in `store`, oldest first.
pub async fn list(store: &dyn ObjectStore) -> Result<Vec<SnapshotInfo>, SnapshotError> {
    let ids = catalog::manifest_ids(store).await?;
    let refs = catalog::latest_refs(store).await?;
    let latest = refs
        .iter()
        .max_by_key(|r| r.generation)
        .map(|r| r.snapshot.clone());
    let mut generations: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for record in &refs {
        generations
            .entry(record.snapshot.clone())
            .or_default()
            .push(record.generation);
    }

    let mut reads = stream::iter(ids)
        .map(|id| async move {
            let read = catalog::read_manifest(store, &id).await;
            (id, read)
        })
        .buffered(LIST_CONCURRENCY);
    let mut rows = Vec::new();
    while let Some((id, read)) = reads.next().await {
        let published_generations = generations.get(&id).cloned().unwrap_or_default();
        let is_latest = latest.as_deref() == Some(id.as_str());
        let row = match read {
            Ok(manifest) => {
                let mut files = 0;
                let mut bytes_total = 0;
                for entry in &manifest.entries {
                    if let EntryKind::File { size, .. } = entry.kind {
                        files += 1;
                        bytes_total += size;
                    }
                }
                SnapshotInfo {
                    created_at_ms: manifest.created_at_ms,
                    chain: manifest.chain,
                    bytes_total,
                    bytes_stored: manifest.chunks.iter().map(|c| c.stored_len).sum(),
                    files,
                    chunks: manifest.chunks.len() as u64,
                    published_generations,
                    is_latest,
                    unreadable: None,
                    id,
                }
            }
            Err(SnapshotError::NotFound(_)) => continue,
            Err(error @ SnapshotError::BadManifest { .. }) => SnapshotInfo {
                created_at_ms: created_at_of(&id).unwrap_or(0),
                chain: ChainPoint::default(),
                bytes_total: 0,
                bytes_stored: 0,
                files: 0,
                chunks: 0,
                published_generations,
                is_latest,
                unreadable: Some(error.to_string()),
                id,
            },
            Err(error) => return Err(error),
        };
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creation_time_comes_from_the_id() {
        assert_eq!(
            created_at_of("1700000000000-0123456789abcdef"),
            Some(1_700_000_000_000)
        );
        assert_eq!(created_at_of("snapshot"), None);
        assert_eq!(created_at_of("-abc"), None);
        assert_eq!(created_at_of("+1-abc"), None);
    }
}
