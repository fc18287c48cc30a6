//! The local fleet, self-healing: the health reactor's service (the same
//! `nodefleet_reactor::service::run` the Lambda runs) on a timer, over the local adapters. This
//! is what `nodefleet up` runs; the binary only adds the gateway in front.
//!
//! # What it is made of
//!
//! - state: an [`EmbeddedStateStore`] in `<dir>/state.redb`, holding the [`FleetConfig`]
//!   (zones `local-a`, `local-b`, ..., the serving node count, the healthy floor, the storm
//!   share) and everything the reconcile records (node records, idempotency keys, audit);
//! - scheduler: a [`LocalProcessScheduler`] running the node command as tasks under
//!   `<dir>/tasks/<task id>/`, one zone label per zone. `nodefleet up`'s command is the node
//!   agent running anvil ([`NodeCommand::agent`]), as an ECS task runs it: the agent hydrates
//!   the task's data dir from the snapshot the launch names (the reactor names the newest
//!   published catalog entry), or from the store's `latest`, or starts anvil on a new chain
//!   when the store has none, then runs anvil with its state in the data dir. So the nodes of
//!   a fleet with a published snapshot share its history. Tests that cannot run the
//!   `nodefleet` binary use bare anvil ([`NodeCommand::anvil`]);
//! - object store: an [`FsObjectStore`] in `<dir>/store` ([`STORE_DIR`], the agents'
//!   `file://` store), where snapshots are published (by `nodefleet snapshot create`, later by
//!   the snapshot updater) and nodes hydrate from;
//! - registry: a [`LocalTargetRegistry`] that checks each target as the agent's `/health`
//!   judges a node ([`HealthCheck::SyncedHead`]: not syncing, head block at most the fleet's
//!   max head age old, [`crate::node::LOCAL_MAX_HEAD_AGE`]) on anvil's own RPC port, the one
//!   the gateway sends calls to (the agent's `/health` listens on an ephemeral port nobody
//!   needs locally). A node whose head stops moving fails it while its process lives, and is
//!   replaced like one that died.
//!
//! # A second `up` resumes the fleet
//!
//! The state file is kept across runs: [`HealingFleet::open`] opens it and resumes the fleet
//! it holds. Its config (zones, serving nodes; `--nodes` or `--zones` given, it is updated to
//! them), its snapshot catalog, its audit trail and the reactor's and the updater's memory
//! (replacement budget, zone backoff, the last round) are what the fleet is, and stay.
//!
//! What the earlier run left that is no longer true is cleared first, while this process
//! holds the state file: redb locks it, so a file that opens proves no other `up` runs
//! (one that does is refused: two loops must not manage one folder). An earlier run's nodes
//! died with its `up` process (the scheduler's children never outlive it), so:
//!
//! - every node record is deleted: each names a task that is gone, and three records of lost
//!   nodes would look like a storm to the first reconcile, which would then replace nothing.
//!   With no records the first reconcile fills the fleet, and fill names nodes `<zone>-<n>`
//!   with the smallest free `n`, so the resumed fleet has the same node ids as before;
//! - the idempotency keys and leases of earlier runs (owner `nodefleet-up-<pid>`) are
//!   forgotten: a fill's key `launch/local-a-1` would otherwise make the new fleet skip the
//!   very launch it needs for ten minutes, and the updater's lease would hold its ticks off;
//! - a snapshot round in flight is told its updater task is gone
//!   ([`nodefleet_updater::service::node_gone`]): it ends now (`node_lost`; a round that had
//!   published goes on to prune) instead of waiting out the grace a lagging task listing gets;
//! - catalog entries published but no longer in the store (a store moved away) are retired,
//!   so no node is launched on a snapshot it cannot hydrate.
//!
//! The event `fleet.resumed` says what was kept and cleared. Task folders of the earlier run
//! are removed (their nodes are gone; their logs with them).
//!
//! The object store is kept too: its snapshots are what a new node starts from, and making
//! one takes a running chain. The store's current `latest` is (re-)seeded into the catalog
//! ([`crate::catalog::seed_from_store`]: one `Published` record, a no-op when it is there),
//! so a store published into while no `up` ran (`nodefleet snapshot create`) is where the
//! next nodes start, and a fresh state starts from the store's snapshot. A store whose
//! `latest` cannot be read fails the open (every node would fail to hydrate from it); the
//! error says to move the store away to start from an empty chain.
//!
//! # Chaos
//!
//! [`HealingFleet::fail_zone`] fails a zone of the running fleet, as an AZ lost: its tasks
//! are killed and lost, and launches there fail with a capacity error until
//! [`HealingFleet::restore_zone`] ([`LocalProcessScheduler::fail_zone`]). The reactor sees
//! lost nodes and a placement failure and moves the replacements to the other zones (zone
//! backoff, invariant 7). A restore also forgives the zone's backoff
//! ([`nodefleet_reactor::service::forgive_zone`]): the capacity is back, so the next
//! launches may go there at once. Both are audit events (`chaos.zone_failed`,
//! `chaos.zone_restored`) and the status file lists the failed zones. They live in this
//! process: a failed zone does not outlive the `up` that failed it.
//!
//! # The loop
//!
//! [`HealingFleet::run`] reconciles, then reads the fleet ([`HealingFleet::view`]), hands the
//! routes (live tasks whose targets are registered and not failing their check, unless all
//! fail: the NLB's rule) to the caller when they change (the gateway's balancer), writes
//! `<dir>/status.json` ([`crate::status`]) and sleeps [`RECONCILE_INTERVAL`], or
//! [`FOLLOW_UP_DELAY`] after a reconcile that acted. A task that exits wakes it early (within
//! [`EXIT_WATCH_INTERVAL`]), as an ECS task state change event wakes the Lambda; like every
//! trigger it only wakes the reconcile, which decides from what it observes. The first
//! reconcile finds an empty fleet (a new one, or a resumed one cleared) and the planner fills
//! it; a killed
//! node is seen lost by the next reconcile, replaced, registered and back in the routes a few
//! reconciles later. The one call that reconciles is [`reconcile_step`]: the reactor's
//! service, as the Lambda runs it, so the config, the newest published snapshot and the
//! reactor's memory (budget, placement failures, spot warnings) come from and go back to
//! the state store.
//!
//! Every decision and outcome is a JSON log line with target `nodefleet::fleet` (the reactor's
//! own lines have `nodefleet_reactor::*`): `event` is `reconcile`, `action`, `decision`,
//! `task_exit`, `wake`, `node_ready` or `routes`, with millisecond timestamps (`at_ms`, ...) for
//! `bench/recovery.sh`. Lines are written when something changed, not every second.
//!
//! # Error policy
//!
//! [`FleetError`] is for [`HealingFleet::open`]: a bad fleet shape, a folder that cannot be
//! prepared, a state file in use, a state store, object store or scheduler that cannot
//! start, an object store whose `latest` cannot be read, an earlier run's round that cannot
//! be ended; none is worth a retry. A state file that redb cannot open for another reason
//! (damaged beyond its own repair) is moved aside (`state.redb.unreadable-<millis>`, with a
//! warning) and the fleet starts on a new state. Once running, nothing stops the loop: a
//! reconcile that cannot observe the fleet is logged, recorded in the status file
//! (`last_error`) and tried again at the next tick. [`ChaosError`] is for the chaos
//! actions: a zone the fleet does not have, or tasks that would not die; a chaos action's
//! audit event or backoff forgiveness that cannot be written is a warning (the action
//! itself happened).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nodefleet_gateway::{TrafficRecorder, TrafficWindow};
use nodefleet_ops::{EventFilter, recent_events};
use nodefleet_ports::{
    AuditEvent, FleetConfig, NODE_RPC_PORT, NetworkMode, NodeId, NodeRecord, NodeState,
    ObjectStore, Role, Scheduler, SchedulerError, SnapshotId, SnapshotRecord, StateError,
    StateStore, StoreUrl, Target, TargetRegistry, TargetState, TaskId, TaskInfo, TaskStatus,
    Timestamp, Version, Zone, target_for_task,
};
use nodefleet_reactor::planner::DEFAULT_REPLACEMENTS_PER_HOUR;
use nodefleet_reactor::planner::{Action, Desired};
use nodefleet_reactor::reconcile::AUDIT_RETENTION;
use nodefleet_reactor::reconcile::{ObserveError, Outcome, Ports, ReconcileOutcome};
use nodefleet_reactor::service::{self, ReactorError, ReactorRun, ReactorSettings, forgive_zone};
use nodefleet_reactor::triggers::Trigger;
use nodefleet_snapshot::channel;
use nodefleet_updater::round::RoundOutcome;
use nodefleet_updater::service::{
    self as updater_service, UpdaterPorts, UpdaterRun, UpdaterSettings,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::catalog::{SeedError, latest_published, retire_missing, seed_from_store, shown};
use crate::console::{ControlError, ControlRequest};
use crate::node::block_number_within;
use crate::objects::{FsObjectStore, FsStoreError};
use crate::scheduler::{
    LocalProcessScheduler, LocalSchedulerConfig, LocalZone, NodeCommand, STOP_GRACE,
    STOPPED_TASK_RETENTION,
};
use crate::snapshots::{DEFAULT_ROUND_INTERVAL, LocalUpdater, local_settings};
use crate::state::EmbeddedStateStore;
use crate::status::{
    EventStatus, FleetStatus, NodeStatus, STATUS_EVENTS, SnapshotStatus, UpdaterStatus,
    process_start_time,
};
use crate::targets::{HealthCheck, LocalTargetRegistry};

/// The state file in the fleet folder.
pub const STATE_FILE: &str = "state.redb";
/// The folder the tasks live in (the scheduler's `<root>/tasks/`).
pub const TASKS_DIR: &str = "tasks";
/// The fleet's object store in the fleet folder: kept across runs (see the module doc).
pub const STORE_DIR: &str = "store";
/// The fleet's name in its config (one local fleet per folder).
pub const FLEET_NAME: &str = "local";
/// The zones of the quickstart: three, like the three AZs a production fleet spreads over.
pub const DEFAULT_ZONES: u32 = 3;
/// The serving nodes of a new fleet when not told: one per zone of the three-zone layout.
pub const DEFAULT_NODES: u32 = 3;
/// What every `nodefleet up`'s idempotency-key owner and lease holder is called before its
/// pid: the claims an opening fleet knows are dead (see the module doc).
pub const OWNER_PREFIX: &str = "nodefleet-up-";
/// The audit event of a fleet that opened on an earlier run's state.
pub const RESUMED_EVENT: &str = "fleet.resumed";
/// The audit event of a zone failed by [`HealingFleet::fail_zone`].
pub const ZONE_FAILED_EVENT: &str = "chaos.zone_failed";
/// The audit event of [`HealingFleet::restore_zone`].
pub const ZONE_RESTORED_EVENT: &str = "chaos.zone_restored";
/// The most zones: one letter each, `local-a` to `local-z`.
pub const MAX_ZONES: u32 = 26;

/// How often the loop reconciles. The Lambda is woken by events within seconds of a task
/// stopping (and by a one-minute schedule); locally the timer stands in for both, so it is
/// short: a killed node is seen within a second. One reconcile here costs a few
/// milliseconds (a redb read, a process table look-up, one probe per node), so once a second
/// is noise next to the nodes themselves.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(1);
/// The pause after a reconcile that acted: a replacement takes three reconciles (launch, then
/// register its target, then see it healthy), and anvil answers a fraction of a second after
/// it starts, so the follow-ups need not wait a whole interval each.
pub const FOLLOW_UP_DELAY: Duration = Duration::from_millis(200);
/// How often the pause between reconciles looks for a task that exited: the scheduler's
/// reaper notices exits every 100 ms ([`crate::scheduler::REAP_INTERVAL`]), and a look is a
/// read of its in-memory task table.
pub const EXIT_WATCH_INTERVAL: Duration = crate::scheduler::REAP_INTERVAL;
/// The planner's grace for a local node (how long after launch it is not judged). A mainnet
/// client gets minutes to hydrate and catch up; a local node's agent restores a snapshot of
/// anvil's state (kilobytes to a few megabytes from the local disk) and anvil loads it and
/// answers, all within a second of the task's start, so ten seconds covers a loaded two-core
/// CI machine while a node that never comes up is still replaced within seconds.
pub const LOCAL_GRACE: Duration = Duration::from_secs(10);
/// Issue 5's storm share for the local fleet: more than a third of the nodes failing at once.
/// 34 rather than 33 so that one of three nodes (33.3%) is a replacement, two of three a storm.
pub const STORM_PERCENT: u8 = 34;
/// A head older than this is unhealthy: ten of anvil's one-second blocks
/// ([`crate::node::LOCAL_MAX_HEAD_AGE`] says why; the design's 60 s is for 12-second slots).
const MAX_HEAD_AGE_SECS: u64 = crate::node::LOCAL_MAX_HEAD_AGE.as_secs();
/// Room per zone above its share of the nodes: a replacement started before the node it
/// replaces has stopped, plus one spare, while a runaway loop still hits the limit after a
/// handful of processes.
const ZONE_HEADROOM: u32 = 2;
/// How long the status file's head-block probe waits per node: a loopback answer takes a
/// millisecond, and the loop must not stall on a hung node.
const HEAD_PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How far back the status's events are looked for: the page shows the latest few, and a
/// quiet fleet's last events are within the hour (the updater's rounds alone write some
/// every two minutes).
const STATUS_EVENTS_LOOKBACK: Duration = Duration::from_secs(3_600);
/// Control requests that may wait for the loop at once: a person at a terminal and a test
/// send one at a time; more wait for room.
const CONTROL_QUEUE: usize = 16;
/// The log target of the loop's own lines.
const LOG_TARGET: &str = "nodefleet::fleet";

/// What to run, and where.
#[derive(Debug, Clone)]
pub struct LocalFleetOptions {
    /// The fleet folder: `state.redb`, `status.json`, `tasks/`, `store/`.
    pub dir: PathBuf,
    /// The node program: [`NodeCommand::agent`] on the store [`store_url`] names (or bare
    /// [`NodeCommand::anvil`], which ignores the store).
    pub command: NodeCommand,
    /// Serving nodes wanted; `None`: the stored fleet's, or [`DEFAULT_NODES`] for a new one.
    pub nodes: Option<u32>,
    /// Zones to spread over (`local-a`, `local-b`, ...); `None`: the stored fleet's, or
    /// [`DEFAULT_ZONES`].
    pub zones: Option<u32>,
    /// The gateway's URL, for the status file.
    pub gateway: String,
    /// How often the snapshot updater starts a round ([`crate::snapshots`]); `None` runs no
    /// updater (and launches no updater node).
    pub snapshot_interval: Option<Duration>,
}

/// Why the fleet could not be opened. See the module doc for the error policy.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("{0}")]
    Shape(String),
    #[error("cannot prepare {path}: {source}")]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "another nodefleet up is using {dir} (its state file {path} is locked); stop it or use another --dir"
    )]
    InUse { dir: PathBuf, path: PathBuf },
    #[error("cannot open the fleet's state: {0}")]
    State(#[from] StateError),
    #[error("cannot open the fleet's object store: {0}")]
    Store(#[from] FsStoreError),
    #[error(
        "the fleet's object store {} cannot be named by a file:// URL: {message}",
        path.display()
    )]
    StoreUrl { path: PathBuf, message: String },
    #[error(
        "{source} (in {}); move that folder away to start the fleet from an empty chain",
        store.display()
    )]
    Seed {
        store: PathBuf,
        source: Box<SeedError>,
    },
    #[error("cannot start the local scheduler: {0}")]
    Scheduler(std::io::Error),
    #[error("cannot end the snapshot round the earlier run left in flight: {0}")]
    Round(String),
}

