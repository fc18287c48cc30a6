//! The reconcile planner: a pure function from what the fleet should be ([`Desired`]), what
//! it is ([`Observed`]), `now` and the [`ReplacementBudget`] to a [`Plan`]: the actions to
//! take, a log line for every decision, and the budget to persist. No I/O and no clock; the
//! executor performs the actions, each under its idempotency key.
//!
//! # How a node is judged
//!
//! Only serving nodes are managed here (the updater is the snapshot updater's). A node is a
//! serving [`NodeRecord`] that is not `Stopped`, or a live task tagged with a node id that
//! has no record yet (its launch ran, its record was not written). Its *current* task is the
//! record's task (or, without one, its oldest live tagged task); any other live task tagged
//! with its id is its *replacement*. The node is then, in this order:
//!
//! - **lost**: its current task is gone, stopped or stopping (or it never got one within
//!   its grace window);
//! - **doomed**: its current task's instance has a spot interruption warning;
//! - **in grace**: launched less than [`Desired::grace`] ago (hydration plus catch-up
//!   budget of its client profile): not judged;
//! - **healthy** / **unhealthy**: its target's load-balancer state (`initial` past grace
//!   counts as unhealthy; a live task with no reachable target past grace is unhealthy);
//! - **unknown**: not registered yet, draining, unused: not judged this time.
//!
//! # Rules
//!
//! 1. Lost, unhealthy and doomed nodes without a replacement are replaced, one launch each,
//!    in the zone with the largest deficit against the even spread of
//!    [`Desired::serving_nodes`] over the zones, skipping zones in backoff (their share so
//!    goes to the others). Doomed nodes go first, then lost, then unhealthy, by node id. A
//!    node counts in the zone its live task (or pending replacement) runs in; the record's
//!    zone only when it has neither.
//! 2. **Storm guard**: if lost plus unhealthy nodes are more than [`Desired::storm_share`]
//!    of the fleet, nothing is launched (neither replacements nor fill) and an
//!    [`AlertKind::Storm`] is raised. If the token bucket is empty, the remaining
//!    replacements wait and an [`AlertKind::BudgetSpent`] is raised. Every replacement
//!    launch costs one token, except one whose key was already paid for.
//! 3. Replace first, stop after: the old task is stopped (and its target deregistered) only
//!    once the replacement's target is healthy; a task already gone is not stopped. A stop
//!    that would take the number of healthy tasks below `max(healthy_floor, 1)` is withheld,
//!    so the last healthy node is never stopped. Extra replacements (two launches for one
//!    node) are stopped the same way.
//! 4. A doomed node's target is deregistered at once, so it drains before termination.
//! 5. A task that is stopped (or stopping) has its target deregistered, unless a live task
//!    has the same target; a live task with a known target that the load balancer does not
//!    know is registered (its `/health` check keeps it out of rotation until it is synced).
//! 6. If the fleet has fewer nodes than desired, new nodes are launched (no token: filling
//!    is not replacing) with ids `<zone>-<n>`, the smallest `n` not used by any node.
//! 7. A node whose recorded task is gone and whose replacement's target the load balancer
//!    already knows has its record moved to the replacement ([`Action::AdoptTask`]). The
//!    executor moves it when it registers the replacement (or stops the old task), so this
//!    only happens when that save failed: otherwise nothing would plan the move again (the
//!    target is registered, the old task not live), and the node would count as lost in
//!    every later plan, storm guard included.
//!
//! # Idempotency keys
//!
//! Keys are derived from the observation only, so two reconciles of the same observation
//! (duplicate or concurrent events) plan the same keys and the executor's conditional write
//! lets exactly one launch happen:
//!
//! - replacement: `replace/<node>/<task being replaced, or "none">/<zone>`. The zone is in
//!   the key so that after a capacity failure moves the replacement to another zone it is a
//!   new launch, while every reconcile that picks the same zone dedups. A flapping target
//!   (unhealthy, healthy, unhealthy) plans the same key each time it is unhealthy, and once
//!   the replacement's task is listed the node has a replacement and nothing is launched.
//!   A replacement that dies before it is adopted is listed as a stopped task tagged with the
//!   node; with `n` of those the key gets `/retry-<n>`, so the node is replaced again at once
//!   instead of waiting for the first key to expire (every reconcile of that observation
//!   counts the same `n`);
//! - fill: `launch/<node>`; other actions: [`Action::idempotency_key`];
//! - an operator's replacement ([`operator_replacement`], `nodefleet replace NODE`): the
//!   replacement key above, the very launch a reconcile would plan when it would replace the
//!   node itself, so an operator and a concurrent reconcile start one task between them.
//!
//! # Cost
//!
//! Linear in nodes plus tasks plus targets, with hash-map lookups. A 300-node, 3-zone plan
//! with 15 nodes to replace takes about 0.25 ms (mean; fastest 0.17 ms) in release on the
//! 2-core build machine
//! (`cargo run --release -p nodefleet-reactor --example plan_300`).

