//! What wakes the health reactor: EventBridge events parsed into a [`Trigger`].
//!
//! # Design
//!
//! The reactor is level-triggered. Every trigger, whatever it says, wakes exactly one
//! `reconcile` of the whole fleet, which reads the observed state afresh and decides from
//! that. A trigger is therefore only a *hint*: it may tell the planner where to look first (a
//! stopped task's ARN, a doomed spot instance), but missing, duplicated, reordered or stale
//! events cannot make the fleet wrong, only slower to heal (the one-minute schedule is the
//! fallback). That is why parsing is forgiving where it can be:
//!
//! - an event this module does not know is [`Trigger::Unknown`], never an error: it still wakes
//!   a reconcile;
//! - only input that is not an EventBridge event at all (not JSON, not an object, no
//!   `detail-type` or `source`) or a known event whose detail does not have its documented shape
//!   is a [`TriggerError`], which the Lambda logs and answers by reconciling anyway;
//! - no input makes this module panic (a property test feeds it arbitrary JSON).
//!
//! # The events
//!
//! Shapes follow AWS's published sample events (see `tests/fixtures/README.md`):
//!
//! - **CloudWatch Alarm State Change** (`aws.cloudwatch`): the envelope is
//!   [`EventBridgeEvent`] and the detail [`CloudWatchAlarmData`] from `aws_lambda_events`. The
//!   configuration is read metric by metric, because a metric-math alarm mixes `expression`
//!   entries (no `metricStat`) with metric entries, and the library's configuration type
//!   rejects the former. The target group, load balancer and zone come from the dimensions of
//!   the first metric that has them (`TargetGroup`, `LoadBalancer`, `AvailabilityZone`: the
//!   per-zone `UnHealthyHostCount` alarms of the fleet's NLB).
//! - **ECS Task State Change** (`aws.ecs`): no `aws_lambda_events` type exists, so
//!   [`EcsTaskDetail`] is our own, covering only the fields decisions use. `lastStatus`
//!   `STOPPED` gives [`Trigger::TaskStopped`]; every other status gives a
//!   [`Trigger::TaskChange`] hint (a task that reached RUNNING may carry the host port its
//!   target needs).
//! - **EC2 Spot Instance Interruption Warning** (`aws.ec2`): the detail holds only
//!   `instance-id` and `instance-action`. The event carries no action time; AWS sends it two
//!   minutes before the action, so [`SpotInterruption::instance_action_time`] is the event time
//!   plus [`SPOT_INTERRUPTION_NOTICE`].
//! - **Scheduled Event** (`aws.events`): the fallback tick, [`Trigger::Schedule`].
//!
//! # Whose event is it
//!
//! ECS sends task events for every task of the cluster, and a cluster may host other fleets
//! and other services. [`FleetScope`] says whether a task event is the fleet's: same cluster
//! (by ARN or by name) and task group `nodefleet:<fleet>`, the group the ECS scheduler adapter
//! gives every task it starts. Alarm, spot and schedule events are admitted as they are: the
//! EventBridge rules already select the fleet's alarms, and whether a spot instance hosts one
//! of the fleet's tasks is only known from the observed state, which the planner reads.

use std::collections::HashMap;
use std::time::Duration;

use aws_lambda_events::event::cloudwatch_alarms::{
    CloudWatchAlarmData, CloudWatchAlarmStateValue, CloudWatchMetricDefinition,
};
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use nodefleet_ports::Timestamp;
use nodefleet_ports::model::{TaskId, Zone};
use nodefleet_ports::scheduler::{PortBinding, TaskStatus};
use serde::Deserialize;
use serde_json::Value;

/// `detail-type` of the alarm state change event.
pub const ALARM_STATE_CHANGE: &str = "CloudWatch Alarm State Change";
/// `detail-type` of the ECS task state change event.
pub const ECS_TASK_STATE_CHANGE: &str = "ECS Task State Change";
/// `detail-type` of the spot interruption warning.
pub const SPOT_INTERRUPTION_WARNING: &str = "EC2 Spot Instance Interruption Warning";
/// `detail-type` of an EventBridge schedule's event.
pub const SCHEDULED_EVENT: &str = "Scheduled Event";

