//! The operator commands for a deployed stack (`status`, `events`, `replace`, `snapshot
//! round` with `--stack NAME`) from the outside, against moto: the fleet's table, cluster,
//! target group and bucket are made in moto, a CloudFormation stack whose outputs name them
//! (one placeholder resource, literal outputs), the state seeded through the adapters (a
//! config, three nodes with their tasks and targets, a catalog, an audit trail), then the
//! real binary is run with the standard AWS environment pointed at moto.
//!
//! moto places a task on the first container instance with room and ignores placement
//! constraints, so each container instance has room for exactly one node task (moto gives
//! every instance 4096 CPU units; the task definitions ask for all of them) and instances
//! are registered in the order launches should fill them. It reports registered targets
//! healthy, and gives bridge-networked tasks no host ports and no address: the nodes' heads
//! are not probed here (the probe is tested on loopback nodes in nodefleet-ops).

#![allow(clippy::unwrap_used)] // a test fails loudly by design

mod support;

use std::process::Stdio;
use std::time::Duration;

use aws_sdk_ecs::types::{ContainerDefinition, NetworkMode as EcsNetworkMode, PortMapping};
use aws_sdk_elasticloadbalancingv2::types::{ProtocolEnum, TargetTypeEnum};
use nodefleet_aws::ecs::EcsSchedulerConfig;
use nodefleet_aws::{DynamoStateStore, EcsScheduler, ElbTargetRegistry, S3ObjectStore};
use nodefleet_ports::{
    AuditEvent, FleetConfig, LaunchRequest, NODE_RPC_PORT, NetworkMode, NodeId, NodeRecord,
    NodeState, Role, Scheduler, SnapshotId, SnapshotRecord, SnapshotState, StateStore, StoreUrl,
    Target, TargetRegistry, TaskInfo, TaskStatus, Timestamp, Version, Zone,
};
use nodefleet_testkit::moto::{
    REGION, default_vpc, keep_ecs_tasks_where_they_are, moto_endpoint, run_ec2_instance,
    sdk_config, unique_name,
};
use serde_json::{Value, json};
use support::nodefleet;

const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];
const HOUR: Duration = Duration::from_secs(3600);

/// What the moto stack is made of.
struct MotoStack {
    stack: String,
    fleet: String,
    state: DynamoStateStore,
    scheduler: EcsScheduler,
    updater_scheduler: EcsScheduler,
    /// Node id and its first task, per zone.
    nodes: Vec<(NodeId, TaskInfo)>,
    /// The outputs the stack was created with.
    outputs: Vec<(&'static str, String)>,
}

/// One node task definition: bridge, the node container publishing 8545, asking for a whole
/// moto container instance (4096 CPU units).
async fn task_definition(ecs: &aws_sdk_ecs::Client, family: &str) -> String {
    let answer = ecs
        .register_task_definition()
        .family(family)
        .network_mode(EcsNetworkMode::Bridge)
        .container_definitions(
            ContainerDefinition::builder()
                .name("node")
                .image("ghcr.io/nodefleet/node:test")
                .memory(512)
                .cpu(4096)
                .port_mappings(
                    PortMapping::builder()
                        .container_port(8545)
                        .host_port(8545)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    answer
        .task_definition()
        .unwrap()
        .task_definition_arn()
        .unwrap()
        .to_owned()
}

/// A CloudFormation stack on moto with one placeholder resource and these outputs.
async fn create_stack(name: &str, outputs: &[(&str, String)]) {
    let outputs: serde_json::Map<String, Value> = outputs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), json!({ "Value": value })))
        .collect();
    let template = json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Resources": {"Placeholder": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
        "Outputs": outputs,
    });
    aws_sdk_cloudformation::Client::new(&sdk_config())
        .create_stack()
        .stack_name(name)
        .template_body(template.to_string())
        .send()
        .await
        .unwrap();
}

