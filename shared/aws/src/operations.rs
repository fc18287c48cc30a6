//! Which AWS API operations each adapter's port methods call, and the IAM action each one
//! needs: the code side of the IAM policies in the SAM template.
//!
//! # Design
//!
//! - An [`AwsOperation`] names one SDK operation exactly as the smithy runtime names it in
//!   the [`Metadata`] every request carries (`"DynamoDB"` / `"GetItem"`, `"ECS"` /
//!   `"RunTask"`, `"Elastic Load Balancing v2"` / `"RegisterTargets"`, `"S3"` /
//!   `"HeadObject"`), with the IAM action that authorises it. The two differ for S3: a
//!   `HeadObject` is authorised by `s3:GetObject`, `ListObjectsV2` by `s3:ListBucket`, the
//!   multipart steps by `s3:PutObject`.
//! - Each adapter has one const table, `SDK_CALLS`, from **port method name** (the names
//!   `nodefleet_ports::faults` counts calls by: `"save_node"`, `"launch"`, ...) to the SDK
//!   operations that method may call ([`SdkCalls`]). Helpers that are not port methods
//!   (`create_table`, `create_bucket`) are listed apart, as `PROVISIONING`: tooling and
//!   tests call them, no function role needs them.
//! - [`OperationLog`] is an interceptor that records the operation of every request a client
//!   sends. `tests/sdk_calls.rs` drives every port method of every adapter against moto
//!   with it and checks each table both ways: a method calls nothing its entry does not
//!   list, and every listed operation is seen.
//! - `nodefleet_lambda::permissions` says which port methods each principal's code calls and
//!   maps them through these tables to the IAM actions its role needs.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// One SDK operation, named as the smithy runtime names it, and the IAM action it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AwsOperation {
    service: &'static str,
    name: &'static str,
    iam_action: &'static str,
}

impl AwsOperation {
    pub const fn new(
        service: &'static str,
        name: &'static str,
        iam_action: &'static str,
    ) -> AwsOperation {
        AwsOperation {
            service,
            name,
            iam_action,
        }
    }

    /// The service as [`Metadata::service`] says it (`"DynamoDB"`).
    pub fn service(&self) -> &'static str {
        self.service
    }

    /// The operation as [`Metadata::name`] says it (`"GetItem"`).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The IAM action that authorises it (`"dynamodb:GetItem"`).
    pub fn iam_action(&self) -> &'static str {
        self.iam_action
    }

    /// Whether a request the runtime named `service` / `name` is this operation.
    pub fn is(&self, service: &str, name: &str) -> bool {
        self.service == service && self.name == name
    }
}

impl fmt::Display for AwsOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.service, self.name)
    }
}

/// Port method name to the SDK operations it may call. See the module doc.
pub type SdkCalls = &'static [(&'static str, &'static [AwsOperation])];

/// The SDK operations `method` may call according to `table`; `None` if the table does not
/// know the method.
pub fn sdk_calls_of(table: SdkCalls, method: &str) -> Option<&'static [AwsOperation]> {
    table
        .iter()
        .find(|(name, _)| *name == method)
        .map(|(_, operations)| *operations)
}

/// The IAM actions of `operations`, without repeats, sorted.
pub fn iam_actions_of<'a>(
    operations: impl IntoIterator<Item = &'a AwsOperation>,
) -> BTreeSet<&'static str> {
    operations
        .into_iter()
        .map(AwsOperation::iam_action)
        .collect()
}

/// The service names of [`Metadata::service`].
pub mod service {
    pub const DYNAMODB: &str = "DynamoDB";
    pub const ECS: &str = "ECS";
    pub const ELBV2: &str = "Elastic Load Balancing v2";
    pub const S3: &str = "S3";
}

/// The DynamoDB operations the adapter uses.
pub mod dynamodb {
    use super::{AwsOperation, service::DYNAMODB};