mod budget;
mod operator;
pub mod sample;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use nodefleet_ports::{
    FleetConfig, NetworkMode, NodeId, NodeRecord, NodeState, Role, SnapshotId, Target,
    TargetHealth, TargetState, TaskId, TaskInfo, TaskStatus, Timestamp, Zone, target_for_task,
};
use serde::{Deserialize, Serialize};

pub use budget::{
    BUDGET_PERIOD, DEFAULT_REPLACEMENTS_PER_HOUR, ObservedLaunchFailure, Payment,
    ReplacementBudget, TokenBucket, ZONE_BACKOFF_BASE, ZONE_BACKOFF_MAX, ZONE_FAILURE_MEMORY,
    ZoneBackoff, ZoneFailures,
};
pub use operator::{ReplaceRefusal, operator_replacement};

/// What every replacement launch's idempotency key starts with (see the module doc), so
/// metrics can tell replacements from fills.
pub const REPLACEMENT_KEY_PREFIX: &str = "replace/";

/// A share of the fleet, as a fraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    pub numerator: u32,
    pub denominator: u32,
}

impl Share {
    /// Issue 5's default storm share: more than a third of the fleet unhealthy at once is far
    /// more than independent hardware failures produce, and points at a shared cause.
    pub const ONE_THIRD: Share = Share {
        numerator: 1,
        denominator: 3,
    };

    pub fn from_percent(percent: u8) -> Share {
        Share {
            numerator: u32::from(percent),
            denominator: 100,
        }
    }

    /// True if `part` out of `whole` is more than this share. A zero denominator is a
    /// share of "everything": never exceeded.
    pub fn is_exceeded_by(self, part: usize, whole: usize) -> bool {
        if self.denominator == 0 {
            return false;
        }
        let part = part as u128 * u128::from(self.denominator);
        let limit = whole as u128 * u128::from(self.numerator);
        part > limit
    }
}

impl Default for Share {
    fn default() -> Share {
        Share::ONE_THIRD
    }
}

/// What the fleet should be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    /// Zones to spread over, in preference order (ties go to the earlier zone).
    pub zones: Vec<Zone>,
    pub serving_nodes: u32,
    /// Stops never take the healthy task count below `max(healthy_floor, 1)`.
    pub healthy_floor: u32,
    /// More unhealthy (or lost) nodes than this share of the fleet is a storm.
    pub storm_share: Share,
    /// How long after launch a node is not judged: hydration plus catch-up budget of its
    /// client profile ([`Desired::grace_for`]).
    pub grace: Duration,
    /// The published snapshot new nodes hydrate from; `None` syncs from genesis.
    pub snapshot: Option<SnapshotId>,
    pub network_mode: NetworkMode,
    /// The container port the load balancer routes to.
    pub container_port: u16,
}

impl Desired {
    /// The grace window of a client profile: time to hydrate its data dir plus time to
    /// catch up with the chain from the snapshot's height.
    pub fn grace_for(hydration: Duration, catch_up: Duration) -> Duration {
        hydration.saturating_add(catch_up)
    }

    /// The desired state a stored [`FleetConfig`] describes.
    pub fn from_config(
        config: &FleetConfig,
        grace: Duration,
        snapshot: Option<SnapshotId>,
        network_mode: NetworkMode,
        container_port: u16,
    ) -> Desired {
        Desired {
            zones: config.zones.clone(),
            serving_nodes: config.serving_nodes,
            healthy_floor: config.healthy_floor,
            storm_share: Share::from_percent(config.storm_percent),
            grace,
            snapshot,
            network_mode,
            container_port,
        }
    }
}

/// A spot interruption warning for an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpotWarning {
    pub instance_id: String,
    pub at: Timestamp,
}

/// What the fleet is, as read at the start of a reconcile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub nodes: Vec<NodeRecord>,
    /// The scheduler's tasks: live and recently stopped, with their stop reasons.
    pub tasks: Vec<TaskInfo>,
    /// Every registered target's health.
    pub targets: Vec<TargetHealth>,
    /// Recent launches that could not be placed.
    pub launch_failures: Vec<ObservedLaunchFailure>,
    /// Spot interruption warnings not yet acted on.
    pub spot_warnings: Vec<SpotWarning>,
}

