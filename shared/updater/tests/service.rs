//! The updater's service over real stores, the fake scheduler and an in-process agent:
//! whole rounds, concurrent ticks, the lease, crashes at every step, and every way a round
//! can go wrong. After every tick, `latest` must name a complete, verified snapshot.

mod support;

use std::time::Duration;

use bytes::Bytes;
use nodefleet_ports::{ObjectStore, Role, SnapshotId, SnapshotState, StateStore, TaskId};
use nodefleet_snapshot::channel::CommandAction;
use nodefleet_snapshot::format::PACKS_PREFIX;
use nodefleet_updater::round::{AbortReason, RoundOutcome, Step, UpdaterMemory};
use nodefleet_updater::service::{self, UPDATER_NAME, UpdaterRun};
use support::{STEP_TIMEOUT, World, settings};

async fn memory(world: &World) -> UpdaterMemory {
    let stored = world
        .state
        .inner()
        .get_control_state(UPDATER_NAME)
        .await
        .expect("read")
        .expect("memory saved");
    serde_json::from_str(&stored.body).expect("memory parses")
}

/// Drives until `done(memory)` or `ticks` ticks, checking invariant 4 after every tick.
async fn drive_until(world: &mut World, ticks: usize, done: impl Fn(&UpdaterMemory) -> bool) {
    for _ in 0..ticks {
        world.drive(1).await;
        world.assert_latest_is_complete().await;
        if done(&memory(world).await) {
            return;
        }
    }
    panic!(
        "not done after {ticks} ticks; memory: {:#?}",
        memory(world).await
    );
}

fn last_abort(memory: &UpdaterMemory) -> Option<AbortReason> {
    match memory.last.as_ref().map(|l| &l.outcome) {
        Some(RoundOutcome::Aborted(abort)) => Some(abort.reason),
        _ => None,
    }
}

async fn start_round(world: &mut World) {
    world.agent_step().await;
    let run = world.tick(true).await.expect("tick");
    assert!(matches!(run, UpdaterRun::Ran(_)));
}

#[tokio::test]
async fn a_round_publishes_a_verified_snapshot_and_the_next_is_incremental() {
    let mut world = World::new("publish").await;
    start_round(&mut world).await;
    let launches = world.fake_scheduler.launches();
    assert_eq!(launches.len(), 1);
    assert_eq!(launches[0].request.role, Role::Updater);
    drive_until(&mut world, 20, |m| m.rounds_published == 1).await;

    let first = memory(&world).await;
    let Some(RoundOutcome::Published {
        snapshot,
        block_height,
        bytes_total,
        bytes_uploaded,
        ..
    }) = first.last.as_ref().map(|l| l.outcome.clone())
    else {
        panic!("not published: {first:#?}");
    };
    assert_eq!(block_height, 100);
    assert_eq!(world.latest().await.as_deref(), Some(snapshot.as_str()));
    let record = world
        .state
        .get_snapshot(&snapshot)
        .await
        .expect("read")
        .expect("catalog record");
    assert_eq!(record.state, SnapshotState::Published);
    assert_eq!(
        (record.bytes, record.uploaded_bytes),
        (bytes_total, bytes_uploaded)
    );
    assert_eq!(record.block_height, 100);
    // The updater node is recorded, never serving.
    let nodes = world.state.list_nodes().await.expect("nodes");
    assert!(nodes.iter().all(|n| n.role == Role::Updater));
    // Its record follows the agent's report: running and synced again after the resume.
    assert_eq!(
        nodes.iter().map(|n| n.state).collect::<Vec<_>>(),
        [nodefleet_ports::NodeState::Serving]
    );
    // The client was resumed: the agent is not quiesced.
    assert!(world.agent.quiesced.is_none());
    // Every step was timed.
    let steps: Vec<Step> = first
        .last
        .as_ref()
        .map(|l| l.step_millis.iter().map(|(s, _)| *s).collect())
        .unwrap_or_default();
    assert_eq!(steps, Step::ALL);

    // An hour later the next round starts on its own, re-uses the running updater, and
    // uploads only what changed.
    world.advance(Duration::from_secs(3600));
    drive_until(&mut world, 20, |m| m.rounds_published == 2).await;
    assert_eq!(
        world.fake_scheduler.launches().len(),
        1,
        "the updater is re-used"
    );
    let second = memory(&world).await;
    let Some(RoundOutcome::Published {
        snapshot: newer,
        block_height,
        bytes_uploaded: uploaded_again,
        ..
    }) = second.last.as_ref().map(|l| l.outcome.clone())
    else {
        panic!("second round did not publish");
    };
    assert_eq!(block_height, 110);
    assert!(
        uploaded_again < bytes_uploaded,
        "{uploaded_again} vs {bytes_uploaded}"
    );
    assert_eq!(world.latest().await.as_deref(), Some(newer.as_str()));
    let old = world.state.get_snapshot(&snapshot).await.expect("read");
    assert_eq!(old.map(|r| r.state), Some(SnapshotState::Retired));
}

