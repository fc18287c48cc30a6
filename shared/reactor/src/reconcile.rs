//! The reconcile loop's I/O half: [`observe`] reads the fleet through the ports, the pure
//! [`crate::planner::plan`] decides, and [`execute`] performs the plan's actions. The one
//! piece of I/O in this crate, kept generic over the ports (`&dyn StateStore`,
//! `&dyn Scheduler`, `&dyn TargetRegistry`) so tests run it on fakes.
//!
//! # What is carried between reconciles
//!
//! [`ReconcileMemory`]: the [`ReplacementBudget`] the last plan left, the placement
//! failures the executor saw (they feed zone backoff in the next plan), and the spot
//! warnings whose instance still runs a task of the fleet. The caller persists it between
//! invocations; [`reconcile`] returns the new one.
//!
//! A spot warning arrives once, as one event, but its instance stays doomed until it is
//! gone; the reconciles after the event's (the schedule's) carry no warning of their own. So
//! the memory keeps every warning seen while an observed live task runs on its instance, and
//! each reconcile plans with those and the ones it was given. Without that, the first
//! reconcile after the doomed target finished draining would find a live task whose target
//! the balancer lacks, and register it again (rule 5 of the planner), putting an instance
//! about to be interrupted back into rotation.
//!
//! # Exactly-once side effects
//!
//! Before every side effect the executor claims the action's idempotency key in the state
//! store; of any number of reconciles planning the same key (duplicate events, concurrent
//! invocations on one observation), exactly one wins the claim and acts, the others skip.
//! After the side effect the winner completes the key with the outcome (a task id,
//! `done`, or the failure).
//!
//! A failed side effect is not retried in a loop: it is reported, and the next reconcile
//! that plans the same action tries again. The store has no release, so a retry claims the
//! next *attempt* of the key, `<key>#<n>`: the executor walks attempts 1, 2, ... reading
//! each, passes over those completed as failures, and claims the first free one. Attempts
//! completed as done, or claimed and not completed (someone is acting now), stop the walk:
//! the action is skipped. Every walker sees the same chain, so concurrent retries still
//! produce one claim winner per attempt. At most [`MAX_ATTEMPTS`] attempts are made per key
//! lifetime ([`key_ttl`]); then the action waits until the first attempt's claim expires.
//!
//! Launches keep one scheduler token across attempts whose failure was ambiguous (an error:
//! the launch may have happened with its answer lost), so the scheduler replays the first
//! launch instead of starting a second task. Only a definite placement failure (the report
//! says nothing started) moves the token on (`<key>#unplaced-<d>`), since a replay of that
//! token would only replay the failure.
//!
//! # Node records
//!
//! A launch for a node without a record creates one (`Launching`, naming the new task). A
//! replacement launch leaves the record alone: the node keeps judging its current task
//! until the replacement is healthy. The record is moved to the new task (its task, target
//! and zone: a replacement may run in another zone) when the planner stops the old one
//! (`StopTask { replaced_by }`), or, for a node whose task is already gone, when the
//! replacement's target is registered. Saves are versioned; a conflict means someone else
//! moved the record, and the next reconcile re-reads it. A move that failed otherwise (the
//! store was unavailable) is planned again, as an [`Action::AdoptTask`], by every later
//! reconcile until a save succeeds (planner rule 7).
//!
//! After the actions, records follow the health of their current task's target as observed:
//! healthy makes a `Launching`, `Hydrating`, `Syncing` or `Unhealthy` record `Serving`, and
//! unhealthy makes a `Serving` record `Unhealthy` (an `initial` target changes nothing: it is
//! still starting). Only records whose task is live are touched, each re-read first, so a
//! record an action just moved to another task is left for the next reconcile. These states
//! are for operators (`nodefleet status`); the planner judges nodes by tasks and targets.
//!
//! # Audit
//!
//! Every action this executor performed or attempted, and every alert, appends an audit
//! event with the planner's reason and the outcome. Actions skipped because another
//! reconcile holds their key are only logged (fifty duplicate events would otherwise write
//! fifty identical audit lines).

use std::time::Duration;

