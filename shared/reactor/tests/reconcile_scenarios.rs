//! Issue 5's failure scenarios played through `reconcile::reconcile` over many rounds of the
//! one-minute schedule, on the stateful fakes of `support` (a six-node fleet over three
//! zones): one node's whole replacement cycle to a steady state, a spot warning, a flapping
//! target, a zone that loses capacity for good while two of its nodes die, and a state store
//! that fails in the middle of a reconcile. Each round is a fresh observation; what a round
//! hands the next is only the `ReconcileMemory` it returned, as between two Lambda
//! invocations.

#![allow(clippy::unwrap_used)]

mod support;

use nodefleet_ports::{NodeState, TargetState, TaskId};
use nodefleet_reactor::planner::{Action, SpotWarning, Verdict, plan};
use nodefleet_reactor::reconcile::{Outcome, ReconcileMemory, ReconcileOutcome, execute, observe};
use support::{
    NODES, OWNER, World, launch_outcomes, minute, node, now, planned_stops, target_of, zone,
};

/// The one task the reactor launched so far (panics unless exactly one launch started one).
fn only_launched_task(world: &World) -> TaskId {
    let launches = world.new_launches();
    assert_eq!(launches.len(), 1, "{launches:?}");
    assert!(!launches[0].replayed);
    launches[0].report.started[0].id.clone()
}

fn assert_steady(round: &ReconcileOutcome, what: &str) {
    assert!(
        round.plan.actions.is_empty(),
        "{what}: a steady state plans nothing, got {:?}",
        round.plan.actions
    );
    assert!(
        round.report.outcomes.is_empty(),
        "{what}: {:?}",
        round.report
    );
}

#[tokio::test]
async fn one_dead_node_is_replaced_registered_adopted_and_then_left_alone() {
    let world = World::new().await;
    let (old_task, old_target) = world.tasks[0].clone();
    world.kill(0);

    // Lost: one replacement in the zone with the largest deficit (node 0's own), and the dead
    // task's target out of the balancer at once (nothing answers behind it).
    let lost = world
        .reconcile_at(&ReconcileMemory::new(now()), &[], minute(0))
        .await;
    assert_eq!(lost.plan.summary.lost, 1);
    assert_eq!(lost.report.failed(), 0, "{:?}", lost.report);
    let new_task = only_launched_task(&world);
    assert_eq!(world.new_launches()[0].request.zone, zone(0));
    assert_eq!(world.registry_calls_naming(&old_target, false), 1);
    assert!(!world.registry.registered().contains(&old_target));
    assert_eq!(
        world.record(&node(0)).await.task,
        Some(old_task.clone()),
        "a replacement leaves the record alone until it is adopted"
    );

    // The replacement runs: its target is registered and, the old task being gone, the record
    // names it.
    let running = world.reconcile_at(&lost.memory, &[], minute(1)).await;
    assert_eq!(running.plan.launches().count(), 0);
    let new_target = target_of(&world.task(&new_task));
    assert_eq!(world.registry_calls_naming(&new_target, true), 1);
    let record = world.record(&node(0)).await;
    assert_eq!(record.task, Some(new_task.clone()));
    assert_eq!(record.target, Some(new_target.clone()));
    assert_eq!(record.zone, zone(0));

    // From here on nothing is left to do: in grace first, then healthy past grace.
    let mut memory = running.memory;
    for at in [2, 3, 10, 31, 45, 90] {
        let round = world.reconcile_at(&memory, &[], minute(at)).await;
        assert_steady(&round, &format!("minute {at}"));
        assert_eq!(round.plan.summary.lost, 0, "minute {at}");
        if at > 30 {
            assert_eq!(round.plan.summary.healthy, NODES, "minute {at}");
        }
        memory = round.memory;
    }
    assert_eq!(world.new_launches().len(), 1);
    assert_eq!(world.live_tasks_of(&node(0)), vec![new_task.clone()]);
    assert_eq!(world.registry_calls_naming(&new_target, true), 1);
    assert_eq!(world.registry_calls_naming(&old_target, false), 1);
    assert_eq!(world.record(&node(0)).await.task, Some(new_task));
    assert_eq!(
        world.faults.calls("stop"),
        0,
        "a task already gone is not stopped"
    );
}

