//! `nodefleet up`'s console, from the outside: the status API is the document
//! `nodefleet status --json` prints (same fields, same nodes and tasks), with the gateway's
//! traffic counted per second and the audit trail; the page is served; control requests
//! need their header, and the fleet answers them (or says why not) without reloading.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use http::Method;
use nodefleet_testkit::client::{post, request};
use serde_json::{Value, json};
use support::{all_healthy, interrupt, line_with, spawn_up, status, temp_dir, wait_status};

/// Bound of every wait on the fleet: it is up in a few seconds on an idle machine; this is
/// for a loaded two-core CI machine.
const WAIT: Duration = Duration::from_secs(60);
/// Reads sent through the gateway before the traffic is looked at.
const READS: usize = 50;

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

#[tokio::test]
async fn the_console_serves_the_status_document_the_page_events_traffic_and_guards_its_controls() {
    let dir = temp_dir("console", "api");
    let (mut up, mut lines) = spawn_up(&dir, 3);
    let gateway = line_with(&mut lines, "JSON-RPC at", WAIT * 2).await;
    let gateway = gateway.rsplit(' ').next().unwrap().to_owned();
    let page_line = line_with(&mut lines, "status page:", WAIT).await;
    let from_file = wait_status(&dir, "three healthy nodes", WAIT, |s| all_healthy(s, 3)).await;
    let console = from_file["console"].as_str().unwrap().to_owned();
    assert!(
        page_line.ends_with(&format!("{console}/")),
        "the banner names the page: {page_line}"
    );

    // The page: self-contained HTML that reads the status API.
    let page = request(Method::GET, &format!("{console}/"), "").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("/api/status"));

    // Traffic: reads through the gateway are counted in the current window.
    let read = json!({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []});
    for _ in 0..READS {
        let answer = post(&gateway, read.to_string()).await;
        assert!(answer.json()["result"].is_string(), "{}", answer.body);
    }

    // The API's status is the status command's document: same fields, nodes and tasks.
    let (code, stdout, _) = status(&dir, true).await;
    assert_eq!(code, 0);
    let from_command: Value = serde_json::from_str(&stdout).unwrap();
    let from_api = request(Method::GET, &format!("{console}/api/status"), "").await;
    assert_eq!(from_api.status, 200);
    let from_api = from_api.json();
    assert_eq!(keys(&from_api), keys(&from_command));
    assert_eq!(keys(&from_api["nodes"][0]), keys(&from_command["nodes"][0]));
    let tasks = |s: &Value| -> Vec<(String, String)> {
        s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["id"].as_str().unwrap().to_owned(),
                    n["task"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(tasks(&from_api), tasks(&from_command));
    for node in from_api["nodes"].as_array().unwrap() {
        assert!(node["head_block"].is_u64(), "{node}");
        assert!(node["lag_blocks"].is_u64(), "{node}");
    }
    let seconds = from_api["traffic"]["seconds"].as_array().unwrap();
    assert_eq!(seconds.len() as u64, from_api["traffic"]["window_secs"]);
    let counted: u64 = seconds
        .iter()
        .map(|s| s["requests"].as_u64().unwrap())
        .sum();
    assert!(
        counted >= READS as u64,
        "{counted} requests counted of {READS} sent"
    );
    assert!(seconds.iter().all(|s| s["errors"] == 0));
    assert!(
        seconds
            .iter()
            .any(|s| s["p99_ms"].as_f64().is_some_and(|p| p > 0.0))
    );

    // Events: the launches of the three nodes, newest first, in the status and the API.
    let events = request(Method::GET, &format!("{console}/api/events?limit=500"), "").await;
    assert_eq!(events.status, 200);
    let events = events.json()["events"].as_array().unwrap().clone();
    let launched: BTreeSet<&str> = events
        .iter()
        .filter(|e| e["kind"] == "reactor.launch")
        .map(|e| e["subject"].as_str().unwrap())
        .collect();
    assert_eq!(launched.len(), 3, "{events:#?}");
    let times: Vec<u64> = events.iter().map(|e| e["at"].as_u64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
    assert!(!from_api["events"].as_array().unwrap().is_empty());

    // Controls: refused without the header, refused with a reason when the fleet cannot.
    let bare = request(Method::POST, &format!("{console}/api/snapshot/round"), "").await;
    assert_eq!(bare.status, 403, "{}", bare.body);
    let answer =
        nodefleet_local::console::call(&console, Method::POST, "/api/snapshot/round").await;
    let error = answer.unwrap_err().to_string();
    assert!(error.contains("no snapshot updater"), "{error}");
    let unknown = request(Method::GET, &format!("{console}/api/nothing"), "").await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.json()["error"].is_string());

    interrupt(&mut up, WAIT).await;
    let gone = nodefleet_local::console::call(&console, Method::GET, "/api/status").await;
    assert!(gone.is_err(), "the console stops with up");
}
