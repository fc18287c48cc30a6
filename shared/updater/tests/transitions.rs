//! Table tests of the round's state machine: every step's way forward, every timeout and
//! every abort, as `(memory, input) -> (memory, effects)`.

use std::time::Duration;

use nodefleet_ports::{NodeId, SnapshotId, TaskId, Timestamp};
use nodefleet_snapshot::channel::{
    Ack, AckState, AgentPhase, CommandAction, Report, ReportedHealth, UploadResult,
};
use nodefleet_snapshot::format::ChainPoint;
use nodefleet_updater::round::{
    AbortReason, Effect, Failure, Input, Published, Round, RoundOutcome, RoundSettings, Seen, Step,
    StepTimeouts, UpdaterMemory, UpdaterTask, Verified, transition,
};

const T0: u64 = 1_000_000;
const TIMEOUT: Duration = Duration::from_secs(60);

fn settings() -> RoundSettings {
    RoundSettings {
        interval: Duration::from_secs(3600),
        timeouts: StepTimeouts::all(TIMEOUT),
        max_head_age: Duration::from_secs(60),
        heartbeat_stale: Duration::from_secs(30),
    }
}

fn at(offset_ms: u64) -> Timestamp {
    Timestamp::from_millis(T0 + offset_ms)
}

fn chain() -> ChainPoint {
    ChainPoint {
        client: "anvil".into(),
        client_version: "1.7.1".into(),
        chain_id: 31337,
        block_height: 100,
        block_hash: "0xabc".into(),
    }
}

fn upload() -> UploadResult {
    UploadResult {
        snapshot: "0000001000000-aaaa".into(),
        files: 1,
        chunks: 2,
        chunks_new: 1,
        bytes_total: 1000,
        bytes_uploaded: 400,
        bytes_skipped: 600,
    }
}

fn task() -> UpdaterTask {
    UpdaterTask {
        node: NodeId::new("updater-1"),
        task: TaskId::new("task-1"),
        started_at: Some(at(0)),
    }
}

/// A round at `step`, begun at T0, with what earlier steps produced.
fn round_at(step: Step) -> Round {
    let past = |s: Step| {
        Step::ALL.iter().position(|x| *x == s) < Step::ALL.iter().position(|x| *x == step)
    };
    Round {
        id: "r-0000001000000".into(),
        started_at: at(0),
        step,
        step_started_at: at(0),
        node: (step != Step::EnsureNode).then(|| NodeId::new("updater-1")),
        task: (step != Step::EnsureNode).then(|| TaskId::new("task-1")),
        launched: false,
        chain: past(Step::Quiesce).then(chain),
        upload: past(Step::Upload).then(upload),
        abort: None,
        warnings: vec![],
        step_millis: vec![],
    }
}

fn memory(step: Step) -> UpdaterMemory {
    UpdaterMemory {
        round: Some(round_at(step)),
        last_started_at: Some(at(0)),
        ..UpdaterMemory::default()
    }
}

fn report(ack: Option<Ack>, healthy: bool, heartbeat: Timestamp) -> Report {
    Report {
        node: "updater-1".into(),
        agent: "agent-a".into(),
        agent_started_at_ms: T0,
        heartbeat_at_ms: heartbeat.as_millis(),
        phase: AgentPhase::Running,
        health: ReportedHealth {
            healthy,
            block: Some(100),
            head_age_secs: Some(2),
            reason: (!healthy).then(|| "syncing".to_owned()),
        },
        hydrated_from: None,
        ack,
    }
}

fn ack(action: CommandAction, state: AckState) -> Ack {
    Ack {
        command: format!("r-0000001000000/{}", action.as_str()),
        state,
        detail: (state == AckState::Failed).then(|| "it broke".to_owned()),
        retryable: false,
        started_at_ms: T0,
        finished_at_ms: None,
        chain: (action == CommandAction::Quiesce && state == AckState::Done).then(chain),
        upload: (action == CommandAction::Upload && state == AckState::Done).then(upload),
    }
}

