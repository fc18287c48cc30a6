//! The health reactor as a service: what one invocation does, the same in the Lambda and in
//! `nodefleet up`. Every [`Trigger`] wakes one level-triggered reconcile of the whole fleet:
//!
//! 1. read the fleet's [`FleetConfig`] (seeded from the settings the first time), the newest
//!    published snapshot, and the reactor's [`ReactorMemory`] (the replacement budget, recent
//!    placement failures, and spot warnings whose instance still runs a task) from the state
//!    store;
//! 2. add the trigger's hint where it carries one the observation cannot show (a spot
//!    interruption warning names an instance that still looks healthy);
//! 3. [`reconcile`]: observe through the ports, plan, execute under idempotency keys;
//! 4. save the memory with a versioned write. Two invocations that reconciled at once both
//!    try; the loser re-reads and merges its replacement payments and failures into the
//!    stored memory ([`ReactorMemory::merge_into`]), so concurrent invocations never spend
//!    less of the budget than they launched.
//!
//! [`forgive_zone`] is the one write to the memory from outside an invocation: an operator
//! who knows a zone's capacity is back ends its backoff.
//!
//! A task event of another cluster or task group is not the fleet's and reconciles nothing
//! ([`FleetScope::admits`]). An event that does not parse still reconciles: the reactor is
//! level-triggered, so a bad hint costs nothing but the hint.
//!
//! # Error policy
//!
//! [`ReactorError`] is what stops an invocation before or while observing (the state store or
//! an API unreachable, no fleet config): nothing was done and the invocation fails so that the
//! Lambda's retry or the next tick tries again. Failures of single actions are not errors:
//! they are in the run's report and the next reconcile retries them. A memory that cannot be
//! saved after [`MEMORY_SAVE_ATTEMPTS`] is a warning: the actions already happened under their
//! keys, and the worst a lost memory costs is a budget refunded early.

use std::time::Duration;

use nodefleet_ports::{
    ControlState, FleetConfig, NetworkMode, PlacementFailure, SnapshotId, SnapshotState,
    StateError, StateStore, Timestamp, Version, Zone,
};
use serde::{Deserialize, Serialize};

use crate::planner::{
    Desired, ObservedLaunchFailure, ReplacementBudget, SpotWarning, ZONE_FAILURE_MEMORY,
};
use crate::reconcile::{ObserveError, Ports, ReconcileMemory, ReconcileOutcome, reconcile};
use crate::triggers::{FleetScope, Trigger, TriggerError};

/// The name of the reactor's [`ControlState`] record.
pub const MEMORY_NAME: &str = "reactor";

/// Saves of the memory tried per invocation: one conflict is a concurrent invocation; three
/// in a row means a burst, and the next invocation merges again.
pub const MEMORY_SAVE_ATTEMPTS: usize = 3;

/// What an invocation needs besides the ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactorSettings {
    /// Who claims idempotency keys: the Lambda's request id, or the local process.
    pub owner: String,
    /// The fleet config to store when none is stored yet (first deployment).
    pub seed_config: Option<FleetConfig>,
    /// How long a new node is not judged (hydration plus catch-up).
    pub grace: Duration,
    pub network_mode: NetworkMode,
    /// The container port the load balancer routes to.
    pub container_port: u16,
    pub replacements_per_hour: u32,
    /// Which task events are the fleet's; `None` admits every event.
    pub scope: Option<FleetScope>,
}

/// A placement failure as stored in the memory (the reason as ECS wrote it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredLaunchFailure {
    zone: Zone,
    at: Timestamp,
    reason: String,
}

/// What the reactor carries between invocations, stored as the [`MEMORY_NAME`] control state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReactorMemory {
    pub budget: ReplacementBudget,
    launch_failures: Vec<StoredLaunchFailure>,
    pub spot_warnings: Vec<SpotWarning>,
}