/// Why a chaos action was refused or did not finish. See the module doc for the error
/// policy.
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error("zone {zone} is not one of the fleet's zones ({known})")]
    UnknownZone { zone: Zone, known: String },
    #[error("{0}")]
    Scheduler(#[from] SchedulerError),
}

/// What [`HealingFleet::open`] found of an earlier run and what it cleared (see the module
/// doc); the detail of the `fleet.resumed` event.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Resumed {
    /// Serving nodes and zones of the resumed fleet.
    pub nodes: u32,
    pub zones: u32,
    /// The stored config was changed to the `--nodes`/`--zones` given.
    pub config_updated: bool,
    /// Node records deleted (their tasks died with the earlier run).
    pub records_cleared: Vec<String>,
    /// The earlier runs' idempotency keys forgotten.
    pub keys_forgotten: usize,
    /// Their leases released.
    pub leases_released: Vec<String>,
    /// The snapshot round that was in flight and how it ended, if there was one.
    pub round_ended: Option<String>,
    /// Published catalog entries retired because the store no longer has them.
    pub snapshots_retired: Vec<String>,
}

/// The fleet's object store folder: `<dir>/store`, made absolute (tasks run in folders of
/// their own).
pub fn store_dir(dir: &Path) -> Result<PathBuf, FleetError> {
    std::path::absolute(dir.join(STORE_DIR)).map_err(|source| FleetError::Folder {
        path: dir.join(STORE_DIR),
        source,
    })
}

