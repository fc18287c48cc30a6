//! `EcsScheduler` against the scheduler contract on moto, plus what moto cannot show:
//! the RunTask it builds (a pure plan, unit-tested), and the answers moto never gives
//! (placement failures, throttling, a missing cluster, a forgotten task, pagination) through
//! aws-smithy-mocks.
//!
//! Known moto gaps (5.2.5), each covered elsewhere:
//!
//! - moto ignores placement constraints and strategies: a task lands on the first container
//!   instance with room, whatever the zone. The moto fixture therefore has one zone; the
//!   constraint expressions are checked in the plan tests, placement by zone is modelled by
//!   `FakeScheduler` (nodefleet-ports).
//! - moto never reports `failures[]`: with no room it just starts fewer tasks. So the
//!   capacity contract does not run on moto; failure mapping is tested with mocks below.
//! - moto ignores `clientToken`: a retried RunTask starts a second task. So the idempotency
//!   contract does not run on moto; that the token is sent, and derived deterministically
//!   from the key, is tested with request inspection below, and the promise itself runs on
//!   `FakeScheduler`.
//! - moto's tasks stop by themselves: its state manager advances a task one status per
//!   describe by default (RUNNING, DEACTIVATING, ... STOPPED). The fixture turns that off
//!   through moto's `/moto-api/state-manager/set-transition`.
//! - moto needs an EC2 instance behind each container instance; there is no EC2 SDK here, so
//!   the fixture calls moto's EC2 query API over plain HTTP.

#![allow(clippy::unwrap_used)]

mod support;

use nodefleet_testkit::moto::{
    keep_ecs_tasks_where_they_are as keep_moto_tasks_where_they_are, run_ec2_instance,
};

use std::sync::{Arc, Mutex};

use aws_sdk_ecs::Client;
use aws_sdk_ecs::operation::describe_container_instances::DescribeContainerInstancesOutput;
use aws_sdk_ecs::operation::describe_tasks::DescribeTasksOutput;
use aws_sdk_ecs::operation::list_tasks::ListTasksOutput;
use aws_sdk_ecs::operation::run_task::{RunTaskInput, RunTaskOutput};
use aws_sdk_ecs::operation::stop_task::StopTaskOutput;
use aws_sdk_ecs::types::{
    Attachment, Attribute, Container, ContainerDefinition, ContainerInstance, DesiredStatus,
    Failure, KeyValuePair, LaunchType, NetworkBinding, PlacementConstraintType,
    PlacementStrategyType, Tag, Task, TaskField,
};
use aws_smithy_mocks::{Rule, mock};
use aws_smithy_runtime_api::http::{Response, StatusCode};
use aws_smithy_types::body::SdkBody;
use nodefleet_aws::EcsScheduler;
use nodefleet_aws::ecs::{
    CLIENT_TOKEN_MAX, CapacityProviderShare, ENV_NODE_ID, ENV_ROLE, ENV_SNAPSHOT_ID, ENV_ZONE,
    EcsLaunch, EcsNetwork, EcsSchedulerConfig, PRIVATE_IP_ATTRIBUTE, STARTED_BY_MAX, TAG_FLEET,
    TAG_NODE, TAG_ROLE, TAG_SNAPSHOT, TAG_ZONE, TASK_CPU_UNITS_MAX, TASK_CPU_UNITS_MIN,
    TASK_MEMORY_MIB_MIN, TaskSize, client_token, run_task_plan,
};
use nodefleet_ports::contract::scheduler::SchedulerFixture;
use nodefleet_ports::{
    LaunchRequest, NetworkMode, NodeId, PlacementFailure, Role, Scheduler, SchedulerError,
    SnapshotId, TaskId, TaskStatus, Zone, target_for_task,
};

const REGION: &str = "us-east-1";
const CONTAINER: &str = "node";

// ---------------------------------------------------------------------------------------
// moto: the contract
// ---------------------------------------------------------------------------------------