fn seen(report: Option<Report>) -> Seen {
    Seen {
        updaters: vec![task()],
        report,
        latest: None,
    }
}

fn tick(memory: &UpdaterMemory, seen: Seen, now: Timestamp) -> (UpdaterMemory, Vec<Effect>) {
    let t = transition(
        memory,
        Input::Tick {
            seen: Box::new(seen),
            start: false,
        },
        &settings(),
        now,
    );
    (t.memory, t.effects)
}

fn step_of(memory: &UpdaterMemory) -> Option<Step> {
    memory.round.as_ref().map(|r| r.step)
}

fn issued(effects: &[Effect]) -> Vec<CommandAction> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Issue { command, .. } => Some(command.action),
            _ => None,
        })
        .collect()
}

fn aborted(memory: &UpdaterMemory) -> Option<AbortReason> {
    let in_round = memory
        .round
        .as_ref()
        .and_then(|r| r.abort.as_ref().map(|a| a.reason));
    let finished = memory.last.as_ref().and_then(|l| match &l.outcome {
        RoundOutcome::Aborted(a) => Some(a.reason),
        RoundOutcome::Published { .. } => None,
    });
    in_round.or(finished)
}

#[test]
fn idle_starts_a_round_when_due_or_asked_and_not_before() {
    let idle = UpdaterMemory {
        last_started_at: Some(at(0)),
        ..UpdaterMemory::default()
    };
    let none = Seen::default();
    // Not due, not asked: nothing.
    let (m, e) = tick(&idle, none.clone(), at(1000));
    assert_eq!((m, e.len()), (idle.clone(), 0));
    // Asked: a round starts and, with no updater running, launches one.
    let asked = transition(
        &idle,
        Input::Tick {
            seen: Box::new(none.clone()),
            start: true,
        },
        &settings(),
        at(1000),
    );
    assert_eq!(step_of(&asked.memory), Some(Step::EnsureNode));
    assert!(matches!(asked.effects.as_slice(), [Effect::Launch { .. }]));
    // Due: the same.
    let (m, e) = tick(&idle, none.clone(), at(3_600_000));
    assert_eq!(step_of(&m), Some(Step::EnsureNode));
    assert_eq!(m.last_started_at, Some(at(3_600_000)));
    assert_eq!(e.len(), 1);
    // Never run: due at once.
    let (m, _) = tick(&UpdaterMemory::default(), none, at(0));
    assert_eq!(step_of(&m), Some(Step::EnsureNode));
}

#[test]
fn ensure_node_adopts_a_running_updater_or_launches_once() {
    let m0 = memory(Step::EnsureNode);
    // A running updater is adopted.
    let (m, e) = tick(&m0, seen(None), at(10));
    assert_eq!(step_of(&m), Some(Step::WaitSynced));
    assert_eq!(
        m.round.as_ref().and_then(|r| r.task.clone()),
        Some(TaskId::new("task-1"))
    );
    assert!(e.is_empty());
    // None: one launch, and not a second on the next tick.
    let (m, e) = tick(&m0, Seen::default(), at(10));
    assert!(
        matches!(e.as_slice(), [Effect::Launch { idempotency_key, .. }] if idempotency_key == "snapshot-updater/r-0000001000000/launch")
    );
    let (m2, e2) = tick(&m, Seen::default(), at(20));
    assert!(e2.is_empty());
    assert_eq!(step_of(&m2), Some(Step::EnsureNode));
    // The launch's answer adopts its task.
    let t = transition(&m, Input::Launched(Ok(task())), &settings(), at(30));
    assert_eq!(step_of(&t.memory), Some(Step::WaitSynced));
    // A retryable failure launches again next tick; another failure aborts, no resume.
    let retry = transition(
        &m,
        Input::Launched(Err(Failure {
            detail: "throttled".into(),
            retryable: true,
        })),
        &settings(),
        at(30),
    );
    let (_, e) = tick(&retry.memory, Seen::default(), at(40));
    assert!(matches!(e.as_slice(), [Effect::Launch { .. }]));
    let failed = transition(
        &m,
        Input::Launched(Err(Failure {
            detail: "no capacity".into(),
            retryable: false,
        })),
        &settings(),
        at(30),
    );
    assert_eq!(failed.memory.round, None);
    assert_eq!(aborted(&failed.memory), Some(AbortReason::LaunchFailed));
    assert!(issued(&failed.effects).is_empty());
    assert_eq!(failed.memory.rounds_aborted, 1);
}

