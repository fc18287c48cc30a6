//! The local balancer: round robin over nodes that answer, failover on a dead node, and the
//! write rule (a write that may have reached a node is never sent to another).

#![allow(clippy::unwrap_used)] // a test fails loudly by design

use bytes::Bytes;
use nodefleet_gateway::{HttpUpstreamConfig, LocalBalancer, Upstream, UpstreamCall, UpstreamError};
use nodefleet_testkit::RecordingNode;

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