/// `source` of CloudWatch's events.
pub const SOURCE_CLOUDWATCH: &str = "aws.cloudwatch";
/// `source` of ECS's events.
pub const SOURCE_ECS: &str = "aws.ecs";
/// `source` of EC2's events.
pub const SOURCE_EC2: &str = "aws.ec2";
/// `source` of EventBridge's own (scheduled) events.
pub const SOURCE_EVENTS: &str = "aws.events";

/// How long before the interruption AWS sends the spot warning: "two minutes prior to the
/// actual interruption" (EC2 User Guide, Spot Instance interruption notices). Hibernation
/// starts at once, so for it this is an upper bound, which is the safe side for draining.
pub const SPOT_INTERRUPTION_NOTICE: Duration = Duration::from_secs(120);

/// The metric dimension naming a target group (`targetgroup/<name>/<id>`).
pub const DIMENSION_TARGET_GROUP: &str = "TargetGroup";
/// The metric dimension naming a load balancer (`net/<name>/<id>`).
pub const DIMENSION_LOAD_BALANCER: &str = "LoadBalancer";
/// The metric dimension naming an availability zone.
pub const DIMENSION_AVAILABILITY_ZONE: &str = "AvailabilityZone";

/// The ECS `lastStatus` that makes a task event a [`Trigger::TaskStopped`].
const ECS_STOPPED: &str = "STOPPED";

/// What woke the reactor. Every variant means "reconcile now"; the fields are hints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    AlarmStateChange(AlarmStateChange),
    TaskStopped(TaskStopped),
    /// A task event with any status but STOPPED.
    TaskChange(TaskChange),
    SpotInterruption(SpotInterruption),
    /// The periodic fallback; `at` is the event time when it has one.
    Schedule {
        at: Option<Timestamp>,
    },
    /// Any other event: it still wakes a reconcile.
    Unknown {
        detail_type: String,
        source: String,
    },
}

/// The state of a CloudWatch alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlarmState {
    Ok,
    Alarm,
    InsufficientData,
}

impl AlarmState {
    fn from_cloudwatch(value: &CloudWatchAlarmStateValue) -> AlarmState {
        match value {
            CloudWatchAlarmStateValue::Alarm => AlarmState::Alarm,
            CloudWatchAlarmStateValue::InsufficientData => AlarmState::InsufficientData,
            // The enum is non-exhaustive; anything that is not ALARM is not a failure.
            _ => AlarmState::Ok,
        }
    }
}

/// An alarm changed state: for the fleet, an `UnHealthyHostCount` alarm of one target group in
/// one zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmStateChange {
    pub alarm: String,
    pub state: AlarmState,
    pub previous_state: Option<AlarmState>,
    /// CloudWatch's explanation of the new state.
    pub reason: String,
    /// The `TargetGroup` dimension (`targetgroup/<name>/<id>`), if the alarm's metric has one.
    pub target_group: Option<String>,
    /// The `LoadBalancer` dimension (`net/<name>/<id>`), if present.
    pub load_balancer: Option<String>,
    /// The `AvailabilityZone` dimension, if present.
    pub zone: Option<Zone>,
    /// The event time.
    pub at: Option<Timestamp>,
}

/// One container of a stopped task, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerExit {
    pub name: String,
    /// `None` when the container never ran (image pull failure, task stopped before start).
    pub exit_code: Option<i32>,
    /// ECS's reason for the container (e.g. `OutOfMemoryError: Container killed ...`).
    pub reason: Option<String>,
}

