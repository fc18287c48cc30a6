//! The round's state machine, pure: `(memory, input, settings, now) -> (memory, effects)`.
//!
//! [`transition`] is the only place a round changes. The service ([`crate::service`]) feeds
//! it a [`Input::Tick`] with what it observed, performs the [`Effect`]s that come back, and
//! feeds each effect's result back as another [`Input`]; the memory is saved (versioned,
//! under the lease) after every transition and **before** its effects run, so a Lambda that
//! dies mid-step leaves a memory the next tick resumes from. Every effect is safe to repeat:
//! a launch carries an idempotency key, a command has the same id every time it is written,
//! verification only reads, a publish first looks whether `latest` already names the
//! snapshot, and prune is idempotent.
//!
//! # Rules
//!
//! - **Starting.** Idle, a round starts on a `start-round` request or when
//!   [`RoundSettings::interval`] has passed since the last round started.
//! - **Timeouts.** Every step has one ([`StepTimeouts`]), counted from when the step began.
//!   A step past it aborts the round.
//! - **Aborting** records the reason and the step. If the client may have been quiesced
//!   (the quiesce command was issued), the round first goes to `resume` (with its own
//!   timeout) and then ends; otherwise it ends at once. `latest` is never touched by an
//!   abort, so the previous snapshot stays published (invariant 4).
//! - **The node.** From `wait_synced` on, the round works with one task; if that task is
//!   no longer live the round aborts (`node_lost`) without a resume (there is nothing to
//!   resume). A task the round just launched may be missing from a lagging listing for
//!   [`NEW_TASK_LISTING_GRACE`]; an [`Input::NodeGone`] says the task is gone for sure (the
//!   process that ran it has ended: a local fleet that restarts), and the round treats it
//!   as lost at once, whatever the step (a launch asked for and never seen included).
//! - **Publishing** needs a verified snapshot whose block is newer than the one `latest`
//!   names; otherwise the round aborts (`not_newer`) and nothing is published.
//! - **After publishing**, a resume that fails or times out, and a prune that fails, do not
//!   undo the round: the snapshot is published; the round ends `published` with a warning.

use std::time::Duration;

use nodefleet_ports::{NodeId, SnapshotId, TaskId, Timestamp};
use nodefleet_snapshot::channel::{AckState, Command, CommandAction, Report, UploadResult};
use nodefleet_snapshot::format::ChainPoint;
use serde::{Deserialize, Serialize};

/// How long a task the round just launched may be missing from the scheduler's listing
/// before it counts as lost: ECS's `ListTasks` is eventually consistent and can miss a task
/// for a few seconds after `RunTask` answered; two minutes is far past that, and short next
/// to the sync wait it guards.
pub const NEW_TASK_LISTING_GRACE: Duration = Duration::from_secs(120);

/// The steps of a round, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Find the running updater task, or launch one.
    EnsureNode,
    /// Wait until the updater's agent reports it healthy with a recent head.
    WaitSynced,
    /// The agent stops the client cleanly and reports the chain point.
    Quiesce,
    /// The agent snapshots the stopped data dir into the store (never publishing).
    Upload,
    /// The updater checks the manifest and the chunks.
    Verify,
    /// The updater moves `latest` to the snapshot and records it in the catalog.
    Publish,
    /// The agent starts the client again.
    Resume,
    /// Retention deletes old snapshots.
    Prune,
}

impl Step {
    pub const ALL: [Step; 8] = [
        Step::EnsureNode,
        Step::WaitSynced,
        Step::Quiesce,
        Step::Upload,
        Step::Verify,
        Step::Publish,
        Step::Resume,
        Step::Prune,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::EnsureNode => "ensure_node",
            Step::WaitSynced => "wait_synced",
            Step::Quiesce => "quiesce",
            Step::Upload => "upload",
            Step::Verify => "verify",
            Step::Publish => "publish",
            Step::Resume => "resume",
            Step::Prune => "prune",
        }
    }

    /// True if the client may be stopped by this round at this step (a resume is owed).
    fn owes_resume(self) -> bool {
        matches!(
            self,
            Step::Quiesce | Step::Upload | Step::Verify | Step::Publish | Step::Resume
        )
    }
}

