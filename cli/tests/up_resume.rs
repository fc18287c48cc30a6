//! A second `nodefleet up` on the same folder resumes the fleet from its state: after a
//! Ctrl-C that leaves no process of the fleet behind, `up` without `--nodes` brings back the
//! stored fleet, the same node ids healthy again on new processes, and the audit trail goes
//! on: the first run's events, `fleet.resumed`, the second run's.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

mod support;

use support::{alive, all_healthy, children, nodes, spawn_up, spawn_up_in, status};

use std::path::Path;
use std::time::Duration;

use nodefleet_local::EmbeddedStateStore;
use nodefleet_local::healing::{RESUMED_EVENT, STATE_FILE};
use nodefleet_ports::{StateStore, Timestamp};
use serde_json::Value;

/// Bound of every wait on the fleet (start, stop) on a loaded two-core CI machine.
const WAIT: Duration = Duration::from_secs(60);

/// Three healthy serving nodes; the status.
async fn three_serving(dir: &Path) -> Value {
    support::wait_status(dir, "three healthy serving nodes", WAIT, |s| {
        all_healthy(s, 3) && nodes(s).iter().all(|n| n["state"] == "serving")
    })
    .await
}

fn ids(status: &Value) -> Vec<String> {
    nodes(status)
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Every process of the fleet in `status`: each agent and its anvil.
fn processes(status: &Value) -> Vec<u64> {
    nodes(status)
        .iter()
        .flat_map(|n| {
            let agent = n["pid"].as_u64().unwrap();
            let mut all = children(agent);
            all.push(agent);
            all
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_up_resumes_the_stored_fleet_with_the_same_nodes_and_its_audit_trail() {
    let dir = support::temp_dir("resume", "again");
    let (mut up, mut lines) = spawn_up(&dir, 3);
    support::line_with(&mut lines, "JSON-RPC at", WAIT * 2).await;
    let first = three_serving(&dir).await;
    let first_processes = processes(&first);
    assert_eq!(first_processes.len(), 6, "three agents, three anvils");

    // Ctrl-C: not one process of the fleet is left.
    support::interrupt(&mut up, WAIT).await;
    for pid in &first_processes {
        assert!(!alive(*pid), "process {pid} of the first run left behind");
    }
    let (code, _, _) = status(&dir, true).await;
    assert_eq!(code, 1, "no up runs");

    // Again, without --nodes: the stored fleet, resumed.
    let (mut up, mut lines) = spawn_up_in(&dir, &["--snapshot-interval-secs", "0"]);
    let resuming = support::line_with(&mut lines, "resuming the fleet in", WAIT * 2).await;
    assert!(resuming.ends_with(": 3 nodes over 3 zones"), "{resuming}");
    support::line_with(&mut lines, "JSON-RPC at", WAIT * 2).await;
    let second = three_serving(&dir).await;
    assert_eq!(ids(&second), ids(&first), "the same node ids");
    assert_eq!(second["desired_nodes"], 3);
    for pid in processes(&second) {
        assert!(!first_processes.contains(&pid), "new processes");
    }
    support::interrupt(&mut up, WAIT).await;
    for pid in processes(&second) {
        assert!(!alive(pid), "process {pid} of the second run left behind");
    }

    // The audit trail: the first run's fills, the resume (which cleared the first run's
    // records), the second run's fills, and no storm in between.
    let state = EmbeddedStateStore::open(dir.join(STATE_FILE)).unwrap();
    let events = state
        .list_events(Timestamp::EPOCH, Timestamp::now(), 10_000)
        .await
        .unwrap();
    let resumed = events
        .iter()
        .position(|e| e.kind == RESUMED_EVENT)
        .unwrap_or_else(|| panic!("no {RESUMED_EVENT}: {events:#?}"));
    let launched = |events: &[nodefleet_ports::AuditEvent]| -> Vec<String> {
        let mut nodes: Vec<String> = events
            .iter()
            .filter(|e| e.kind == "reactor.launch")
            .map(|e| e.subject.clone())
            .collect();
        nodes.sort();
        nodes
    };
    assert_eq!(launched(&events[..resumed]), ids(&first));
    assert_eq!(launched(&events[resumed..]), ids(&first));
    let detail: Value = serde_json::from_str(&events[resumed].detail).unwrap();
    assert_eq!(
        detail["records_cleared"],
        serde_json::json!(ids(&first)),
        "{detail}"
    );
    assert_eq!(detail["config_updated"], false);
    assert!(detail["keys_forgotten"].as_u64().unwrap() >= 3, "{detail}");
    assert!(
        !events.iter().any(|e| e.kind.starts_with("reactor.alert")),
        "{events:#?}"
    );
}