/// A task reached STOPPED.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStopped {
    pub cluster_arn: String,
    pub task_arn: TaskId,
    pub group: Option<String>,
    pub started_by: Option<String>,
    pub stopped_reason: Option<String>,
    /// ECS's stop code: `EssentialContainerExited`, `TaskFailedToStart`, `UserInitiated`,
    /// `SpotInterruption`, `ServiceSchedulerInitiated`, `TerminationNotice`.
    pub stop_code: Option<String>,
    pub availability_zone: Option<Zone>,
    pub containers: Vec<ContainerExit>,
    /// The event time.
    pub at: Option<Timestamp>,
}

/// A task changed state without stopping (PENDING, RUNNING, STOPPING, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskChange {
    pub cluster_arn: String,
    pub task_arn: TaskId,
    pub group: Option<String>,
    pub started_by: Option<String>,
    pub last_status: TaskStatus,
    pub desired_status: Option<TaskStatus>,
    pub availability_zone: Option<Zone>,
    /// Host ports published so far (bridge networking): enough to register the target.
    pub bindings: Vec<PortBinding>,
    /// The event time.
    pub at: Option<Timestamp>,
}

/// What EC2 is about to do to a spot instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SpotAction {
    Terminate,
    Stop,
    Hibernate,
    /// A value AWS may add later, verbatim.
    Other(String),
}

impl SpotAction {
    fn parse(action: &str) -> SpotAction {
        match action {
            "terminate" => SpotAction::Terminate,
            "stop" => SpotAction::Stop,
            "hibernate" => SpotAction::Hibernate,
            other => SpotAction::Other(other.to_owned()),
        }
    }
}

/// EC2 will interrupt a spot instance soon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpotInterruption {
    pub instance_id: String,
    pub action: SpotAction,
    /// When the warning was sent (the event time).
    pub warned_at: Option<Timestamp>,
    /// When the action is expected: the warning time plus [`SPOT_INTERRUPTION_NOTICE`]. The
    /// event itself carries no action time.
    pub instance_action_time: Option<Timestamp>,
}

/// Why an incoming event could not be read. The caller logs it and reconciles anyway.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriggerError {
    #[error("event is not JSON: {reason}")]
    NotJson { reason: String },
    #[error("event is not a JSON object")]
    NotAnObject,
    /// `field` is missing or not a string.
    #[error("event has no string `{field}`")]
    MissingField { field: &'static str },
    #[error("event envelope is malformed: {reason}")]
    MalformedEnvelope { reason: String },
    /// A known event whose detail does not have its documented shape.
    #[error("`{detail_type}` event has a malformed detail: {reason}")]
    MalformedDetail {
        detail_type: &'static str,
        reason: String,
    },
}

/// Parses raw Lambda input bytes.
pub fn parse_trigger_bytes(input: &[u8]) -> Result<Trigger, TriggerError> {
    let value: Value = serde_json::from_slice(input).map_err(|error| TriggerError::NotJson {
        reason: error.to_string(),
    })?;
    parse_trigger(&value)
}

/// Parses an EventBridge event into the trigger it is.
pub fn parse_trigger(event: &Value) -> Result<Trigger, TriggerError> {
    let object = event.as_object().ok_or(TriggerError::NotAnObject)?;
    let string_field = |field: &'static str| {
        object
            .get(field)
            .and_then(Value::as_str)
            .ok_or(TriggerError::MissingField { field })
    };
    let detail_type = string_field("detail-type")?;
    let source = string_field("source")?;

    let envelope = EventBridgeEvent::<Value>::deserialize(event).map_err(|error| {
        TriggerError::MalformedEnvelope {
            reason: error.to_string(),
        }
    })?;
    let at = envelope.time.as_ref().and_then(|time| {
        u64::try_from(time.timestamp_millis())
            .ok()
            .map(Timestamp::from_millis)
    });

    match (source, detail_type) {
        (SOURCE_CLOUDWATCH, ALARM_STATE_CHANGE) => {
            parse_alarm(&envelope.detail, at).map(Trigger::AlarmStateChange)
        }
        (SOURCE_ECS, ECS_TASK_STATE_CHANGE) => parse_task(&envelope.detail, at),
        (SOURCE_EC2, SPOT_INTERRUPTION_WARNING) => {
            parse_spot(&envelope.detail, at).map(Trigger::SpotInterruption)
        }
        (SOURCE_EVENTS, SCHEDULED_EVENT) => Ok(Trigger::Schedule { at }),
        _ => Ok(Trigger::Unknown {
            detail_type: detail_type.to_owned(),
            source: source.to_owned(),
        }),
    }
}

