//! The fleet report as a pure function of its inputs (a three-zone fleet with a replacement
//! in flight, a lost node, a task without a record, an updater in a round, a catalog and an
//! audit trail), its text and JSON, and the head probe behind its seam: a fake that answers
//! by URL, and the real JSON-RPC probe against loopback nodes (one answering, one too slow,
//! one gone).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use nodefleet_ops::probe::{HeadProbe, RpcHeadProbe, probe_all};
use nodefleet_ops::report::{FleetReport, ReportInputs, rpc_url};
use nodefleet_ports::{
    AuditEvent, FleetConfig, NODE_RPC_PORT, NetworkMode, NodeId, NodeRecord, NodeState,
    PortBinding, Role, SnapshotId, SnapshotRecord, SnapshotState, Target, TargetHealth,
    TargetState, TaskId, TaskInfo, TaskStatus, Timestamp, Version, Zone,
};
use nodefleet_testkit::recording_node::{NodeBehaviour, RecordingNode};
use nodefleet_updater::round::{Round, Step, UpdaterMemory};
use serde_json::Value;

const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);
const HOUR: Duration = Duration::from_secs(3600);

fn zone(name: &str) -> Zone {
    Zone::new(name)
}

/// A running bridge task on instance `i-<n>` (address `10.0.0.<n>`), host port 8545.
fn task(id: &str, node: &str, zone: &str, n: u8, role: Role, started: Timestamp) -> TaskInfo {
    TaskInfo {
        id: TaskId::new(format!("arn:aws:ecs:us-east-1:1:task/fleet/{id}")),
        node: Some(NodeId::new(node)),
        zone: Some(Zone::new(zone)),
        role: Some(role),
        snapshot: Some(SnapshotId::new("snap-old")),
        last_status: TaskStatus::Running,
        desired_status: TaskStatus::Running,
        stop_reason: None,
        started_at: Some(started),
        stopped_at: None,
        instance_id: Some(format!("i-{n}")),
        ip: Some(IpAddr::from([10, 0, 0, n])),
        bindings: vec![PortBinding {
            container_port: NODE_RPC_PORT,
            host_port: NODE_RPC_PORT,
        }],
    }
}

fn target(n: u8) -> Target {
    Target {
        id: format!("i-{n}"),
        port: NODE_RPC_PORT,
    }
}

fn record(id: &str, zone: &str, task: &TaskInfo, role: Role, state: NodeState) -> NodeRecord {
    NodeRecord {
        id: NodeId::new(id),
        task: Some(task.id.clone()),
        zone: Zone::new(zone),
        target: task.instance_id.as_ref().map(|i| Target {
            id: i.clone(),
            port: NODE_RPC_PORT,
        }),
        role,
        state,
        snapshot: Some(SnapshotId::new("snap-old")),
        created_at: NOW.minus(6 * HOUR),
        updated_at: NOW.minus(HOUR),
        version: Version(3),
    }
}

fn health(n: u8, zone: &str, state: TargetState) -> TargetHealth {
    TargetHealth {
        target: target(n),
        zone: Some(Zone::new(zone)),
        state,
        reason: (state != TargetState::Healthy).then(|| "Target.FailedHealthChecks".to_owned()),
        description: None,
    }
}

fn snapshot(id: &str, block: u64, age: Duration, state: SnapshotState) -> SnapshotRecord {
    SnapshotRecord {
        id: SnapshotId::new(id),
        block_height: block,
        client: "geth".into(),
        client_version: "1.15".into(),
        manifest_key: format!("manifests/{id}"),
        bytes: 3 * 1024 * 1024 * 1024,
        uploaded_bytes: 1024,
        state,
        created_at: NOW.minus(age),
        updated_at: NOW.minus(age),
        version: Version(2),
    }
}

