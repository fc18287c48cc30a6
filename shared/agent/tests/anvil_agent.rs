//! The whole agent around the real, pinned anvil (the test command installs it into
//! `tools/`): `/health` flips to 503 when the node stops producing blocks and back to 200
//! when it resumes; the shutdown signal stops anvil with its graceful signal and its state
//! file written; a client that dies on its own ends the agent with the client's status; an
//! updater snapshots on command (one at a time, only when healthy, behind its token) and a
//! new node hydrates from that snapshot and carries the chain on, and skips the restore
//! when restarted on the same data dir.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nodefleet_agent::client::{ClientKind, ClientLog, ExitCause};
use nodefleet_agent::health::Thresholds;
use nodefleet_agent::hydrate::Hydration;
use nodefleet_agent::{
    AgentConfig, AgentError, Role, RunReport, Shutdown, ShutdownTrigger, run_with_listener,
};
use nodefleet_ports::ObjectStore;
use nodefleet_ports::fakes::MemoryObjectStore;
use nodefleet_ports::faults::{Faults, FaultyObjectStore};
use nodefleet_snapshot::catalog;
use nodefleet_snapshot::restore::RESTORE_MARKER;
use serde_json::{Value, json};
use support::{
    TempDir, eventually, free_port, get_json, listener, post_json, post_with_token,
    processes_with_arg, rpc,
};
use tokio::task::JoinHandle;

/// How long anvil may take to start and answer on a loaded machine.
const START: Duration = Duration::from_secs(60);
/// The head-age limit of these tests: three 1-second blocks.
const MAX_HEAD_AGE: Duration = Duration::from_secs(3);

fn anvil_config(dir: &TempDir, data: &str) -> AgentConfig {
    let mut config = AgentConfig::new(ClientKind::Anvil, dir.join(data));
    config.launch.binary = nodefleet_testkit::anvil::binary();
    config.launch.rpc_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    config.launch.log = ClientLog::File(dir.join(&format!("{data}.anvil.log")));
    config.thresholds = Thresholds {
        max_head_age: MAX_HEAD_AGE,
        min_peers: 1,
    };
    config.health_cache_ttl = Duration::from_millis(200);
    config
}

/// A running agent.
struct Agent {
    addr: SocketAddr,
    url: String,
    rpc: SocketAddr,
    data_dir: String,
    trigger: ShutdownTrigger,
    run: JoinHandle<Result<RunReport, AgentError>>,
}

impl Agent {
    async fn start(config: AgentConfig, store: Arc<dyn ObjectStore>) -> Agent {
        let (listener, addr) = listener().await;
        let (trigger, shutdown) = Shutdown::new();
        let rpc = config.launch.rpc_addr;
        let data_dir = config.launch.data_dir.to_string_lossy().into_owned();
        let run = tokio::spawn(run_with_listener(config, listener, store, shutdown));
        Agent {
            addr,
            url: format!("http://{addr}"),
            rpc,
            data_dir,
            trigger,
            run,
        }
    }

    fn health_url(&self) -> String {
        format!("{}/health", self.url)
    }

    /// Waits for `/health` to answer `status`; its body.
    async fn health_becomes(&self, status: u16, within: Duration) -> Value {
        let url = self.health_url();
        eventually(within, &format!("/health to answer {status}"), || {
            let url = url.clone();
            async move {
                let (got, body) = get_json(&url).await;
                (got == status).then_some(body)
            }
        })
        .await
    }

    async fn block_number(&self) -> u64 {
        let answer = rpc(self.rpc, "eth_blockNumber", json!([])).await;
        let hex = answer["result"].as_str().unwrap().trim_start_matches("0x");
        u64::from_str_radix(hex, 16).unwrap()
    }

    async fn set_interval_mining(&self, seconds: u64) {
        let answer = rpc(self.rpc, "evm_setIntervalMining", json!([seconds])).await;
        assert!(answer.get("error").is_none(), "{answer}");
    }

