//! `ElbTargetRegistry`: the `TargetRegistry` port on one ELBv2 target group (the fleet's
//! Network Load Balancer target group).
//!
//! The target group's type follows the node task's networking: `instance` targets for bridge
//! networking (the EC2 instance id and the host port Docker published), `ip` targets for
//! awsvpc (the task's IP and the container port). A [`Target`] already carries the id and the
//! port ([`nodefleet_ports::target_for_task`] chose them); the registry is told the mode so it
//! refuses a target of the wrong kind before ELBv2 does, with a clearer message.
//!
//! Health comes from DescribeTargetHealth: the state through [`TargetState::from_elb`], the
//! reason code (`Elb.RegistrationInProgress`, `Target.FailedHealthChecks`, ...) and
//! description as ELBv2 words them, and the zone where the answer names one (`all`, which
//! ELBv2 says for IP targets outside the VPC, is no zone).
//!
//! # Error policy
//!
//! SDK errors go through [`crate::error::classify`]: throttling is `Throttled`, unreachable
//! or 5xx is `Unavailable` (both retryable). `InvalidTarget` (an instance that is not
//! running, an IP outside the VPC, a target of the wrong kind) is
//! [`RegistryError::InvalidTarget`]; `TargetGroupNotFound` is [`RegistryError::NotFound`];
//! anything else is `Backend`. Deregistering a target that is not registered is `Ok`: ELBv2
//! may reject a batch with `InvalidTarget` for it, so a rejected batch is retried one target
//! at a time and the unknown ones are skipped.

use async_trait::async_trait;
use aws_sdk_elasticloadbalancingv2::Client;
use aws_sdk_elasticloadbalancingv2::types::TargetDescription;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use nodefleet_ports::{
    NetworkMode, RegistryError, Target, TargetHealth, TargetRegistry, TargetState, Zone,
};

use crate::error::{AwsFailure, classify};
use crate::operations::SdkCalls;
use crate::operations::elbv2::{DEREGISTER_TARGETS, DESCRIBE_TARGET_HEALTH, REGISTER_TARGETS};

/// What ELBv2 says for the zone of an IP target outside the target group's VPC.
const ALL_ZONES: &str = "all";

/// Sorts an ELBv2 SDK error into the port's taxonomy (see the module doc).
pub fn registry_error<E>(error: &SdkError<E, HttpResponse>) -> RegistryError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match classify(error) {
        AwsFailure::Throttled(message) => RegistryError::Throttled { message },
        AwsFailure::Unavailable(message) => RegistryError::Unavailable { message },
        AwsFailure::Service { code, message } => {
            let message = format!("{code}: {message}");
            match code.as_str() {
                "InvalidTarget" | "InvalidTargetException" => {
                    RegistryError::InvalidTarget { message }
                }
                "TargetGroupNotFound" | "TargetGroupNotFoundException" => {
                    RegistryError::NotFound { message }
                }
                _ => RegistryError::Backend { message },
            }
        }
    }
}

/// The `TargetRegistry` port on one ELBv2 target group; see the module doc.
#[derive(Debug, Clone)]
pub struct ElbTargetRegistry {
    client: Client,
    target_group_arn: String,
    mode: NetworkMode,
}

impl ElbTargetRegistry {
    /// The ELBv2 operation each `TargetRegistry` method calls (a rejected deregistration is
    /// retried target by target with the same operation).
    pub const SDK_CALLS: SdkCalls = &[
        ("register", &[REGISTER_TARGETS]),
        ("deregister", &[DEREGISTER_TARGETS]),
        ("describe_health", &[DESCRIBE_TARGET_HEALTH]),
    ];

    /// A registry over `target_group_arn`, whose targets are of the kind `mode` makes
    /// (instance targets for bridge, IP targets for awsvpc).
    pub fn new(client: Client, target_group_arn: impl Into<String>, mode: NetworkMode) -> Self {
        ElbTargetRegistry {
            client,
            target_group_arn: target_group_arn.into(),
            mode,
        }
    }

    pub fn target_group_arn(&self) -> &str {
        &self.target_group_arn
    }

    /// Refuses a target of the wrong kind for the target group.
    fn check(&self, target: &Target) -> Result<(), RegistryError> {
        let fits = match self.mode {
            NetworkMode::Bridge => target.id.starts_with("i-"),
            NetworkMode::Awsvpc => target.id.parse::<std::net::IpAddr>().is_ok(),
        };
        if fits {
            Ok(())
        } else {
            Err(RegistryError::InvalidTarget {
                message: format!(
                    "{target} is not an {} target",
                    match self.mode {
                        NetworkMode::Bridge => "instance",
                        NetworkMode::Awsvpc => "ip",
                    }
                ),
            })
        }
    }

    async fn deregister_batch(&self, targets: &[Target]) -> Result<(), RegistryError> {
        self.client
            .deregister_targets()
            .target_group_arn(&self.target_group_arn)
            .set_targets(Some(targets.iter().map(description).collect()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| registry_error(&e))
    }
}

fn description(target: &Target) -> TargetDescription {
    TargetDescription::builder()
        .id(&target.id)
        .port(i32::from(target.port))
        .build()
}

#[async_trait]
impl TargetRegistry for ElbTargetRegistry {
    async fn register(&self, targets: &[Target]) -> Result<(), RegistryError> {
        if targets.is_empty() {
            return Ok(());
        }
        for target in targets {
            self.check(target)?;
        }
        self.client
            .register_targets()
            .target_group_arn(&self.target_group_arn)
            .set_targets(Some(targets.iter().map(description).collect()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| registry_error(&e))
    }

    async fn deregister(&self, targets: &[Target]) -> Result<(), RegistryError> {
        if targets.is_empty() {
            return Ok(());
        }
        match self.deregister_batch(targets).await {
            Err(RegistryError::InvalidTarget { .. }) => {
                // One of them is not registered (or never was): do the rest one by one.
                for target in targets {
                    match self.deregister_batch(std::slice::from_ref(target)).await {
                        Ok(()) | Err(RegistryError::InvalidTarget { .. }) => {}
                        Err(other) => return Err(other),
                    }
                }
                Ok(())
            }
            other => other,
        }
    }

    async fn describe_health(&self) -> Result<Vec<TargetHealth>, RegistryError> {
        let answer = self
            .client
            .describe_target_health()
            .target_group_arn(&self.target_group_arn)
            .send()
            .await
            .map_err(|e| registry_error(&e))?;
        let mut healths = Vec::new();
        for entry in answer.target_health_descriptions() {
            let Some(described) = entry.target() else {
                continue;
            };
            let (Some(id), Some(port)) = (described.id(), described.port()) else {
                continue;
            };
            let Ok(port) = u16::try_from(port) else {
                continue;
            };
            let health = entry.target_health();
            healths.push(TargetHealth {
                target: Target {
                    id: id.to_owned(),
                    port,
                },
                zone: described
                    .availability_zone()
                    .filter(|z| !z.is_empty() && *z != ALL_ZONES)
                    .map(Zone::new),
                state: health
                    .and_then(|h| h.state())
                    .map(|s| TargetState::from_elb(s.as_str()))
                    .unwrap_or(TargetState::Unavailable),
                reason: health
                    .and_then(|h| h.reason())
                    .map(|r| r.as_str().to_owned()),
                description: health.and_then(|h| h.description()).map(str::to_owned),
            });
        }
        Ok(healths)
    }
}
