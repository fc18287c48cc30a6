//! `EcsScheduler`: the `Scheduler` port on Amazon ECS (RunTask, StopTask, ListTasks,
//! DescribeTasks, DescribeContainerInstances).
//!
//! # Launching
//!
//! A launch is one RunTask, built by the pure [`run_task_plan`] (unit-tested without a
//! client) and sent by [`EcsScheduler`]:
//!
//! - **Placement constraints** (both must hold, `memberOf` in ECS's cluster query language,
//!   <https://docs.aws.amazon.com/AmazonECS/latest/developerguide/cluster-query-language.html>):
//!   the instance family, `attribute:ecs.instance-type =~ i3.* or attribute:ecs.instance-type
//!   =~ i3en.* or attribute:ecs.instance-type =~ i4i.*` (`=~` takes a Java regular expression;
//!   one expression may not contain parentheses, so families are alternatives joined with
//!   `or`, as in the guide's compound example `attribute:ecs.instance-type =~ g2.* and ...`),
//!   and the zone, `attribute:ecs.availability-zone == <zone>`. Note that `i3.*` also matches
//!   `i3en` instances; with the default families that changes nothing.
//! - **Placement strategy**: spread over `attribute:ecs.availability-zone`, then binpack
//!   `memory`. Within one zone the spread is moot, but it is what ECS should do if the zone
//!   constraint is ever relaxed, and binpacking keeps whole instances free for the next node.
//! - **Overrides**: the node container gets `NODEFLEET_NODE_ID`, `NODEFLEET_ROLE`,
//!   `NODEFLEET_ZONE` and, when there is one, `NODEFLEET_SNAPSHOT_ID`. With a configured
//!   [`TaskSize`] (the capacity planner's reservation for the fleet's client), the task gets
//!   it as its task-level `cpu` and `memory` overrides (strings: CPU units and MiB), and the
//!   node container gets the same numbers as its `cpu` and `memory` overrides (integers), so
//!   a smaller container-level size in the task definition cannot cap the node below what
//!   was planned, and ECS places the task by the planned reservation (with a task-level size
//!   ECS reserves that on the instance). The container's `memory` is a hard limit, but the
//!   task-level memory is the same hard limit already. Its soft limit (`memoryReservation`)
//!   is left as the task definition has it, which must then be below the planned memory (ECS
//!   refuses a hard limit at or under the soft one). Without a task size the task
//!   definition's sizes apply. Both sizes are valid for the EC2 launch type, which is what
//!   the fleet runs on (capacity providers included: their Auto Scaling groups are EC2).
//! - **Recognising the fleet's tasks**: `startedBy` (ListTasks filters on it), `group`
//!   `nodefleet:<fleet>`, and tags `nodefleet:fleet`, `nodefleet:node`, `nodefleet:role`,
//!   `nodefleet:zone`, `nodefleet:snapshot`, which `list_tasks` reads back (with ECS-managed
//!   tags on, so the cluster and task definition are tagged too).
//! - **Idempotency**: `clientToken` is the launch's idempotency key when it fits ECS's rule
//!   (at most 64 characters, ASCII 33-126), else a deterministic digest of it
//!   ([`client_token`]). A retried RunTask with the same token starts nothing new.
//!
//! A RunTask that partly fails returns both: the started tasks, and one [`LaunchFailure`] per
//! `failures[]` entry with its reason parsed by [`PlacementFailure::parse`].
//!
//! # Reading tasks
//!
//! `list_tasks` lists by `startedBy`, once for desired status RUNNING and once for STOPPED
//! (ECS keeps stopped tasks for about an hour), paginated, then describes them in batches of
//! [`DESCRIBE_BATCH`] with tags. The zone is the task's `availabilityZone`, else its container
//! instance's `ecs.availability-zone` attribute, else the zone tag; node, role and snapshot
//! come from the tags; bindings from the node container's `networkBindings`; the IP from the
//! task's ENI attachment (awsvpc), else its container instance's [`PRIVATE_IP_ATTRIBUTE`]
//! (bridge: where its published ports are); the EC2 instance id from
//! DescribeContainerInstances, looked up once per call for all the tasks that need it.
//!
//! # Error policy
//!
//! SDK errors go through [`crate::error::classify`]: throttling is `Throttled`, unreachable
//! or 5xx is `Unavailable` (both retryable). A missing cluster, a bad parameter, a client or
//! access error, or a `clientToken` reused with different parameters is `InvalidRequest`
//! (an operator has to act). Stopping a task ECS no longer knows is `Ok`: it is stopped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use async_trait::async_trait;
use aws_sdk_ecs::Client;
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, CapacityProviderStrategyItem, ContainerOverride,
    DesiredStatus, KeyValuePair, LaunchType, NetworkConfiguration, PlacementConstraint,
    PlacementConstraintType, PlacementStrategy, PlacementStrategyType, Tag, Task, TaskField,
    TaskOverride,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use nodefleet_ports::{
    LaunchFailure, LaunchReport, LaunchRequest, NetworkMode, NodeId, PlacementFailure, PortBinding,
    Role, Scheduler, SchedulerError, SnapshotId, TaskId, TaskInfo, TaskStatus, Timestamp, Zone,
};