/// Why an operator is being called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// Too much of the fleet is unhealthy at once; nothing was replaced.
    Storm,
    /// The replacement budget is spent; replacements wait for tokens.
    BudgetSpent,
    /// Every zone is in backoff; nothing can be placed.
    NoZoneAvailable,
}

/// One thing to do. Every action but an alert carries the human reason for the logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    Launch {
        node: NodeId,
        zone: Zone,
        role: Role,
        snapshot: Option<SnapshotId>,
        idempotency_key: String,
        reason: String,
    },
    RegisterTarget {
        node: NodeId,
        task: TaskId,
        target: Target,
        reason: String,
    },
    DeregisterTarget {
        node: NodeId,
        /// The task the target belonged to, where known.
        task: Option<TaskId>,
        target: Target,
        reason: String,
    },
    /// Stop `task`; with `replaced_by`, the node's record should now name that task.
    StopTask {
        node: NodeId,
        task: TaskId,
        replaced_by: Option<TaskId>,
        reason: String,
    },
    /// The node's record names `replaced`, which is gone, and should name `task`, its live
    /// replacement whose target is registered already: the record move that goes with the
    /// registration (or the stop) was not saved.
    AdoptTask {
        node: NodeId,
        task: TaskId,
        replaced: TaskId,
        reason: String,
    },
    Alert {
        kind: AlertKind,
        message: String,
    },
}

impl Action {
    /// The key the executor records before the side effect: deterministic from the action,
    /// so replanning the same situation gives the same key. Alerts have none (the alerting
    /// channel dedups them).
    pub fn idempotency_key(&self) -> Option<String> {
        match self {
            Action::Launch {
                idempotency_key, ..
            } => Some(idempotency_key.clone()),
            Action::RegisterTarget { task, target, .. } => {
                Some(format!("register/{task}/{target}"))
            }
            Action::DeregisterTarget {
                node, task, target, ..
            } => Some(match task {
                Some(task) => format!("deregister/{task}/{target}"),
                None => format!("deregister/{node}/{target}"),
            }),
            Action::StopTask { task, .. } => Some(format!("stop/{task}")),
            Action::AdoptTask { node, task, .. } => Some(format!("adopt/{node}/{task}")),
            Action::Alert { .. } => None,
        }
    }

    /// The human reason (an alert's message).
    pub fn reason(&self) -> &str {
        match self {
            Action::Launch { reason, .. }
            | Action::RegisterTarget { reason, .. }
            | Action::DeregisterTarget { reason, .. }
            | Action::StopTask { reason, .. }
            | Action::AdoptTask { reason, .. } => reason,
            Action::Alert { message, .. } => message,
        }
    }
}

/// What the planner concluded about a node where it did nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    InGrace,
    /// Health not known this time (not registered yet, draining, unused).
    Unknown,
    ReplacementPending,
    /// Something was due and deliberately not done (storm, budget, zones, floor).
    Withheld,
}

/// A decision that produced no action, with its reason, for the JSON logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub subject: String,
    pub verdict: Verdict,
    pub reason: String,
}

/// Counts for metrics (EMF: unhealthy count, storm-guard trips).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PlanSummary {
    pub nodes: usize,
    pub healthy: usize,
    pub unhealthy: usize,
    pub lost: usize,
    pub doomed: usize,
    pub in_grace: usize,
    pub storm: bool,
    pub replacements: usize,
    pub fills: usize,
}

/// A reconcile's outcome: actions in the order to perform them, decisions for the logs, and
/// the budget to persist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub decisions: Vec<Decision>,
    pub budget: ReplacementBudget,
    pub summary: PlanSummary,
}

impl Plan {
    pub fn launches(&self) -> impl Iterator<Item = &Action> {
        self.actions
            .iter()
            .filter(|action| matches!(action, Action::Launch { .. }))
    }

