//! Scenario tests of the reconcile planner: the situations issue 5 names (a node dies, a
//! zone loses capacity, a storm, a spot warning, a flapping target, a node in grace), each
//! planned from a sample fleet and, where the story goes on, planned again after the
//! executor's effects are folded into the observation.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use nodefleet_ports::{
    PlacementFailure, TargetState, TaskId, TaskInfo, TaskStatus, Timestamp, Zone,
};
use nodefleet_reactor::planner::sample::{self, SampleFleet};
use nodefleet_reactor::planner::{
    Action, AlertKind, ObservedLaunchFailure, Plan, ReplacementBudget, Verdict, ZONE_BACKOFF_BASE,
    plan,
};

const NOW: Timestamp = Timestamp::from_millis(1_700_000_000_000);

fn launches(plan: &Plan) -> Vec<(String, String, String)> {
    plan.launches()
        .map(|action| match action {
            Action::Launch {
                node,
                zone,
                idempotency_key,
                ..
            } => (node.0.clone(), zone.0.clone(), idempotency_key.clone()),
            _ => unreachable!(),
        })
        .collect()
}

fn stops(plan: &Plan) -> Vec<String> {
    plan.actions
        .iter()
        .filter_map(|action| match action {
            Action::StopTask { task, .. } => Some(task.0.clone()),
            _ => None,
        })
        .collect()
}

fn deregistered(plan: &Plan) -> Vec<String> {
    plan.actions
        .iter()
        .filter_map(|action| match action {
            Action::DeregisterTarget { target, .. } => Some(target.to_string()),
            _ => None,
        })
        .collect()
}

/// The replacement task the executor's launch for node `index` produced, in `zone`.
fn replacement_task(index: usize, zone: &str, started: Timestamp) -> TaskInfo {
    sample::running_task(
        TaskId::new(format!("task-{index:03}-r")),
        sample::node_id(index),
        Zone::new(zone),
        format!("i-r{index:07}"),
        40_000 + u16::try_from(index).unwrap(),
        started,
    )
}

fn health_of(task: &TaskInfo, state: TargetState) -> nodefleet_ports::TargetHealth {
    let target = nodefleet_ports::target_for_task(
        task,
        nodefleet_ports::NetworkMode::Bridge,
        nodefleet_ports::NODE_RPC_PORT,
    )
    .unwrap();
    sample::target_health(target, task.zone.clone().unwrap(), state)
}

#[test]
fn a_healthy_fleet_needs_nothing() {
    let fleet = SampleFleet::healthy(6, 3, NOW);
    let budget = ReplacementBudget::new(NOW);
    let plan = plan(&fleet.desired, &fleet.observed, NOW, &budget);
    assert_eq!(plan.actions, vec![]);
    assert_eq!(plan.summary.healthy, 6);
    assert_eq!(plan.budget.tokens(), 10);
}

#[test]
fn one_node_dies_and_is_replaced_once_in_its_zone() {
    let mut fleet = SampleFleet::healthy(6, 3, NOW);
    fleet.stop_task(4, "Essential container in task exited");
    let budget = ReplacementBudget::new(NOW);
    let first = plan(&fleet.desired, &fleet.observed, NOW, &budget);
    assert_eq!(
        launches(&first),
        vec![(
            "node-004".into(),
            "zone-1".into(),
            "replace/node-004/task-004/zone-1".into()
        )]
    );
    assert_eq!(deregistered(&first), vec![fleet.target(4).to_string()]);
    assert!(stops(&first).is_empty(), "the task is already gone");
    assert_eq!(first.budget.tokens(), 9);

    // The replacement is running but not yet known to the load balancer: register it.
    let later = NOW.plus(Duration::from_secs(60));
    let replacement = replacement_task(4, "zone-1", later);
    fleet.observed.tasks.push(replacement.clone());
    let second = plan(&fleet.desired, &fleet.observed, later, &first.budget);
    assert!(launches(&second).is_empty());
    assert!(second.actions.iter().any(|a| matches!(a,
        Action::RegisterTarget { task, .. } if *task == replacement.id)));
    assert!(
        !second
            .actions
            .iter()
            .any(|a| matches!(a, Action::AdoptTask { .. })),
        "the executor adopts it when it registers it"
    );

    // Healthy replacement, old task gone: nothing to stop, nothing to launch. The record
    // still names the dead task (as if the save after the registration failed): move it.
    fleet
        .observed
        .targets
        .push(health_of(&replacement, TargetState::Healthy));
    let third = plan(&fleet.desired, &fleet.observed, later, &second.budget);
    assert!(launches(&third).is_empty());
    assert!(stops(&third).is_empty());
    assert!(third.actions.iter().any(|a| matches!(a,
        Action::AdoptTask { task, replaced, .. }
            if *task == replacement.id && *replaced == sample::task_id(4))));
}