use crate::error::{AwsFailure, classify};
use crate::operations::SdkCalls;
use crate::operations::ecs::{
    DESCRIBE_CONTAINER_INSTANCES, DESCRIBE_TASKS, LIST_TASKS, RUN_TASK, STOP_TASK,
};

/// Storage-optimised families with local NVMe: a node's chain data (1-2 TB) lives on the
/// instance store, which is what makes hydration disk-bound at about 2 GB/s instead of
/// EBS-bound, and what makes a node cheap to throw away and replace from a snapshot.
pub const DEFAULT_INSTANCE_FAMILIES: &[&str] = &["i3", "i3en", "i4i"];

/// ECS's limit on `clientToken` length.
pub const CLIENT_TOKEN_MAX: usize = 64;

/// ECS's limit on `startedBy` length.
pub const STARTED_BY_MAX: usize = 36;

/// DescribeTasks and DescribeContainerInstances take at most 100 ids per call.
pub const DESCRIBE_BATCH: usize = 100;

/// StopTask's `reason` is cut at this many characters (ECS's limit).
const STOP_REASON_MAX: usize = 255;

/// How much of a long idempotency key stays readable in front of its digest: 64 minus the
/// separator and the 32 hex digits of the 128-bit digest.
const CLIENT_TOKEN_PREFIX: usize = CLIENT_TOKEN_MAX - 1 - 32;

pub const TAG_FLEET: &str = "nodefleet:fleet";
pub const TAG_NODE: &str = "nodefleet:node";
pub const TAG_ROLE: &str = "nodefleet:role";
pub const TAG_SNAPSHOT: &str = "nodefleet:snapshot";
pub const TAG_ZONE: &str = "nodefleet:zone";

pub use nodefleet_ports::scheduler::{ENV_NODE_ID, ENV_ROLE, ENV_SNAPSHOT_ID, ENV_ZONE};

/// The container instance attribute that names its zone.
const ZONE_ATTRIBUTE: &str = "ecs.availability-zone";

/// The custom container instance attribute that holds the instance's private IPv4 address:
/// infra/template.yaml's user data sets it (`ECS_INSTANCE_ATTRIBUTES`), since ECS reports
/// no address for a bridge-networked task and the instance's is where its ports are.
pub const PRIVATE_IP_ATTRIBUTE: &str = "nodefleet.private-ipv4";

/// The smallest task-level CPU ECS takes for a task on EC2 (0.125 vCPU), and the largest
/// (192 vCPU): the `cpu` field of ECS's TaskDefinition API reference ("If you're using the
/// EC2 launch type or the external launch type, ... Supported values are between 128 CPU
/// units (0.125 vCPUs) and 196608 CPU units (192 vCPUs)").
pub const TASK_CPU_UNITS_MIN: u32 = 128;
/// See [`TASK_CPU_UNITS_MIN`].
pub const TASK_CPU_UNITS_MAX: u32 = 196_608;
/// The smallest container memory ECS advises: the `memory` field of ECS's
/// ContainerDefinition API reference ("The Docker 20.10.0 or later daemon reserves a minimum
/// of 6 MiB of memory for a container. So, don't specify less than 6 MiB"). The node
/// container gets the whole task's memory, so this is the task's floor too.
pub const TASK_MEMORY_MIB_MIN: u32 = 6;
/// The API carries container memory as a 32-bit integer; ECS documents no smaller ceiling
/// for EC2 tasks (the instance's registered memory is the practical one).
pub const TASK_MEMORY_MIB_MAX: u32 = i32::MAX as u32;

/// How tasks get capacity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EcsLaunch {
    /// A capacity provider strategy (Auto Scaling groups of the node instances).
    CapacityProviders(Vec<CapacityProviderShare>),
    /// Launch type EC2 on the cluster's registered instances.
    Ec2,
}

/// One entry of a capacity provider strategy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapacityProviderShare {
    pub capacity_provider: String,
    pub weight: i32,
    pub base: i32,
}