/// The `file://` URL of the fleet's object store ([`store_dir`]), as the agents are given
/// it; an error for a folder the URL cannot carry (`%`, `?`, `#` or `..` in its path).
pub fn store_url(dir: &Path) -> Result<String, FleetError> {
    let path = store_dir(dir)?;
    let url = StoreUrl::File { root: path.clone() }.to_string();
    StoreUrl::parse(&url).map_err(|e| FleetError::StoreUrl {
        path,
        message: e.reason.to_owned(),
    })?;
    Ok(url)
}

/// The zone labels of a fleet of `zones` zones: `local-a`, `local-b`, ...
pub fn zone_names(zones: u32) -> Vec<Zone> {
    (b'a'..=b'z')
        .take(zones as usize)
        .map(|letter| Zone::new(format!("local-{}", char::from(letter))))
        .collect()
}

/// The stored configuration of a local fleet of `nodes` over `zones` zones: the healthy floor
/// is all nodes but one (like losing one zone of three), and the storm share
/// [`STORM_PERCENT`], raised for fleets under three nodes so that one failed node is always
/// replaced (one of two nodes is more than a third).
pub fn fleet_config(nodes: u32, zones: u32) -> FleetConfig {
    let one_node_percent = u8::try_from(100u32.div_ceil(nodes.max(1))).unwrap_or(100);
    FleetConfig {
        name: FLEET_NAME.to_owned(),
        zones: zone_names(zones),
        serving_nodes: nodes,
        healthy_floor: nodes.saturating_sub(1),
        storm_percent: STORM_PERCENT.max(one_node_percent),
        max_head_age_secs: MAX_HEAD_AGE_SECS,
        // anvil has no peers.
        min_peers: 0,
        version: Version::NEW,
    }
}

/// The one place the loop reconciles: the reactor's service, as the Lambda runs it (config
/// and memory read from and saved to the state store), woken by `trigger`. `None` if the
/// service found the trigger not the fleet's (the local settings admit every trigger).
pub async fn reconcile_step(
    ports: Ports<'_>,
    settings: &ReactorSettings,
    trigger: &Trigger,
    now: Timestamp,
) -> Result<Option<ReconcileOutcome>, ReactorError> {
    Ok(
        match service::run(ports, settings, &Ok(trigger.clone()), now).await? {
            ReactorRun::Reconciled(reconciled) => Some(reconciled.outcome),
            ReactorRun::NotOurs { .. } => None,
        },
    )
}

/// One node as the loop sees it after a reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub id: NodeId,
    pub zone: Zone,
    /// Its record's state.
    pub state: NodeState,
    /// The task its record names.
    pub task: Option<TaskId>,
    /// That task's process, while it runs.
    pub pid: Option<u32>,
    pub target: Option<Target>,
    /// Its target's state, if registered.
    pub target_state: Option<TargetState>,
    /// Its task is live and its target healthy.
    pub healthy: bool,
    /// The snapshot its current task was launched on (its record's when the task is not
    /// known any more): what its data dir was hydrated from.
    pub snapshot: Option<SnapshotId>,
}

impl NodeView {
    /// `http://127.0.0.1:<port>`, once it has a target.
    pub fn url(&self) -> Option<String> {
        self.target.as_ref().map(url_of)
    }
}

/// A live task whose target is registered: where the gateway may send calls.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    pub node: NodeId,
    pub task: TaskId,
    pub url: String,
    /// Its target's last check passed.
    pub healthy: bool,
}

/// The fleet after a reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetView {
    pub at: Timestamp,
    /// One per serving node record, by node id.
    pub nodes: Vec<NodeView>,
    /// The updater node (role [`Role::Updater`]: it makes snapshots and is never behind the
    /// gateway, so it is in neither `nodes` nor `routes`), if there is one.
    pub updater: Option<NodeView>,
    /// The catalog entries shown ([`crate::catalog::shown`]): verified, published and retired
    /// snapshots, newest first.
    pub snapshots: Vec<SnapshotRecord>,
    /// The published snapshot new nodes are launched on
    /// ([`crate::catalog::latest_published`]).
    pub latest_snapshot: Option<SnapshotId>,
    /// Where the gateway may send calls (live serving tasks with a registered target that
    /// does not fail its check, unless all fail), by node id, then URL.
    pub routes: Vec<Route>,
    /// Every task the scheduler lists (live and recently stopped).
    pub tasks: Vec<TaskInfo>,
}

impl FleetView {
    /// How many nodes are healthy.
    pub fn healthy(&self) -> usize {
        self.nodes.iter().filter(|n| n.healthy).count()
    }

    /// The routes as the balancer takes them: (node id, URL).
    pub fn balancer_nodes(&self) -> Vec<(String, String)> {
        self.routes
            .iter()
            .map(|r| (r.node.to_string(), r.url.clone()))
            .collect()
    }
}