    async fn shut_down(self) -> RunReport {
        self.trigger.fire();
        tokio::time::timeout(Duration::from_secs(30), self.run)
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_block_production_and_shutdown_stops_anvil_cleanly() {
    let dir = TempDir::new("flip");
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryObjectStore::new());
    let agent = Agent::start(anvil_config(&dir, "data"), store).await;

    let body = agent.health_becomes(200, START).await;
    assert_eq!(body["healthy"], json!(true));
    assert_eq!(body["syncing"], json!(false));
    assert!(
        body.get("peers").is_none(),
        "anvil does not report peers: {body}"
    );

    // The node stops producing blocks: its head ages past the limit.
    agent.set_interval_mining(0).await;
    let body = agent.health_becomes(503, Duration::from_secs(20)).await;
    let reason = body["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("head is ") && reason.ends_with(" s old (max 3 s)"),
        "{reason}"
    );
    // And it stays out while nothing is produced.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(get_json(&agent.health_url()).await.0, 503);

    // Mining resumes: back to 200.
    agent.set_interval_mining(1).await;
    agent.health_becomes(200, Duration::from_secs(20)).await;
    let height = agent.block_number().await;

    // The shutdown signal: anvil gets its graceful signal, dumps its state and exits 0.
    let data_dir = agent.data_dir.clone();
    assert_eq!(processes_with_arg(&data_dir).len(), 1, "one anvil runs");
    let agent_addr = agent.addr;
    let report = agent.shut_down().await;
    assert_eq!(report.hydration, Some(Hydration::EmptyStore));
    let exit = report.client_exit.unwrap();
    assert!(
        matches!(exit.cause, ExitCause::Stopped { signal, .. } if signal == libc::SIGTERM),
        "{exit}"
    );
    assert!(exit.is_clean(), "{exit}");
    assert_eq!(exit.status.unwrap().code(), Some(0));
    assert!(processes_with_arg(&data_dir).is_empty(), "anvil is gone");
    let state: Value =
        serde_json::from_slice(&std::fs::read(dir.join("data").join("state.json")).unwrap())
            .unwrap();
    let dumped_height = state["block"]["number"].as_str().unwrap();
    let dumped_height = u64::from_str_radix(dumped_height.trim_start_matches("0x"), 16).unwrap();
    assert!(dumped_height >= height, "{dumped_height} < {height}");
    // The agent's own endpoint is closed too.
    let refused = tokio::net::TcpStream::connect(agent_addr).await;
    assert!(
        refused.is_err(),
        "the health port still accepts connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_dies_on_its_own_ends_the_agent_with_its_status() {
    let dir = TempDir::new("dies");
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryObjectStore::new());
    let agent = Agent::start(anvil_config(&dir, "data"), store).await;
    agent.health_becomes(200, START).await;

    let pids = processes_with_arg(&agent.data_dir);
    assert_eq!(pids.len(), 1);
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pids[0].to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let ended = tokio::time::timeout(Duration::from_secs(20), agent.run)
        .await
        .unwrap()
        .unwrap();
    let error = ended.unwrap_err();
    assert!(matches!(error, AgentError::ClientDied(_)), "{error}");
    assert_eq!(error.exit_code(), 128 + libc::SIGKILL);
    assert!(error.to_string().contains("killed by signal 9"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_updater_snapshots_on_command_and_a_new_node_hydrates_from_it() {
    let dir = TempDir::new("updater");
    // Counts the store's calls, so the restart below can show it fetched nothing.
    let faults = Faults::new();
    let store: Arc<dyn ObjectStore> = Arc::new(FaultyObjectStore::new(
        MemoryObjectStore::new(),
        faults.clone(),
    ));
    let mut config = anvil_config(&dir, "updater");
    config.role = Role::Updater;
    config.node_id = Some("updater-1".to_owned());
    config.control_token = Some("s3cret".to_owned());
    let updater = Agent::start(config, store.clone()).await;
    updater.health_becomes(200, START).await;
    let snapshot_url = format!("{}/snapshot", updater.url);

    // The control endpoint wants its token.
    let (status, body) = post_with_token(&snapshot_url, "", None).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = post_with_token(&snapshot_url, "", Some("wrong")).await;
    assert_eq!(status, 401);
    // A garbled body is refused before anything stops.
    let (status, body) = post_with_token(&snapshot_url, "{\"publlish\":1}", Some("s3cret")).await;
    assert_eq!(status, 400, "{body}");

    // A node that is behind is not snapshotted, and keeps running.
    updater.set_interval_mining(0).await;
    updater.health_becomes(503, Duration::from_secs(20)).await;
    let (status, body) = post_with_token(&snapshot_url, "", Some("s3cret")).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("not healthy"),
        "{body}"
    );
    updater.set_interval_mining(1).await;
    updater.health_becomes(200, Duration::from_secs(20)).await;
    eventually(Duration::from_secs(20), "a few blocks", || async {
        (updater.block_number().await >= 3).then_some(())
    })
    .await;

    // Two requests at once: one snapshot, one 409.
    let (first, second) = tokio::join!(
        post_with_token(&snapshot_url, "", Some("s3cret")),
        post_with_token(&snapshot_url, "{\"publish\": true}", Some("s3cret")),
    );
    let mut statuses = [first.0, second.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "{first:?} {second:?}");
    let (summary, busy) = if first.0 == 200 {
        (first.1, second.1)
    } else {
        (second.1, first.1)
    };
    assert_eq!(busy["error"], json!("a snapshot is already being made"));
    let snapshot = summary["snapshot"].as_str().unwrap().to_owned();
    assert_eq!(summary["published_generation"], json!(1), "{summary}");
    assert!(summary["bytes_total"].as_u64().unwrap() > 0, "{summary}");

    // Published as latest, with anvil's state file and the chain point in the manifest.
    let latest = catalog::latest(store.as_ref()).await.unwrap().unwrap();
    assert_eq!(latest.snapshot, snapshot);
    let manifest = catalog::read_manifest(store.as_ref(), &snapshot)
        .await
        .unwrap();
    assert!(
        manifest.entries.iter().any(|e| e.path == "state.json"),
        "{:?}",
        manifest.entries
    );
    assert_eq!(manifest.chain.client, "anvil");
    assert_eq!(manifest.chain.chain_id, 31_337);
    assert!(manifest.chain.block_height >= 3);
    assert!(manifest.chain.client_version.starts_with("anvil"));

    // The updater's client is back and healthy.
    updater.health_becomes(200, START).await;
    let report = updater.shut_down().await;
    assert!(report.client_exit.unwrap().is_clean());

    // A new node hydrates from the snapshot and carries the chain on from its height.
    let node = Agent::start(anvil_config(&dir, "node"), store.clone()).await;
    node.health_becomes(200, START).await;
    assert!(
        node.block_number().await >= manifest.chain.block_height,
        "the restored state was loaded"
    );
    let marker = std::fs::read_to_string(dir.join("node").join(RESTORE_MARKER)).unwrap();
    assert_eq!(marker, snapshot);
    let report = node.shut_down().await;
    match report.hydration.unwrap() {
        Hydration::Restored(summary) => {
            assert_eq!(summary.snapshot, snapshot);
            assert!(summary.bytes_transferred > 0);
        }
        other => panic!("expected a restore, got {other:?}"),
    }

    // Started again on the same data dir: nothing to fetch (one GET: the `latest` ref).
    let gets_before = faults.calls("get");
    let again = Agent::start(anvil_config(&dir, "node"), store.clone()).await;
    again.health_becomes(200, START).await;
    let report = again.shut_down().await;
    assert_eq!(
        report.hydration,
        Some(Hydration::AlreadyRestored {
            snapshot: snapshot.clone()
        })
    );
    assert_eq!(
        faults.calls("get") - gets_before,
        1,
        "only the ref was read"
    );
    // Without the updater role there is no control endpoint.
    let plain = Agent::start(anvil_config(&dir, "plain"), store).await;
    let (status, _) = post_json(&format!("{}/snapshot", plain.url), "").await;
    assert_eq!(status, 404);
    plain.shut_down().await;
}
