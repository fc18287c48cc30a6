//! Retention: deleting old snapshots and the packs nothing kept refers to.
//!
//! # What is kept
//!
//! The decision is a pure function, [`plan_prune`], of what the store holds and `now`:
//!
//! - the `keep` snapshots most recently published (ordered by the highest `latest`
//!   generation that named each), and always the current `latest` (so `keep` 0 acts as 1: a
//!   reader can always restore `latest`);
//! - every unpublished manifest younger than the grace period: an upload that has written
//!   its manifest and is verifying, or one that just lost a publish race. Its age is counted
//!   from the later of the time in its id (when its create started) and the object's
//!   `last_modified` (when it was written); with neither known it is kept;
//! - every pack a kept manifest refers to (DESIGN invariant 5), and every pack younger than
//!   the grace period, whatever refers to it: an upload in flight has written packs but not
//!   yet the manifest that names them. A pack whose `last_modified` the store does not
//!   report is never deleted: its age cannot be known, and deleting a young one would break
//!   an upload (every adapter here reports it; a store that does not needs a person);
//! - if a kept manifest cannot be decoded (corrupt, or written by a newer format version),
//!   what it refers to is unknown, so **no pack is deleted** in that run, and the summary
//!   names it.
//!
//! Everything else is deleted: the other manifests, the `latest` refs that name them (never
//! the current `latest`'s ref: it names a kept snapshot), and the packs.
//!
//! # Order, and running beside a create
//!
//! Facts are gathered packs first, then manifests, then refs, so a pack listed is never newer
//! than the manifests that could name it, and a manifest published while prune looks is seen
//! as published. Deletions go refs, then manifests, then packs: a crash at any point leaves
//! no ref without its manifest and no kept manifest without its packs. Just before deleting
//! packs, the manifests are listed again and the packs of any manifest that appeared since
//! are spared too.
//!
//! The grace period must be longer than the longest `create` (upload, manifest, verify,
//! publish): a create reads the store's manifests when it starts and re-uses their chunks, so
//! if prune deletes such a manifest and its old packs while that create is still uploading,
//! the create's verification fails and it publishes nothing (safe, but wasted). The updater
//! runs prune and create one after the other; this module does not lock the store.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt, stream};
use nodefleet_ports::{ObjectMeta, ObjectStore};

use crate::catalog;
use crate::error::SnapshotError;
use crate::format::{
    MANIFESTS_PREFIX, PACKS_PREFIX, RefRecord, latest_ref_key, manifest_key, pack_key,
};
use crate::list::created_at_of;

/// Reads and deletes in flight: deletes are small requests, and a store of thousands of
/// packs should not be pruned one round trip at a time.
const PRUNE_CONCURRENCY: usize = 16;

/// Listing page size: S3's maximum.
const LIST_PAGE: u32 = 1000;

/// A manifest, as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFacts {
    pub id: String,
    /// When it was made, if known: the later of its id's time and its `last_modified`.
    pub made_at_ms: Option<u64>,
    /// The keys of the packs it refers to; `None` if it cannot be decoded.
    pub packs: Option<BTreeSet<String>>,
}

/// A pack, as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackFacts {
    pub key: String,
    pub size: u64,
    pub last_modified_ms: Option<u64>,
}

/// Everything [`plan_prune`] decides from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneInputs {
    pub manifests: Vec<ManifestFacts>,
    pub refs: Vec<RefRecord>,
    pub packs: Vec<PackFacts>,
    /// How many published snapshots to keep.
    pub keep: usize,
    pub grace_ms: u64,
}

/// What a prune will delete and keep.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrunePlan {
    pub keep_snapshots: BTreeSet<String>,
    pub delete_snapshots: BTreeSet<String>,
    /// Generations of `latest` refs to delete.
    pub delete_refs: BTreeSet<u64>,
    /// Pack keys to delete, with their sizes.
    pub delete_packs: BTreeMap<String, u64>,
    pub kept_packs: u64,
    /// Kept manifests that cannot be decoded: while there is one, no pack is deleted.
    pub unreadable_kept: BTreeSet<String>,
}

