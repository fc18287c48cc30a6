//! `planner::operator_replacement` (`nodefleet replace NODE`): as a pure function over the
//! sample fleet (which nodes it refuses, which key and zone it picks, and that it is the
//! reconcile's own launch whenever a reconcile would replace the node too), and through the
//! executor on the port fakes (the `support` world): an operator's replacement and a
//! concurrent reconcile start one task, a repeated request starts none, and the reactor
//! finishes a replacement an operator started (rule 3).

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use nodefleet_ports::{
    NodeId, NodeState, PlacementFailure, Role, TargetState, TaskId, TaskStatus, Timestamp,
};
use nodefleet_reactor::planner::sample::{self, SampleFleet};
use nodefleet_reactor::planner::{
    Action, ObservedLaunchFailure, Plan, PlanSummary, ReplaceRefusal, ReplacementBudget,
    operator_replacement, plan,
};
use nodefleet_reactor::reconcile::{Outcome, ReconcileMemory, execute, observe};
use support::{OWNER, World, launch_outcomes, minute, node, now};

const NOW: Timestamp = Timestamp::from_millis(1_700_000_000_000);

/// (node, zone, key) of a launch.
fn launch_of(action: &Action) -> (String, String, String) {
    match action {
        Action::Launch {
            node,
            zone,
            idempotency_key,
            role,
            ..
        } => {
            assert_eq!(*role, Role::Serving);
            (node.0.clone(), zone.0.clone(), idempotency_key.clone())
        }
        other => panic!("not a launch: {other:?}"),
    }
}

fn reconcile_launch_of(
    fleet: &SampleFleet,
    budget: &ReplacementBudget,
    id: &NodeId,
) -> Option<Action> {
    plan(&fleet.desired, &fleet.observed, fleet.now, budget)
        .actions
        .into_iter()
        .find(|a| matches!(a, Action::Launch { node, .. } if node == id))
}

/// What a case expects.
enum Expect {
    /// A launch of this node in this zone under this key.
    Launch(&'static str, &'static str),
    /// The reconcile's own launch for the node, exactly (key and zone).
    SameAsReconcile,
    Refused(fn(&ReplaceRefusal) -> bool),
}

struct Case {
    name: &'static str,
    node: &'static str,
    setup: fn(&mut SampleFleet, &mut ReplacementBudget),
    expect: Expect,
}

fn no_change(_: &mut SampleFleet, _: &mut ReplacementBudget) {}