    pub fn alerts(&self) -> impl Iterator<Item = AlertKind> + '_ {
        self.actions.iter().filter_map(|action| match action {
            Action::Alert { kind, .. } => Some(*kind),
            _ => None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Condition {
    InGrace,
    Healthy,
    Unknown(String),
    Unhealthy(String),
    Lost(String),
    Doomed(String),
}

impl Condition {
    /// Replacement order: doomed first (it has two minutes), then lost, then unhealthy.
    fn urgency(&self) -> u8 {
        match self {
            Condition::Doomed(_) => 0,
            Condition::Lost(_) => 1,
            Condition::Unhealthy(_) => 2,
            Condition::InGrace | Condition::Healthy | Condition::Unknown(_) => 3,
        }
    }
}

#[derive(Debug)]
struct NodeView<'a> {
    id: &'a NodeId,
    zone: &'a Zone,
    current: Option<&'a TaskInfo>,
    /// The task the record names, found or not.
    recorded_task: Option<&'a TaskId>,
    recorded_target: Option<&'a Target>,
    replacement: Option<&'a TaskInfo>,
    extra_replacements: Vec<&'a TaskInfo>,
    condition: Condition,
}

fn is_live(task: &TaskInfo) -> bool {
    matches!(task.last_status, TaskStatus::Pending | TaskStatus::Running)
        && task.desired_status != TaskStatus::Stopped
}

/// Oldest started first; a task not started yet is the newest.
fn launch_order(task: &TaskInfo) -> (u64, &TaskId) {
    (
        task.started_at.map_or(u64::MAX, Timestamp::as_millis),
        &task.id,
    )
}

/// How many nodes count in each zone before any launch (rule 1): a node with a replacement
/// where the replacement runs, a healthy, in-grace or unknown node where it runs; a node to
/// be replaced nowhere (its launch is counted when its zone is picked). `skip` leaves one
/// node out, as if it were to be replaced.
fn zone_counts<'a>(nodes: &[NodeView<'a>], skip: Option<&NodeId>) -> BTreeMap<&'a Zone, usize> {
    let mut counts: BTreeMap<&'a Zone, usize> = BTreeMap::new();
    for node in nodes.iter().filter(|n| Some(n.id) != skip) {
        let zone = match (node.replacement, &node.condition) {
            (Some(replacement), _) => replacement.zone.as_ref().unwrap_or(node.zone),
            (None, Condition::Healthy | Condition::InGrace | Condition::Unknown(_)) => node.zone,
            (None, Condition::Unhealthy(_) | Condition::Lost(_) | Condition::Doomed(_)) => {
                continue;
            }
        };
        *counts.entry(zone).or_default() += 1;
    }
    counts
}

struct Planner<'a> {
    desired: &'a Desired,
    observed: &'a Observed,
    now: Timestamp,
    health: HashMap<&'a Target, &'a TargetHealth>,
    budget: ReplacementBudget,
    actions: Vec<Action>,
    decisions: Vec<Decision>,
    deregistered: BTreeSet<Target>,
    summary: PlanSummary,
}

/// Plans one reconcile. See the module doc for the rules.
pub fn plan(
    desired: &Desired,
    observed: &Observed,
    now: Timestamp,
    budget: &ReplacementBudget,
) -> Plan {
    let mut planner = Planner::new(desired, observed, now, budget);
    planner.run();
    Plan {
        actions: planner.actions,
        decisions: planner.decisions,
        budget: planner.budget,
        summary: planner.summary,
    }
}

