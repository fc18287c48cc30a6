//! The local fleet's snapshot catalog: seeded from the fleet's object store when the fleet
//! opens, and the catalog entries `nodefleet status` shows.
//!
//! # Why seed
//!
//! `nodefleet up` keeps its object store (`<dir>/store`) across runs, since a snapshot is what
//! lets a new node start on the chain's history instead of block 0. The catalog lives in the
//! state (`state.redb`), which a second `up` resumes ([`crate::healing`]) but which can also be
//! new (a first run, a state moved away) or behind the store (a snapshot published with
//! `nodefleet snapshot create` while no `up` ran). The reactor names the newest
//! [`SnapshotState::Published`] catalog entry in every launch, so [`seed_from_store`] closes
//! that gap: it reads the store's current `latest` and its manifest and saves one record for
//! it, state `Published`, unless the catalog has it already, so the next nodes are launched
//! on it. The other way round, [`retire_missing`] retires published entries whose manifest
//! the store no longer has (a store moved away to start from an empty chain): a node
//! launched on one could not hydrate.
//!
//! Only `latest` is seeded. Older manifests in the store are not offered to new nodes (`latest`
//! is what is published), so their records would only tell history; retention
//! (`nodefleet snapshot prune`) decides what happens to them.
//!
//! The record, from the manifest ([`record_of`]): id, block height, client and client
//! version, the manifest's key, `created_at`, and `bytes` as the sum of its files' sizes.
//! `uploaded_bytes` is 0, "unknown": what the upload that made it wrote is not in the store.
//!
//! # Error policy
//!
//! [`SeedError::Store`] when the store's `latest` or a manifest cannot be read or looked up
//! (its source says whether a retry may help: a local store's I/O errors are not worth one, a
//! corrupt manifest never is); [`SeedError::State`] when the state store refuses a record. A
//! store with nothing published is not an error: `Ok(None)`.

use nodefleet_ports::{
    ObjectStore, SnapshotId, SnapshotRecord, SnapshotState, StateError, StateStore, Timestamp,
    Version,
};
use nodefleet_snapshot::catalog::{latest, read_manifest};
use nodefleet_snapshot::error::SnapshotError;
use nodefleet_snapshot::format::{EntryKind, Manifest, manifest_key};

