//! `GET /health` against a scripted fake node: 200 or 503 with the JSON reason for each way
//! a node can be unfit, the verdict following the node as it changes, and the cache that
//! keeps a flood of checks from flooding the node.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nodefleet_agent::health::Thresholds;
use nodefleet_agent::probe::RpcClient;
use nodefleet_agent::server::{HealthEndpoint, Server, serve};
use serde_json::json;
use support::{FakeNode, Script, get_json, listener, post_json};
use tokio::sync::oneshot;

/// A probe timeout short enough for the slow-node test.
const PROBE_TIMEOUT: Duration = Duration::from_millis(400);

/// Serves `/health` for the node at `node`; stops when the returned sender is dropped.
async fn health_server(
    node: SocketAddr,
    thresholds: Thresholds,
    ttl: Duration,
) -> (String, oneshot::Sender<()>) {
    let endpoint =
        HealthEndpoint::new(RpcClient::new(node, PROBE_TIMEOUT), thresholds).with_cache_ttl(ttl);
    let (listener, addr) = listener().await;
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(
        listener,
        Arc::new(Server::health_only(endpoint)),
        async {
            let _ = stopped.await;
        },
    ));
    (format!("http://{addr}"), stop)
}

#[tokio::test]
async fn a_synced_node_with_a_fresh_head_is_200() {
    let node = FakeNode::start(Script::default()).await;
    let (url, _stop) = health_server(node.addr, Thresholds::default(), Duration::ZERO).await;
    let (status, body) = get_json(&format!("{url}/health")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["healthy"], json!(true));
    assert_eq!(body["block"], json!(100));
    assert_eq!(body["peers"], json!(25));
    assert_eq!(body["syncing"], json!(false));
    assert!(body["head_age_secs"].as_u64().unwrap() <= 3, "{body}");
    assert!(body.get("reason").is_none(), "{body}");
}

#[tokio::test]
async fn every_unfit_node_is_503_with_its_reason() {
    let node = FakeNode::start(Script::default()).await;
    let thresholds = Thresholds {
        max_head_age: Duration::from_secs(60),
        min_peers: 3,
    };
    let (url, _stop) = health_server(node.addr, thresholds, Duration::ZERO).await;
    let url = format!("{url}/health");

    node.set(|s| s.head_age_secs = 75);
    let (status, body) = get_json(&url).await;
    assert_eq!(status, 503);
    assert_eq!(body["healthy"], json!(false));
    assert_eq!(body["reason"], json!("head is 75 s old (max 60 s)"));

    node.set(|s| {
        s.head_age_secs = 1;
        s.syncing = json!({"startingBlock": "0x0", "currentBlock": "0x10", "highestBlock": "0x20"});
    });
    let (status, body) = get_json(&url).await;
    assert_eq!(status, 503);
    assert_eq!(body["reason"], json!("syncing (block 16 of 32)"));
    assert_eq!(body["syncing"], json!(true));

    node.set(|s| {
        s.syncing = json!(false);
        s.peers = Some(2);
    });
    let (status, body) = get_json(&url).await;
    assert_eq!(status, 503);
    assert_eq!(body["reason"], json!("2 peers (min 3)"));

    // A client that does not answer net_peerCount is not judged on peers.
    node.set(|s| s.peers = None);
    let (status, body) = get_json(&url).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("peers").is_none(), "{body}");

    node.set(|s| s.broken = true);
    let (status, body) = get_json(&url).await;
    assert_eq!(status, 503);
    let reason = body["reason"].as_str().unwrap();
    assert!(reason.starts_with("RPC does not answer: "), "{reason}");
    assert!(reason.contains("HTTP 502"), "{reason}");

    node.set(|s| {
        s.broken = false;
        s.delay = Duration::from_secs(2);
    });
    let (status, body) = get_json(&url).await;
    assert_eq!(status, 503);
    let reason = body["reason"].as_str().unwrap();
    assert!(reason.contains("no answer within 400ms"), "{reason}");
}

#[tokio::test]
async fn a_node_that_is_not_there_is_503() {
    let nobody = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
    let (url, _stop) = health_server(nobody, Thresholds::default(), Duration::ZERO).await;
    let (status, body) = get_json(&format!("{url}/health")).await;
    assert_eq!(status, 503);
    let reason = body["reason"].as_str().unwrap();
    assert!(reason.starts_with("RPC does not answer: eth_"), "{reason}");
}

#[tokio::test]
async fn the_verdict_follows_the_node_once_the_cache_expires() {
    let node = FakeNode::start(Script::default()).await;
    // Long enough that the second check below surely falls within it on a loaded machine.
    let ttl = Duration::from_secs(2);
    let (url, _stop) = health_server(node.addr, Thresholds::default(), ttl).await;
    let url = format!("{url}/health");
    assert_eq!(get_json(&url).await.0, 200);

    node.set(|s| s.head_age_secs = 120);
    // Within the cache's life the old verdict stands...
    assert_eq!(get_json(&url).await.0, 200);
    // ...and after it, the node's new state shows.
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    let (status, body) = get_json(&url).await;
    assert_eq!(status, 503);
    assert_eq!(body["reason"], json!("head is 120 s old (max 60 s)"));

    node.set(|s| s.head_age_secs = 1);
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    assert_eq!(get_json(&url).await.0, 200);
}

/// The cache's life in the flood test: far longer than 50 loopback checks take even on a
/// loaded machine, so exactly one probe falls in it.
const FLOOD_TTL: Duration = Duration::from_secs(3);

#[tokio::test]
async fn a_flood_of_checks_probes_the_node_once_per_cache_life() {
    let node = FakeNode::start(Script {
        // A slow node: every check of the flood arrives while the first probe is in flight.
        delay: Duration::from_millis(100),
        ..Script::default()
    })
    .await;
    let (url, _stop) = health_server(node.addr, Thresholds::default(), FLOOD_TTL).await;
    let url = format!("{url}/health");
    let checks = (0..50).map(|_| get_json(&url));
    let answers = futures_util::future::join_all(checks).await;
    assert!(answers.iter().all(|(status, _)| *status == 200));
    // One probe: eth_syncing, eth_getBlockByNumber, net_peerCount.
    assert_eq!(node.requests(), 3);

    tokio::time::sleep(FLOOD_TTL + Duration::from_millis(100)).await;
    let answers = futures_util::future::join_all((0..20).map(|_| get_json(&url))).await;
    assert!(answers.iter().all(|(status, _)| *status == 200));
    assert_eq!(node.requests(), 6, "one more probe after the cache expired");
}

#[tokio::test]
async fn other_paths_and_methods_are_refused() {
    let node = FakeNode::start(Script::default()).await;
    let (url, _stop) = health_server(node.addr, Thresholds::default(), Duration::ZERO).await;
    // Without the updater role there is no control endpoint.
    let (status, body) = post_json(&format!("{url}/snapshot"), "").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], json!("not found"));
    let (status, _) = post_json(&format!("{url}/health"), "").await;
    assert_eq!(status, 405);
    let (status, _) = get_json(&format!("{url}/")).await;
    assert_eq!(status, 404);
    assert_eq!(node.requests(), 0, "nothing reached the node");
}