/// Zones are counted where the tasks run, not where the records say: a replacement that
/// landed in another zone (its own was out of capacity) is adopted by a record that may
/// still name the old zone.
#[test]
fn a_node_counts_in_the_zone_its_task_runs_in_whatever_its_record_says() {
    let mut fleet = SampleFleet::healthy(6, 3, NOW);
    // Nodes 0 and 3 (zone-0 by their records) run in zone-1 now: zone-0 is empty.
    for task in &mut fleet.observed.tasks {
        if task.id == sample::task_id(0) || task.id == sample::task_id(3) {
            task.zone = Some(sample::zone(1));
        }
    }
    // Node 1 (zone-1) dies: its replacement belongs in zone-0, the zone below its share.
    fleet.stop_task(1, "Essential container in task exited");
    let plan = plan(
        &fleet.desired,
        &fleet.observed,
        NOW,
        &ReplacementBudget::new(NOW),
    );
    assert_eq!(
        launches(&plan),
        vec![(
            "node-001".into(),
            "zone-0".into(),
            "replace/node-001/task-001/zone-0".into()
        )]
    );
}

#[test]
fn a_zone_without_capacity_is_avoided_then_used_again_after_backoff() {
    let mut fleet = SampleFleet::healthy(6, 3, NOW);
    fleet.stop_task(4, "host terminated");
    fleet.observed.launch_failures.push(ObservedLaunchFailure {
        zone: sample::zone(1),
        at: NOW,
        reason: PlacementFailure::ResourceCpu,
    });
    let budget = ReplacementBudget::new(NOW);
    let avoided = plan(&fleet.desired, &fleet.observed, NOW, &budget);
    assert_eq!(
        launches(&avoided),
        vec![(
            "node-004".into(),
            "zone-0".into(),
            "replace/node-004/task-004/zone-0".into()
        )]
    );
    assert!(
        avoided
            .budget
            .zone_backoff
            .is_avoided(&sample::zone(1), NOW)
    );

    // Once the backoff has run out the zone is used again: a new key, as a new launch.
    let later = NOW.plus(ZONE_BACKOFF_BASE).plus(Duration::from_secs(1));
    let again = plan(&fleet.desired, &fleet.observed, later, &avoided.budget);
    assert_eq!(
        launches(&again),
        vec![(
            "node-004".into(),
            "zone-1".into(),
            "replace/node-004/task-004/zone-1".into()
        )]
    );

    // A second failure doubles the backoff; a task starting in the zone forgives it.
    fleet.observed.launch_failures.push(ObservedLaunchFailure {
        zone: sample::zone(1),
        at: later,
        reason: PlacementFailure::ResourceMemory,
    });
    let twice = plan(&fleet.desired, &fleet.observed, later, &again.budget);
    let failures = &twice.budget.zone_backoff.zones[&sample::zone(1)];
    assert_eq!(failures.consecutive, 2);
    assert_eq!(failures.avoid_until, later.plus(ZONE_BACKOFF_BASE * 2));
    let recovered_at = later.plus(Duration::from_secs(30));
    let mut other = replacement_task(5, "zone-1", recovered_at);
    other.id = TaskId::new("task-elsewhere");
    fleet.observed.tasks.push(other);
    let forgiven = plan(&fleet.desired, &fleet.observed, recovered_at, &twice.budget);
    assert!(
        !forgiven
            .budget
            .zone_backoff
            .is_avoided(&sample::zone(1), recovered_at)
    );
}