use nodefleet_ports::{
    AuditEvent, LaunchRequest, NodeId, NodeRecord, NodeState, Role, Scheduler, SchedulerError,
    StateError, StateStore, Target, TargetRegistry, TargetState, TaskId, TaskInfo, TaskStatus,
    Timestamp, Version, Zone, target_for_task,
};

use crate::planner::{
    Action, Desired, Observed, ObservedLaunchFailure, Plan, ReplacementBudget, SpotWarning,
    ZONE_FAILURE_MEMORY, plan,
};

/// How long a key outlives the grace window: time for the replacement's target to be
/// registered and its first health checks to pass after hydration and catch-up (ELBv2's
/// default is 5 checks 30 s apart, 2.5 minutes; ten minutes covers a slow first sync and a
/// reconcile interval on top).
pub const KEY_TTL_MARGIN: Duration = Duration::from_secs(10 * 60);

/// Attempts per key within one key lifetime. A reconcile runs about once a minute, so five
/// failed attempts are five minutes of one action failing: enough to ride out throttling and
/// a flapping endpoint, few enough that a broken configuration does not hammer the API for
/// the whole grace window.
pub const MAX_ATTEMPTS: u32 = 5;

/// How long audit events are kept: 90 days, long enough to look back over a quarter's
/// incidents.
pub const AUDIT_RETENTION: Duration = Duration::from_secs(90 * 24 * 60 * 60);

/// Outcome prefix of an attempt that failed with nothing started for sure.
pub const UNPLACED: &str = "unplaced: ";
/// Outcome prefix of an attempt that failed and may or may not have happened.
const FAILED: &str = "failed: ";

/// How long an idempotency key is claimed: it must outlive the time a replacement takes to
/// become healthy (the grace window plus [`KEY_TTL_MARGIN`]). Until then the planner keeps
/// seeing the replacement task and plans no launch under that key again; a key that
/// expired earlier would let a slow replacement be launched twice.
pub fn key_ttl(desired: &Desired) -> Duration {
    desired.grace.saturating_add(KEY_TTL_MARGIN)
}

/// The ports a reconcile talks to.
#[derive(Clone, Copy)]
pub struct Ports<'a> {
    pub state: &'a dyn StateStore,
    pub scheduler: &'a dyn Scheduler,
    pub registry: &'a dyn TargetRegistry,
}

impl std::fmt::Debug for Ports<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ports").finish_non_exhaustive()
    }
}

/// What one reconcile hands the next: the budget, recent placement failures, and the spot
/// warnings still in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileMemory {
    pub budget: ReplacementBudget,
    pub launch_failures: Vec<ObservedLaunchFailure>,
    /// Warnings whose instance ran a live task of the fleet at the last observation.
    pub spot_warnings: Vec<SpotWarning>,
}

impl ReconcileMemory {
    /// A full default budget and no failures.
    pub fn new(now: Timestamp) -> ReconcileMemory {
        ReconcileMemory {
            budget: ReplacementBudget::new(now),
            launch_failures: Vec::new(),
            spot_warnings: Vec::new(),
        }
    }
}