/// Decides what to keep and delete; see the module doc for the rules.
pub fn plan_prune(inputs: &PruneInputs, now_ms: u64) -> PrunePlan {
    let present: BTreeSet<&str> = inputs.manifests.iter().map(|m| m.id.as_str()).collect();
    let latest = inputs.refs.iter().max_by_key(|r| r.generation);

    // Published snapshots, newest publication first.
    let mut newest_generation: BTreeMap<&str, u64> = BTreeMap::new();
    for record in &inputs.refs {
        let generation = newest_generation
            .entry(record.snapshot.as_str())
            .or_insert(record.generation);
        *generation = (*generation).max(record.generation);
    }
    let mut published: Vec<(&str, u64)> = newest_generation
        .iter()
        .filter(|(id, _)| present.contains(*id))
        .map(|(id, generation)| (*id, *generation))
        .collect();
    published.sort_by_key(|&(_, generation)| std::cmp::Reverse(generation));

    let mut plan = PrunePlan::default();
    for (id, _) in published.iter().take(inputs.keep.max(1)) {
        plan.keep_snapshots.insert((*id).to_owned());
    }
    if let Some(latest) = latest {
        plan.keep_snapshots.insert(latest.snapshot.clone());
    }
    for manifest in &inputs.manifests {
        let young = manifest
            .made_at_ms
            .is_none_or(|made| now_ms.saturating_sub(made) < inputs.grace_ms);
        if !newest_generation.contains_key(manifest.id.as_str()) && young {
            plan.keep_snapshots.insert(manifest.id.clone());
        }
    }
    for manifest in &inputs.manifests {
        if !plan.keep_snapshots.contains(&manifest.id) {
            plan.delete_snapshots.insert(manifest.id.clone());
        }
    }
    for record in &inputs.refs {
        let is_latest = latest.is_some_and(|l| l.generation == record.generation);
        if !is_latest && !plan.keep_snapshots.contains(&record.snapshot) {
            plan.delete_refs.insert(record.generation);
        }
    }

    let mut referenced: HashSet<&str> = HashSet::new();
    for manifest in &inputs.manifests {
        if !plan.keep_snapshots.contains(&manifest.id) {
            continue;
        }
        match &manifest.packs {
            Some(packs) => referenced.extend(packs.iter().map(String::as_str)),
            None => {
                plan.unreadable_kept.insert(manifest.id.clone());
            }
        }
    }
    for pack in &inputs.packs {
        let old = pack
            .last_modified_ms
            .is_some_and(|modified| now_ms.saturating_sub(modified) >= inputs.grace_ms);
        let deletable =
            plan.unreadable_kept.is_empty() && old && !referenced.contains(pack.key.as_str());
        if deletable {
            plan.delete_packs.insert(pack.key.clone(), pack.size);
        } else {
            plan.kept_packs += 1;
        }
    }
    plan
}

/// What a prune did (or, in a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PruneSummary {
    pub dry_run: bool,
    pub kept_snapshots: Vec<String>,
    pub deleted_snapshots: Vec<String>,
    pub deleted_refs: u64,
    pub deleted_packs: u64,
    pub deleted_pack_bytes: u64,
    pub kept_packs: u64,
    /// Kept manifests that cannot be decoded; while there are any, no pack is deleted.
    pub unreadable_kept: Vec<String>,
}

