//! The `Scheduler` port: starting and stopping the fleet's node tasks, and seeing them.
//!
//! A launch names the zone, the role and the snapshot to hydrate from, and carries an
//! idempotency key: the adapter makes a retried launch with the same key start no second
//! task (ECS: `clientToken`). A launch can partly fail; the [`LaunchReport`] carries both
//! the tasks that started and typed [`PlacementFailure`]s, so a caller can move the missing
//! nodes to another zone.
//!
//! # Error policy
//!
//! Placement failures are data in the report, not errors: the call itself succeeded.
//! [`SchedulerError::is_retryable`] is true for throttling and unreachable endpoints.
//! `InvalidRequest` (missing cluster or task definition, bad configuration) needs an
//! operator; retrying cannot help.

use std::net::IpAddr;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::Timestamp;
use crate::model::{NodeId, Role, SnapshotId, TaskId, Zone};

/// The environment a scheduler gives a node task: how the node agent inside learns who it
/// is. Every adapter sets the first four; `NODEFLEET_SNAPSHOT_ID` only when there is one.
pub const ENV_NODE_ID: &str = "NODEFLEET_NODE_ID";
pub const ENV_ROLE: &str = "NODEFLEET_ROLE";
pub const ENV_ZONE: &str = "NODEFLEET_ZONE";
pub const ENV_SNAPSHOT_ID: &str = "NODEFLEET_SNAPSHOT_ID";

/// A request to start node tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchRequest {
    /// The node the task is for; the task carries it so it can be recognised later.
    pub node: NodeId,
    pub zone: Zone,
    pub role: Role,
    /// Snapshot to hydrate the data dir from; `None` syncs from genesis.
    pub snapshot: Option<SnapshotId>,
    /// A retried launch with the same key starts nothing new.
    pub idempotency_key: String,
    /// How many tasks to start (usually 1).
    pub count: u32,
}

/// What a launch did: tasks started, and why the others did not.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LaunchReport {
    pub started: Vec<TaskInfo>,
    pub failures: Vec<LaunchFailure>,
}

/// One task that could not be placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchFailure {
    pub zone: Zone,
    pub reason: PlacementFailure,
    /// The scheduler's own words (ECS `failures[].detail`, or the reason string).
    pub detail: String,
}

/// Why a task could not be placed. Parsed from ECS's `failures[].reason`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PlacementFailure {
    /// No instance in the zone has the CPU left.
    ResourceCpu,
    /// No instance in the zone has the memory left.
    ResourceMemory,
    /// The port the task needs is taken on every instance.
    ResourcePorts,
    /// No network interface left for an awsvpc task.
    ResourceEni,
    /// No instance matches the placement constraints (instance family, zone).
    Attribute,
    /// The instance's ECS agent is disconnected.
    Agent,
    /// The container instance (or cluster capacity) is missing.
    Missing,
    /// Anything else, verbatim.
    Other(String),
}

impl PlacementFailure {
    /// Parses ECS's reason: `RESOURCE:MEMORY`, `ATTRIBUTE`, `AGENT`, `MISSING`, ...
    pub fn parse(reason: &str) -> PlacementFailure {
        let reason = reason.trim();
        let head = reason.split([' ', '(']).next().unwrap_or(reason);
        match head {
            "RESOURCE:CPU" => PlacementFailure::ResourceCpu,
            "RESOURCE:MEMORY" => PlacementFailure::ResourceMemory,
            "RESOURCE:PORTS" | "RESOURCE:PORTS_TCP" | "RESOURCE:PORTS_UDP" => {
                PlacementFailure::ResourcePorts
            }
            "RESOURCE:ENI" => PlacementFailure::ResourceEni,
            "ATTRIBUTE" => PlacementFailure::Attribute,
            "AGENT" => PlacementFailure::Agent,
            "MISSING" => PlacementFailure::Missing,
            _ => PlacementFailure::Other(reason.to_owned()),
        }
    }

    /// The ECS spelling.
    pub fn as_reason(&self) -> &str {
        match self {
            PlacementFailure::ResourceCpu => "RESOURCE:CPU",
            PlacementFailure::ResourceMemory => "RESOURCE:MEMORY",
            PlacementFailure::ResourcePorts => "RESOURCE:PORTS",
            PlacementFailure::ResourceEni => "RESOURCE:ENI",
            PlacementFailure::Attribute => "ATTRIBUTE",
            PlacementFailure::Agent => "AGENT",
            PlacementFailure::Missing => "MISSING",
            PlacementFailure::Other(reason) => reason,
        }
    }

    /// True if the zone cannot take the task now, so the caller should try another zone.
    pub fn is_zone_capacity(&self) -> bool {
        !matches!(self, PlacementFailure::Other(_))
    }
}

/// A task's lifecycle, folded from ECS's nine statuses to the four decisions need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// PROVISIONING, PENDING, ACTIVATING.
    Pending,
    Running,
    /// DEACTIVATING, STOPPING, DEPROVISIONING.
    Stopping,
    Stopped,
}