impl ReactorMemory {
    /// A full budget of `replacements_per_hour`, nothing failed, nothing warned.
    pub fn new(replacements_per_hour: u32, now: Timestamp) -> ReactorMemory {
        ReactorMemory {
            budget: ReplacementBudget::per_hour(replacements_per_hour, now),
            launch_failures: Vec::new(),
            spot_warnings: Vec::new(),
        }
    }

    pub fn launch_failures(&self) -> Vec<ObservedLaunchFailure> {
        self.launch_failures
            .iter()
            .map(|f| ObservedLaunchFailure {
                zone: f.zone.clone(),
                at: f.at,
                reason: PlacementFailure::parse(&f.reason),
            })
            .collect()
    }

    fn set_launch_failures(&mut self, failures: &[ObservedLaunchFailure]) {
        self.launch_failures = failures
            .iter()
            .map(|f| StoredLaunchFailure {
                zone: f.zone.clone(),
                at: f.at,
                reason: f.reason.as_reason().to_owned(),
            })
            .collect();
    }

    /// The reconcile's view of this memory.
    pub fn reconcile_memory(&self) -> ReconcileMemory {
        ReconcileMemory {
            budget: self.budget.clone(),
            launch_failures: self.launch_failures(),
            spot_warnings: self.spot_warnings.clone(),
        }
    }

    /// Adds a warning (once per instance; the reconcile then keeps it while its instance
    /// runs a live task of the fleet) and forgets failures older than [`ZONE_FAILURE_MEMORY`].
    pub fn note(&mut self, warning: Option<SpotWarning>, now: Timestamp) {
        if let Some(warning) = warning
            && !self
                .spot_warnings
                .iter()
                .any(|w| w.instance_id == warning.instance_id)
        {
            self.spot_warnings.push(warning);
        }
        self.launch_failures
            .retain(|f| now.since(f.at) < ZONE_FAILURE_MEMORY);
    }

    /// Sets the bucket's capacity to the configured one (an operator changed it), keeping the
    /// tokens already spent spent.
    fn resize_budget(&mut self, replacements_per_hour: u32, now: Timestamp) {
        let bucket = &self.budget.bucket;
        if bucket.capacity == replacements_per_hour {
            return;
        }
        let spent = bucket.capacity.saturating_sub(bucket.tokens);
        let mut resized = ReplacementBudget::per_hour(replacements_per_hour, now).bucket;
        resized.tokens = replacements_per_hour.saturating_sub(spent);
        self.budget.bucket = resized;
    }

    /// Folds what this invocation added (`self`, which started as `before`) into `stored`,
    /// the memory a concurrent invocation saved meanwhile: replacement keys paid here and not
    /// there cost a token there too; failures and warnings are united.
    pub fn merge_into(&self, before: &ReactorMemory, stored: &mut ReactorMemory, now: Timestamp) {
        for (key, paid_at) in &self.budget.paid_keys {
            if before.budget.paid_keys.contains_key(key)
                || stored.budget.paid_keys.contains_key(key)
            {
                continue;
            }
            // An empty bucket there still records the payment: the launch happened.
            let _ = stored.budget.bucket.try_take();
            stored.budget.paid_keys.insert(key.clone(), *paid_at);
        }
        for failure in &self.launch_failures {
            if !stored.launch_failures.contains(failure) {
                stored.launch_failures.push(failure.clone());
            }
        }
        stored
            .budget
            .zone_backoff
            .observe(&self.launch_failures(), &[], now);
        for warning in &self.spot_warnings {
            if !stored
                .spot_warnings
                .iter()
                .any(|w| w.instance_id == warning.instance_id)
            {
                stored.spot_warnings.push(warning.clone());
            }
        }
    }
}

