//! The agent's side of the updater channel ([`nodefleet_snapshot::channel`]; its module doc
//! is the protocol): how an updater node (`Role::Updater`) takes the snapshot updater's
//! commands (quiesce, upload, resume) from the chain-data store and answers in its report.
//!
//! # The loop
//!
//! [`ChannelLoop::spawn`] starts it beside the lifecycle, right after the health server, so
//! it reports while the data dir is hydrated too. It first reads the report it finds (left
//! by a previous agent process, or none) and writes nothing before it could: that report is
//! what tells this process which commands were answered already. Then:
//!
//! - every `poll` ([`DEFAULT_CHANNEL_POLL`]) it reads `control/updater/<node>/command` and
//!   considers it, unless there is no client to command (hydrating, stopping: the command
//!   waits for the next process or the end of hydration);
//! - it writes its [`Report`] at least every `heartbeat` ([`DEFAULT_HEARTBEAT`]), and at
//!   once when the ack or the phase changes. The report carries this process's id (new on
//!   every start), the node's health as `/health` judges it
//!   ([`HealthEndpoint::health_in`]), the snapshot the data dir was hydrated from, and the
//!   ack of the newest command it saw;
//! - when the agent stops it abandons an upload in flight (acked failed), waits for a
//!   quiesce or resume in flight (they are bounded by the client's stop timeout), and writes
//!   a last report (phase `stopping`).
//!
//! # Commands
//!
//! A command id runs at most once per process: its ack is kept, and a command seen again (a
//! duplicate delivery, or an older one written back) just puts that ack in the report. A
//! command seen for the first time is decided from the found report: one it answered
//! `done` or `failed` keeps that answer; an expired quiesce or upload is acked failed
//! without running (a resume runs however late);
//! one the found report has `running` (its process died mid-command) is acked failed "the
//! agent restarted while running it", except a resume, which is idempotent and just runs.
//! Everything else runs in a task of its own, so heartbeats go on during a long upload,
//! after its `running` ack was written (a command whose `running` ack cannot be written is
//! not started; the next poll tries again).
//!
//! A quiesced client whose round's command expired (or vanished) with nothing running is
//! resumed by the agent on its own: the updater gave up without a resume, and a node must
//! not stay stopped for good.
//!
//! A newer command replaces an upload in flight: the upload's task is dropped (an upload
//! never publishes, so nothing it made becomes visible) and acked failed, and the newer
//! command runs. A quiesce or resume in flight is short and must not be cut in the middle
//! of a stop or a start: the newer command waits for it.
//!
//! | command | does | done with |
//! |---|---|---|
//! | quiesce | [`Node::quiesce`]: healthy, chain point, clean stop (else started again, failed); remembered as quiesced for its round | `chain` |
//! | upload | only when quiesced for its round by this process: [`Node::upload`] with `publish = false`; the client stays stopped whatever happens | `upload` |
//! | resume | [`Node::resume`]: starts the client after the restore-marker check (invariant 3), or finds it running; forgets the quiesce | |
//!
//! A quiesce for the round the agent is quiesced for is done at once with the same chain
//! point; one for another round fails (resume first). The phase in the report follows the
//! node's ([`Phase`]): hydrating, running, quiesced (stopped by a quiesce, uploading or
//! not), stopping.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use nodefleet_ports::ObjectStore;
use nodefleet_ports::model::unique_suffix;
use nodefleet_snapshot::channel::{
    self, Ack, AckState, AgentPhase, Command, CommandAction, Report, ReportedHealth, UploadResult,
};
use nodefleet_snapshot::create::CreateSummary;
use nodefleet_snapshot::format::ChainPoint;
use tokio::task::{JoinError, JoinHandle};
use tokio::time::{Instant, MissedTickBehavior};

use crate::health::Health;
use crate::node::{Node, Phase, Resumed, SnapshotFailure, now_ms};
use crate::server::HealthEndpoint;
use crate::shutdown::{Shutdown, ShutdownTrigger};