#[test]
fn every_zone_in_backoff_alerts_and_launches_nothing() {
    let mut fleet = SampleFleet::healthy(6, 3, NOW);
    fleet.stop_task(0, "host terminated");
    for index in 0..3 {
        fleet.observed.launch_failures.push(ObservedLaunchFailure {
            zone: sample::zone(index),
            at: NOW,
            reason: PlacementFailure::Attribute,
        });
    }
    let plan = plan(
        &fleet.desired,
        &fleet.observed,
        NOW,
        &ReplacementBudget::new(NOW),
    );
    assert!(launches(&plan).is_empty());
    assert_eq!(
        plan.alerts().collect::<Vec<_>>(),
        vec![AlertKind::NoZoneAvailable]
    );
}

#[test]
fn sixty_percent_unhealthy_is_a_storm_with_an_alert_and_no_launches() {
    let mut fleet = SampleFleet::healthy(10, 3, NOW);
    for index in 0..6 {
        fleet.set_target_state(index, TargetState::Unhealthy);
    }
    let budget = ReplacementBudget::new(NOW);
    let plan = plan(&fleet.desired, &fleet.observed, NOW, &budget);
    assert!(launches(&plan).is_empty());
    assert!(stops(&plan).is_empty());
    assert_eq!(plan.alerts().collect::<Vec<_>>(), vec![AlertKind::Storm]);
    assert!(plan.summary.storm);
    assert_eq!(plan.budget.tokens(), 10, "a storm spends nothing");
    assert_eq!(
        plan.decisions
            .iter()
            .filter(|d| d.verdict == Verdict::Withheld)
            .count(),
        6
    );
}

#[test]
fn exactly_the_storm_share_is_not_a_storm() {
    let mut fleet = SampleFleet::healthy(9, 3, NOW);
    for index in 0..3 {
        fleet.set_target_state(index, TargetState::Unhealthy);
    }
    let plan = plan(
        &fleet.desired,
        &fleet.observed,
        NOW,
        &ReplacementBudget::new(NOW),
    );
    assert_eq!(launches(&plan).len(), 3);
    assert_eq!(plan.alerts().count(), 0);
}

#[test]
fn a_spent_budget_waits_and_alerts() {
    let mut fleet = SampleFleet::healthy(30, 3, NOW);
    for index in 0..3 {
        fleet.stop_task(index, "oom");
    }
    let budget = ReplacementBudget::per_hour(2, NOW);
    let first = plan(&fleet.desired, &fleet.observed, NOW, &budget);
    assert_eq!(launches(&first).len(), 2);
    assert_eq!(
        first.alerts().collect::<Vec<_>>(),
        vec![AlertKind::BudgetSpent]
    );
    // Half an hour refills one token (2 per hour); the two paid keys cost nothing again.
    let later = NOW.plus(Duration::from_secs(30 * 60));
    let second = plan(&fleet.desired, &fleet.observed, later, &first.budget);
    assert_eq!(launches(&second).len(), 3);
    assert_eq!(second.budget.tokens(), 0);
}

