//! `nodefleet snapshot round`: start a snapshot round now, through the snapshot updater's
//! own service, exactly what the `snapshot-updater` function does with its
//! `{"action":"start-round"}` event ([`nodefleet_updater::service::run`] with `start`): take
//! the updater's lease, start a round unless one is running, and move the round as far as it
//! goes without waiting (launch the updater task, issue the agent's next command); the
//! one-minute tick carries it on from there. [`start_round`] says which of that happened.
//!
//! The lease holder is the settings' `owner` (name the operator), so a Lambda tick that runs
//! meanwhile finds the lease held and waits for its next minute, and a command run while a
//! tick holds it reports [`RoundStart::Busy`].
//!
//! # Error policy
//!
//! Every [`RoundStart`] is an answer (a busy updater included). [`UpdaterError`] is what
//! stops an invocation of the service, with its own retry policy.

use nodefleet_ports::{NodeId, TaskId, Timestamp};
use nodefleet_updater::round::{Round, RoundOutcome, RoundSummary};
use nodefleet_updater::service::{UpdaterError, UpdaterPorts, UpdaterRun, UpdaterSettings, run};
use serde::Serialize;

/// A round as the answer shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoundState {
    pub id: String,
    /// The step it waits in now (`ensure_node`, `wait_synced`, ...).
    pub step: String,
    pub started_at: Timestamp,
    /// The updater node and its task, once launched or adopted.
    pub node: Option<NodeId>,
    pub task: Option<TaskId>,
}

impl From<&Round> for RoundState {
    fn from(round: &Round) -> RoundState {
        RoundState {
            id: round.id.clone(),
            step: round.step.as_str().to_owned(),
            started_at: round.started_at,
            node: round.node.clone(),
            task: round.task.clone(),
        }
    }
}

/// What a start-round did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RoundStart {
    /// A round started now and runs on.
    Started { round: RoundState },
    /// A round started now and already ended (its updater task could not be launched, say).
    StartedAndEnded { summary: RoundSummary },
    /// A round was running already; it was advanced like a tick, and runs on.
    AlreadyRunning { round: RoundState },
    /// The running round ended in this invocation; no new one was started (run the command
    /// again to start one).
    PreviousEnded { summary: RoundSummary },
    /// Another invocation holds the updater's lease; nothing was done.
    Busy { holder: String, until: Timestamp },
}

/// Starts a round now (see the module doc).
pub async fn start_round(
    ports: UpdaterPorts<'_>,
    settings: &UpdaterSettings,
    now: Timestamp,
) -> Result<RoundStart, UpdaterError> {
    let ran = match run(ports, settings, true, now).await? {
        UpdaterRun::Busy { holder, until } => return Ok(RoundStart::Busy { holder, until }),
        UpdaterRun::Ran(ran) => ran,
    };
    let started_now = |at: Timestamp| at == now;
    if let Some(round) = &ran.memory.round {
        return Ok(if started_now(round.started_at) {
            RoundStart::Started {
                round: round.into(),
            }
        } else {
            RoundStart::AlreadyRunning {
                round: round.into(),
            }
        });
    }
    let mut finished = ran.finished;
    match finished.iter().position(|s| started_now(s.started_at)) {
        Some(index) => Ok(RoundStart::StartedAndEnded {
            summary: finished.swap_remove(index),
        }),
        None => match finished.pop() {
            Some(summary) => Ok(RoundStart::PreviousEnded { summary }),
            // `start` with no round running always starts one: the memory names it, or it
            // ended and is among the finished. Say so rather than invent an outcome.
            None => Err(UpdaterError::CorruptMemory(
                "a start-round left no round and finished none".to_owned(),
            )),
        },
    }
}

impl RoundStart {
    /// One line for a terminal.
    pub fn render(&self) -> String {
        match self {
            RoundStart::Started { round } => format!(
                "started snapshot round {}: now at {}{}",
                round.id,
                round.step,
                updater_task(round)
            ),
            RoundStart::AlreadyRunning { round } => format!(
                "snapshot round {} is already running: at {}{} (not started again)",
                round.id,
                round.step,
                updater_task(round)
            ),
            RoundStart::StartedAndEnded { summary } => format!(
                "started snapshot round {}, which ended at once: {}",
                summary.id,
                outcome(summary)
            ),
            RoundStart::PreviousEnded { summary } => format!(
                "the running snapshot round {} just ended ({}); run this again to start the \
                 next",
                summary.id,
                outcome(summary)
            ),
            RoundStart::Busy { holder, until } => format!(
                "the snapshot updater is busy: {holder} holds its lease until {} (the round \
                 in progress goes on; try again after that)",
                crate::report::utc(*until)
            ),
        }
    }
}

fn updater_task(round: &RoundState) -> String {
    match (&round.node, &round.task) {
        (Some(node), Some(task)) => format!(", updater {node} on task {task}"),
        (Some(node), None) => format!(", updater {node}"),
        _ => String::new(),
    }
}

fn outcome(summary: &RoundSummary) -> String {
    match &summary.outcome {
        RoundOutcome::Published {
            snapshot,
            block_height,
            ..
        } => format!("published {snapshot} at block {block_height}"),
        RoundOutcome::Aborted(abort) => format!(
            "aborted in {}: {} ({})",
            abort.step.as_str(),
            abort.reason.as_str(),
            abort.detail
        ),
    }
}