/// The local fleet and its loop. Dropping it kills every node.
#[derive(Debug)]
pub struct HealingFleet {
    dir: PathBuf,
    gateway: String,
    state: EmbeddedStateStore,
    store: FsObjectStore,
    scheduler: LocalProcessScheduler,
    registry: LocalTargetRegistry,
    config: FleetConfig,
    desired: Desired,
    /// The idempotency-key owner: this process.
    owner: String,
    up_started: Option<u64>,
    views: watch::Sender<Option<FleetView>>,
    /// The snapshot updater the loop ticks, if the fleet has one.
    updater: Option<LocalUpdater>,
    /// The console's URL, for the status ([`HealingFleet::with_console`]).
    console: Option<String>,
    /// The gateway's request counts, for the status ([`HealingFleet::with_traffic`]).
    traffic: Option<Arc<TrafficRecorder>>,
    /// The status the loop last wrote, for the console.
    statuses: watch::Sender<Option<FleetStatus>>,
    /// Control requests for the loop ([`HealingFleet::submit`]) and the loop's end of them.
    controls: mpsc::Sender<PendingControl>,
    control_inbox: tokio::sync::Mutex<mpsc::Receiver<PendingControl>>,
    /// What opening cleared of an earlier run; `None` for a new fleet.
    resumed: Option<Resumed>,
}

/// A control request waiting for the loop, and where its answer goes.
type PendingControl = (
    ControlRequest,
    oneshot::Sender<Result<serde_json::Value, ControlError>>,
);

impl HealingFleet {
    /// Opens the fleet in `options.dir` (see the module doc): the state an earlier run left
    /// resumed, what it left that is no longer true cleared, or a new state with the fleet's
    /// config; the catalog seeded from the kept object store; a scheduler and a registry.
    /// Starts no node: the first reconcile of [`HealingFleet::run`] does.
    pub async fn open(options: LocalFleetOptions) -> Result<HealingFleet, FleetError> {
        if options.nodes == Some(0) {
            return Err(FleetError::Shape("a fleet needs at least one node".into()));
        }
        let zones_ok = |zones: u32| {
            if (1..=MAX_ZONES).contains(&zones) {
                Ok(zones)
            } else {
                Err(FleetError::Shape(format!(
                    "a local fleet has 1 to {MAX_ZONES} zones, not {zones}"
                )))
            }
        };
        if let Some(zones) = options.zones {
            zones_ok(zones)?;
        }
        let dir = options.dir.clone();
        let state = tokio::task::spawn_blocking(move || open_state(&dir))
            .await
            .map_err(|e| {
                FleetError::State(StateError::Backend {
                    message: format!("preparing the state file failed: {e}"),
                })
            })??;
        let now = Timestamp::now();
        let stored = state.get_config().await?;
        let nodes = options
            .nodes
            .or(stored.as_ref().map(|c| c.serving_nodes))
            .unwrap_or(DEFAULT_NODES)
            .max(1);
        let zones = zones_ok(
            options
                .zones
                .or(stored
                    .as_ref()
                    .map(|c| u32::try_from(c.zones.len()).unwrap_or(u32::MAX)))
                .unwrap_or(DEFAULT_ZONES),
        )?;
        let wanted = fleet_config(nodes, zones);
        let (config, config_updated) = match &stored {
            Some(stored)
                if *stored
                    == FleetConfig {
                        version: stored.version,
                        ..wanted.clone()
                    } =>
            {
                (stored.clone(), false)
            }
            Some(stored) => (
                state
                    .save_config(&FleetConfig {
                        version: stored.version,
                        ..wanted
                    })
                    .await?,
                true,
            ),
            None => (state.save_config(&wanted).await?, false),
        };
        let store_root = store_dir(&options.dir)?;
        let store = FsObjectStore::open(&store_root)?;
        let per_zone = config.serving_nodes.div_ceil(zones) + ZONE_HEADROOM;
        let scheduler = LocalProcessScheduler::new(LocalSchedulerConfig {
            root: options.dir.clone(),
            command: options.command,
            zones: config
                .zones
                .iter()
                .map(|zone| LocalZone::new(zone.clone(), per_zone))
                .collect(),
            stop_grace: STOP_GRACE,
            stopped_retention: STOPPED_TASK_RETENTION,
        })
        .map_err(FleetError::Scheduler)?;
        let owner = format!("{OWNER_PREFIX}{}", std::process::id());
        let updater_settings = local_settings(
            &owner,
            options.snapshot_interval.unwrap_or(DEFAULT_ROUND_INTERVAL),
            Duration::from_secs(config.max_head_age_secs),
        );
        let objects: Arc<dyn ObjectStore> = Arc::new(store.clone());
        let resumed = match stored {
            Some(_) => Some(
                clear_dead_run(&state, &scheduler, &objects, &updater_settings, now)
                    .await
                    .map(|cleared| Resumed {
                        nodes: config.serving_nodes,
                        zones,
                        config_updated,
                        ..cleared
                    })?,
            ),
            None => None,
        };
        let seeded = seed_from_store(&state, &store, now)
            .await
            .map_err(|source| FleetError::Seed {
                store: store_root.clone(),
                source: Box::new(source),
            })?;
        let retired = retire_missing(&state, &store, now)
            .await
            .map_err(|source| FleetError::Seed {
                store: store_root.clone(),
                source: Box::new(source),
            })?;
        match &seeded {
            Some(record) => tracing::info!(
                target: LOG_TARGET,
                event = "catalog",
                snapshot = record.id.as_str(),
                block = record.block_height,
                store = %store_root.display(),
                "the store's latest snapshot is published: nodes hydrate from it"
            ),
            None => tracing::info!(
                target: LOG_TARGET,
                event = "catalog",
                store = %store_root.display(),
                "the store has no published snapshot: nodes start on a new chain"
            ),
        }
        let resumed = resumed.map(|resumed| Resumed {
            snapshots_retired: retired.iter().map(ToString::to_string).collect(),
            ..resumed
        });
        if let Some(resumed) = &resumed {
            let detail = serde_json::to_string(resumed).unwrap_or_default();
            tracing::info!(target: LOG_TARGET, event = "resumed", detail = %detail, "resuming the fleet from its state");
            let event = AuditEvent::new(now, RESUMED_EVENT, FLEET_NAME, detail, AUDIT_RETENTION);
            state.append_event(&event).await?;
        }
        let desired = Desired::from_config(
            &config,
            LOCAL_GRACE,
            None,
            NetworkMode::Bridge,
            NODE_RPC_PORT,
        );
        let (controls, control_inbox) = mpsc::channel(CONTROL_QUEUE);
        let updater = options.snapshot_interval.map(|_| LocalUpdater {
            settings: updater_settings,
            store: objects,
        });
        Ok(HealingFleet {
            updater,
            dir: options.dir,
            gateway: options.gateway,
            state,
            store,
            scheduler,
            registry: LocalTargetRegistry::with_check(HealthCheck::SyncedHead {
                max_head_age: Duration::from_secs(config.max_head_age_secs),
            }),
            config,
            desired,
            owner,
            up_started: process_start_time(std::process::id()),
            views: watch::Sender::new(None),
            console: None,
            traffic: None,
            statuses: watch::Sender::new(None),
            controls,
            control_inbox: tokio::sync::Mutex::new(control_inbox),
            resumed,
        })
    }

    /// Hands `request` to the loop ([`HealingFleet::run`]), which does it between two
    /// reconciles, and waits for its answer.
    pub async fn submit(&self, request: ControlRequest) -> Result<serde_json::Value, ControlError> {
        let (answer, answered) = oneshot::channel();
        self.controls
            .send((request, answer))
            .await
            .map_err(|_| ControlError::Conflict("the fleet is stopping".into()))?;
        answered
            .await
            .map_err(|_| ControlError::Conflict("the fleet stopped before it answered".into()))?
    }