/// How the node task definition is networked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EcsNetwork {
    /// Docker bridge: targets are instance id plus host port.
    Bridge,
    /// One ENI per task, in a subnet of the launch's zone.
    Awsvpc {
        subnets_by_zone: BTreeMap<Zone, Vec<String>>,
        security_groups: Vec<String>,
    },
}

impl EcsNetwork {
    pub fn mode(&self) -> NetworkMode {
        match self {
            EcsNetwork::Bridge => NetworkMode::Bridge,
            EcsNetwork::Awsvpc { .. } => NetworkMode::Awsvpc,
        }
    }
}

/// A node task's size: what RunTask reserves for it (the capacity planner's
/// `TaskReservation` for the fleet's client, converted by the Lambda that builds the
/// scheduler; this crate does not depend on the planner).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSize {
    /// ECS CPU units (1024 per vCPU).
    pub cpu_units: u32,
    pub memory_mib: u32,
}

impl TaskSize {
    /// Checks the size against ECS's documented EC2 limits ([`TASK_CPU_UNITS_MIN`] to
    /// [`TASK_CPU_UNITS_MAX`], [`TASK_MEMORY_MIB_MIN`] to [`TASK_MEMORY_MIB_MAX`]).
    pub fn validate(&self) -> Result<(), SchedulerError> {
        if !(TASK_CPU_UNITS_MIN..=TASK_CPU_UNITS_MAX).contains(&self.cpu_units) {
            return Err(SchedulerError::InvalidRequest {
                message: format!(
                    "a task's cpu must be {TASK_CPU_UNITS_MIN} to {TASK_CPU_UNITS_MAX} CPU \
                     units on EC2, not {}",
                    self.cpu_units
                ),
            });
        }
        if !(TASK_MEMORY_MIB_MIN..=TASK_MEMORY_MIB_MAX).contains(&self.memory_mib) {
            return Err(SchedulerError::InvalidRequest {
                message: format!(
                    "a task's memory must be {TASK_MEMORY_MIB_MIN} to {TASK_MEMORY_MIB_MAX} \
                     MiB, not {}",
                    self.memory_mib
                ),
            });
        }
        Ok(())
    }
}

/// What an [`EcsScheduler`] launches, where, and how it recognises its tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcsSchedulerConfig {
    /// Cluster name or ARN.
    pub cluster: String,
    /// Task definition family, `family:revision` or ARN.
    pub task_definition: String,
    /// The node container in the task definition (overrides and bindings are its).
    pub container_name: String,
    /// The fleet's name: `startedBy`, `group` and the fleet tag derive from it.
    pub fleet: String,
    pub launch: EcsLaunch,
    /// Instance families a node may be placed on; see [`DEFAULT_INSTANCE_FAMILIES`].
    pub instance_families: Vec<String>,
    pub network: EcsNetwork,
    /// The size every launched task is given through RunTask's overrides; `None` leaves the
    /// task definition's sizes.
    pub task_size: Option<TaskSize>,
}

impl EcsSchedulerConfig {
    /// A bridge-networked, EC2-launch-type configuration with the default families.
    pub fn new(
        cluster: impl Into<String>,
        task_definition: impl Into<String>,
        container_name: impl Into<String>,
        fleet: impl Into<String>,
    ) -> EcsSchedulerConfig {
        EcsSchedulerConfig {
            cluster: cluster.into(),
            task_definition: task_definition.into(),
            container_name: container_name.into(),
            fleet: fleet.into(),
            launch: EcsLaunch::Ec2,
            instance_families: DEFAULT_INSTANCE_FAMILIES
                .iter()
                .map(|f| (*f).to_owned())
                .collect(),
            network: EcsNetwork::Bridge,
            task_size: None,
        }
    }

    /// Checks what ECS would only reject at launch time.
    pub fn validate(&self) -> Result<(), SchedulerError> {
        let invalid = |message: String| Err(SchedulerError::InvalidRequest { message });
        for (name, value) in [
            ("cluster", &self.cluster),
            ("task definition", &self.task_definition),
            ("container name", &self.container_name),
            ("fleet", &self.fleet),
        ] {
            if value.trim().is_empty() {
                return invalid(format!("the ECS scheduler needs a {name}"));
            }
        }
        if self.instance_families.is_empty() {
            return invalid("at least one instance family is needed".to_owned());
        }
        if let Some(bad) = self.instance_families.iter().find(|f| {
            f.is_empty()
                || !f
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        }) {
            return invalid(format!(
                "instance family {bad:?} is not a family name (lower-case letters, digits, '-')"
            ));
        }
        if let EcsLaunch::CapacityProviders(shares) = &self.launch
            && shares.is_empty()
        {
            return invalid("a capacity provider strategy needs at least one provider".to_owned());
        }
        if let Some(size) = &self.task_size {
            size.validate()?;
        }
        Ok(())
    }