/// How often the command is read. A round's steps take minutes (a clean stop, an upload), so
/// a few seconds of latency per step cost nothing, while a GET every 5 s is 17,280 a day
/// (under a US cent at S3's GET price).
pub const DEFAULT_CHANNEL_POLL: Duration = Duration::from_secs(5);
/// The longest the report goes unwritten. Three polls: 5,760 PUTs a day (about 3 US cents
/// at S3's PUT price), and an agent that died shows a stale heartbeat within seconds of the
/// updater's own patience, whatever multiple of this it allows.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// The shortest poll or heartbeat the loop takes: zero would spin.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// What the channel loop needs besides the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSettings {
    /// The node id: the channel lives under `control/updater/<node>/`.
    pub node: String,
    /// How often the command is read.
    pub poll: Duration,
    /// The longest the report goes unwritten.
    pub heartbeat: Duration,
}

/// Why a command was acked failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("not quiesced for round {0}")]
    NotQuiesced(String),
    #[error("quiesced for round {0}; resume first")]
    QuiescedForOther(String),
    #[error("the agent restarted while running it")]
    Restarted,
    #[error("expired before the agent started it")]
    Expired,
    #[error("abandoned for the newer command {0}")]
    Replaced(String),
    #[error("abandoned: the agent is stopping")]
    Stopping,
    #[error(transparent)]
    Node(#[from] SnapshotFailure),
    #[error("the command's task ended without an answer: {0}")]
    Task(String),
}

impl CommandError {
    /// Whether the same command may succeed if the updater sends it again (in a new round).
    pub fn is_retryable(&self) -> bool {
        match self {
            CommandError::Node(failure) => failure.is_retryable(),
            _ => false,
        }
    }
}

/// What a command that ran did.
#[derive(Debug)]
enum Success {
    Quiesced(ChainPoint),
    Uploaded(CreateSummary),
    Resumed(Resumed),
}

/// The node was stopped by this process's quiesce for `round`, at `chain`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Quiesced {
    round: String,
    chain: ChainPoint,
}

/// A command running in its task.
#[derive(Debug)]
struct Running {
    command: Command,
    task: JoinHandle<Result<Success, CommandError>>,
}

/// The channel loop running beside the lifecycle. See the module doc.
#[derive(Debug)]
pub struct ChannelLoop {
    trigger: ShutdownTrigger,
    task: JoinHandle<()>,
}

impl ChannelLoop {
    /// Starts the loop for `node`, reading and writing its channel in `store`.
    pub fn spawn(
        node: Arc<Node>,
        store: Arc<dyn ObjectStore>,
        health: Arc<HealthEndpoint>,
        mut settings: ChannelSettings,
    ) -> ChannelLoop {
        // A zero interval would spin (and tokio's interval refuses it).
        settings.poll = settings.poll.max(MIN_INTERVAL);
        settings.heartbeat = settings.heartbeat.max(MIN_INTERVAL);
        let (trigger, stop) = Shutdown::new();
        let channel = Channel {
            node,
            store,
            health,
            agent: format!("agent-{}", unique_suffix()),
            started_at_ms: now_ms(),
            settings,
            found: None,
            acks: HashMap::new(),
            current: None,
            running: None,
            quiesced: None,
            written: None,
            written_at: None,
            attempted_at: None,
            read_error: None,
        };
        tracing::info!(node = %channel.settings.node, agent = %channel.agent, "updater channel started");
        ChannelLoop {
            trigger,
            task: tokio::spawn(run_loop(channel, stop)),
        }
    }

    /// Stops the loop after its last report (see the module doc).
    pub async fn stop(self) {
        self.trigger.fire();
        if let Err(error) = self.task.await {
            tracing::error!(%error, "the updater channel's task failed");
        }
    }
}