    /// Names the console's URL in every status the loop writes (`nodefleet up --console`).
    pub fn with_console(mut self, url: impl Into<String>) -> HealingFleet {
        self.console = Some(url.into());
        self
    }

    /// Puts `traffic`'s window (the gateway's requests) in every status the loop writes.
    pub fn with_traffic(mut self, traffic: Arc<TrafficRecorder>) -> HealingFleet {
        self.traffic = Some(traffic);
        self
    }

    /// The gateway's traffic window ending now (empty without a recorder).
    pub fn traffic_now(&self) -> TrafficWindow {
        self.traffic
            .as_ref()
            .map(|t| t.window(Timestamp::now().as_millis()))
            .unwrap_or_default()
    }

    /// Waits until the loop has published a status written after `after` (milliseconds since
    /// the Unix epoch), or `wait` has passed.
    pub async fn wait_for_status_after(&self, after: u64, wait: Duration) {
        let mut statuses = self.statuses.subscribe();
        let newer =
            statuses.wait_for(|s| s.as_ref().is_some_and(|s| s.updated_at.as_millis() > after));
        let _ = tokio::time::timeout(wait, newer).await;
    }

    /// The status the loop last wrote (`None` before the first), as the status file has it.
    pub fn latest_status(&self) -> Option<FleetStatus> {
        self.statuses.borrow().clone()
    }

    /// What opening found of an earlier run and cleared; `None` for a new fleet.
    pub fn resumed(&self) -> Option<&Resumed> {
        self.resumed.as_ref()
    }

    /// Fails `zone` (see the module doc): its tasks are killed and lost, launches into it
    /// fail with a capacity error until [`HealingFleet::restore_zone`]. Returns the tasks
    /// killed (none if it had failed already); appends `chaos.zone_failed`.
    pub async fn fail_zone(&self, zone: &Zone) -> Result<Vec<TaskId>, ChaosError> {
        self.fleet_zone(zone)?;
        let killed = self.scheduler.fail_zone(zone).await?;
        let stopped: Vec<&str> = killed.iter().map(TaskId::as_str).collect();
        let detail = serde_json::json!({ "stopped": stopped }).to_string();
        tracing::warn!(target: LOG_TARGET, event = "chaos", action = "fail_zone", zone = zone.as_str(), at_ms = Timestamp::now().as_millis(), stopped = %stopped.join(","), "zone failed: its tasks are lost and launches there fail until it is restored");
        self.audit(ZONE_FAILED_EVENT, zone, detail).await;
        Ok(killed)
    }

    /// Ends a [`HealingFleet::fail_zone`]: the zone takes launches again at once (its zone
    /// backoff is forgiven). True if it had failed; appends `chaos.zone_restored`.
    pub async fn restore_zone(&self, zone: &Zone) -> Result<bool, ChaosError> {
        self.fleet_zone(zone)?;
        let was_failed = self.scheduler.restore_zone(zone)?;
        let forgiven = match forgive_zone(&self.state, zone, Timestamp::now()).await {
            Ok(forgiven) => forgiven,
            Err(error) => {
                tracing::warn!(target: LOG_TARGET, event = "chaos", zone = zone.as_str(), error = %error, "could not forgive the zone's backoff; it runs out on its own");
                false
            }
        };
        let detail = serde_json::json!({ "was_failed": was_failed, "backoff_forgiven": forgiven })
            .to_string();
        tracing::info!(target: LOG_TARGET, event = "chaos", action = "restore_zone", zone = zone.as_str(), at_ms = Timestamp::now().as_millis(), was_failed, backoff_forgiven = forgiven, "zone restored: it takes launches again");
        self.audit(ZONE_RESTORED_EVENT, zone, detail).await;
        Ok(was_failed)
    }

    /// The zones failed now ([`HealingFleet::fail_zone`]), in name order.
    pub fn failed_zones(&self) -> Vec<Zone> {
        self.scheduler.failed_zones()
    }

