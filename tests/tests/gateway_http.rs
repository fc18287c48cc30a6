//! The gateway served over HTTP in front of a recording node: what reaches the node, how
//! upstream failures are answered, the HTTP-level rules (caps, methods, CORS) and retries.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Method;
use nodefleet_gateway::{Gateway, HttpUpstream, HttpUpstreamConfig, server};
use nodefleet_gateway_core::Policy;
use nodefleet_gateway_core::jsonrpc::codes;
use nodefleet_testkit::client::{post, request};
use nodefleet_testkit::{NodeBehaviour, RecordingNode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves a gateway for `upstream_url` and returns its URL.
async fn gateway(upstream_url: &str, policy: Policy, timeout: Duration) -> String {
    let config = HttpUpstreamConfig {
        timeout,
        ..Default::default()
    };
    let upstream = HttpUpstream::new(upstream_url, config).unwrap();
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(server::serve(
        listener,
        Arc::new(Gateway::new(policy, upstream)),
        std::future::pending(),
    ));
    url
}

async fn default_gateway(node: &RecordingNode) -> String {
    gateway(&node.url(), Policy::default(), Duration::from_secs(5)).await
}

#[tokio::test]
async fn denied_methods_never_reach_the_node_alone_or_in_a_batch() {
    let node = RecordingNode::start().await;
    let url = default_gateway(&node).await;
    let denied = [
        "admin_addPeer",
        "debug_traceTransaction",
        "personal_unlockAccount",
        "miner_start",
        "engine_newPayloadV3",
        "txpool_content",
        "eth_sendTransaction",
        "eth_sign",
        "eth_signTypedData_v4",
        "rpc_modules",
        "eth_newFilter",
        "trace_block",
        "ETH_CALL",
        "eth_call ",
        "unknown",
    ];
    for method in denied {
        let single = post(
            &url,
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":[]}}"#),
        )
        .await;
        assert_eq!(
            single.json()["error"]["code"],
            codes::METHOD_NOT_FOUND,
            "{method}"
        );
        assert!(
            single.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains(method.trim())
        );
        let notification = post(&url, format!(r#"{{"jsonrpc":"2.0","method":"{method}"}}"#)).await;
        assert_eq!(notification.status, 204, "{method}");
    }
    let batch: Vec<Value> = denied
        .iter()
        .enumerate()
        .flat_map(|(i, m)| {
            [
                json!({"jsonrpc":"2.0","id":i,"method":m,"params":[]}),
                json!({"jsonrpc":"2.0","id":format!("ok{i}"),"method":"eth_blockNumber","params":[]}),
            ]
        })
        .collect();
    let answer = post(&url, Value::Array(batch).to_string()).await;
    let items = answer.json();
    assert_eq!(items.as_array().unwrap().len(), denied.len() * 2);
    for (i, _) in denied.iter().enumerate() {
        assert_eq!(items[2 * i]["error"]["code"], codes::METHOD_NOT_FOUND);
        assert_eq!(
            items[2 * i + 1],
            json!({"jsonrpc":"2.0","id":format!("ok{i}"),"result":"0x10"})
        );
    }
    assert_eq!(
        node.methods(),
        vec!["eth_blockNumber"; denied.len()],
        "only the allowed calls"
    );
    assert_eq!(
        node.requests(),
        1,
        "the allowed items of a batch go up as one batch"
    );
}

#[tokio::test]
async fn http_rules_methods_cors_and_caps() {
    let node = RecordingNode::start().await;
    let policy = Policy::from_toml("[limits]\nmax_body_bytes = 1000\nmax_batch_items = 3").unwrap();
    let url = gateway(&node.url(), policy, Duration::from_secs(5)).await;

    let get = request(Method::GET, &url, "").await;
    assert_eq!(get.status, 405);
    assert_eq!(get.headers["allow"], "POST, OPTIONS");
    let preflight = request(Method::OPTIONS, &url, "").await;
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.headers["access-control-allow-origin"], "*");
    assert_eq!(
        preflight.headers["access-control-allow-methods"],
        "POST, OPTIONS"
    );
    let ok = post(&url, r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}"#).await;
    assert_eq!(ok.headers["access-control-allow-origin"], "*");
    assert_eq!(ok.headers["content-type"], "application/json");

    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"eth_call","params":["{}"]}}"#,
        "a".repeat(2000)
    );
    let too_large = post(&url, big).await;
    assert_eq!(too_large.status, 413);
    assert_eq!(too_large.json()["error"]["code"], codes::INVALID_REQUEST);

    let call = r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}"#;
    let batch = post(&url, format!("[{call},{call},{call},{call}]")).await;
    assert_eq!(batch.status, 413);
    assert!(
        batch.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cap of 3 items")
    );

    let parse_error = post(&url, "{not json").await;
    assert_eq!(
        (
            parse_error.status,
            parse_error.json()["error"]["code"].clone()
        ),
        (200, json!(codes::PARSE_ERROR))
    );
    assert_eq!(node.methods(), vec!["eth_chainId"]);
}

