//! The client process, with small shell scripts standing in for a client: a clean stop on
//! the stop signal, SIGKILL after the stop timeout, a death on its own with its status, the
//! stop reaching the client's own children, dropping the handle stopping it, and a missing
//! binary failing loudly.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use nodefleet_agent::client::{
    ClientError, ClientKind, ClientLog, ExitCause, LaunchSpec, RunningClient,
};
use support::{TempDir, eventually, processes_with_arg};

/// Writes an executable script `body` into `dir` and a spec that runs it.
fn scripted(dir: &TempDir, body: &str, stop_timeout: Duration) -> LaunchSpec {
    let script = dir.join("client.sh");
    std::fs::write(&script, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut spec = LaunchSpec::new(
        ClientKind::Anvil,
        dir.join("data"),
        SocketAddr::from(([127, 0, 0, 1], support::free_port())),
    );
    spec.binary = script;
    spec.log = ClientLog::File(dir.join("client.log"));
    spec.stop_signal = libc::SIGTERM;
    spec.stop_timeout = stop_timeout;
    spec
}

fn log_of(dir: &TempDir) -> String {
    std::fs::read_to_string(dir.join("client.log")).unwrap_or_default()
}

async fn wait_started(dir: &TempDir) {
    eventually(Duration::from_secs(10), "the script to start", || async {
        log_of(dir).contains("started").then_some(())
    })
    .await;
}

fn path_text(dir: &TempDir) -> String {
    dir.path().to_string_lossy().into_owned()
}

#[tokio::test]
async fn a_client_that_honours_the_stop_signal_stops_cleanly() {
    let dir = TempDir::new("clean");
    let spec = scripted(
        &dir,
        "trap 'echo got-term; exit 0' TERM\necho started\nwhile true; do sleep 0.1; done",
        Duration::from_secs(10),
    );
    let client = RunningClient::start(&spec).await.unwrap();
    wait_started(&dir).await;
    assert!(!client.has_exited());
    assert!(!processes_with_arg(&path_text(&dir)).is_empty());

    let exit = client.stop().await;
    assert!(
        matches!(exit.cause, ExitCause::Stopped { signal, .. } if signal == libc::SIGTERM),
        "{exit}"
    );
    assert!(exit.is_clean(), "{exit}");
    assert_eq!(exit.status.unwrap().code(), Some(0));
    assert!(log_of(&dir).contains("got-term"));
    assert!(processes_with_arg(&path_text(&dir)).is_empty());
    // The data dir was created for the client.
    assert!(dir.join("data").is_dir());
}

#[tokio::test]
async fn a_client_that_ignores_the_stop_signal_is_killed_after_the_timeout() {
    let dir = TempDir::new("stubborn");
    let spec = scripted(
        &dir,
        "trap '' TERM\necho started\nwhile true; do sleep 0.1; done",
        Duration::from_millis(500),
    );
    let client = RunningClient::start(&spec).await.unwrap();
    wait_started(&dir).await;
    let started = std::time::Instant::now();
    let exit = client.stop().await;
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert!(
        matches!(exit.cause, ExitCause::Killed { timeout } if timeout == Duration::from_millis(500)),
        "{exit}"
    );
    assert!(!exit.is_clean());
    assert_eq!(exit.agent_exit_code(), 128 + libc::SIGKILL);
    assert!(processes_with_arg(&path_text(&dir)).is_empty());
}

#[tokio::test]
async fn a_client_that_dies_on_its_own_reports_its_status() {
    let dir = TempDir::new("dies");
    let spec = scripted(&dir, "echo started\nexit 3", Duration::from_secs(5));
    let mut client = RunningClient::start(&spec).await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(10), client.wait())
        .await
        .unwrap();
    assert_eq!(exit.cause, ExitCause::OnItsOwn);
    assert_eq!(exit.status.unwrap().code(), Some(3));
    assert_eq!(exit.agent_exit_code(), 3);
    assert!(!exit.is_clean());
    assert!(client.has_exited());
    // Stopping a client that is gone reports the same exit.
    assert_eq!(client.stop().await.cause, ExitCause::OnItsOwn);
}