/// The loop's state.
struct Channel {
    node: Arc<Node>,
    store: Arc<dyn ObjectStore>,
    health: Arc<HealthEndpoint>,
    settings: ChannelSettings,
    /// This process's id in the report.
    agent: String,
    started_at_ms: u64,
    /// The report found at start; `None` until it could be read.
    found: Option<Option<Report>>,
    /// The ack of every command this process decided, by command id.
    acks: HashMap<String, Ack>,
    /// The command whose ack the report carries: the newest seen.
    current: Option<String>,
    running: Option<Running>,
    quiesced: Option<Quiesced>,
    /// The phase and ack of the last report written.
    written: Option<(AgentPhase, Option<Ack>)>,
    written_at: Option<Instant>,
    attempted_at: Option<Instant>,
    /// The last error reading the command, logged once until it changes.
    read_error: Option<String>,
}

async fn run_loop(mut channel: Channel, mut stop: Shutdown) {
    let mut phase = channel.node.phase();
    let mut poll = tokio::time::interval(channel.settings.poll);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let heartbeat = tokio::time::sleep_until(channel.next_heartbeat());
        tokio::select! {
            biased;
            () = stop.wait() => break,
            joined = finished(&mut channel.running) => channel.finish(joined),
            _ = phase.changed() => {}
            _ = poll.tick() => channel.poll().await,
            () = heartbeat => {}
        }
        channel.report_if_needed().await;
    }
    channel.wind_down().await;
    tracing::info!(node = %channel.settings.node, "updater channel stopped");
}

/// The running command's outcome once it has one; never without one.
async fn finished(
    running: &mut Option<Running>,
) -> Result<Result<Success, CommandError>, JoinError> {
    match running {
        Some(running) => (&mut running.task).await,
        None => std::future::pending().await,
    }
}

impl Channel {
    /// Reads the report left by a previous process, once; whether it is known now.
    async fn read_found(&mut self) -> bool {
        if self.found.is_some() {
            return true;
        }
        match channel::read_report(self.store.as_ref(), &self.settings.node).await {
            Ok(found) => {
                if let Some(ack) = found.as_ref().and_then(|r| r.ack.as_ref()) {
                    tracing::info!(command = %ack.command, state = ?ack.state, "the previous agent's report");
                }
                self.found = Some(found);
                true
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the channel's report yet");
                false
            }
        }
    }

    fn phase(&self) -> Phase {
        self.node.phase().borrow().clone()
    }

    /// Reads the command and considers it (see the module doc).
    async fn poll(&mut self) {
        if !self.read_found().await || matches!(self.phase(), Phase::Hydrating | Phase::Stopping) {
            return;
        }
        match channel::read_command(self.store.as_ref(), &self.settings.node).await {
            Ok(command) => {
                self.read_error = None;
                if let Some(command) = &command {
                    self.consider(command.clone()).await;
                }
                self.resume_if_abandoned(command.as_ref()).await;
            }
            Err(error) => {
                let message = error.to_string();
                if self.read_error.as_ref() != Some(&message) {
                    tracing::warn!(%message, "cannot read the channel's command");
                    self.read_error = Some(message);
                }
            }
        }
    }

    /// The safety net of a quiesced client: if the command that keeps it stopped (this
    /// round's quiesce or upload) has expired, or the channel has no command any more, and
    /// nothing runs, the updater has given up on the round without a resume (it is gone, or
    /// its resume was lost): the agent starts the client on its own rather than leave the
    /// node stopped for good.
    async fn resume_if_abandoned(&mut self, command: Option<&Command>) {
        let Some(quiesced) = &self.quiesced else {
            return;
        };
        if self.running.is_some() {
            return;
        }
        let abandoned = match command {
            None => true,
            Some(command) => {
                command.round == quiesced.round
                    && command.action != CommandAction::Resume
                    && command.is_expired(now_ms())
            }
        };
        if !abandoned {
            return;
        }
        tracing::warn!(round = %quiesced.round, "the round's command expired with the client stopped; resuming on its own");
        match self.node.resume().await {
            Ok(_) => self.quiesced = None,
            Err(error) => tracing::error!(%error, "could not resume the client on its own"),
        }
    }