/// The fleet of the module doc:
/// - zone a: a-1 healthy; a-2 unhealthy with a replacement pending (its own zone);
/// - zone b: b-1 healthy; b-2 lost (its task stopped);
/// - zone c: c-1 healthy; c-2 launched, no record yet (its target initial);
/// - the updater node in zone a, in round `r-...` at wait_synced.
fn inputs() -> ReportInputs {
    let started = NOW.minus(6 * HOUR);
    let a1 = task("a1", "a-1", "us-east-1a", 1, Role::Serving, started);
    let a2 = task("a2", "a-2", "us-east-1a", 2, Role::Serving, started);
    let a2_new = task(
        "a2new",
        "a-2",
        "us-east-1a",
        7,
        Role::Serving,
        NOW.minus(HOUR / 6),
    );
    let b1 = task("b1", "b-1", "us-east-1b", 3, Role::Serving, started);
    let mut b2 = task("b2", "b-2", "us-east-1b", 4, Role::Serving, started);
    b2.last_status = TaskStatus::Stopped;
    b2.desired_status = TaskStatus::Stopped;
    b2.stop_reason = Some("Essential container in task exited".into());
    let c1 = task("c1", "c-1", "us-east-1c", 5, Role::Serving, started);
    let c2 = task(
        "c2",
        "c-2",
        "us-east-1c",
        6,
        Role::Serving,
        NOW.minus(HOUR / 12),
    );
    let up = task(
        "up",
        "updater-1",
        "us-east-1a",
        9,
        Role::Updater,
        NOW.minus(HOUR / 2),
    );
    let config = FleetConfig {
        name: "mainnet".into(),
        zones: vec![zone("us-east-1a"), zone("us-east-1b"), zone("us-east-1c")],
        serving_nodes: 6,
        healthy_floor: 4,
        storm_percent: 34,
        max_head_age_secs: 60,
        min_peers: 1,
        version: Version(1),
    };
    let mut events = Vec::new();
    for (minutes, kind, subject) in [
        (1u64, "reactor.launch", "a-2"),
        (5, "reactor.deregister", "i-4:8545"),
        (30, "snapshot.round.started", "r-1"),
    ] {
        events.push(AuditEvent::new(
            NOW.minus(Duration::from_secs(60 * minutes)),
            kind,
            subject,
            format!("{kind} detail"),
            HOUR,
        ));
    }
    let round = Round {
        id: "r-1799998200000".into(),
        started_at: NOW.minus(HOUR / 2),
        step: Step::WaitSynced,
        step_started_at: NOW.minus(HOUR / 4),
        node: Some(NodeId::new("updater-1")),
        task: Some(up.id.clone()),
        launched: true,
        chain: None,
        upload: None,
        abort: None,
        warnings: Vec::new(),
        step_millis: Vec::new(),
    };
    ReportInputs {
        fleet: "mainnet".into(),
        source: "stack nodefleet-prod".into(),
        config: Some(config),
        nodes: vec![
            record("a-1", "us-east-1a", &a1, Role::Serving, NodeState::Serving),
            record(
                "a-2",
                "us-east-1a",
                &a2,
                Role::Serving,
                NodeState::Unhealthy,
            ),
            record("b-1", "us-east-1b", &b1, Role::Serving, NodeState::Serving),
            record("b-2", "us-east-1b", &b2, Role::Serving, NodeState::Serving),
            record("c-1", "us-east-1c", &c1, Role::Serving, NodeState::Serving),
            record(
                "updater-1",
                "us-east-1a",
                &up,
                Role::Updater,
                NodeState::Syncing,
            ),
            // History: a stopped node is not shown.
            NodeRecord {
                state: NodeState::Stopped,
                ..record(
                    "old-1",
                    "us-east-1a",
                    &a1,
                    Role::Serving,
                    NodeState::Stopped,
                )
            },
        ],
        tasks: Some(vec![a1, a2, a2_new, b1, b2, c1, c2, up]),
        targets: Some(vec![
            health(1, "us-east-1a", TargetState::Healthy),
            health(2, "us-east-1a", TargetState::Unhealthy),
            health(7, "us-east-1a", TargetState::Initial),
            health(3, "us-east-1b", TargetState::Healthy),
            health(4, "us-east-1b", TargetState::Unhealthy),
            health(5, "us-east-1c", TargetState::Healthy),
            health(6, "us-east-1c", TargetState::Initial),
        ]),
        snapshots: vec![
            snapshot("snap-old", 100, 30 * HOUR, SnapshotState::Retired),
            snapshot("snap-new", 200, 3 * HOUR, SnapshotState::Published),
            snapshot("snap-bad", 300, HOUR, SnapshotState::Failed),
        ],
        updater: Some(UpdaterMemory {
            round: Some(round),
            ..UpdaterMemory::default()
        }),
        events,
        network_mode: NetworkMode::Bridge,
        container_port: NODE_RPC_PORT,
        warnings: Vec::new(),
    }
}