    fn fleet_zone(&self, zone: &Zone) -> Result<(), ChaosError> {
        if self.config.zones.contains(zone) {
            return Ok(());
        }
        Err(ChaosError::UnknownZone {
            zone: zone.clone(),
            known: self
                .config
                .zones
                .iter()
                .map(Zone::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// Appends an audit event about `zone`; a failure is a warning (see the error policy).
    async fn audit(&self, kind: &str, zone: &Zone, detail: String) {
        let event = AuditEvent::new(
            Timestamp::now(),
            kind,
            zone.as_str(),
            detail,
            AUDIT_RETENTION,
        );
        if let Err(error) = self.state.append_event(&event).await {
            tracing::warn!(target: LOG_TARGET, kind, error = %error, "could not append the audit event");
        }
    }

    /// The fleet's configuration, as stored.
    pub fn config(&self) -> &FleetConfig {
        &self.config
    }

    /// What the reconcile keeps the fleet at.
    pub fn desired(&self) -> &Desired {
        &self.desired
    }

    /// The fleet's state store.
    pub fn state(&self) -> &EmbeddedStateStore {
        &self.state
    }

    /// The fleet's scheduler: its node processes.
    pub fn scheduler(&self) -> &LocalProcessScheduler {
        &self.scheduler
    }

    /// The fleet's snapshot updater, if it runs one.
    pub fn updater(&self) -> Option<&LocalUpdater> {
        self.updater.as_ref()
    }

    /// The fleet's object store (`<dir>/store`), where snapshots are published and nodes
    /// hydrate from.
    pub fn store(&self) -> &FsObjectStore {
        &self.store
    }

    /// The reactor service's settings: the stored config, the local grace, every trigger
    /// admitted (the local fleet has no other cluster's events to ignore).
    pub fn settings(&self) -> ReactorSettings {
        ReactorSettings {
            owner: self.owner.clone(),
            seed_config: Some(self.config.clone()),
            grace: self.desired.grace,
            network_mode: self.desired.network_mode,
            container_port: self.desired.container_port,
            replacements_per_hour: DEFAULT_REPLACEMENTS_PER_HOUR,
            scope: None,
        }
    }

    /// The ports the reconcile talks to.
    pub fn ports(&self) -> Ports<'_> {
        Ports {
            state: &self.state,
            scheduler: &self.scheduler,
            registry: &self.registry,
        }
    }

    /// The latest view, after each reconcile of [`HealingFleet::run`].
    pub fn views(&self) -> watch::Receiver<Option<FleetView>> {
        self.views.subscribe()
    }

    /// Waits until `count` nodes are healthy or `timeout` has passed; the latest view either
    /// way (`None` if no reconcile has finished yet). Needs [`HealingFleet::run`] running.
    pub async fn wait_healthy(&self, count: usize, timeout: Duration) -> Option<FleetView> {
        let mut views = self.views();
        let ready = views.wait_for(|view| view.as_ref().is_some_and(|v| v.healthy() >= count));
        let _ = tokio::time::timeout(timeout, ready).await;
        views.borrow().clone()
    }

    /// Reads the fleet: node records, tasks, target health (probing every target), the
    /// snapshot catalog.
    pub async fn view(&self) -> Result<FleetView, ObserveError> {
        let records = self.state.list_nodes().await?;
        let catalog = self.state.list_snapshots().await?;
        let tasks = self.scheduler.list_tasks().await?;
        let health = self.registry.describe_health().await?;
        let at = Timestamp::now();
        let health: HashMap<&Target, TargetState> =
            health.iter().map(|h| (&h.target, h.state)).collect();
        let by_id: HashMap<&TaskId, &TaskInfo> = tasks.iter().map(|t| (&t.id, t)).collect();
        let target_of = |task: &TaskInfo| target_for_task(task, NetworkMode::Bridge, NODE_RPC_PORT);
        let node_view = |record: &NodeRecord| {
            let task = record.task.as_ref().and_then(|id| by_id.get(id).copied());
            let live = task.filter(|t| is_live(t));
            let target = task.and_then(target_of).or_else(|| record.target.clone());
            let target_state = target.as_ref().and_then(|t| health.get(t).copied());
            NodeView {
                id: record.id.clone(),
                zone: record.zone.clone(),
                state: record.state,
                task: record.task.clone(),
                pid: live.and_then(|t| self.scheduler.pid(&t.id)),
                target,
                target_state,
                healthy: live.is_some() && target_state == Some(TargetState::Healthy),
                // A replacement keeps its node's record, snapshot included; its task says
                // what it was launched on.
                snapshot: task.map_or_else(|| record.snapshot.clone(), |t| t.snapshot.clone()),
            }
        };
        let current = |r: &&NodeRecord| r.state != NodeState::Stopped;

        let nodes = records
            .iter()
            .filter(|r| r.role == Role::Serving)
            .filter(current)
            .map(node_view)
            .collect();
        // The updater by its record; a live updater task with none yet (launched, not
        // recorded) shows as launching.
        let updater = records
            .iter()
            .filter(|r| r.role == Role::Updater)
            .find(current)
            .map(node_view)
            .or_else(|| {
                let task = tasks
                    .iter()
                    .find(|t| is_live(t) && t.role == Some(Role::Updater))?;
                let target = target_of(task);
                Some(NodeView {
                    id: task.node.clone()?,
                    zone: task.zone.clone()?,
                    state: NodeState::Launching,
                    task: Some(task.id.clone()),
                    pid: self.scheduler.pid(&task.id),
                    target_state: target.as_ref().and_then(|t| health.get(t).copied()),
                    target,
                    healthy: false,
                    snapshot: task.snapshot.clone(),
                })
            });
        let candidates: Vec<(Route, TargetState)> = tasks
            .iter()
            .filter(|t| is_live(t) && t.role == Some(Role::Serving))
            .filter_map(|task| {
                let node = task.node.clone()?;
                let target = target_of(task)?;
                let state = *health.get(&target)?;
                (state != TargetState::Draining).then(|| {
                    let route = Route {
                        node,
                        task: task.id.clone(),
                        url: url_of(&target),
                        healthy: state == TargetState::Healthy,
                    };
                    (route, state)
                })
            })
            .collect();
        // A target whose check fails gets no calls, as the NLB sends none to an unhealthy
        // target (a node whose head stopped moving leaves rotation while it lives), unless
        // every target fails, when the NLB fails open and so does this.
        let all_fail = candidates
            .iter()
            .all(|(_, state)| *state == TargetState::Unhealthy);
        let mut routes: Vec<Route> = candidates
            .into_iter()
            .filter(|(_, state)| all_fail || *state != TargetState::Unhealthy)
            .map(|(route, _)| route)
            .collect();
        routes.sort();
        Ok(FleetView {
            at,
            nodes,
            updater,
            latest_snapshot: latest_published(&catalog).map(|r| r.id.clone()),
            snapshots: shown(&catalog),
            routes,
            tasks,
        })
    }

    /// Reconciles until `shutdown` resolves (see the module doc). `on_routes` gets the
    /// (node id, URL) pairs of the routes whenever they change, the first time included.
    pub async fn run(
        &self,
        shutdown: impl Future<Output = ()>,
        mut on_routes: impl FnMut(&[(String, String)]),
    ) {
        tokio::pin!(shutdown);
        let settings = self.settings();
        let mut journal = Journal::default();
        let tick = Trigger::Schedule { at: None };
        let mut last_updater_memory = None;
        let mut inbox = self.control_inbox.lock().await;
        loop {
            let now = Timestamp::now();
            let started = Instant::now();
            let result = reconcile_step(self.ports(), &settings, &tick, now).await;
            let (acted, last_error) = match result {
                Ok(None) => (false, None),
                Ok(Some(outcome)) => {
                    let acted = journal
                        .reconciled(&outcome, now, started.elapsed(), &self.scheduler)
                        .await;
                    (acted, None)
                }
                Err(error) => {
                    tracing::warn!(target: LOG_TARGET, event = "reconcile", at_ms = now.as_millis(), error = %error, "reconcile could not observe the fleet");
                    (false, Some(error.to_string()))
                }
            };
            let updater_moved = match &self.updater {
                Some(updater) => {
                    let memory = updater.tick(&self.state, &self.scheduler, now).await;
                    let moved = memory.is_some() && memory != last_updater_memory;
                    if memory.is_some() {
                        last_updater_memory = memory;
                    }
                    moved
                }
                None => false,
            };
            let acted = acted || updater_moved;
            let mut live = BTreeSet::new();
            match self.view().await {
                Ok(view) => {
                    if journal.observed(&view) {
                        on_routes(&view.balancer_nodes());
                    }
                    self.publish(&view, last_error).await;
                    live = view
                        .tasks
                        .iter()
                        .filter(|t| is_live(t))
                        .map(|t| t.id.clone())
                        .collect();
                    self.views.send_replace(Some(view));
                }
                Err(error) => {
                    tracing::warn!(target: LOG_TARGET, event = "view", error = %error, "could not read the fleet");
                }
            }
            let pause = if acted {
                FOLLOW_UP_DELAY
            } else {
                RECONCILE_INTERVAL
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = self.exit_of_any(&live) => {}
                Some((request, answer)) = inbox.recv() => {
                    tracing::info!(target: LOG_TARGET, event = "control", request = ?request, "an operator's request");
                    let _ = answer.send(self.perform(request).await);
                }
                () = &mut shutdown => return,
            }
        }
    }

    /// Resolves once one of `live` has exited (looking every [`EXIT_WATCH_INTERVAL`]).
    async fn exit_of_any(&self, live: &BTreeSet<TaskId>) {
        loop {
            tokio::time::sleep(EXIT_WATCH_INTERVAL).await;
            let Ok(tasks) = self.scheduler.list_tasks().await else {
                continue;
            };
            if let Some(gone) = tasks.iter().find(|t| live.contains(&t.id) && !is_live(t)) {
                tracing::info!(
                    target: LOG_TARGET,
                    event = "wake",
                    at_ms = Timestamp::now().as_millis(),
                    task = gone.id.as_str(),
                    reason = "a task exited",
                );
                return;
            }
        }
    }

    /// The newest `limit` audit events since `since`, newest first, as operators read them
    /// for a deployed stack (`nodefleet_ops::recent_events`).
    pub async fn newest_events(
        &self,
        since: Timestamp,
        limit: usize,
    ) -> Result<Vec<EventStatus>, StateError> {
        let events = recent_events(
            &self.state,
            since,
            Timestamp::now(),
            limit,
            &EventFilter::default(),
        )
        .await?;
        Ok(events.iter().map(EventStatus::from).collect())
    }

    /// The status's events: the newest `limit` of the last [`STATUS_EVENTS_LOOKBACK`] (so the
    /// every-second read of a long-running fleet's trail stays short); none (logged) if the
    /// trail cannot be read.
    async fn status_events(&self, limit: usize) -> Vec<EventStatus> {
        let since = Timestamp::now().minus(STATUS_EVENTS_LOOKBACK);
        self.newest_events(since, limit)
            .await
            .unwrap_or_else(|error| {
                tracing::warn!(target: LOG_TARGET, event = "status", error = %error, "could not read the audit trail");
                Vec::new()
            })
    }

    /// Writes the status file for `view`, with each node's head block probed now.
    async fn publish(&self, view: &FleetView, last_error: Option<String>) {
        let head_of = |node: &NodeView| {
            let addr = node.target.as_ref().and_then(socket_addr);
            let live = node.pid.is_some();
            async move {
                match addr {
                    Some(addr) if live => block_number_within(addr, HEAD_PROBE_TIMEOUT).await,
                    _ => None,
                }
            }
        };
        let (heads, updater_head) = tokio::join!(
            futures_util::future::join_all(view.nodes.iter().map(head_of)),
            async {
                match &view.updater {
                    Some(updater) => head_of(updater).await,
                    None => None,
                }
            }
        );
        let status = FleetStatus {
            up_pid: std::process::id(),
            up_started: self.up_started,
            gateway: self.gateway.clone(),
            desired_nodes: self.config.serving_nodes,
            zones: self.config.zones.iter().map(Zone::to_string).collect(),
            updated_at: Timestamp::now(),
            last_error,
            nodes: view
                .nodes
                .iter()
                .zip(heads)
                .map(|(node, head_block)| NodeStatus {
                    id: node.id.to_string(),
                    zone: node.zone.to_string(),
                    state: node.state,
                    healthy: node.healthy,
                    target_state: node.target_state.map(target_state_name),
                    head_block,
                    snapshot_id: node.snapshot.clone(),
                    pid: node.pid,
                    task: node.task.clone(),
                    url: node.url(),
                    lag_blocks: None,
                })
                .collect(),
            updater: view.updater.as_ref().map(|node| UpdaterStatus {
                id: node.id.to_string(),
                zone: node.zone.to_string(),
                state: node.state,
                head_block: updater_head,
                snapshot_id: node.snapshot.clone(),
                pid: node.pid,
                task: node.task.clone(),
                url: node.url(),
            }),
            latest_snapshot: view.latest_snapshot.clone(),
            snapshots: view.snapshots.iter().map(SnapshotStatus::from).collect(),
            console: self.console.clone(),
            events: self.status_events(STATUS_EVENTS).await,
            traffic: self.traffic_now(),
            failed_zones: self.failed_zones().iter().map(Zone::to_string).collect(),
        };
        let mut status = status;
        status.fill_lag();
        if let Err(error) = status.write(&self.dir) {
            tracing::warn!(target: LOG_TARGET, event = "status", error = %error, "could not write the status file");
        }
        self.statuses.send_replace(Some(status));
    }

    /// Stops every live task (SIGTERM, then SIGKILL after the grace) and removes the status
    /// file. Call it after [`HealingFleet::run`] has returned, or the loop replaces them.
    pub async fn shut_down(&self, reason: &str) {
        if let Ok(tasks) = self.scheduler.list_tasks().await {
            let stops = tasks
                .iter()
                .filter(|t| is_live(t))
                .map(|t| self.scheduler.stop(&t.id, reason));
            for result in futures_util::future::join_all(stops).await {
                if let Err(error) = result {
                    tracing::warn!(target: LOG_TARGET, error = %error, "could not stop a node");
                }
            }
        }
        if let Err(error) = FleetStatus::remove(&self.dir) {
            tracing::warn!(target: LOG_TARGET, error = %error, "could not remove the status file");
        }
    }
}

/// Opens the fleet's state file (creating the folder and the file as needed) and removes
/// the task folders of an earlier run, once the open proves none runs. A file another
/// process holds is [`FleetError::InUse`]; one redb cannot open otherwise is moved aside
/// and replaced by a new one (see the error policy).
fn open_state(dir: &Path) -> Result<EmbeddedStateStore, FleetError> {
    let folder = |path: &Path| {
        let path = path.to_path_buf();
        move |source| FleetError::Folder { path, source }
    };
    std::fs::create_dir_all(dir).map_err(folder(dir))?;
    let path = dir.join(STATE_FILE);
    let db = match redb::Database::create(&path) {
        Ok(db) => db,
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
            return Err(FleetError::InUse {
                dir: dir.to_path_buf(),
                path,
            });
        }
        Err(error) => {
            let aside = dir.join(format!(
                "{STATE_FILE}.unreadable-{}",
                Timestamp::now().as_millis()
            ));
            std::fs::rename(&path, &aside).map_err(folder(&path))?;
            tracing::warn!(target: LOG_TARGET, event = "state", error = %error, moved_to = %aside.display(), "the state file cannot be opened; it is moved aside and the fleet starts on a new state");
            redb::Database::create(&path).map_err(|error| StateError::Backend {
                message: format!("cannot create state database {}: {error}", path.display()),
            })?
        }
    };
    let tasks = dir.join(TASKS_DIR);
    match std::fs::remove_dir_all(&tasks) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(folder(&tasks)(e)),
        _ => {}
    }
    Ok(EmbeddedStateStore::from_database(db, path)?)
}

/// Clears what an earlier run left that is no longer true (see the module doc): its node
/// records, its claims, its round in flight. Call it while holding the state file, before
/// anything runs.
async fn clear_dead_run(
    state: &EmbeddedStateStore,
    scheduler: &LocalProcessScheduler,
    objects: &Arc<dyn ObjectStore>,
    updater: &UpdaterSettings,
    now: Timestamp,
) -> Result<Resumed, FleetError> {
    let mut cleared = Resumed::default();
    for record in state.list_nodes().await? {
        state.delete_node(&record.id, record.version).await?;
        if record.role == Role::Updater
            && let Err(error) = channel::remove(objects.as_ref(), record.id.as_str()).await
        {
            tracing::warn!(target: LOG_TARGET, node = record.id.as_str(), error = %error, "could not remove an old updater's channel");
        }
        cleared.records_cleared.push(record.id.to_string());
    }
    let forgotten = state.forget_claims(OWNER_PREFIX).await?;
    cleared.keys_forgotten = forgotten.keys;
    cleared.leases_released = forgotten.leases;
    let ports = UpdaterPorts {
        state,
        scheduler,
        store: objects,
    };
    let ran = updater_service::node_gone(
        ports,
        updater,
        "the nodefleet up that ran it has exited, and its tasks with it",
        now,
    )
    .await
    .map_err(|e| FleetError::Round(e.to_string()))?;
    if let UpdaterRun::Ran(ran) = ran {
        cleared.round_ended = ran.finished.first().map(|round| match &round.outcome {
            RoundOutcome::Aborted(abort) => {
                format!("{}: aborted ({})", round.id, abort.reason.as_str())
            }
            RoundOutcome::Published { snapshot, .. } => {
                format!("{}: published {snapshot}", round.id)
            }
        });
    }
    Ok(cleared)
}

fn is_live(task: &TaskInfo) -> bool {
    matches!(task.last_status, TaskStatus::Pending | TaskStatus::Running)
        && task.desired_status != TaskStatus::Stopped
}

fn socket_addr(target: &Target) -> Option<SocketAddr> {
    let ip: IpAddr = target.id.parse().ok()?;
    Some(SocketAddr::new(ip, target.port))
}

fn url_of(target: &Target) -> String {
    format!("http://{}:{}", target.id, target.port)
}

/// ELBv2's spelling of a target state.
fn target_state_name(state: TargetState) -> String {
    match state {
        TargetState::Initial => "initial",
        TargetState::Healthy => "healthy",
        TargetState::Unhealthy => "unhealthy",
        TargetState::Unused => "unused",
        TargetState::Draining => "draining",
        TargetState::Unavailable => "unavailable",
    }
    .to_owned()
}

/// The short name of an action for the log.
fn action_name(action: &Action) -> &'static str {
    match action {
        Action::Launch { .. } => "launch",
        Action::RegisterTarget { .. } => "register",
        Action::DeregisterTarget { .. } => "deregister",
        Action::StopTask { .. } => "stop",
        Action::AdoptTask { .. } => "adopt",
        Action::Alert { .. } => "alert",
    }
}