#[tokio::test]
async fn concurrent_ticks_have_one_lease_holder() {
    let world = World::new("concurrent").await;
    let ports = world.ports();
    let runs = futures_util::future::join_all((0..10).map(|i| {
        let settings = settings(&format!("owner-{i}"));
        let now = world.now;
        async move { service::run(ports, &settings, true, now).await }
    }))
    .await;
    let ran = runs
        .iter()
        .filter(|r| matches!(r, Ok(UpdaterRun::Ran(_))))
        .count();
    let busy = runs
        .iter()
        .filter(|r| matches!(r, Ok(UpdaterRun::Busy { .. })))
        .count();
    // Each releases the lease when done, so a later one may also get it; never two at once,
    // and however many ran, one round launched one updater.
    assert!(ran >= 1, "{runs:?}");
    assert_eq!(ran + busy, 10, "{runs:?}");
    assert_eq!(world.fake_scheduler.launches().len(), 1);
}

#[tokio::test]
async fn a_stale_lease_is_taken_over_only_after_it_expires() {
    let mut world = World::new("stale-lease").await;
    start_round(&mut world).await;
    // A tick that died holding the lease.
    let ttl = Duration::from_secs(300);
    world
        .state
        .acquire_lease(UPDATER_NAME, "dead-tick", ttl, world.now)
        .await
        .expect("lease");
    world.advance(Duration::from_secs(299));
    world.agent_step().await;
    match world.tick(false).await {
        Ok(UpdaterRun::Busy { holder, .. }) => assert_eq!(holder, "dead-tick"),
        other => panic!("expected busy, got {other:?}"),
    }
    world.advance(Duration::from_secs(2));
    // Expired: the next tick takes over and the round goes on from where it was.
    drive_until(&mut world, 20, |m| m.rounds_published == 1).await;
}

#[tokio::test]
async fn a_corrupt_upload_is_never_published() {
    for truncate in [false, true] {
        let mut world = World::new("corrupt").await;
        start_round(&mut world).await;
        // Up to the upload's ack.
        for _ in 0..10 {
            world.drive(1).await;
            if memory(&world).await.round.as_ref().map(|r| r.step) == Some(Step::Upload) {
                break;
            }
        }
        world.agent_step().await; // the agent uploads and acks
        let packs = world.memory_store.keys();
        let pack = packs
            .iter()
            .find(|k| k.starts_with(PACKS_PREFIX))
            .cloned()
            .expect("a pack");
        let mut body = world.memory_store.object(&pack).expect("pack").to_vec();
        if truncate {
            body.truncate(body.len() / 2);
        } else if let Some(byte) = body.get_mut(10) {
            *byte ^= 0xff;
        }
        world
            .memory_store
            .put(&pack, Bytes::from(body))
            .await
            .expect("corrupt");
        drive_until(&mut world, 20, |m| m.round.is_none()).await;
        let m = memory(&world).await;
        assert_eq!(last_abort(&m), Some(AbortReason::VerifyFailed), "{m:#?}");
        assert_eq!(world.latest().await, None, "nothing was published");
        assert!(world.agent.quiesced.is_none(), "the client was resumed");
        let failed = world.state.list_snapshots().await.expect("catalog");
        assert!(
            failed.iter().all(|s| s.state == SnapshotState::Failed),
            "{failed:?}"
        );
    }
}