/// Why a round was aborted: the `Reason` dimension of the `AbortedRounds` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AbortReason {
    /// A step ran past its timeout.
    Timeout,
    /// The updater task stopped during the round.
    NodeLost,
    /// No updater task could be started.
    LaunchFailed,
    /// The agent could not quiesce the client (unhealthy, unclean stop, restarted).
    QuiesceFailed,
    /// The agent's upload failed.
    UploadFailed,
    /// The uploaded snapshot failed verification.
    VerifyFailed,
    /// The snapshot's block is not newer than the published one.
    NotNewer,
    /// `latest` could not be moved.
    PublishFailed,
}

impl AbortReason {
    pub fn as_str(self) -> &'static str {
        match self {
            AbortReason::Timeout => "timeout",
            AbortReason::NodeLost => "node_lost",
            AbortReason::LaunchFailed => "launch_failed",
            AbortReason::QuiesceFailed => "quiesce_failed",
            AbortReason::UploadFailed => "upload_failed",
            AbortReason::VerifyFailed => "verify_failed",
            AbortReason::NotNewer => "not_newer",
            AbortReason::PublishFailed => "publish_failed",
        }
    }
}

/// An abort in progress or done: why, in which step, in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Abort {
    pub reason: AbortReason,
    pub step: Step,
    pub detail: String,
}

/// A round in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Round {
    /// `r-<13-digit Unix millis>`: sorts by start time.
    pub id: String,
    pub started_at: Timestamp,
    pub step: Step,
    pub step_started_at: Timestamp,
    /// The updater node and task the round works with, once known.
    pub node: Option<NodeId>,
    pub task: Option<TaskId>,
    /// A launch was asked for in this round.
    pub launched: bool,
    /// The chain point the client stopped at (quiesce's answer).
    pub chain: Option<ChainPoint>,
    /// What the upload made.
    pub upload: Option<UploadResult>,
    /// Set once the round is being wound down.
    pub abort: Option<Abort>,
    /// Warnings of a round that published (a resume or prune that failed).
    pub warnings: Vec<String>,
    /// How long each finished step took, in order.
    pub step_millis: Vec<(Step, u64)>,
}

impl Round {
    /// The id of this round's command `action`.
    pub fn command(&self, action: CommandAction, ttl: Duration) -> Command {
        Command::new(
            &self.id,
            action,
            self.step_started_at.as_millis(),
            millis(ttl),
        )
    }
}

/// How a finished round ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RoundOutcome {
    Published {
        snapshot: SnapshotId,
        block_height: u64,
        bytes_total: u64,
        bytes_uploaded: u64,
        bytes_skipped: u64,
    },
    Aborted(Abort),
}

/// A finished round, kept in the memory (the last one) and reported in metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundSummary {
    pub id: String,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    pub outcome: RoundOutcome,
    pub warnings: Vec<String>,
    pub step_millis: Vec<(Step, u64)>,
}

/// What the updater carries between invocations (the `snapshot-updater` control state).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UpdaterMemory {
    pub round: Option<Round>,
    pub last_started_at: Option<Timestamp>,
    pub last: Option<RoundSummary>,
    pub rounds_published: u64,
    pub rounds_aborted: u64,
}

/// Each step's timeout. Defaults in [`StepTimeouts::default`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepTimeouts {
    pub ensure_node: Duration,
    pub wait_synced: Duration,
    pub quiesce: Duration,
    pub upload: Duration,
    pub verify: Duration,
    pub publish: Duration,
    pub resume: Duration,
    pub prune: Duration,
}

