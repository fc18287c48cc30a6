//! `nodefleet up` with its snapshot updater: a round runs by itself (a dedicated updater
//! node is launched, synced, quiesced, uploaded, verified, published, resumed), `nodefleet
//! status` shows the snapshot and the updater, the updater never takes gateway traffic, and a
//! killed serving node's replacement hydrates from the new snapshot: it serves a chain that
//! holds the snapshot's block with the snapshot's hash.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

mod support;

use std::time::Duration;

use nodefleet_local::FsObjectStore;
use nodefleet_snapshot::catalog;
use nodefleet_testkit::client::{KeepAliveClient, client, try_post};
use serde_json::{Value, json};
use support::{all_healthy, line_with, nodes, spawn_up_with, temp_dir, wait_status};

/// A round and a recovery each take seconds; this bounds them on a loaded two-core machine.
const WAIT: Duration = Duration::from_secs(120);

async fn block_hash(http: &KeepAliveClient, url: &str, number: u64) -> Option<String> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "eth_getBlockByNumber",
        "params": [format!("{number:#x}"), false]});
    let answer = try_post(http, url, body.to_string()).await.ok()?;
    let value: Value = serde_json::from_str(&answer.body).ok()?;
    value["result"]["hash"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_publishes_and_a_replacement_hydrates_from_it() {
    let dir = temp_dir("updater", "round");
    // One round at once, and no second one during the test.
    let (mut up, mut lines) = spawn_up_with(&dir, 3, &["--snapshot-interval-secs", "3600"]);
    let line = line_with(&mut lines, "JSON-RPC at", WAIT).await;
    let gateway = line.rsplit(' ').next().unwrap().to_owned();

    let published = wait_status(&dir, "a published snapshot", WAIT, |s| {
        all_healthy(s, 3) && s["latest_snapshot"].is_string() && s["updater"].is_object()
    })
    .await;
    let snapshot = published["latest_snapshot"].as_str().unwrap().to_owned();
    let entry = published["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == snapshot.as_str())
        .cloned()
        .unwrap();
    assert!(entry["bytes"].as_u64().unwrap() > 0, "{entry:#}");
    assert!(entry["uploaded_bytes"].as_u64().unwrap() > 0, "{entry:#}");
    // The updater is not a serving node and not in the gateway's routes.
    let updater = &published["updater"];
    assert!(
        nodes(&published).iter().all(|n| n["id"] != updater["id"]),
        "{published:#}"
    );

    // What the snapshot holds: its block and that block's hash, from the manifest.
    let store = FsObjectStore::open(dir.join("store")).unwrap();
    let latest = catalog::latest(&store).await.unwrap().unwrap();
    assert_eq!(latest.snapshot, snapshot);
    let manifest = catalog::read_manifest(&store, &snapshot).await.unwrap();
    let (block, hash) = (
        manifest.chain.block_height,
        manifest.chain.block_hash.clone(),
    );
    assert!(block > 0, "the updater's chain had blocks");
    assert_eq!(entry["block"].as_u64(), Some(block));

    // The serving nodes started before the snapshot existed: each is its own chain.
    let http = client();
    let victim = nodes(&published)[0].clone();
    let victim_id = victim["id"].as_str().unwrap().to_owned();
    let old_task = victim["task"].as_str().unwrap().to_owned();
    assert!(victim["snapshot_id"].is_null(), "{victim:#}");
    let killed = std::process::Command::new("kill")
        .args(["-9", &victim["pid"].as_u64().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let after = wait_status(&dir, "the killed node replaced", WAIT, |s| {
        all_healthy(s, 3)
            && nodes(s)
                .iter()
                .any(|n| n["id"] == victim_id.as_str() && n["task"] != old_task.as_str())
    })
    .await;
    let replacement = nodes(&after)
        .iter()
        .find(|n| n["id"] == victim_id.as_str())
        .unwrap();
    assert_eq!(
        replacement["snapshot_id"].as_str(),
        Some(snapshot.as_str()),
        "{replacement:#}"
    );
    let url = replacement["url"].as_str().unwrap();
    assert_eq!(
        block_hash(&http, url, block).await.as_deref(),
        Some(hash.as_str()),
        "the replacement serves the snapshot's chain"
    );
    // The gateway still answers (the updater is never behind it).
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []});
    let answer = try_post(&http, &gateway, body.to_string()).await.unwrap();
    assert!(answer.body.contains("result"), "{}", answer.body);

    // The round is in the updater's log.
    let log = std::fs::read_to_string(dir.join("reactor.log")).unwrap();
    assert!(
        log.contains("a snapshot was published"),
        "reactor.log lacks the round"
    );

    support::interrupt(&mut up, WAIT).await;
    let _ = std::fs::remove_dir_all(&dir);
}
