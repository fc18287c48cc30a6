//! `nodefleet up` on a fleet folder whose store holds a published snapshot of a real anvil
//! chain: every node is a node agent that hydrates that snapshot before it starts anvil, so
//! all of them answer for the snapshot's block with the snapshot's block hash (a new chain
//! would have its own), `nodefleet status` names the snapshot as the latest and as every
//! node's, and Ctrl-C stops every agent and its anvil and leaves the store in place.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

mod support;

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nodefleet_local::FsObjectStore;
use nodefleet_local::node::LOCAL_CHAIN_ID;
use nodefleet_ports::{ObjectStore, Timestamp};
use nodefleet_snapshot::catalog;
use nodefleet_snapshot::create::{CreateOptions, create};
use nodefleet_snapshot::format::{ChainPoint, manifest_key};
use nodefleet_snapshot::profile;
use nodefleet_snapshot::progress::NoProgress;
use nodefleet_testkit::anvil;
use nodefleet_testkit::client::{KeepAliveClient, client, try_post};
use serde_json::{Value, json};
use support::{alive, all_healthy, children, line_with, nodes, spawn_up, status, wait_status};

/// Bound of every wait (anvil's start, the fleet's start, a stop): each takes about a second;
/// this is for a loaded two-core CI machine.
const WAIT: Duration = Duration::from_secs(60);
/// The block the source chain must reach before it is snapshotted: a few blocks of history
/// (anvil mines one a second), so the snapshot's block is not the genesis every new chain
/// shares.
const SOURCE_BLOCKS: u64 = 3;
/// Reads of the snapshot's block through the gateway: twice the node count, so the balancer
/// spreads them over the nodes.
const GATEWAY_READS: usize = 6;

/// One JSON-RPC call's `result`; `None` when the node does not answer or answers an error.
async fn call(http: &KeepAliveClient, url: &str, method: &str, params: Value) -> Option<Value> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let answer = try_post(http, url, body.to_string()).await.ok()?;
    let value: Value = serde_json::from_str(&answer.body).ok()?;
    value.get("result").cloned()
}

/// The hash of block `number` as the node at `url` has it.
async fn block_hash(http: &KeepAliveClient, url: &str, number: u64) -> Option<String> {
    let block = call(
        http,
        url,
        "eth_getBlockByNumber",
        json!([format!("{number:#x}"), false]),
    )
    .await?;
    block.get("hash")?.as_str().map(str::to_owned)
}

