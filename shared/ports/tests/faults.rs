//! The fault-injecting wrappers: with no fault set they pass every port's contract (so a
//! scenario test that wraps an adapter tests the adapter, not the wrapper), and each fault
//! does exactly what `faults.rs` promises: the nth call fails without reaching the adapter,
//! a lost answer hides a write that happened, a delay waits, a failed zone starts nothing.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use nodefleet_ports::contract::scheduler::SchedulerFixture;
use nodefleet_ports::contract::target_registry::{TargetRegistryFixture, targets_from_fn};
use nodefleet_ports::fakes::{FakeScheduler, FakeTargetRegistry, MemoryObjectStore};
use nodefleet_ports::faults::{
    ANY, Faults, FaultyObjectStore, FaultyScheduler, FaultyTargetRegistry,
};
use nodefleet_ports::{
    LaunchRequest, NodeId, ObjectError, ObjectStore, PlacementFailure, RegistryError, Role,
    Scheduler, SchedulerError, Target, TargetRegistry, Zone,
};

const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];

mod object_store_through_the_wrapper {
    use super::*;
    nodefleet_ports::object_store_contract!(async {
        FaultyObjectStore::new(MemoryObjectStore::new(), Faults::new())
    });
}

mod scheduler_through_the_wrapper {
    use super::*;
    fn fixture() -> SchedulerFixture<FaultyScheduler<FakeScheduler>> {
        SchedulerFixture::new(
            FaultyScheduler::new(FakeScheduler::with_zones(ZONES, 10), Faults::new()),
            ZONES.iter().map(|z| Zone::new(*z)).collect(),
        )
    }
    nodefleet_ports::scheduler_contract!(async { fixture() });
    nodefleet_ports::scheduler_idempotency_contract!(async { fixture() });
}

mod target_registry_through_the_wrapper {
    use super::*;
    nodefleet_ports::target_registry_contract!(async {
        let mut next = 0u16;
        TargetRegistryFixture::new(
            FaultyTargetRegistry::new(FakeTargetRegistry::new(), Faults::new()),
            targets_from_fn(move || {
                next += 1;
                Target {
                    id: format!("10.0.0.{next}"),
                    port: 8545,
                }
            }),
        )
    });
}

fn launch(zone: &str, key: &str) -> LaunchRequest {
    LaunchRequest {
        node: NodeId::new(format!("node-{key}")),
        zone: Zone::new(zone),
        role: Role::Serving,
        snapshot: None,
        idempotency_key: key.to_owned(),
        count: 1,
    }
}

#[tokio::test]
async fn the_nth_call_fails_without_reaching_the_adapter() {
    let memory = MemoryObjectStore::new();
    let faults = Faults::new();
    let store = FaultyObjectStore::new(memory.clone(), faults.clone());
    faults.fail_nth("put", 2);

    store.put("a", Bytes::from_static(b"1")).await.unwrap();
    let error = store.put("b", Bytes::from_static(b"2")).await.unwrap_err();
    assert!(error.is_retryable(), "{error}");
    assert!(error.to_string().contains("injected fault"), "{error}");
    assert_eq!(
        memory.keys(),
        vec!["a".to_owned()],
        "the failed put did not happen"
    );

    // One shot: the third call goes through, and other operations were never affected.
    store.put("c", Bytes::from_static(b"3")).await.unwrap();
    assert_eq!(
        store.get("a", None).await.unwrap(),
        Bytes::from_static(b"1")
    );
    assert_eq!(faults.calls("put"), 3);
    assert_eq!(faults.calls("get"), 1);
    assert_eq!(faults.injected().len(), 1);
}

#[tokio::test]
async fn a_lost_answer_hides_a_write_that_happened() {
    let memory = MemoryObjectStore::new();
    let faults = Faults::new();
    let store = FaultyObjectStore::new(memory.clone(), faults.clone());
    faults.lose_answer_nth("put_if_absent", 1);

    let error = store
        .put_if_absent("refs/latest", Bytes::from_static(b"snap-1"))
        .await
        .unwrap_err();
    assert!(matches!(error, ObjectError::Unavailable { .. }), "{error}");
    assert_eq!(
        memory.object("refs/latest"),
        Some(Bytes::from_static(b"snap-1")),
        "the write landed although the caller was told it failed"
    );
    // The caller's retry learns the truth from the store.
    let retry = store
        .put_if_absent("refs/latest", Bytes::from_static(b"snap-1"))
        .await
        .unwrap_err();
    assert!(
        matches!(retry, ObjectError::AlreadyExists { .. }),
        "{retry}"
    );
}

#[tokio::test]
async fn a_failed_call_is_not_turned_into_a_lost_answer() {
    let faults = Faults::new();
    let store = FaultyObjectStore::new(MemoryObjectStore::new(), faults.clone());
    faults.lose_answer_nth("get", 1);
    let error = store.get("missing", None).await.unwrap_err();
    assert!(
        matches!(error, ObjectError::NotFound { .. }),
        "the adapter's own error is kept: {error}"
    );
}

#[tokio::test]
async fn fail_always_lasts_until_cleared_and_any_matches_every_operation() {
    let faults = Faults::new();
    let registry = FaultyTargetRegistry::new(FakeTargetRegistry::new(), faults.clone());
    let target = Target {
        id: "10.0.0.1".into(),
        port: 8545,
    };
    faults.fail_always(ANY);
    for _ in 0..3 {
        let error = registry.register(std::slice::from_ref(&target)).await;
        assert!(matches!(error, Err(RegistryError::Unavailable { .. })));
    }
    assert!(registry.describe_health().await.is_err());
    faults.clear();
    registry
        .register(std::slice::from_ref(&target))
        .await
        .unwrap();
    assert_eq!(registry.describe_health().await.unwrap().len(), 1);
    assert_eq!(faults.calls("register"), 4);
}