    async fn consider(&mut self, command: Command) {
        if self.current.as_ref() == Some(&command.id) {
            return;
        }
        if self.acks.contains_key(&command.id) {
            self.current = Some(command.id);
            return;
        }
        if let Some(running) = &self.running {
            if running.command.action != CommandAction::Upload {
                // Not cut mid-stop or mid-start: the newer command waits for it.
                return;
            }
            self.abandon(CommandError::Replaced(command.id.clone()))
                .await;
        }
        let found = self.found.as_ref().and_then(Option::as_ref);
        match decide(&command, found, now_ms()) {
            Some(ack) => {
                tracing::warn!(command = %command.id, detail = ?ack.detail, state = ?ack.state, "command answered without running it");
                self.current = Some(command.id.clone());
                self.acks.insert(command.id, ack);
            }
            None => self.start(command).await,
        }
    }

    /// Acks `command` running, then runs it in its own task.
    async fn start(&mut self, command: Command) {
        let ack = Ack {
            command: command.id.clone(),
            state: AckState::Running,
            detail: None,
            retryable: false,
            started_at_ms: now_ms(),
            finished_at_ms: None,
            chain: None,
            upload: None,
        };
        let before = self.current.replace(command.id.clone());
        self.acks.insert(command.id.clone(), ack);
        if !self.write().await {
            // Not started unless the updater can see it running; the next poll tries again.
            self.acks.remove(&command.id);
            self.current = before;
            return;
        }
        tracing::info!(command = %command.id, "running the updater's command");
        let task = tokio::spawn(execute(
            self.node.clone(),
            command.clone(),
            self.quiesced.clone(),
        ));
        self.running = Some(Running { command, task });
    }

    /// The running command ended.
    fn finish(&mut self, joined: Result<Result<Success, CommandError>, JoinError>) {
        let Some(running) = self.running.take() else {
            return;
        };
        let result = joined.unwrap_or_else(|error| Err(CommandError::Task(error.to_string())));
        self.record(&running.command, result);
    }

    /// Drops the running command (an upload), acking it failed for `why`, unless it has
    /// just ended by itself.
    async fn abandon(&mut self, why: CommandError) {
        let Some(running) = self.running.take() else {
            return;
        };
        running.task.abort();
        let result = match running.task.await {
            Ok(result) => result,
            Err(_) => Err(why),
        };
        self.record(&running.command, result);
    }

    /// Puts `command`'s outcome in its ack and remembers what it changed.
    fn record(&mut self, command: &Command, result: Result<Success, CommandError>) {
        let Some(ack) = self.acks.get_mut(&command.id) else {
            return;
        };
        ack.finished_at_ms = Some(now_ms());
        match result {
            Ok(success) => {
                ack.state = AckState::Done;
                match success {
                    Success::Quiesced(chain) => {
                        ack.chain = Some(chain.clone());
                        self.quiesced = Some(Quiesced {
                            round: command.round.clone(),
                            chain,
                        });
                    }
                    Success::Uploaded(summary) => ack.upload = Some(UploadResult::from(&summary)),
                    Success::Resumed(resumed) => {
                        if resumed == Resumed::WasRunning {
                            ack.detail = Some("the client was running".to_owned());
                        }
                        self.quiesced = None;
                    }
                }
                tracing::info!(command = %command.id, "command done");
            }
            Err(error) => {
                tracing::warn!(command = %command.id, %error, "command failed");
                ack.state = AckState::Failed;
                ack.detail = Some(error.to_string());
                ack.retryable = error.is_retryable();
            }
        }
    }

    /// The agent stops: see the module doc.
    async fn wind_down(&mut self) {
        match self.running.as_ref().map(|r| r.command.action) {
            Some(CommandAction::Upload) => self.abandon(CommandError::Stopping).await,
            Some(_) => {
                let joined = finished(&mut self.running).await;
                self.finish(joined);
            }
            None => {}
        }
        self.write().await;
    }

    fn current_ack(&self) -> Option<Ack> {
        self.current
            .as_ref()
            .and_then(|id| self.acks.get(id))
            .cloned()
    }

    /// When the heartbeat branch wakes: a heartbeat after the last attempt to write.
    fn next_heartbeat(&self) -> Instant {
        match self.attempted_at {
            Some(at) => at + self.settings.heartbeat,
            None => Instant::now() + self.settings.poll,
        }
    }