impl<'a> Planner<'a> {
    /// A planner over `observed` with `budget` brought up to `now`: refilled, and zone
    /// backoff fed with the observed placement failures and stopped tasks.
    fn new(
        desired: &'a Desired,
        observed: &'a Observed,
        now: Timestamp,
        budget: &ReplacementBudget,
    ) -> Planner<'a> {
        let mut budget = budget.clone();
        budget.advance(now);
        budget
            .zone_backoff
            .observe(&observed.launch_failures, &observed.tasks, now);
        Planner {
            desired,
            observed,
            now,
            health: observed.targets.iter().map(|h| (&h.target, h)).collect(),
            budget,
            actions: Vec::new(),
            decisions: Vec::new(),
            deregistered: BTreeSet::new(),
            summary: PlanSummary::default(),
        }
    }

    fn target_of(&self, task: &TaskInfo) -> Option<Target> {
        target_for_task(task, self.desired.network_mode, self.desired.container_port)
    }

    fn target_state(&self, task: &TaskInfo) -> Option<TargetState> {
        let target = self.target_of(task)?;
        self.health.get(&target).map(|h| h.state)
    }

    fn is_healthy(&self, task: &TaskInfo) -> bool {
        is_live(task) && self.target_state(task) == Some(TargetState::Healthy)
    }

    fn decide(&mut self, subject: impl Into<String>, verdict: Verdict, reason: impl Into<String>) {
        self.decisions.push(Decision {
            subject: subject.into(),
            verdict,
            reason: reason.into(),
        });
    }

    fn run(&mut self) {
        let observed = self.observed;
        let nodes = self.observe_nodes();
        self.summary.nodes = nodes.len();
        let mut healthy_tasks = 0usize;
        let mut zone_counts = zone_counts(&nodes, None);
        let mut stops: Vec<(&NodeView<'_>, &TaskInfo, Option<&TaskInfo>, String)> = Vec::new();
        let mut candidates: Vec<&NodeView<'_>> = Vec::new();
        let mut adoptions: Vec<Action> = Vec::new();

        for node in &nodes {
            for task in node
                .current
                .into_iter()
                .chain(node.replacement)
                .chain(node.extra_replacements.iter().copied())
            {
                if self.is_healthy(task) {
                    healthy_tasks += 1;
                }
            }
            match &node.condition {
                Condition::Healthy => self.summary.healthy += 1,
                Condition::InGrace => self.summary.in_grace += 1,
                Condition::Unhealthy(_) => self.summary.unhealthy += 1,
                Condition::Lost(_) => self.summary.lost += 1,
                Condition::Doomed(_) => self.summary.doomed += 1,
                Condition::Unknown(_) => {}
            }
            if let Condition::Doomed(reason) = &node.condition
                && let Some(target) = node.current.and_then(|t| self.target_of(t))
            {
                let task = node.current.map(|t| t.id.clone());
                self.deregister(node.id, task, target, reason.clone());
            }
            for extra in &node.extra_replacements {
                stops.push((node, extra, None, "duplicate replacement task".to_owned()));
            }
            if let Some(replacement) = node.replacement {
                if let (None, Some(gone)) =
                    (node.current.filter(|t| is_live(t)), node.recorded_task)
                    && self.target_state(replacement).is_some()
                {
                    adoptions.push(Action::AdoptTask {
                        node: node.id.clone(),
                        task: replacement.id.clone(),
                        replaced: gone.clone(),
                        reason: format!(
                            "the record names {gone}, which is gone; replacement {} is registered",
                            replacement.id
                        ),
                    });
                }
                if self.is_healthy(replacement) {
                    if let Some(current) = node.current.filter(|t| is_live(t)) {
                        stops.push((
                            node,
                            current,
                            Some(replacement),
                            format!("replaced by healthy task {}", replacement.id),
                        ));
                    }
                } else {
                    self.decide(
                        node.id.as_str(),
                        Verdict::ReplacementPending,
                        format!("replacement task {} is not healthy yet", replacement.id),
                    );
                }
                continue;
            }
            match &node.condition {
                Condition::Healthy => {}
                Condition::InGrace => {
                    self.decide(
                        node.id.as_str(),
                        Verdict::InGrace,
                        format!("launched less than {}s ago", self.desired.grace.as_secs()),
                    );
                }
                Condition::Unknown(reason) => {
                    self.decide(node.id.as_str(), Verdict::Unknown, reason.clone());
                }
                Condition::Unhealthy(_) | Condition::Lost(_) | Condition::Doomed(_) => {
                    candidates.push(node);
                }
            }
        }

        self.register_and_deregister(&nodes, observed);

        let failing = self.summary.unhealthy + self.summary.lost;
        let whole = nodes.len().max(self.desired.serving_nodes as usize);
        let storm = self.desired.storm_share.is_exceeded_by(failing, whole);
        self.summary.storm = storm;
        if storm {
            let message = format!(
                "storm guard: {failing} of {whole} serving nodes are unhealthy or lost, more \
                 than {}/{} of the fleet; replacing nothing",
                self.desired.storm_share.numerator, self.desired.storm_share.denominator
            );
            for node in &candidates {
                self.decide(node.id.as_str(), Verdict::Withheld, "storm guard");
            }
            self.actions.push(Action::Alert {
                kind: AlertKind::Storm,
                message,
            });
        } else {
            candidates
                .sort_by(|a, b| (a.condition.urgency(), a.id).cmp(&(b.condition.urgency(), b.id)));
            self.replace(&candidates, &mut zone_counts);
            self.fill(&nodes, &mut zone_counts);
        }

        self.stop(stops, healthy_tasks);
        self.actions.extend(adoptions);
    }

    /// Builds the node views, sorted by node id.
    fn observe_nodes(&self) -> Vec<NodeView<'a>> {
        let observed = self.observed;
        let tasks_by_id: HashMap<&TaskId, &TaskInfo> =
            observed.tasks.iter().map(|t| (&t.id, t)).collect();
        let mut tagged: BTreeMap<&NodeId, Vec<&TaskInfo>> = BTreeMap::new();
        for task in &observed.tasks {
            if let Some(node) = &task.node
                && task.role != Some(Role::Updater)
                && is_live(task)
            {
                tagged.entry(node).or_default().push(task);
            }
        }
        for tasks in tagged.values_mut() {
            tasks.sort_by(|a, b| launch_order(a).cmp(&launch_order(b)));
        }
        let doomed: HashMap<&str, &SpotWarning> = observed
            .spot_warnings
            .iter()
            .map(|w| (w.instance_id.as_str(), w))
            .collect();
        let recorded: HashSet<&NodeId> = observed.nodes.iter().map(|n| &n.id).collect();

        let mut records: Vec<&NodeRecord> = observed
            .nodes
            .iter()
            .filter(|n| n.role == Role::Serving && n.state != NodeState::Stopped)
            .collect();
        records.sort_by(|a, b| a.id.cmp(&b.id));
        records.dedup_by(|a, b| a.id == b.id);

        let mut views = Vec::with_capacity(records.len());
        for record in records {
            let live_tagged = tagged.get(&record.id).map(Vec::as_slice).unwrap_or(&[]);
            let current = match &record.task {
                Some(id) => tasks_by_id.get(id).copied(),
                None => live_tagged.first().copied(),
            };
            // A node counts where its task runs: a replacement placed in another zone (its
            // own was out of capacity) is adopted by a record that still names the old zone.
            let zone = current
                .filter(|t| is_live(t))
                .and_then(|t| t.zone.as_ref())
                .unwrap_or(&record.zone);
            views.push(self.view(
                &record.id,
                zone,
                record.created_at,
                current,
                record.task.as_ref(),
                record.target.as_ref(),
                live_tagged,
                &doomed,
            ));
        }
        for (id, live_tagged) in &tagged {
            if recorded.contains(id) {
                continue;
            }
            let Some(first) = live_tagged.first() else {
                continue;
            };
            let Some(zone) = first.zone.as_ref() else {
                continue;
            };
            let created_at = first.started_at.unwrap_or(self.now);
            views.push(self.view(
                id,
                zone,
                created_at,
                Some(first),
                None,
                None,
                live_tagged,
                &doomed,
            ));
        }
        views.sort_by(|a, b| a.id.cmp(b.id));
        views
    }

    #[allow(clippy::too_many_arguments)]
    fn view(
        &self,
        id: &'a NodeId,
        zone: &'a Zone,
        created_at: Timestamp,
        current: Option<&'a TaskInfo>,
        recorded_task: Option<&'a TaskId>,
        recorded_target: Option<&'a Target>,
        live_tagged: &[&'a TaskInfo],
        doomed: &HashMap<&str, &SpotWarning>,
    ) -> NodeView<'a> {
        let current_id = current.map(|t| &t.id).or(recorded_task);
        let mut others: Vec<&'a TaskInfo> = live_tagged
            .iter()
            .copied()
            .filter(|t| Some(&t.id) != current_id)
            .collect();
        // The replacement to keep: a healthy one if any, else the newest.
        let keep = others
            .iter()
            .position(|t| self.is_healthy(t))
            .or(others.len().checked_sub(1));
        let replacement = keep.map(|index| others.remove(index));

        let condition = match current.filter(|t| is_live(t)) {
            None => match (current, recorded_task) {
                (None, None) if self.now.since(created_at) < self.desired.grace => {
                    Condition::InGrace
                }
                (None, None) => Condition::Lost("no task was started within grace".to_owned()),
                (None, Some(task)) => Condition::Lost(format!("task {task} is gone")),
                (Some(task), _) => Condition::Lost(format!(
                    "task {} stopped: {}",
                    task.id,
                    task.stop_reason.as_deref().unwrap_or("no reason given")
                )),
            },
            Some(task) => {
                let launched_at = task.started_at.unwrap_or(created_at);
                let warning = task
                    .instance_id
                    .as_deref()
                    .and_then(|instance| doomed.get(instance));
                if let Some(warning) = warning {
                    Condition::Doomed(format!(
                        "spot interruption warning for {} at {}",
                        warning.instance_id, warning.at
                    ))
                } else if self.now.since(launched_at) < self.desired.grace {
                    Condition::InGrace
                } else {
                    match self.target_of(task) {
                        None => Condition::Unhealthy(
                            "no reachable target after the grace window".to_owned(),
                        ),
                        Some(target) => match self.health.get(&target) {
                            None => Condition::Unknown(format!("target {target} not registered")),
                            Some(health) => match health.state {
                                TargetState::Healthy => Condition::Healthy,
                                TargetState::Unhealthy | TargetState::Initial => {
                                    Condition::Unhealthy(format!(
                                        "target {target} is {:?} past grace: {}",
                                        health.state,
                                        health.reason.as_deref().unwrap_or("no reason given")
                                    ))
                                }
                                other => Condition::Unknown(format!(
                                    "target {target} is {other:?}: not judged"
                                )),
                            },
                        },
                    }
                }
            }
        };
        NodeView {
            id,
            zone,
            current,
            recorded_task,
            recorded_target,
            replacement,
            extra_replacements: others,
            condition,
        }
    }

    fn deregister(&mut self, node: &NodeId, task: Option<TaskId>, target: Target, reason: String) {
        let registered = self
            .health
            .get(&target)
            .is_some_and(|h| h.state != TargetState::Draining);
        if registered && self.deregistered.insert(target.clone()) {
            self.actions.push(Action::DeregisterTarget {
                node: node.clone(),
                task,
                target,
                reason,
            });
        }
    }

    /// Rule 5: targets of gone tasks out, targets of new live tasks in.
    fn register_and_deregister(&mut self, nodes: &[NodeView<'a>], observed: &'a Observed) {
        // Every live task's target is protected from deregistration; only current (not
        // doomed) and replacement tasks are registered: extras are about to be stopped.
        let mut live_targets: BTreeSet<Target> = BTreeSet::new();
        let mut to_register: BTreeMap<Target, (&NodeId, &TaskInfo)> = BTreeMap::new();
        let mut owners: HashMap<&TaskId, &NodeId> = HashMap::new();
        for node in nodes {
            if let Some(task) = node.recorded_task {
                owners.insert(task, node.id);
            }
            let doomed = matches!(node.condition, Condition::Doomed(_));
            let current = node.current.filter(|t| is_live(t));
            for task in current
                .into_iter()
                .chain(node.replacement)
                .chain(node.extra_replacements.iter().copied())
            {
                if let Some(target) = self.target_of(task) {
                    live_targets.insert(target);
                }
            }
            for task in current
                .filter(|_| !doomed)
                .into_iter()
                .chain(node.replacement)
            {
                if let Some(target) = self.target_of(task) {
                    to_register.entry(target).or_insert((node.id, task));
                }
            }
        }
        for task in &observed.tasks {
            if is_live(task) || task.role == Some(Role::Updater) {
                continue;
            }
            let Some(node) = task.node.as_ref().or_else(|| owners.get(&task.id).copied()) else {
                continue;
            };
            if let Some(target) = self.target_of(task)
                && !live_targets.contains(&target)
            {
                let reason = format!("task {} is {:?}", task.id, task.last_status);
                self.deregister(node, Some(task.id.clone()), target, reason);
            }
        }
        for node in nodes {
            let gone = node.current.is_none_or(|t| !is_live(t));
            if gone
                && let Some(target) = node.recorded_target
                && !live_targets.contains(target)
            {
                let task = node.recorded_task.cloned();
                let reason = format!("node {}'s task is gone", node.id);
                self.deregister(node.id, task, target.clone(), reason);
            }
        }
        for (target, (node, task)) in to_register {
            if !self.health.contains_key(&target) {
                self.actions.push(Action::RegisterTarget {
                    node: node.clone(),
                    task: task.id.clone(),
                    target,
                    reason: format!("task {} has a target the load balancer lacks", task.id),
                });
            }
        }
    }

    /// The zone for the next launch: the available zone furthest below its even share,
    /// then the emptier one, then the earlier one.
    fn pick_zone(&self, counts: &BTreeMap<&Zone, usize>) -> Option<Zone> {
        let zones = &self.desired.zones;
        let serving = self.desired.serving_nodes as usize;
        let (base, extra) = match zones.len() {
            0 => return None,
            len => (serving / len, serving % len),
        };
        zones
            .iter()
            .enumerate()
            .filter(|(_, zone)| !self.budget.zone_backoff.is_avoided(zone, self.now))
            .map(|(index, zone)| {
                let share = base + usize::from(index < extra);
                let count = counts.get(zone).copied().unwrap_or(0);
                let deficit = share as i64 - count as i64;
                (
                    deficit,
                    std::cmp::Reverse(count),
                    std::cmp::Reverse(index),
                    zone,
                )
            })
            .max()
            .map(|(_, _, _, zone)| zone.clone())
    }

    fn no_zone_alert(&mut self) {
        let message = format!(
            "every zone is in backoff after capacity failures: {}",
            self.budget
                .zone_backoff
                .zones
                .iter()
                .map(|(zone, f)| format!("{zone} until {} ({})", f.avoid_until, f.last_reason))
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.actions.push(Action::Alert {
            kind: AlertKind::NoZoneAvailable,
            message,
        });
    }

    /// Rules 1 and 2: one launch per candidate, budget and zones permitting.
    fn replace(&mut self, candidates: &[&NodeView<'a>], counts: &mut BTreeMap<&'a Zone, usize>) {
        for (index, node) in candidates.iter().enumerate() {
            let Some(zone) = self.pick_zone(counts) else {
                self.no_zone_alert();
                for node in &candidates[index..] {
                    self.decide(node.id.as_str(), Verdict::Withheld, "no zone available");
                }
                return;
            };
            let key = self.replacement_key(node, &zone);
            if self.budget.pay(&key, self.now) == Payment::Exhausted {
                let waiting = candidates.len() - index;
                self.actions.push(Action::Alert {
                    kind: AlertKind::BudgetSpent,
                    message: format!(
                        "replacement budget of {} per hour is spent; {waiting} replacements wait",
                        self.budget.bucket.capacity
                    ),
                });
                for node in &candidates[index..] {
                    self.decide(
                        node.id.as_str(),
                        Verdict::Withheld,
                        "replacement budget spent",
                    );
                }
                return;
            }
            let reason = match &node.condition {
                Condition::Lost(why) | Condition::Unhealthy(why) | Condition::Doomed(why) => {
                    why.clone()
                }
                other => format!("{other:?}"),
            };
            if let Some(counted) = self.desired.zones.iter().find(|z| **z == zone) {
                *counts.entry(counted).or_default() += 1;
            }
            self.summary.replacements += 1;
            self.actions.push(Action::Launch {
                node: node.id.clone(),
                zone,
                role: Role::Serving,
                snapshot: self.desired.snapshot.clone(),
                idempotency_key: key,
                reason: format!("replace {}: {reason}", node.id),
            });
        }
    }

    /// The idempotency key of `node`'s replacement in `zone` (see the module doc).
    fn replacement_key(&self, node: &NodeView<'_>, zone: &Zone) -> String {
        let replaced = node.current.map(|t| &t.id).or(node.recorded_task);
        let mut key = format!(
            "{REPLACEMENT_KEY_PREFIX}{}/{}/{zone}",
            node.id,
            replaced.map_or("none", TaskId::as_str)
        );
        let dead = self.dead_replacements(node.id, replaced);
        if dead > 0 {
            key.push_str(&format!("/retry-{dead}"));
        }
        key
    }

    /// Stopped tasks tagged with `node` other than `replaced`: replacements that died
    /// before they were adopted.
    fn dead_replacements(&self, node: &NodeId, replaced: Option<&TaskId>) -> usize {
        self.observed
            .tasks
            .iter()
            .filter(|t| t.node.as_ref() == Some(node) && t.role != Some(Role::Updater))
            .filter(|t| !is_live(t) && Some(&t.id) != replaced)
            .count()
    }

    /// Rule 6: launch new nodes up to the desired count.
    fn fill(&mut self, nodes: &[NodeView<'a>], counts: &mut BTreeMap<&'a Zone, usize>) {
        let deficit = (self.desired.serving_nodes as usize).saturating_sub(nodes.len());
        if deficit == 0 {
            return;
        }
        let mut taken: HashSet<String> = self
            .observed
            .nodes
            .iter()
            .map(|n| n.id.0.clone())
            .chain(
                self.observed
                    .tasks
                    .iter()
                    .filter_map(|t| t.node.as_ref().map(|n| n.0.clone())),
            )
            .collect();
        for _ in 0..deficit {
            let Some(zone) = self.pick_zone(counts) else {
                self.no_zone_alert();
                return;
            };
            let id = (1u64..)
                .map(|n| format!("{zone}-{n}"))
                .find(|id| !taken.contains(id))
                .unwrap_or_default();
            taken.insert(id.clone());
            if let Some(counted) = self.desired.zones.iter().find(|z| **z == zone) {
                *counts.entry(counted).or_default() += 1;
            }
            self.summary.fills += 1;
            self.actions.push(Action::Launch {
                node: NodeId::new(id.clone()),
                zone,
                role: Role::Serving,
                snapshot: self.desired.snapshot.clone(),
                idempotency_key: format!("launch/{id}"),
                reason: format!(
                    "fleet has {} of {} serving nodes",
                    nodes.len(),
                    self.desired.serving_nodes
                ),
            });
        }
    }

    /// Rule 3: stops, never below the healthy floor.
    fn stop(
        &mut self,
        stops: Vec<(&NodeView<'_>, &TaskInfo, Option<&TaskInfo>, String)>,
        healthy_tasks: usize,
    ) {
        let floor = (self.desired.healthy_floor as usize).max(1);
        let mut healthy_left = healthy_tasks;
        for (node, task, replaced_by, reason) in stops {
            if self.is_healthy(task) {
                if healthy_left <= floor {
                    self.decide(
                        task.id.as_str(),
                        Verdict::Withheld,
                        format!("stopping it would leave fewer than {floor} healthy tasks"),
                    );
                    continue;
                }
                healthy_left -= 1;
            }
            if let Some(target) = self.target_of(task) {
                self.deregister(node.id, Some(task.id.clone()), target, reason.clone());
            }
            self.actions.push(Action::StopTask {
                node: node.id.clone(),
                task: task.id.clone(),
                replaced_by: replaced_by.map(|t| t.id.clone()),
                reason,
            });
        }
    }
}