fn row<'r>(report: &'r FleetReport, id: &str) -> &'r nodefleet_ops::report::NodeRow {
    report
        .nodes
        .iter()
        .chain(&report.updater.nodes)
        .find(|n| n.id.as_str() == id)
        .unwrap_or_else(|| panic!("no row {id}"))
}

#[test]
fn nodes_are_grouped_by_zone_with_their_task_target_and_replacement() {
    let report = FleetReport::build(&inputs(), NOW);
    let order: Vec<(&str, &str)> = report
        .nodes
        .iter()
        .map(|n| (n.zone.as_str(), n.id.as_str()))
        .collect();
    assert_eq!(
        order,
        [
            ("us-east-1a", "a-1"),
            ("us-east-1a", "a-2"),
            ("us-east-1b", "b-1"),
            ("us-east-1b", "b-2"),
            ("us-east-1c", "c-1"),
            ("us-east-1c", "c-2"),
        ]
    );
    assert_eq!(report.healthy, 3);
    assert_eq!(report.desired_nodes, Some(6));

    let a2 = row(&report, "a-2");
    assert!(!a2.healthy);
    assert_eq!(a2.target_state, Some(TargetState::Unhealthy));
    assert_eq!(
        a2.target_reason.as_deref(),
        Some("Target.FailedHealthChecks")
    );
    let replacement = a2.replacement.as_ref().unwrap();
    assert!(replacement.task.as_str().ends_with("/a2new"));
    assert_eq!(replacement.target_state, Some(TargetState::Initial));

    let b2 = row(&report, "b-2");
    assert_eq!(b2.task_status, Some(TaskStatus::Stopped));
    assert_eq!(
        b2.stop_reason.as_deref(),
        Some("Essential container in task exited")
    );
    assert!(!b2.healthy);
    assert_eq!(b2.rpc_url, None, "a stopped task is not probed");

    let c2 = row(&report, "c-2");
    assert_eq!(c2.state, NodeState::Launching, "a task without a record");
    assert_eq!(c2.target.as_deref(), Some("i-6:8545"));

    let a1 = row(&report, "a-1");
    assert!(a1.healthy);
    assert_eq!(a1.rpc_url.as_deref(), Some("http://10.0.0.1:8545"));
    assert_eq!(a1.snapshot_id, Some(SnapshotId::new("snap-old")));
    assert!(report.nodes.iter().all(|n| n.id.as_str() != "old-1"));
}

#[test]
fn the_updater_latest_snapshot_and_events_are_reported() {
    let report = FleetReport::build(&inputs(), NOW);
    assert_eq!(report.updater.nodes.len(), 1);
    assert_eq!(report.updater.nodes[0].id.as_str(), "updater-1");
    let round = report.updater.round.as_ref().unwrap();
    assert_eq!(round.step, "wait_synced");
    assert_eq!(report.latest_snapshot, Some(SnapshotId::new("snap-new")));
    assert_eq!(report.latest_snapshot_age_secs, Some(3 * 3600));
    let listed: Vec<&str> = report.snapshots.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        listed,
        ["snap-new", "snap-old"],
        "failed ones are not listed"
    );
    let kinds: Vec<&str> = report.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "reactor.launch",
            "reactor.deregister",
            "snapshot.round.started"
        ]
    );
}