/// Keeps the `keep` newest published snapshots (and young uploads), deletes the rest; see
/// the module doc. With `dry_run`, only says what it would delete.
pub async fn prune(
    store: &dyn ObjectStore,
    keep: usize,
    grace: Duration,
    now_ms: u64,
    dry_run: bool,
) -> Result<PruneSummary, SnapshotError> {
    let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
    let packs = list_objects(store, PACKS_PREFIX)
        .await?
        .into_iter()
        .map(|meta| PackFacts {
            size: meta.size,
            last_modified_ms: meta.last_modified.map(|t| t.as_millis()),
            key: meta.key,
        })
        .collect();
    let manifest_objects = list_objects(store, MANIFESTS_PREFIX).await?;
    let manifests = manifest_facts(store, manifest_objects).await?;
    let refs = catalog::latest_refs(store).await?;
    let seen: HashSet<String> = manifests.iter().map(|m| m.id.clone()).collect();
    let mut plan = plan_prune(
        &PruneInputs {
            manifests,
            refs,
            packs,
            keep,
            grace_ms,
        },
        now_ms,
    );

    if !dry_run {
        delete_all(
            store,
            plan.delete_refs
                .iter()
                .map(|generation| latest_ref_key(*generation)),
        )
        .await?;
        delete_all(
            store,
            plan.delete_snapshots.iter().map(|id| manifest_key(id)),
        )
        .await?;
        spare_packs_of_new_manifests(store, &seen, &mut plan).await?;
        delete_all(store, plan.delete_packs.keys().cloned()).await?;
    }

    Ok(PruneSummary {
        dry_run,
        kept_snapshots: plan.keep_snapshots.into_iter().collect(),
        deleted_snapshots: plan.delete_snapshots.into_iter().collect(),
        deleted_refs: plan.delete_refs.len() as u64,
        deleted_packs: plan.delete_packs.len() as u64,
        deleted_pack_bytes: plan.delete_packs.values().sum(),
        kept_packs: plan.kept_packs,
        unreadable_kept: plan.unreadable_kept.into_iter().collect(),
    })
}

/// Every object under `prefix`, with its metadata, following pagination.
pub(crate) async fn list_objects(
    store: &dyn ObjectStore,
    prefix: &str,
) -> Result<Vec<ObjectMeta>, SnapshotError> {
    let mut objects = Vec::new();
    let mut continuation: Option<String> = None;
    loop {
        let page = store
            .list(prefix, continuation.as_deref(), LIST_PAGE)
            .await?;
        objects.extend(page.objects);
        match page.next {
            Some(next) => continuation = Some(next),
            None => return Ok(objects),
        }
    }
}

/// Reads the manifests listed: which packs each refers to. One deleted meanwhile is left
/// out; one that cannot be decoded has `packs: None`; a store error fails the prune.
async fn manifest_facts(
    store: &dyn ObjectStore,
    objects: Vec<ObjectMeta>,
) -> Result<Vec<ManifestFacts>, SnapshotError> {
    let facts: Vec<Option<ManifestFacts>> = stream::iter(objects)
        .map(|meta| async move {
            let Some(id) = meta.key.strip_prefix(MANIFESTS_PREFIX).map(str::to_owned) else {
                return Ok(None);
            };
            let made_at_ms = created_at_of(&id)
                .into_iter()
                .chain(meta.last_modified.map(|t| t.as_millis()))
                .max();
            let packs = match catalog::read_manifest(store, &id).await {
                Ok(manifest) => Some(manifest.chunks.iter().map(|c| pack_key(&c.pack)).collect()),
                Err(SnapshotError::NotFound(_)) => return Ok(None),
                Err(SnapshotError::BadManifest { .. }) => None,
                Err(error) => return Err(error),
            };
            Ok(Some(ManifestFacts {
                id,
                made_at_ms,
                packs,
            }))
        })
        .buffered(PRUNE_CONCURRENCY)
        .try_collect()
        .await?;
    Ok(facts.into_iter().flatten().collect())
}