#[tokio::test(start_paused = true)]
async fn a_delay_waits_before_the_call() {
    let faults = Faults::new();
    let store = FaultyObjectStore::new(MemoryObjectStore::new(), faults.clone());
    faults.delay("head", Duration::from_secs(30));
    let started = tokio::time::Instant::now();
    assert_eq!(store.head("x").await.unwrap(), None);
    assert_eq!(started.elapsed(), Duration::from_secs(30));
    // Other operations are not delayed.
    let started = tokio::time::Instant::now();
    store.put("x", Bytes::new()).await.unwrap();
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test]
async fn a_failed_zone_starts_nothing_until_healed() {
    let fake = FakeScheduler::with_zones(ZONES, 4);
    let faults = Faults::new();
    let scheduler = FaultyScheduler::new(fake.clone(), faults.clone());
    let lost = Zone::new("us-east-1a");
    faults.fail_zone(&lost, PlacementFailure::ResourceMemory);

    let mut request = launch("us-east-1a", "k1");
    request.count = 2;
    let report = scheduler.launch(&request).await.unwrap();
    assert!(report.started.is_empty());
    assert_eq!(report.failures.len(), 2);
    assert!(report.failures.iter().all(|f| f.zone == lost
        && f.reason == PlacementFailure::ResourceMemory
        && f.reason.is_zone_capacity()));
    assert!(fake.launches().is_empty(), "nothing reached the scheduler");

    // The other zones are unaffected.
    let other = scheduler.launch(&launch("us-east-1b", "k2")).await.unwrap();
    assert_eq!(other.started.len(), 1);

    faults.heal_zone(&lost);
    let healed = scheduler.launch(&launch("us-east-1a", "k3")).await.unwrap();
    assert_eq!(healed.started.len(), 1);
}

#[tokio::test]
async fn a_lost_launch_answer_is_safe_to_retry_with_the_same_key() {
    let fake = FakeScheduler::with_zones(ZONES, 4);
    let faults = Faults::new();
    let scheduler = FaultyScheduler::new(fake.clone(), faults.clone());
    faults.lose_answer_nth("launch", 1);

    let error = scheduler
        .launch(&launch("us-east-1c", "replace-node-7"))
        .await
        .unwrap_err();
    assert!(matches!(error, SchedulerError::Unavailable { .. }));
    assert!(error.is_retryable());
    let retry = scheduler
        .launch(&launch("us-east-1c", "replace-node-7"))
        .await
        .unwrap();
    assert_eq!(retry.started.len(), 1);
    assert_eq!(
        fake.tasks().len(),
        1,
        "one task, although launch was called twice"
    );
}

/// The wrappers' operation lists name exactly what they count: every method of the
/// scheduler, registry and object store called through its wrapper leaves a count for each
/// listed name and nothing else. (The state store's list is checked the same way by
/// nodefleet-aws's `sdk_calls` test, which has a state store to wrap.)
#[tokio::test]
async fn the_operation_lists_name_what_the_wrappers_count() {
    use nodefleet_ports::faults::{
        OBJECT_STORE_OPERATIONS, SCHEDULER_OPERATIONS, TARGET_REGISTRY_OPERATIONS,
    };
    use nodefleet_ports::objects::MIN_PART_SIZE;

    fn assert_counted(faults: &Faults, operations: &[&str]) {
        let counted: Vec<String> = faults.called().into_keys().collect();
        let mut listed: Vec<String> = operations.iter().map(|&o| o.to_owned()).collect();
        listed.sort();
        assert_eq!(counted, listed);
    }

    let faults = Faults::new();
    let scheduler = FaultyScheduler::new(FakeScheduler::with_zones(ZONES, 10), faults.clone());
    let report = scheduler.launch(&launch(ZONES[0], "k-1")).await.unwrap();
    let task = report.started[0].id.clone();
    scheduler
        .describe_tasks(std::slice::from_ref(&task))
        .await
        .unwrap();
    scheduler.list_tasks().await.unwrap();
    scheduler.stop(&task, "done").await.unwrap();
    assert_counted(&faults, SCHEDULER_OPERATIONS);

    let faults = Faults::new();
    let registry = FaultyTargetRegistry::new(FakeTargetRegistry::new(), faults.clone());
    let target = Target {
        id: "10.0.0.1".to_owned(),
        port: 8545,
    };
    registry
        .register(std::slice::from_ref(&target))
        .await
        .unwrap();
    registry.describe_health().await.unwrap();
    registry
        .deregister(std::slice::from_ref(&target))
        .await
        .unwrap();
    assert_counted(&faults, TARGET_REGISTRY_OPERATIONS);

    let faults = Faults::new();
    let store = FaultyObjectStore::new(MemoryObjectStore::new(), faults.clone());
    store.put("a", Bytes::from_static(b"1")).await.unwrap();
    store
        .put_if_absent("b", Bytes::from_static(b"2"))
        .await
        .unwrap();
    store.get("a", None).await.unwrap();
    store.head("a").await.unwrap();
    store.list("", None, 10).await.unwrap();
    store.delete("a").await.unwrap();
    let upload = store.create_multipart("big").await.unwrap();
    let part = store
        .upload_part(&upload, 1, Bytes::from(vec![0u8; MIN_PART_SIZE as usize]))
        .await
        .unwrap();
    store.complete_multipart(&upload, &[part]).await.unwrap();
    let abandoned = store.create_multipart("abandoned").await.unwrap();
    store.abort_multipart(&abandoned).await.unwrap();
    assert_counted(&faults, OBJECT_STORE_OPERATIONS);
}
