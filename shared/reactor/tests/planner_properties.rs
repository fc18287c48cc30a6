//! Property tests of the reconcile planner over generated fleets: whatever the mix of
//! healthy, unhealthy, stopped, vanished, doomed and still-starting nodes, replacements in
//! flight, missing nodes, budget and floor, a plan never launches more than the failed nodes
//! plus the deficit, never spends more than the budget, never stops below the healthy floor
//! (or the last healthy task), spreads replacements so zones end within one node of each
//! other, and is a function of its input (same input, same plan and keys).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use nodefleet_ports::{TargetState, TaskId, TaskInfo, Timestamp, Zone};
use nodefleet_reactor::planner::sample::{self, SampleFleet};
use nodefleet_reactor::planner::{Action, Plan, ReplacementBudget, plan};
use proptest::prelude::*;

const NOW: Timestamp = Timestamp::from_millis(1_700_000_000_000);

#[derive(Debug, Clone, Copy)]
enum Shape {
    Healthy,
    Unhealthy,
    Stopped,
    Vanished,
    StartingUnhealthy,
    Doomed,
    /// Unhealthy, with a replacement task already running and healthy.
    ReplacedHealthy,
    /// Healthy, with a replacement task still pending health.
    ReplacementPending,
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        6 => Just(Shape::Healthy),
        1 => Just(Shape::Unhealthy),
        1 => Just(Shape::Stopped),
        1 => Just(Shape::Vanished),
        1 => Just(Shape::StartingUnhealthy),
        1 => Just(Shape::Doomed),
        1 => Just(Shape::ReplacedHealthy),
        1 => Just(Shape::ReplacementPending),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    shapes: Vec<Shape>,
    zones: usize,
    missing: u32,
    tokens: u32,
    floor: u32,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(shape(), 1..40),
        1usize..5,
        0u32..5,
        0u32..=10,
        0u32..40,
    )
        .prop_map(|(shapes, zones, missing, tokens, floor)| Case {
            shapes,
            zones,
            missing,
            tokens,
            floor,
        })
}