#[test]
fn wait_synced_needs_a_fresh_healthy_report_with_a_recent_head() {
    let m0 = memory(Step::WaitSynced);
    let now = at(5_000);
    for (case, report) in [
        ("no report", None),
        ("unhealthy", Some(report(None, false, now))),
        (
            "stale heartbeat",
            Some(report(None, true, at(5_000).minus(Duration::from_secs(31)))),
        ),
        (
            "old head",
            Some(Report {
                health: ReportedHealth {
                    healthy: true,
                    block: Some(1),
                    head_age_secs: Some(61),
                    reason: None,
                },
                ..report(None, true, now)
            }),
        ),
        (
            "another node's report",
            Some(Report {
                node: "updater-9".into(),
                ..report(None, true, now)
            }),
        ),
    ] {
        let (m, e) = tick(&m0, seen(report), now);
        assert_eq!(step_of(&m), Some(Step::WaitSynced), "{case}");
        assert!(e.is_empty(), "{case}");
    }
    let (m, e) = tick(&m0, seen(Some(report(None, true, now))), now);
    assert_eq!(step_of(&m), Some(Step::Quiesce));
    assert_eq!(issued(&e), [CommandAction::Quiesce]);
}

#[test]
fn agent_steps_reissue_until_acked_and_move_on_when_done() {
    for (step, action, next, next_effect) in [
        (
            Step::Quiesce,
            CommandAction::Quiesce,
            Step::Upload,
            "issue upload",
        ),
        (Step::Upload, CommandAction::Upload, Step::Verify, "verify"),
        (Step::Resume, CommandAction::Resume, Step::Prune, "prune"),
    ] {
        let m0 = memory(step);
        // Not acked yet: the same command again (same id, same content).
        let (m, e) = tick(&m0, seen(Some(report(None, true, at(1)))), at(1));
        assert_eq!(step_of(&m), Some(step));
        assert_eq!(issued(&e), [action]);
        let (_, again) = tick(&m0, seen(None), at(2));
        assert_eq!(e, again, "{step:?}: a re-issue writes the same command");
        // Running: wait.
        let running = seen(Some(report(
            Some(ack(action, AckState::Running)),
            true,
            at(3),
        )));
        let (m, e) = tick(&m0, running, at(3));
        assert_eq!((step_of(&m), e.len()), (Some(step), 0));
        // Done: next step.
        let done = seen(Some(report(Some(ack(action, AckState::Done)), true, at(4))));
        let (m, e) = tick(&m0, done, at(4));
        assert_eq!(step_of(&m), Some(next), "{step:?}");
        let effect_ok = match next_effect {
            "issue upload" => issued(&e) == [CommandAction::Upload],
            "verify" => matches!(e.as_slice(), [Effect::Verify { .. }]),
            _ => matches!(e.as_slice(), [Effect::Prune]),
        };
        assert!(effect_ok, "{step:?}: {e:?}");
    }
}

#[test]
fn an_ack_of_another_command_is_not_taken_for_this_one() {
    let m0 = memory(Step::Upload);
    let stale = seen(Some(report(
        Some(ack(CommandAction::Quiesce, AckState::Done)),
        true,
        at(1),
    )));
    let (m, e) = tick(&m0, stale, at(1));
    assert_eq!(step_of(&m), Some(Step::Upload));
    assert_eq!(issued(&e), [CommandAction::Upload]);
}