    /// The `startedBy` of the fleet's tasks: `nodefleet-<fleet>` if that is at most 36
    /// allowed characters (letters, digits, `-`, `_`, `/`), else `nf-` and a digest of the
    /// fleet name, so two fleets in one cluster never share it.
    pub fn started_by(&self) -> String {
        let plain = format!("nodefleet-{}", self.fleet);
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/');
        if plain.len() <= STARTED_BY_MAX && plain.chars().all(allowed) {
            plain
        } else {
            format!("nf-{:032x}", fnv1a_128(self.fleet.as_bytes()))
        }
    }

    /// The task group of the fleet's tasks.
    pub fn group(&self) -> String {
        format!("nodefleet:{}", self.fleet)
    }

    /// The `memberOf` expression that admits the configured instance families.
    pub fn family_expression(&self) -> String {
        self.instance_families
            .iter()
            .map(|family| format!("attribute:ecs.instance-type =~ {family}.*"))
            .collect::<Vec<_>>()
            .join(" or ")
    }
}

/// The `memberOf` expression that pins a task to `zone`.
pub fn zone_expression(zone: &Zone) -> String {
    format!("attribute:{ZONE_ATTRIBUTE} == {zone}")
}

/// The `clientToken` for an idempotency key: the key itself if ECS accepts it (at most 64
/// characters in ASCII 33-126), else up to 31 of its allowed characters, `-`, and the
/// 128-bit FNV-1a digest of the whole key in hex. Deterministic across processes and
/// releases (FNV is fixed, unlike std's hasher); a collision needs two distinct keys of the
/// same fleet to agree on 128 bits, which is not a risk for keys we make ourselves.
pub fn client_token(idempotency_key: &str) -> String {
    let allowed = |c: char| ('!'..='~').contains(&c);
    if !idempotency_key.is_empty()
        && idempotency_key.len() <= CLIENT_TOKEN_MAX
        && idempotency_key.chars().all(allowed)
    {
        return idempotency_key.to_owned();
    }
    let prefix: String = idempotency_key
        .chars()
        .filter(|c| allowed(*c))
        .take(CLIENT_TOKEN_PREFIX)
        .collect();
    format!("{prefix}-{:032x}", fnv1a_128(idempotency_key.as_bytes()))
}

/// 128-bit FNV-1a (offset basis and prime from the FNV specification).
fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET_BASIS: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    bytes.iter().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u128::from(*byte)).wrapping_mul(PRIME)
    })
}

/// Everything one RunTask sends, as plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunTaskPlan {
    pub cluster: String,
    pub task_definition: String,
    pub count: i32,
    pub client_token: String,
    pub started_by: String,
    pub group: String,
    pub launch: EcsLaunch,
    /// `memberOf` expressions, all of which must hold.
    pub constraints: Vec<String>,
    /// `(type, field)` in the order ECS applies them.
    pub strategy: Vec<(PlacementStrategyType, String)>,
    pub container_name: String,
    pub environment: Vec<(String, String)>,
    /// Task-level `cpu`/`memory` overrides and the node container's, when configured.
    pub task_size: Option<TaskSize>,
    pub tags: Vec<(String, String)>,
    pub enable_ecs_managed_tags: bool,
    /// `(subnets, security groups)` for awsvpc.
    pub awsvpc: Option<(Vec<String>, Vec<String>)>,
}

