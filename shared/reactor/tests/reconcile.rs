//! Scenario tests of the executor and the observe step on the port fakes (the world in
//! `support`: a six-node fleet over three zones on `FakeScheduler`, `FakeTargetRegistry` and
//! an in-memory `EmbeddedStateStore`), with faults from `nodefleet_ports::faults` wrappers
//! around the scheduler. `reconcile_scenarios.rs` follows longer stories over many rounds.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use nodefleet_ports::fakes::targets::RegistryCall;
use nodefleet_ports::{
    NODE_RPC_PORT, NetworkMode, NodeState, PlacementFailure, StateStore, Zone, target_for_task,
};
use nodefleet_reactor::planner::{Action, AlertKind, plan};
use nodefleet_reactor::reconcile::{Outcome, ReconcileMemory, execute, observe, reconcile};
use support::{World, launch_outcomes, node, now, zone};

#[tokio::test]
async fn a_dead_node_is_replaced_once_and_its_replacement_registered() {
    let world = World::new().await;
    world.kill(0);
    let memory = ReconcileMemory::new(now());

    let first = reconcile(
        world.ports(),
        &world.desired,
        &memory,
        &[],
        "reactor-a",
        now(),
    )
    .await
    .unwrap();
    let launches = world.new_launches();
    assert_eq!(launches.len(), 1, "{launches:?}");
    assert!(!launches[0].replayed);
    assert_eq!(launches[0].request.node, node(0));
    let new_task = launches[0].report.started[0].id.clone();
    let old_target = world.tasks[0].1.clone();
    assert!(
        world
            .registry
            .calls()
            .contains(&RegistryCall::Deregister(vec![old_target.clone()]))
    );
    assert!(!world.registry.registered().contains(&old_target));
    assert_eq!(first.report.failed(), 0, "{:?}", first.report);

    // A minute later the fake reports the new task running: its target is registered.
    let later = now().plus(Duration::from_secs(60));
    let second = reconcile(
        world.ports(),
        &world.desired,
        &first.memory,
        &[],
        "reactor-a",
        later,
    )
    .await
    .unwrap();
    assert_eq!(second.plan.launches().count(), 0);
    assert_eq!(world.new_launches().len(), 1);
    let task = world
        .fake
        .tasks()
        .into_iter()
        .find(|t| t.id == new_task)
        .unwrap();
    let new_target = target_for_task(&task, NetworkMode::Bridge, NODE_RPC_PORT).unwrap();
    assert!(world.registry.registered().contains(&new_target));
    let record = world.state.get_node(&node(0)).await.unwrap().unwrap();
    assert_eq!(record.task, Some(new_task));
    assert_eq!(record.target, Some(new_target));

    let kinds = world.audit_kinds().await;
    for kind in ["reactor.launch", "reactor.deregister", "reactor.register"] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} missing: {kinds:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_reconciles_launch_exactly_once() {
    let world = Arc::new(World::new().await);
    world.kill(0);
    let memory = ReconcileMemory::new(now());
    let observed = observe(world.ports(), &memory, &[], now()).await.unwrap();

    let mut handles = Vec::new();
    for invocation in 0..50 {
        let world = Arc::clone(&world);
        let observed = observed.clone();
        let memory = memory.clone();
        handles.push(tokio::spawn(async move {
            let plan = plan(&world.desired, &observed, now(), &memory.budget);
            assert_eq!(plan.launches().count(), 1);
            let owner = format!("reactor-{invocation}");
            execute(
                &plan,
                world.ports(),
                &world.desired,
                &observed,
                &owner,
                now(),
            )
            .await
        }));
    }
    let mut done = 0;
    let mut skipped = 0;
    for handle in handles {
        let report = handle.await.unwrap();
        for outcome in launch_outcomes(&report) {
            match outcome {
                Outcome::Done(_) => done += 1,
                Outcome::Skipped(_) => skipped += 1,
                Outcome::Failed(why) => panic!("launch failed: {why}"),
            }
        }
    }
    assert_eq!((done, skipped), (1, 49));
    assert_eq!(world.new_launches().len(), 1, "{:?}", world.new_launches());
    assert_eq!(world.live_tasks_of(&node(0)).len(), 1);
    let deregisters = world
        .registry
        .calls()
        .into_iter()
        .filter(|c| matches!(c, RegistryCall::Deregister(_)))
        .count();
    assert_eq!(deregisters, 1);
}

#[tokio::test]
async fn a_zone_out_of_memory_sends_the_next_launch_elsewhere() {
    let world = World::new().await;
    world.kill(0);
    // Node 0 lived in zone-0, the zone furthest below its share: the first choice.
    world
        .faults
        .fail_zone(&zone(0), PlacementFailure::ResourceMemory);

    let first = reconcile(
        world.ports(),
        &world.desired,
        &ReconcileMemory::new(now()),
        &[],
        "reactor-a",
        now(),
    )
    .await
    .unwrap();
    let planned_zones: Vec<Zone> = first
        .plan
        .launches()
        .filter_map(|a| match a {
            Action::Launch { zone, .. } => Some(zone.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(planned_zones, vec![zone(0)]);
    assert_eq!(first.report.failed(), 1);
    assert_eq!(first.report.launch_failures.len(), 1);
    assert_eq!(
        first.report.launch_failures[0].reason,
        PlacementFailure::ResourceMemory
    );
    assert!(world.new_launches().is_empty());

    let later = now().plus(Duration::from_secs(60));
    let second = reconcile(
        world.ports(),
        &world.desired,
        &first.memory,
        &[],
        "reactor-a",
        later,
    )
    .await
    .unwrap();
    assert_eq!(second.report.failed(), 0, "{:?}", second.report);
    let launches = world.new_launches();
    assert_eq!(launches.len(), 1);
    assert_ne!(launches[0].request.zone, zone(0));
    assert_eq!(launches[0].report.started.len(), 1);
}

#[tokio::test]
async fn a_lost_launch_answer_starts_no_second_task_on_retry() {
    let world = World::new().await;
    world.kill(0);
    world.faults.lose_answer_nth("launch", 1);
    let memory = ReconcileMemory::new(now());
    let observed = observe(world.ports(), &memory, &[], now()).await.unwrap();
    let planned = plan(&world.desired, &observed, now(), &memory.budget);

    let first = execute(
        &planned,
        world.ports(),
        &world.desired,
        &observed,
        "reactor-a",
        now(),
    )
    .await;
    assert!(matches!(launch_outcomes(&first)[..], [Outcome::Failed(_)]));

    // A retry on the same (stale) observation claims the key's second attempt and sends the
    // same scheduler token: the scheduler replays the first launch.
    let retry = execute(
        &planned,
        world.ports(),
        &world.desired,
        &observed,
        "reactor-b",
        now(),
    )
    .await;
    assert!(matches!(launch_outcomes(&retry)[..], [Outcome::Done(_)]));
    let launches = world.new_launches();
    assert_eq!(launches.len(), 2);
    assert!(!launches[0].replayed);
    assert!(launches[1].replayed);
    assert_eq!(
        launches[0].request.idempotency_key,
        launches[1].request.idempotency_key
    );

    // A fresh reconcile sees the task and launches nothing.
    let later = now().plus(Duration::from_secs(60));
    let fresh = reconcile(
        world.ports(),
        &world.desired,
        &memory,
        &[],
        "reactor-a",
        later,
    )
    .await
    .unwrap();
    assert_eq!(fresh.plan.launches().count(), 0);
    assert_eq!(world.live_tasks_of(&node(0)).len(), 1);
}

#[tokio::test]
async fn a_failed_launch_is_retried_by_the_next_reconcile_not_in_a_loop() {
    let world = World::new().await;
    world.kill(0);
    world.faults.fail_nth("launch", 1);

    let first = reconcile(
        world.ports(),
        &world.desired,
        &ReconcileMemory::new(now()),
        &[],
        "reactor-a",
        now(),
    )
    .await
    .unwrap();
    assert!(matches!(
        launch_outcomes(&first.report)[..],
        [Outcome::Failed(_)]
    ));
    assert_eq!(world.faults.calls("launch"), 1);
    assert!(world.new_launches().is_empty());

    let later = now().plus(Duration::from_secs(60));
    let second = reconcile(
        world.ports(),
        &world.desired,
        &first.memory,
        &[],
        "reactor-a",
        later,
    )
    .await
    .unwrap();
    let claimed: Vec<&str> = second
        .report
        .outcomes
        .iter()
        .filter(|o| matches!(o.action, Action::Launch { .. }))
        .filter_map(|o| o.claimed_key.as_deref())
        .collect();
    assert_eq!(claimed.len(), 1);
    assert!(claimed[0].ends_with("#2"), "{claimed:?}");
    assert_eq!(world.new_launches().len(), 1);
    assert_eq!(world.live_tasks_of(&node(0)).len(), 1);
}

#[tokio::test]
async fn a_storm_is_alerted_and_audited_and_launches_nothing() {
    let world = World::new().await;
    for index in 0..3 {
        world.kill(index);
    }
    let outcome = reconcile(
        world.ports(),
        &world.desired,
        &ReconcileMemory::new(now()),
        &[],
        "reactor-a",
        now(),
    )
    .await
    .unwrap();
    assert_eq!(
        outcome.plan.alerts().collect::<Vec<_>>(),
        [AlertKind::Storm]
    );
    assert!(world.new_launches().is_empty());
    let kinds = world.audit_kinds().await;
    assert!(
        kinds.iter().any(|k| k == "reactor.alert.storm"),
        "{kinds:?}"
    );
    assert!(!kinds.iter().any(|k| k == "reactor.launch"));
}

#[tokio::test]
async fn records_follow_their_targets_health() {
    let world = World::new().await;
    // Node 1 was just registered (the executor leaves it `Syncing`); node 2's target fails.
    let mut syncing = world.state.get_node(&node(1)).await.unwrap().unwrap();
    syncing.state = NodeState::Syncing;
    world.state.save_node(&syncing).await.unwrap();
    world
        .registry
        .set_unhealthy(&world.tasks[2].1, "connection refused");
    // Node 3 is initial (still starting): its record is left alone.
    world.registry.set_health(
        &world.tasks[3].1,
        nodefleet_ports::TargetState::Initial,
        Some("Elb.InitialHealthChecking"),
        None,
    );

    let outcome = reconcile(
        world.ports(),
        &world.desired,
        &ReconcileMemory::new(now()),
        &[],
        "reactor-a",
        now(),
    )
    .await
    .unwrap();
    assert!(outcome.report.warnings.is_empty(), "{:?}", outcome.report);
    let state_of = |index| {
        let state = &world.state;
        async move { state.get_node(&node(index)).await.unwrap().unwrap().state }
    };
    assert_eq!(state_of(0).await, NodeState::Serving);
    assert_eq!(state_of(1).await, NodeState::Serving);
    assert_eq!(state_of(2).await, NodeState::Unhealthy);
    assert_eq!(state_of(3).await, NodeState::Serving);

    // Healthy again: serving again. A dead node's record keeps its state (the planner judges
    // it lost by its task, and its replacement takes the record over).
    world.registry.clear_health(&world.tasks[2].1);
    world.kill(4);
    let later = now().plus(Duration::from_secs(60));
    reconcile(
        world.ports(),
        &world.desired,
        &outcome.memory,
        &[],
        "reactor-a",
        later,
    )
    .await
    .unwrap();
    assert_eq!(state_of(2).await, NodeState::Serving);
    assert_eq!(state_of(4).await, NodeState::Serving);
}