#[test]
fn a_spot_warning_launches_at_once_and_drains_the_doomed_target() {
    let mut fleet = SampleFleet::healthy(6, 3, NOW);
    fleet.warn_spot(2);
    let budget = ReplacementBudget::new(NOW);
    let first = plan(&fleet.desired, &fleet.observed, NOW, &budget);
    assert_eq!(
        launches(&first),
        vec![(
            "node-002".into(),
            "zone-2".into(),
            "replace/node-002/task-002/zone-2".into()
        )]
    );
    assert_eq!(deregistered(&first), vec![fleet.target(2).to_string()]);
    assert!(stops(&first).is_empty(), "replace first, stop after");

    // Draining, replacement healthy: stop the doomed task, naming its successor.
    fleet.set_target_state(2, TargetState::Draining);
    let later = NOW.plus(Duration::from_secs(90));
    let replacement = replacement_task(2, "zone-2", later);
    fleet
        .observed
        .targets
        .push(health_of(&replacement, TargetState::Healthy));
    fleet.observed.tasks.push(replacement.clone());
    let second = plan(&fleet.desired, &fleet.observed, later, &first.budget);
    assert!(launches(&second).is_empty());
    assert!(second.actions.iter().any(|a| matches!(a,
        Action::StopTask { task, replaced_by: Some(by), .. }
            if *task == sample::task_id(2) && *by == replacement.id)));
}

/// A target alternating healthy and unhealthy must not launch a replacement per flap. How:
/// every plan that sees it unhealthy derives the same key from the same node, task and
/// zone, so the executor's conditional write on that key starts one task; the budget
/// charges the key once; and once the replacement task is listed the node has a replacement
/// and no launch is planned at all, whatever the old target does.
#[test]
fn a_flapping_target_launches_one_replacement() {
    let mut fleet = SampleFleet::healthy(6, 3, NOW);
    let budget = ReplacementBudget::new(NOW);
    fleet.set_target_state(1, TargetState::Unhealthy);
    let first = plan(&fleet.desired, &fleet.observed, NOW, &budget);
    let key = launches(&first);
    assert_eq!(key.len(), 1);

    fleet.set_target_state(1, TargetState::Healthy);
    let t1 = NOW.plus(Duration::from_secs(60));
    let healthy = plan(&fleet.desired, &fleet.observed, t1, &first.budget);
    assert!(launches(&healthy).is_empty());

    fleet.set_target_state(1, TargetState::Unhealthy);
    let t2 = NOW.plus(Duration::from_secs(120));
    let again = plan(&fleet.desired, &fleet.observed, t2, &healthy.budget);
    assert_eq!(launches(&again), key, "same key: the executor dedups it");
    assert_eq!(again.budget.tokens(), first.budget.tokens(), "paid once");

    let mut pending = replacement_task(1, "zone-1", t2);
    pending.last_status = TaskStatus::Pending;
    pending.started_at = None;
    fleet.observed.tasks.push(pending);
    for state in [TargetState::Healthy, TargetState::Unhealthy] {
        fleet.set_target_state(1, state);
        let with_replacement = plan(&fleet.desired, &fleet.observed, t2, &again.budget);
        assert!(launches(&with_replacement).is_empty());
    }
}

#[test]
fn a_node_in_grace_is_not_judged() {
    let mut fleet = SampleFleet::healthy(6, 3, NOW);
    fleet.launched_ago(3, Duration::from_secs(10 * 60));
    fleet.set_target_state(3, TargetState::Unhealthy);
    let plan_in_grace = plan(
        &fleet.desired,
        &fleet.observed,
        NOW,
        &ReplacementBudget::new(NOW),
    );
    assert!(plan_in_grace.actions.is_empty());
    assert!(
        plan_in_grace
            .decisions
            .iter()
            .any(|d| d.subject == "node-003" && d.verdict == Verdict::InGrace)
    );

    // Past its grace window the same node is replaced.
    let later = NOW.plus(Duration::from_secs(25 * 60));
    let judged = plan(
        &fleet.desired,
        &fleet.observed,
        later,
        &ReplacementBudget::new(later),
    );
    assert_eq!(launches(&judged).len(), 1);
}

#[test]
fn a_short_fleet_is_filled_towards_the_even_spread() {
    let mut fleet = SampleFleet::healthy(5, 3, NOW);
    fleet.desired.serving_nodes = 7;
    let plan = plan(
        &fleet.desired,
        &fleet.observed,
        NOW,
        &ReplacementBudget::new(NOW),
    );
    // Zones hold 2, 2, 1 of the desired 3, 2, 2: the emptier of the two short zones first.
    assert_eq!(
        launches(&plan),
        vec![
            ("zone-2-1".into(), "zone-2".into(), "launch/zone-2-1".into()),
            ("zone-0-1".into(), "zone-0".into(), "launch/zone-0-1".into()),
        ]
    );
    assert_eq!(plan.budget.tokens(), 10, "filling is not replacing");
}