/// Builds the RunTask for `request` (see the module doc). Fails only for a request that
/// cannot be sent: a count ECS does not take (1 to 10), an awsvpc zone with no subnet, or a
/// task size outside ECS's limits.
pub fn run_task_plan(
    config: &EcsSchedulerConfig,
    request: &LaunchRequest,
) -> Result<RunTaskPlan, SchedulerError> {
    if !(1..=10).contains(&request.count) {
        return Err(SchedulerError::InvalidRequest {
            message: format!(
                "RunTask starts 1 to 10 tasks, not {} (node {})",
                request.count, request.node
            ),
        });
    }
    if let Some(size) = &config.task_size {
        size.validate()?;
    }
    let count = i32::try_from(request.count).unwrap_or(1);
    let awsvpc = match &config.network {
        EcsNetwork::Bridge => None,
        EcsNetwork::Awsvpc {
            subnets_by_zone,
            security_groups,
        } => match subnets_by_zone.get(&request.zone) {
            Some(subnets) if !subnets.is_empty() => {
                Some((subnets.clone(), security_groups.clone()))
            }
            _ => {
                return Err(SchedulerError::InvalidRequest {
                    message: format!("no subnet configured for zone {}", request.zone),
                });
            }
        },
    };
    let mut environment = vec![
        (ENV_NODE_ID.to_owned(), request.node.to_string()),
        (ENV_ROLE.to_owned(), request.role.as_str().to_owned()),
        (ENV_ZONE.to_owned(), request.zone.to_string()),
    ];
    let mut tags = vec![
        (TAG_FLEET.to_owned(), config.fleet.clone()),
        (TAG_NODE.to_owned(), request.node.to_string()),
        (TAG_ROLE.to_owned(), request.role.as_str().to_owned()),
        (TAG_ZONE.to_owned(), request.zone.to_string()),
    ];
    if let Some(snapshot) = &request.snapshot {
        environment.push((ENV_SNAPSHOT_ID.to_owned(), snapshot.to_string()));
        tags.push((TAG_SNAPSHOT.to_owned(), snapshot.to_string()));
    }
    Ok(RunTaskPlan {
        cluster: config.cluster.clone(),
        task_definition: config.task_definition.clone(),
        count,
        client_token: client_token(&request.idempotency_key),
        started_by: config.started_by(),
        group: config.group(),
        launch: config.launch.clone(),
        constraints: vec![config.family_expression(), zone_expression(&request.zone)],
        strategy: vec![
            (
                PlacementStrategyType::Spread,
                format!("attribute:{ZONE_ATTRIBUTE}"),
            ),
            (PlacementStrategyType::Binpack, "memory".to_owned()),
        ],
        container_name: config.container_name.clone(),
        environment,
        task_size: config.task_size,
        tags,
        enable_ecs_managed_tags: true,
        awsvpc,
    })
}

fn build_error(error: impl std::fmt::Display) -> SchedulerError {
    SchedulerError::InvalidRequest {
        message: format!("building the ECS request: {error}"),
    }
}

/// Error codes that mean the request cannot succeed as made.
const INVALID_REQUEST_CODES: &[&str] = &[
    "ClusterNotFoundException",
    "InvalidParameterException",
    "ClientException",
    "AccessDeniedException",
    "PlatformUnknownException",
    "PlatformTaskDefinitionIncompatibilityException",
    "UnsupportedFeatureException",
    "BlockedException",
    "ConflictException",
];

/// Sorts an ECS SDK error into the port's taxonomy (see the module doc).
pub fn scheduler_error<E>(error: &SdkError<E, HttpResponse>) -> SchedulerError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match classify(error) {
        AwsFailure::Throttled(message) => SchedulerError::Throttled { message },
        AwsFailure::Unavailable(message) => SchedulerError::Unavailable { message },
        AwsFailure::Service { code, message } => {
            let message = format!("{code}: {message}");
            if INVALID_REQUEST_CODES.contains(&code.as_str()) {
                SchedulerError::InvalidRequest { message }
            } else if code == "ServerException" {
                SchedulerError::Unavailable { message }
            } else {
                SchedulerError::Backend { message }
            }
        }
    }
}

/// A container instance as a task needs it: its EC2 instance and its zone.
#[derive(Debug, Clone, Default)]
struct InstanceFacts {
    ec2_instance_id: Option<String>,
    zone: Option<Zone>,
    /// [`PRIVATE_IP_ATTRIBUTE`], where the instance has it.
    private_ip: Option<IpAddr>,
}

/// The `Scheduler` port on ECS; see the module doc.
#[derive(Debug, Clone)]
pub struct EcsScheduler {
    client: Client,
    config: EcsSchedulerConfig,
}

/// What a RunTask as this adapter sends it needs besides `ecs:RunTask`: `iam:PassRole`, to
/// hand the task definition's task and execution roles to ECS, and `ecs:TagResource`,
/// because the request carries tags (`nodefleet:*`, see the module doc) and ECS authorises
/// tagging on create separately
/// (<https://docs.aws.amazon.com/AmazonECS/latest/developerguide/supported-iam-actions-tagging.html>).
pub const RUN_TASK_EXTRA_IAM_ACTIONS: &[&str] = &["iam:PassRole", "ecs:TagResource"];

