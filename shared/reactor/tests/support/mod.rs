//! The world the executor scenario tests run in: a six-node fleet over three zones,
//! launched through `FakeScheduler` six hours before [`now`], its targets registered with a
//! `FakeTargetRegistry` that reports a registered target healthy from the first look, its
//! records in an in-memory `EmbeddedStateStore`. The scheduler and the state store are
//! wrapped in `nodefleet_ports::faults` wrappers, each with its own [`Faults`] handle, so a
//! test can break one without the other.

#![allow(dead_code)] // each test file uses a different part of this module

use std::time::Duration;

use nodefleet_local::EmbeddedStateStore;
use nodefleet_ports::fakes::scheduler::LaunchRecord;
use nodefleet_ports::fakes::targets::RegistryCall;
use nodefleet_ports::fakes::{FakeScheduler, FakeTargetRegistry};
use nodefleet_ports::faults::{Faults, FaultyScheduler, FaultyStateStore};
use nodefleet_ports::{
    LaunchRequest, NODE_RPC_PORT, NetworkMode, NodeId, NodeRecord, NodeState, Role, Scheduler,
    StateStore, Target, TargetRegistry, TaskId, TaskInfo, TaskStatus, Timestamp, Version, Zone,
    target_for_task,
};
use nodefleet_reactor::planner::sample::SAMPLE_GRACE;
use nodefleet_reactor::planner::{Action, Desired, Share, SpotWarning};
use nodefleet_reactor::reconcile::{
    ExecutionReport, Outcome, Ports, ReconcileMemory, ReconcileOutcome, reconcile,
};

pub const NODES: usize = 6;
pub const ZONES: usize = 3;
pub const FLEET_AGE: Duration = Duration::from_secs(6 * 60 * 60);
/// The owner every reconcile of these tests claims keys as, unless a test needs two.
pub const OWNER: &str = "reactor-a";

pub fn now() -> Timestamp {
    Timestamp::from_millis(1_800_000_000_000)
}

/// `minutes` after [`now`]: the one-minute schedule's reconciles.
pub fn minute(minutes: u64) -> Timestamp {
    now().plus(Duration::from_secs(60 * minutes))
}

pub fn zone(index: usize) -> Zone {
    Zone::new(format!("zone-{index}"))
}

pub fn node(index: usize) -> NodeId {
    NodeId::new(format!("node-{index:03}"))
}

/// A task's load-balancer target (bridge networking, the RPC port).
pub fn target_of(task: &TaskInfo) -> Target {
    target_for_task(task, NetworkMode::Bridge, NODE_RPC_PORT).unwrap()
}

pub fn is_live(task: &TaskInfo) -> bool {
    matches!(task.last_status, TaskStatus::Pending | TaskStatus::Running)
        && task.desired_status != TaskStatus::Stopped
}

pub struct World {
    pub fake: FakeScheduler,
    /// Faults of the scheduler.
    pub faults: Faults,
    pub scheduler: FaultyScheduler<FakeScheduler>,
    pub registry: FakeTargetRegistry,
    /// Faults of the state store.
    pub state_faults: Faults,
    pub state: FaultyStateStore<EmbeddedStateStore>,
    pub desired: Desired,
    /// Node index -> its first task and target.
    pub tasks: Vec<(TaskId, Target)>,
    /// Launch calls the fake saw while the fleet was built.
    pub setup_launches: usize,
}

impl World {
    pub async fn new() -> World {
        let fake = FakeScheduler::with_zones((0..ZONES).map(zone), 10);
        let faults = Faults::new();
        let scheduler = FaultyScheduler::new(fake.clone(), faults.clone());
        let registry = FakeTargetRegistry::healthy_after(0);
        let state_faults = Faults::new();
        let state = FaultyStateStore::new(
            EmbeddedStateStore::in_memory().unwrap(),
            state_faults.clone(),
        );
        let launched = now().minus(FLEET_AGE);
        fake.set_now(launched);
        let mut tasks = Vec::new();
        for index in 0..NODES {
            let report = fake
                .launch(&LaunchRequest {
                    node: node(index),
                    zone: zone(index % ZONES),
                    role: Role::Serving,
                    snapshot: None,
                    idempotency_key: format!("setup/{index}"),
                    count: 1,
                })
                .await
                .unwrap();
            let task = report.started[0].clone();
            let target = target_of(&task);
            registry
                .register(std::slice::from_ref(&target))
                .await
                .unwrap();
            state
                .save_node(&NodeRecord {
                    id: node(index),
                    task: Some(task.id.clone()),
                    zone: zone(index % ZONES),
                    target: Some(target.clone()),
                    role: Role::Serving,
                    state: NodeState::Serving,
                    snapshot: None,
                    created_at: launched,
                    updated_at: launched,
                    version: Version::NEW,
                })
                .await
                .unwrap();
            tasks.push((task.id, target));
        }
        fake.set_now(now());
        let count = u32::try_from(NODES).unwrap();
        World {
            setup_launches: fake.launches().len(),
            fake,
            faults,
            scheduler,
            registry,
            state_faults,
            state,
            desired: Desired {
                zones: (0..ZONES).map(zone).collect(),
                serving_nodes: count,
                healthy_floor: count / 2,
                storm_share: Share::ONE_THIRD,
                grace: SAMPLE_GRACE,
                snapshot: None,
                network_mode: NetworkMode::Bridge,
                container_port: NODE_RPC_PORT,
            },
            tasks,
        }
    }

