//! `CloudFormationStack`: a deployed stack's outputs (CloudFormation `DescribeStacks`), which
//! is how operator commands (`nodefleet ... --stack NAME`) find the table, cluster, target
//! group, task definitions and store of a fleet. Not a port: only operator tooling reads
//! stacks, no function role needs `cloudformation:DescribeStacks` ([`SDK_CALLS`]).
//!
//! The client is built from the process's [`aws_config::SdkConfig`] like every adapter, so
//! the standard environment (region, credentials, `AWS_ENDPOINT_URL` for moto) applies.
//!
//! # Error policy
//!
//! [`StackError::NotFound`] (no stack of that name in the account and region: CloudFormation
//! answers `ValidationError ... does not exist`) and [`StackError::MissingOutput`] are final
//! and name the stack (and output). Throttling and unreachable endpoints are
//! [`StackError::Unavailable`], retryable; anything else (access denied) is
//! [`StackError::Backend`].

use std::collections::BTreeMap;

use aws_sdk_cloudformation::Client;

use crate::AwsOperation;
use crate::error::{AwsFailure, classify};

/// The one operation a stack read sends, and its IAM action (for an operator's policy).
pub const SDK_CALLS: &[AwsOperation] = &[AwsOperation::new(
    "CloudFormation",
    "DescribeStacks",
    "cloudformation:DescribeStacks",
)];

/// Why a stack could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StackError {
    #[error("stack {stack} does not exist (in this account and region)")]
    NotFound { stack: String },
    #[error("stack {stack} has no output {output}")]
    MissingOutput { stack: String, output: String },
    #[error("cannot read stack {stack} now: {message}")]
    Unavailable { stack: String, message: String },
    #[error("cannot read stack {stack}: {message}")]
    Backend { stack: String, message: String },
}

impl StackError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, StackError::Unavailable { .. })
    }
}

/// A deployed stack: its name, status and outputs (key to value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudFormationStack {
    pub name: String,
    /// `CREATE_COMPLETE`, `UPDATE_ROLLBACK_COMPLETE`, ...
    pub status: String,
    pub outputs: BTreeMap<String, String>,
}

impl CloudFormationStack {
    /// Reads stack `name` with a client built from `sdk` (one call: an operator command reads
    /// its stack once).
    pub async fn read(
        sdk: &aws_config::SdkConfig,
        name: &str,
    ) -> Result<CloudFormationStack, StackError> {
        CloudFormationStack::describe(&Client::new(sdk), name).await
    }

    /// Reads stack `name` (a name or stack id) with `DescribeStacks`.
    pub async fn describe(client: &Client, name: &str) -> Result<CloudFormationStack, StackError> {
        let answer = client
            .describe_stacks()
            .stack_name(name)
            .send()
            .await
            .map_err(|error| match classify(&error) {
                AwsFailure::Throttled(message) | AwsFailure::Unavailable(message) => {
                    StackError::Unavailable {
                        stack: name.to_owned(),
                        message,
                    }
                }
                AwsFailure::Service { code, message }
                    if code == "ValidationError" && message.contains("does not exist") =>
                {
                    StackError::NotFound {
                        stack: name.to_owned(),
                    }
                }
                AwsFailure::Service { code, message } => StackError::Backend {
                    stack: name.to_owned(),
                    message: format!("{code}: {message}"),
                },
            })?;
        let Some(stack) = answer.stacks().first() else {
            return Err(StackError::NotFound {
                stack: name.to_owned(),
            });
        };
        let outputs = stack
            .outputs()
            .iter()
            .filter_map(|o| Some((o.output_key()?.to_owned(), o.output_value()?.to_owned())))
            .collect();
        Ok(CloudFormationStack {
            name: stack.stack_name().unwrap_or(name).to_owned(),
            status: stack
                .stack_status()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            outputs,
        })
    }

    /// The value of output `key`, or an error naming the stack and the output.
    pub fn output(&self, key: &str) -> Result<&str, StackError> {
        self.outputs
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| StackError::MissingOutput {
                stack: self.name.clone(),
                output: key.to_owned(),
            })
    }
}
