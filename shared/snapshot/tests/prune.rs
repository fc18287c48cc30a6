//! Retention. The decision, [`plan_prune`], is checked with generated stores: it never
//! deletes a pack a kept manifest refers to (DESIGN invariant 5), nor a pack younger than
//! the grace period or of unknown age, always keeps `latest` and the newest published
//! snapshots and young uploads, and does delete what none of that protects. Then `prune`
//! on real stores (in memory and on disk): keep N, grace protects an upload in flight,
//! every kept snapshot still verifies, a corrupt kept manifest stops pack deletion, and a
//! dry run changes nothing.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nodefleet_local::FsObjectStore;
use nodefleet_ports::fakes::MemoryObjectStore;
use nodefleet_ports::{ObjectStore, Timestamp};
use nodefleet_snapshot::catalog::{self, Selector};
use nodefleet_snapshot::create::{CreateOptions, create};
use nodefleet_snapshot::format::{
    ChainPoint, PACKS_PREFIX, RefRecord, latest_ref_key, manifest_key, pack_key,
};
use nodefleet_snapshot::profile;
use nodefleet_snapshot::progress::NoProgress;
use nodefleet_snapshot::prune::{
    ManifestFacts, PackFacts, PruneInputs, PrunePlan, plan_prune, prune,
};
use nodefleet_snapshot::verify::{VerifyScope, verify};
use proptest::prelude::*;
use support::{Scratch, noise, write_file};

// ---------------------------------------------------------------------------------------
// The decision.

const PACKS: usize = 10;

/// A generated store: manifests (made at, referenced packs or unreadable), the sequence of
/// published snapshots (index `manifests.len()` is a ref to a manifest that is gone), the
/// packs' ages, keep, grace and now.
fn stores() -> impl Strategy<Value = (PruneInputs, u64)> {
    let manifest = (
        prop::option::weighted(0.9, 0u64..3000),
        prop::option::weighted(0.9, prop::collection::btree_set(0..PACKS, 0..4)),
    );
    (
        prop::collection::vec(manifest, 0..8),
        prop::collection::vec(0usize..9, 0..8),
        prop::collection::vec(prop::option::weighted(0.9, 0u64..3000), PACKS),
        0usize..4,
        0u64..1500,
        0u64..3000,
    )
        .prop_map(|(manifests, published, pack_ages, keep, grace_ms, now)| {
            let count = manifests.len();
            let manifests: Vec<ManifestFacts> = manifests
                .into_iter()
                .enumerate()
                .map(|(i, (made_at_ms, packs))| ManifestFacts {
                    id: format!("m{i}"),
                    made_at_ms,
                    packs: packs.map(|p| p.into_iter().map(|n| format!("p{n}")).collect()),
                })
                .collect();
            let refs = published
                .into_iter()
                .filter(|&i| i <= count)
                .enumerate()
                .map(|(generation, i)| RefRecord {
                    snapshot: format!("m{i}"),
                    generation: generation as u64 + 1,
                    published_at_ms: 0,
                })
                .collect();
            let packs = pack_ages
                .into_iter()
                .enumerate()
                .map(|(n, last_modified_ms)| PackFacts {
                    key: format!("p{n}"),
                    size: 100,
                    last_modified_ms,
                })
                .collect();
            (
                PruneInputs {
                    manifests,
                    refs,
                    packs,
                    keep,
                    grace_ms,
                },
                now,
            )
        })
}

fn is_young(made_at: Option<u64>, now: u64, grace_ms: u64) -> bool {
    made_at.is_none_or(|t| now.saturating_sub(t) < grace_ms)
}