#[tokio::test]
async fn a_spot_warning_replaces_at_once_drains_and_stops_the_doomed_task_once_replaced() {
    let world = World::new().await;
    let (doomed, doomed_target) = world.tasks[0].clone();
    let warning = SpotWarning {
        instance_id: world.task(&doomed).instance_id.unwrap(),
        at: minute(0),
    };

    // The warning's own reconcile (the spot event's): replace now, drain now, stop nothing yet.
    let warned = world
        .reconcile_at(
            &ReconcileMemory::new(now()),
            std::slice::from_ref(&warning),
            minute(0),
        )
        .await;
    assert_eq!(warned.plan.summary.doomed, 1);
    assert!(planned_stops(&warned.plan.actions).is_empty());
    assert_eq!(warned.memory.spot_warnings, vec![warning.clone()]);
    let replacement = only_launched_task(&world);
    assert_eq!(world.registry_calls_naming(&doomed_target, false), 1);
    assert_eq!(
        world.live_tasks_of(&node(0)).len(),
        2,
        "replace first, stop after"
    );

    // Later reconciles come from the schedule and carry no event: only the memory knows the
    // instance is doomed. The replacement is registered, then turns healthy, and only then is
    // the doomed task stopped and the record moved.
    let registered = world.reconcile_at(&warned.memory, &[], minute(1)).await;
    assert!(planned_stops(&registered.plan.actions).is_empty());
    assert_eq!(world.faults.calls("stop"), 0);
    assert_eq!(world.record(&node(0)).await.task, Some(doomed.clone()));
    let replacement_target = target_of(&world.task(&replacement));
    assert_eq!(world.registry_calls_naming(&replacement_target, true), 1);

    let healthy = world.reconcile_at(&registered.memory, &[], minute(2)).await;
    assert_eq!(
        planned_stops(&healthy.plan.actions),
        vec![(doomed.clone(), Some(replacement.clone()))]
    );
    assert_eq!(world.faults.calls("stop"), 1);
    let record = world.record(&node(0)).await;
    assert_eq!(record.task, Some(replacement.clone()));
    assert_eq!(record.target, Some(replacement_target));
    assert_eq!(record.state, NodeState::Serving);

    let mut memory = healthy.memory;
    for at in 3..8 {
        let round = world.reconcile_at(&memory, &[], minute(at)).await;
        assert_steady(&round, &format!("minute {at}"));
        memory = round.memory;
    }
    assert_eq!(world.new_launches().len(), 1, "no second launch");
    assert_eq!(world.faults.calls("stop"), 1);
    assert_eq!(world.live_tasks_of(&node(0)), vec![replacement]);
    assert_eq!(
        world.registry_calls_naming(&doomed_target, true),
        1,
        "the doomed target is never put back into rotation (the one call is the setup's)"
    );
    assert!(
        memory.spot_warnings.is_empty(),
        "the warning is forgotten once its instance runs no task of the fleet"
    );
}

#[tokio::test]
async fn a_flapping_target_gets_one_replacement_and_its_healthy_task_is_kept_at_the_floor() {
    let mut world = World::new().await;
    // No stop may leave fewer than six healthy tasks; node 4's target is out of use for a
    // while (not judged, not healthy), so that the floor binds when the flapping node's
    // replacement turns healthy while the node itself is healthy too.
    world.desired.healthy_floor = 6;
    let (flapping, flapping_target) = world.tasks[1].clone();
    let idle_target = world.tasks[4].1.clone();
    world.registry.set_health(
        &idle_target,
        TargetState::Unused,
        Some("Target.NotInUse"),
        None,
    );

    world
        .registry
        .set_unhealthy(&flapping_target, "Health checks failed");
    let first = world
        .reconcile_at(&ReconcileMemory::new(now()), &[], minute(0))
        .await;
    assert_eq!(first.plan.summary.unhealthy, 1);
    let replacement = only_launched_task(&world);
    let replacement_target = target_of(&world.task(&replacement));
    // The replacement takes a while to pass its first health checks.
    world.registry.set_health(
        &replacement_target,
        TargetState::Initial,
        Some("Elb.RegistrationInProgress"),
        None,
    );

    let mut memory = first.memory;
    for (at, unhealthy) in [(1, false), (2, true), (3, false), (4, true), (5, false)] {
        if unhealthy {
            world
                .registry
                .set_unhealthy(&flapping_target, "Health checks failed");
        } else {
            world.registry.clear_health(&flapping_target);
        }
        let round = world.reconcile_at(&memory, &[], minute(at)).await;
        assert_eq!(round.plan.launches().count(), 0, "minute {at}");
        assert!(
            planned_stops(&round.plan.actions).is_empty(),
            "minute {at}: nothing is stopped before its replacement is healthy"
        );
        memory = round.memory;
    }
    assert_eq!(world.registry_calls_naming(&replacement_target, true), 1);

    // The replacement is healthy and so is the flapping task: stopping it would leave five.
    world.registry.clear_health(&replacement_target);
    let at_floor = world.reconcile_at(&memory, &[], minute(6)).await;
    assert!(planned_stops(&at_floor.plan.actions).is_empty());
    assert!(
        at_floor
            .plan
            .decisions
            .iter()
            .any(|d| d.subject == flapping.as_str() && d.verdict == Verdict::Withheld),
        "{:?}",
        at_floor.plan.decisions
    );
    assert_eq!(world.faults.calls("stop"), 0);

    // Node 4 is back in use: seven healthy, one can go.
    world.registry.clear_health(&idle_target);
    let above_floor = world.reconcile_at(&at_floor.memory, &[], minute(7)).await;
    assert_eq!(
        planned_stops(&above_floor.plan.actions),
        vec![(flapping.clone(), Some(replacement.clone()))]
    );
    assert_eq!(world.record(&node(1)).await.task, Some(replacement.clone()));

    // The old target keeps flapping on its way out: nothing more happens.
    let mut memory = above_floor.memory;
    for at in 8..12 {
        if at % 2 == 0 {
            world
                .registry
                .set_unhealthy(&flapping_target, "Health checks failed");
        } else {
            world.registry.clear_health(&flapping_target);
        }
        let round = world.reconcile_at(&memory, &[], minute(at)).await;
        assert_eq!(round.plan.launches().count(), 0, "minute {at}");
        memory = round.memory;
    }
    assert_eq!(world.new_launches().len(), 1, "one replacement in all");
    assert_eq!(world.faults.calls("stop"), 1);
    assert_eq!(world.live_tasks_of(&node(1)), vec![replacement]);
}

