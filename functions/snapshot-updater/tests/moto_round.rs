//! The real `snapshot-updater` binary, started against a fake Lambda Runtime API, driving a
//! whole round on moto: DynamoDB (memory, lease, catalog), ECS (the updater task) and S3 (the
//! channel, the snapshot, `latest`). The test plays the updater node's agent through the
//! channel objects in moto's S3, making a real snapshot there with the engine, so what is
//! checked is the wiring of the stores and the scheduler; the round's rules are tested on
//! fakes in shared/updater.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use nodefleet_aws::ecs::{TAG_NODE, TAG_ROLE, TAG_ZONE};
use nodefleet_ports::{ObjectStore, Role, SnapshotId, SnapshotState, StateStore, Timestamp};
use nodefleet_snapshot::catalog;
use nodefleet_snapshot::channel::{
    self, Ack, AckState, AgentPhase, CommandAction, Report, ReportedHealth, UploadResult,
};
use nodefleet_snapshot::create::{CreateOptions, create};
use nodefleet_snapshot::format::ChainPoint;
use nodefleet_snapshot::progress::NoProgress;
use nodefleet_updater::round::{Step, UpdaterMemory};
use nodefleet_updater::service::UPDATER_NAME;
use serde_json::Value;
use support::{MotoFleet, UpdaterProcess, start_round, tag, tick};

const BINARY: &str = env!("CARGO_BIN_EXE_snapshot-updater");

fn now_ms() -> u64 {
    Timestamp::now().as_millis()
}

async fn memory(fleet: &MotoFleet) -> UpdaterMemory {
    let stored = fleet
        .state()
        .get_control_state(UPDATER_NAME)
        .await
        .unwrap()
        .expect("the updater saved its memory");
    serde_json::from_str(&stored.body).unwrap()
}

/// The chain point the "client" stopped at.
fn chain() -> ChainPoint {
    ChainPoint {
        client: "anvil".into(),
        client_version: "1.7.1".into(),
        chain_id: 31337,
        block_height: 4_242,
        block_hash: format!("0x{:064x}", 4_242),
    }
}

/// The agent's report on `node`, heartbeat now.
fn report(node: &str, phase: AgentPhase, ack: Option<Ack>) -> Report {
    Report {
        node: node.to_owned(),
        agent: "agent-moto".into(),
        agent_started_at_ms: now_ms(),
        heartbeat_at_ms: now_ms(),
        phase,
        health: ReportedHealth {
            healthy: phase == AgentPhase::Running,
            block: Some(chain().block_height),
            head_age_secs: Some(2),
            reason: None,
        },
        hydrated_from: None,
        ack,
    }
}

fn done(command: &str) -> Ack {
    Ack {
        command: command.to_owned(),
        state: AckState::Done,
        detail: None,
        retryable: false,
        started_at_ms: now_ms(),
        finished_at_ms: Some(now_ms()),
        chain: None,
        upload: None,
    }
}

/// The current command on `node`'s channel.
async fn command(store: &dyn ObjectStore, node: &str) -> channel::Command {
    channel::read_command(store, node)
        .await
        .unwrap()
        .expect("a command was issued")
}

