//! `nodefleet up`'s console, from the outside: the status API is the document
//! `nodefleet status --json` prints (same fields, same nodes and tasks), with the gateway's
//! traffic counted per second and the audit trail; the page is served; control requests
//! need their header, and the fleet answers them (or says why not). The `--dir` commands
//! (`replace`, `snapshot round`, `events`) act on the running fleet through it.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use http::Method;
use nodefleet_testkit::client::{post, request};
use serde_json::{Value, json};
use support::{
    all_healthy, interrupt, line_with, run_in, spawn_up, spawn_up_with, status, temp_dir,
    wait_status,
};

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

#[tokio::test]
async fn the_dir_commands_replace_a_node_start_a_round_and_read_the_trail_through_the_console() {
    let dir = temp_dir("console", "commands");
    // An updater with one round at the start, none after it for an hour: the rounds here
    // are the ones the test asks for.
    let (mut up, _lines) = spawn_up_with(&dir, 3, &["--snapshot-interval-secs", "3600"]);
    let ready = wait_status(&dir, "three healthy nodes and a snapshot", WAIT, |s| {
        all_healthy(s, 3) && s["latest_snapshot"].is_string() && s["updater"].is_object()
    })
    .await;
    let first_snapshot = ready["latest_snapshot"].as_str().unwrap().to_owned();
    let old_task = ready["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "local-b-1")
        .unwrap()["task"]
        .as_str()
        .unwrap()
        .to_owned();

    // replace: a new task for local-b-1 under the reactor's key; the loop finishes it.
    let (code, stdout, stderr) = run_in(&dir, &["replace", "local-b-1", "--json"]).await;
    assert_eq!(code, 0, "{stderr}");
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["ok"], true, "{answer}");
    assert!(
        answer["key"]
            .as_str()
            .is_some_and(|k| k.starts_with(&format!("replace/local-b-1/{old_task}/"))),
        "the reactor's key shape: {answer}"
    );
    let replaced = wait_status(&dir, "local-b-1 healthy on a new task", WAIT, |s| {
        all_healthy(s, 3)
            && s["nodes"].as_array().unwrap().iter().any(|n| {
                n["id"] == "local-b-1" && n["task"].as_str().is_some_and(|t| t != old_task)
            })
    })
    .await;
    assert_eq!(replaced["nodes"].as_array().unwrap().len(), 3);

    // Refusals, one line each: an unknown node, the updater.
    let (code, _, stderr) = run_in(&dir, &["replace", "local-z-9"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("not one of the fleet's nodes"), "{stderr}");
    let updater = replaced["updater"]["id"].as_str().unwrap().to_owned();
    let (code, _, stderr) = run_in(&dir, &["replace", &updater]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("not a serving node"), "{stderr}");

    // snapshot round: a round starts now, and a newer snapshot is published.
    let (code, stdout, stderr) = run_in(&dir, &["snapshot", "round"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("round"), "{stdout}");
    wait_status(&dir, "a second snapshot published", WAIT, |s| {
        s["latest_snapshot"]
            .as_str()
            .is_some_and(|id| id != first_snapshot)
    })
    .await;

    // events: the trail has the replacement's launch and the round, newest first.
    let (code, stdout, stderr) =
        run_in(&dir, &["events", "--subject", "local-b-1", "--json"]).await;
    assert_eq!(code, 0, "{stderr}");
    let events: Value = serde_json::from_str(&stdout).unwrap();
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"reactor.launch"), "{kinds:?}");
    assert!(kinds.iter().all(|k| !k.is_empty()));
    let (code, stdout, stderr) = run_in(&dir, &["events", "--kind", "snapshot."]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("snapshot."), "{stdout}");

    interrupt(&mut up, WAIT).await;
    let (code, _, stderr) = run_in(&dir, &["events"]).await;
    assert_eq!(code, 1, "no up runs there any more");
    assert!(stderr.contains("no nodefleet up is running"), "{stderr}");
}