/// A cluster with one i3 container instance in `zone`, a node task definition, and a
/// scheduler for a fleet of its own.
async fn moto_scheduler(zone: &str) -> (EcsScheduler, String) {
    keep_moto_tasks_where_they_are().await;
    let client = Client::new(&support::moto_config());
    let cluster = support::unique_name("nf-cluster");
    client
        .create_cluster()
        .cluster_name(&cluster)
        .send()
        .await
        .unwrap();
    let family = support::unique_name("nf-node");
    client
        .register_task_definition()
        .family(&family)
        .container_definitions(
            ContainerDefinition::builder()
                .name(CONTAINER)
                .image("ghcr.io/nodefleet/node:test")
                .memory(512)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let instance_id = run_ec2_instance(zone, "i3.2xlarge").await;
    client
        .register_container_instance()
        .cluster(&cluster)
        .instance_identity_document(format!(
            r#"{{"instanceId": "{instance_id}", "availabilityZone": "{zone}", "region": "{REGION}"}}"#
        ))
        .send()
        .await
        .unwrap();
    let config =
        EcsSchedulerConfig::new(&cluster, &family, CONTAINER, support::unique_name("fleet"));
    (EcsScheduler::new(client, config).unwrap(), instance_id)
}

async fn moto_fixture() -> SchedulerFixture<EcsScheduler> {
    let (scheduler, _) = moto_scheduler("us-east-1a").await;
    let cluster = scheduler.config().cluster.clone();
    SchedulerFixture::new(scheduler, vec![Zone::new("us-east-1a")]).with_unknown_task(TaskId::new(
        format!(
            "arn:aws:ecs:{REGION}:123456789012:task/{cluster}/0123456789abcdef0123456789abcdef"
        ),
    ))
}

nodefleet_ports::scheduler_contract!(moto_fixture());

fn request(zone: &str, key: &str, count: u32) -> LaunchRequest {
    LaunchRequest {
        node: NodeId::new("node-7"),
        zone: Zone::new(zone),
        role: Role::Serving,
        snapshot: Some(SnapshotId::new("snap-42")),
        idempotency_key: key.to_owned(),
        count,
    }
}

#[tokio::test]
async fn moto_tasks_carry_their_instance_and_zone_from_the_container_instance() {
    let (scheduler, instance_id) = moto_scheduler("us-east-1c").await;
    let report = scheduler
        .launch(&request("us-east-1c", "k-1", 1))
        .await
        .unwrap();
    assert_eq!(
        report.started[0].instance_id.as_deref(),
        Some(instance_id.as_str())
    );
    let listed = scheduler.list_tasks().await.unwrap();
    assert_eq!(listed.len(), 1, "only this fleet's tasks: {listed:?}");
    assert_eq!(listed[0].instance_id.as_deref(), Some(instance_id.as_str()));
    assert_eq!(listed[0].zone, Some(Zone::new("us-east-1c")));
    assert_eq!(listed[0].snapshot, Some(SnapshotId::new("snap-42")));
}

#[tokio::test]
async fn a_missing_cluster_on_moto_is_an_invalid_request() {
    let client = Client::new(&support::moto_config());
    let config = EcsSchedulerConfig::new(
        support::unique_name("nf-missing"),
        "nf-node",
        CONTAINER,
        "f",
    );
    let scheduler = EcsScheduler::new(client, config).unwrap();
    let err = scheduler
        .launch(&request("us-east-1a", "k", 1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, SchedulerError::InvalidRequest { .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

// ---------------------------------------------------------------------------------------
// The RunTask plan (pure)
// ---------------------------------------------------------------------------------------

fn config() -> EcsSchedulerConfig {
    EcsSchedulerConfig::new("fleet-cluster", "nodefleet-node:7", CONTAINER, "mainnet")
}

#[test]
fn the_plan_constrains_family_and_zone_and_spreads_then_binpacks() {
    let plan = run_task_plan(&config(), &request("us-east-1b", "k", 1)).unwrap();
    assert_eq!(
        plan.constraints,
        vec![
            "attribute:ecs.instance-type =~ i3.* or attribute:ecs.instance-type =~ i3en.* or \
             attribute:ecs.instance-type =~ i4i.*"
                .to_owned(),
            "attribute:ecs.availability-zone == us-east-1b".to_owned(),
        ]
    );
    assert_eq!(
        plan.strategy,
        vec![
            (
                PlacementStrategyType::Spread,
                "attribute:ecs.availability-zone".to_owned()
            ),
            (PlacementStrategyType::Binpack, "memory".to_owned()),
        ]
    );
    assert_eq!(plan.launch, EcsLaunch::Ec2);
    assert_eq!(plan.count, 1);
    assert_eq!(plan.cluster, "fleet-cluster");
    assert_eq!(plan.task_definition, "nodefleet-node:7");
    assert_eq!(plan.awsvpc, None);

    let mut families = config();
    families.instance_families = vec!["i4i".into()];
    let plan = run_task_plan(&families, &request("us-east-1b", "k", 1)).unwrap();
    assert_eq!(plan.constraints[0], "attribute:ecs.instance-type =~ i4i.*");
}

#[test]
fn the_plan_passes_node_role_zone_and_snapshot_to_the_container_and_tags() {
    let plan = run_task_plan(&config(), &request("us-east-1b", "k", 1)).unwrap();
    assert_eq!(plan.container_name, CONTAINER);
    let env: Vec<(&str, &str)> = plan
        .environment
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        env,
        vec![
            (ENV_NODE_ID, "node-7"),
            (ENV_ROLE, "serving"),
            (ENV_ZONE, "us-east-1b"),
            (ENV_SNAPSHOT_ID, "snap-42"),
        ]
    );
    let tags: Vec<(&str, &str)> = plan
        .tags
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        tags,
        vec![
            (TAG_FLEET, "mainnet"),
            (TAG_NODE, "node-7"),
            (TAG_ROLE, "serving"),
            (TAG_ZONE, "us-east-1b"),
            (TAG_SNAPSHOT, "snap-42"),
        ]
    );
    assert!(plan.enable_ecs_managed_tags);
    assert_eq!(plan.started_by, "nodefleet-mainnet");
    assert_eq!(plan.group, "nodefleet:mainnet");

    // Without a snapshot the node syncs from genesis: no variable, no tag.
    let mut genesis = request("us-east-1b", "k", 1);
    genesis.snapshot = None;
    let plan = run_task_plan(&config(), &genesis).unwrap();
    assert!(!plan.environment.iter().any(|(k, _)| k == ENV_SNAPSHOT_ID));
    assert!(!plan.tags.iter().any(|(k, _)| k == TAG_SNAPSHOT));
}

/// geth's reservation from the capacity planner: 4 vCPU and 16 GiB plus the agent's share.
const GETH_SIZE: TaskSize = TaskSize {
    cpu_units: 4_352,
    memory_mib: 16_640,
};

fn sized_config() -> EcsSchedulerConfig {
    EcsSchedulerConfig {
        task_size: Some(GETH_SIZE),
        ..config()
    }
}

#[test]
fn the_plan_carries_the_configured_task_size_and_none_without_one() {
    let plan = run_task_plan(&sized_config(), &request("us-east-1b", "k", 1)).unwrap();
    assert_eq!(plan.task_size, Some(GETH_SIZE));
    let plan = run_task_plan(&config(), &request("us-east-1b", "k", 1)).unwrap();
    assert_eq!(plan.task_size, None);
}

#[test]
fn task_sizes_outside_ecs_limits_are_refused() {
    let sized = |cpu_units, memory_mib| EcsSchedulerConfig {
        task_size: Some(TaskSize {
            cpu_units,
            memory_mib,
        }),
        ..config()
    };
    for (cpu, memory) in [
        (TASK_CPU_UNITS_MIN, TASK_MEMORY_MIB_MIN),
        (TASK_CPU_UNITS_MAX, 1_048_576),
        (4_352, 16_640),
    ] {
        assert!(sized(cpu, memory).validate().is_ok(), "{cpu} {memory}");
    }
    for (cpu, memory) in [
        (TASK_CPU_UNITS_MIN - 1, 1_024),
        (TASK_CPU_UNITS_MAX + 1, 1_024),
        (0, 1_024),
        (1_024, TASK_MEMORY_MIB_MIN - 1),
        (1_024, 0),
        (1_024, u32::MAX),
    ] {
        let config = sized(cpu, memory);
        let err = config.validate().unwrap_err();
        assert!(
            matches!(err, SchedulerError::InvalidRequest { .. }),
            "{cpu} {memory}: {err:?}"
        );
        assert!(
            run_task_plan(&config, &request("us-east-1b", "k", 1)).is_err(),
            "{cpu} {memory}: the plan refuses it too"
        );
        assert!(
            EcsScheduler::new(mocked_client(&[]), config).is_err(),
            "{cpu} {memory}: no scheduler is built with it"
        );
    }
}

#[test]
fn client_tokens_are_the_key_when_it_fits_else_a_stable_digest() {
    assert_eq!(client_token("launch-node-7-gen-3"), "launch-node-7-gen-3");
    let exactly = "k".repeat(CLIENT_TOKEN_MAX);
    assert_eq!(client_token(&exactly), exactly);

    let long = format!(
        "launch/{}/replacement-of-task-{}",
        "n".repeat(40),
        "t".repeat(40)
    );
    let token = client_token(&long);
    assert!(token.len() <= CLIENT_TOKEN_MAX, "{token}");
    assert!(token.chars().all(|c| ('!'..='~').contains(&c)), "{token}");
    assert_eq!(token, client_token(&long), "deterministic");
    assert!(
        token.starts_with("launch/nnnn"),
        "a readable prefix: {token}"
    );
    // Keys that share a long prefix still get distinct tokens.
    let sibling = format!("{long}x");
    assert_ne!(client_token(&sibling), token);
    // A key with characters ECS refuses (space, non-ASCII) is digested too.
    let spaced = client_token("node 7 ünïcode");
    assert!(spaced.chars().all(|c| ('!'..='~').contains(&c)), "{spaced}");
    assert_ne!(spaced, client_token("node 7 unicode"));
    assert!(!client_token("").is_empty(), "ECS needs a non-empty token");
    // Pinned value (128-bit FNV-1a, computed independently): a change of the digest would
    // make a retry after a deploy start a second task.
    assert_eq!(
        client_token(&"a".repeat(65)),
        format!("{}-161826d56cd6e5fba5fb78a0e50bf924", "a".repeat(31))
    );
}

#[test]
fn started_by_fits_ecs_limits_and_differs_per_fleet() {
    let mut long = config();
    long.fleet = "a-very-long-fleet-name-that-does-not-fit".into();
    let started_by = long.started_by();
    assert!(started_by.len() <= STARTED_BY_MAX, "{started_by}");
    let mut other = long.clone();
    other.fleet.push('2');
    assert_ne!(other.started_by(), started_by);
    let mut odd = config();
    odd.fleet = "main net:1".into();
    assert!(
        odd.started_by()
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    );
}

#[test]
fn the_plan_supports_capacity_providers_and_awsvpc() {
    let mut cfg = config();
    cfg.launch = EcsLaunch::CapacityProviders(vec![CapacityProviderShare {
        capacity_provider: "i3-spot".into(),
        weight: 1,
        base: 0,
    }]);
    cfg.network = EcsNetwork::Awsvpc {
        subnets_by_zone: [(Zone::new("us-east-1b"), vec!["subnet-b".to_owned()])].into(),
        security_groups: vec!["sg-1".into()],
    };
    assert_eq!(cfg.network.mode(), NetworkMode::Awsvpc);
    let plan = run_task_plan(&cfg, &request("us-east-1b", "k", 2)).unwrap();
    assert_eq!(plan.count, 2);
    assert!(
        matches!(plan.launch, EcsLaunch::CapacityProviders(ref s) if s[0].capacity_provider == "i3-spot")
    );
    assert_eq!(
        plan.awsvpc,
        Some((vec!["subnet-b".to_owned()], vec!["sg-1".to_owned()]))
    );
    let err = run_task_plan(&cfg, &request("us-east-1c", "k", 1)).unwrap_err();
    assert!(
        matches!(err, SchedulerError::InvalidRequest { .. }),
        "{err:?}"
    );
}

#[test]
fn bad_counts_and_configurations_are_refused_before_any_call() {
    for count in [0, 11] {
        let err = run_task_plan(&config(), &request("us-east-1b", "k", count)).unwrap_err();
        assert!(
            matches!(err, SchedulerError::InvalidRequest { .. }),
            "{count}: {err:?}"
        );
    }
    let mut no_families = config();
    no_families.instance_families.clear();
    assert!(no_families.validate().is_err());
    let mut injected = config();
    injected.instance_families = vec!["i3.* or attribute:x".into()];
    assert!(
        injected.validate().is_err(),
        "a family cannot smuggle in an expression"
    );
    let mut no_providers = config();
    no_providers.launch = EcsLaunch::CapacityProviders(vec![]);
    assert!(no_providers.validate().is_err());
    let mut no_cluster = config();
    no_cluster.cluster = " ".into();
    assert!(no_cluster.validate().is_err());
    assert!(config().validate().is_ok());
}

// ---------------------------------------------------------------------------------------
// aws-smithy-mocks: what moto never answers
// ---------------------------------------------------------------------------------------

fn mocked_client(rules: &[&Rule]) -> Client {
    let config = aws_sdk_ecs::config::Builder::from(&support::mock_config())
        .interceptor(support::mock_interceptor(rules))
        .build();
    Client::from_conf(config)
}

fn mocked(rules: &[&Rule]) -> EcsScheduler {
    EcsScheduler::new(mocked_client(rules), config()).unwrap()
}

/// An ECS JSON error answer, parsed by the SDK as the real service's would be.
fn ecs_error(status: u16, code: &str, message: &str) -> Response {
    Response::new(
        StatusCode::try_from(status).unwrap(),
        SdkBody::from(format!(r#"{{"__type":"{code}","message":"{message}"}}"#)),
    )
}

const INSTANCE_ARN: &str = "arn:aws:ecs:us-east-1:1:container-instance/fleet-cluster/ci-1";

fn ecs_task(arn: &str, tags: &[(&str, &str)]) -> Task {
    let mut task = Task::builder()
        .task_arn(arn)
        .last_status("RUNNING")
        .desired_status("RUNNING")
        .container_instance_arn(INSTANCE_ARN)
        .containers(
            Container::builder()
                .name(CONTAINER)
                .network_bindings(
                    NetworkBinding::builder()
                        .container_port(8545)
                        .host_port(32770)
                        .build(),
                )
                .build(),
        )
        .containers(
            Container::builder()
                .name("sidecar")
                .network_bindings(
                    NetworkBinding::builder()
                        .container_port(9000)
                        .host_port(9000)
                        .build(),
                )
                .build(),
        );
    for (key, value) in tags {
        task = task.tags(Tag::builder().key(*key).value(*value).build());
    }
    task.build()
}

fn instances_rule() -> Rule {
    mock!(Client::describe_container_instances).then_output(|| {
        DescribeContainerInstancesOutput::builder()
            .container_instances(
                ContainerInstance::builder()
                    .container_instance_arn(INSTANCE_ARN)
                    .ec2_instance_id("i-0123456789abcdef0")
                    .attributes(
                        Attribute::builder()
                            .name("ecs.availability-zone")
                            .value("us-east-1b")
                            .build()
                            .unwrap(),
                    )
                    .attributes(
                        Attribute::builder()
                            .name(PRIVATE_IP_ATTRIBUTE)
                            .value("10.0.2.17")
                            .build()
                            .unwrap(),
                    )
                    .build(),
            )
            .build()
    })
}

#[tokio::test]
async fn a_partly_failed_run_task_reports_both_tasks_and_failures() {
    let run = mock!(Client::run_task).then_output(|| {
        RunTaskOutput::builder()
            .tasks(ecs_task(
                "arn:aws:ecs:us-east-1:1:task/fleet-cluster/t1",
                &[],
            ))
            .failures(
                Failure::builder()
                    .arn(INSTANCE_ARN)
                    .reason("RESOURCE:MEMORY")
                    .detail("not enough memory on 3 instances")
                    .build(),
            )
            .build()
    });
    let instances = instances_rule();
    let scheduler = mocked(&[&run, &instances]);
    let report = scheduler
        .launch(&request("us-east-1b", "k", 2))
        .await
        .unwrap();
    assert_eq!(report.started.len(), 1);
    let task = &report.started[0];
    // The RunTask answer carries no tags here: what was asked for fills in.
    assert_eq!(task.node, Some(NodeId::new("node-7")));
    assert_eq!(task.role, Some(Role::Serving));
    assert_eq!(task.snapshot, Some(SnapshotId::new("snap-42")));
    assert_eq!(task.zone, Some(Zone::new("us-east-1b")));
    assert_eq!(task.instance_id.as_deref(), Some("i-0123456789abcdef0"));
    // A bridge task has no address of its own: its instance's, from the attribute the
    // template's user data sets, is where its published ports are.
    assert_eq!(task.ip, Some("10.0.2.17".parse().unwrap()));
    let target = target_for_task(task, NetworkMode::Bridge, 8545).unwrap();
    assert_eq!(
        (target.id.as_str(), target.port),
        ("i-0123456789abcdef0", 32770)
    );
    assert_eq!(report.failures.len(), 1);
    let failure = &report.failures[0];
    assert_eq!(failure.reason, PlacementFailure::ResourceMemory);
    assert_eq!(failure.zone, Zone::new("us-east-1b"));
    assert_eq!(failure.detail, "not enough memory on 3 instances");
    assert!(failure.reason.is_zone_capacity());
}

#[tokio::test]
async fn agent_attribute_and_missing_failures_are_typed() {
    let run = mock!(Client::run_task).then_output(|| {
        let failure = |reason: &str| Failure::builder().reason(reason).build();
        RunTaskOutput::builder()
            .failures(failure("AGENT"))
            .failures(failure("ATTRIBUTE"))
            .failures(failure("MISSING"))
            .failures(failure(
                "You've reached the limit on the number of tasks you can run concurrently",
            ))
            .build()
    });
    let scheduler = mocked(&[&run]);
    let report = scheduler
        .launch(&request("us-east-1a", "k", 4))
        .await
        .unwrap();
    assert!(report.started.is_empty());
    let reasons: Vec<_> = report.failures.iter().map(|f| f.reason.clone()).collect();
    assert_eq!(
        reasons[..3],
        [
            PlacementFailure::Agent,
            PlacementFailure::Attribute,
            PlacementFailure::Missing
        ]
    );
    assert!(
        !reasons[3].is_zone_capacity(),
        "an account limit is not the zone's fault"
    );
    assert_eq!(
        report.failures[0].detail, "AGENT",
        "no detail: the reason stands in"
    );
}

#[tokio::test]
async fn throttling_is_retryable_and_a_missing_cluster_is_not() {
    let throttled = mock!(Client::run_task)
        .then_http_response(|| ecs_error(400, "ThrottlingException", "Rate exceeded"));
    let err = mocked(&[&throttled])
        .launch(&request("us-east-1a", "k", 1))
        .await
        .unwrap_err();
    assert!(matches!(err, SchedulerError::Throttled { .. }), "{err:?}");
    assert!(err.is_retryable());

    let missing = mock!(Client::run_task)
        .then_http_response(|| ecs_error(400, "ClusterNotFoundException", "Cluster not found."));
    let err = mocked(&[&missing])
        .launch(&request("us-east-1a", "k", 1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, SchedulerError::InvalidRequest { .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable());

    let server = mock!(Client::list_tasks)
        .then_http_response(|| ecs_error(500, "ServerException", "internal"));
    let err = mocked(&[&server]).list_tasks().await.unwrap_err();
    assert!(matches!(err, SchedulerError::Unavailable { .. }), "{err:?}");
}

#[tokio::test]
async fn run_task_sends_the_plan_with_a_client_token_from_the_key() {
    let seen: Arc<Mutex<Vec<RunTaskInput>>> = Arc::default();
    let log = seen.clone();
    let run = mock!(Client::run_task).then_compute_output(move |input| {
        log.lock().unwrap().push(input.clone());
        RunTaskOutput::builder().build()
    });
    let scheduler = mocked(&[&run]);
    let long_key = format!("launch-{}", "x".repeat(100));
    scheduler
        .launch(&request("us-east-1b", "short-key", 1))
        .await
        .unwrap();
    scheduler
        .launch(&request("us-east-1b", &long_key, 1))
        .await
        .unwrap();
    scheduler
        .launch(&request("us-east-1b", &long_key, 1))
        .await
        .unwrap();

    let inputs = seen.lock().unwrap().clone();
    assert_eq!(inputs.len(), 3);
    assert_eq!(inputs[0].client_token(), Some("short-key"));
    let token = inputs[1].client_token().unwrap();
    assert!(token.len() <= CLIENT_TOKEN_MAX);
    assert_eq!(
        Some(token),
        inputs[2].client_token(),
        "a retry sends the same token"
    );
    assert_eq!(token, client_token(&long_key));

    let input = &inputs[0];
    assert_eq!(input.cluster(), Some("fleet-cluster"));
    assert_eq!(input.task_definition(), Some("nodefleet-node:7"));
    assert_eq!(input.count(), Some(1));
    assert_eq!(input.launch_type(), Some(&LaunchType::Ec2));
    assert_eq!(input.started_by(), Some("nodefleet-mainnet"));
    assert_eq!(input.group(), Some("nodefleet:mainnet"));
    assert_eq!(input.enable_ecs_managed_tags(), Some(true));
    let constraints = input.placement_constraints();
    assert_eq!(constraints.len(), 2);
    assert!(
        constraints
            .iter()
            .all(|c| c.r#type() == Some(&PlacementConstraintType::MemberOf))
    );
    assert_eq!(
        constraints[1].expression(),
        Some("attribute:ecs.availability-zone == us-east-1b")
    );
    let strategy: Vec<_> = input
        .placement_strategy()
        .iter()
        .map(|s| (s.r#type().cloned(), s.field().map(str::to_owned)))
        .collect();
    assert_eq!(
        strategy,
        vec![
            (
                Some(PlacementStrategyType::Spread),
                Some("attribute:ecs.availability-zone".into())
            ),
            (Some(PlacementStrategyType::Binpack), Some("memory".into())),
        ]
    );
    let overrides = input.overrides().unwrap().container_overrides();
    assert_eq!(overrides.len(), 1);
    assert_eq!(overrides[0].name(), Some(CONTAINER));
    let env: Vec<&KeyValuePair> = overrides[0].environment().iter().collect();
    assert!(
        env.iter()
            .any(|kv| kv.name() == Some(ENV_SNAPSHOT_ID) && kv.value() == Some("snap-42"))
    );
    assert!(
        env.iter()
            .any(|kv| kv.name() == Some(ENV_NODE_ID) && kv.value() == Some("node-7"))
    );
    assert!(
        input
            .tags()
            .iter()
            .any(|t| t.key() == Some(TAG_NODE) && t.value() == Some("node-7"))
    );
    assert!(input.network_configuration().is_none(), "bridge networking");
}

#[tokio::test]
async fn run_task_sizes_the_task_and_the_node_container_only_when_configured() {
    let seen: Arc<Mutex<Vec<RunTaskInput>>> = Arc::default();
    let log = seen.clone();
    let run = mock!(Client::run_task).then_compute_output(move |input| {
        log.lock().unwrap().push(input.clone());
        RunTaskOutput::builder().build()
    });
    let sized = EcsScheduler::new(mocked_client(&[&run]), sized_config()).unwrap();
    sized
        .launch(&request("us-east-1b", "sized", 1))
        .await
        .unwrap();
    let unsized_scheduler = EcsScheduler::new(mocked_client(&[&run]), config()).unwrap();
    unsized_scheduler
        .launch(&request("us-east-1b", "unsized", 1))
        .await
        .unwrap();

    let inputs = seen.lock().unwrap().clone();
    assert_eq!(inputs.len(), 2);
    let overrides = inputs[0].overrides().unwrap();
    assert_eq!(overrides.cpu(), Some("4352"), "task-level cpu, a string");
    assert_eq!(
        overrides.memory(),
        Some("16640"),
        "task-level memory, a string"
    );
    let containers = overrides.container_overrides();
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0].name(), Some(CONTAINER));
    assert_eq!(containers[0].cpu(), Some(4_352));
    assert_eq!(containers[0].memory(), Some(16_640));
    assert_eq!(
        containers[0].memory_reservation(),
        None,
        "the task definition's soft limit, if any, is left alone"
    );
    assert!(
        containers[0]
            .environment()
            .iter()
            .any(|kv| kv.name() == Some(ENV_NODE_ID)),
        "the environment is still there"
    );

    let overrides = inputs[1].overrides().unwrap();
    assert_eq!(overrides.cpu(), None);
    assert_eq!(overrides.memory(), None);
    let containers = overrides.container_overrides();
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0].cpu(), None);
    assert_eq!(containers[0].memory(), None);
    assert!(!containers[0].environment().is_empty());
}

#[tokio::test]
async fn stopping_a_task_ecs_forgot_is_fine_but_other_bad_parameters_are_not() {
    let forgotten = mock!(Client::stop_task)
        .match_requests(|input| input.task() == Some("gone"))
        .then_http_response(|| {
            ecs_error(
                400,
                "InvalidParameterException",
                "The referenced task was not found.",
            )
        });
    let bad = mock!(Client::stop_task)
        .match_requests(|input| input.task() == Some("bad"))
        .then_http_response(|| ecs_error(400, "InvalidParameterException", "Invalid identifier"));
    let long_reason = mock!(Client::stop_task)
        .match_requests(|input| input.reason().is_some_and(|r| r.chars().count() <= 255))
        .then_output(|| StopTaskOutput::builder().build());
    let scheduler = mocked(&[&forgotten, &bad, &long_reason]);
    scheduler
        .stop(&TaskId::new("gone"), "replaced")
        .await
        .unwrap();
    let err = scheduler
        .stop(&TaskId::new("bad"), "replaced")
        .await
        .unwrap_err();
    assert!(
        matches!(err, SchedulerError::InvalidRequest { .. }),
        "{err:?}"
    );
    scheduler
        .stop(&TaskId::new("t1"), &"é".repeat(400))
        .await
        .unwrap();
    assert_eq!(
        long_reason.num_calls(),
        1,
        "the reason was cut to ECS's 255 characters"
    );
}

#[tokio::test]
async fn list_tasks_pages_through_both_statuses_and_describes_in_batches_of_100() {
    let arn = |n: usize| format!("arn:aws:ecs:us-east-1:1:task/fleet-cluster/t{n:03}");
    // RUNNING: two pages (0..60, 60..120); STOPPED: one page (119..150, 119 seen twice).
    let list = mock!(Client::list_tasks).then_compute_output(move |input| {
        assert_eq!(input.started_by(), Some("nodefleet-mainnet"));
        let range = match (input.desired_status(), input.next_token()) {
            (Some(DesiredStatus::Running), None) => 0..60,
            (Some(DesiredStatus::Running), Some("page-2")) => 60..120,
            (Some(DesiredStatus::Stopped), None) => 119..150,
            other => panic!("unexpected ListTasks {other:?}"),
        };
        let mut page =
            ListTasksOutput::builder().set_task_arns(Some(range.clone().map(arn).collect()));
        if range.start == 0 {
            page = page.next_token("page-2");
        }
        page.build()
    });
    let batches: Arc<Mutex<Vec<usize>>> = Arc::default();
    let log = batches.clone();
    let describe = mock!(Client::describe_tasks).then_compute_output(move |input| {
        assert_eq!(input.include(), [TaskField::Tags]);
        log.lock().unwrap().push(input.tasks().len());
        let mut out = DescribeTasksOutput::builder();
        for id in input.tasks() {
            let stopped = id.ends_with("t149");
            let mut task = ecs_task(
                id,
                &[
                    (TAG_NODE, "node-9"),
                    (TAG_ROLE, "updater"),
                    (TAG_ZONE, "us-east-1c"),
                ],
            );
            if stopped {
                task = Task::builder()
                    .task_arn(id)
                    .last_status("STOPPED")
                    .desired_status("STOPPED")
                    .stopped_reason("Host EC2 (instance i-0abc) terminated.")
                    .availability_zone("us-east-1a")
                    .attachments(
                        Attachment::builder()
                            .r#type("ElasticNetworkInterface")
                            .details(
                                KeyValuePair::builder()
                                    .name("privateIPv4Address")
                                    .value("10.0.3.9")
                                    .build(),
                            )
                            .build(),
                    )
                    .build();
            }
            out = out.tasks(task);
        }
        out.build()
    });
    let instances = instances_rule();
    let scheduler = mocked(&[&list, &describe, &instances]);
    let tasks = scheduler.list_tasks().await.unwrap();
    assert_eq!(tasks.len(), 150, "every task once");
    assert_eq!(*batches.lock().unwrap(), vec![100, 50]);
    assert_eq!(
        instances.num_calls(),
        1,
        "one lookup per list for the container instance all tasks share"
    );

    let running = tasks.iter().find(|t| t.id.as_str() == arn(5)).unwrap();
    assert_eq!(running.node, Some(NodeId::new("node-9")));
    assert_eq!(running.role, Some(Role::Updater));
    assert_eq!(running.snapshot, None);
    // No availabilityZone: the container instance's attribute wins over the tag.
    assert_eq!(running.zone, Some(Zone::new("us-east-1b")));
    assert_eq!(
        running.bindings.len(),
        1,
        "only the node container's bindings"
    );
    assert_eq!(running.last_status, TaskStatus::Running);
    assert_eq!(
        running.ip,
        Some("10.0.2.17".parse().unwrap()),
        "no ENI: its instance's address"
    );

    let stopped = tasks.iter().find(|t| t.id.as_str() == arn(149)).unwrap();
    assert_eq!(stopped.last_status, TaskStatus::Stopped);
    assert_eq!(
        stopped.stop_reason.as_deref(),
        Some("Host EC2 (instance i-0abc) terminated.")
    );
    assert_eq!(stopped.zone, Some(Zone::new("us-east-1a")));
    assert_eq!(
        stopped.ip,
        Some("10.0.3.9".parse().unwrap()),
        "its own ENI's address wins over its instance's"
    );
    assert_eq!(
        stopped.node, None,
        "an untagged task is not claimed for a node"
    );
}

#[tokio::test]
async fn describe_answers_only_for_the_asked_ids() {
    let describe = mock!(Client::describe_tasks).then_compute_output(|_| {
        // A loose backend may answer for more than was asked.
        DescribeTasksOutput::builder()
            .tasks(ecs_task(
                "arn:aws:ecs:us-east-1:1:task/fleet-cluster/t1",
                &[],
            ))
            .tasks(ecs_task(
                "arn:aws:ecs:us-east-1:1:task/fleet-cluster/t10",
                &[],
            ))
            .failures(
                Failure::builder()
                    .arn("arn:aws:ecs:us-east-1:1:task/fleet-cluster/nope")
                    .reason("MISSING")
                    .build(),
            )
            .build()
    });
    let instances = instances_rule();
    let scheduler = mocked(&[&describe, &instances]);
    let found = scheduler
        .describe_tasks(&[
            TaskId::new("t1"),
            TaskId::new("arn:aws:ecs:us-east-1:1:task/fleet-cluster/nope"),
        ])
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].id.as_str().ends_with("/t1"));
    assert!(scheduler.describe_tasks(&[]).await.unwrap().is_empty());
    assert_eq!(describe.num_calls(), 1, "no call for no ids");
}