impl EcsScheduler {
    /// The ECS operations each `Scheduler` method calls: a launch is one RunTask, then the
    /// container instances of the tasks it started are described; listing and describing
    /// tasks describe their container instances too (the EC2 instance id and zone);
    /// `list_tasks` pages through ListTasks first. RunTask needs more than `ecs:RunTask`:
    /// see [`RUN_TASK_EXTRA_IAM_ACTIONS`].
    pub const SDK_CALLS: SdkCalls = &[
        ("launch", &[RUN_TASK, DESCRIBE_CONTAINER_INSTANCES]),
        ("stop", &[STOP_TASK]),
        (
            "list_tasks",
            &[LIST_TASKS, DESCRIBE_TASKS, DESCRIBE_CONTAINER_INSTANCES],
        ),
        (
            "describe_tasks",
            &[DESCRIBE_TASKS, DESCRIBE_CONTAINER_INSTANCES],
        ),
    ];

    /// An ECS scheduler, once the configuration is valid.
    pub fn new(client: Client, config: EcsSchedulerConfig) -> Result<EcsScheduler, SchedulerError> {
        config.validate()?;
        Ok(EcsScheduler { client, config })
    }

    pub fn config(&self) -> &EcsSchedulerConfig {
        &self.config
    }

    async fn send_run_task(
        &self,
        plan: &RunTaskPlan,
    ) -> Result<aws_sdk_ecs::operation::run_task::RunTaskOutput, SchedulerError> {
        let mut call = self
            .client
            .run_task()
            .cluster(&plan.cluster)
            .task_definition(&plan.task_definition)
            .count(plan.count)
            .client_token(&plan.client_token)
            .started_by(&plan.started_by)
            .group(&plan.group)
            .enable_ecs_managed_tags(plan.enable_ecs_managed_tags);
        call = match &plan.launch {
            EcsLaunch::Ec2 => call.launch_type(LaunchType::Ec2),
            EcsLaunch::CapacityProviders(shares) => {
                for share in shares {
                    call = call.capacity_provider_strategy(
                        CapacityProviderStrategyItem::builder()
                            .capacity_provider(&share.capacity_provider)
                            .weight(share.weight)
                            .base(share.base)
                            .build()
                            .map_err(build_error)?,
                    );
                }
                call
            }
        };
        for expression in &plan.constraints {
            call = call.placement_constraints(
                PlacementConstraint::builder()
                    .r#type(PlacementConstraintType::MemberOf)
                    .expression(expression)
                    .build(),
            );
        }
        for (kind, field) in &plan.strategy {
            call = call.placement_strategy(
                PlacementStrategy::builder()
                    .r#type(kind.clone())
                    .field(field)
                    .build(),
            );
        }
        let mut container = ContainerOverride::builder().name(&plan.container_name);
        for (name, value) in &plan.environment {
            container =
                container.environment(KeyValuePair::builder().name(name).value(value).build());
        }
        let mut task = TaskOverride::builder();
        if let Some(size) = &plan.task_size {
            // The API takes the task's size as strings and the container's as integers.
            let integer = |value: u32, what: &str| {
                i32::try_from(value).map_err(|_| SchedulerError::InvalidRequest {
                    message: format!("task {what} {value} does not fit the ECS API"),
                })
            };
            container = container
                .cpu(integer(size.cpu_units, "cpu")?)
                .memory(integer(size.memory_mib, "memory")?);
            task = task
                .cpu(size.cpu_units.to_string())
                .memory(size.memory_mib.to_string());
        }
        call = call.overrides(task.container_overrides(container.build()).build());
        for (key, value) in &plan.tags {
            call = call.tags(Tag::builder().key(key).value(value).build());
        }
        if let Some((subnets, security_groups)) = &plan.awsvpc {
            let vpc = AwsVpcConfiguration::builder()
                .set_subnets(Some(subnets.clone()))
                .set_security_groups(Some(security_groups.clone()))
                .assign_public_ip(AssignPublicIp::Disabled)
                .build()
                .map_err(build_error)?;
            call = call.network_configuration(
                NetworkConfiguration::builder()
                    .awsvpc_configuration(vpc)
                    .build(),
            );
        }
        call.send().await.map_err(|e| scheduler_error(&e))
    }