#[test]
fn the_text_groups_by_zone_and_says_the_snapshot_age() {
    let report = FleetReport::build(&inputs(), NOW);
    let text = report.render(NOW);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "stack nodefleet-prod, fleet mainnet: 3 of 6 serving nodes healthy, zones us-east-1a us-east-1b us-east-1c"
    );
    assert!(
        text.contains("latest snapshot snap-new: block 200, made 3 h ago, 3.0 GiB"),
        "{text}"
    );
    assert!(
        text.contains("snapshot updater: round r-1799998200000 at wait_synced for 15 min, task up"),
        "{text}"
    );
    let zone_a = lines
        .iter()
        .position(|l| l.starts_with("zone us-east-1a"))
        .unwrap();
    let zone_b = lines
        .iter()
        .position(|l| l.starts_with("zone us-east-1b"))
        .unwrap();
    assert_eq!(lines[zone_a], "zone us-east-1a: 2 nodes, 1 healthy");
    assert!(lines[zone_a + 1].trim_start().starts_with("NODE"));
    assert!(lines[zone_a + 2].trim_start().starts_with("a-1 "));
    assert!(
        lines[zone_a + 3].contains("a2new running, initial"),
        "{}",
        lines[zone_a + 3]
    );
    assert!(zone_b > zone_a + 3);
    assert!(text.contains("recent events (3, newest first)"));
    assert!(text.contains("    60 s ago  reactor.launch  "), "{text}");
    assert!(text.contains("2027-01-15T07:59:00Z"), "{text}");
}

#[test]
fn the_json_uses_the_local_status_names() {
    let report = FleetReport::build(&inputs(), NOW);
    let json: Value = serde_json::to_value(&report).unwrap();
    let node = &json["nodes"][0];
    for field in [
        "id",
        "zone",
        "state",
        "healthy",
        "target_state",
        "head_block",
        "snapshot_id",
        "task",
    ] {
        assert!(node.get(field).is_some(), "nodes[].{field}: {node}");
    }
    assert_eq!(node["state"], "serving");
    assert_eq!(node["target_state"], "healthy");
    assert_eq!(json["latest_snapshot"], "snap-new");
    assert_eq!(json["latest_snapshot_age_secs"], 3 * 3600);
    assert_eq!(json["snapshots"][0]["block"], 200);
    assert_eq!(json["events"][0]["kind"], "reactor.launch");
    assert_eq!(json["events"][0]["at"], NOW.as_millis() - 60_000);
    assert_eq!(json["updater"]["round"]["step"], "wait_synced");
}

#[test]
fn a_missing_source_is_a_warning_not_a_failure() {
    let mut inputs = inputs();
    inputs.config = None;
    inputs.targets = None;
    inputs
        .warnings
        .push("cannot read target health: boom".into());
    let report = FleetReport::build(&inputs, NOW);
    assert_eq!(report.healthy, 0);
    assert_eq!(report.desired_nodes, None);
    assert!(report.nodes.iter().all(|n| n.target_state.is_none()));
    // Zones come from the nodes when there is no config.
    assert_eq!(report.zones.len(), 3);
    let text = report.render(NOW);
    assert!(
        text.contains("warning: cannot read target health: boom"),
        "{text}"
    );
    assert!(
        text.contains("warning: no fleet config is stored yet"),
        "{text}"
    );
}

#[test]
fn rpc_urls_follow_the_network_mode() {
    let mut t = task("x", "n", "z", 8, Role::Serving, NOW);
    assert_eq!(
        rpc_url(&t, NetworkMode::Bridge, NODE_RPC_PORT).as_deref(),
        Some("http://10.0.0.8:8545")
    );
    t.bindings[0].host_port = 32768;
    assert_eq!(
        rpc_url(&t, NetworkMode::Bridge, NODE_RPC_PORT).as_deref(),
        Some("http://10.0.0.8:32768")
    );
    assert_eq!(
        rpc_url(&t, NetworkMode::Awsvpc, NODE_RPC_PORT).as_deref(),
        Some("http://10.0.0.8:8545")
    );
    t.bindings.clear();
    assert_eq!(rpc_url(&t, NetworkMode::Bridge, NODE_RPC_PORT), None);
    t.ip = None;
    assert_eq!(rpc_url(&t, NetworkMode::Awsvpc, NODE_RPC_PORT), None);
}

