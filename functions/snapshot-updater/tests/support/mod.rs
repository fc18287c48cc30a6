//! A fleet's AWS resources on moto for the snapshot-updater binary: a DynamoDB table, an ECS
//! cluster with i3 container instances in each zone and an awsvpc node task definition, and
//! the chain-data bucket in moto's S3; and the real `snapshot-updater` binary started
//! against a fake Lambda Runtime API with the environment infra gives it. The same harness
//! as the health reactor's moto test (functions/health-reactor/tests/support), without the
//! target group and with the bucket.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_ecs::types::{DesiredStatus, TaskField};
use nodefleet_aws::{DynamoStateStore, S3ObjectStore};
use nodefleet_ports::{ObjectStore, StoreUrl};
use nodefleet_testkit::moto::{self, REGION};
use nodefleet_testkit::{FakeRuntimeApi, Invocation};
use serde_json::Value;
use tokio::process::{Child, Command};

/// The node container's name, as in the SAM template.
pub const CONTAINER: &str = "node";
/// The key prefix of the chain data in the bucket.
pub const PREFIX: &str = "chain";

pub use nodefleet_testkit::moto::sdk_config as moto_config;

/// The fleet's resources on moto.
#[derive(Debug)]
pub struct MotoFleet {
    pub sdk: SdkConfig,
    pub fleet: String,
    pub table: String,
    pub cluster: String,
    pub task_definition: String,
    pub bucket: String,
    pub zones: Vec<String>,
    /// `SUBNETS_BY_ZONE` for the function: moto's default subnet of each zone.
    pub subnets_by_zone: String,
    /// A folder for this test's files (data dir, the binary's log), removed on drop.
    pub scratch: PathBuf,
}

impl Drop for MotoFleet {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
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
        let bucket = moto::unique_name("nf-chain");
        let fleet_resources = MotoFleet {
            sdk,
            subnets_by_zone,
            fleet,
            table,
            cluster,
            task_definition,
            bucket,
            zones: zones.iter().map(|z| (*z).to_owned()).collect(),
            scratch: std::env::temp_dir().join(moto::unique_name("nf-lambda-updater")),
        };
        std::fs::create_dir_all(&fleet_resources.scratch).unwrap();
        S3ObjectStore::new(&fleet_resources.sdk, &fleet_resources.store_url())
            .unwrap()
            .create_bucket()
            .await
            .unwrap();
        fleet_resources
    }

    pub fn store_url(&self) -> StoreUrl {
        StoreUrl::parse(&format!("s3://{}/{PREFIX}", self.bucket)).unwrap()
    }

    /// The chain-data store, as the agent and the function see it.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::new(S3ObjectStore::new(&self.sdk, &self.store_url()).unwrap())
    }

    pub fn state(&self) -> DynamoStateStore {
        DynamoStateStore::new(&self.sdk, &self.table, &self.fleet).unwrap()
    }

    /// The function's environment.
    pub fn env(&self) -> Vec<(String, String)> {
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
            // awsvpc, as the reactor's moto test: moto reports a task's ENI address.
            ("NETWORK_MODE", "awsvpc".to_owned()),
            ("SUBNETS_BY_ZONE", self.subnets_by_zone.clone()),
            ("SNAPSHOT_BUCKET", self.bucket.clone()),
            ("SNAPSHOT_PREFIX", PREFIX.to_owned()),
            // No fleet config in the table (the reactor seeds it): the zone is named.
            ("UPDATER_ZONE", self.zones[0].clone()),
            // moto is slow to list; small samples keep the verify quick.
            ("VERIFY_SAMPLE_CHUNKS", "8".to_owned()),
            ("RUST_LOG", "info".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// The fleet's tasks that ECS wants running, with their tags.
    pub async fn running_tasks(&self) -> Vec<aws_sdk_ecs::types::Task> {
        let ecs = aws_sdk_ecs::Client::new(&self.sdk);
        let arns = ecs
            .list_tasks()
            .cluster(&self.cluster)
            .desired_status(DesiredStatus::Running)
            .send()
            .await
            .unwrap()
            .task_arns()
            .to_vec();
        if arns.is_empty() {
            return Vec::new();
        }
        ecs.describe_tasks()
            .cluster(&self.cluster)
            .set_tasks(Some(arns))
            .include(TaskField::Tags)
            .send()
            .await
            .unwrap()
            .tasks()
            .to_vec()
    }
}

/// The tag `key` of `task`.
pub fn tag<'t>(task: &'t aws_sdk_ecs::types::Task, key: &str) -> Option<&'t str> {
    task.tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

/// The `snapshot-updater` binary, serving a fake Runtime API; its stdout (JSON logs and EMF
/// lines) goes to a file.
#[derive(Debug)]
pub struct UpdaterProcess {
    pub api: FakeRuntimeApi,
    pub child: Child,
    pub stdout: PathBuf,
}

impl UpdaterProcess {
    pub async fn start(binary: &str, env: Vec<(String, String)>, stdout: PathBuf) -> Self {
        let api = FakeRuntimeApi::start().await;
        let file = std::fs::File::create(&stdout).unwrap();
        let child = Command::new(binary)
            .env_clear()
            .envs(api.env())
            .envs(env)
            .stdout(Stdio::from(file))
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        UpdaterProcess { api, child, stdout }
    }

    /// Sends one event and waits for the answer.
    pub async fn invoke(&self, event: &Value) -> Invocation {
        let id = self.api.invoke(event.to_string());
        match self.api.outcome(&id, Duration::from_secs(120)).await {
            Some(invocation) => invocation,
            None => panic!(
                "no answer to {id}; init error: {:?}; output:\n{}",
                self.api.init_error(),
                self.output()
            ),
        }
    }

    /// Sends one event and returns the function's answer; panics on an error answer.
    pub async fn answer(&self, event: &Value) -> Value {
        let invocation = self.invoke(event).await;
        match invocation.outcome {
            Ok(answer) => serde_json::from_str(&answer).unwrap(),
            Err(error) => panic!("the function failed: {error}; output:\n{}", self.output()),
        }
    }

    /// What the binary wrote to stdout so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// The JSON lines of stdout that parse.
    pub fn lines(&self) -> Vec<Value> {
        self.output()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

pub fn start_round() -> Value {
    serde_json::json!({"action": "start-round"})
}

pub fn tick() -> Value {
    serde_json::json!({"action": "tick"})
}