#[test]
fn operator_replacements_are_planned_with_the_reactors_rules() {
    let cases = [
        Case {
            name: "a healthy node is replaced in its own zone, under rule 1's key shape",
            node: "node-000",
            setup: no_change,
            expect: Expect::Launch("zone-0", "replace/node-000/task-000/zone-0"),
        },
        Case {
            name: "a node in grace is replaced too (an operator may give up on a slow sync)",
            node: "node-004",
            setup: |fleet, _| fleet.launched_ago(4, Duration::from_secs(60)),
            expect: Expect::Launch("zone-1", "replace/node-004/task-004/zone-1"),
        },
        Case {
            name: "an unhealthy node gets exactly the reconcile's launch",
            node: "node-001",
            setup: |fleet, _| fleet.set_target_state(1, TargetState::Unhealthy),
            expect: Expect::SameAsReconcile,
        },
        Case {
            name: "a lost node gets exactly the reconcile's launch",
            node: "node-002",
            setup: |fleet, _| fleet.stop_task(2, "Essential container in task exited"),
            expect: Expect::SameAsReconcile,
        },
        Case {
            // Nodes 0 and 3 (zone 0) are unhealthy too and count nowhere: zone 0 has the
            // largest deficit, as rule 1 would see it.
            name: "the storm guard does not hold an operator back",
            node: "node-001",
            setup: |fleet, _| {
                for index in 0..4 {
                    fleet.set_target_state(index, TargetState::Unhealthy);
                }
            },
            expect: Expect::Launch("zone-0", "replace/node-001/task-001/zone-0"),
        },
        Case {
            name: "a spent budget does not hold an operator back",
            node: "node-001",
            setup: |fleet, budget| {
                fleet.set_target_state(1, TargetState::Unhealthy);
                budget.bucket.tokens = 0;
                budget.bucket.refilled_at = NOW;
            },
            expect: Expect::Launch("zone-1", "replace/node-001/task-001/zone-1"),
        },
        Case {
            name: "a zone in backoff is skipped",
            node: "node-000",
            setup: |fleet, _| {
                fleet.observed.launch_failures.push(ObservedLaunchFailure {
                    zone: sample::zone(0),
                    at: NOW,
                    reason: PlacementFailure::ResourceMemory,
                });
            },
            expect: Expect::Launch("zone-1", "replace/node-000/task-000/zone-1"),
        },
        Case {
            name: "a replacement that died counts in the key",
            node: "node-000",
            setup: |fleet, _| {
                let mut dead = fleet.observed.tasks[0].clone();
                dead.id = TaskId::new("task-dead");
                dead.last_status = TaskStatus::Stopped;
                dead.desired_status = TaskStatus::Stopped;
                fleet.observed.tasks.push(dead);
            },
            expect: Expect::Launch("zone-0", "replace/node-000/task-000/zone-0/retry-1"),
        },
        Case {
            name: "an unknown node is refused",
            node: "node-999",
            setup: no_change,
            expect: Expect::Refused(|r| matches!(r, ReplaceRefusal::UnknownNode { .. })),
        },
        Case {
            name: "the updater node is refused",
            node: "node-000",
            setup: |fleet, _| fleet.observed.nodes[0].role = Role::Updater,
            expect: Expect::Refused(|r| {
                matches!(
                    r,
                    ReplaceRefusal::NotServing {
                        role: Role::Updater,
                        ..
                    }
                )
            }),
        },
        Case {
            name: "a stopped record is refused",
            node: "node-000",
            setup: |fleet, _| fleet.observed.nodes[0].state = NodeState::Stopped,
            expect: Expect::Refused(|r| matches!(r, ReplaceRefusal::Stopped { .. })),
        },
        Case {
            name: "a node with a replacement already is refused, naming it",
            node: "node-000",
            setup: |fleet, _| {
                let mut replacement = fleet.observed.tasks[0].clone();
                replacement.id = TaskId::new("task-new");
                replacement.started_at = Some(NOW);
                fleet.observed.tasks.push(replacement);
            },
            expect: Expect::Refused(
                |r| matches!(r, ReplaceRefusal::ReplacementPending { task, .. } if task.as_str() == "task-new"),
            ),
        },
        Case {
            name: "with every zone in backoff it is refused",
            node: "node-000",
            setup: |fleet, _| {
                for index in 0..3 {
                    fleet.observed.launch_failures.push(ObservedLaunchFailure {
                        zone: sample::zone(index),
                        at: NOW,
                        reason: PlacementFailure::ResourceCpu,
                    });
                }
            },
            expect: Expect::Refused(
                |r| matches!(r, ReplaceRefusal::NoZone { reason, .. } if reason.contains("backoff")),
            ),
        },
    ];
    for case in cases {
        let mut fleet = SampleFleet::healthy(6, 3, NOW);
        let mut budget = ReplacementBudget::new(NOW);
        (case.setup)(&mut fleet, &mut budget);
        let id = NodeId::new(case.node);
        let result = operator_replacement(&fleet.desired, &fleet.observed, &budget, &id, NOW);
        match case.expect {
            Expect::Launch(zone, key) => {
                let action = result.unwrap_or_else(|e| panic!("{}: refused: {e}", case.name));
                assert_eq!(
                    launch_of(&action),
                    (case.node.to_owned(), zone.to_owned(), key.to_owned()),
                    "{}",
                    case.name
                );
                assert!(
                    action.reason().starts_with("operator request: replace "),
                    "{}: {}",
                    case.name,
                    action.reason()
                );
                let Action::Launch { snapshot, .. } = &action else {
                    unreachable!()
                };
                assert_eq!(snapshot, &fleet.desired.snapshot, "{}", case.name);
            }
            Expect::SameAsReconcile => {
                let action = result.unwrap_or_else(|e| panic!("{}: refused: {e}", case.name));
                let reconciled = reconcile_launch_of(&fleet, &budget, &id)
                    .unwrap_or_else(|| panic!("{}: the reconcile launches nothing", case.name));
                assert_eq!(launch_of(&action), launch_of(&reconciled), "{}", case.name);
            }
            Expect::Refused(is_expected) => {
                let refusal = result
                    .err()
                    .unwrap_or_else(|| panic!("{}: planned", case.name));
                assert!(is_expected(&refusal), "{}: {refusal:?}", case.name);
                assert!(
                    refusal.to_string().contains(case.node),
                    "{}: {refusal}",
                    case.name
                );
            }
        }
    }
}