/// What the agent's upload does: a real snapshot of a small data dir, not published.
async fn upload(fleet: &MotoFleet, store: Arc<dyn ObjectStore>) -> UploadResult {
    let data_dir = fleet.scratch.join("data");
    std::fs::create_dir_all(data_dir.join("chaindata")).unwrap();
    std::fs::write(
        data_dir.join("chaindata/state.bin"),
        (0..200_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    std::fs::write(data_dir.join("chaindata/head"), b"block 4242").unwrap();
    let summary = create(
        store,
        &data_dir,
        &CreateOptions {
            profile: nodefleet_snapshot::profile::by_name("anvil").unwrap(),
            chain: chain(),
            concurrency: 2,
            now_ms: now_ms(),
            publish: false,
        },
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!(summary.published_generation, None);
    UploadResult::from(&summary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_on_moto_launches_commands_verifies_and_publishes() {
    let fleet = MotoFleet::create(&["us-east-1a", "us-east-1b"], 1).await;
    let store = fleet.store();
    let state = fleet.state();
    let updater =
        UpdaterProcess::start(BINARY, fleet.env(), fleet.scratch.join("updater.log")).await;

    // The schedule's start-round: one updater task, tagged with its role.
    let first = updater.answer(&start_round()).await;
    assert_eq!(first["outcome"], "ran", "{first}");
    assert_eq!(first["round"]["step"], "wait_synced", "{first}");
    let round = first["round"]["id"].as_str().unwrap().to_owned();
    let node = first["round"]["node"].as_str().unwrap().to_owned();
    let tasks = fleet.running_tasks().await;
    assert_eq!(tasks.len(), 1, "one RunTask");
    assert_eq!(tag(&tasks[0], TAG_ROLE), Some("updater"));
    assert_eq!(tag(&tasks[0], TAG_NODE), Some(node.as_str()));
    // moto reports no availabilityZone; the zone the updater was launched in is tagged.
    assert_eq!(tag(&tasks[0], TAG_ZONE), Some(fleet.zones[0].as_str()));
    // The memory is saved, the lease given back, the node recorded.
    let saved = memory(&fleet).await;
    let in_progress = saved.round.as_ref().unwrap();
    assert_eq!(
        (in_progress.id.as_str(), in_progress.step),
        (round.as_str(), Step::WaitSynced)
    );
    assert_eq!(
        in_progress.task.as_ref().map(|t| t.as_str()),
        tasks[0].task_arn()
    );
    assert_eq!(
        state
            .get_lease(UPDATER_NAME, Timestamp::now())
            .await
            .unwrap(),
        None,
        "the lease is released at the end of every invocation"
    );
    let nodes = state.list_nodes().await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].role, Role::Updater);

    // A tick before the agent says anything: nothing moves, no second task.
    let waiting = updater.answer(&tick()).await;
    assert_eq!(waiting["round"]["step"], "wait_synced", "{waiting}");
    assert_eq!(waiting["transitions"], 0);
    assert_eq!(fleet.running_tasks().await.len(), 1);

    // The agent reports the node synced: the next tick commands a quiesce.
    channel::write_report(store.as_ref(), &report(&node, AgentPhase::Running, None))
        .await
        .unwrap();
    let quiescing = updater.answer(&tick()).await;
    assert_eq!(quiescing["round"]["step"], "quiesce", "{quiescing}");
    let quiesce = command(store.as_ref(), &node).await;
    assert_eq!(quiesce.action, CommandAction::Quiesce);
    assert_eq!(quiesce.id, format!("{round}/quiesce"));

    // Quiesced at a chain point: the next tick commands the upload.
    let mut ack = done(&quiesce.id);
    ack.chain = Some(chain());
    channel::write_report(
        store.as_ref(),
        &report(&node, AgentPhase::Quiesced, Some(ack)),
    )
    .await
    .unwrap();
    let uploading = updater.answer(&tick()).await;
    assert_eq!(uploading["round"]["step"], "upload", "{uploading}");
    let upload_command = command(store.as_ref(), &node).await;
    assert_eq!(upload_command.action, CommandAction::Upload);

    // The agent uploads a real snapshot into moto's S3 and says so.
    let made = upload(&fleet, store.clone()).await;
    assert_eq!(catalog::latest(store.as_ref()).await.unwrap(), None);
    let mut ack = done(&upload_command.id);
    ack.upload = Some(made.clone());
    channel::write_report(
        store.as_ref(),
        &report(&node, AgentPhase::Quiesced, Some(ack)),
    )
    .await
    .unwrap();
    let mut published = Value::Null;
    for _ in 0..5 {
        published = updater.answer(&tick()).await;
        if published["latest"]["snapshot"] == made.snapshot.as_str() {
            break;
        }
    }
    assert_eq!(
        published["latest"]["snapshot"],
        made.snapshot.as_str(),
        "{published}"
    );
    assert_eq!(published["latest"]["block_height"], chain().block_height);
    assert_eq!(published["round"]["step"], "resume", "{published}");
    let latest = catalog::latest(store.as_ref()).await.unwrap().unwrap();
    assert_eq!(latest.snapshot, made.snapshot, "latest is published in S3");
    let record = state
        .get_snapshot(&SnapshotId::new(made.snapshot.clone()))
        .await
        .unwrap()
        .expect("a catalog record");
    assert_eq!(record.state, SnapshotState::Published);
    assert_eq!(record.block_height, chain().block_height);
    assert_eq!(
        (record.bytes, record.uploaded_bytes),
        (made.bytes_total, made.bytes_uploaded)
    );
    assert!(record.bytes > 0 && record.uploaded_bytes > 0);
    let resume = command(store.as_ref(), &node).await;
    assert_eq!(resume.action, CommandAction::Resume);
    assert_eq!(resume.id, format!("{round}/resume"));

    // Resumed: the round prunes and ends published; the node keeps running for the next.
    channel::write_report(
        store.as_ref(),
        &report(&node, AgentPhase::Running, Some(done(&resume.id))),
    )
    .await
    .unwrap();
    let ended = updater.answer(&tick()).await;
    assert_eq!(ended["round"], Value::Null, "{ended}");
    let finished = ended["finished"].as_array().unwrap();
    assert_eq!(finished.len(), 1, "{ended}");
    assert_eq!(finished[0]["id"], round.as_str());
    assert_eq!(finished[0]["outcome"]["outcome"], "published");
    assert_eq!(finished[0]["outcome"]["snapshot"], made.snapshot.as_str());
    let after = memory(&fleet).await;
    assert_eq!((after.round, after.rounds_published), (None, 1));
    assert_eq!(fleet.running_tasks().await.len(), 1, "the updater is kept");
    assert_eq!(
        catalog::latest(store.as_ref())
            .await
            .unwrap()
            .unwrap()
            .snapshot,
        made.snapshot,
        "retention keeps the published snapshot"
    );
    assert_eq!(
        state
            .get_lease(UPDATER_NAME, Timestamp::now())
            .await
            .unwrap(),
        None
    );

    // The round's metrics went to stdout as EMF documents, one per line.
    let lines = updater.lines();
    let emf: Vec<&Value> = lines.iter().filter(|l| l.get("_aws").is_some()).collect();
    let published_docs: Vec<&&Value> = emf
        .iter()
        .filter(|d| d.get("RoundsPublished").is_some())
        .collect();
    assert_eq!(published_docs.len(), 1, "{emf:?}");
    assert_eq!(published_docs[0]["Fleet"], fleet.fleet.as_str());
    assert_eq!(
        published_docs[0]["BytesUploaded"].as_f64(),
        Some(made.bytes_uploaded as f64)
    );
    assert!(emf.iter().any(|d| d.get("SnapshotAge").is_some()));
    assert!(
        emf.iter()
            .any(|d| d.get("Step") == Some(&Value::from("verify"))),
        "a StepDuration per step"
    );
    // And one summary log line per invocation.
    let summaries = lines
        .iter()
        .filter(|l| l["message"] == "updater invocation")
        .count();
    assert!(summaries >= 6, "{summaries} summary lines");
}

#[tokio::test]
async fn a_missing_setting_fails_at_init_naming_it() {
    let fleet = MotoFleet::create(&["us-east-1a"], 1).await;
    let env: Vec<(String, String)> = fleet
        .env()
        .into_iter()
        .filter(|(k, _)| k != "TABLE_NAME")
        .collect();
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        tokio::process::Command::new(BINARY)
            .env_clear()
            .envs(env)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("snapshot-updater configuration: TABLE_NAME is not set"),
        "stderr: {stderr}"
    );
}