#[tokio::test]
async fn a_chunked_body_over_the_cap_is_refused() {
    let node = RecordingNode::start().await;
    let policy = Policy::from_toml("[limits]\nmax_body_bytes = 100").unwrap();
    let url = gateway(&node.url(), policy, Duration::from_secs(5)).await;
    let addr = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let chunk = "x".repeat(150);
    let raw = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    stream.write_all(raw.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert_eq!(node.requests(), 0);
}

#[tokio::test]
async fn upstream_failures_are_answered_with_documented_codes_and_no_address() {
    let node = RecordingNode::start().await;
    let url = gateway(&node.url(), Policy::default(), Duration::from_millis(300)).await;
    let call = r#"{"jsonrpc":"2.0","id":"x","method":"eth_blockNumber"}"#;

    node.set_behaviour(NodeBehaviour::Fixed {
        status: 502,
        body: "<html>Bad Gateway</html>".into(),
    });
    let garbage = post(&url, call).await.json();
    assert_eq!(
        (garbage["id"].clone(), garbage["error"]["code"].clone()),
        (json!("x"), json!(codes::UPSTREAM_INVALID_RESPONSE))
    );

    node.set_behaviour(NodeBehaviour::Slow {
        delay: Duration::from_secs(2),
    });
    let slow = post(&url, call).await.json();
    assert_eq!(slow["error"]["code"], codes::UPSTREAM_TIMEOUT);

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = gateway(
        &format!("http://127.0.0.1:{port}"),
        Policy::default(),
        Duration::from_secs(1),
    )
    .await;
    let unavailable = post(&dead, call).await;
    assert_eq!(
        unavailable.json()["error"]["code"],
        codes::UPSTREAM_UNAVAILABLE
    );
    for answer in [garbage.to_string(), slow.to_string(), unavailable.body] {
        assert!(
            !answer.contains("127.0.0.1") && !answer.contains(&port.to_string()),
            "{answer}"
        );
    }
}

/// A node whose first `drops` connections are closed as soon as a request arrives.
async fn flaky_node(drops: usize) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = connections.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let n = seen.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = stream.read(&mut buf).await;
                if n < drops {
                    return; // close without answering
                }
                let body = r#"{"jsonrpc":"2.0","id":0,"result":"0x10"}"#;
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    (url, connections)
}

#[tokio::test]
async fn a_read_is_retried_once_after_a_broken_connection_and_a_write_never() {
    let (node, connections) = flaky_node(1).await;
    let url = gateway(&node, Policy::default(), Duration::from_secs(5)).await;
    let read = post(
        &url,
        r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"}"#,
    )
    .await
    .json();
    assert_eq!(read["result"], "0x10");
    assert_eq!(connections.load(Ordering::SeqCst), 2);

    let (node, connections) = flaky_node(1).await;
    let url = gateway(&node, Policy::default(), Duration::from_secs(5)).await;
    let write = post(
        &url,
        r#"{"jsonrpc":"2.0","id":1,"method":"eth_sendRawTransaction","params":["0x02f8"]}"#,
    )
    .await
    .json();
    assert_eq!(write["error"]["code"], codes::UPSTREAM_UNAVAILABLE);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "eth_sendRawTransaction is never sent twice"
    );

    let (node, connections) = flaky_node(2).await;
    let url = gateway(&node, Policy::default(), Duration::from_secs(5)).await;
    let twice = post(
        &url,
        r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"}"#,
    )
    .await
    .json();
    assert_eq!(twice["error"]["code"], codes::UPSTREAM_UNAVAILABLE);
    assert_eq!(connections.load(Ordering::SeqCst), 2, "one retry, not more");
}

#[tokio::test]
async fn get_logs_tags_use_a_cached_head() {
    let node = RecordingNode::start().await; // head is 0x10 = 16
    let policy = Policy::from_toml("[limits]\nmax_get_logs_blocks = 10").unwrap();
    let url = gateway(&node.url(), policy, Duration::from_secs(5)).await;
    let logs = |from: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"eth_getLogs","params":[{{"fromBlock":"{from}"}}]}}"#
        )
    };
    assert_eq!(post(&url, logs("0x7")).await.json()["result"], Value::Null);
    let over = post(&url, logs("0x6")).await.json();
    assert_eq!(over["error"]["code"], codes::INVALID_PARAMS);
    assert!(
        over["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cap of 10 blocks")
    );
    assert_eq!(
        node.methods(),
        ["eth_blockNumber", "eth_getLogs"],
        "one head fetch serves both"
    );
}