    /// Writes the report if its ack or phase changed or a heartbeat is due.
    async fn report_if_needed(&mut self) {
        let now = (agent_phase(&self.phase()), self.current_ack());
        let changed = self.written.as_ref() != Some(&now);
        let due = self
            .written_at
            .is_none_or(|at| at.elapsed() >= self.settings.heartbeat);
        if changed || due {
            self.write().await;
        }
    }

    /// Writes the report now (never before the found report was read); whether it was.
    async fn write(&mut self) -> bool {
        if !self.read_found().await {
            return false;
        }
        let phase = self.phase();
        let health = self.health.health_in(&phase).await;
        let report = Report {
            node: self.settings.node.clone(),
            agent: self.agent.clone(),
            agent_started_at_ms: self.started_at_ms,
            heartbeat_at_ms: now_ms(),
            phase: agent_phase(&phase),
            health: reported(&health),
            hydrated_from: self.node.hydrated_from(),
            ack: self.current_ack(),
        };
        self.attempted_at = Some(Instant::now());
        match channel::write_report(self.store.as_ref(), &report).await {
            Ok(()) => {
                self.written = Some((report.phase, report.ack));
                self.written_at = self.attempted_at;
                true
            }
            Err(error) => {
                tracing::warn!(%error, "cannot write the channel's report");
                false
            }
        }
    }
}

/// What to do with a command this process sees for the first time: `None` to run it, or
/// its ack without running it. `found` is the report found at start (another process's).
/// See the module doc.
fn decide(command: &Command, found: Option<&Report>, now_ms: u64) -> Option<Ack> {
    let earlier = found.and_then(|report| report.ack_of(&command.id));
    if let Some(ack) = earlier.filter(|ack| ack.state != AckState::Running) {
        return Some(ack.clone());
    }
    // A resume is run however late: a client must never stay stopped (channel doc).
    if command.is_expired(now_ms) && command.action != CommandAction::Resume {
        return Some(failed(command, now_ms, &CommandError::Expired, now_ms));
    }
    match earlier {
        Some(ack) if command.action != CommandAction::Resume => Some(failed(
            command,
            ack.started_at_ms,
            &CommandError::Restarted,
            now_ms,
        )),
        _ => None,
    }
}

fn failed(command: &Command, started_at_ms: u64, error: &CommandError, now_ms: u64) -> Ack {
    Ack {
        command: command.id.clone(),
        state: AckState::Failed,
        detail: Some(error.to_string()),
        retryable: error.is_retryable(),
        started_at_ms,
        finished_at_ms: Some(now_ms),
        chain: None,
        upload: None,
    }
}

/// Runs one command on the node (in its own task). See the module doc's table.
async fn execute(
    node: Arc<Node>,
    command: Command,
    quiesced: Option<Quiesced>,
) -> Result<Success, CommandError> {
    match command.action {
        CommandAction::Quiesce => match quiesced {
            Some(quiesced) if quiesced.round == command.round => {
                Ok(Success::Quiesced(quiesced.chain))
            }
            Some(quiesced) => Err(CommandError::QuiescedForOther(quiesced.round)),
            None => Ok(Success::Quiesced(node.quiesce().await?)),
        },
        CommandAction::Upload => match quiesced {
            Some(quiesced) if quiesced.round == command.round => {
                Ok(Success::Uploaded(node.upload(quiesced.chain, false).await?))
            }
            _ => Err(CommandError::NotQuiesced(command.round)),
        },
        CommandAction::Resume => Ok(Success::Resumed(node.resume().await?)),
    }
}

fn agent_phase(phase: &Phase) -> AgentPhase {
    match phase {
        Phase::Hydrating => AgentPhase::Hydrating,
        Phase::Running => AgentPhase::Running,
        Phase::Quiesced => AgentPhase::Quiesced,
        Phase::Stopping => AgentPhase::Stopping,
    }
}