/// Why the catalog could not be seeded. See the module doc.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("cannot read the store's latest snapshot: {0}")]
    Store(#[from] SnapshotError),
    #[error("cannot record the store's latest snapshot in the catalog: {0}")]
    State(#[from] StateError),
}

/// Saves the store's current `latest` as a `Published` catalog record (see the module doc),
/// and returns it; `None` when the store has nothing published. Idempotent: a record already
/// in the catalog under that id is returned as it is.
pub async fn seed_from_store(
    state: &dyn StateStore,
    store: &dyn ObjectStore,
    now: Timestamp,
) -> Result<Option<SnapshotRecord>, SeedError> {
    let Some(published) = latest(store).await? else {
        return Ok(None);
    };
    let id = SnapshotId::new(published.snapshot.clone());
    if let Some(existing) = state.get_snapshot(&id).await? {
        return Ok(Some(existing));
    }
    let manifest = read_manifest(store, &published.snapshot).await?;
    match state.save_snapshot(&record_of(&manifest, now)).await {
        Ok(saved) => Ok(Some(saved)),
        // Someone saved it between the read and the save: theirs is as good.
        Err(StateError::Conflict { .. }) => Ok(state.get_snapshot(&id).await?),
        Err(error) => Err(error.into()),
    }
}

/// Retires every `Published` catalog record whose manifest the store does not have (see the
/// module doc), at `now`, and returns their ids.
pub async fn retire_missing(
    state: &dyn StateStore,
    store: &dyn ObjectStore,
    now: Timestamp,
) -> Result<Vec<SnapshotId>, SeedError> {
    let mut retired = Vec::new();
    for mut record in state.list_snapshots().await? {
        if record.state != SnapshotState::Published {
            continue;
        }
        let present = store
            .head(&record.manifest_key)
            .await
            .map_err(SnapshotError::from)?;
        if present.is_some() {
            continue;
        }
        record.state = SnapshotState::Retired;
        record.updated_at = now;
        let saved = state.save_snapshot(&record).await?;
        retired.push(saved.id);
    }
    Ok(retired)
}

/// The `Published` catalog record of a manifest: a new record (version [`Version::NEW`])
/// updated at `now`; `uploaded_bytes` 0 (unknown).
pub fn record_of(manifest: &Manifest, now: Timestamp) -> SnapshotRecord {
    SnapshotRecord {
        id: SnapshotId::new(manifest.id.clone()),
        block_height: manifest.chain.block_height,
        client: manifest.chain.client.clone(),
        client_version: manifest.chain.client_version.clone(),
        manifest_key: manifest_key(&manifest.id),
        bytes: data_bytes(manifest),
        uploaded_bytes: 0,
        state: SnapshotState::Published,
        created_at: Timestamp::from_millis(manifest.created_at_ms),
        updated_at: now,
        version: Version::NEW,
    }
}

/// The raw size of the data dir a manifest holds: the sum of its files' sizes.
pub fn data_bytes(manifest: &Manifest) -> u64 {
    manifest
        .entries
        .iter()
        .map(|entry| match entry.kind {
            EntryKind::File { size, .. } => size,
            EntryKind::Dir { .. } | EntryKind::Symlink { .. } => 0,
        })
        .sum()
}

/// Whether a catalog entry is shown to an operator: a snapshot that exists whole (verified,
/// published, or retired and kept until retention removes it), not one still uploading or
/// one that failed.
pub fn is_shown(record: &SnapshotRecord) -> bool {
    matches!(
        record.state,
        SnapshotState::Verified | SnapshotState::Published | SnapshotState::Retired
    )
}

/// The entries [`is_shown`] keeps, newest first (by creation time, then id).
pub fn shown(records: &[SnapshotRecord]) -> Vec<SnapshotRecord> {
    let mut shown: Vec<SnapshotRecord> = records.iter().filter(|r| is_shown(r)).cloned().collect();
    shown.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
    shown
}

/// The published entry new nodes are launched on, by the reactor's own rule: the highest
/// block, ties to the later id. So the status names the snapshot the launches name.
pub fn latest_published(records: &[SnapshotRecord]) -> Option<&SnapshotRecord> {
    records
        .iter()
        .filter(|r| r.state == SnapshotState::Published)
        .max_by(|a, b| (a.block_height, &a.id).cmp(&(b.block_height, &b.id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodefleet_snapshot::format::{ChainPoint, Entry, FORMAT_VERSION};

    fn record(id: &str, block: u64, created: u64, state: SnapshotState) -> SnapshotRecord {
        SnapshotRecord {
            id: SnapshotId::new(id),
            block_height: block,
            client: "anvil".into(),
            client_version: "1.7.1".into(),
            manifest_key: manifest_key(id),
            bytes: 1,
            uploaded_bytes: 0,
            state,
            created_at: Timestamp::from_millis(created),
            updated_at: Timestamp::from_millis(created),
            version: Version::NEW,
        }
    }

    #[test]
    fn shown_entries_are_whole_snapshots_newest_first_and_latest_is_the_highest_block() {
        let records = vec![
            record("1-a", 10, 1, SnapshotState::Retired),
            record("2-b", 20, 2, SnapshotState::Published),
            record("3-c", 30, 3, SnapshotState::Uploading),
            record("4-d", 40, 4, SnapshotState::Failed),
            record("5-e", 50, 5, SnapshotState::Verified),
            record("6-f", 15, 6, SnapshotState::Published),
        ];
        let ids: Vec<String> = shown(&records).iter().map(|r| r.id.to_string()).collect();
        assert_eq!(ids, ["6-f", "5-e", "2-b", "1-a"]);
        // The reactor's rule: the highest published block, not the newest published id.
        assert_eq!(
            latest_published(&records).map(|r| r.id.as_str()),
            Some("2-b")
        );
        assert_eq!(latest_published(&records[2..5]), None);
    }

    #[test]
    fn a_manifest_becomes_a_published_record_of_its_files_bytes() {
        let manifest = Manifest {
            format: FORMAT_VERSION,
            id: "1700000000000-0123456789abcdef".into(),
            created_at_ms: 1_700_000_000_000,
            chain: ChainPoint {
                client: "anvil".into(),
                client_version: "anvil 1.7.1".into(),
                chain_id: 31_337,
                block_height: 42,
                block_hash: "0xabc".into(),
            },
            entries: vec![
                Entry {
                    path: "db".into(),
                    kind: EntryKind::Dir { mode: 0o755 },
                },
                Entry {
                    path: "db/a".into(),
                    kind: EntryKind::File {
                        mode: 0o644,
                        size: 1_000,
                        chunks: Vec::new(),
                    },
                },
                Entry {
                    path: "link".into(),
                    kind: EntryKind::Symlink {
                        target: "db/a".into(),
                    },
                },
                Entry {
                    path: "state.json".into(),
                    kind: EntryKind::File {
                        mode: 0o644,
                        size: 234,
                        chunks: Vec::new(),
                    },
                },
            ],
            chunks: Vec::new(),
        };
        let now = Timestamp::from_millis(1_800_000_000_000);
        let record = record_of(&manifest, now);
        assert_eq!(record.id.as_str(), manifest.id);
        assert_eq!(record.block_height, 42);
        assert_eq!(
            (record.client.as_str(), record.client_version.as_str()),
            ("anvil", "anvil 1.7.1")
        );
        assert_eq!(
            record.manifest_key,
            "manifests/1700000000000-0123456789abcdef"
        );
        assert_eq!((record.bytes, record.uploaded_bytes), (1_234, 0));
        assert_eq!(record.state, SnapshotState::Published);
        assert_eq!(record.created_at.as_millis(), 1_700_000_000_000);
        assert_eq!(record.updated_at, now);
        assert!(record.version.is_new());
    }
}