fn malformed(detail_type: &'static str) -> impl Fn(serde_json::Error) -> TriggerError {
    move |error| TriggerError::MalformedDetail {
        detail_type,
        reason: error.to_string(),
    }
}

fn parse_alarm(detail: &Value, at: Option<Timestamp>) -> Result<AlarmStateChange, TriggerError> {
    let data = CloudWatchAlarmData::<Value, Value>::deserialize(detail)
        .map_err(malformed(ALARM_STATE_CHANGE))?;
    let state = data.state.as_ref().ok_or(TriggerError::MalformedDetail {
        detail_type: ALARM_STATE_CHANGE,
        reason: "no `state`".to_owned(),
    })?;
    let dimensions = first_metric_dimensions(&data.configuration);
    let dimension = |name: &str| dimensions.as_ref().and_then(|all| all.get(name).cloned());
    Ok(AlarmStateChange {
        alarm: data.alarm_name.clone(),
        state: AlarmState::from_cloudwatch(&state.value),
        previous_state: data
            .previous_state
            .as_ref()
            .map(|previous| AlarmState::from_cloudwatch(&previous.value)),
        reason: state.reason.clone(),
        target_group: dimension(DIMENSION_TARGET_GROUP),
        load_balancer: dimension(DIMENSION_LOAD_BALANCER),
        zone: dimension(DIMENSION_AVAILABILITY_ZONE).map(Zone::new),
        at,
    })
}

/// The dimensions of the first metric (not expression) of an alarm configuration that names
/// a target group or a zone, else of the first metric at all.
fn first_metric_dimensions(configuration: &Value) -> Option<HashMap<String, String>> {
    let metrics = configuration.get("metrics")?.as_array()?;
    let all: Vec<HashMap<String, String>> = metrics
        .iter()
        .filter_map(|metric| CloudWatchMetricDefinition::deserialize(metric).ok())
        .map(|metric| metric.metric_stat.metric.dimensions)
        .collect();
    let names_fleet_resource = |dimensions: &&HashMap<String, String>| {
        dimensions.contains_key(DIMENSION_TARGET_GROUP)
            || dimensions.contains_key(DIMENSION_AVAILABILITY_ZONE)
    };
    all.iter()
        .find(names_fleet_resource)
        .or_else(|| all.first())
        .cloned()
}

/// The ECS task state change detail: the fields of ECS's `Task` that decisions use. Unknown
/// fields are ignored, as ECS's documentation asks of consumers.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EcsTaskDetail {
    pub cluster_arn: String,
    pub task_arn: String,
    pub last_status: String,
    #[serde(default)]
    pub desired_status: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub started_by: Option<String>,
    #[serde(default)]
    pub stopped_reason: Option<String>,
    #[serde(default)]
    pub stop_code: Option<String>,
    #[serde(default)]
    pub availability_zone: Option<String>,
    #[serde(default)]
    pub containers: Vec<EcsContainer>,
}

/// One container in an ECS task event.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EcsContainer {
    pub name: String,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub network_bindings: Vec<EcsNetworkBinding>,
}

/// A published port of an ECS container (bridge networking).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EcsNetworkBinding {
    #[serde(default)]
    pub container_port: Option<u16>,
    #[serde(default)]
    pub host_port: Option<u16>,
}

