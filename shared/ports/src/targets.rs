//! The `TargetRegistry` port: putting nodes behind the load balancer and reading what the
//! load balancer thinks of them.
//!
//! A [`Target`] is what the load balancer routes to. With bridge networking that is the EC2
//! instance and the host port Docker published; with awsvpc it is the task's own IP and the
//! container port ([`target_for_task`] decides, in one place).
//!
//! # Error policy
//!
//! [`RegistryError::is_retryable`] is true for throttling and unreachable endpoints.
//! Registering a registered target, or deregistering an unknown one, is not an error.
//! `InvalidTarget` (an instance that is not running, an IP outside the VPC) and
//! `NotFound` (the target group is gone) are not retryable.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::model::Zone;
use crate::scheduler::TaskInfo;

/// Something the load balancer routes to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Target {
    /// An EC2 instance id (bridge) or an IP address (awsvpc, local).
    pub id: String,
    pub port: u16,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.id, self.port)
    }
}

/// The JSON-RPC port a node listens on inside its container: Ethereum clients' standard
/// HTTP RPC port. With bridge networking the host publishes it on a port of its own.
pub const NODE_RPC_PORT: u16 = 8545;

/// How node tasks are networked, which decides what their target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// Docker bridge: instance id plus the host port bound to the container port.
    Bridge,
    /// One ENI per task: the task's IP plus the container port.
    Awsvpc,
}

/// The target for `task`'s `container_port`, or `None` if the task does not have one yet
/// (no instance or IP assigned, or the port not published).
pub fn target_for_task(task: &TaskInfo, mode: NetworkMode, container_port: u16) -> Option<Target> {
    match mode {
        NetworkMode::Bridge => {
            let instance = task.instance_id.as_ref()?;
            let binding = task
                .bindings
                .iter()
                .find(|b| b.container_port == container_port)?;
            Some(Target {
                id: instance.clone(),
                port: binding.host_port,
            })
        }
        NetworkMode::Awsvpc => task.ip.map(|ip| Target {
            id: ip.to_string(),
            port: container_port,
        }),
    }
}

/// The load balancer's view of a target (ELBv2's `TargetHealth.State`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetState {
    /// Registered, first health checks not passed yet.
    Initial,
    Healthy,
    Unhealthy,
    /// Not in use (target group not attached, zone disabled).
    Unused,
    /// Deregistering: finishing in-flight connections.
    Draining,
    /// Health checks are off or the state cannot be told.
    Unavailable,
}

impl TargetState {
    /// Parses ELBv2's spelling; anything unknown is `Unavailable`.
    pub fn from_elb(state: &str) -> TargetState {
        match state {
            "initial" => TargetState::Initial,
            "healthy" => TargetState::Healthy,
            "unhealthy" | "unhealthy.draining" => TargetState::Unhealthy,
            "unused" => TargetState::Unused,
            "draining" => TargetState::Draining,
            _ => TargetState::Unavailable,
        }
    }
}

/// One target's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetHealth {
    pub target: Target,
    /// The zone the load balancer places it in, where it says.
    pub zone: Option<Zone>,
    pub state: TargetState,
    /// ELBv2's reason code (`Target.FailedHealthChecks`, ...) or the local probe's reason.
    pub reason: Option<String>,
    pub description: Option<String>,
}

/// Why a registry call failed. See the module doc for the error policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("target registry throttled the request: {message}")]
    Throttled { message: String },
    #[error("target registry unavailable: {message}")]
    Unavailable { message: String },
    #[error("invalid target: {message}")]
    InvalidTarget { message: String },
    #[error("target group not found: {message}")]
    NotFound { message: String },
    #[error("target registry error: {message}")]
    Backend { message: String },
}

impl RegistryError {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RegistryError::Throttled { .. } | RegistryError::Unavailable { .. }
        )
    }
}

/// Registers nodes with the load balancer and reports their health.
#[async_trait]
pub trait TargetRegistry: Send + Sync {
    async fn register(&self, targets: &[Target]) -> Result<(), RegistryError>;
    async fn deregister(&self, targets: &[Target]) -> Result<(), RegistryError>;
    /// Every registered (or draining) target with its health.
    async fn describe_health(&self) -> Result<Vec<TargetHealth>, RegistryError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TaskId;
    use crate::scheduler::{PortBinding, TaskStatus};

    fn task() -> TaskInfo {
        TaskInfo {
            id: TaskId::new("arn:aws:ecs:eu-west-1:1:task/c/1"),
            node: None,
            zone: None,
            role: None,
            snapshot: None,
            last_status: TaskStatus::Running,
            desired_status: TaskStatus::Running,
            stop_reason: None,
            started_at: None,
            stopped_at: None,
            instance_id: Some("i-0abc".into()),
            ip: Some(
                "10.0.1.7"
                    .parse()
                    .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
            ),
            bindings: vec![
                PortBinding {
                    container_port: 30303,
                    host_port: 30303,
                },
                PortBinding {
                    container_port: 8545,
                    host_port: 32768,
                },
            ],
        }
    }

    #[test]
    fn bridge_targets_are_instance_and_host_port() {
        let target = target_for_task(&task(), NetworkMode::Bridge, 8545);
        assert_eq!(
            target,
            Some(Target {
                id: "i-0abc".into(),
                port: 32768
            })
        );
        assert_eq!(target_for_task(&task(), NetworkMode::Bridge, 9999), None);
        let mut placeless = task();
        placeless.instance_id = None;
        assert_eq!(target_for_task(&placeless, NetworkMode::Bridge, 8545), None);
    }

    #[test]
    fn awsvpc_targets_are_ip_and_container_port() {
        let target = target_for_task(&task(), NetworkMode::Awsvpc, 8545);
        assert_eq!(
            target,
            Some(Target {
                id: "10.0.1.7".into(),
                port: 8545
            })
        );
    }

    #[test]
    fn elb_states_parse() {
        assert_eq!(TargetState::from_elb("healthy"), TargetState::Healthy);
        assert_eq!(
            TargetState::from_elb("unhealthy.draining"),
            TargetState::Unhealthy
        );
        assert_eq!(TargetState::from_elb("draining"), TargetState::Draining);
        assert_eq!(TargetState::from_elb("whatever"), TargetState::Unavailable);
    }
}
