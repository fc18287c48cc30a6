//! `FakeScheduler`: an in-memory scheduler that models what ECS does with placement, which
//! moto ignores.
//!
//! The model:
//!
//! - **Zones** have a capacity (node tasks at once: one storage-optimised instance per node)
//!   and an instance family. A task holds its slot until it is `Stopped`.
//! - **Placement**: a launch into a zone starts as many tasks as there are free slots and
//!   reports each missing one as `RESOURCE:MEMORY` (what ECS says when the zone's instances
//!   are full). A zone whose family the fleet does not accept (default i3, i3en, i4i, as the
//!   `EcsScheduler` constraint), or a zone the fake does not know, reports `ATTRIBUTE`: no
//!   instance matches the constraints. To lose a zone with any other reason, wrap the fake
//!   in a [`crate::faults::FaultyScheduler`] and use [`crate::faults::Faults::fail_zone`].
//! - **Idempotency**: a launch with a key seen before starts nothing and answers with the
//!   first launch's report (its tasks as they are now), as ECS does for a repeated
//!   `clientToken`.
//! - **Lifecycle**: a task starts `Pending` and is `Running` from the next read
//!   (`list_tasks`/`describe_tasks`) on; [`Scheduler::stop`] makes it `Stopping`, and the next
//!   read shows it `Stopped`. [`FakeScheduler::terminate`] stops a task at once with a reason
//!   of the test's choosing (a crash, a spot interruption). Stopping an unknown or stopped
//!   task is fine, as with ECS, where stopped tasks are forgotten after a while.
//! - **Addresses**: every task gets its own instance id, a private IP (`10.<zone>.<n>`) and
//!   a host port per container port (bridge networking publishes container ports on
//!   ephemeral host ports from 32768), so [`crate::target_for_task`] works in both modes.
//!
//! The handle is cheap to clone; clones share one state, so a test keeps one to drive hooks
//! while the code under test owns another.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::Timestamp;
use crate::model::{TaskId, Zone};
use crate::scheduler::{
    LaunchFailure, LaunchReport, LaunchRequest, PlacementFailure, PortBinding, Scheduler,
    SchedulerError, TaskInfo, TaskStatus,
};

/// The instance families the fleet accepts by default: the storage-optimised ones with local
/// NVMe (the same default as `EcsScheduler`'s placement constraint).
pub const DEFAULT_ACCEPTED_FAMILIES: &[&str] = &["i3", "i3en", "i4i"];

/// The family a zone gets unless the test names one.
pub const DEFAULT_ZONE_FAMILY: &str = "i3";

/// The container ports a task publishes by default: JSON-RPC and devp2p.
pub const DEFAULT_CONTAINER_PORTS: &[u16] = &[8545, 30303];

/// Where Docker's ephemeral host-port range starts (bridge networking, dynamic host ports).
const FIRST_EPHEMERAL_HOST_PORT: u16 = 32768;

/// The reason a stopped task carries when it was stopped through [`Scheduler::stop`] without
/// one, as ECS words a user stop.
const DEFAULT_STOP_REASON: &str = "Task stopped by user";

/// One zone of the fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeZone {
    /// Node tasks the zone can run at once.
    pub capacity: u32,
    /// The instance family of its instances (`i3`, `m5`, ...).
    pub instance_family: String,
}

/// One call of [`Scheduler::launch`], as the fake saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchRecord {
    pub request: LaunchRequest,
    pub report: LaunchReport,
    /// True if the key had been seen before and nothing was started.
    pub replayed: bool,
}

#[derive(Debug)]
struct State {
    zones: BTreeMap<Zone, FakeZone>,
    accepted_families: Vec<String>,
    container_ports: Vec<u16>,
    /// Tasks by id; ids sort in launch order (zero-padded sequence).
    tasks: BTreeMap<TaskId, TaskInfo>,
    /// Idempotency key -> the first report made under it (task ids and failures).
    keys: HashMap<String, (Vec<TaskId>, Vec<LaunchFailure>)>,
    launches: Vec<LaunchRecord>,
    next_task: u64,
    /// The time launches and stops are stamped with; `None` is the wall clock.
    now: Option<Timestamp>,
}

impl State {
    fn now(&self) -> Timestamp {
        self.now.unwrap_or_else(Timestamp::now)
    }