/// Answers from a table by URL; records what it was asked.
struct TableProbe {
    heads: HashMap<String, u64>,
    asked: std::sync::Mutex<Vec<(String, Duration)>>,
}

#[async_trait]
impl HeadProbe for TableProbe {
    async fn head_block(&self, url: &str, timeout: Duration) -> Option<u64> {
        self.asked.lock().unwrap().push((url.to_owned(), timeout));
        self.heads.get(url).copied()
    }
}

#[tokio::test]
async fn heads_are_asked_of_every_live_node_with_an_address() {
    let mut report = FleetReport::build(&inputs(), NOW);
    let probe = TableProbe {
        heads: HashMap::from([
            ("http://10.0.0.1:8545".to_owned(), 21_000_000),
            ("http://10.0.0.9:8545".to_owned(), 20_999_990),
        ]),
        asked: std::sync::Mutex::new(Vec::new()),
    };
    report.probe_heads(&probe, Duration::from_millis(700)).await;
    let mut asked: Vec<String> = probe
        .asked
        .lock()
        .unwrap()
        .iter()
        .map(|(u, _)| u.clone())
        .collect();
    asked.sort();
    // Every live task's node (b-2's task is stopped), the updater included.
    assert_eq!(
        asked,
        [
            "http://10.0.0.1:8545",
            "http://10.0.0.2:8545",
            "http://10.0.0.3:8545",
            "http://10.0.0.5:8545",
            "http://10.0.0.6:8545",
            "http://10.0.0.9:8545",
        ]
    );
    assert!(
        probe
            .asked
            .lock()
            .unwrap()
            .iter()
            .all(|(_, t)| *t == Duration::from_millis(700))
    );
    assert_eq!(row(&report, "a-1").head_block, Some(21_000_000));
    assert_eq!(row(&report, "updater-1").head_block, Some(20_999_990));
    assert_eq!(row(&report, "b-1").head_block, None);
    assert_eq!(report.heads.asked, 6);
    assert_eq!(report.heads.answered, 2);
    assert_eq!(report.heads.no_address, 1);
    let text = report.render(NOW);
    assert!(
        text.contains("heads: 2 of 6 nodes answered eth_blockNumber within 700 ms; 1 without a known address. '-' is a head not seen: nodes listen on private addresses in the VPC, so run this from a machine inside it to see them"),
        "{text}"
    );
    assert!(text.contains(" 21000000 "), "{text}");
}

#[tokio::test]
async fn the_rpc_probe_reads_heads_and_gives_up_on_slow_or_gone_nodes() {
    let answering = RecordingNode::start().await;
    let slow = RecordingNode::start().await;
    slow.set_behaviour(NodeBehaviour::Slow {
        delay: Duration::from_secs(5),
    });
    let erroring = RecordingNode::start().await;
    erroring.set_behaviour(NodeBehaviour::Fixed {
        status: 200,
        body: r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no"}}"#.into(),
    });
    let gone = {
        let node = RecordingNode::start().await;
        node.url()
    };
    let urls = vec![answering.url(), slow.url(), erroring.url(), gone];
    let started = std::time::Instant::now();
    let heads = probe_all(&RpcHeadProbe, &urls, Duration::from_millis(300)).await;
    assert_eq!(heads, vec![Some(16), None, None, None]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "asked at once, each within the timeout: {:?}",
        started.elapsed()
    );
    assert_eq!(answering.methods(), ["eth_blockNumber"]);
    assert_eq!(
        RpcHeadProbe
            .head_block("https://example.invalid", Duration::from_millis(50))
            .await,
        None
    );
}