    pub const GET_ITEM: AwsOperation = AwsOperation::new(DYNAMODB, "GetItem", "dynamodb:GetItem");
    pub const PUT_ITEM: AwsOperation = AwsOperation::new(DYNAMODB, "PutItem", "dynamodb:PutItem");
    pub const UPDATE_ITEM: AwsOperation =
        AwsOperation::new(DYNAMODB, "UpdateItem", "dynamodb:UpdateItem");
    pub const DELETE_ITEM: AwsOperation =
        AwsOperation::new(DYNAMODB, "DeleteItem", "dynamodb:DeleteItem");
    pub const QUERY: AwsOperation = AwsOperation::new(DYNAMODB, "Query", "dynamodb:Query");
    pub const CREATE_TABLE: AwsOperation =
        AwsOperation::new(DYNAMODB, "CreateTable", "dynamodb:CreateTable");
    /// What the table-exists waiter polls.
    pub const DESCRIBE_TABLE: AwsOperation =
        AwsOperation::new(DYNAMODB, "DescribeTable", "dynamodb:DescribeTable");
    pub const DESCRIBE_TIME_TO_LIVE: AwsOperation = AwsOperation::new(
        DYNAMODB,
        "DescribeTimeToLive",
        "dynamodb:DescribeTimeToLive",
    );
    pub const UPDATE_TIME_TO_LIVE: AwsOperation =
        AwsOperation::new(DYNAMODB, "UpdateTimeToLive", "dynamodb:UpdateTimeToLive");
}

/// The ECS operations the adapter uses.
pub mod ecs {
    use super::{AwsOperation, service::ECS};

    pub const RUN_TASK: AwsOperation = AwsOperation::new(ECS, "RunTask", "ecs:RunTask");
    pub const STOP_TASK: AwsOperation = AwsOperation::new(ECS, "StopTask", "ecs:StopTask");
    pub const LIST_TASKS: AwsOperation = AwsOperation::new(ECS, "ListTasks", "ecs:ListTasks");
    pub const DESCRIBE_TASKS: AwsOperation =
        AwsOperation::new(ECS, "DescribeTasks", "ecs:DescribeTasks");
    pub const DESCRIBE_CONTAINER_INSTANCES: AwsOperation = AwsOperation::new(
        ECS,
        "DescribeContainerInstances",
        "ecs:DescribeContainerInstances",
    );
}

/// The ELBv2 operations the adapter uses.
pub mod elbv2 {
    use super::{AwsOperation, service::ELBV2};

    pub const REGISTER_TARGETS: AwsOperation = AwsOperation::new(
        ELBV2,
        "RegisterTargets",
        "elasticloadbalancing:RegisterTargets",
    );
    pub const DEREGISTER_TARGETS: AwsOperation = AwsOperation::new(
        ELBV2,
        "DeregisterTargets",
        "elasticloadbalancing:DeregisterTargets",
    );
    pub const DESCRIBE_TARGET_HEALTH: AwsOperation = AwsOperation::new(
        ELBV2,
        "DescribeTargetHealth",
        "elasticloadbalancing:DescribeTargetHealth",
    );
}

/// The S3 operations the adapter uses. S3's IAM actions are not named after every operation
/// (<https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazons3.html>):
/// HEAD is authorised as a GET, a listing by `s3:ListBucket` on the bucket, every multipart
/// step but the abort by `s3:PutObject`, and a conditional create (`If-None-Match`) is a
/// plain `s3:PutObject`.
pub mod s3 {
    use super::{AwsOperation, service::S3};

    pub const PUT_OBJECT: AwsOperation = AwsOperation::new(S3, "PutObject", "s3:PutObject");
    pub const GET_OBJECT: AwsOperation = AwsOperation::new(S3, "GetObject", "s3:GetObject");
    pub const HEAD_OBJECT: AwsOperation = AwsOperation::new(S3, "HeadObject", "s3:GetObject");
    pub const LIST_OBJECTS_V2: AwsOperation =
        AwsOperation::new(S3, "ListObjectsV2", "s3:ListBucket");
    pub const DELETE_OBJECT: AwsOperation =
        AwsOperation::new(S3, "DeleteObject", "s3:DeleteObject");
    pub const CREATE_MULTIPART_UPLOAD: AwsOperation =
        AwsOperation::new(S3, "CreateMultipartUpload", "s3:PutObject");
    pub const UPLOAD_PART: AwsOperation = AwsOperation::new(S3, "UploadPart", "s3:PutObject");
    pub const COMPLETE_MULTIPART_UPLOAD: AwsOperation =
        AwsOperation::new(S3, "CompleteMultipartUpload", "s3:PutObject");
    pub const ABORT_MULTIPART_UPLOAD: AwsOperation =
        AwsOperation::new(S3, "AbortMultipartUpload", "s3:AbortMultipartUpload");
    pub const CREATE_BUCKET: AwsOperation =
        AwsOperation::new(S3, "CreateBucket", "s3:CreateBucket");
}

