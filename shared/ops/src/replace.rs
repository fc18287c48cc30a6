//! `nodefleet replace NODE`: an operator-requested replacement of one serving node, through
//! the health reactor's own code. [`replace`] reads what a reconcile reads (the stored fleet
//! config and newest published snapshot, the reactor's memory for zone backoff, and the
//! observation through the ports), plans the launch with
//! [`planner::operator_replacement`](nodefleet_reactor::planner::operator_replacement)
//! (the reactor's rules and key shape), and performs it with the reactor's executor
//! ([`nodefleet_reactor::reconcile::execute`]): the idempotency key is claimed in the state
//! store before RunTask, so a concurrent reconcile (or a second `replace`) planning the same
//! key starts no second task, and the action is in the audit trail as `reactor.launch` with
//! `operator request: ...` as its reason. The reactor then finishes the job: it registers
//! the replacement, and once that is healthy stops the old task and moves the record
//! (planner rule 3).
//!
//! Nothing here saves the reactor's memory: an operator's launch costs no token, and a
//! placement failure is reported to the operator (the reactor's next launch in that zone
//! meets the same answer and backs the zone off itself).
//!
//! # Error policy
//!
//! [`Replaced`] is every outcome in which the node ends up with one replacement: launched
//! now, already running, or launched (or being launched) under the same key by someone
//! else. [`ReplaceError`] is the rest: the planner's refusal (unknown node, the updater,
//! a stopped record, no zone), a fleet that cannot be read, or a launch that failed
//! (retrying the command retries the launch, under the key's next attempt).

use nodefleet_ports::{NodeId, TaskId, Timestamp, Zone};
use nodefleet_reactor::planner::{Action, Plan, PlanSummary, ReplaceRefusal, operator_replacement};
use nodefleet_reactor::reconcile::{ObserveError, Outcome, Ports, execute, observe};
use nodefleet_reactor::service::{ReactorError, ReactorSettings, load_desired, read_memory};
use serde::Serialize;

/// What became of a replacement request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Replaced {
    /// A replacement task was started now.
    Launched {
        node: NodeId,
        zone: Zone,
        task: TaskId,
        key: String,
        /// The task being replaced (the reactor stops it once the new one is healthy).
        replacing: Option<TaskId>,
    },
    /// The node has a replacement running already; nothing was started.
    AlreadyReplacing { node: NodeId, task: TaskId },
    /// Someone else (a reconcile, another `replace`) launched or is launching under the same
    /// key; nothing was started here.
    AlreadyLaunched {
        node: NodeId,
        zone: Zone,
        key: String,
        detail: String,
    },
}

/// Why no replacement was made. See the module doc.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplaceError {
    #[error(transparent)]
    Refused(ReplaceRefusal),
    #[error(transparent)]
    Fleet(#[from] ReactorError),
    #[error(transparent)]
    Observe(#[from] ObserveError),
    /// The planner planned something other than a launch (it plans a launch or refuses).
    #[error("the planner planned no launch: {0}")]
    NotALaunch(String),
    #[error("the launch replacing {node} in {zone} failed: {detail}")]
    LaunchFailed {
        node: NodeId,
        zone: Zone,
        detail: String,
    },
}

impl ReplaceError {
    /// True if running the same request again may succeed without a person acting.
    pub fn is_retryable(&self) -> bool {
        match self {
            ReplaceError::Refused(ReplaceRefusal::NoZone { .. })
            | ReplaceError::LaunchFailed { .. } => true,
            ReplaceError::Refused(_) | ReplaceError::NotALaunch(_) => false,
            ReplaceError::Fleet(error) => error.is_retryable(),
            ReplaceError::Observe(ObserveError::State(e)) => e.is_retryable(),
            ReplaceError::Observe(ObserveError::Scheduler(e)) => e.is_retryable(),
            ReplaceError::Observe(ObserveError::Registry(e)) => e.is_retryable(),
        }
    }
}

/// Replaces `node` (see the module doc). `settings` are the reactor's (its grace window,
/// network mode and port, and `owner`, who claims the key: name the operator).
pub async fn replace(
    ports: Ports<'_>,
    settings: &ReactorSettings,
    node: &NodeId,
    now: Timestamp,
) -> Result<Replaced, ReplaceError> {
    let desired = load_desired(ports.state, settings).await?;
    let memory = read_memory(ports.state, settings, now).await?;
    let observed = observe(ports, &memory.reconcile_memory(), &[], now).await?;
    let action = match operator_replacement(&desired, &observed, &memory.budget, node, now) {
        Ok(action) => action,
        Err(ReplaceRefusal::ReplacementPending { node, task }) => {
            return Ok(Replaced::AlreadyReplacing { node, task });
        }
        Err(refusal) => return Err(ReplaceError::Refused(refusal)),
    };
    let (zone, key) = match &action {
        Action::Launch {
            zone,
            idempotency_key,
            ..
        } => (zone.clone(), idempotency_key.clone()),
        other => return Err(ReplaceError::NotALaunch(other.reason().to_owned())),
    };
    let replacing = observed
        .nodes
        .iter()
        .find(|n| &n.id == node)
        .and_then(|n| n.task.clone());
    let plan = Plan {
        actions: vec![action],
        decisions: Vec::new(),
        budget: memory.budget.clone(),
        summary: PlanSummary::default(),
    };
    let report = execute(&plan, ports, &desired, &observed, &settings.owner, now).await;
    for warning in &report.warnings {
        tracing::warn!(warning, "replace bookkeeping");
    }
    let outcome = report.outcomes.into_iter().next().map(|o| o.outcome);
    match outcome {
        Some(Outcome::Done(_)) => match report.started.into_iter().next() {
            Some(task) => Ok(Replaced::Launched {
                node: node.clone(),
                zone,
                task,
                key,
                replacing,
            }),
            None => Err(ReplaceError::LaunchFailed {
                node: node.clone(),
                zone,
                detail: "the scheduler reported no task".to_owned(),
            }),
        },
        Some(Outcome::Skipped(detail)) => Ok(Replaced::AlreadyLaunched {
            node: node.clone(),
            zone,
            key,
            detail,
        }),
        Some(Outcome::Failed(detail)) => Err(ReplaceError::LaunchFailed {
            node: node.clone(),
            zone,
            detail,
        }),
        None => Err(ReplaceError::LaunchFailed {
            node: node.clone(),
            zone,
            detail: "the executor performed nothing".to_owned(),
        }),
    }
}

impl Replaced {
    /// One line for a terminal.
    pub fn render(&self) -> String {
        match self {
            Replaced::Launched {
                node,
                zone,
                task,
                key,
                replacing,
            } => format!(
                "replacing {node}: launched task {task} in {zone} (key {key}); the health \
                 reactor stops {} once it is healthy",
                replacing
                    .as_ref()
                    .map_or_else(|| "nothing".to_owned(), |t| format!("the old task {t}"))
            ),
            Replaced::AlreadyReplacing { node, task } => {
                format!("{node} is being replaced already, by task {task}: nothing launched")
            }
            Replaced::AlreadyLaunched {
                node,
                zone,
                key,
                detail,
            } => format!(
                "{node}'s replacement in {zone} is launched already under key {key} ({detail}): \
                 nothing launched"
            ),
        }
    }
}