    /// EC2 instance and zone of each container instance, one DescribeContainerInstances per
    /// 100 of them.
    async fn instance_facts(
        &self,
        tasks: &[Task],
    ) -> Result<HashMap<String, InstanceFacts>, SchedulerError> {
        let arns: Vec<String> = tasks
            .iter()
            .filter_map(|t| t.container_instance_arn().map(str::to_owned))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut facts = HashMap::new();
        for batch in arns.chunks(DESCRIBE_BATCH) {
            let answer = self
                .client
                .describe_container_instances()
                .cluster(&self.config.cluster)
                .set_container_instances(Some(batch.to_vec()))
                .send()
                .await
                .map_err(|e| scheduler_error(&e))?;
            for instance in answer.container_instances() {
                let Some(arn) = instance.container_instance_arn() else {
                    continue;
                };
                let attribute = |name: &str| {
                    instance
                        .attributes()
                        .iter()
                        .find(|a| a.name() == name)
                        .and_then(|a| a.value())
                };
                facts.insert(
                    arn.to_owned(),
                    InstanceFacts {
                        ec2_instance_id: instance.ec2_instance_id().map(str::to_owned),
                        zone: attribute(ZONE_ATTRIBUTE).map(Zone::new),
                        private_ip: attribute(PRIVATE_IP_ATTRIBUTE).and_then(|v| v.parse().ok()),
                    },
                );
            }
        }
        Ok(facts)
    }

    /// DescribeTasks (with tags) in batches of 100; unknown ids are left out.
    async fn describe_raw(&self, ids: &[String]) -> Result<Vec<Task>, SchedulerError> {
        let mut tasks = Vec::new();
        for batch in ids.chunks(DESCRIBE_BATCH) {
            let answer = self
                .client
                .describe_tasks()
                .cluster(&self.config.cluster)
                .set_tasks(Some(batch.to_vec()))
                .include(TaskField::Tags)
                .send()
                .await
                .map_err(|e| scheduler_error(&e))?;
            tasks.extend(answer.tasks().iter().cloned());
        }
        Ok(tasks)
    }

    async fn to_infos(&self, tasks: &[Task]) -> Result<Vec<TaskInfo>, SchedulerError> {
        let facts = self.instance_facts(tasks).await?;
        Ok(tasks
            .iter()
            .filter_map(|t| task_info(t, &self.config.container_name, &facts, None))
            .collect())
    }

    async fn list_arns(&self, status: DesiredStatus) -> Result<Vec<String>, SchedulerError> {
        let mut pages = self
            .client
            .list_tasks()
            .cluster(&self.config.cluster)
            .started_by(self.config.started_by())
            .desired_status(status)
            .into_paginator()
            .send();
        let mut arns = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| scheduler_error(&e))?;
            arns.extend(page.task_arns().iter().cloned());
        }
        Ok(arns)
    }
}

/// Reads a timestamp as milliseconds since the epoch (`None` before 1970).
fn timestamp(time: Option<&aws_smithy_types::DateTime>) -> Option<Timestamp> {
    let millis = time?.to_millis().ok()?;
    u64::try_from(millis).ok().map(Timestamp::from_millis)
}

/// The task's own IP: its ENI attachment (awsvpc), else a container's network interface.
fn task_ip(task: &Task) -> Option<IpAddr> {
    let from_attachment = task
        .attachments()
        .iter()
        .filter(|a| a.r#type() == Some("ElasticNetworkInterface"))
        .flat_map(|a| a.details())
        .find(|d| d.name() == Some("privateIPv4Address"))
        .and_then(|d| d.value())
        .and_then(|v| v.parse().ok());
    from_attachment.or_else(|| {
        task.containers()
            .iter()
            .flat_map(|c| c.network_interfaces())
            .find_map(|n| n.private_ipv4_address().and_then(|v| v.parse().ok()))
    })
}

/// Folds an ECS task into the port's view. `launched` fills in what a RunTask answer may
/// not carry yet (its tags). `None` for a task without an ARN.
fn task_info(
    task: &Task,
    container_name: &str,
    facts: &HashMap<String, InstanceFacts>,
    launched: Option<&LaunchRequest>,
) -> Option<TaskInfo> {
    let id = TaskId::new(task.task_arn()?);
    let tag = |key: &str| {
        task.tags()
            .iter()
            .find(|t| t.key() == Some(key))
            .and_then(|t| t.value())
            .map(str::to_owned)
    };
    let instance = task
        .container_instance_arn()
        .and_then(|arn| facts.get(arn))
        .cloned()
        .unwrap_or_default();
    let zone = task
        .availability_zone()
        .map(Zone::new)
        .or(instance.zone)
        .or_else(|| tag(TAG_ZONE).map(Zone::new))
        .or_else(|| launched.map(|r| r.zone.clone()));
    let node = tag(TAG_NODE)
        .map(NodeId::new)
        .or_else(|| launched.map(|r| r.node.clone()));
    let role = tag(TAG_ROLE)
        .and_then(|r| Role::parse(&r))
        .or_else(|| launched.map(|r| r.role));
    let snapshot = match tag(TAG_SNAPSHOT) {
        Some(snapshot) => Some(SnapshotId::new(snapshot)),
        None if task.tags().is_empty() => launched.and_then(|r| r.snapshot.clone()),
        None => None,
    };
    let bindings = task
        .containers()
        .iter()
        .filter(|c| c.name() == Some(container_name))
        .flat_map(|c| c.network_bindings())
        .filter_map(|b| {
            Some(PortBinding {
                container_port: u16::try_from(b.container_port()?).ok()?,
                host_port: u16::try_from(b.host_port()?).ok()?,
            })
        })
        .collect();
    let stop_reason = task
        .stopped_reason()
        .filter(|r| !r.trim().is_empty())
        .map(str::to_owned)
        .or_else(|| task.stop_code().map(|c| c.as_str().to_owned()));
    Some(TaskInfo {
        id,
        node,
        zone,
        role,
        snapshot,
        last_status: TaskStatus::from_ecs(task.last_status().unwrap_or("PROVISIONING")),
        desired_status: TaskStatus::from_ecs(task.desired_status().unwrap_or("RUNNING")),
        stop_reason,
        started_at: timestamp(task.started_at()),
        stopped_at: timestamp(task.stopped_at()),
        instance_id: instance.ec2_instance_id,
        ip: task_ip(task).or(instance.private_ip),
        bindings,
    })
}

/// Cuts `text` to at most `max` characters.
fn truncate_chars(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((index, _)) => &text[..index],
        None => text,
    }
}