/// Takes out of `plan.delete_packs` the packs of manifests written since the facts were
/// gathered (an upload that finished meanwhile); one that cannot be decoded spares all.
async fn spare_packs_of_new_manifests(
    store: &dyn ObjectStore,
    seen: &HashSet<String>,
    plan: &mut PrunePlan,
) -> Result<(), SnapshotError> {
    let fresh: Vec<ObjectMeta> = list_objects(store, MANIFESTS_PREFIX)
        .await?
        .into_iter()
        .filter(|meta| {
            meta.key
                .strip_prefix(MANIFESTS_PREFIX)
                .is_some_and(|id| !seen.contains(id))
        })
        .collect();
    for manifest in manifest_facts(store, fresh).await? {
        match manifest.packs {
            Some(packs) => {
                for pack in packs {
                    if plan.delete_packs.remove(&pack).is_some() {
                        plan.kept_packs += 1;
                    }
                }
            }
            None => {
                plan.kept_packs += plan.delete_packs.len() as u64;
                plan.delete_packs.clear();
                plan.unreadable_kept.insert(manifest.id);
            }
        }
    }
    Ok(())
}

async fn delete_all(
    store: &dyn ObjectStore,
    keys: impl Iterator<Item = String>,
) -> Result<(), SnapshotError> {
    stream::iter(keys)
        .map(|key| async move { store.delete(&key).await })
        .buffer_unordered(PRUNE_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(id: &str, made_at_ms: u64, packs: &[&str]) -> ManifestFacts {
        ManifestFacts {
            id: id.to_owned(),
            made_at_ms: Some(made_at_ms),
            packs: Some(packs.iter().map(|p| (*p).to_owned()).collect()),
        }
    }

    fn published(snapshot: &str, generation: u64) -> RefRecord {
        RefRecord {
            snapshot: snapshot.to_owned(),
            generation,
            published_at_ms: 0,
        }
    }

    fn pack(key: &str, last_modified_ms: Option<u64>) -> PackFacts {
        PackFacts {
            key: key.to_owned(),
            size: 10,
            last_modified_ms,
        }
    }

    #[test]
    fn keeps_the_newest_published_and_young_uploads() {
        let inputs = PruneInputs {
            manifests: vec![
                manifest("a", 0, &["p1"]),
                manifest("b", 0, &["p2"]),
                manifest("c", 0, &["p2", "p3"]),
                manifest("failed", 0, &["p4"]),
                manifest("uploading", 950, &["p5"]),
            ],
            refs: vec![published("a", 1), published("b", 2), published("c", 3)],
            packs: vec![
                pack("p1", Some(0)),
                pack("p2", Some(0)),
                pack("p3", Some(0)),
                pack("p4", Some(0)),
                pack("p5", Some(940)),
                pack("orphan-young", Some(990)),
                pack("orphan-old", Some(10)),
                pack("orphan-unknown", None),
            ],
            keep: 2,
            grace_ms: 100,
        };
        let plan = plan_prune(&inputs, 1000);
        let ids = |set: &BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>();
        assert_eq!(ids(&plan.keep_snapshots), ["b", "c", "uploading"]);
        assert_eq!(ids(&plan.delete_snapshots), ["a", "failed"]);
        assert_eq!(plan.delete_refs, BTreeSet::from([1]));
        assert_eq!(
            plan.delete_packs.keys().cloned().collect::<Vec<_>>(),
            ["orphan-old", "p1", "p4"]
        );
        assert_eq!(plan.kept_packs, 5);
    }

    #[test]
    fn keep_zero_still_keeps_latest_and_an_unreadable_kept_manifest_spares_every_pack() {
        let mut unreadable = manifest("b", 0, &[]);
        unreadable.packs = None;
        let inputs = PruneInputs {
            manifests: vec![manifest("a", 0, &["p1"]), unreadable],
            refs: vec![published("a", 1), published("b", 2)],
            packs: vec![pack("p1", Some(0))],
            keep: 0,
            grace_ms: 0,
        };
        let plan = plan_prune(&inputs, 1000);
        assert_eq!(plan.keep_snapshots, BTreeSet::from(["b".to_owned()]));
        assert_eq!(plan.unreadable_kept, BTreeSet::from(["b".to_owned()]));
        assert!(plan.delete_packs.is_empty());
    }
}
