//! The local balancer: round robin over nodes that answer, failover on a dead node, and the
//! write rule (a write that may have reached a node is never sent to another).

#![allow(clippy::unwrap_used)] // a test fails loudly by design

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use nodefleet_gateway::{HttpUpstreamConfig, LocalBalancer, Upstream, UpstreamCall, UpstreamError};
use nodefleet_testkit::RecordingNode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn read() -> UpstreamCall {
    UpstreamCall {
        body: Bytes::from_static(br#"{"jsonrpc":"2.0","id":0,"method":"eth_chainId"}"#),
        retryable: true,
    }
}

fn dead_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}")
}

#[tokio::test]
async fn calls_are_spread_over_the_nodes_that_answer() {
    let (a, b) = (RecordingNode::start().await, RecordingNode::start().await);
    let balancer = LocalBalancer::new(HttpUpstreamConfig::default());
    balancer
        .set_nodes(&[
            ("a".into(), a.url()),
            ("b".into(), b.url()),
            ("dead".into(), dead_url()),
        ])
        .unwrap();
    balancer.probe().await;
    let up: Vec<(String, bool)> = balancer
        .nodes()
        .into_iter()
        .map(|n| (n.name, n.up))
        .collect();
    assert_eq!(
        up,
        [
            ("a".into(), true),
            ("b".into(), true),
            ("dead".into(), false)
        ]
    );
    for _ in 0..10 {
        assert_eq!(balancer.send(read()).await.unwrap().status, 200);
    }
    // Probes count as requests too; the calls themselves alternate between a and b.
    assert_eq!(
        a.methods().iter().filter(|m| *m == "eth_chainId").count(),
        5
    );
    assert_eq!(
        b.methods().iter().filter(|m| *m == "eth_chainId").count(),
        5
    );
}

#[tokio::test]
async fn a_node_that_dies_is_skipped_without_a_failed_call() {
    let a = RecordingNode::start().await;
    let b = RecordingNode::start().await;
    let balancer = LocalBalancer::new(HttpUpstreamConfig::default());
    balancer
        .set_nodes(&[("a".into(), a.url()), ("b".into(), b.url())])
        .unwrap();
    balancer.probe().await;
    drop(a); // stops accepting connections
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    for _ in 0..6 {
        assert_eq!(balancer.send(read()).await.unwrap().status, 200);
    }
    assert!(
        !balancer.nodes()[0].up,
        "the dead node is marked down by live traffic"
    );
    // A write still goes to a live node when the dead one refuses the connection:
    // a refused connection means the write never left.
    let write = UpstreamCall {
        body: Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":0,"method":"eth_sendRawTransaction","params":["0x02"]}"#,
        ),
        retryable: false,
    };
    assert_eq!(balancer.send(write).await.unwrap().status, 200);
}

#[tokio::test]
async fn no_nodes_or_only_dead_ones_is_no_node_available() {
    let balancer = LocalBalancer::new(HttpUpstreamConfig::default());
    assert_eq!(
        balancer.send(read()).await.unwrap_err(),
        UpstreamError::NoNodeAvailable
    );
    balancer
        .set_nodes(&[("x".into(), dead_url()), ("y".into(), dead_url())])
        .unwrap();
    assert_eq!(
        balancer.send(read()).await.unwrap_err(),
        UpstreamError::NoNodeAvailable
    );
}

/// A node that answers the balancer's probe (`eth_blockNumber`) but takes every other call
/// and dies before answering it, what `kill -9` does to a call in flight: it reads the
/// request, then drops the connection. Counts the calls it took.
async fn dying_node() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let taken = Arc::new(AtomicUsize::new(0));
    let counter = taken.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                // One small request per read on loopback; keep-alive for the probes.
                while let Ok(n) = stream.read(&mut buffer).await {
                    if n == 0 {
                        return;
                    }
                    let request = String::from_utf8_lossy(&buffer[..n]);
                    if !request.contains("eth_blockNumber") {
                        counter.fetch_add(1, Ordering::SeqCst);
                        return; // dropped without an answer
                    }
                    let body = r#"{"jsonrpc":"2.0","id":0,"result":"0x1"}"#;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, taken)
}

fn count(node: &RecordingNode, method: &str) -> usize {
    node.methods().iter().filter(|m| *m == method).count()
}

#[tokio::test]
async fn a_read_cut_off_mid_request_is_answered_by_another_node_and_a_write_is_not_resent() {
    let (dying, taken) = dying_node().await;
    let healthy = RecordingNode::start().await;
    let balancer = LocalBalancer::new(HttpUpstreamConfig::default());
    balancer
        .set_nodes(&[("dying".into(), dying), ("healthy".into(), healthy.url())])
        .unwrap();

    // Each round, both nodes pass the probe (so both are up) and round robin starts at the
    // next one: half the reads go to the dying node first, and every read succeeds.
    for round in 0..6 {
        balancer.probe().await;
        assert!(balancer.nodes().iter().all(|n| n.up), "round {round}");
        assert_eq!(balancer.send(read()).await.unwrap().status, 200);
    }
    assert_eq!(
        taken.load(Ordering::SeqCst),
        3,
        "the dying node took half the reads"
    );
    assert_eq!(
        count(&healthy, "eth_chainId"),
        6,
        "the healthy node answered them all"
    );

    // A write the dying node took is lost, never sent on: a duplicate submission is worse.
    let write = UpstreamCall {
        body: Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":0,"method":"eth_sendRawTransaction","params":["0x02"]}"#,
        ),
        retryable: false,
    };
    let mut lost = 0;
    for _ in 0..6 {
        balancer.probe().await;
        match balancer.send(write.clone()).await {
            Err(UpstreamError::ConnectionLost) => lost += 1,
            Ok(answer) => assert_eq!(answer.status, 200),
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(lost, 3);
    assert_eq!(taken.load(Ordering::SeqCst), 6);
    assert_eq!(
        count(&healthy, "eth_sendRawTransaction"),
        3,
        "each write reached exactly one node"
    );
}