impl Default for StepTimeouts {
    /// For a mainnet node on an i3-class instance:
    /// - `ensure_node` 15 min: ECS places a task in seconds to minutes; pulling a client image
    ///   onto a new instance takes a few more;
    /// - `wait_synced` 2 h: a fresh updater hydrates 1.2 TB in about 25 min (DESIGN) and then
    ///   catches up at most a round's interval (4 h) of blocks, which clients do in well under
    ///   an hour;
    /// - `quiesce` 10 min: a client gets its stop timeout (at most 300 s in the profiles);
    /// - `upload` 3 h: a first full upload of 1.2 TB at ~200 MB/s is 100 min; incremental
    ///   ones are minutes;
    /// - `verify` 30 min, `publish` 10 min, `prune` 30 min: a few invocations' worth each,
    ///   with room for a store that throttles for a while;
    /// - `resume` 10 min: a start, plus the agent's poll interval.
    fn default() -> Self {
        StepTimeouts {
            ensure_node: Duration::from_secs(15 * 60),
            wait_synced: Duration::from_secs(2 * 60 * 60),
            quiesce: Duration::from_secs(10 * 60),
            upload: Duration::from_secs(3 * 60 * 60),
            verify: Duration::from_secs(30 * 60),
            publish: Duration::from_secs(10 * 60),
            resume: Duration::from_secs(10 * 60),
            prune: Duration::from_secs(30 * 60),
        }
    }
}

impl StepTimeouts {
    pub fn of(&self, step: Step) -> Duration {
        match step {
            Step::EnsureNode => self.ensure_node,
            Step::WaitSynced => self.wait_synced,
            Step::Quiesce => self.quiesce,
            Step::Upload => self.upload,
            Step::Verify => self.verify,
            Step::Publish => self.publish,
            Step::Resume => self.resume,
            Step::Prune => self.prune,
        }
    }

    /// All steps `timeout` (tests, and a local fleet that wants quick aborts).
    pub fn all(timeout: Duration) -> StepTimeouts {
        StepTimeouts {
            ensure_node: timeout,
            wait_synced: timeout,
            quiesce: timeout,
            upload: timeout,
            verify: timeout,
            publish: timeout,
            resume: timeout,
            prune: timeout,
        }
    }
}

/// The knobs of the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundSettings {
    /// A round starts this long after the previous one started (EventBridge's schedule).
    pub interval: Duration,
    pub timeouts: StepTimeouts,
    /// The updater is synced when its head is at most this old.
    pub max_head_age: Duration,
    /// A report whose heartbeat is older than this is not believed.
    pub heartbeat_stale: Duration,
}

/// The published snapshot, as the service found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub snapshot: SnapshotId,
    pub block_height: u64,
}

/// A live updater task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdaterTask {
    pub node: NodeId,
    pub task: TaskId,
    pub started_at: Option<Timestamp>,
}

/// What the service observed for this tick.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Seen {
    /// Live updater tasks.
    pub updaters: Vec<UpdaterTask>,
    /// The agent report of the round's node (or of the only updater, before one is chosen).
    pub report: Option<Report>,
    /// What `latest` names now.
    pub latest: Option<Published>,
}

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub snapshot: SnapshotId,
    pub block_height: u64,
    pub block_hash: String,
    pub chunks_checked: u64,
}

/// A failed effect: in words, and whether trying again may help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub detail: String,
    pub retryable: bool,
}

/// What happens to the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A schedule tick (or a start request, with `start`), with what the service observed.
    Tick {
        seen: Box<Seen>,
        start: bool,
    },
    Launched(Result<UpdaterTask, Failure>),
    Issued(Result<(), Failure>),
    Verified(Result<Verified, Failure>),
    Published(Result<(), Failure>),
    Pruned(Result<(), Failure>),
    /// The round's updater task is known to be gone, not merely unlisted: whoever ran it
    /// has ended (see the module doc). `detail` says how it is known.
    NodeGone {
        detail: String,
    },
}

/// What the service is to do after saving the memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Start an updater task for `node` under `idempotency_key`, hydrated from `latest`.
    Launch {
        node: NodeId,
        idempotency_key: String,
    },
    /// Write the command to the node's channel.
    Issue {
        node: NodeId,
        command: Command,
    },
    /// Verify the uploaded snapshot (manifest, every pack, sampled chunk hashes).
    Verify {
        upload: UploadResult,
        chain: ChainPoint,
    },
    /// Move `latest` to the snapshot and record it in the catalog as published.
    Publish {
        upload: UploadResult,
        chain: ChainPoint,
    },
    Prune,
    /// A round ended (for metrics and the audit trail).
    Finished(RoundSummary),
}