/// Why the fleet could not be observed (nothing is planned on a partial view).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObserveError {
    #[error("could not read node records: {0}")]
    State(#[from] StateError),
    #[error("could not list tasks: {0}")]
    Scheduler(#[from] SchedulerError),
    #[error("could not read target health: {0}")]
    Registry(#[from] nodefleet_ports::RegistryError),
}

/// Reads node records, tasks and target health, and adds the remembered launch failures
/// (those within [`ZONE_FAILURE_MEMORY`]) and the remembered spot warnings together with
/// `spot_warnings` (one warning per instance, the earliest).
pub async fn observe(
    ports: Ports<'_>,
    memory: &ReconcileMemory,
    spot_warnings: &[SpotWarning],
    now: Timestamp,
) -> Result<Observed, ObserveError> {
    // Independent reads: at once, so observing costs the slowest of them, not their sum.
    let (nodes, tasks, targets) = tokio::try_join!(
        async { ports.state.list_nodes().await.map_err(ObserveError::from) },
        async {
            ports
                .scheduler
                .list_tasks()
                .await
                .map_err(ObserveError::from)
        },
        async {
            ports
                .registry
                .describe_health()
                .await
                .map_err(ObserveError::from)
        },
    )?;
    let launch_failures = memory
        .launch_failures
        .iter()
        .filter(|f| now.since(f.at) < ZONE_FAILURE_MEMORY)
        .cloned()
        .collect();
    let mut warnings: Vec<SpotWarning> = Vec::new();
    for warning in memory.spot_warnings.iter().chain(spot_warnings) {
        match warnings
            .iter_mut()
            .find(|w| w.instance_id == warning.instance_id)
        {
            Some(known) => known.at = known.at.min(warning.at),
            None => warnings.push(warning.clone()),
        }
    }
    Ok(Observed {
        nodes,
        tasks,
        targets,
        launch_failures,
        spot_warnings: warnings,
    })
}

/// What became of one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Performed; the detail is what the key was completed with (a task id, `done`).
    Done(String),
    /// Not performed: another reconcile did it or is doing it, or attempts are used up.
    Skipped(String),
    /// Attempted and failed; the next reconcile that plans it tries again.
    Failed(String),
}

/// One action and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionOutcome {
    pub action: Action,
    /// The key claimed (with its attempt suffix), if the action had one and a claim won.
    pub claimed_key: Option<String>,
    pub outcome: Outcome,
}

/// What an execution did, action by action.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutionReport {
    pub outcomes: Vec<ActionOutcome>,
    /// Placement failures seen; carried to the next plan for zone backoff.
    pub launch_failures: Vec<ObservedLaunchFailure>,
    /// Tasks started by launches.
    pub started: Vec<TaskId>,
    /// Bookkeeping problems that did not stop an action (record conflicts, audit or
    /// key-completion failures), for the logs.
    pub warnings: Vec<String>,
}

impl ExecutionReport {
    pub fn done(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Done(_)))
    }

    pub fn skipped(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Skipped(_)))
    }

    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Failed(_)))
    }

    fn count(&self, predicate: impl Fn(&Outcome) -> bool) -> usize {
        self.outcomes
            .iter()
            .filter(|o| predicate(&o.outcome))
            .count()
    }
}

/// A claim won: the key to complete, and the scheduler token for launches.
struct Claim {
    key: String,
    scheduler_token: String,
}

/// The context one execution shares across its actions.
struct Executor<'a> {
    ports: Ports<'a>,
    desired: &'a Desired,
    observed: &'a Observed,
    owner: &'a str,
    now: Timestamp,
    report: ExecutionReport,
}

/// Performs `plan`'s actions in order, each under its idempotency key (see the module doc).
/// Never fails as a whole: every action's outcome is in the report.
pub async fn execute(
    plan: &Plan,
    ports: Ports<'_>,
    desired: &Desired,
    observed: &Observed,
    owner: &str,
    now: Timestamp,
) -> ExecutionReport {
    let mut executor = Executor {
        ports,
        desired,
        observed,
        owner,
        now,
        report: ExecutionReport::default(),
    };
    for action in &plan.actions {
        executor.perform(action).await;
    }
    executor.follow_health().await;
    executor.report
}

/// What one reconcile produced.
#[derive(Debug, Clone)]
pub struct ReconcileOutcome {
    pub plan: Plan,
    pub report: ExecutionReport,
    /// To pass to the next reconcile.
    pub memory: ReconcileMemory,
    pub timings: ReconcileTimings,
}

/// Wall-clock time of a reconcile's phases, for logs, metrics and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileTimings {
    /// Reading records, tasks and target health.
    pub observe: Duration,
    /// The pure planner.
    pub plan: Duration,
    /// Performing the actions, bookkeeping included.
    pub execute: Duration,
}