impl MotoStack {
    async fn new() -> MotoStack {
        keep_ecs_tasks_where_they_are().await;
        let sdk = sdk_config();
        let fleet = unique_name("fleet");
        let table = unique_name("nf-state");
        let bucket = unique_name("nf-chain");
        let stack = unique_name("nf-stack");

        let state = DynamoStateStore::new(&sdk, &table, &fleet).unwrap();
        state.create_table().await.unwrap();
        let store_url = format!("s3://{bucket}/{fleet}");
        S3ObjectStore::new(&sdk, &StoreUrl::parse(&store_url).unwrap())
            .unwrap()
            .create_bucket()
            .await
            .unwrap();

        let ecs = aws_sdk_ecs::Client::new(&sdk);
        let cluster = unique_name("nf-cluster");
        ecs.create_cluster()
            .cluster_name(&cluster)
            .send()
            .await
            .unwrap();
        let node_definition = task_definition(&ecs, &unique_name("nf-node")).await;
        let updater_definition = task_definition(&ecs, &unique_name("nf-updater")).await;
        // The three nodes fill the first three instances (a, b, c), a replacement of the
        // node in b the fourth, the updater (zone a) the fifth.
        let mut instances = Vec::new();
        for zone in [ZONES[0], ZONES[1], ZONES[2], ZONES[1], ZONES[0]] {
            let instance = run_ec2_instance(zone, "i3.2xlarge").await;
            ecs.register_container_instance()
                .cluster(&cluster)
                .instance_identity_document(format!(
                    r#"{{"instanceId": "{instance}", "availabilityZone": "{zone}", "region": "{REGION}"}}"#
                ))
                .send()
                .await
                .unwrap();
            instances.push(instance);
        }

        let elb = aws_sdk_elasticloadbalancingv2::Client::new(&sdk);
        let group = elb
            .create_target_group()
            .name(unique_name("nf-tg"))
            .protocol(ProtocolEnum::Tcp)
            .port(8545)
            .vpc_id(default_vpc().await)
            .target_type(TargetTypeEnum::Instance)
            .send()
            .await
            .unwrap();
        let target_group = group.target_groups()[0]
            .target_group_arn()
            .unwrap()
            .to_owned();
        let registry = ElbTargetRegistry::new(elb, &target_group, NetworkMode::Bridge);

        let capacity_provider = "nf-capacity".to_owned();
        let outputs = vec![
            ("FleetName", fleet.clone()),
            ("StateTableName", table.clone()),
            ("ClusterName", cluster.clone()),
            ("TargetGroupArn", target_group.clone()),
            ("NodeTaskDefinitionArn", node_definition.clone()),
            ("UpdaterTaskDefinitionArn", updater_definition.clone()),
            ("CapacityProviderName", capacity_provider),
            ("NodeClient", "geth".to_owned()),
            ("SnapshotStore", store_url),
            ("UpdaterZone", ZONES[0].to_owned()),
            ("ChainDataBucketName", bucket),
        ];
        create_stack(&stack, &outputs).await;

        // The fleet as the health reactor and the updater would have left it.
        let now = Timestamp::now();
        state
            .save_config(&FleetConfig {
                name: fleet.clone(),
                zones: ZONES.iter().map(|z| Zone::new(*z)).collect(),
                serving_nodes: 3,
                healthy_floor: 2,
                storm_percent: 50,
                max_head_age_secs: 60,
                min_peers: 1,
                version: Version::NEW,
            })
            .await
            .unwrap();
        let scheduler = EcsScheduler::new(
            ecs.clone(),
            EcsSchedulerConfig::new(&cluster, &node_definition, "node", &fleet),
        )
        .unwrap();
        let updater_scheduler = EcsScheduler::new(
            ecs,
            EcsSchedulerConfig::new(&cluster, &updater_definition, "node", &fleet),
        )
        .unwrap();
        let mut nodes = Vec::new();
        for (index, zone) in ZONES.iter().enumerate() {
            let id = NodeId::new(format!("{zone}-1"));
            let report = scheduler
                .launch(&LaunchRequest {
                    node: id.clone(),
                    zone: Zone::new(*zone),
                    role: Role::Serving,
                    snapshot: Some(SnapshotId::new("snap-published")),
                    idempotency_key: format!("launch/{id}"),
                    count: 1,
                })
                .await
                .unwrap();
            let task = report.started[0].clone();
            let target = Target {
                id: instances[index].clone(),
                port: NODE_RPC_PORT,
            };
            registry
                .register(std::slice::from_ref(&target))
                .await
                .unwrap();
            state
                .save_node(&NodeRecord {
                    id: id.clone(),
                    task: Some(task.id.clone()),
                    zone: Zone::new(*zone),
                    target: Some(target),
                    role: Role::Serving,
                    state: NodeState::Serving,
                    snapshot: Some(SnapshotId::new("snap-published")),
                    // Launched a minute ago, in their grace window: moto's bridge tasks
                    // have no host port, so past grace the planner would find no target to
                    // judge and take every node for unhealthy.
                    created_at: now.minus(Duration::from_secs(60)),
                    updated_at: now.minus(Duration::from_secs(60)),
                    version: Version::NEW,
                })
                .await
                .unwrap();
            nodes.push((id, task));
        }
        for (id, block, age, snapshot_state) in [
            ("snap-retired", 50, 30 * HOUR, SnapshotState::Retired),
            ("snap-published", 100, 2 * HOUR, SnapshotState::Published),
        ] {
            state
                .save_snapshot(&SnapshotRecord {
                    id: SnapshotId::new(id),
                    block_height: block,
                    client: "geth".into(),
                    client_version: "1.15.0".into(),
                    manifest_key: format!("manifests/{id}.json"),
                    bytes: 5 * 1024 * 1024,
                    uploaded_bytes: 1024,
                    state: snapshot_state,
                    created_at: now.minus(age),
                    updated_at: now.minus(age),
                    version: Version::NEW,
                })
                .await
                .unwrap();
        }
        let retention = Duration::from_secs(90 * 24 * 3600);
        for (ago, kind, subject) in [
            (72 * HOUR, "reactor.launch", "long-ago"),
            (2 * HOUR, "snapshot.published", "snap-published"),
            (
                10 * 60 * Duration::from_secs(1),
                "reactor.deregister",
                "i-0old:8545",
            ),
            (Duration::from_secs(60), "reactor.launch", "us-east-1c-1"),
        ] {
            let event = AuditEvent::new(
                now.minus(ago),
                kind,
                subject,
                format!("{kind} of {subject}"),
                retention,
            );
            state.append_event(&event).await.unwrap();
        }
        MotoStack {
            stack,
            fleet,
            state,
            scheduler,
            updater_scheduler,
            nodes,
            outputs,
        }
    }

