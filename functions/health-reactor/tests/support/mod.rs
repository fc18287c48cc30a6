//! A fleet's AWS resources on moto for the health-reactor binary: a DynamoDB table, an ECS
//! cluster with i3 container instances in each zone and an awsvpc node task definition, an
//! IP target group; and the real `health-reactor` binary started against a fake Lambda Runtime
//! API with the environment the SAM template gives it. Shared by the moto test and the
//! event-to-RunTask benchmark (`examples/reactor_moto.rs`).

#![allow(dead_code, clippy::unwrap_used)] // each user takes a different part

use std::process::Stdio;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_ecs::types::DesiredStatus;
use aws_sdk_elasticloadbalancingv2::types::{ProtocolEnum, TargetTypeEnum};
use nodefleet_aws::DynamoStateStore;
use nodefleet_testkit::moto::{self, REGION};
use nodefleet_testkit::{FakeRuntimeApi, Invocation};
use serde_json::Value;
use tokio::process::{Child, Command};

/// The node container's name, as in the SAM template.
pub const CONTAINER: &str = "node";

pub use nodefleet_testkit::moto::sdk_config as moto_config;

/// The fleet's resources on moto.
#[derive(Debug)]
pub struct MotoFleet {
    pub sdk: SdkConfig,
    pub fleet: String,
    pub table: String,
    pub cluster: String,
    pub task_definition: String,
    pub target_group_arn: String,
    pub zones: Vec<String>,
    /// `SUBNETS_BY_ZONE` for the function: moto's default subnet of each zone.
    pub subnets_by_zone: String,
}

impl MotoFleet {
    /// Creates everything, with `instances_per_zone` i3.8xlarge container instances per zone.
    pub async fn create(zones: &[&str], instances_per_zone: usize) -> MotoFleet {
        moto::keep_ecs_tasks_where_they_are().await;
        let sdk = moto_config();
        let fleet = moto::unique_name("fleet");
        let table = moto::unique_name("nf-state");
        DynamoStateStore::new(&sdk, &table, &fleet)
            .unwrap()
            .create_table()
            .await
            .unwrap();
        let moto::EcsCluster {
            cluster,
            task_definition,
            subnets_by_zone,
        } = moto::ecs_cluster(&sdk, zones, instances_per_zone, CONTAINER).await;
        let elb = aws_sdk_elasticloadbalancingv2::Client::new(&sdk);
        let group = elb
            .create_target_group()
            .name(moto::unique_name("nf-tg"))
            .protocol(ProtocolEnum::Tcp)
            .port(8545)
            .vpc_id(moto::default_vpc().await)
            .target_type(TargetTypeEnum::Ip)
            .health_check_path("/health")
            .send()
            .await
            .unwrap();
        let target_group_arn = group.target_groups()[0]
            .target_group_arn()
            .unwrap()
            .to_owned();
        MotoFleet {
            sdk,
            subnets_by_zone,
            fleet,
            table,
            cluster,
            task_definition,
            target_group_arn,
            zones: zones.iter().map(|z| (*z).to_owned()).collect(),
        }
    }

    /// The function's environment for a fleet of `nodes`.
    pub fn env(&self, nodes: u32) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", moto::moto_endpoint()),
            ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
            ("AWS_REGION", REGION.to_owned()),
            ("TABLE_NAME", self.table.clone()),
            ("FLEET_NAME", self.fleet.clone()),
            ("CLUSTER", self.cluster.clone()),
            ("TASK_DEFINITION", self.task_definition.clone()),
            ("CONTAINER_NAME", CONTAINER.to_owned()),
            ("TARGET_GROUP_ARN", self.target_group_arn.clone()),
            ("ZONES", self.zones.join(",")),
            // awsvpc: moto reports a task's ENI address, but no host port for bridge tasks.
            ("NETWORK_MODE", "awsvpc".to_owned()),
            ("SUBNETS_BY_ZONE", self.subnets_by_zone.clone()),
            ("SERVING_NODES", nodes.to_string()),
            // moto's container instances are not real i3s; the reservation is checked in
            // the RunTask plan tests. A small grace lets the test judge nodes at once.
            ("GRACE_SECS", "0".to_owned()),
            ("RUST_LOG", "info".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// The fleet's tasks that ECS wants running.
    pub async fn running_tasks(&self) -> Vec<String> {
        let ecs = aws_sdk_ecs::Client::new(&self.sdk);
        let mut arns = Vec::new();
        let mut token = None;
        loop {
            let page = ecs
                .list_tasks()
                .cluster(&self.cluster)
                .desired_status(DesiredStatus::Running)
                .set_next_token(token)
                .send()
                .await
                .unwrap();
            arns.extend(page.task_arns().iter().cloned());
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                return arns;
            }
        }
    }

    /// Stops a task as a crash would, and returns the ECS event EventBridge would send.
    pub async fn crash(&self, task_arn: &str) -> Value {
        let ecs = aws_sdk_ecs::Client::new(&self.sdk);
        ecs.stop_task()
            .cluster(&self.cluster)
            .task(task_arn)
            .reason("Essential container in task exited")
            .send()
            .await
            .unwrap();
        serde_json::json!({
            "version": "0",
            "id": moto::unique_name("event"),
            "detail-type": "ECS Task State Change",
            "source": "aws.ecs",
            "account": "123456789012",
            "time": "2027-01-15T08:00:00Z",
            "region": REGION,
            "resources": [task_arn],
            "detail": {
                "clusterArn": format!("arn:aws:ecs:{REGION}:123456789012:cluster/{}", self.cluster),
                "taskArn": task_arn,
                "group": format!("nodefleet:{}", self.fleet),
                "lastStatus": "STOPPED",
                "desiredStatus": "STOPPED",
                "stoppedReason": "Essential container in task exited",
                "containers": []
            }
        })
    }
}

/// The `health-reactor` binary, serving a fake Runtime API.
#[derive(Debug)]
pub struct ReactorProcess {
    pub api: FakeRuntimeApi,
    pub child: Child,
}

impl ReactorProcess {
    pub async fn start(binary: &str, env: Vec<(String, String)>) -> ReactorProcess {
        let api = FakeRuntimeApi::start().await;
        let child = Command::new(binary)
            .env_clear()
            .envs(api.env())
            .envs(env)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        ReactorProcess { api, child }
    }

    /// Sends one event and waits for the answer.
    pub async fn invoke(&self, event: &Value) -> Invocation {
        let id = self.api.invoke(event.to_string());
        match self.api.outcome(&id, Duration::from_secs(120)).await {
            Some(invocation) => invocation,
            None => panic!("no answer to {id}; init error: {:?}", self.api.init_error()),
        }
    }

    /// Sends one event and returns the function's answer; panics on an error answer.
    pub async fn reconcile(&self, event: &Value) -> Value {
        let invocation = self.invoke(event).await;
        match invocation.outcome {
            Ok(answer) => serde_json::from_str(&answer).unwrap(),
            Err(error) => panic!("the function failed: {error}"),
        }
    }
}

/// The scheduled fallback event.
pub fn schedule_event() -> Value {
    serde_json::json!({
        "version": "0", "id": moto::unique_name("tick"), "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "123456789012", "time": "2027-01-15T08:00:00Z",
        "region": REGION, "resources": [], "detail": {}
    })
}