fn hex_number(value: &Value) -> u64 {
    u64::from_str_radix(value.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

/// What the source chain was snapshotted at.
#[derive(Debug)]
struct Source {
    block: u64,
    hash: String,
    client_version: String,
}

/// Runs anvil with its state in `data_dir` until it has mined [`SOURCE_BLOCKS`] blocks,
/// reads its head block's number and hash, and stops it with SIGTERM, on which anvil writes
/// its state (blocks included) to `state.json`.
async fn run_source_chain(data_dir: &Path) -> Source {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut anvil = tokio::process::Command::new(anvil::binary())
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .arg("--state")
        .arg(data_dir.join("state.json"))
        .args([
            "--block-time",
            "1",
            "--chain-id",
            &LOCAL_CHAIN_ID.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let http = client();
    let deadline = Instant::now() + WAIT;
    let block = loop {
        let head = call(&http, &url, "eth_blockNumber", json!([])).await;
        if let Some(head) = head.as_ref().map(hex_number)
            && head >= SOURCE_BLOCKS
        {
            break head;
        }
        assert!(
            Instant::now() < deadline,
            "anvil never reached block {SOURCE_BLOCKS}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let hash = block_hash(&http, &url, block).await.unwrap();
    let client_version = call(&http, &url, "web3_clientVersion", json!([]))
        .await
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap();
    let pid = i32::try_from(anvil.id().unwrap()).unwrap();
    #[allow(unsafe_code)] // sending a signal to our own child
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let exit = tokio::time::timeout(WAIT, anvil.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "anvil stopped cleanly: {exit}");
    assert!(
        data_dir.join("state.json").is_file(),
        "anvil wrote its state"
    );
    Source {
        block,
        hash,
        client_version,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_hydrate_the_published_snapshot_and_status_names_it() {
    let scratch = support::temp_dir("up-snapshot", "hydrate");
    let (source_dir, fleet) = (scratch.join("source"), scratch.join("fleet"));
    std::fs::create_dir_all(&source_dir).unwrap();

    // A real chain, stopped, snapshotted into the fleet folder's store and published.
    let source = run_source_chain(&source_dir).await;
    let store: Arc<dyn ObjectStore> = Arc::new(FsObjectStore::open(fleet.join("store")).unwrap());
    let options = CreateOptions {
        profile: &profile::ANVIL,
        chain: ChainPoint {
            client: "anvil".into(),
            client_version: source.client_version.clone(),
            chain_id: LOCAL_CHAIN_ID,
            block_height: source.block,
            block_hash: source.hash.clone(),
        },
        concurrency: 2,
        now_ms: Timestamp::now().as_millis(),
        publish: true,
    };
    let made = create(store.clone(), &source_dir, &options, Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(made.published_generation, Some(1));
    let snapshot = made.snapshot.clone();

    // No updater (spawn_up turns it off): the snapshot made here must stay the latest one.
    let (mut up, mut lines) = spawn_up(&fleet, 3);
    let line = line_with(&mut lines, "JSON-RPC at", WAIT * 2).await;
    let gateway = line.rsplit(' ').next().unwrap().to_owned();
    let hydrated = line_with(&mut lines, "hydrated from snapshot", WAIT).await;
    assert!(hydrated.contains(&snapshot), "{hydrated}");

    let up_status = wait_status(&fleet, "three healthy nodes on the snapshot", WAIT, |s| {
        all_healthy(s, 3)
            && nodes(s)
                .iter()
                .all(|n| n["snapshot_id"] == snapshot.as_str())
    })
    .await;
    assert_eq!(up_status["latest_snapshot"], snapshot.as_str());
    assert_eq!(
        up_status["snapshots"],
        json!([{
            "id": snapshot,
            "block": source.block,
            "created_at": options.now_ms,
            "bytes": made.bytes_total,
            "uploaded_bytes": 0,
            "state": "published",
        }]),
        "the store's latest, re-seeded into the fresh catalog"
    );
    assert!(up_status["updater"].is_null(), "{up_status:#}");

    // Every node has the snapshot's history: its block, by the snapshot's hash.
    let http = client();
    for node in nodes(&up_status) {
        let url = node["url"].as_str().unwrap();
        assert!(
            node["head_block"].as_u64().unwrap() >= source.block,
            "{node}"
        );
        assert_eq!(
            block_hash(&http, url, source.block).await.as_deref(),
            Some(source.hash.as_str()),
            "node {} does not have the snapshot's block {}",
            node["id"],
            source.block
        );
    }
    for read in 0..GATEWAY_READS {
        assert_eq!(
            block_hash(&http, &gateway, source.block).await.as_deref(),
            Some(source.hash.as_str()),
            "gateway read {read}"
        );
    }
    let (code, table, stderr) = status(&fleet, false).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        table.contains(&format!(
            "latest snapshot {snapshot}: block {}",
            source.block
        )),
        "{table}"
    );

    // Ctrl-C stops every agent and the anvil each one runs.
    let agents: Vec<u64> = nodes(&up_status)
        .iter()
        .map(|n| n["pid"].as_u64().unwrap())
        .collect();
    let clients: Vec<u64> = agents.iter().flat_map(|&pid| children(pid)).collect();
    assert_eq!(
        clients.len(),
        agents.len(),
        "one anvil per agent: {clients:?}"
    );
    support::interrupt(&mut up, WAIT).await;
    for pid in agents.iter().chain(&clients) {
        assert!(!alive(*pid), "process {pid} left behind");
    }

    // The store outlives the run, its snapshot still published for the next one.
    let latest = catalog::latest(store.as_ref()).await.unwrap().unwrap();
    assert_eq!(latest.snapshot, snapshot);
    assert!(fleet.join("store").join(manifest_key(&snapshot)).is_file());
    let _ = std::fs::remove_dir_all(&scratch);
}