#[tokio::test]
async fn a_zone_lost_for_good_moves_its_replacements_and_gets_launches_again_once_it_recovers() {
    let mut world = World::new().await;
    world
        .faults
        .fail_zone(&zone(0), nodefleet_ports::PlacementFailure::ResourceMemory);
    world.kill(0);
    world.kill(3);

    // Both dead nodes lived in zone 0, the zone furthest below its share: tried there first.
    let refused = world
        .reconcile_at(&ReconcileMemory::new(now()), &[], minute(0))
        .await;
    assert_eq!(refused.plan.summary.lost, 2);
    assert_eq!(refused.report.failed(), 2, "{:?}", refused.report);
    assert!(world.new_launches().is_empty());

    // Zone 0 is in backoff: the replacements go to the other two zones, one each.
    let moved = world.reconcile_at(&refused.memory, &[], minute(1)).await;
    assert_eq!(moved.report.failed(), 0, "{:?}", moved.report);
    let launches = world.new_launches();
    assert_eq!(launches.len(), 2, "{launches:?}");
    let mut zones: Vec<_> = launches.iter().map(|l| l.request.zone.clone()).collect();
    zones.sort();
    assert_eq!(zones, vec![zone(1), zone(2)]);

    // The zone stays lost; the fleet is whole again, three and three, and stays so.
    let mut memory = moved.memory;
    for at in (2..10).chain([31, 40]) {
        let round = world.reconcile_at(&memory, &[], minute(at)).await;
        assert_eq!(round.plan.launches().count(), 0, "minute {at}");
        memory = round.memory;
    }
    assert_eq!(world.live_per_zone(), vec![0, 3, 3]);
    for (index, launch) in [0, 3].into_iter().zip(&launches) {
        let record = world.record(&node(index)).await;
        let task = &launch.report.started[0];
        assert_eq!(record.task, Some(task.id.clone()));
        assert_eq!(
            Some(&record.zone),
            task.zone.as_ref(),
            "the record says where the node runs now"
        );
    }
    assert_eq!(world.faults.calls("launch"), 4);

    // The zone recovers. A seventh node is wanted, and then node 1 (zone 1) dies: both land
    // in zone 0, the one below its share, and the fleet ends within one node of balance.
    world.faults.heal_zone(&zone(0));
    world.desired.serving_nodes = 7;
    let filled = world.reconcile_at(&memory, &[], minute(41)).await;
    assert_eq!(filled.plan.summary.fills, 1);
    world.kill(1);
    let replaced = world.reconcile_at(&filled.memory, &[], minute(42)).await;
    assert_eq!(replaced.plan.summary.replacements, 1);
    let launches = world.new_launches();
    assert_eq!(launches.len(), 4, "{launches:?}");
    assert_eq!(launches[2].request.zone, zone(0), "the fill");
    assert_eq!(launches[3].request.node, node(1));
    assert_eq!(launches[3].request.zone, zone(0), "the replacement");
    let per_zone = world.live_per_zone();
    assert_eq!(per_zone.iter().sum::<usize>(), 7);
    let (least, most) = (
        per_zone.iter().min().unwrap(),
        per_zone.iter().max().unwrap(),
    );
    assert!(most - least <= 1, "{per_zone:?}");
}