/// What the log has said already, so that it says only what changed.
#[derive(Debug, Default)]
struct Journal {
    /// The last reconcile's decisions: (subject, verdict, reason).
    decisions: BTreeSet<(String, String, String)>,
    /// Tasks whose exit was logged.
    exited: BTreeSet<TaskId>,
    /// Tasks whose readiness was logged.
    ready: BTreeSet<TaskId>,
    /// The routes last handed out; `None` before the first.
    routes: Option<Vec<(String, String)>>,
}

impl Journal {
    /// Logs a reconcile's outcomes and changed decisions; true if it performed an action
    /// (alerts do not count: a storm must not speed the loop up).
    async fn reconciled(
        &mut self,
        outcome: &ReconcileOutcome,
        now: Timestamp,
        took: Duration,
        scheduler: &LocalProcessScheduler,
    ) -> bool {
        let finished_ms = Timestamp::now().as_millis();
        let decisions: BTreeSet<(String, String, String)> = outcome
            .plan
            .decisions
            .iter()
            .map(|d| {
                let verdict = serde_json::to_value(d.verdict)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                (d.subject.clone(), verdict, d.reason.clone())
            })
            .collect();
        let changed = decisions != self.decisions;
        if !outcome.plan.actions.is_empty() || changed {
            let summary = &outcome.plan.summary;
            tracing::info!(
                target: LOG_TARGET,
                event = "reconcile",
                at_ms = now.as_millis(),
                took_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                nodes = summary.nodes,
                healthy = summary.healthy,
                unhealthy = summary.unhealthy,
                lost = summary.lost,
                in_grace = summary.in_grace,
                storm = summary.storm,
                actions = outcome.plan.actions.len(),
                done = outcome.report.done(),
                skipped = outcome.report.skipped(),
                failed = outcome.report.failed(),
            );
        }
        for (subject, verdict, reason) in decisions.difference(&self.decisions) {
            tracing::info!(target: LOG_TARGET, event = "decision", at_ms = now.as_millis(), subject, verdict, reason);
        }
        self.decisions = decisions;

        let mut acted = false;
        for performed in &outcome.report.outcomes {
            let (result, detail) = match &performed.outcome {
                Outcome::Done(detail) => ("done", detail),
                Outcome::Skipped(detail) => ("skipped", detail),
                Outcome::Failed(detail) => ("failed", detail),
            };
            let action = &performed.action;
            acted |= result == "done" && !matches!(action, Action::Alert { .. });
            let (node, zone, task) = match action {
                Action::Launch { node, zone, .. } => {
                    (Some(node), Some(zone), (result == "done").then_some(detail))
                }
                Action::RegisterTarget { node, task, .. }
                | Action::StopTask { node, task, .. }
                | Action::AdoptTask { node, task, .. } => (Some(node), None, Some(&task.0)),
                Action::DeregisterTarget { node, task, .. } => {
                    (Some(node), None, task.as_ref().map(|t| &t.0))
                }
                Action::Alert { .. } => (None, None, None),
            };
            // A launch's task start, as the scheduler recorded it.
            let task_started_ms = match (action, task) {
                (Action::Launch { .. }, Some(task)) => scheduler
                    .describe_tasks(&[TaskId::new(task.clone())])
                    .await
                    .ok()
                    .and_then(|tasks| tasks.first().and_then(|t| t.started_at))
                    .map(Timestamp::as_millis),
                _ => None,
            };
            tracing::info!(
                target: LOG_TARGET,
                event = "action",
                action = action_name(action),
                node = node.map(NodeId::as_str),
                zone = zone.map(Zone::as_str),
                task = task.map(String::as_str),
                key = performed.claimed_key.as_deref(),
                outcome = result,
                detail = detail.as_str(),
                reason = action.reason(),
                planned_at_ms = now.as_millis(),
                finished_at_ms = finished_ms,
                task_started_ms,
            );
        }
        acted
    }