/// One request's operation, as the runtime named it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CalledOperation {
    pub service: String,
    pub name: String,
}

impl CalledOperation {
    /// Whether this is `operation`.
    pub fn is(&self, operation: &AwsOperation) -> bool {
        operation.is(&self.service, &self.name)
    }
}

impl fmt::Display for CalledOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.service, self.name)
    }
}

/// What [`OperationLog`] records for a request that carries no [`Metadata`] (no generated
/// client sends one; a test that sees it knows the log missed a name).
pub const UNNAMED: &str = "<unnamed>";

/// An interceptor that records the operation of every request its clients send, once per
/// execution (retries are not recorded again; each page of a paginator, each poll of a
/// waiter is an execution).
/// Cheap to clone: clones share one log. Add it to a service's config builder:
/// `aws_sdk_s3::config::Builder::from(&sdk).interceptor(log.clone())`.
#[derive(Debug, Clone, Default)]
pub struct OperationLog {
    calls: Arc<Mutex<Vec<CalledOperation>>>,
}

impl OperationLog {
    pub fn new() -> OperationLog {
        OperationLog::default()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<CalledOperation>> {
        // A panic while holding the lock cannot leave the list half-written.
        self.calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every operation recorded so far, oldest first.
    pub fn calls(&self) -> Vec<CalledOperation> {
        self.lock().clone()
    }

    /// Every operation recorded so far, oldest first, and forgets them.
    pub fn take(&self) -> Vec<CalledOperation> {
        std::mem::take(&mut *self.lock())
    }
}

impl Intercept for OperationLog {
    fn name(&self) -> &'static str {
        "OperationLog"
    }

    // Not `read_before_execution`: a client's interceptors run that hook before the
    // operation's configuration, which carries the `Metadata`, is in the bag.
    // `read_before_serialization` comes after it, once per execution (before any attempt).
    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let called = match cfg.load::<Metadata>() {
            Some(metadata) => CalledOperation {
                service: metadata.service().to_owned(),
                name: metadata.name().to_owned(),
            },
            None => CalledOperation {
                service: UNNAMED.to_owned(),
                name: UNNAMED.to_owned(),
            },
        };
        self.lock().push(called);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_reads_and_writes_map_to_the_actions_iam_checks() {
        assert_eq!(s3::HEAD_OBJECT.iam_action(), "s3:GetObject");
        assert_eq!(s3::LIST_OBJECTS_V2.iam_action(), "s3:ListBucket");
        for multipart in [
            s3::CREATE_MULTIPART_UPLOAD,
            s3::UPLOAD_PART,
            s3::COMPLETE_MULTIPART_UPLOAD,
        ] {
            assert_eq!(multipart.iam_action(), "s3:PutObject", "{multipart}");
        }
        assert_eq!(
            s3::ABORT_MULTIPART_UPLOAD.iam_action(),
            "s3:AbortMultipartUpload"
        );
    }

    #[test]
    fn a_table_is_looked_up_by_port_method() {
        const TABLE: SdkCalls = &[
            ("get", &[s3::GET_OBJECT]),
            ("head", &[s3::HEAD_OBJECT]),
            ("put", &[s3::PUT_OBJECT]),
        ];
        assert_eq!(sdk_calls_of(TABLE, "head"), Some(&[s3::HEAD_OBJECT][..]));
        assert_eq!(sdk_calls_of(TABLE, "delete"), None);
        let reads = [sdk_calls_of(TABLE, "get"), sdk_calls_of(TABLE, "head")];
        assert_eq!(
            iam_actions_of(reads.iter().flatten().flat_map(|ops| ops.iter())),
            BTreeSet::from(["s3:GetObject"])
        );
    }
}
