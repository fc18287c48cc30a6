//! The AWS adapters of the control plane's ports (see `nodefleet-ports`).
//!
//! | adapter | port | backed by |
//! |---|---|---|
//! | [`DynamoStateStore`] | `StateStore` | one DynamoDB table |
//! | [`EcsScheduler`] | `Scheduler` | ECS RunTask / StopTask / ListTasks / DescribeTasks |
//! | [`ElbTargetRegistry`] | `TargetRegistry` | one ELBv2 target group |
//! | [`S3ObjectStore`] | `ObjectStore` | one S3 bucket and prefix |
//!
//! Besides the ports, [`CloudFormationStack`] reads a deployed stack's outputs for operator
//! commands (`nodefleet ... --stack NAME`).
//!
//! Clients are built once per process from one [`aws_config::SdkConfig`] ([`load_sdk_config`]),
//! which honours the standard AWS environment, `AWS_ENDPOINT_URL` included: that is how the
//! tests point every adapter at moto. SDK errors are sorted into the ports' error taxonomies in
//! [`error`].
//!
//! Each adapter lists, per port method, the SDK operations it calls (`SDK_CALLS`); those and
//! their IAM actions are in [`operations`], with [`OperationLog`], an interceptor that
//! records what a client really calls.

pub mod dynamo;
pub mod ecs;
pub mod elb;
pub mod error;
pub mod operations;
pub mod s3;
pub mod stack;

pub use dynamo::DynamoStateStore;
pub use ecs::EcsScheduler;
pub use elb::ElbTargetRegistry;
pub use operations::{AwsOperation, OperationLog, SdkCalls};
pub use s3::S3ObjectStore;
pub use stack::{CloudFormationStack, StackError};

/// Loads the AWS configuration from the environment once per process: region, credentials,
/// and `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` for S3-compatible or emulated
/// endpoints.
pub async fn load_sdk_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}
