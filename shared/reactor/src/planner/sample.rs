//! A sample fleet for tests, examples and benchmarks of the planner: `n` serving nodes
//! spread round-robin over `z` zones, launched long before `now`, every task running with a
//! bridge-networked target that the load balancer reports healthy. Methods then break it
//! the way real fleets break (an unhealthy target, a stopped task, a spot warning).
//!
//! Naming: node `i` is `node-<i>` in zone `zone-<i % z>` (`zone-0`, ...), its task is
//! `task-<i>`, its instance `i-<i>` and its host port `32768 + i` (Docker's first ephemeral
//! port, as ECS bridge networking assigns them).

use std::time::Duration;

use nodefleet_ports::{
    NODE_RPC_PORT, NetworkMode, NodeId, NodeRecord, NodeState, PortBinding, Role, SnapshotId,
    Target, TargetHealth, TargetState, TaskId, TaskInfo, TaskStatus, Timestamp, Version, Zone,
};

use super::{Desired, Observed, Share, SpotWarning};

/// The sample's grace window: 30 minutes, about a small client's hydration plus catch-up.
pub const SAMPLE_GRACE: Duration = Duration::from_secs(30 * 60);

/// How long before `now` the sample's nodes were launched: well past grace.
pub const SAMPLE_AGE: Duration = Duration::from_secs(6 * 60 * 60);

/// Docker's first ephemeral host port.
const FIRST_HOST_PORT: u16 = 32768;

/// A desired state and an observation of a fleet that matches it.
#[derive(Debug, Clone)]
pub struct SampleFleet {
    pub desired: Desired,
    pub observed: Observed,
    pub now: Timestamp,
}

pub fn node_id(index: usize) -> NodeId {
    NodeId::new(format!("node-{index:03}"))
}

pub fn task_id(index: usize) -> TaskId {
    TaskId::new(format!("task-{index:03}"))
}

pub fn zone(index: usize) -> Zone {
    Zone::new(format!("zone-{index}"))
}

pub fn instance_id(index: usize) -> String {
    format!("i-{index:08}")
}

/// A running, tagged, bridge-networked task for `node` in `zone` on instance `instance`.
pub fn running_task(
    id: TaskId,
    node: NodeId,
    zone: Zone,
    instance: String,
    host_port: u16,
    started_at: Timestamp,
) -> TaskInfo {
    TaskInfo {
        id,
        node: Some(node),
        zone: Some(zone),
        role: Some(Role::Serving),
        snapshot: Some(SnapshotId::new("snap-1")),
        last_status: TaskStatus::Running,
        desired_status: TaskStatus::Running,
        stop_reason: None,
        started_at: Some(started_at),
        stopped_at: None,
        instance_id: Some(instance),
        ip: None,
        bindings: vec![PortBinding {
            container_port: NODE_RPC_PORT,
            host_port,
        }],
    }
}

pub fn target_health(target: Target, zone: Zone, state: TargetState) -> TargetHealth {
    TargetHealth {
        target,
        zone: Some(zone),
        state,
        reason: (state != TargetState::Healthy).then(|| "Target.FailedHealthChecks".to_owned()),
        description: None,
    }
}

impl SampleFleet {
    /// `nodes` healthy serving nodes over `zones` zones, desired count `nodes`, floor half.
    pub fn healthy(nodes: usize, zones: usize, now: Timestamp) -> SampleFleet {
        let launched = now.minus(SAMPLE_AGE);
        let zones = zones.max(1);
        let mut observed = Observed::default();
        for index in 0..nodes {
            let zone = zone(index % zones);
            let port = sample_port(index);
            let target = Target {
                id: instance_id(index),
                port,
            };
            observed.nodes.push(NodeRecord {
                id: node_id(index),
                task: Some(task_id(index)),
                zone: zone.clone(),
                target: Some(target.clone()),
                role: Role::Serving,
                state: NodeState::Serving,
                snapshot: Some(SnapshotId::new("snap-1")),
                created_at: launched,
                updated_at: launched,
                version: Version(1),
            });
            observed.tasks.push(running_task(
                task_id(index),
                node_id(index),
                zone.clone(),
                instance_id(index),
                port,
                launched,
            ));
            observed
                .targets
                .push(target_health(target, zone, TargetState::Healthy));
        }
        let count = u32::try_from(nodes).unwrap_or(u32::MAX);
        SampleFleet {
            desired: Desired {
                zones: (0..zones).map(zone).collect(),
                serving_nodes: count,
                healthy_floor: count / 2,
                storm_share: Share::ONE_THIRD,
                grace: SAMPLE_GRACE,
                snapshot: Some(SnapshotId::new("snap-1")),
                network_mode: NetworkMode::Bridge,
                container_port: NODE_RPC_PORT,
            },
            observed,
            now,
        }
    }

    /// Node `index`'s target.
    pub fn target(&self, index: usize) -> Target {
        Target {
            id: instance_id(index),
            port: sample_port(index),
        }
    }

    /// Sets node `index`'s target state as the load balancer reports it.
    pub fn set_target_state(&mut self, index: usize, state: TargetState) {
        let target = self.target(index);
        for health in &mut self.observed.targets {
            if health.target == target {
                health.state = state;
                health.reason =
                    (state != TargetState::Healthy).then(|| "Target.FailedHealthChecks".into());
            }
        }
    }

    /// Node `index`'s task has stopped (its target still registered, as after a crash).
    pub fn stop_task(&mut self, index: usize, reason: &str) {
        let id = task_id(index);
        let now = self.now;
        for task in &mut self.observed.tasks {
            if task.id == id {
                task.last_status = TaskStatus::Stopped;
                task.desired_status = TaskStatus::Stopped;
                task.stop_reason = Some(reason.to_owned());
                task.stopped_at = Some(now);
            }
        }
        self.set_target_state(index, TargetState::Unhealthy);
    }

    /// A spot interruption warning for node `index`'s instance.
    pub fn warn_spot(&mut self, index: usize) {
        self.observed.spot_warnings.push(SpotWarning {
            instance_id: instance_id(index),
            at: self.now,
        });
    }

    /// Node `index` (and its task) was launched `ago` before now.
    pub fn launched_ago(&mut self, index: usize, ago: Duration) {
        let at = self.now.minus(ago);
        let id = node_id(index);
        for node in &mut self.observed.nodes {
            if node.id == id {
                node.created_at = at;
            }
        }
        for task in &mut self.observed.tasks {
            if task.node.as_ref() == Some(&id) {
                task.started_at = Some(at);
            }
        }
    }
}

fn sample_port(index: usize) -> u16 {
    FIRST_HOST_PORT.saturating_add(u16::try_from(index).unwrap_or(u16::MAX))
}