#[tokio::test]
async fn a_block_that_is_not_newer_is_not_published() {
    let mut world = World::new("not-newer").await;
    start_round(&mut world).await;
    drive_until(&mut world, 20, |m| m.rounds_published == 1).await;
    let published = world.latest().await;
    // The updater's chain did not move (the resume's +10 undone).
    world.agent.block = 100;
    world.agent.write_chain_data();
    world.advance(Duration::from_secs(3600));
    drive_until(&mut world, 20, |m| m.rounds_aborted == 1).await;
    assert_eq!(
        last_abort(&memory(&world).await),
        Some(AbortReason::NotNewer)
    );
    assert_eq!(world.latest().await, published);
}

#[tokio::test]
async fn failing_agent_commands_abort_and_resume() {
    for action in [CommandAction::Quiesce, CommandAction::Upload] {
        let mut world = World::new("failing").await;
        world.agent.fail.insert(action);
        start_round(&mut world).await;
        drive_until(&mut world, 20, |m| m.round.is_none()).await;
        let expected = match action {
            CommandAction::Quiesce => AbortReason::QuiesceFailed,
            _ => AbortReason::UploadFailed,
        };
        assert_eq!(last_abort(&memory(&world).await), Some(expected));
        assert!(world.agent.quiesced.is_none(), "{action:?}: resumed");
        assert_eq!(world.latest().await, None);
        // The next round starts clean and publishes.
        world.agent.fail.clear();
        world.advance(Duration::from_secs(3600));
        drive_until(&mut world, 20, |m| m.rounds_published == 1).await;
    }
}

#[tokio::test]
async fn an_agent_restart_between_quiesce_and_upload_aborts_cleanly() {
    let mut world = World::new("restart").await;
    start_round(&mut world).await;
    for _ in 0..10 {
        world.drive(1).await;
        if memory(&world).await.round.as_ref().map(|r| r.step) == Some(Step::Upload) {
            break;
        }
    }
    assert!(world.agent.quiesced.is_some());
    world.agent.restart();
    drive_until(&mut world, 20, |m| m.round.is_none()).await;
    let m = memory(&world).await;
    assert_eq!(last_abort(&m), Some(AbortReason::UploadFailed), "{m:#?}");
    assert_eq!(world.latest().await, None);
}

#[tokio::test]
async fn a_silent_agent_times_out_and_the_next_round_starts_clean() {
    let mut world = World::new("silent").await;
    start_round(&mut world).await;
    for _ in 0..10 {
        world.drive(1).await;
        if memory(&world).await.round.as_ref().map(|r| r.step) == Some(Step::Upload) {
            break;
        }
    }
    world.agent.silent = true;
    world.advance(STEP_TIMEOUT + Duration::from_secs(1));
    world.drive(1).await;
    let m = memory(&world).await;
    assert_eq!(m.round.as_ref().map(|r| r.step), Some(Step::Resume));
    assert_eq!(
        m.round
            .as_ref()
            .and_then(|r| r.abort.as_ref())
            .map(|a| (a.reason, a.step)),
        Some((AbortReason::Timeout, Step::Upload))
    );
    // The resume goes unanswered too: the round ends after its timeout.
    world.advance(STEP_TIMEOUT + Duration::from_secs(1));
    world.drive(1).await;
    assert_eq!(memory(&world).await.round, None);
    assert_eq!(world.latest().await, None);
    world.agent.silent = false;
    world.advance(Duration::from_secs(3600));
    drive_until(&mut world, 20, |m| m.rounds_published == 1).await;
}