impl TaskStatus {
    /// Folds an ECS status (`lastStatus` / `desiredStatus`).
    pub fn from_ecs(status: &str) -> TaskStatus {
        match status {
            "RUNNING" => TaskStatus::Running,
            "DEACTIVATING" | "STOPPING" | "DEPROVISIONING" => TaskStatus::Stopping,
            "STOPPED" | "DELETED" => TaskStatus::Stopped,
            _ => TaskStatus::Pending,
        }
    }
}

/// A container port published on the host (bridge networking).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortBinding {
    pub container_port: u16,
    pub host_port: u16,
}

/// One task of the fleet, as the scheduler reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    pub id: TaskId,
    /// Read back from the task's tags / labels; `None` for a task the fleet did not start.
    pub node: Option<NodeId>,
    pub zone: Option<Zone>,
    pub role: Option<Role>,
    pub snapshot: Option<SnapshotId>,
    pub last_status: TaskStatus,
    pub desired_status: TaskStatus,
    /// Why it stopped, in the scheduler's words (ECS `stoppedReason`, or exit status).
    pub stop_reason: Option<String>,
    pub started_at: Option<Timestamp>,
    pub stopped_at: Option<Timestamp>,
    /// The EC2 instance it runs on (bridge networking).
    pub instance_id: Option<String>,
    /// Its own address (awsvpc networking, or the local process's host); with bridge
    /// networking, its instance's private address where the scheduler knows it (its
    /// published ports are there).
    pub ip: Option<IpAddr>,
    pub bindings: Vec<PortBinding>,
}

/// Why a scheduler call failed. See the module doc for the error policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedulerError {
    #[error("scheduler throttled the request: {message}")]
    Throttled { message: String },
    #[error("scheduler unavailable: {message}")]
    Unavailable { message: String },
    /// The request cannot succeed as made: missing cluster or task definition, bad input.
    #[error("scheduler rejected the request: {message}")]
    InvalidRequest { message: String },
    #[error("task {task} does not exist")]
    TaskNotFound { task: TaskId },
    #[error("scheduler error: {message}")]
    Backend { message: String },
}

impl SchedulerError {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            SchedulerError::Throttled { .. } | SchedulerError::Unavailable { .. }
        )
    }
}

/// Starts, stops and lists the fleet's node tasks.
#[async_trait]
pub trait Scheduler: Send + Sync {
    /// Starts `request.count` tasks in `request.zone`.
    async fn launch(&self, request: &LaunchRequest) -> Result<LaunchReport, SchedulerError>;
    /// Asks a task to stop. Stopping a stopped task, or one the scheduler has forgotten
    /// (ECS forgets stopped tasks after about an hour), is fine; `TaskNotFound` only where
    /// the adapter can tell the id was never one of its tasks.
    async fn stop(&self, task: &TaskId, reason: &str) -> Result<(), SchedulerError>;
    /// The fleet's tasks: running ones and recently stopped ones.
    async fn list_tasks(&self) -> Result<Vec<TaskInfo>, SchedulerError>;
    /// The named tasks; unknown ids are left out of the answer.
    async fn describe_tasks(&self, tasks: &[TaskId]) -> Result<Vec<TaskInfo>, SchedulerError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecs_failure_reasons_parse() {
        for (reason, expected) in [
            ("RESOURCE:CPU", PlacementFailure::ResourceCpu),
            ("RESOURCE:MEMORY", PlacementFailure::ResourceMemory),
            ("RESOURCE:PORTS_TCP", PlacementFailure::ResourcePorts),
            ("RESOURCE:ENI", PlacementFailure::ResourceEni),
            ("ATTRIBUTE", PlacementFailure::Attribute),
            ("AGENT", PlacementFailure::Agent),
            ("MISSING", PlacementFailure::Missing),
        ] {
            let parsed = PlacementFailure::parse(reason);
            assert_eq!(parsed, expected, "{reason}");
            assert!(parsed.is_zone_capacity());
        }
        let other = PlacementFailure::parse("You've reached the limit on the number of tasks");
        assert!(!other.is_zone_capacity());
        assert_eq!(
            other.as_reason(),
            "You've reached the limit on the number of tasks"
        );
    }

    #[test]
    fn ecs_statuses_fold() {
        assert_eq!(TaskStatus::from_ecs("PROVISIONING"), TaskStatus::Pending);
        assert_eq!(TaskStatus::from_ecs("ACTIVATING"), TaskStatus::Pending);
        assert_eq!(TaskStatus::from_ecs("RUNNING"), TaskStatus::Running);
        assert_eq!(TaskStatus::from_ecs("DEPROVISIONING"), TaskStatus::Stopping);
        assert_eq!(TaskStatus::from_ecs("STOPPED"), TaskStatus::Stopped);
    }
}
