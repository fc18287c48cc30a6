//! `nodefleet agent run` from the outside, as a node task runs it: configured by the
//! scheduler's environment only, with anvil as the client and a `file://` store. An updater
//! agent makes a snapshot on `POST /snapshot`; a serving agent started on the same store
//! hydrates from it, reports healthy on `/health`, and exits 0 on SIGTERM with anvil gone.

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

#[tokio::test]
async fn an_updater_snapshots_and_a_new_node_hydrates_from_it() {
    let scratch = temp_dir("hydrate");
    let store = format!("file://{}", scratch.join("store").display());

    // The updater starts on an empty store: nothing to hydrate, anvil starts from genesis.
    let (rpc, health) = (free_port(), free_port());
    let updater_dir = scratch.join("updater");
    let mut updater = agent(&store, &updater_dir, "updater", rpc, health);
    wait_healthy(&mut updater, health).await;
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