fn parse_task(detail: &Value, at: Option<Timestamp>) -> Result<Trigger, TriggerError> {
    let task = EcsTaskDetail::deserialize(detail).map_err(malformed(ECS_TASK_STATE_CHANGE))?;
    let availability_zone = task.availability_zone.map(Zone::new);
    if task.last_status == ECS_STOPPED {
        return Ok(Trigger::TaskStopped(TaskStopped {
            cluster_arn: task.cluster_arn,
            task_arn: TaskId::new(task.task_arn),
            group: task.group,
            started_by: task.started_by,
            stopped_reason: task.stopped_reason,
            stop_code: task.stop_code,
            availability_zone,
            containers: task
                .containers
                .into_iter()
                .map(|container| ContainerExit {
                    name: container.name,
                    exit_code: container.exit_code,
                    reason: container.reason,
                })
                .collect(),
            at,
        }));
    }
    let bindings = task
        .containers
        .iter()
        .flat_map(|container| &container.network_bindings)
        .filter_map(|binding| {
            Some(PortBinding {
                container_port: binding.container_port?,
                host_port: binding.host_port?,
            })
        })
        .collect();
    Ok(Trigger::TaskChange(TaskChange {
        cluster_arn: task.cluster_arn,
        task_arn: TaskId::new(task.task_arn),
        group: task.group,
        started_by: task.started_by,
        last_status: TaskStatus::from_ecs(&task.last_status),
        desired_status: task.desired_status.as_deref().map(TaskStatus::from_ecs),
        availability_zone,
        bindings,
        at,
    }))
}

/// The spot interruption warning's detail, spelled as EC2 sends it.
#[derive(Debug, Clone, Deserialize)]
struct SpotDetail {
    #[serde(rename = "instance-id")]
    instance_id: String,
    #[serde(rename = "instance-action")]
    instance_action: String,
}

fn parse_spot(detail: &Value, at: Option<Timestamp>) -> Result<SpotInterruption, TriggerError> {
    let spot = SpotDetail::deserialize(detail).map_err(malformed(SPOT_INTERRUPTION_WARNING))?;
    Ok(SpotInterruption {
        instance_id: spot.instance_id,
        action: SpotAction::parse(&spot.instance_action),
        warned_at: at,
        instance_action_time: at.map(|warned| warned.plus(SPOT_INTERRUPTION_NOTICE)),
    })
}

/// The task group the fleet's tasks carry: `nodefleet:<fleet>`.
pub fn fleet_task_group(fleet: &str) -> String {
    format!("nodefleet:{fleet}")
}

/// Which task events are the fleet's. See the module doc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetScope {
    /// The cluster, as a name or an ARN.
    pub cluster: String,
    pub fleet: String,
}

impl FleetScope {
    pub fn new(cluster: impl Into<String>, fleet: impl Into<String>) -> FleetScope {
        FleetScope {
            cluster: cluster.into(),
            fleet: fleet.into(),
        }
    }

    /// True if a task of `cluster_arn` in `group` is one of the fleet's.
    pub fn owns_task(&self, cluster_arn: &str, group: Option<&str>) -> bool {
        let cluster_name = cluster_arn
            .rsplit_once(":cluster/")
            .map_or(cluster_arn, |(_, name)| name);
        let same_cluster = cluster_arn == self.cluster || cluster_name == self.cluster;
        same_cluster && group == Some(fleet_task_group(&self.fleet).as_str())
    }

    /// False only for a task event of another cluster or group; every other trigger is
    /// admitted (see the module doc).
    pub fn admits(&self, trigger: &Trigger) -> bool {
        match trigger {
            Trigger::TaskStopped(task) => self.owns_task(&task.cluster_arn, task.group.as_deref()),
            Trigger::TaskChange(task) => self.owns_task(&task.cluster_arn, task.group.as_deref()),
            Trigger::AlarmStateChange(_)
            | Trigger::SpotInterruption(_)
            | Trigger::Schedule { .. }
            | Trigger::Unknown { .. } => true,
        }
    }
}