#[test]
fn the_storm_case_really_is_a_storm_for_the_reconcile() {
    // The "storm guard does not hold an operator back" case above means something only if
    // the reconcile would launch nothing for that observation.
    let mut fleet = SampleFleet::healthy(6, 3, NOW);
    for index in 0..4 {
        fleet.set_target_state(index, TargetState::Unhealthy);
    }
    let plan = plan(
        &fleet.desired,
        &fleet.observed,
        NOW,
        &ReplacementBudget::new(NOW),
    );
    assert!(plan.summary.storm);
    assert_eq!(plan.launches().count(), 0);
}

#[test]
fn a_healthy_nodes_replacement_goes_where_leaving_it_out_opens_the_gap() {
    // Node i runs in zone i % 3, two per zone. Node 5 (zone 2) is lost, so a reconcile
    // replaces it in zone 2. Leaving node 0 out, zones 0 and 2 each count one of their two
    // and zone 1 both: the tie between 0 and 2 goes to the earlier zone, so node 0's
    // replacement stays in zone 0 and the spread stays even once both launches land.
    let mut fleet = SampleFleet::healthy(6, 3, NOW);
    fleet.stop_task(5, "gone");
    let budget = ReplacementBudget::new(NOW);
    let (_, reconciled_zone, _) =
        launch_of(&reconcile_launch_of(&fleet, &budget, &sample::node_id(5)).unwrap());
    assert_eq!(reconciled_zone, "zone-2");
    let action = operator_replacement(
        &fleet.desired,
        &fleet.observed,
        &budget,
        &sample::node_id(0),
        NOW,
    )
    .unwrap();
    assert_eq!(launch_of(&action).1, "zone-0");
}

// ------------------------------------------------------------------ through the executor

fn one_action_plan(action: Action, budget: &ReplacementBudget) -> Plan {
    Plan {
        actions: vec![action],
        decisions: Vec::new(),
        budget: budget.clone(),
        summary: PlanSummary::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_replacement_and_a_concurrent_reconcile_launch_one_task() {
    let world = Arc::new(World::new().await);
    world.kill(0);
    let memory = ReconcileMemory::new(now());
    let observed = observe(world.ports(), &memory, &[], now()).await.unwrap();
    let action =
        operator_replacement(&world.desired, &observed, &memory.budget, &node(0), now()).unwrap();
    let operator_plan = one_action_plan(action, &memory.budget);
    let reconcile_plan = plan(&world.desired, &observed, now(), &memory.budget);
    assert_eq!(reconcile_plan.launches().count(), 1);

    let operator = {
        let world = Arc::clone(&world);
        let observed = observed.clone();
        tokio::spawn(async move {
            execute(
                &operator_plan,
                world.ports(),
                &world.desired,
                &observed,
                "operator",
                now(),
            )
            .await
        })
    };
    let reactor = {
        let world = Arc::clone(&world);
        tokio::spawn(async move {
            execute(
                &reconcile_plan,
                world.ports(),
                &world.desired,
                &observed,
                OWNER,
                now(),
            )
            .await
        })
    };
    let (operator, reactor) = (operator.await.unwrap(), reactor.await.unwrap());
    let outcomes: Vec<&Outcome> = launch_outcomes(&operator)
        .into_iter()
        .chain(launch_outcomes(&reactor))
        .collect();
    let done = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Done(_)))
        .count();
    let skipped = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Skipped(_)))
        .count();
    assert_eq!((done, skipped), (1, 1), "{outcomes:?}");
    assert_eq!(world.new_launches().len(), 1, "{:?}", world.new_launches());
    assert_eq!(world.live_tasks_of(&node(0)).len(), 1);
}