#[test]
fn the_last_healthy_node_is_never_stopped() {
    let mut fleet = SampleFleet::healthy(1, 1, NOW);
    fleet.desired.healthy_floor = 0;
    let extra = replacement_task(0, "zone-0", NOW.minus(Duration::from_secs(3600)));
    // A duplicate replacement that is not healthy may go; the healthy current task stays.
    fleet.observed.tasks.push(extra.clone());
    let mut second = extra.clone();
    second.id = TaskId::new("task-000-r2");
    second.bindings[0].host_port = 41_000;
    second.started_at = Some(NOW.minus(Duration::from_secs(60)));
    fleet.observed.tasks.push(second);
    let plan = plan(
        &fleet.desired,
        &fleet.observed,
        NOW,
        &ReplacementBudget::new(NOW),
    );
    assert_eq!(stops(&plan), vec![extra.id.0.clone()]);
    assert!(!stops(&plan).contains(&sample::task_id(0).0));
}

/// The benchmark's case (examples/plan_300.rs) as a correctness check: 300 nodes over 3
/// zones with 15 failing get 15 launches, spread so the zones stay equal.
#[test]
fn a_300_node_fleet_replaces_its_15_failures_evenly() {
    let mut fleet = SampleFleet::healthy(300, 3, NOW);
    for index in 0..5 {
        fleet.set_target_state(index * 7, TargetState::Unhealthy);
        fleet.stop_task(index * 11 + 1, "exit 137");
        fleet.warn_spot(index * 13 + 3);
    }
    let plan = plan(
        &fleet.desired,
        &fleet.observed,
        NOW,
        &ReplacementBudget::per_hour(20, NOW),
    );
    let launched = launches(&plan);
    assert_eq!(launched.len(), 15);
    let failing_per_zone = |zone: &str| {
        (0..5)
            .flat_map(|i| [i * 7, i * 11 + 1, i * 13 + 3])
            .filter(|i| format!("zone-{}", i % 3) == zone)
            .count()
    };
    for zone in ["zone-0", "zone-1", "zone-2"] {
        let here = launched.iter().filter(|(_, z, _)| z == zone).count();
        assert_eq!(here, failing_per_zone(zone), "{zone}");
    }
}

#[test]
fn a_replacement_that_dies_before_adoption_is_replaced_again_at_once() {
    let mut fleet = SampleFleet::healthy(6, 3, NOW);
    fleet.stop_task(4, "Essential container in task exited");
    let budget = ReplacementBudget::new(NOW);
    let first = plan(&fleet.desired, &fleet.observed, NOW, &budget);
    let (_, _, first_key) = launches(&first).remove(0);

    // The replacement starts, then dies before it is healthy.
    let later = NOW.plus(Duration::from_secs(60));
    let mut dead = replacement_task(4, "zone-1", later);
    dead.last_status = TaskStatus::Stopped;
    dead.desired_status = TaskStatus::Stopped;
    dead.stop_reason = Some("Essential container in task exited".to_owned());
    fleet.observed.tasks.push(dead);
    let second = plan(&fleet.desired, &fleet.observed, later, &first.budget);
    let relaunch = launches(&second);
    assert_eq!(relaunch.len(), 1, "{:?}", second.actions);
    assert_eq!(relaunch[0].2, format!("{first_key}/retry-1"));
    assert_eq!(
        second.budget.tokens(),
        8,
        "a second replacement costs a token"
    );
    let again = plan(&fleet.desired, &fleet.observed, later, &second.budget);
    assert_eq!(
        launches(&again),
        relaunch,
        "replanning the same observation gives the same key"
    );
    assert_eq!(again.budget.tokens(), 8, "and it is paid for once");
}