    pub fn ports(&self) -> Ports<'_> {
        Ports {
            state: &self.state,
            scheduler: &self.scheduler,
            registry: &self.registry,
        }
    }

    /// One reconcile at `at` (the fake stamps what it starts with `at` too), as [`OWNER`].
    pub async fn reconcile_at(
        &self,
        memory: &ReconcileMemory,
        spot_warnings: &[SpotWarning],
        at: Timestamp,
    ) -> ReconcileOutcome {
        self.fake.set_now(at);
        reconcile(
            self.ports(),
            &self.desired,
            memory,
            spot_warnings,
            OWNER,
            at,
        )
        .await
        .unwrap()
    }

    /// Node `index`'s first task crashes.
    pub fn kill(&self, index: usize) {
        assert!(
            self.fake
                .terminate(&self.tasks[index].0, "Essential container in task exited")
        );
    }

    /// Launch calls that reached the fake since the fleet was built.
    pub fn new_launches(&self) -> Vec<LaunchRecord> {
        self.fake.launches()[self.setup_launches..].to_vec()
    }

    /// The fake's view of `task`, without advancing its lifecycle.
    pub fn task(&self, task: &TaskId) -> TaskInfo {
        self.fake
            .tasks()
            .into_iter()
            .find(|t| &t.id == task)
            .unwrap()
    }

    /// Live tasks tagged with `node`.
    pub fn live_tasks_of(&self, node: &NodeId) -> Vec<TaskId> {
        self.fake
            .tasks()
            .into_iter()
            .filter(|t| t.node.as_ref() == Some(node))
            .filter(|t| matches!(t.last_status, TaskStatus::Pending | TaskStatus::Running))
            .map(|t| t.id)
            .collect()
    }

    /// Live tasks in each zone, in zone order.
    pub fn live_per_zone(&self) -> Vec<usize> {
        let tasks = self.fake.tasks();
        (0..ZONES)
            .map(|index| {
                tasks
                    .iter()
                    .filter(|t| is_live(t) && t.zone == Some(zone(index)))
                    .count()
            })
            .collect()
    }

    pub async fn record(&self, node: &NodeId) -> NodeRecord {
        self.state.inner().get_node(node).await.unwrap().unwrap()
    }

    /// How many register (or deregister) calls named `target`, setup included.
    pub fn registry_calls_naming(&self, target: &Target, register: bool) -> usize {
        self.registry
            .calls()
            .into_iter()
            .filter(|call| match call {
                RegistryCall::Register(targets) => register && targets.contains(target),
                RegistryCall::Deregister(targets) => !register && targets.contains(target),
            })
            .count()
    }

    pub async fn audit_kinds(&self) -> Vec<String> {
        self.state
            .inner()
            .list_events(Timestamp::EPOCH, minute(24 * 60), 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }
}

pub fn launch_outcomes(report: &ExecutionReport) -> Vec<&Outcome> {
    report
        .outcomes
        .iter()
        .filter(|o| matches!(o.action, Action::Launch { .. }))
        .map(|o| &o.outcome)
        .collect()
}

/// The `StopTask` actions of a plan: (task, replaced by).
pub fn planned_stops(actions: &[Action]) -> Vec<(TaskId, Option<TaskId>)> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::StopTask {
                task, replaced_by, ..
            } => Some((task.clone(), replaced_by.clone())),
            _ => None,
        })
        .collect()
}