#[test]
fn failures_abort_and_resume_when_the_client_may_be_stopped() {
    for (step, action, reason) in [
        (
            Step::Quiesce,
            CommandAction::Quiesce,
            AbortReason::QuiesceFailed,
        ),
        (
            Step::Upload,
            CommandAction::Upload,
            AbortReason::UploadFailed,
        ),
    ] {
        let failed = seen(Some(report(
            Some(ack(action, AckState::Failed)),
            true,
            at(1),
        )));
        let (m, e) = tick(&memory(step), failed, at(1));
        assert_eq!(step_of(&m), Some(Step::Resume), "{step:?}");
        assert_eq!(aborted(&m), Some(reason));
        assert_eq!(issued(&e), [CommandAction::Resume]);
        // The resume's ack ends the round, aborted: no prune.
        let done = seen(Some(report(
            Some(ack(CommandAction::Resume, AckState::Done)),
            true,
            at(2),
        )));
        let (end, e) = tick(&m, done, at(2));
        assert_eq!(end.round, None);
        assert_eq!(aborted(&end), Some(reason));
        assert!(matches!(e.as_slice(), [Effect::Finished(_)]));
    }
    // Verify and publish failures that cannot be retried abort the same way.
    let v = transition(
        &memory(Step::Verify),
        Input::Verified(Err(Failure {
            detail: "chunk corrupt".into(),
            retryable: false,
        })),
        &settings(),
        at(1),
    );
    assert_eq!(
        (step_of(&v.memory), aborted(&v.memory)),
        (Some(Step::Resume), Some(AbortReason::VerifyFailed))
    );
    let p = transition(
        &memory(Step::Publish),
        Input::Published(Err(Failure {
            detail: "access denied".into(),
            retryable: false,
        })),
        &settings(),
        at(1),
    );
    assert_eq!(
        (step_of(&p.memory), aborted(&p.memory)),
        (Some(Step::Resume), Some(AbortReason::PublishFailed))
    );
    // Retryable ones wait for the next tick, which tries again.
    let v = transition(
        &memory(Step::Verify),
        Input::Verified(Err(Failure {
            detail: "slow down".into(),
            retryable: true,
        })),
        &settings(),
        at(1),
    );
    assert_eq!(v.memory, memory(Step::Verify));
    let (_, e) = tick(&v.memory, seen(None), at(2));
    assert!(matches!(e.as_slice(), [Effect::Verify { .. }]));
}

#[test]
fn verification_must_match_what_the_agent_reported() {
    let good = Verified {
        snapshot: SnapshotId::new(upload().snapshot),
        block_height: 100,
        block_hash: "0xabc".into(),
        chunks_checked: 2,
    };
    let t = transition(
        &memory(Step::Verify),
        Input::Verified(Ok(good.clone())),
        &settings(),
        at(1),
    );
    // Verified: on to publish, which the next tick does after looking at `latest` afresh.
    assert_eq!(step_of(&t.memory), Some(Step::Publish));
    assert!(t.effects.is_empty());
    for bad in [
        Verified {
            block_height: 99,
            ..good.clone()
        },
        Verified {
            block_hash: "0xdef".into(),
            ..good.clone()
        },
        Verified {
            snapshot: SnapshotId::new("other"),
            ..good.clone()
        },
    ] {
        let t = transition(
            &memory(Step::Verify),
            Input::Verified(Ok(bad)),
            &settings(),
            at(1),
        );
        assert_eq!(aborted(&t.memory), Some(AbortReason::VerifyFailed));
    }
}

