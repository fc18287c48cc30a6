//! `nodefleet agent run` from the outside, as a node task runs it: configured by the
//! scheduler's environment only, with anvil as the client and a `file://` store. An updater
//! agent makes a snapshot on `POST /snapshot`; a serving agent started on the same store
//! hydrates from it, reports healthy on `/health`, and exits 0 on SIGTERM with anvil gone.
//! An updater reports on its channel in the store under the node id the scheduler set, and
//! one without a node id does not start.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

mod support;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use http::Method;
use nodefleet_testkit::anvil;
use nodefleet_testkit::client::request;
use tokio::process::{Child, Command};

fn temp_dir(name: &str) -> PathBuf {
    support::temp_dir("agent-cli", name)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An agent as a scheduler starts it: everything through the task's environment.
fn agent(store: &str, data_dir: &PathBuf, role: &str, rpc_port: u16, health_port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_nodefleet"))
        .args([
            "agent",
            "run",
            "--binary",
            anvil::binary().to_str().unwrap(),
            "--health-listen",
            &format!("127.0.0.1:{health_port}"),
            "--max-head-age-secs",
            "5",
            "--min-peers",
            "0",
        ])
        .env("NODEFLEET_CLIENT", "anvil")
        .env("NODEFLEET_STORE", store)
        .env("NODEFLEET_DATA_DIR", data_dir)
        .env("NODEFLEET_ROLE", role)
        .env("NODEFLEET_NODE_ID", format!("{role}-1"))
        .env("NODEFLEET_RPC_PORT", rpc_port.to_string())
        .env_remove("NODEFLEET_SNAPSHOT_ID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Polls `/health` until it answers 200, or fails if the agent exits or after a generous
/// start-up time.
async fn wait_healthy(agent: &mut Child, health_port: u16) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = agent.try_wait().unwrap() {
            let mut stderr = String::new();
            if let Some(mut pipe) = agent.stderr.take() {
                use tokio::io::AsyncReadExt;
                let _ = pipe.read_to_string(&mut stderr).await;
            }
            panic!("the agent exited ({status}): {stderr}");
        }
        let listening = tokio::net::TcpStream::connect(("127.0.0.1", health_port))
            .await
            .is_ok();
        if listening {
            let answer = request(
                Method::GET,
                &format!("http://127.0.0.1:{health_port}/health"),
                "",
            )
            .await;
            if answer.status == 200 {
                return answer.json();
            }
        }
        assert!(
            Instant::now() < deadline,
            "never healthy on port {health_port}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn stop(mut child: Child) -> i32 {
    let pid = i32::try_from(child.id().unwrap()).unwrap();
    #[allow(unsafe_code)] // sending a signal to our own child
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the agent stops within 30 s of SIGTERM")
        .unwrap();
    status.code().unwrap_or(-1)
}

/// Polls the channel report file until its phase is `phase`; the report.
async fn wait_for_report(path: &std::path::Path, phase: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let report = std::fs::read(path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok());
        if let Some(report) = report.filter(|r| r["phase"] == phase) {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "no report in phase {phase} at {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn an_updater_without_a_node_id_does_not_start() {
    let scratch = temp_dir("no-node-id");
    let store = format!("file://{}", scratch.join("store").display());
    let (rpc, health) = (free_port(), free_port());
    let mut command = Command::new(env!("CARGO_BIN_EXE_nodefleet"));
    command
        .args([
            "agent",
            "run",
            "--binary",
            anvil::binary().to_str().unwrap(),
        ])
        .args(["--health-listen", &format!("127.0.0.1:{health}")])
        .env("NODEFLEET_CLIENT", "anvil")
        .env("NODEFLEET_STORE", &store)
        .env("NODEFLEET_DATA_DIR", scratch.join("updater"))
        .env("NODEFLEET_ROLE", "updater")
        .env("NODEFLEET_RPC_PORT", rpc.to_string())
        .env_remove("NODEFLEET_NODE_ID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("the agent gives up at once")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("NODEFLEET_NODE_ID"), "{stderr}");
    assert!(
        !scratch.join("updater").exists(),
        "nothing was hydrated or started"
    );
    let _ = std::fs::remove_dir_all(&scratch);
}

#[tokio::test]
async fn an_updater_snapshots_and_a_new_node_hydrates_from_it() {
    let scratch = temp_dir("hydrate");
    let store = format!("file://{}", scratch.join("store").display());

    // The updater starts on an empty store: nothing to hydrate, anvil starts from genesis.
    let (rpc, health) = (free_port(), free_port());
    let updater_dir = scratch.join("updater");
    let mut updater = agent(&store, &updater_dir, "updater", rpc, health);
    wait_healthy(&mut updater, health).await;
    // Its channel report, under the node id from the environment.
    let report_path = scratch.join("store/control/updater/updater-1/report");
    let report = wait_for_report(&report_path, "running").await;
    assert_eq!(report["node"], "updater-1", "{report}");
    tokio::time::sleep(Duration::from_secs(2)).await; // a few blocks
    let made = request(
        Method::POST,
        &format!("http://127.0.0.1:{health}/snapshot"),
        "{}",
    )
    .await;
    assert_eq!(made.status, 200, "{made:?}");
    let summary = made.json();
    let snapshot = summary["snapshot"].as_str().unwrap().to_owned();
    assert_eq!(summary["published_generation"], 1, "{summary}");
    assert_eq!(stop(updater).await, 0, "a clean stop on SIGTERM");

    // A serving node hydrates from `latest` (the snapshot just made) and serves.
    let (rpc, health) = (free_port(), free_port());
    let node_dir = scratch.join("node");
    let mut node = agent(&store, &node_dir, "serving", rpc, health);
    let verdict = wait_healthy(&mut node, health).await;
    assert_eq!(verdict["healthy"], true, "{verdict}");
    let marker = std::fs::read_to_string(node_dir.join(".nodefleet-restored")).unwrap();
    assert!(marker.contains(&snapshot), "{marker}");
    assert_eq!(stop(node).await, 0);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", rpc)).is_err(),
        "anvil is gone after the agent stopped"
    );
    let _ = std::fs::remove_dir_all(&scratch);
}