    /// `nodefleet ARGS` with the AWS environment aimed at moto: (exit code, stdout, stderr).
    async fn run(&self, args: &[&str]) -> (i32, String, String) {
        let output = nodefleet()
            .args(args)
            .env("AWS_ENDPOINT_URL", moto_endpoint())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", REGION)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .unwrap();
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    async fn run_ok(&self, args: &[&str]) -> String {
        let (code, stdout, stderr) = self.run(args).await;
        assert_eq!(code, 0, "nodefleet {args:?}: {stderr}\n{stdout}");
        stdout
    }

    async fn run_json(&self, args: &[&str]) -> Value {
        let stdout = self.run_ok(args).await;
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }

    /// The fleet's live tasks in moto.
    async fn live_tasks(&self) -> Vec<TaskInfo> {
        self.scheduler
            .list_tasks()
            .await
            .unwrap()
            .into_iter()
            .filter(|t| matches!(t.last_status, TaskStatus::Pending | TaskStatus::Running))
            .filter(|t| t.desired_status != TaskStatus::Stopped)
            .collect()
    }
}

#[tokio::test]
async fn the_stack_commands_run_against_a_stack_on_moto() {
    let moto = MotoStack::new().await;
    let stack = moto.stack.as_str();

    // ---- status, JSON (heads not asked: moto's tasks have no address anyway).
    let report = moto
        .run_json(&["status", "--stack", stack, "--json", "--no-heads"])
        .await;
    assert_eq!(report["fleet"], moto.fleet.as_str());
    assert_eq!(report["desired_nodes"], 3);
    assert_eq!(report["healthy"], 3, "{report:#}");
    let nodes = report["nodes"].as_array().unwrap();
    let rows: Vec<(&str, &str, &str)> = nodes
        .iter()
        .map(|n| {
            (
                n["zone"].as_str().unwrap(),
                n["id"].as_str().unwrap(),
                n["target_state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("us-east-1a", "us-east-1a-1", "healthy"),
            ("us-east-1b", "us-east-1b-1", "healthy"),
            ("us-east-1c", "us-east-1c-1", "healthy"),
        ]
    );
    for (node, (id, task)) in nodes.iter().zip(&moto.nodes) {
        assert_eq!(node["id"], id.as_str());
        assert_eq!(node["task"], task.id.as_str());
        assert_eq!(node["task_status"], "running");
        assert_eq!(node["snapshot_id"], "snap-published");
        assert_eq!(node["head_block"], Value::Null);
        assert_eq!(
            node["rpc_url"],
            Value::Null,
            "moto gives bridge tasks no address, so nothing is probed"
        );
    }
    assert_eq!(report["latest_snapshot"], "snap-published");
    let age = report["latest_snapshot_age_secs"].as_u64().unwrap();
    assert!((7200..7500).contains(&age), "age {age}");
    let events: Vec<&str> = report["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        ["reactor.launch", "reactor.deregister", "snapshot.published"],
        "newest first, the last day only"
    );

    // ---- status, text.
    let text = moto.run_ok(&["status", "--stack", stack]).await;
    assert!(
        text.starts_with(&format!(
            "stack {stack}, fleet {}: 3 of 3 serving nodes healthy, zones us-east-1a us-east-1b us-east-1c\n",
            moto.fleet
        )),
        "{text}"
    );
    assert!(
        text.contains("latest snapshot snap-published: block 100, made 2 h ago, 5.0 MiB"),
        "{text}"
    );
    for zone in ZONES {
        assert!(
            text.contains(&format!("zone {zone}: 1 nodes, 1 healthy\n")),
            "{text}"
        );
    }
    assert!(
        text.contains("heads: 3 without a known address. '-' is a head not seen"),
        "{text}"
    );
    assert!(text.contains("recent events (3, newest first)"), "{text}");
    assert!(text.contains("reactor.launch      us-east-1c-1"), "{text}");

    // ---- events.
    let answer = moto
        .run_json(&["events", "--stack", stack, "--since", "7d", "--json"])
        .await;
    let subjects: Vec<&str> = answer["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["subject"].as_str().unwrap())
        .collect();
    assert_eq!(
        subjects,
        ["us-east-1c-1", "i-0old:8545", "snap-published", "long-ago"]
    );
    let answer = moto
        .run_json(&[
            "events", "--stack", stack, "--since", "7d", "--kind", "reactor.", "--limit", "1",
            "--json",
        ])
        .await;
    assert_eq!(answer["events"].as_array().unwrap().len(), 1);
    assert_eq!(answer["events"][0]["subject"], "us-east-1c-1");
    let lines = moto.run_ok(&["events", "--stack", stack]).await;
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[0].contains("reactor.launch") && lines[0].ends_with("reactor.launch of us-east-1c-1")
    );
    let (code, _, stderr) = moto
        .run(&["events", "--stack", stack, "--since", "soon"])
        .await;
    assert_eq!(code, 2, "a bad flag is clap's usage error");
    assert!(stderr.contains("is not an age like 90s"), "{stderr}");

    // ---- replace: one task launched under the reactor's key; again, nothing.
    let (node, old_task) = moto.nodes[1].clone();
    let before = moto.live_tasks().await.len();
    let replaced = moto
        .run_json(&["replace", "--stack", stack, node.as_str(), "--json"])
        .await;
    assert_eq!(replaced["outcome"], "launched", "{replaced:#}");
    let key = format!("replace/{node}/{}/us-east-1b", old_task.id);
    assert_eq!(replaced["key"], key.as_str());
    assert_eq!(replaced["replacing"], old_task.id.as_str());
    let new_task = replaced["task"].as_str().unwrap().to_owned();
    let live = moto.live_tasks().await;
    assert_eq!(live.len(), before + 1);
    let launched = live.iter().find(|t| t.id.as_str() == new_task).unwrap();
    assert_eq!(launched.node.as_ref(), Some(&node));
    assert_eq!(launched.role, Some(Role::Serving));
    assert_eq!(launched.snapshot, Some(SnapshotId::new("snap-published")));
    let claim = moto
        .state
        .get_idempotency_key(&key, Timestamp::now())
        .await
        .unwrap()
        .expect("the reactor's key is claimed in the table");
    assert!(claim.owner.starts_with("operator:"), "{}", claim.owner);
    assert_eq!(claim.outcome.as_deref(), Some(new_task.as_str()));

    let again = moto
        .run_ok(&["replace", "--stack", stack, node.as_str()])
        .await;
    assert!(
        again.contains(&format!(
            "{node} is being replaced already, by task {new_task}"
        )),
        "{again}"
    );
    assert_eq!(
        moto.live_tasks().await.len(),
        before + 1,
        "the second run launched nothing"
    );
    let text = moto
        .run_ok(&["status", "--stack", stack, "--no-heads"])
        .await;
    let short = new_task.rsplit('/').next().unwrap();
    assert!(
        text.contains(&format!("{short} running")),
        "the replacement shows: {text}"
    );
    let answer = moto
        .run_json(&[
            "events",
            "--stack",
            stack,
            "--subject",
            node.as_str(),
            "--json",
        ])
        .await;
    assert!(
        answer["events"][0]["detail"]
            .as_str()
            .unwrap()
            .starts_with(&format!("operator request: replace {node}")),
        "{answer:#}"
    );

    let (code, stdout, stderr) = moto
        .run(&["replace", "--stack", stack, "no-such-node"])
        .await;
    assert_eq!(code, 1, "{stdout}");
    assert_eq!(
        stderr.trim(),
        "error: node no-such-node is not one of the fleet's nodes"
    );

    // ---- snapshot round: started (the updater task launched), then already running.
    let started = moto
        .run_json(&["snapshot", "round", "--stack", stack, "--json"])
        .await;
    assert_eq!(started["outcome"], "started", "{started:#}");
    let round = started["round"]["id"].as_str().unwrap().to_owned();
    assert!(round.starts_with("r-"), "{round}");
    let updaters: Vec<TaskInfo> = moto
        .updater_scheduler
        .list_tasks()
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.role == Some(Role::Updater))
        .collect();
    assert_eq!(updaters.len(), 1, "{updaters:?}");
    assert_eq!(updaters[0].zone, Some(Zone::new(ZONES[0])), "UpdaterZone");
    assert_eq!(started["round"]["task"], updaters[0].id.as_str());
    let memory = moto
        .state
        .get_control_state("snapshot-updater")
        .await
        .unwrap()
        .unwrap();
    let memory: Value = serde_json::from_str(&memory.body).unwrap();
    assert_eq!(memory["round"]["id"], round.as_str());
    assert!(
        moto.state
            .get_lease("snapshot-updater", Timestamp::now())
            .await
            .unwrap()
            .is_none(),
        "the lease is released when the command ends"
    );
    let again = moto.run_ok(&["snapshot", "round", "--stack", stack]).await;
    assert!(
        again.starts_with(&format!("snapshot round {round} is already running")),
        "{again}"
    );
    let text = moto
        .run_ok(&["status", "--stack", stack, "--no-heads"])
        .await;
    assert!(
        text.contains(&format!("snapshot updater: round {round} at ")),
        "{text}"
    );
}

#[tokio::test]
async fn an_unknown_stack_or_a_missing_output_is_one_line_naming_it() {
    let moto = MotoStack::new().await;
    let missing = unique_name("nf-no-stack");
    for args in [
        vec!["status", "--stack", missing.as_str()],
        vec!["events", "--stack", missing.as_str()],
        vec!["replace", "--stack", missing.as_str(), "n"],
        vec!["snapshot", "round", "--stack", missing.as_str()],
    ] {
        let (code, stdout, stderr) = moto.run(&args).await;
        assert_eq!(code, 1, "{args:?}: {stdout}");
        assert_eq!(
            stderr.trim(),
            format!("error: stack {missing} does not exist (in this account and region)"),
            "{args:?}"
        );
    }

    // A stack of an older template, without the task definitions' outputs.
    let older = unique_name("nf-old-stack");
    let outputs: Vec<(&str, String)> = moto
        .outputs
        .iter()
        .filter(|(key, _)| *key != "NodeTaskDefinitionArn")
        .cloned()
        .collect();
    create_stack(&older, &outputs).await;
    let (code, _, stderr) = moto.run(&["status", "--stack", &older]).await;
    assert_eq!(code, 1);
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "stack {older} has no output NodeTaskDefinitionArn"
        )),
        "{stderr}"
    );

    let (code, _, stderr) = moto.run(&["status", "--stack", "x", "--dir", "d"]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}
