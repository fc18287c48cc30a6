//! The upstream HTTP/1.1 client against scripted servers: every body framing a JSON-RPC
//! server may use, interim answers, closed and stale keep-alive connections, and the caps.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use nodefleet_gateway::{HttpUpstream, HttpUpstreamConfig, Upstream, UpstreamCall, UpstreamError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A server that answers every request on a connection with `answer(n)` (n counts requests
/// over all connections), and counts connections. `close_after` closes a connection after
/// that many answers.
async fn scripted(
    answer: impl Fn(usize) -> Vec<u8> + Send + Sync + 'static,
    close_after: usize,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/rpc", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let (seen, answer) = (connections.clone(), Arc::new(answer));
    let requests = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            seen.fetch_add(1, Ordering::SeqCst);
            let (answer, requests) = (answer.clone(), requests.clone());
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                for _ in 0..close_after {
                    // Read one request: headers, then Content-Length bytes.
                    let body_start = loop {
                        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                            break end + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        let n = stream.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buffer.extend_from_slice(&chunk[..n]);
                    };
                    let head = String::from_utf8_lossy(&buffer[..body_start]).to_lowercase();
                    assert!(head.starts_with("post /rpc http/1.1\r\n"), "{head}");
                    assert!(head.contains("content-type: application/json"), "{head}");
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .unwrap()
                        .trim()
                        .parse()
                        .unwrap();
                    while buffer.len() < body_start + length {
                        let mut chunk = [0u8; 4096];
                        let n = stream.read(&mut chunk).await.unwrap();
                        buffer.extend_from_slice(&chunk[..n]);
                    }
                    buffer.drain(..body_start + length);
                    let n = requests.fetch_add(1, Ordering::SeqCst);
                    stream.write_all(&answer(n)).await.unwrap();
                }
            });
        }
    });
    (url, connections)
}

fn call() -> UpstreamCall {
    UpstreamCall {
        body: Bytes::from_static(br#"{"jsonrpc":"2.0","id":0,"method":"eth_chainId"}"#),
        retryable: true,
    }
}

fn upstream(url: &str, max_response_bytes: usize) -> HttpUpstream {
    let config = HttpUpstreamConfig {
        timeout: Duration::from_secs(5),
        max_response_bytes,
    };
    HttpUpstream::new(url, config).unwrap()
}

const BODY: &str = r#"{"jsonrpc":"2.0","id":0,"result":"0x1"}"#;

fn with_length(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn content_length_answers_reuse_one_connection() {
    let (url, connections) = scripted(|_| with_length(BODY), usize::MAX).await;
    let upstream = upstream(&url, 1 << 20);
    for _ in 0..20 {
        let answer = upstream.send(call()).await.unwrap();
        assert_eq!(
            (answer.status, answer.body.as_ref()),
            (200, BODY.as_bytes())
        );
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn chunked_answers_with_extensions_and_trailers() {
    let chunked = |_| {
        let (a, b) = BODY.split_at(10);
        format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x};ext=1\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\nx-trailer: 1\r\n\r\n",
            a.len(),
            b.len()
        )
        .into_bytes()
    };
    let (url, connections) = scripted(chunked, usize::MAX).await;
    let upstream = upstream(&url, 1 << 20);
    for _ in 0..3 {
        assert_eq!(
            upstream.send(call()).await.unwrap().body.as_ref(),
            BODY.as_bytes()
        );
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "chunked answers keep the connection"
    );
}

#[tokio::test]
async fn interim_answers_are_skipped_and_close_delimited_bodies_read_to_the_end() {
    let answer = |_| {
        format!("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n\r\n{BODY}").into_bytes()
    };
    let (url, connections) = scripted(answer, 1).await;
    let upstream = upstream(&url, 1 << 20);
    for _ in 0..2 {
        let answer = upstream.send(call()).await.unwrap();
        assert_eq!(
            (answer.status, answer.body.as_ref()),
            (502, BODY.as_bytes())
        );
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        2,
        "a closed connection is not reused"
    );
}

#[tokio::test]
async fn a_connection_the_server_closed_while_idle_is_not_used() {
    // The server answers once per connection, then closes it: the next call must see the
    // close before sending (no failed call, and a write is never sent into a dead socket).
    let (url, connections) = scripted(|_| with_length(BODY), 1).await;
    let upstream = upstream(&url, 1 << 20);
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(20)).await; // let the close arrive
        let write = UpstreamCall {
            retryable: false,
            ..call()
        };
        assert_eq!(upstream.send(write).await.unwrap().status, 200);
    }
    assert_eq!(connections.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn answers_over_the_cap_and_garbage_are_errors() {
    let big = format!(r#"{{"result":"{}"}}"#, "a".repeat(2_000));
    let (url, _) = scripted(move |_| with_length(&big), usize::MAX).await;
    assert_eq!(
        upstream(&url, 1_000).send(call()).await.unwrap_err(),
        UpstreamError::ResponseTooLarge
    );

    let (url, _) = scripted(|_| b"SSH-2.0-OpenSSH_9.6\r\n\r\n".to_vec(), 1).await;
    assert_eq!(
        upstream(&url, 1 << 20).send(call()).await.unwrap_err(),
        UpstreamError::ConnectionLost
    );
}