#[test]
fn publish_only_a_newer_block_and_recognise_an_earlier_publish() {
    let m0 = memory(Step::Publish);
    let with_latest = |snapshot: &str, block: u64| Seen {
        latest: Some(Published {
            snapshot: SnapshotId::new(snapshot),
            block_height: block,
        }),
        ..seen(None)
    };
    // Older latest: publish.
    let (_, e) = tick(&m0, with_latest("old", 99), at(1));
    assert!(matches!(e.as_slice(), [Effect::Publish { .. }]));
    // Same block or newer: abort, nothing published.
    for block in [100, 101] {
        let (m, e) = tick(&m0, with_latest("other", block), at(1));
        assert_eq!(aborted(&m), Some(AbortReason::NotNewer), "block {block}");
        assert!(!e.iter().any(|e| matches!(e, Effect::Publish { .. })));
        assert_eq!(issued(&e), [CommandAction::Resume]);
    }
    // `latest` already names ours (a tick died after publishing): publish again, which
    // moves nothing and completes the catalog record.
    let (m, e) = tick(&m0, with_latest(&upload().snapshot, 100), at(1));
    assert_eq!(step_of(&m), Some(Step::Publish));
    assert_eq!(aborted(&m), None);
    assert!(matches!(e.as_slice(), [Effect::Publish { .. }]));
    // Published: resume.
    let t = transition(&m0, Input::Published(Ok(())), &settings(), at(1));
    assert_eq!(step_of(&t.memory), Some(Step::Resume));
}

#[test]
fn prune_ends_the_round_published_even_when_it_fails() {
    for result in [
        Ok(()),
        Err(Failure {
            detail: "denied".into(),
            retryable: false,
        }),
    ] {
        let failed = result.is_err();
        let t = transition(
            &memory(Step::Prune),
            Input::Pruned(result),
            &settings(),
            at(5),
        );
        assert_eq!(t.memory.round, None);
        assert_eq!(t.memory.rounds_published, 1);
        let last = t.memory.last.as_ref();
        assert!(matches!(
            last.map(|l| &l.outcome),
            Some(RoundOutcome::Published {
                block_height: 100,
                ..
            })
        ));
        assert_eq!(last.map(|l| l.warnings.len()), Some(usize::from(failed)));
    }
}

#[test]
fn every_step_times_out() {
    let late = at(0).plus(TIMEOUT).plus(Duration::from_millis(1));
    for step in Step::ALL {
        let (m, e) = tick(&memory(step), seen(None), late);
        match step {
            Step::EnsureNode | Step::WaitSynced => {
                assert_eq!(m.round, None, "{step:?}");
                assert_eq!(aborted(&m), Some(AbortReason::Timeout), "{step:?}");
                assert!(issued(&e).is_empty(), "{step:?}: nothing to resume");
            }
            Step::Quiesce | Step::Upload | Step::Verify | Step::Publish => {
                assert_eq!(step_of(&m), Some(Step::Resume), "{step:?}");
                assert_eq!(aborted(&m), Some(AbortReason::Timeout), "{step:?}");
                assert_eq!(issued(&e), [CommandAction::Resume], "{step:?}");
            }
            Step::Resume => {
                // Published already: a late resume is a warning, then prune.
                assert_eq!(step_of(&m), Some(Step::Prune));
                assert_eq!(aborted(&m), None);
                assert!(matches!(e.as_slice(), [Effect::Prune]));
            }
            Step::Prune => {
                assert_eq!(m.round, None);
                assert_eq!(m.rounds_published, 1);
            }
        }
        // One millisecond earlier is not a timeout.
        let (m, _) = tick(&memory(step), seen(None), at(0).plus(TIMEOUT));
        assert!(aborted(&m).is_none(), "{step:?}");
    }
    // An aborting round whose resume times out ends, aborted.
    let mut aborting = memory(Step::Resume);
    if let Some(round) = aborting.round.as_mut() {
        round.abort = Some(nodefleet_updater::round::Abort {
            reason: AbortReason::UploadFailed,
            step: Step::Upload,
            detail: "x".into(),
        });
    }
    let (m, _) = tick(&aborting, seen(None), late);
    assert_eq!(m.round, None);
    assert_eq!(aborted(&m), Some(AbortReason::UploadFailed));
}