/// Why an invocation did nothing. See the module doc.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReactorError {
    #[error("no fleet config is stored and none was given to seed it")]
    NoFleetConfig,
    #[error("could not read the reactor's state: {0}")]
    State(#[from] StateError),
    #[error("reactor memory is unreadable: {0}")]
    CorruptMemory(String),
    #[error(transparent)]
    Observe(#[from] ObserveError),
}

impl ReactorError {
    /// True if the same invocation may succeed when retried.
    pub fn is_retryable(&self) -> bool {
        match self {
            ReactorError::State(error) => error.is_retryable() || error.is_conflict(),
            ReactorError::Observe(ObserveError::State(error)) => error.is_retryable(),
            ReactorError::Observe(ObserveError::Scheduler(error)) => error.is_retryable(),
            ReactorError::Observe(ObserveError::Registry(error)) => error.is_retryable(),
            ReactorError::NoFleetConfig | ReactorError::CorruptMemory(_) => false,
        }
    }
}

/// What one invocation did.
#[derive(Debug, Clone)]
pub enum ReactorRun {
    /// The trigger was another fleet's; nothing was read or done.
    NotOurs {
        trigger: String,
    },
    Reconciled(Box<Reconciled>),
}

/// A reconcile that ran.
#[derive(Debug, Clone)]
pub struct Reconciled {
    /// The trigger's kind, for the logs.
    pub trigger: String,
    pub desired: Desired,
    pub outcome: ReconcileOutcome,
    /// Problems that did not stop the run (a memory not saved).
    pub warnings: Vec<String>,
}

/// The kind of a trigger, for logs and metrics.
pub fn trigger_kind(trigger: &Result<Trigger, TriggerError>) -> &'static str {
    match trigger {
        Ok(Trigger::AlarmStateChange(_)) => "alarm",
        Ok(Trigger::TaskStopped(_)) => "task_stopped",
        Ok(Trigger::TaskChange(_)) => "task_change",
        Ok(Trigger::SpotInterruption(_)) => "spot_interruption",
        Ok(Trigger::Schedule { .. }) => "schedule",
        Ok(Trigger::Unknown { .. }) => "unknown",
        Err(_) => "unreadable",
    }
}

/// One invocation: see the module doc. `trigger` is the parsed event, or why it did not
/// parse (it reconciles all the same).
pub async fn run(
    ports: Ports<'_>,
    settings: &ReactorSettings,
    trigger: &Result<Trigger, TriggerError>,
    now: Timestamp,
) -> Result<ReactorRun, ReactorError> {
    let kind = trigger_kind(trigger).to_owned();
    match trigger {
        Ok(trigger) if settings.scope.as_ref().is_some_and(|s| !s.admits(trigger)) => {
            tracing::info!(trigger = kind, "not the fleet's event: nothing to do");
            return Ok(ReactorRun::NotOurs { trigger: kind });
        }
        Err(error) => tracing::warn!(%error, "unreadable event; reconciling anyway"),
        Ok(_) => {}
    }
    let desired = load_desired(ports.state, settings).await?;
    let (stored, mut memory) = load_memory(ports.state, settings, now).await?;
    let before = memory.clone();
    memory.note(spot_warning(trigger, now), now);
    let outcome = reconcile(
        ports,
        &desired,
        &memory.reconcile_memory(),
        &[],
        &settings.owner,
        now,
    )
    .await?;
    memory.budget = outcome.memory.budget.clone();
    memory.set_launch_failures(&outcome.memory.launch_failures);
    memory.spot_warnings = outcome.memory.spot_warnings.clone();
    let mut warnings = Vec::new();
    if let Err(error) = save_memory(ports.state, stored, &before, &memory, now).await {
        tracing::warn!(%error, "reactor memory not saved");
        warnings.push(format!("reactor memory not saved: {error}"));
    }
    Ok(ReactorRun::Reconciled(Box::new(Reconciled {
        trigger: kind,
        desired,
        outcome,
        warnings,
    })))
}