/// Observe, plan, execute. The returned memory carries the plan's budget, the placement
/// failures still worth remembering, and the spot warnings whose instance still runs a live
/// task (see the module doc).
pub async fn reconcile(
    ports: Ports<'_>,
    desired: &Desired,
    memory: &ReconcileMemory,
    spot_warnings: &[SpotWarning],
    owner: &str,
    now: Timestamp,
) -> Result<ReconcileOutcome, ObserveError> {
    let started = std::time::Instant::now();
    let observed = observe(ports, memory, spot_warnings, now).await?;
    let observed_at = std::time::Instant::now();
    let plan = plan(desired, &observed, now, &memory.budget);
    let planned_at = std::time::Instant::now();
    // A plan with nothing to do is the steady state of every tick: debug, not a log line a
    // second in the local fleet (or a minute in the Lambda) saying nothing happened.
    if plan.actions.is_empty() {
        tracing::debug!(
            decisions = plan.decisions.len(),
            nodes = plan.summary.nodes,
            "reconcile planned nothing"
        );
    } else {
        tracing::info!(
            actions = plan.actions.len(),
            decisions = plan.decisions.len(),
            unhealthy = plan.summary.unhealthy,
            lost = plan.summary.lost,
            storm = plan.summary.storm,
            "reconcile planned"
        );
    }
    let report = execute(&plan, ports, desired, &observed, owner, now).await;
    let timings = ReconcileTimings {
        observe: observed_at.duration_since(started),
        plan: planned_at.duration_since(observed_at),
        execute: planned_at.elapsed(),
    };
    let spot_warnings = observed
        .spot_warnings
        .iter()
        .filter(|w| {
            observed
                .tasks
                .iter()
                .any(|t| is_live(t) && t.instance_id.as_deref() == Some(w.instance_id.as_str()))
        })
        .cloned()
        .collect();
    let mut launch_failures = observed.launch_failures;
    launch_failures.extend(report.launch_failures.iter().cloned());
    let memory = ReconcileMemory {
        budget: plan.budget.clone(),
        launch_failures,
        spot_warnings,
    };
    Ok(ReconcileOutcome {
        plan,
        report,
        memory,
        timings,
    })
}

fn attempt_key(key: &str, attempt: u32) -> String {
    if attempt == 1 {
        key.to_owned()
    } else {
        format!("{key}#{attempt}")
    }
}

fn is_live(task: &TaskInfo) -> bool {
    matches!(task.last_status, TaskStatus::Pending | TaskStatus::Running)
        && task.desired_status != TaskStatus::Stopped
}