    fn running_in(&self, zone: &Zone) -> u32 {
        let count = self
            .tasks
            .values()
            .filter(|t| t.zone.as_ref() == Some(zone) && t.last_status != TaskStatus::Stopped)
            .count();
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    /// Why `zone` cannot take any task at all, if it cannot.
    fn zone_refusal(&self, zone: &Zone) -> Option<(PlacementFailure, String)> {
        let Some(model) = self.zones.get(zone) else {
            return Some((
                PlacementFailure::Attribute,
                format!("no container instance in {zone} matches the constraints"),
            ));
        };
        if !self
            .accepted_families
            .iter()
            .any(|f| f == &model.instance_family)
        {
            return Some((
                PlacementFailure::Attribute,
                format!(
                    "instances in {zone} are {}, the fleet accepts {:?}",
                    model.instance_family, self.accepted_families
                ),
            ));
        }
        None
    }

    fn new_task(&mut self, request: &LaunchRequest, zone_index: usize) -> TaskInfo {
        self.next_task += 1;
        let sequence = self.next_task;
        let host = u8::try_from(sequence % 250 + 1).unwrap_or(1);
        let subnet = u8::try_from(zone_index % 250).unwrap_or(0);
        let third = u8::try_from((sequence / 250) % 250).unwrap_or(0);
        let bindings = self
            .container_ports
            .iter()
            .enumerate()
            .map(|(index, &container_port)| PortBinding {
                container_port,
                host_port: FIRST_EPHEMERAL_HOST_PORT
                    .saturating_add(u16::try_from(index).unwrap_or(u16::MAX)),
            })
            .collect();
        TaskInfo {
            id: TaskId::new(format!("fake-task-{sequence:08}")),
            node: Some(request.node.clone()),
            zone: Some(request.zone.clone()),
            role: Some(request.role),
            snapshot: request.snapshot.clone(),
            last_status: TaskStatus::Pending,
            desired_status: TaskStatus::Running,
            stop_reason: None,
            started_at: Some(self.now()),
            stopped_at: None,
            instance_id: Some(format!("i-fake{sequence:012x}")),
            ip: Some(IpAddr::V4(Ipv4Addr::new(10, subnet, third, host))),
            bindings,
        }
    }

    /// One read's worth of progress: pending tasks run, stopping tasks stop.
    fn advance(&mut self) {
        let now = self.now();
        for task in self.tasks.values_mut() {
            match task.last_status {
                TaskStatus::Pending if task.desired_status == TaskStatus::Running => {
                    task.last_status = TaskStatus::Running;
                }
                TaskStatus::Pending | TaskStatus::Stopping => {
                    task.last_status = TaskStatus::Stopped;
                    task.stopped_at.get_or_insert(now);
                }
                TaskStatus::Running | TaskStatus::Stopped => {}
            }
        }
    }

    fn tasks_by_id(&self, ids: &[TaskId]) -> Vec<TaskInfo> {
        ids.iter()
            .filter_map(|id| self.tasks.get(id).cloned())
            .collect()
    }
}

/// A stateful in-memory [`Scheduler`]; see the module doc for what it models.
#[derive(Debug, Clone)]
pub struct FakeScheduler {
    state: Arc<Mutex<State>>,
}

impl Default for FakeScheduler {
    fn default() -> Self {
        FakeScheduler::new()
    }
}

impl FakeScheduler {
    /// A scheduler with no zones (every launch fails with `ATTRIBUTE`) that accepts the
    /// default families and publishes the default container ports.
    pub fn new() -> FakeScheduler {
        FakeScheduler {
            state: Arc::new(Mutex::new(State {
                zones: BTreeMap::new(),
                accepted_families: DEFAULT_ACCEPTED_FAMILIES
                    .iter()
                    .map(|f| (*f).to_owned())
                    .collect(),
                container_ports: DEFAULT_CONTAINER_PORTS.to_vec(),
                tasks: BTreeMap::new(),
                keys: HashMap::new(),
                launches: Vec::new(),
                next_task: 0,
                now: None,
            })),
        }
    }

