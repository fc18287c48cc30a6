//! `FakeScheduler` against the scheduler contract (all three parts), and tests of what it
//! models beyond the contract: capacity per zone, instance families, idempotency keys,
//! terminated tasks and the addresses that make load-balancer targets. (A zone lost for any
//! other reason is `Faults::fail_zone`, tested in `faults.rs`.)

#![allow(clippy::unwrap_used)]

use nodefleet_ports::contract::scheduler::{CapacityFixture, SchedulerFixture};
use nodefleet_ports::fakes::FakeScheduler;
use nodefleet_ports::fakes::scheduler::DEFAULT_ACCEPTED_FAMILIES;
use nodefleet_ports::{
    LaunchRequest, NetworkMode, NodeId, PlacementFailure, Role, Scheduler, SnapshotId, TaskStatus,
    Timestamp, Zone, target_for_task,
};

const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];

fn fixture() -> SchedulerFixture<FakeScheduler> {
    SchedulerFixture::new(
        FakeScheduler::with_zones(ZONES, 10),
        ZONES.iter().map(|z| Zone::new(*z)).collect(),
    )
}

nodefleet_ports::scheduler_contract!(async { fixture() });
nodefleet_ports::scheduler_idempotency_contract!(async { fixture() });
nodefleet_ports::scheduler_capacity_contract!(async {
    let fake = FakeScheduler::with_zones(ZONES, 2);
    fake.set_capacity(&Zone::new("us-east-1a"), 0);
    CapacityFixture::new(fake, Zone::new("us-east-1a"), Some(Zone::new("us-east-1b")))
});

mod filled_by_launches {
    //! The capacity contract again, with the zone filled by real launches rather than
    //! configured empty: slots are taken by tasks, not by a number.

    use super::*;

    nodefleet_ports::scheduler_capacity_contract!(async {
        let fake = FakeScheduler::with_zones(ZONES, 1);
        let report = fake
            .launch(&launch("us-east-1a", "filler", "filler-key", 1))
            .await
            .unwrap();
        assert_eq!(report.started.len(), 1);
        CapacityFixture::new(fake, Zone::new("us-east-1a"), Some(Zone::new("us-east-1c")))
    });
}

fn launch(zone: &str, node: &str, key: &str, count: u32) -> LaunchRequest {
    LaunchRequest {
        node: NodeId::new(node),
        zone: Zone::new(zone),
        role: Role::Serving,
        snapshot: Some(SnapshotId::new("snap-1")),
        idempotency_key: key.to_owned(),
        count,
    }
}

#[tokio::test]
async fn a_zone_fills_then_reports_resource_memory_for_each_missing_task() {
    let fake = FakeScheduler::with_zones(["z1", "z2"], 2);
    let report = fake.launch(&launch("z1", "n1", "k1", 3)).await.unwrap();
    assert_eq!(report.started.len(), 2);
    assert_eq!(report.failures.len(), 1);
    assert_eq!(report.failures[0].reason, PlacementFailure::ResourceMemory);
    assert_eq!(report.failures[0].zone, Zone::new("z1"));
    assert_eq!(fake.active_in(&Zone::new("z1")), 2);

    let full = fake.launch(&launch("z1", "n2", "k2", 1)).await.unwrap();
    assert!(full.started.is_empty());
    assert_eq!(full.failures[0].reason, PlacementFailure::ResourceMemory);

    // The other zone is unaffected.
    let other = fake.launch(&launch("z2", "n2", "k3", 1)).await.unwrap();
    assert_eq!(other.started.len(), 1);
    assert_eq!(other.started[0].zone, Some(Zone::new("z2")));
}

#[tokio::test]
async fn a_stopped_task_frees_its_slot_once_it_is_stopped() {
    let fake = FakeScheduler::with_zones(["z1"], 1);
    let first = fake.launch(&launch("z1", "n1", "k1", 1)).await.unwrap();
    let task = first.started[0].id.clone();
    fake.stop(&task, "replaced").await.unwrap();
    // Stopping holds the slot until the task is stopped, as on an instance.
    assert_eq!(fake.tasks()[0].last_status, TaskStatus::Stopping);
    let blocked = fake.launch(&launch("z1", "n2", "k2", 1)).await.unwrap();
    assert_eq!(blocked.failures.len(), 1);
    let described = fake
        .describe_tasks(std::slice::from_ref(&task))
        .await
        .unwrap();
    assert_eq!(described[0].last_status, TaskStatus::Stopped);
    assert_eq!(described[0].stop_reason.as_deref(), Some("replaced"));
    let freed = fake.launch(&launch("z1", "n2", "k3", 1)).await.unwrap();
    assert_eq!(freed.started.len(), 1);
}

