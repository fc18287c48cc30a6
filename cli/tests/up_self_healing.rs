//! `nodefleet up` heals itself, from the outside: with two clients reading through the
//! gateway all along, one node is killed outright; the fleet is back to three healthy nodes
//! on its own, the dead node replaced by a new process, and not one read failed. A node is
//! a node agent running anvil: the agent killed outright takes its anvil with it.
//! `nodefleet status` shows the fleet, and says so (exit 1) when no `up` is running.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

mod support;

use support::{alive, all_healthy, children, nodes, read_steadily, spawn_up, status};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nodefleet_local::status::{FleetStatus, STALE_AFTER, process_start_time};
use nodefleet_ports::Timestamp;
use serde_json::Value;
use tokio::io::BufReader;

/// Bound of every wait on the fleet (start, recovery): a replacement takes about a second;
/// this is for a loaded two-core CI machine.
const WAIT: Duration = Duration::from_secs(60);

fn temp_dir(name: &str) -> PathBuf {
    support::temp_dir("heal", name)
}

/// Polls `status --json` until `done` holds; panics with the last answer after [`WAIT`].
async fn wait_status(dir: &Path, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    support::wait_status(dir, what, WAIT, done).await
}

/// Reads stdout lines until one contains `needle`; returns it.
async fn line_with(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    needle: &str,
) -> String {
    support::line_with(lines, needle, WAIT * 2).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_replaced_by_the_fleet_itself_and_no_read_fails() {
    let dir = temp_dir("kill");
    let (mut up, mut lines) = spawn_up(&dir, 3);
    let line = line_with(&mut lines, "JSON-RPC at").await;
    let url = line.rsplit(' ').next().unwrap().to_owned();

    // Healthy as soon as the registry's check passes; `serving` in the record from the
    // reconcile after.
    let before = wait_status(&dir, "three healthy serving nodes", |s| {
        all_healthy(s, 3) && nodes(s).iter().all(|n| n["state"] == "serving")
    })
    .await;
    assert_eq!(before["gateway"], url.as_str());
    assert_eq!(before["up_pid"], u64::from(up.id().unwrap()));
    let zones: Vec<&str> = nodes(&before)
        .iter()
        .map(|n| n["zone"].as_str().unwrap())
        .collect();
    assert_eq!(zones, ["local-a", "local-b", "local-c"]);
    // A fresh folder's store holds no snapshot: every agent started anvil on a new chain.
    for node in nodes(&before) {
        assert!(
            node["snapshot_id"].is_null(),
            "an empty store hydrates nothing"
        );
    }
    assert!(before["latest_snapshot"].is_null(), "{before:#}");
    assert_eq!(before["snapshots"], serde_json::json!([]));
    assert!(before["updater"].is_null(), "{before:#}");
    let (table_code, table, _) = status(&dir, false).await;
    assert_eq!(table_code, 0);
    assert!(table.contains("3 of 3 nodes healthy"), "{table}");
    assert!(table.contains("no published snapshot"), "{table}");

    // Two clients read steadily through the gateway from before the kill to after the
    // recovery.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..2)
        .map(|id| tokio::spawn(read_steadily(url.clone(), id, stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let victim = &nodes(&before)[0];
    let (victim_id, old_pid, old_task) = (
        victim["id"].as_str().unwrap().to_owned(),
        victim["pid"].as_u64().unwrap(),
        victim["task"].as_str().unwrap().to_owned(),
    );
    let victim_clients = children(old_pid);
    assert_eq!(victim_clients.len(), 1, "the agent runs one anvil");
    let killed = Instant::now();
    let signalled = std::process::Command::new("kill")
        .args(["-9", &old_pid.to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());

    let after = wait_status(&dir, "the killed node replaced", |s| {
        all_healthy(s, 3)
            && nodes(s)
                .iter()
                .any(|n| n["id"] == victim_id.as_str() && n["task"] != old_task.as_str())
    })
    .await;
    let recovered = killed.elapsed();
    // Keep reading a while with the replacement in rotation.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut ok = 0;
    let mut failures = Vec::new();
    for client in clients {
        let reads = client.await.unwrap();
        ok += reads.ok;
        failures.extend(reads.failures);
    }
    assert!(
        failures.is_empty(),
        "{} failed reads: {failures:#?}",
        failures.len()
    );
    assert!(ok >= 100, "the clients read steadily: only {ok} reads");

    let ids = |s: &Value| -> Vec<String> {
        nodes(s)
            .iter()
            .map(|n| n["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        ids(&after),
        ids(&before),
        "the node count stays three, same nodes"
    );
    let replacement = nodes(&after)
        .iter()
        .find(|n| n["id"] == victim_id.as_str())
        .unwrap();
    let new_pid = replacement["pid"].as_u64().unwrap();
    assert_ne!(new_pid, old_pid);
    assert!(alive(new_pid), "the replacement runs");
    assert!(!alive(old_pid), "the killed node is gone");
    for pid in &victim_clients {
        assert!(
            !alive(*pid),
            "the killed agent's anvil {pid} is gone with it"
        );
    }
    assert_eq!(replacement["zone"], victim["zone"]);
    eprintln!("recovered in {recovered:?}; {ok} reads, none failed");

    // The loop's log tells the story: the exit, the replacement launch, the new node ready.
    let log = std::fs::read_to_string(dir.join("reactor.log")).unwrap();
    let events: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["target"] == "nodefleet::fleet")
        .collect();
    let has = |event: &str, test: &dyn Fn(&Value) -> bool| {
        events.iter().any(|e| e["event"] == event && test(e))
    };
    assert!(has("task_exit", &|e| e["task"] == old_task.as_str()
        && e["reason"] == "killed by signal 9"));
    assert!(has("action", &|e| e["action"] == "launch"
        && e["node"] == victim_id.as_str()
        && e["key"].as_str().is_some_and(
            |k| k.starts_with(&format!("replace/{victim_id}/{old_task}/"))
        )));
    assert!(has("node_ready", &|e| e["task"] == replacement["task"]));

    // Ctrl-C: the command exits 0, no node (agent or anvil) is left, and status says
    // nothing runs.
    let clients: Vec<u64> = nodes(&after)
        .iter()
        .flat_map(|n| children(n["pid"].as_u64().unwrap()))
        .collect();
    assert_eq!(clients.len(), 3, "one anvil per agent: {clients:?}");
    support::interrupt(&mut up, WAIT).await;
    for node in nodes(&after) {
        assert!(!alive(node["pid"].as_u64().unwrap()), "{node} left behind");
    }
    for pid in &clients {
        assert!(!alive(*pid), "anvil {pid} left behind");
    }
    let (code, _, stderr) = status(&dir, true).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("no nodefleet up is running"), "{stderr}");
}

#[tokio::test]
async fn status_says_no_fleet_runs_when_there_is_no_file_a_dead_writer_or_a_stale_file() {
    let dir = temp_dir("status");
    for json in [false, true] {
        let (code, stdout, stderr) = status(&dir, json).await;
        assert_eq!(code, 1);
        assert!(stdout.is_empty(), "{stdout}");
        assert!(
            stderr.starts_with("error: no nodefleet up is running in"),
            "{stderr}"
        );
        assert!(stderr.contains("status.json does not exist"), "{stderr}");
    }

    let now = Timestamp::now();
    let written = FleetStatus {
        up_pid: std::process::id(),
        up_started: process_start_time(std::process::id()),
        gateway: "http://127.0.0.1:9".into(),
        desired_nodes: 3,
        zones: vec!["local-a".into()],
        updated_at: now,
        last_error: None,
        nodes: Vec::new(),
        updater: None,
        latest_snapshot: None,
        snapshots: Vec::new(),
        console: None,
        events: Vec::new(),
        traffic: Default::default(),
        failed_zones: Vec::new(),
    };
    // A writer that is alive and fresh: running (this test process stands in for `up`).
    written.write(&dir).unwrap();
    let (code, stdout, stderr) = status(&dir, false).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("0 of 3 nodes healthy"), "{stdout}");

    // A writer that was killed: its process is gone.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let gone_pid = child.id();
    child.wait().unwrap();
    FleetStatus {
        up_pid: gone_pid,
        up_started: None,
        ..written.clone()
    }
    .write(&dir)
    .unwrap();
    let (code, _, stderr) = status(&dir, true).await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!("its process {gone_pid} is gone")),
        "{stderr}"
    );

    // A writer alive but silent for longer than the staleness bound.
    FleetStatus {
        updated_at: now.minus(STALE_AFTER * 2),
        ..written
    }
    .write(&dir)
    .unwrap();
    let (code, _, stderr) = status(&dir, false).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("has not updated its status"), "{stderr}");
}