impl Executor<'_> {
    async fn perform(&mut self, action: &Action) {
        let Some(key) = action.idempotency_key() else {
            self.alert(action).await;
            return;
        };
        let claim = match self.claim(&key).await {
            Ok(claim) => claim,
            Err(outcome) => {
                tracing::debug!(key, ?outcome, "action not performed here");
                self.report.outcomes.push(ActionOutcome {
                    action: action.clone(),
                    claimed_key: None,
                    outcome,
                });
                return;
            }
        };
        let result = self.side_effect(action, &claim).await;
        let completion = match &result {
            Outcome::Done(detail) => detail.clone(),
            Outcome::Failed(detail) | Outcome::Skipped(detail) => detail.clone(),
        };
        if let Err(error) = self
            .ports
            .state
            .complete_idempotency_key(&claim.key, self.owner, &completion, self.now)
            .await
        {
            self.warn(format!("could not complete key {}: {error}", claim.key));
        }
        let (kind, subject) = audit_kind_and_subject(action);
        let detail = format!("{}; outcome: {completion}", action.reason());
        match &result {
            Outcome::Failed(_) => tracing::warn!(key = claim.key, kind, subject, detail),
            _ => tracing::info!(key = claim.key, kind, subject, detail),
        }
        self.audit(kind, &subject, &detail).await;
        self.report.outcomes.push(ActionOutcome {
            action: action.clone(),
            claimed_key: Some(claim.key),
            outcome: result,
        });
    }

    /// Walks the key's attempts and claims the first free one, or says why not.
    async fn claim(&mut self, key: &str) -> Result<Claim, Outcome> {
        let ttl = key_ttl(self.desired);
        let mut definite_failures = 0u32;
        for attempt in 1..=MAX_ATTEMPTS {
            let attempt_key = attempt_key(key, attempt);
            match self
                .ports
                .state
                .claim_idempotency_key(&attempt_key, self.owner, ttl, self.now)
                .await
            {
                Ok(_) => {
                    let scheduler_token = match definite_failures {
                        0 => key.to_owned(),
                        d => format!("{key}#unplaced-{d}"),
                    };
                    return Ok(Claim {
                        key: attempt_key,
                        scheduler_token,
                    });
                }
                Err(StateError::AlreadyClaimed { .. }) => {}
                Err(error) => return Err(Outcome::Failed(format!("could not claim: {error}"))),
            }
            let record = self
                .ports
                .state
                .get_idempotency_key(&attempt_key, self.now)
                .await
                .map_err(|error| Outcome::Failed(format!("could not read claim: {error}")))?;
            // Absent now: it expired between the claim and the read; the next reconcile
            // claims it.
            let Some(record) = record else {
                return Err(Outcome::Skipped(format!("{attempt_key} just expired")));
            };
            match record.outcome.as_deref() {
                None => {
                    return Err(Outcome::Skipped(format!(
                        "{attempt_key} is being acted on by {}",
                        record.owner
                    )));
                }
                Some(outcome) if outcome.starts_with(UNPLACED) => definite_failures += 1,
                Some(outcome) if outcome.starts_with(FAILED) => {}
                Some(outcome) => {
                    return Err(Outcome::Skipped(format!(
                        "{attempt_key} already done by {}: {outcome}",
                        record.owner
                    )));
                }
            }
        }
        Err(Outcome::Skipped(format!(
            "{key} failed {MAX_ATTEMPTS} times; waiting for its first attempt to expire"
        )))
    }

    async fn side_effect(&mut self, action: &Action, claim: &Claim) -> Outcome {
        match action {
            Action::Launch {
                node,
                zone,
                role,
                snapshot,
                ..
            } => {
                let request = LaunchRequest {
                    node: node.clone(),
                    zone: zone.clone(),
                    role: *role,
                    snapshot: snapshot.clone(),
                    idempotency_key: claim.scheduler_token.clone(),
                    count: 1,
                };
                self.launch(&request).await
            }
            Action::RegisterTarget {
                node, task, target, ..
            } => match self
                .ports
                .registry
                .register(std::slice::from_ref(target))
                .await
            {
                Ok(()) => {
                    self.adopt_registered(node, task, target).await;
                    Outcome::Done("done".to_owned())
                }
                Err(error) => Outcome::Failed(format!("{FAILED}{error}")),
            },
            Action::DeregisterTarget { target, .. } => match self
                .ports
                .registry
                .deregister(std::slice::from_ref(target))
                .await
            {
                Ok(()) => Outcome::Done("done".to_owned()),
                Err(error) => Outcome::Failed(format!("{FAILED}{error}")),
            },
            Action::StopTask {
                node,
                task,
                replaced_by,
                reason,
            } => match self.ports.scheduler.stop(task, reason).await {
                Ok(()) => {
                    if let Some(replacement) = replaced_by {
                        self.move_record(node, task, replacement).await;
                    }
                    Outcome::Done("done".to_owned())
                }
                Err(error) => Outcome::Failed(format!("{FAILED}{error}")),
            },
            Action::AdoptTask {
                node,
                task,
                replaced,
                ..
            } => self.adopt(node, replaced, task).await,
            // Alerts carry no key and are handled before claiming.
            Action::Alert { .. } => Outcome::Done("done".to_owned()),
        }
    }

    async fn launch(&mut self, request: &LaunchRequest) -> Outcome {
        let report = match self.ports.scheduler.launch(request).await {
            Ok(report) => report,
            Err(error) => return Outcome::Failed(format!("{FAILED}{error}")),
        };
        for failure in &report.failures {
            self.report.launch_failures.push(ObservedLaunchFailure {
                zone: failure.zone.clone(),
                at: self.now,
                reason: failure.reason.clone(),
            });
        }
        let Some(task) = report.started.first() else {
            let reasons: Vec<String> = report
                .failures
                .iter()
                .map(|f| format!("{} in {} ({})", f.reason.as_reason(), f.zone, f.detail))
                .collect();
            return Outcome::Failed(format!("{UNPLACED}{}", reasons.join("; ")));
        };
        self.report.started.push(task.id.clone());
        self.record_launch(request, task).await;
        Outcome::Done(task.id.to_string())
    }

    /// Creates the record of a node that has none; a replacement leaves the record as is.
    async fn record_launch(&mut self, request: &LaunchRequest, task: &TaskInfo) {
        match self.ports.state.get_node(&request.node).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                let record = NodeRecord {
                    id: request.node.clone(),
                    task: Some(task.id.clone()),
                    zone: request.zone.clone(),
                    target: self.target_of(task),
                    role: request.role,
                    state: NodeState::Launching,
                    snapshot: request.snapshot.clone(),
                    created_at: self.now,
                    updated_at: self.now,
                    version: Version::NEW,
                };
                self.save(record).await;
            }
            Err(error) => self.warn(format!("could not read node {}: {error}", request.node)),
        }
    }

    /// After registering `task`'s target: the record names it if it named it already, or if
    /// the task it named is gone (a lost node's replacement takes over).
    async fn adopt_registered(&mut self, node: &NodeId, task: &TaskId, target: &Target) {
        let record = match self.ports.state.get_node(node).await {
            Ok(Some(record)) => record,
            Ok(None) => return,
            Err(error) => return self.warn(format!("could not read node {node}: {error}")),
        };
        let recorded_is_gone = record.task.as_ref().is_none_or(|recorded| {
            !self
                .observed
                .tasks
                .iter()
                .any(|t| &t.id == recorded && is_live(t))
        });
        if record.task.as_ref() != Some(task) && !recorded_is_gone {
            return;
        }
        let mut updated = record;
        if let Some(zone) = self.zone_of(task) {
            updated.zone = zone;
        }
        updated.task = Some(task.clone());
        updated.target = Some(target.clone());
        updated.state = NodeState::Syncing;
        updated.updated_at = self.now;
        self.save(updated).await;
    }

    /// After stopping `old`: the record names `replacement` (if it still named `old`).
    async fn move_record(&mut self, node: &NodeId, old: &TaskId, replacement: &TaskId) {
        let record = match self.ports.state.get_node(node).await {
            Ok(Some(record)) if record.task.as_ref() == Some(old) => record,
            Ok(_) => return,
            Err(error) => return self.warn(format!("could not read node {node}: {error}")),
        };
        let target = self
            .observed
            .tasks
            .iter()
            .find(|t| &t.id == replacement)
            .and_then(|t| self.target_of(t));
        let mut updated = record;
        if let Some(zone) = self.zone_of(replacement) {
            updated.zone = zone;
        }
        updated.task = Some(replacement.clone());
        updated.target = target;
        updated.state = NodeState::Serving;
        updated.updated_at = self.now;
        self.save(updated).await;
    }

    /// [`Action::AdoptTask`]: the record names `task` if it still named the gone `replaced`.
    /// Unlike the moves that go with a registration or a stop, a failed save fails the
    /// action, so the next reconcile plans it again.
    async fn adopt(&mut self, node: &NodeId, replaced: &TaskId, task: &TaskId) -> Outcome {
        let record = match self.ports.state.get_node(node).await {
            Ok(Some(record)) if record.task.as_ref() == Some(replaced) => record,
            Ok(_) => return Outcome::Done(format!("{node}'s record no longer names {replaced}")),
            Err(error) => return Outcome::Failed(format!("{FAILED}{error}")),
        };
        let observed = self.observed.tasks.iter().find(|t| &t.id == task);
        let target = observed.and_then(|t| self.target_of(t));
        let healthy = target.as_ref().is_some_and(|target| {
            self.observed
                .targets
                .iter()
                .any(|h| &h.target == target && h.state == TargetState::Healthy)
        });
        let mut updated = record;
        if let Some(zone) = observed.and_then(|t| t.zone.clone()) {
            updated.zone = zone;
        }
        updated.task = Some(task.clone());
        updated.target = target;
        updated.state = if healthy {
            NodeState::Serving
        } else {
            NodeState::Syncing
        };
        updated.updated_at = self.now;
        match self.ports.state.save_node(&updated).await {
            Ok(_) => Outcome::Done("done".to_owned()),
            Err(error) => Outcome::Failed(format!("{FAILED}{error}")),
        }
    }

    /// Records follow their current task's target health (see the module doc).
    async fn follow_health(&mut self) {
        let observed = self.observed;
        for seen in &observed.nodes {
            if seen.role != Role::Serving || self.health_state_of(seen).is_none() {
                continue;
            }
            let record = match self.ports.state.get_node(&seen.id).await {
                Ok(Some(record)) if record.task == seen.task => record,
                Ok(_) => continue,
                Err(error) => {
                    self.warn(format!("could not read node {}: {error}", seen.id));
                    continue;
                }
            };
            let Some(next) = self.health_state_of(&record) else {
                continue;
            };
            tracing::info!(node = %record.id, from = ?record.state, to = ?next, "node record state");
            let mut updated = record;
            updated.state = next;
            updated.updated_at = self.now;
            self.save(updated).await;
        }
    }

    /// The state `record` should have by its live task's observed target health, if that
    /// says anything.
    fn health_state_of(&self, record: &NodeRecord) -> Option<NodeState> {
        let task_id = record.task.as_ref()?;
        let task = self
            .observed
            .tasks
            .iter()
            .find(|t| &t.id == task_id && is_live(t))?;
        let target = self.target_of(task)?;
        let health = self.observed.targets.iter().find(|h| h.target == target)?;
        match (health.state, record.state) {
            (
                TargetState::Healthy,
                NodeState::Launching
                | NodeState::Hydrating
                | NodeState::Syncing
                | NodeState::Unhealthy,
            ) => Some(NodeState::Serving),
            (TargetState::Unhealthy, NodeState::Serving) => Some(NodeState::Unhealthy),
            _ => None,
        }
    }

    async fn save(&mut self, record: NodeRecord) {
        if let Err(error) = self.ports.state.save_node(&record).await {
            // A conflict: someone else moved the record; the next reconcile re-reads it.
            self.warn(format!("could not save node {}: {error}", record.id));
        }
    }

    async fn alert(&mut self, action: &Action) {
        let (kind, subject) = audit_kind_and_subject(action);
        tracing::error!(kind, subject, message = action.reason(), "reactor alert");
        self.audit(kind, &subject, action.reason()).await;
        self.report.outcomes.push(ActionOutcome {
            action: action.clone(),
            claimed_key: None,
            outcome: Outcome::Done("alerted".to_owned()),
        });
    }

    async fn audit(&mut self, kind: &str, subject: &str, detail: &str) {
        let event = AuditEvent::new(self.now, kind, subject, detail, AUDIT_RETENTION);
        if let Err(error) = self.ports.state.append_event(&event).await {
            self.warn(format!("could not append audit event {kind}: {error}"));
        }
    }

    fn target_of(&self, task: &TaskInfo) -> Option<Target> {
        target_for_task(task, self.desired.network_mode, self.desired.container_port)
    }

    /// The zone an observed task runs in.
    fn zone_of(&self, task: &TaskId) -> Option<Zone> {
        self.observed
            .tasks
            .iter()
            .find(|t| &t.id == task)
            .and_then(|t| t.zone.clone())
    }

    fn warn(&mut self, message: String) {
        tracing::warn!(message, "reconcile bookkeeping");
        self.report.warnings.push(message);
    }
}

/// The audit event kind and subject of an action.
fn audit_kind_and_subject(action: &Action) -> (&'static str, String) {
    match action {
        Action::Launch { node, .. } => ("reactor.launch", node.to_string()),
        Action::RegisterTarget { target, .. } => ("reactor.register", target.to_string()),
        Action::DeregisterTarget { target, .. } => ("reactor.deregister", target.to_string()),
        Action::StopTask { task, .. } => ("reactor.stop", task.to_string()),
        Action::AdoptTask { node, .. } => ("reactor.adopt", node.to_string()),
        Action::Alert { kind, .. } => (
            match kind {
                crate::planner::AlertKind::Storm => "reactor.alert.storm",
                crate::planner::AlertKind::BudgetSpent => "reactor.alert.budget_spent",
                crate::planner::AlertKind::NoZoneAvailable => "reactor.alert.no_zone",
            },
            "fleet".to_owned(),
        ),
    }
}