    /// Logs task exits, newly ready tasks and changed routes; true if the routes changed.
    fn observed(&mut self, view: &FleetView) -> bool {
        for task in &view.tasks {
            if task.last_status == TaskStatus::Stopped && self.exited.insert(task.id.clone()) {
                tracing::info!(
                    target: LOG_TARGET,
                    event = "task_exit",
                    task = task.id.as_str(),
                    node = task.node.as_ref().map(NodeId::as_str),
                    stopped_at_ms = task.stopped_at.map(Timestamp::as_millis),
                    reason = task.stop_reason.as_deref(),
                );
            }
        }
        let started: BTreeMap<&TaskId, Option<u64>> = view
            .tasks
            .iter()
            .map(|t| (&t.id, t.started_at.map(Timestamp::as_millis)))
            .collect();
        for route in view.routes.iter().filter(|r| r.healthy) {
            if self.ready.insert(route.task.clone()) {
                tracing::info!(
                    target: LOG_TARGET,
                    event = "node_ready",
                    node = route.node.as_str(),
                    task = route.task.as_str(),
                    url = route.url.as_str(),
                    at_ms = view.at.as_millis(),
                    task_started_ms = started.get(&route.task).copied().flatten(),
                );
            }
        }
        let routes = view.balancer_nodes();
        if self.routes.as_ref() == Some(&routes) {
            return false;
        }
        tracing::info!(
            target: LOG_TARGET,
            event = "routes",
            at_ms = view.at.as_millis(),
            routes = routes
                .iter()
                .map(|(node, url)| format!("{node}={url}"))
                .collect::<Vec<_>>()
                .join(","),
        );
        self.routes = Some(routes);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_are_lettered_and_the_storm_share_lets_one_node_be_replaced() {
        let names: Vec<String> = zone_names(3).iter().map(Zone::to_string).collect();
        assert_eq!(names, ["local-a", "local-b", "local-c"]);
        assert_eq!(zone_names(MAX_ZONES).len(), 26);
        assert_eq!(zone_names(MAX_ZONES)[25].as_str(), "local-z");

        let three = fleet_config(3, 3);
        assert_eq!(
            (
                three.serving_nodes,
                three.healthy_floor,
                three.storm_percent
            ),
            (3, 2, 34)
        );
        for nodes in 1..=40u32 {
            let config = fleet_config(nodes, 3);
            let share = nodefleet_reactor::planner::Share::from_percent(config.storm_percent);
            let n = nodes as usize;
            assert!(
                !share.is_exceeded_by(1, n),
                "one failed node of {nodes} must be replaced, not a storm"
            );
            if nodes >= 3 {
                assert_eq!(config.storm_percent, STORM_PERCENT);
                assert!(
                    share.is_exceeded_by(n.div_ceil(2), n),
                    "half of {nodes} failing is a storm"
                );
            }
        }
    }
}