fn check_plan(inputs: &PruneInputs, now: u64, plan: &PrunePlan) -> Result<(), TestCaseError> {
    // Every manifest is either kept or deleted.
    for manifest in &inputs.manifests {
        prop_assert!(
            plan.keep_snapshots.contains(&manifest.id)
                != plan.delete_snapshots.contains(&manifest.id)
        );
    }
    // Invariant 5: no kept manifest loses a pack; an unreadable kept one spares them all.
    for manifest in &inputs.manifests {
        if !plan.keep_snapshots.contains(&manifest.id) {
            continue;
        }
        match &manifest.packs {
            Some(packs) => {
                for pack in packs {
                    prop_assert!(
                        !plan.delete_packs.contains_key(pack),
                        "{pack} of {}",
                        manifest.id
                    );
                }
            }
            None => prop_assert!(plan.delete_packs.is_empty()),
        }
    }
    // Grace: no pack of unknown age, or younger than grace, is deleted.
    for pack in &inputs.packs {
        if plan.delete_packs.contains_key(&pack.key) {
            let modified = pack.last_modified_ms;
            prop_assert!(modified.is_some_and(|t| now.saturating_sub(t) >= inputs.grace_ms));
        }
    }
    // Latest is kept, and its ref too.
    if let Some(latest) = inputs.refs.iter().max_by_key(|r| r.generation) {
        prop_assert!(!plan.delete_refs.contains(&latest.generation));
        prop_assert!(!plan.delete_snapshots.contains(&latest.snapshot));
    }
    // No ref is left naming a deleted manifest.
    for record in &inputs.refs {
        if plan.delete_snapshots.contains(&record.snapshot) {
            prop_assert!(plan.delete_refs.contains(&record.generation));
        }
    }
    // The newest `keep` published (that exist) are kept.
    let mut newest: BTreeMap<&str, u64> = BTreeMap::new();
    for record in &inputs.refs {
        let entry = newest.entry(record.snapshot.as_str()).or_default();
        *entry = (*entry).max(record.generation);
    }
    let mut published: Vec<(&str, u64)> = newest
        .iter()
        .filter(|(id, _)| inputs.manifests.iter().any(|m| m.id == **id))
        .map(|(id, g)| (*id, *g))
        .collect();
    published.sort_by_key(|&(_, g)| std::cmp::Reverse(g));
    for (id, _) in published.iter().take(inputs.keep.max(1)) {
        prop_assert!(
            plan.keep_snapshots.contains(*id),
            "{id} is among the newest"
        );
    }
    // Unpublished young uploads are kept; everything else not protected is deleted.
    for manifest in &inputs.manifests {
        let is_published = newest.contains_key(manifest.id.as_str());
        let newest_n = published
            .iter()
            .take(inputs.keep.max(1))
            .any(|(id, _)| *id == manifest.id);
        let protected =
            newest_n || (!is_published && is_young(manifest.made_at_ms, now, inputs.grace_ms));
        prop_assert_eq!(
            plan.keep_snapshots.contains(&manifest.id),
            protected,
            "{}",
            &manifest.id
        );
    }
    let referenced: BTreeSet<&String> = inputs
        .manifests
        .iter()
        .filter(|m| plan.keep_snapshots.contains(&m.id))
        .flat_map(|m| m.packs.iter().flatten())
        .collect();
    let any_unreadable_kept = inputs
        .manifests
        .iter()
        .any(|m| m.packs.is_none() && plan.keep_snapshots.contains(&m.id));
    for pack in &inputs.packs {
        let old = pack
            .last_modified_ms
            .is_some_and(|t| now.saturating_sub(t) >= inputs.grace_ms);
        let should_go = old && !referenced.contains(&pack.key) && !any_unreadable_kept;
        prop_assert_eq!(
            plan.delete_packs.contains_key(&pack.key),
            should_go,
            "{}",
            &pack.key
        );
    }
    prop_assert_eq!(
        plan.kept_packs as usize + plan.delete_packs.len(),
        inputs.packs.len()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_plan_never_deletes_what_a_kept_snapshot_or_an_upload_needs((inputs, now) in stores()) {
        let plan = plan_prune(&inputs, now);
        check_plan(&inputs, now, &plan)?;
    }
}

// ---------------------------------------------------------------------------------------
// Prune on real stores.

const HOUR: Duration = Duration::from_secs(3600);

fn now_ms() -> u64 {
    Timestamp::now().as_millis()
}

fn options(now_ms: u64, publish: bool) -> CreateOptions {
    CreateOptions {
        profile: &profile::GETH,
        chain: ChainPoint::default(),
        concurrency: 2,
        now_ms,
        publish,
    }
}

/// Three published snapshots of a data dir that changes between them: one file is replaced
/// each time, one is added after the first and then stays. So each snapshot has a pack of
/// its own, and the second and third share one. Returns their ids, oldest first.
async fn three_snapshots(store: &Arc<dyn ObjectStore>, data: &Scratch) -> Vec<String> {
    let mut ids = Vec::new();
    for round in 0..3u64 {
        write_file(&data.path, "changes", &noise(100 + round, 200_000), 0o644);
        let summary = create(
            store.clone(),
            &data.path,
            &options(now_ms() + round, true),
            Arc::new(NoProgress),
        )
        .await
        .unwrap();
        ids.push(summary.snapshot);
        write_file(&data.path, "stays", &noise(1, 300_000), 0o644);
    }
    ids
}

async fn pack_keys(store: &dyn ObjectStore) -> BTreeSet<String> {
    catalog::list_keys(store, PACKS_PREFIX)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

async fn packs_of(store: &dyn ObjectStore, id: &str) -> BTreeSet<String> {
    catalog::read_manifest(store, id)
        .await
        .unwrap()
        .chunks
        .iter()
        .map(|c| pack_key(&c.pack))
        .collect()
}

async fn verifies(store: &Arc<dyn ObjectStore>, id: &str) {
    let manifest = catalog::read_manifest(store.as_ref(), id).await.unwrap();
    verify(store.clone(), &manifest, &VerifyScope::Everything, 4)
        .await
        .unwrap();
}

async fn keeps_the_newest_published_and_what_they_reference(store: Arc<dyn ObjectStore>) {
    let data = Scratch::new("prune-keep");
    let ids = three_snapshots(&store, &data).await;
    let oldest_only: BTreeSet<String> = packs_of(store.as_ref(), &ids[0])
        .await
        .difference(&packs_of(store.as_ref(), &ids[1]).await)
        .cloned()
        .collect::<BTreeSet<_>>()
        .difference(&packs_of(store.as_ref(), &ids[2]).await)
        .cloned()
        .collect();
    assert!(!oldest_only.is_empty());

    // Two hours on, everything is past the one-hour grace.
    let summary = prune(store.as_ref(), 2, HOUR, now_ms() + 2 * 3600 * 1000, false)
        .await
        .unwrap();
    assert_eq!(summary.kept_snapshots, ids[1..].to_vec());
    assert_eq!(summary.deleted_snapshots, ids[..1].to_vec());
    assert_eq!(summary.deleted_refs, 1);
    assert_eq!(summary.deleted_packs, oldest_only.len() as u64);
    assert!(summary.unreadable_kept.is_empty());

    assert_eq!(
        catalog::manifest_ids(store.as_ref()).await.unwrap(),
        ids[1..].to_vec()
    );
    let remaining = pack_keys(store.as_ref()).await;
    assert!(remaining.is_disjoint(&oldest_only));
    for id in &ids[1..] {
        assert!(packs_of(store.as_ref(), id).await.is_subset(&remaining));
        verifies(&store, id).await;
    }
    assert!(store.head(&latest_ref_key(1)).await.unwrap().is_none());
    assert_eq!(
        catalog::resolve(store.as_ref(), &Selector::Latest)
            .await
            .unwrap(),
        ids[2]
    );

    // keep 0 still keeps latest.
    let summary = prune(store.as_ref(), 0, HOUR, now_ms() + 2 * 3600 * 1000, false)
        .await
        .unwrap();
    assert_eq!(summary.kept_snapshots, ids[2..].to_vec());
    verifies(&store, &ids[2]).await;
    // A new snapshot after pruning publishes the next generation.
    write_file(&data.path, "changes", &noise(999, 1000), 0o644);
    let next = create(
        store.clone(),
        &data.path,
        &options(now_ms() + 10, true),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!(next.published_generation, Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_the_newest_published_and_what_they_reference_in_memory() {
    keeps_the_newest_published_and_what_they_reference(Arc::new(MemoryObjectStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_the_newest_published_and_what_they_reference_on_disk() {
    let store_dir = Scratch::new("prune-keep-store");
    let store = FsObjectStore::open(&store_dir.path).unwrap();
    keeps_the_newest_published_and_what_they_reference(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_protects_an_upload_in_flight() {
    let memory = MemoryObjectStore::new();
    let store: Arc<dyn ObjectStore> = Arc::new(memory.clone());
    let data = Scratch::new("prune-grace");
    let ids = three_snapshots(&store, &data).await;

    // An upload in flight: one that has written its manifest and not published it yet, and
    // one that has written a pack and no manifest.
    write_file(&data.path, "changes", &noise(500, 200_000), 0o644);
    let verifying = create(
        store.clone(),
        &data.path,
        &options(now_ms() + 100, false),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    let orphan = pack_key(&blake3::hash(b"orphan pack").to_hex());
    store
        .put(&orphan, Bytes::from_static(b"orphan pack"))
        .await
        .unwrap();
    let in_flight = packs_of(store.as_ref(), &verifying.snapshot).await;

    // Within the grace period: both survive, though neither is published.
    let summary = prune(store.as_ref(), 1, HOUR, now_ms() + 1000, false)
        .await
        .unwrap();
    assert_eq!(
        summary.kept_snapshots,
        vec![ids[2].clone(), verifying.snapshot.clone()]
    );
    let remaining = pack_keys(store.as_ref()).await;
    assert!(remaining.contains(&orphan));
    assert!(in_flight.is_subset(&remaining));
    // The packs only the pruned snapshots used are young too: kept until a later prune.
    assert_eq!(summary.deleted_packs, 0);
    verifies(&store, &verifying.snapshot).await;

    // Past the grace period the abandoned upload goes, with its pack and the orphan.
    let later = now_ms() + 2 * 3600 * 1000;
    let summary = prune(store.as_ref(), 1, HOUR, later, false).await.unwrap();
    assert_eq!(summary.kept_snapshots, vec![ids[2].clone()]);
    assert_eq!(summary.deleted_snapshots, vec![verifying.snapshot.clone()]);
    let remaining = pack_keys(store.as_ref()).await;
    assert!(!remaining.contains(&orphan));
    assert_eq!(remaining, packs_of(store.as_ref(), &ids[2]).await);
    verifies(&store, &ids[2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_kept_manifest_stops_pack_deletion() {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryObjectStore::new());
    let data = Scratch::new("prune-corrupt");
    let ids = three_snapshots(&store, &data).await;
    store
        .put(&manifest_key(&ids[2]), Bytes::from_static(b"not zstd"))
        .await
        .unwrap();
    let packs_before = pack_keys(store.as_ref()).await;
    let summary = prune(store.as_ref(), 1, HOUR, now_ms() + 2 * 3600 * 1000, false)
        .await
        .unwrap();
    assert_eq!(summary.unreadable_kept, vec![ids[2].clone()]);
    assert_eq!(summary.deleted_packs, 0);
    assert_eq!(pack_keys(store.as_ref()).await, packs_before);
    // The older snapshots' manifests and refs still go.
    assert_eq!(summary.deleted_snapshots, ids[..2].to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_changes_nothing() {
    let memory = MemoryObjectStore::new();
    let store: Arc<dyn ObjectStore> = Arc::new(memory.clone());
    let data = Scratch::new("prune-dry");
    let ids = three_snapshots(&store, &data).await;
    let before: Vec<(String, Bytes)> = memory
        .keys()
        .into_iter()
        .map(|k| (k.clone(), memory.object(&k).unwrap()))
        .collect();
    let later = now_ms() + 2 * 3600 * 1000;
    let dry = prune(store.as_ref(), 1, HOUR, later, true).await.unwrap();
    let after: Vec<(String, Bytes)> = memory
        .keys()
        .into_iter()
        .map(|k| (k.clone(), memory.object(&k).unwrap()))
        .collect();
    assert_eq!(before, after);
    assert!(dry.dry_run);
    assert_eq!(dry.deleted_snapshots, ids[..2].to_vec());
    assert!(dry.deleted_packs > 0);
    // The real run then does what the dry run said.
    let real = prune(store.as_ref(), 1, HOUR, later, false).await.unwrap();
    assert_eq!(
        (
            real.deleted_snapshots,
            real.deleted_refs,
            real.deleted_packs,
            real.deleted_pack_bytes
        ),
        (
            dry.deleted_snapshots,
            dry.deleted_refs,
            dry.deleted_packs,
            dry.deleted_pack_bytes
        )
    );
}