#[tokio::test]
async fn a_second_request_for_the_same_node_starts_nothing() {
    let world = World::new().await;
    let memory = ReconcileMemory::new(now());
    let observed = observe(world.ports(), &memory, &[], now()).await.unwrap();
    let action =
        operator_replacement(&world.desired, &observed, &memory.budget, &node(1), now()).unwrap();
    let first = execute(
        &one_action_plan(action.clone(), &memory.budget),
        world.ports(),
        &world.desired,
        &observed,
        "operator-1",
        now(),
    )
    .await;
    assert!(
        matches!(launch_outcomes(&first)[..], [Outcome::Done(_)]),
        "{first:?}"
    );

    // The same plan again (a retried command on the old observation): the key is taken.
    let replayed = execute(
        &one_action_plan(action, &memory.budget),
        world.ports(),
        &world.desired,
        &observed,
        "operator-2",
        now(),
    )
    .await;
    assert!(
        matches!(launch_outcomes(&replayed)[..], [Outcome::Skipped(_)]),
        "{replayed:?}"
    );
    // A fresh request sees the replacement and is refused, naming it.
    let again = observe(world.ports(), &memory, &[], now()).await.unwrap();
    let refusal =
        operator_replacement(&world.desired, &again, &memory.budget, &node(1), now()).unwrap_err();
    let started = first.started[0].clone();
    assert_eq!(
        refusal,
        ReplaceRefusal::ReplacementPending {
            node: node(1),
            task: started
        }
    );
    assert_eq!(world.new_launches().len(), 1);
}

#[tokio::test]
async fn the_reactor_finishes_a_replacement_an_operator_started() {
    let world = World::new().await;
    let old_task = world.tasks[2].0.clone();
    let memory = ReconcileMemory::new(now());
    let observed = observe(world.ports(), &memory, &[], now()).await.unwrap();
    let action =
        operator_replacement(&world.desired, &observed, &memory.budget, &node(2), now()).unwrap();
    let (_, zone, key) = launch_of(&action);
    assert_eq!(key, format!("replace/{}/{old_task}/{zone}", node(2)));
    let report = execute(
        &one_action_plan(action, &memory.budget),
        world.ports(),
        &world.desired,
        &observed,
        "operator",
        now(),
    )
    .await;
    let new_task = report.started[0].clone();
    // The record still names the old task until the replacement is healthy.
    assert_eq!(world.record(&node(2)).await.task, Some(old_task.clone()));

    // The one-minute schedule takes over: register the replacement, and once it is healthy
    // stop the old task and move the record.
    let mut memory = memory;
    for minutes in 1..=5 {
        memory = world
            .reconcile_at(&memory, &[], minute(minutes))
            .await
            .memory;
        if world.record(&node(2)).await.task.as_ref() == Some(&new_task) {
            break;
        }
    }
    let record = world.record(&node(2)).await;
    assert_eq!(record.task, Some(new_task.clone()));
    assert_eq!(record.state, NodeState::Serving);
    assert_eq!(world.task(&old_task).desired_status, TaskStatus::Stopped);
    assert_eq!(world.live_tasks_of(&node(2)), vec![new_task]);
    assert_eq!(
        world.new_launches().len(),
        1,
        "the reactor launched nothing of its own"
    );
}