#[async_trait]
impl Scheduler for EcsScheduler {
    async fn launch(&self, request: &LaunchRequest) -> Result<LaunchReport, SchedulerError> {
        let plan = run_task_plan(&self.config, request)?;
        let answer = self.send_run_task(&plan).await?;
        // The tasks have started whatever happens next: an instance lookup that fails must
        // not hide them, so it only costs the instance ids (the next list fills them in).
        let facts = match self.instance_facts(answer.tasks()).await {
            Ok(facts) => facts,
            Err(error) => {
                tracing::warn!(%error, node = %request.node, "container instance lookup after RunTask failed");
                HashMap::new()
            }
        };
        let started = answer
            .tasks()
            .iter()
            .filter_map(|t| task_info(t, &self.config.container_name, &facts, Some(request)))
            .collect();
        let failures = answer
            .failures()
            .iter()
            .map(|f| {
                let reason = f.reason().unwrap_or_default();
                LaunchFailure {
                    zone: request.zone.clone(),
                    reason: PlacementFailure::parse(reason),
                    detail: f
                        .detail()
                        .filter(|d| !d.is_empty())
                        .unwrap_or(reason)
                        .to_owned(),
                }
            })
            .collect();
        Ok(LaunchReport { started, failures })
    }

    async fn stop(&self, task: &TaskId, reason: &str) -> Result<(), SchedulerError> {
        let result = self
            .client
            .stop_task()
            .cluster(&self.config.cluster)
            .task(task.as_str())
            .reason(truncate_chars(reason, STOP_REASON_MAX))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) => match scheduler_error(&error) {
                // ECS forgets stopped tasks after about an hour: "The referenced task was not
                // found." A task that is gone is stopped.
                SchedulerError::InvalidRequest { message }
                    if message.starts_with("InvalidParameterException")
                        && message.to_ascii_lowercase().contains("not found") =>
                {
                    Ok(())
                }
                other => Err(other),
            },
        }
    }

    async fn list_tasks(&self) -> Result<Vec<TaskInfo>, SchedulerError> {
        let mut arns = self.list_arns(DesiredStatus::Running).await?;
        arns.extend(self.list_arns(DesiredStatus::Stopped).await?);
        // A task that stopped between the two listings appears twice.
        let mut seen = BTreeSet::new();
        arns.retain(|arn| seen.insert(arn.clone()));
        let tasks = self.describe_raw(&arns).await?;
        self.to_infos(&tasks).await
    }

    async fn describe_tasks(&self, tasks: &[TaskId]) -> Result<Vec<TaskInfo>, SchedulerError> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let mut seen = BTreeSet::new();
        let ids: Vec<String> = tasks
            .iter()
            .map(|t| t.as_str().to_owned())
            .filter(|id| seen.insert(id.clone()))
            .collect();
        let found = self.describe_raw(&ids).await?;
        // Answer only for what was asked: ECS matches ids loosely (an id or an ARN).
        let infos = self.to_infos(&found).await?;
        Ok(infos
            .into_iter()
            .filter(|info| {
                ids.iter().any(|id| {
                    id == info.id.as_str() || info.id.as_str().ends_with(&format!("/{id}"))
                })
            })
            .collect())
    }
}