#[tokio::test]
async fn a_state_store_failing_mid_reconcile_does_not_make_the_next_one_launch_again() {
    let world = World::new().await;
    world.kill(0);
    let memory = ReconcileMemory::new(now());
    let observed = observe(world.ports(), &memory, &[], now()).await.unwrap();
    let planned = plan(&world.desired, &observed, now(), &memory.budget);
    assert_eq!(planned.launches().count(), 1);

    // The plan deregisters the dead target, then launches. The store goes away between the
    // launch's claim and its bookkeeping: the record read, the key's completion (the second
    // of this execution) and the audit fail.
    assert!(matches!(
        planned.actions[..],
        [Action::DeregisterTarget { .. }, Action::Launch { .. }]
    ));
    world.state_faults.fail_always("get_node");
    world.state_faults.fail_always("save_node");
    world.state_faults.fail_nth("complete_idempotency_key", 2);
    world.state_faults.fail_nth("append_event", 2);
    let broken = execute(
        &planned,
        world.ports(),
        &world.desired,
        &observed,
        OWNER,
        now(),
    )
    .await;
    assert!(
        matches!(launch_outcomes(&broken)[..], [Outcome::Done(_)]),
        "{broken:?}"
    );
    assert_eq!(broken.failed(), 0, "{broken:?}");
    assert_eq!(
        broken.warnings.len(),
        3,
        "record read, key completion, audit: {:?}",
        broken.warnings
    );
    let replacement = only_launched_task(&world);

    // The store is back. A duplicate of the same event, on the same stale observation, finds
    // the launch's key claimed and not completed: someone is acting, it skips.
    world.state_faults.clear();
    let duplicate = execute(
        &planned,
        world.ports(),
        &world.desired,
        &observed,
        "reactor-b",
        now(),
    )
    .await;
    assert!(
        matches!(launch_outcomes(&duplicate)[..], [Outcome::Skipped(_)]),
        "{duplicate:?}"
    );

    // The next reconcile sees the replacement: no launch; it is registered and adopted.
    let next = world.reconcile_at(&memory, &[], minute(1)).await;
    assert_eq!(next.plan.launches().count(), 0);
    assert_eq!(next.report.failed(), 0, "{:?}", next.report);
    assert_eq!(world.registry_calls_naming(&world.tasks[0].1, false), 1);
    assert_eq!(world.record(&node(0)).await.task, Some(replacement.clone()));
    let settled = world.reconcile_at(&next.memory, &[], minute(2)).await;
    assert_steady(&settled, "after the outage");
    assert_eq!(world.new_launches().len(), 1);
    assert_eq!(world.live_tasks_of(&node(0)), vec![replacement]);
}

#[tokio::test]
async fn a_record_save_lost_while_adopting_the_replacement_is_made_good_by_a_later_reconcile() {
    let world = World::new().await;
    let (dead, _) = world.tasks[0].clone();
    world.kill(0);
    let lost = world
        .reconcile_at(&ReconcileMemory::new(now()), &[], minute(0))
        .await;
    let replacement = only_launched_task(&world);

    // The replacement's target is registered, but the record cannot be saved.
    world.state_faults.fail_always("save_node");
    let registering = world.reconcile_at(&lost.memory, &[], minute(1)).await;
    assert_eq!(registering.report.failed(), 0, "{:?}", registering.report);
    assert!(!registering.report.warnings.is_empty());
    assert_eq!(world.record(&node(0)).await.task, Some(dead));
    world.state_faults.clear();

    // A later reconcile moves the record to the healthy replacement, without a launch.
    let repaired = world
        .reconcile_at(&registering.memory, &[], minute(2))
        .await;
    assert_eq!(repaired.plan.launches().count(), 0);
    assert!(
        matches!(
            repaired.plan.actions[..],
            [Action::AdoptTask { ref task, .. }] if *task == replacement
        ),
        "{:?}",
        repaired.plan.actions
    );
    assert_eq!(repaired.report.done(), 1, "{:?}", repaired.report);
    let record = world.record(&node(0)).await;
    assert_eq!(record.task, Some(replacement.clone()));
    assert_eq!(record.target, Some(target_of(&world.task(&replacement))));
    assert_eq!(record.state, NodeState::Serving);
    assert!(
        world
            .audit_kinds()
            .await
            .iter()
            .any(|k| k == "reactor.adopt")
    );

    // ... after which the node counts as what it is, not as lost (which would feed the storm
    // guard a failure that is over), and nothing is left to do.
    let mut memory = repaired.memory;
    for at in 3..6 {
        let round = world.reconcile_at(&memory, &[], minute(at)).await;
        assert_steady(&round, &format!("minute {at}"));
        assert_eq!(round.plan.summary.lost, 0, "minute {at}");
        memory = round.memory;
    }
    assert_eq!(world.new_launches().len(), 1);
    assert_eq!(world.live_tasks_of(&node(0)), vec![replacement]);
}