fn replacement(index: usize, zone: Zone) -> TaskInfo {
    sample::running_task(
        TaskId::new(format!("task-{index:03}-r")),
        sample::node_id(index),
        zone,
        format!("i-r{index:07}"),
        40_000 + u16::try_from(index).unwrap(),
        NOW.minus(Duration::from_secs(60)),
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

/// The fleet a case describes, and how many of its nodes are failed (judged and needing a
/// replacement that is not in flight).
fn build(case: &Case) -> (SampleFleet, usize) {
    let mut fleet = SampleFleet::healthy(case.shapes.len(), case.zones, NOW);
    let mut failed = 0;
    for (index, shape) in case.shapes.iter().enumerate() {
        let zone = sample::zone(index % case.zones);
        match shape {
            Shape::Healthy => {}
            Shape::Unhealthy => {
                fleet.set_target_state(index, TargetState::Unhealthy);
                failed += 1;
            }
            Shape::Stopped => {
                fleet.stop_task(index, "exit 137");
                failed += 1;
            }
            Shape::Vanished => {
                let id = sample::task_id(index);
                fleet.observed.tasks.retain(|t| t.id != id);
                failed += 1;
            }
            Shape::StartingUnhealthy => {
                fleet.launched_ago(index, Duration::from_secs(60));
                fleet.set_target_state(index, TargetState::Initial);
            }
            Shape::Doomed => {
                fleet.warn_spot(index);
                failed += 1;
            }
            Shape::ReplacedHealthy => {
                fleet.set_target_state(index, TargetState::Unhealthy);
                let task = replacement(index, zone);
                fleet
                    .observed
                    .targets
                    .push(health_of(&task, TargetState::Healthy));
                fleet.observed.tasks.push(task);
            }
            Shape::ReplacementPending => {
                let task = replacement(index, zone);
                fleet
                    .observed
                    .targets
                    .push(health_of(&task, TargetState::Initial));
                fleet.observed.tasks.push(task);
            }
        }
    }
    fleet.desired.serving_nodes += case.missing;
    fleet.desired.healthy_floor = case.floor;
    (fleet, failed)
}

fn budget(tokens: u32) -> ReplacementBudget {
    let mut budget = ReplacementBudget::new(NOW);
    budget.bucket.tokens = tokens;
    budget
}

fn healthy_targets(fleet: &SampleFleet) -> BTreeMap<TaskId, bool> {
    fleet
        .observed
        .tasks
        .iter()
        .map(|task| {
            let healthy = nodefleet_ports::target_for_task(
                task,
                fleet.desired.network_mode,
                fleet.desired.container_port,
            )
            .and_then(|target| fleet.observed.targets.iter().find(|h| h.target == target))
            .is_some_and(|h| h.state == TargetState::Healthy);
            (task.id.clone(), healthy)
        })
        .collect()
}

fn replacement_launches(plan: &Plan) -> usize {
    plan.launches()
        .filter(|a| matches!(a, Action::Launch { idempotency_key, .. } if idempotency_key.starts_with("replace/")))
        .count()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn launches_are_bounded_by_failures_plus_deficit(case in case()) {
        let (fleet, failed) = build(&case);
        let plan = plan(&fleet.desired, &fleet.observed, NOW, &budget(case.tokens));
        prop_assert!(plan.launches().count() <= failed + case.missing as usize);
    }

    #[test]
    fn replacements_never_exceed_the_budget(case in case()) {
        let (fleet, _) = build(&case);
        let before = budget(case.tokens);
        let plan = plan(&fleet.desired, &fleet.observed, NOW, &before);
        prop_assert!(replacement_launches(&plan) <= case.tokens as usize);
        prop_assert_eq!(plan.budget.tokens() as usize, case.tokens as usize - replacement_launches(&plan));
    }

    #[test]
    fn stops_never_go_below_the_healthy_floor(case in case()) {
        let (fleet, _) = build(&case);
        let plan = plan(&fleet.desired, &fleet.observed, NOW, &budget(case.tokens));
        let healthy = healthy_targets(&fleet);
        let healthy_before = healthy.values().filter(|h| **h).count();
        let healthy_stopped = plan
            .actions
            .iter()
            .filter(|a| matches!(a, Action::StopTask { task, .. } if healthy[task]))
            .count();
        if healthy_stopped > 0 {
            let floor = (case.floor as usize).max(1);
            prop_assert!(healthy_before - healthy_stopped >= floor,
                "{healthy_before} healthy, {healthy_stopped} stopped, floor {floor}");
        }
    }

    #[test]
    fn the_same_input_gives_the_same_plan(case in case()) {
        let (fleet, _) = build(&case);
        let first = plan(&fleet.desired, &fleet.observed, NOW, &budget(case.tokens));
        let second = plan(&fleet.desired, &fleet.observed, NOW, &budget(case.tokens));
        prop_assert_eq!(first, second);
    }

    /// A balanced fleet that loses up to a third of its nodes (no storm), with budget
    /// enough and every zone available, ends within one node per zone of balanced.
    #[test]
    fn replacements_keep_zones_within_one_node(
        nodes in 3usize..60,
        zones in 1usize..5,
        dead in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
        missing in 0u32..4,
    ) {
        let mut fleet = SampleFleet::healthy(nodes, zones, NOW);
        fleet.desired.serving_nodes += missing;
        let mut dead: Vec<usize> = dead.iter().map(|i| i.index(nodes)).collect();
        dead.sort_unstable();
        dead.dedup();
        dead.truncate(nodes / 3);
        dead.truncate(10);
        for index in &dead {
            fleet.stop_task(*index, "killed");
        }
        let plan = plan(&fleet.desired, &fleet.observed, NOW, &ReplacementBudget::new(NOW));
        prop_assert!(plan.alerts().next().is_none());
        let mut counts = vec![0usize; zones];
        for index in (0..nodes).filter(|i| !dead.contains(i)) {
            counts[index % zones] += 1;
        }
        for action in plan.launches() {
            if let Action::Launch { zone, .. } = action {
                let index: usize = zone.0.trim_start_matches("zone-").parse().unwrap();
                counts[index] += 1;
            }
        }
        prop_assert_eq!(counts.iter().sum::<usize>(), nodes + missing as usize);
        let spread = counts.iter().max().unwrap() - counts.iter().min().unwrap();
        prop_assert!(spread <= 1, "zone counts {counts:?}");
    }
}