/// A transition: the memory to save, then the effects to perform in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub memory: UpdaterMemory,
    pub effects: Vec<Effect>,
}

/// The node id of the updater a round launches.
pub fn updater_node_id(round: &str) -> NodeId {
    NodeId::new(format!("updater-{}", round.trim_start_matches("r-")))
}

/// The idempotency key of a round's launch.
pub fn launch_key(round: &str) -> String {
    format!("snapshot-updater/{round}/launch")
}

/// The next state and effects; see the module doc for the rules.
pub fn transition(
    memory: &UpdaterMemory,
    input: Input,
    settings: &RoundSettings,
    now: Timestamp,
) -> Transition {
    let mut next = memory.clone();
    let mut effects = Vec::new();
    match next.round.take() {
        None => {
            if let Input::Tick { seen, start } = input {
                let seen = *seen;
                let due = memory
                    .last_started_at
                    .is_none_or(|last| now.since(last) >= settings.interval);
                if start || due {
                    let round = Round {
                        id: format!("r-{:013}", now.as_millis()),
                        started_at: now,
                        step: Step::EnsureNode,
                        step_started_at: now,
                        node: None,
                        task: None,
                        launched: false,
                        chain: None,
                        upload: None,
                        abort: None,
                        warnings: Vec::new(),
                        step_millis: Vec::new(),
                    };
                    next.last_started_at = Some(now);
                    // The new round acts on the same observation at once.
                    let mut machine = Machine::new(round, settings, now);
                    machine.tick(&seen);
                    machine.finish_into(&mut next, &mut effects);
                }
            }
        }
        Some(round) => {
            let mut machine = Machine::new(round, settings, now);
            match input {
                Input::Tick { seen, .. } => machine.tick(&seen),
                Input::NodeGone { detail } => machine.node_gone(detail),
                other => machine.result(other),
            }
            machine.finish_into(&mut next, &mut effects);
        }
    }
    Transition {
        memory: next,
        effects,
    }
}

/// One round being moved; `done` once it has ended.
struct Machine<'a> {
    round: Round,
    settings: &'a RoundSettings,
    now: Timestamp,
    effects: Vec<Effect>,
    done: Option<RoundSummary>,
}