/// What the fleet should be, as a reconcile sees it: the stored [`FleetConfig`] (seeded
/// from the settings the first time), with the newest published snapshot for new nodes and
/// the settings' grace, network mode and port. Operator tools plan with the same.
pub async fn load_desired(
    state: &dyn StateStore,
    settings: &ReactorSettings,
) -> Result<Desired, ReactorError> {
    let config = load_config(state, settings).await?;
    let snapshot = latest_published(state).await?;
    Ok(Desired::from_config(
        &config,
        settings.grace,
        snapshot,
        settings.network_mode,
        settings.container_port,
    ))
}

/// The reactor's stored memory (a fresh one when none is stored), as the next invocation
/// would start from it: for operator tools that plan with its budget and zone backoff, and
/// never save it.
pub async fn read_memory(
    state: &dyn StateStore,
    settings: &ReactorSettings,
    now: Timestamp,
) -> Result<ReactorMemory, ReactorError> {
    load_memory(state, settings, now)
        .await
        .map(|(_, memory)| memory)
}

/// Forgives `zone` in the stored zone backoff, as the backoff does itself when a task starts
/// there after its last failure: for an operator who knows the zone's capacity is back (the
/// local fleet's `chaos restore-zone`), so its next launches go there again at once instead
/// of after the backoff. The failures stay recorded (they are not counted twice). A
/// versioned read-modify-write of the memory, retried [`MEMORY_SAVE_ATTEMPTS`] times
/// against concurrent invocations; `false` when the zone was not in backoff (nothing saved).
pub async fn forgive_zone(
    state: &dyn StateStore,
    zone: &Zone,
    now: Timestamp,
) -> Result<bool, ReactorError> {
    let mut expected = Version::NEW;
    for _ in 0..MEMORY_SAVE_ATTEMPTS {
        let Some(stored) = state.get_control_state(MEMORY_NAME).await? else {
            return Ok(false);
        };
        expected = stored.version;
        let mut memory = parse_memory(&stored)?;
        let Some(failures) = memory.budget.zone_backoff.zones.get_mut(zone) else {
            return Ok(false);
        };
        if failures.consecutive == 0 && failures.avoid_until <= now {
            return Ok(false);
        }
        failures.consecutive = 0;
        failures.avoid_until = Timestamp::EPOCH;
        let body = serde_json::to_string(&memory)
            .map_err(|e| ReactorError::CorruptMemory(e.to_string()))?;
        let record = ControlState {
            body,
            updated_at: now,
            ..stored
        };
        match state.save_control_state(&record).await {
            Ok(_) => return Ok(true),
            Err(StateError::Conflict { .. }) => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Err(ReactorError::State(StateError::Conflict {
        entity: nodefleet_ports::Entity::ControlState,
        key: MEMORY_NAME.to_owned(),
        expected,
    }))
}

/// The warning a spot trigger carries, dated by the event (or `now` without a time).
fn spot_warning(trigger: &Result<Trigger, TriggerError>, now: Timestamp) -> Option<SpotWarning> {
    match trigger {
        Ok(Trigger::SpotInterruption(spot)) => Some(SpotWarning {
            instance_id: spot.instance_id.clone(),
            at: spot.warned_at.unwrap_or(now),
        }),
        _ => None,
    }
}

/// The stored config, or the seed saved as the first one.
async fn load_config(
    state: &dyn StateStore,
    settings: &ReactorSettings,
) -> Result<FleetConfig, ReactorError> {
    if let Some(config) = state.get_config().await? {
        return Ok(config);
    }
    let Some(seed) = &settings.seed_config else {
        return Err(ReactorError::NoFleetConfig);
    };
    let seed = FleetConfig {
        version: Version::NEW,
        ..seed.clone()
    };
    match state.save_config(&seed).await {
        Ok(saved) => Ok(saved),
        // A concurrent first invocation saved it first: use theirs.
        Err(StateError::Conflict { .. }) => {
            state.get_config().await?.ok_or(ReactorError::NoFleetConfig)
        }
        Err(error) => Err(error.into()),
    }
}

/// The published snapshot with the highest block (ties: the later id).
async fn latest_published(state: &dyn StateStore) -> Result<Option<SnapshotId>, ReactorError> {
    let snapshots = state.list_snapshots().await?;
    Ok(snapshots
        .into_iter()
        .filter(|s| s.state == SnapshotState::Published)
        .max_by(|a, b| (a.block_height, &a.id).cmp(&(b.block_height, &b.id)))
        .map(|s| s.id))
}

fn parse_memory(record: &ControlState) -> Result<ReactorMemory, ReactorError> {
    serde_json::from_str(&record.body).map_err(|e| ReactorError::CorruptMemory(e.to_string()))
}

/// The stored record (to save over) and the memory in it, or a fresh memory.
async fn load_memory(
    state: &dyn StateStore,
    settings: &ReactorSettings,
    now: Timestamp,
) -> Result<(Option<ControlState>, ReactorMemory), ReactorError> {
    let stored = state.get_control_state(MEMORY_NAME).await?;
    let mut memory = match &stored {
        None => ReactorMemory::new(settings.replacements_per_hour, now),
        Some(record) => parse_memory(record)?,
    };
    memory.resize_budget(settings.replacements_per_hour, now);
    Ok((stored, memory))
}

async fn save_memory(
    state: &dyn StateStore,
    mut stored: Option<ControlState>,
    before: &ReactorMemory,
    memory: &ReactorMemory,
    now: Timestamp,
) -> Result<(), ReactorError> {
    let mut to_save = memory.clone();
    for _ in 0..MEMORY_SAVE_ATTEMPTS {
        let body = serde_json::to_string(&to_save)
            .map_err(|e| ReactorError::CorruptMemory(e.to_string()))?;
        let record = ControlState {
            name: MEMORY_NAME.to_owned(),
            body,
            updated_at: now,
            version: stored.as_ref().map_or(Version::NEW, |s| s.version),
        };
        match state.save_control_state(&record).await {
            Ok(_) => return Ok(()),
            Err(StateError::Conflict { .. }) => {
                stored = state.get_control_state(MEMORY_NAME).await?;
                let Some(record) = &stored else { continue };
                let mut theirs = parse_memory(record)?;
                memory.merge_into(before, &mut theirs, now);
                to_save = theirs;
            }
            Err(error) => return Err(error.into()),
        }
    }
    Err(ReactorError::State(StateError::Conflict {
        entity: nodefleet_ports::Entity::ControlState,
        key: MEMORY_NAME.to_owned(),
        expected: stored.map_or(Version::NEW, |s| s.version),
    }))
}

/// Disk-bound hydration rate used for grace windows: DESIGN's reference, 1.2 TB in about 25
/// minutes on an i3.2xlarge (about 0.8 GB/s, its NVMe write speed).
pub const HYDRATION_BYTES_PER_SEC: u64 = 800_000_000;

/// Catch-up budget after hydration: a snapshot is at most one updater round old (default
/// four hours, 1,200 mainnet blocks), which a synced client replays in about ten minutes;
/// twice that leaves room for a slow peer set.
pub const CATCH_UP_BUDGET: Duration = Duration::from_secs(20 * 60);

/// The grace window of a mainnet client: its chain data at [`HYDRATION_BYTES_PER_SEC`] plus
/// [`CATCH_UP_BUDGET`]. `None` for a client without a capacity profile (anvil).
pub fn default_grace(client: &str) -> Option<Duration> {
    let profile = crate::capacity::profiles::profile(client)?;
    let bytes = u64::from(profile.chain_data_gb) * 1_000_000_000;
    let hydration = Duration::from_secs(bytes / HYDRATION_BYTES_PER_SEC);
    Some(Desired::grace_for(hydration, CATCH_UP_BUDGET))
}