#[tokio::test]
async fn an_unaccepted_instance_family_or_unknown_zone_is_an_attribute_failure() {
    let fake = FakeScheduler::with_zones(["z1"], 4);
    fake.set_zone("z-m5", 4, "m5");
    let m5 = fake.launch(&launch("z-m5", "n1", "k1", 1)).await.unwrap();
    assert!(m5.started.is_empty());
    assert_eq!(m5.failures[0].reason, PlacementFailure::Attribute);
    let unknown = fake
        .launch(&launch("z-nowhere", "n1", "k2", 2))
        .await
        .unwrap();
    assert_eq!(unknown.failures.len(), 2);
    assert!(
        unknown
            .failures
            .iter()
            .all(|f| f.reason == PlacementFailure::Attribute)
    );

    // Accepting the family makes the zone usable.
    assert!(!DEFAULT_ACCEPTED_FAMILIES.contains(&"m5"));
    fake.set_accepted_families(["i3", "m5"]);
    let accepted = fake.launch(&launch("z-m5", "n1", "k3", 1)).await.unwrap();
    assert_eq!(accepted.started.len(), 1);
    let i4i_now_refused = {
        fake.set_zone("z-i4i", 1, "i4i");
        fake.launch(&launch("z-i4i", "n3", "k4", 1)).await.unwrap()
    };
    assert_eq!(
        i4i_now_refused.failures[0].reason,
        PlacementFailure::Attribute
    );
}

#[tokio::test]
async fn the_same_key_replays_the_first_report_and_starts_nothing() {
    let fake = FakeScheduler::with_zones(["z1"], 1);
    let first = fake.launch(&launch("z1", "n1", "k1", 2)).await.unwrap();
    assert_eq!((first.started.len(), first.failures.len()), (1, 1));
    let retry = fake.launch(&launch("z1", "n1", "k1", 2)).await.unwrap();
    assert_eq!(retry, first, "same tasks, same failures");
    assert_eq!(fake.tasks().len(), 1);

    let launches = fake.launches();
    assert_eq!(launches.len(), 2);
    assert!(!launches[0].replayed);
    assert!(launches[1].replayed);

    // A replay reports the tasks as they are now.
    fake.stop(&first.started[0].id, "gone").await.unwrap();
    let later = fake.launch(&launch("z1", "n1", "k1", 2)).await.unwrap();
    assert_eq!(later.started[0].desired_status, TaskStatus::Stopped);
}

#[tokio::test]
async fn a_terminated_task_is_stopped_with_the_given_reason() {
    let fake = FakeScheduler::with_zones(["z1"], 4);
    fake.set_now(Timestamp::from_millis(1_000));
    let report = fake.launch(&launch("z1", "n1", "k1", 1)).await.unwrap();
    let task = report.started[0].id.clone();
    assert_eq!(
        report.started[0].started_at,
        Some(Timestamp::from_millis(1_000))
    );
    fake.set_now(Timestamp::from_millis(5_000));
    let reason = "Host EC2 (instance i-0abc) terminated.";
    assert!(fake.terminate(&task, reason));
    assert!(!fake.terminate(&nodefleet_ports::TaskId::new("nope"), reason));
    let listed = fake.list_tasks().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].last_status, TaskStatus::Stopped);
    assert_eq!(listed[0].desired_status, TaskStatus::Stopped);
    assert_eq!(listed[0].stop_reason.as_deref(), Some(reason));
    assert_eq!(listed[0].stopped_at, Some(Timestamp::from_millis(5_000)));
    // A later stop does not overwrite why it stopped.
    fake.stop(&task, "cleanup").await.unwrap();
    let again = fake
        .describe_tasks(std::slice::from_ref(&task))
        .await
        .unwrap();
    assert_eq!(again[0].stop_reason.as_deref(), Some(reason));
}

#[tokio::test]
async fn tasks_start_pending_and_run_from_the_next_read() {
    let fake = FakeScheduler::with_zones(["z1"], 4);
    let report = fake.launch(&launch("z1", "n1", "k1", 1)).await.unwrap();
    assert_eq!(report.started[0].last_status, TaskStatus::Pending);
    let listed = fake.list_tasks().await.unwrap();
    assert_eq!(listed[0].last_status, TaskStatus::Running);
}

#[tokio::test]
async fn tasks_have_addresses_that_make_targets_in_both_network_modes() {
    let fake = FakeScheduler::with_zones(["z1", "z2"], 4);
    fake.set_container_ports(&[8545]);
    let a = fake
        .launch(&launch("z1", "n1", "k1", 2))
        .await
        .unwrap()
        .started;
    let b = fake
        .launch(&launch("z2", "n2", "k2", 1))
        .await
        .unwrap()
        .started;
    let all: Vec<_> = a.iter().chain(&b).collect();
    let bridge: Vec<_> = all
        .iter()
        .map(|t| target_for_task(t, NetworkMode::Bridge, 8545).unwrap())
        .collect();
    let awsvpc: Vec<_> = all
        .iter()
        .map(|t| target_for_task(t, NetworkMode::Awsvpc, 8545).unwrap())
        .collect();
    for targets in [&bridge, &awsvpc] {
        let unique: std::collections::BTreeSet<_> = targets.iter().collect();
        assert_eq!(unique.len(), targets.len(), "distinct targets: {targets:?}");
    }
    assert!(
        bridge
            .iter()
            .all(|t| t.id.starts_with("i-") && t.port >= 32768)
    );
    assert!(awsvpc.iter().all(|t| t.port == 8545));
    assert_eq!(target_for_task(all[0], NetworkMode::Bridge, 30303), None);
}

#[tokio::test]
async fn clones_share_one_state() {
    let fake = FakeScheduler::with_zones(["z1"], 4);
    let handle = fake.clone();
    fake.launch(&launch("z1", "n1", "k1", 1)).await.unwrap();
    assert_eq!(handle.tasks().len(), 1);
    assert_eq!(handle.launches().len(), 1);
}