#[tokio::test]
async fn the_stop_reaches_the_clients_own_children() {
    let dir = TempDir::new("group");
    let grandchild = dir.join("grandchild");
    let spec = scripted(
        &dir,
        &format!(
            "sh -c 'sleep 1000; :' {} &\ntrap 'exit 0' TERM\necho started\nwhile true; do sleep 0.1; done",
            grandchild.display()
        ),
        Duration::from_secs(10),
    );
    let client = RunningClient::start(&spec).await.unwrap();
    wait_started(&dir).await;
    let grandchild = grandchild.to_string_lossy().into_owned();
    eventually(Duration::from_secs(5), "the grandchild to run", || async {
        (!processes_with_arg(&grandchild).is_empty()).then_some(())
    })
    .await;
    let exit = client.stop().await;
    assert!(exit.is_clean(), "{exit}");
    eventually(
        Duration::from_secs(5),
        "the grandchild to be gone",
        || async { processes_with_arg(&grandchild).is_empty().then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn dropping_the_handle_stops_the_client() {
    let dir = TempDir::new("dropped");
    let spec = scripted(
        &dir,
        "trap 'echo got-term; exit 0' TERM\necho started\nwhile true; do sleep 0.1; done",
        Duration::from_secs(10),
    );
    let client = RunningClient::start(&spec).await.unwrap();
    wait_started(&dir).await;
    drop(client);
    eventually(
        Duration::from_secs(10),
        "the dropped client to stop",
        || async {
            processes_with_arg(&path_text(&dir))
                .is_empty()
                .then_some(())
        },
    )
    .await;
    assert!(
        log_of(&dir).contains("got-term"),
        "stopped with the signal, not killed"
    );
}

#[tokio::test]
async fn a_missing_binary_fails_to_start_naming_it() {
    let dir = TempDir::new("missing");
    let mut spec = scripted(&dir, "exit 0", Duration::from_secs(1));
    spec.binary = PathBuf::from("/nonexistent/nodefleet-client");
    let error = RunningClient::start(&spec).await.unwrap_err();
    assert!(matches!(error, ClientError::Spawn { .. }), "{error}");
    assert!(
        error.to_string().contains("/nonexistent/nodefleet-client"),
        "{error}"
    );
}

/// Set in the copy of this test binary that plays the agent in the test below.
const AGENT_ROLE_ENV: &str = "NODEFLEET_AGENT_TEST_PLAY_AGENT";

/// The client dies with the agent even when the agent is killed outright (SIGKILL, no
/// chance to stop anything): this test binary runs itself again as the "agent", which
/// starts a client and waits; the test kills that process and checks the client is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_dies_with_the_agent() {
    if let Some(dir) = std::env::var_os(AGENT_ROLE_ENV) {
        // The agent's part: start a client, say its pid, wait to be killed.
        let dir = PathBuf::from(dir);
        let mut spec = LaunchSpec::new(
            ClientKind::Anvil,
            dir.join("data"),
            SocketAddr::from(([127, 0, 0, 1], support::free_port())),
        );
        spec.binary = dir.join("client.sh");
        spec.log = ClientLog::File(dir.join("client.log"));
        let client = RunningClient::start(&spec).await.unwrap();
        std::fs::write(dir.join("pid"), client.pid().to_string()).unwrap();
        tokio::time::sleep(Duration::from_secs(600)).await;
        return;
    }
    let dir = TempDir::new("orphan");
    scripted(
        &dir,
        "echo started\nwhile true; do sleep 0.1; done",
        Duration::from_secs(5),
    );
    let mut agent = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "the_client_dies_with_the_agent", "--nocapture"])
        .env(AGENT_ROLE_ENV, dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client_pid: u32 = eventually(
        Duration::from_secs(30),
        "the agent to start a client",
        || async {
            std::fs::read_to_string(dir.join("pid"))
                .ok()?
                .trim()
                .parse()
                .ok()
        },
    )
    .await;
    wait_started(&dir).await;
    assert!(processes_with_arg(&path_text(&dir)).contains(&client_pid));

    agent.kill().unwrap();
    agent.wait().unwrap();
    eventually(
        Duration::from_secs(10),
        "the client to die with the agent",
        || async { (!processes_with_arg(&path_text(&dir)).contains(&client_pid)).then_some(()) },
    )
    .await;
}