#[tokio::test]
async fn the_updater_task_dying_aborts_and_the_next_round_launches_another() {
    let mut world = World::new("task-dies").await;
    start_round(&mut world).await;
    for _ in 0..10 {
        world.drive(1).await;
        if memory(&world).await.round.as_ref().map(|r| r.step) == Some(Step::Upload) {
            break;
        }
    }
    let task: TaskId = memory(&world)
        .await
        .round
        .and_then(|r| r.task)
        .expect("a task");
    world.agent.silent = true;
    assert!(world.fake_scheduler.terminate(&task, "instance lost"));
    world.drive(1).await;
    let m = memory(&world).await;
    assert_eq!(last_abort(&m), Some(AbortReason::NodeLost), "{m:#?}");
    world.agent.silent = false;
    world.agent.restart();
    world.advance(Duration::from_secs(3600));
    drive_until(&mut world, 20, |m| m.rounds_published == 1).await;
    assert_eq!(world.fake_scheduler.launches().len(), 2);
    // The first updater's record is marked stopped; the second is the only live one.
    let updaters: Vec<_> = world
        .state
        .list_nodes()
        .await
        .expect("nodes")
        .into_iter()
        .filter(|n| n.state != nodefleet_ports::NodeState::Stopped)
        .collect();
    assert_eq!(updaters.len(), 1, "{updaters:?}");
}

/// Every operation the updater uses, failing at its 1st..6th call: the round either
/// recovers or aborts cleanly, `latest` is always complete, and once the fault is gone a
/// round publishes.
#[tokio::test]
async fn a_crash_at_any_step_never_publishes_a_bad_snapshot() {
    let operations = [
        "acquire_lease",
        "get_control_state",
        "save_control_state",
        "renew_lease",
        "get_snapshot",
        "save_snapshot",
        "list_snapshots",
        "get_config",
        "launch",
        "list_tasks",
        "put",
        "put_if_absent",
        "get",
        "head",
        "list",
    ];
    let mut injected = 0;
    for operation in operations {
        for n in 1..=6 {
            for lose_answer in [false, true] {
                let mut world = World::new("crash").await;
                if lose_answer {
                    world.faults.lose_answer_nth(operation, n);
                } else {
                    world.faults.fail_nth(operation, n);
                }
                world.agent_step().await;
                let _ = world.tick(true).await;
                for _ in 0..30 {
                    world.drive(1).await;
                    world.assert_latest_is_complete().await;
                }
                injected += world.faults.injected().len();
                world.faults.clear();
                // Past every timeout and the next interval: the machine is back to work.
                world.advance(STEP_TIMEOUT * 2 + Duration::from_secs(3600));
                let mut published = false;
                for _ in 0..40 {
                    world.drive(1).await;
                    world.assert_latest_is_complete().await;
                    if memory(&world).await.rounds_published >= 1 {
                        published = true;
                        break;
                    }
                }
                assert!(
                    published,
                    "{operation} #{n} (lose answer: {lose_answer}): no round published after the fault; {:#?}",
                    memory(&world).await
                );
                let latest = world.latest().await.map(SnapshotId::new);
                let record = match &latest {
                    Some(id) => world.state.inner().get_snapshot(id).await.ok().flatten(),
                    None => None,
                };
                assert!(
                    record.is_some_and(|r| r.state == SnapshotState::Published),
                    "{operation} #{n}: latest has a published catalog record"
                );
            }
        }
    }
    assert!(injected > 100, "faults were injected: {injected}");
}

#[tokio::test]
async fn metrics_come_from_a_finished_round() {
    let mut world = World::new("metrics").await;
    start_round(&mut world).await;
    let mut documents = Vec::new();
    for _ in 0..20 {
        world.agent_step().await;
        if let Ok(UpdaterRun::Ran(ran)) = world.tick(false).await {
            documents.extend(nodefleet_updater::metrics::documents(
                "test",
                ran.latest_created_at,
                &ran.finished,
                world.now,
            ));
            if !ran.finished.is_empty() {
                break;
            }
        }
        world.advance(Duration::from_secs(1));
    }
    let names: Vec<&str> = documents
        .iter()
        .filter_map(|d| d.as_object())
        .flat_map(|d| d.keys().map(String::as_str))
        .collect();
    for metric in [
        "RoundDuration",
        "BytesUploaded",
        "DedupeRatio",
        "StepDuration",
        "SnapshotAge",
    ] {
        assert!(names.contains(&metric), "{metric} in {names:?}");
    }
}