#[test]
fn a_lost_updater_task_aborts_without_a_resume() {
    for step in [Step::Quiesce, Step::Upload, Step::Verify, Step::Publish] {
        let (m, e) = tick(&memory(step), Seen::default(), at(1));
        assert_eq!(m.round, None, "{step:?}");
        assert_eq!(aborted(&m), Some(AbortReason::NodeLost), "{step:?}");
        assert!(issued(&e).is_empty());
    }
    // A task just launched may be missing from the listing for a while.
    let (m, _) = tick(&memory(Step::WaitSynced), Seen::default(), at(1));
    assert_eq!(step_of(&m), Some(Step::WaitSynced));
    let patient = RoundSettings {
        timeouts: StepTimeouts::all(Duration::from_secs(600)),
        ..settings()
    };
    let later = transition(
        &memory(Step::WaitSynced),
        Input::Tick {
            seen: Box::default(),
            start: false,
        },
        &patient,
        at(121_000),
    );
    assert_eq!(aborted(&later.memory), Some(AbortReason::NodeLost));
    // Gone after publishing: the round still published.
    let (m, _) = tick(&memory(Step::Resume), Seen::default(), at(1));
    assert_eq!(step_of(&m), Some(Step::Prune));
}

#[test]
fn step_durations_are_recorded_in_order() {
    let m0 = memory(Step::Quiesce);
    let done = seen(Some(report(
        Some(ack(CommandAction::Quiesce, AckState::Done)),
        true,
        at(7_000),
    )));
    let (m, _) = tick(&m0, done, at(7_000));
    assert_eq!(
        m.round.map(|r| r.step_millis),
        Some(vec![(Step::Quiesce, 7_000)])
    );
}

#[test]
fn a_node_known_gone_ends_the_round_at_once_without_the_listing_grace() {
    let gone = |memory: &UpdaterMemory, now: Timestamp| {
        transition(
            memory,
            Input::NodeGone {
                detail: "the previous nodefleet up exited".into(),
            },
            &settings(),
            now,
        )
    };
    // Waiting for a node just launched: a tick that does not see it waits (the listing may
    // lag), the node known gone aborts the round now, with no resume.
    let waiting = memory(Step::WaitSynced);
    let (m, e) = tick(&waiting, Seen::default(), at(1_000));
    assert_eq!((step_of(&m), e.len()), (Some(Step::WaitSynced), 0));
    let t = gone(&waiting, at(1_000));
    assert_eq!(t.memory.round, None);
    assert_eq!(aborted(&t.memory), Some(AbortReason::NodeLost));
    assert!(issued(&t.effects).is_empty(), "nothing is left to resume");
    assert!(matches!(t.effects.as_slice(), [Effect::Finished(_)]));
    assert_eq!(t.memory.rounds_aborted, 1);
    // Mid-upload: lost too, no resume (the client went with its task).
    let t = gone(&memory(Step::Upload), at(1_000));
    assert_eq!(aborted(&t.memory), Some(AbortReason::NodeLost));
    assert!(issued(&t.effects).is_empty());
    // A launch asked for and never seen: whatever it started is gone as well.
    let launched = UpdaterMemory {
        round: Some(Round {
            launched: true,
            ..round_at(Step::EnsureNode)
        }),
        ..memory(Step::EnsureNode)
    };
    assert_eq!(
        aborted(&gone(&launched, at(1_000)).memory),
        Some(AbortReason::NodeLost)
    );
    // A round that has not asked for its node yet just goes on (it launches next tick).
    let fresh = memory(Step::EnsureNode);
    assert_eq!(gone(&fresh, at(1_000)).memory, fresh);
    // Published and resuming: the snapshot stays published, the round goes on to prune.
    let resuming = memory(Step::Resume);
    let t = gone(&resuming, at(1_000));
    assert_eq!(step_of(&t.memory), Some(Step::Prune));
    assert!(matches!(t.effects.as_slice(), [Effect::Prune]));
    // Pruning needs no node; and with no round nothing changes.
    let pruning = memory(Step::Prune);
    assert_eq!(gone(&pruning, at(1_000)).memory, pruning);
    let idle = UpdaterMemory::default();
    assert_eq!(gone(&idle, at(1_000)).memory, idle);
}