    /// A scheduler with `zones`, each able to run `capacity` tasks on the default family.
    pub fn with_zones<Z: Into<Zone>>(
        zones: impl IntoIterator<Item = Z>,
        capacity: u32,
    ) -> FakeScheduler {
        let fake = FakeScheduler::new();
        for zone in zones {
            fake.set_zone(zone, capacity, DEFAULT_ZONE_FAMILY);
        }
        fake
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already; the state is still
        // the best account of what happened.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds or replaces a zone.
    pub fn set_zone(&self, zone: impl Into<Zone>, capacity: u32, instance_family: &str) {
        self.lock().zones.insert(
            zone.into(),
            FakeZone {
                capacity,
                instance_family: instance_family.to_owned(),
            },
        );
    }

    /// Changes a zone's capacity (tasks already running there keep running).
    pub fn set_capacity(&self, zone: &Zone, capacity: u32) {
        if let Some(model) = self.lock().zones.get_mut(zone) {
            model.capacity = capacity;
        }
    }

    /// The instance families a launch may be placed on (replaces the default list).
    pub fn set_accepted_families<S: Into<String>>(&self, families: impl IntoIterator<Item = S>) {
        self.lock().accepted_families = families.into_iter().map(Into::into).collect();
    }

    /// The container ports new tasks publish (replaces the default list).
    pub fn set_container_ports(&self, ports: &[u16]) {
        self.lock().container_ports = ports.to_vec();
    }

    /// Stops `task` at once with `reason`, as a crash (`Essential container in task exited`)
    /// or a spot interruption (`Host EC2 (instance i-...) terminated.`) would. Returns false if
    /// the task is unknown.
    pub fn terminate(&self, task: &TaskId, reason: &str) -> bool {
        let mut state = self.lock();
        let now = state.now();
        match state.tasks.get_mut(task) {
            Some(info) => {
                info.last_status = TaskStatus::Stopped;
                info.desired_status = TaskStatus::Stopped;
                info.stop_reason = Some(reason.to_owned());
                info.stopped_at.get_or_insert(now);
                true
            }
            None => false,
        }
    }

    /// Stamps launches and stops with `now` instead of the wall clock.
    pub fn set_now(&self, now: Timestamp) {
        self.lock().now = Some(now);
    }

    /// Every launch call so far, in order.
    pub fn launches(&self) -> Vec<LaunchRecord> {
        self.lock().launches.clone()
    }

    /// Every task the fake knows, in launch order, without advancing their lifecycle.
    pub fn tasks(&self) -> Vec<TaskInfo> {
        self.lock().tasks.values().cloned().collect()
    }

    /// Tasks in `zone` that hold a slot (not yet stopped).
    pub fn active_in(&self, zone: &Zone) -> u32 {
        self.lock().running_in(zone)
    }

    /// The zone's model, if it exists.
    pub fn zone(&self, zone: &Zone) -> Option<FakeZone> {
        self.lock().zones.get(zone).cloned()
    }
}

#[async_trait]
impl Scheduler for FakeScheduler {
    async fn launch(&self, request: &LaunchRequest) -> Result<LaunchReport, SchedulerError> {
        let mut state = self.lock();
        if let Some((ids, failures)) = state.keys.get(&request.idempotency_key) {
            let report = LaunchReport {
                started: state.tasks_by_id(ids),
                failures: failures.clone(),
            };
            state.launches.push(LaunchRecord {
                request: request.clone(),
                report: report.clone(),
                replayed: true,
            });
            return Ok(report);
        }

        let mut report = LaunchReport::default();
        let refusal = state.zone_refusal(&request.zone);
        let free = match (&refusal, state.zones.get(&request.zone)) {
            (None, Some(model)) => model
                .capacity
                .saturating_sub(state.running_in(&request.zone)),
            _ => 0,
        };
        let zone_index = state
            .zones
            .keys()
            .position(|z| z == &request.zone)
            .unwrap_or(0);
        for placed in 0..request.count {
            if placed < free {
                let task = state.new_task(request, zone_index);
                state.tasks.insert(task.id.clone(), task.clone());
                report.started.push(task);
            } else {
                let (reason, detail) = refusal.clone().unwrap_or_else(|| {
                    (
                        PlacementFailure::ResourceMemory,
                        format!("zone {} is full ({free} free slot(s))", request.zone),
                    )
                });
                report.failures.push(LaunchFailure {
                    zone: request.zone.clone(),
                    reason,
                    detail,
                });
            }
        }
        let ids = report.started.iter().map(|t| t.id.clone()).collect();
        state.keys.insert(
            request.idempotency_key.clone(),
            (ids, report.failures.clone()),
        );
        state.launches.push(LaunchRecord {
            request: request.clone(),
            report: report.clone(),
            replayed: false,
        });
        Ok(report)
    }

    async fn stop(&self, task: &TaskId, reason: &str) -> Result<(), SchedulerError> {
        let mut state = self.lock();
        if let Some(info) = state.tasks.get_mut(task)
            && info.desired_status != TaskStatus::Stopped
        {
            info.desired_status = TaskStatus::Stopped;
            if info.last_status != TaskStatus::Stopped {
                info.last_status = TaskStatus::Stopping;
            }
            let reason = if reason.trim().is_empty() {
                DEFAULT_STOP_REASON
            } else {
                reason
            };
            info.stop_reason.get_or_insert_with(|| reason.to_owned());
        }
        Ok(())
    }

    async fn list_tasks(&self) -> Result<Vec<TaskInfo>, SchedulerError> {
        let mut state = self.lock();
        state.advance();
        Ok(state.tasks.values().cloned().collect())
    }

    async fn describe_tasks(&self, tasks: &[TaskId]) -> Result<Vec<TaskInfo>, SchedulerError> {
        let mut state = self.lock();
        state.advance();
        let mut seen = std::collections::HashSet::new();
        let unique: Vec<TaskId> = tasks
            .iter()
            .filter(|id| seen.insert(*id))
            .cloned()
            .collect();
        Ok(state.tasks_by_id(&unique))
    }
}