impl<'a> Machine<'a> {
    fn new(round: Round, settings: &'a RoundSettings, now: Timestamp) -> Machine<'a> {
        Machine {
            round,
            settings,
            now,
            effects: Vec::new(),
            done: None,
        }
    }

    fn finish_into(self, memory: &mut UpdaterMemory, effects: &mut Vec<Effect>) {
        effects.extend(self.effects);
        match self.done {
            Some(summary) => {
                match summary.outcome {
                    RoundOutcome::Published { .. } => memory.rounds_published += 1,
                    RoundOutcome::Aborted(_) => memory.rounds_aborted += 1,
                }
                effects.push(Effect::Finished(summary.clone()));
                memory.last = Some(summary);
                memory.round = None;
            }
            None => memory.round = Some(self.round),
        }
    }

    fn timeout(&self) -> Duration {
        self.settings.timeouts.of(self.round.step)
    }

    fn command(&self, action: CommandAction) -> Command {
        self.round.command(action, self.timeout())
    }

    /// Moves to `step`, timing the step that ends.
    fn enter(&mut self, step: Step) {
        let took = millis(self.now.since(self.round.step_started_at));
        self.round.step_millis.push((self.round.step, took));
        self.round.step = step;
        self.round.step_started_at = self.now;
    }

    fn issue(&mut self, action: CommandAction) {
        if let Some(node) = self.round.node.clone() {
            let command = self.command(action);
            self.effects.push(Effect::Issue { node, command });
        }
    }

    fn abort(&mut self, reason: AbortReason, detail: impl Into<String>) {
        let abort = Abort {
            reason,
            step: self.round.step,
            detail: detail.into(),
        };
        tracing::warn!(round = %self.round.id, step = abort.step.as_str(), reason = reason.as_str(), detail = %abort.detail, "aborting the round");
        let owes_resume = self.round.step.owes_resume()
            && self.round.step != Step::Resume
            && reason != AbortReason::NodeLost;
        self.round.abort = Some(abort);
        if owes_resume {
            self.enter(Step::Resume);
            self.issue(CommandAction::Resume);
        } else {
            self.end();
        }
    }

    fn end(&mut self) {
        let took = millis(self.now.since(self.round.step_started_at));
        self.round.step_millis.push((self.round.step, took));
        let outcome = match (&self.round.abort, &self.round.upload, &self.round.chain) {
            (Some(abort), _, _) => RoundOutcome::Aborted(abort.clone()),
            (None, Some(upload), Some(chain)) => RoundOutcome::Published {
                snapshot: SnapshotId::new(upload.snapshot.clone()),
                block_height: chain.block_height,
                bytes_total: upload.bytes_total,
                bytes_uploaded: upload.bytes_uploaded,
                bytes_skipped: upload.bytes_skipped,
            },
            (None, _, _) => RoundOutcome::Aborted(Abort {
                reason: AbortReason::PublishFailed,
                step: self.round.step,
                detail: "the round ended without an upload (a bug)".to_owned(),
            }),
        };
        self.done = Some(RoundSummary {
            id: self.round.id.clone(),
            started_at: self.round.started_at,
            finished_at: self.now,
            outcome,
            warnings: self.round.warnings.clone(),
            step_millis: self.round.step_millis.clone(),
        });
    }

    fn live_task(&self, seen: &Seen) -> bool {
        self.round
            .task
            .as_ref()
            .is_some_and(|task| seen.updaters.iter().any(|u| &u.task == task))
    }

    /// The ack of this round's `action` command in the report, if the agent gave one.
    fn ack<'s>(
        &self,
        seen: &'s Seen,
        action: CommandAction,
    ) -> Option<&'s nodefleet_snapshot::channel::Ack> {
        let id = self.command(action).id;
        seen.report
            .as_ref()
            .filter(|r| {
                self.round
                    .node
                    .as_ref()
                    .is_some_and(|n| n.as_str() == r.node)
            })
            .and_then(|r| r.ack_of(&id))
    }

    fn tick(&mut self, seen: &Seen) {
        let step = self.round.step;
        if self.now.since(self.round.step_started_at) > self.timeout() {
            let detail = format!(
                "{} did not finish within {} s",
                step.as_str(),
                self.timeout().as_secs()
            );
            match (step, &self.round.abort) {
                // A published round whose resume timed out still published.
                (Step::Resume, None) => {
                    self.round.warnings.push(detail);
                    self.enter(Step::Prune);
                    self.effects.push(Effect::Prune);
                }
                (Step::Resume, Some(_)) | (Step::Prune, _) => {
                    self.round.warnings.push(detail);
                    self.end();
                }
                _ => self.abort(AbortReason::Timeout, detail),
            }
            return;
        }
        let may_not_be_listed_yet = step == Step::WaitSynced
            && self.now.since(self.round.step_started_at) < NEW_TASK_LISTING_GRACE;
        if step != Step::EnsureNode
            && !may_not_be_listed_yet
            && !self.live_task(seen)
            && self.lost(format!(
                "updater task {} is no longer running",
                self.round.task.as_ref().map_or("(none)", |t| t.as_str())
            ))
        {
            return;
        }
        match step {
            Step::EnsureNode => self.ensure_node(seen),
            Step::WaitSynced => self.wait_synced(seen),
            Step::Quiesce => self.await_ack(seen, CommandAction::Quiesce),
            Step::Upload => self.await_ack(seen, CommandAction::Upload),
            Step::Verify => self.verify(),
            Step::Publish => self.publish(seen),
            Step::Resume => self.await_ack(seen, CommandAction::Resume),
            Step::Prune => self.effects.push(Effect::Prune),
        }
    }

    /// The round's task is gone (`detail` says how that is known): a resume owed to it is
    /// not waited for, and a step that needs it aborts the round (`node_lost`). True if the
    /// round moved; false in prune, which needs no node.
    fn lost(&mut self, detail: String) -> bool {
        match (self.round.step, &self.round.abort) {
            (Step::Prune, _) => false,
            (Step::Resume, Some(_)) => {
                self.round
                    .warnings
                    .push("the updater task stopped before it resumed".to_owned());
                self.end();
                true
            }
            (Step::Resume, None) => {
                self.round
                    .warnings
                    .push("the updater task stopped before it resumed".to_owned());
                self.enter(Step::Prune);
                self.effects.push(Effect::Prune);
                true
            }
            _ => {
                self.abort(AbortReason::NodeLost, detail);
                true
            }
        }
    }

    /// [`Input::NodeGone`]: the task is lost now, without the listing grace. A round still
    /// looking for its node is lost only if it asked for a launch (whatever that started
    /// is gone with the rest); one that has not asked yet launches on its next tick.
    fn node_gone(&mut self, detail: String) {
        if self.round.step == Step::EnsureNode && !self.round.launched {
            return;
        }
        self.lost(detail);
    }

    fn ensure_node(&mut self, seen: &Seen) {
        // The newest live updater: normally the one the last round left running.
        let newest = seen
            .updaters
            .iter()
            .max_by_key(|u| (u.started_at, u.task.as_str().to_owned()));
        if let Some(updater) = newest {
            self.adopt(updater.clone());
        } else if !self.round.launched {
            self.round.launched = true;
            self.effects.push(Effect::Launch {
                node: updater_node_id(&self.round.id),
                idempotency_key: launch_key(&self.round.id),
            });
        }
    }

    fn adopt(&mut self, updater: UpdaterTask) {
        self.round.node = Some(updater.node);
        self.round.task = Some(updater.task);
        self.enter(Step::WaitSynced);
    }

    fn wait_synced(&mut self, seen: &Seen) {
        let Some(report) = seen.report.as_ref().filter(|r| {
            self.round
                .node
                .as_ref()
                .is_some_and(|n| n.as_str() == r.node)
        }) else {
            return;
        };
        let fresh = self
            .now
            .since(Timestamp::from_millis(report.heartbeat_at_ms))
            <= self.settings.heartbeat_stale;
        let recent_head = report
            .health
            .head_age_secs
            .is_some_and(|age| Duration::from_secs(age) <= self.settings.max_head_age);
        if fresh && report.health.healthy && recent_head {
            self.enter(Step::Quiesce);
            self.issue(CommandAction::Quiesce);
        }
    }

    /// The steps whose work the agent does: done, failed, or (re)issue the command.
    fn await_ack(&mut self, seen: &Seen, action: CommandAction) {
        let Some(ack) = self.ack(seen, action).cloned() else {
            // Not seen yet (or the write was lost): write it again, same id.
            self.issue(action);
            return;
        };
        match (ack.state, action) {
            (AckState::Running, _) => {}
            (AckState::Done, CommandAction::Quiesce) => match ack.chain {
                Some(chain) => {
                    self.round.chain = Some(chain);
                    self.enter(Step::Upload);
                    self.issue(CommandAction::Upload);
                }
                None => self.abort(
                    AbortReason::QuiesceFailed,
                    "the agent's quiesce answer has no chain point",
                ),
            },
            (AckState::Done, CommandAction::Upload) => {
                match (ack.upload, self.round.chain.clone()) {
                    (Some(upload), Some(chain)) => {
                        self.round.upload = Some(upload.clone());
                        self.enter(Step::Verify);
                        self.effects.push(Effect::Verify { upload, chain });
                    }
                    _ => self.abort(
                        AbortReason::UploadFailed,
                        "the agent's upload answer names no snapshot",
                    ),
                }
            }
            (AckState::Done, CommandAction::Resume) => self.resumed(None),
            (AckState::Failed, CommandAction::Resume) => self.resumed(Some(format!(
                "the client did not resume: {}",
                ack.detail.unwrap_or_default()
            ))),
            (AckState::Failed, CommandAction::Quiesce) => self.abort(
                AbortReason::QuiesceFailed,
                ack.detail.unwrap_or_else(|| "quiesce failed".to_owned()),
            ),
            (AckState::Failed, CommandAction::Upload) => self.abort(
                AbortReason::UploadFailed,
                ack.detail.unwrap_or_else(|| "upload failed".to_owned()),
            ),
        }
    }

    fn resumed(&mut self, warning: Option<String>) {
        self.round.warnings.extend(warning);
        if self.round.abort.is_some() {
            self.end();
        } else {
            self.enter(Step::Prune);
            self.effects.push(Effect::Prune);
        }
    }

    fn verify(&mut self) {
        if let (Some(upload), Some(chain)) = (self.round.upload.clone(), self.round.chain.clone()) {
            self.effects.push(Effect::Verify { upload, chain });
        }
    }

    fn publish(&mut self, seen: &Seen) {
        let (Some(upload), Some(chain)) = (self.round.upload.clone(), self.round.chain.clone())
        else {
            return;
        };
        match &seen.latest {
            // Published by an earlier invocation that died before it saved: publishing again
            // moves nothing and completes the catalog record.
            Some(latest) if latest.snapshot.as_str() == upload.snapshot => {
                self.effects.push(Effect::Publish { upload, chain });
            }
            Some(latest) if latest.block_height >= chain.block_height => self.abort(
                AbortReason::NotNewer,
                format!(
                    "block {} is not newer than the published snapshot {}'s block {}",
                    chain.block_height, latest.snapshot, latest.block_height
                ),
            ),
            _ => self.effects.push(Effect::Publish { upload, chain }),
        }
    }

    fn result(&mut self, input: Input) {
        match (self.round.step, input) {
            (Step::EnsureNode, Input::Launched(Ok(updater))) => self.adopt(updater),
            // A throttled or unreachable scheduler: the next tick launches again (same key).
            (Step::EnsureNode, Input::Launched(Err(failure))) if failure.retryable => {
                self.round.launched = false;
            }
            (Step::EnsureNode, Input::Launched(Err(failure))) => {
                self.abort(AbortReason::LaunchFailed, failure.detail);
            }
            (Step::Verify, Input::Verified(Ok(verified))) => {
                let chain = self
                    .round
                    .chain
                    .as_ref()
                    .map(|c| (c.block_height, c.block_hash.as_str()));
                let ours = self.round.upload.as_ref().map(|u| u.snapshot.as_str());
                if Some(verified.snapshot.as_str()) != ours
                    || Some((verified.block_height, verified.block_hash.as_str())) != chain
                {
                    self.abort(
                        AbortReason::VerifyFailed,
                        format!(
                            "the manifest says snapshot {} at block {} ({}), the agent said {:?} at {:?}",
                            verified.snapshot,
                            verified.block_height,
                            verified.block_hash,
                            ours,
                            chain
                        ),
                    );
                } else {
                    // The next tick publishes, after looking at `latest` afresh.
                    self.enter(Step::Publish);
                }
            }
            (Step::Verify, Input::Verified(Err(failure))) if !failure.retryable => {
                self.abort(AbortReason::VerifyFailed, failure.detail);
            }
            (Step::Publish, Input::Published(Ok(()))) => {
                self.enter(Step::Resume);
                self.issue(CommandAction::Resume);
            }
            (Step::Publish, Input::Published(Err(failure))) if !failure.retryable => {
                self.abort(AbortReason::PublishFailed, failure.detail);
            }
            (Step::Prune, Input::Pruned(result)) => {
                if let Err(failure) = result {
                    self.round
                        .warnings
                        .push(format!("prune failed: {}", failure.detail));
                }
                self.end();
            }
            // Retryable failures, lost writes and answers for another step: the next
            // tick decides again from what it observes.
            _ => {}
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