fn reported(health: &Health) -> ReportedHealth {
    ReportedHealth {
        healthy: health.healthy,
        block: health.block,
        head_age_secs: health.head_age_secs,
        reason: health.reason.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000;

    fn command(action: CommandAction) -> Command {
        Command::new("r-1", action, NOW - 1_000, 60_000)
    }

    fn found(ack: Option<Ack>) -> Report {
        Report {
            node: "updater-1".into(),
            agent: "agent-dead".into(),
            agent_started_at_ms: 1,
            heartbeat_at_ms: 2,
            phase: AgentPhase::Quiesced,
            health: ReportedHealth::default(),
            hydrated_from: None,
            ack,
        }
    }

    fn ack(command: &Command, state: AckState) -> Ack {
        Ack {
            command: command.id.clone(),
            state,
            detail: None,
            retryable: false,
            started_at_ms: 500,
            finished_at_ms: None,
            chain: None,
            upload: None,
        }
    }

    #[test]
    fn a_new_command_runs() {
        let quiesce = command(CommandAction::Quiesce);
        assert_eq!(decide(&quiesce, None, NOW), None);
        assert_eq!(decide(&quiesce, Some(&found(None)), NOW), None);
        // Another command's ack says nothing about this one.
        let upload = command(CommandAction::Upload);
        let other = found(Some(ack(&upload, AckState::Running)));
        assert_eq!(decide(&quiesce, Some(&other), NOW), None);
    }

    #[test]
    fn an_answered_command_keeps_its_answer() {
        let quiesce = command(CommandAction::Quiesce);
        for state in [AckState::Done, AckState::Failed] {
            let earlier = ack(&quiesce, state);
            let report = found(Some(earlier.clone()));
            assert_eq!(decide(&quiesce, Some(&report), NOW), Some(earlier));
        }
    }

    #[test]
    fn a_command_its_dead_process_was_running_fails_except_a_resume() {
        for action in [CommandAction::Quiesce, CommandAction::Upload] {
            let command = command(action);
            let report = found(Some(ack(&command, AckState::Running)));
            let decided = decide(&command, Some(&report), NOW);
            let decided = decided.as_ref();
            assert_eq!(decided.map(|a| a.state), Some(AckState::Failed));
            assert_eq!(
                decided.and_then(|a| a.detail.as_deref()),
                Some("the agent restarted while running it")
            );
            assert_eq!(decided.map(|a| a.started_at_ms), Some(500));
            assert_eq!(decided.and_then(|a| a.finished_at_ms), Some(NOW));
        }
        let resume = command(CommandAction::Resume);
        let report = found(Some(ack(&resume, AckState::Running)));
        assert_eq!(decide(&resume, Some(&report), NOW), None);
    }

    #[test]
    fn an_expired_command_fails_without_running() {
        let quiesce = Command::new("r-1", CommandAction::Quiesce, NOW - 60_000, 60_000);
        let decided = decide(&quiesce, None, NOW);
        assert_eq!(decided.as_ref().map(|a| a.state), Some(AckState::Failed));
        assert_eq!(
            decided.as_ref().and_then(|a| a.detail.as_deref()),
            Some("expired before the agent started it")
        );
        assert_eq!(decided.map(|a| a.retryable), Some(false));
        // Not a resume: it runs however late, even after a restart mid-resume.
        let resume = Command::new("r-1", CommandAction::Resume, NOW - 60_000, 60_000);
        assert_eq!(decide(&resume, None, NOW), None);
        let report = found(Some(ack(&resume, AckState::Running)));
        assert_eq!(decide(&resume, Some(&report), NOW), None);
        // One millisecond before expiry it runs.
        let fresh = Command::new("r-1", CommandAction::Quiesce, NOW - 59_999, 60_000);
        assert_eq!(decide(&fresh, None, NOW), None);
    }

    #[test]
    fn only_node_failures_can_be_retryable() {
        assert!(CommandError::Node(SnapshotFailure::NotHealthy("behind".into())).is_retryable());
        assert!(!CommandError::Node(SnapshotFailure::Restart("gone".into())).is_retryable());
        assert!(!CommandError::NotQuiesced("r-1".into()).is_retryable());
        assert!(!CommandError::Restarted.is_retryable());
    }
}
