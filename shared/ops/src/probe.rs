//! Asking nodes for their head block: the seam [`HeadProbe`] (one `eth_blockNumber` per
//! URL within a time limit), its real implementation [`RpcHeadProbe`] (JSON-RPC over plain
//! HTTP/1.1, as the nodes serve it behind the load balancer), and [`probe_all`], which asks
//! every node at once so a status costs one timeout, not one per node.
//!
//! # Error policy
//!
//! None: a node that cannot be reached, answers late, answers an error or something that
//! is not a block number, has no head (`None`). On AWS that is the usual answer from an
//! operator's machine, since the nodes listen on private addresses in the VPC.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The time each node gets to answer when the caller has no reason to choose: an answer
/// inside a VPC takes milliseconds, and `nodefleet status` must answer at once even when
/// every node is out of reach.
pub const DEFAULT_HEAD_TIMEOUT: Duration = Duration::from_secs(1);

/// Answers larger than this are not a block number: read no further.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Asks one node for its head block.
#[async_trait]
pub trait HeadProbe: Send + Sync {
    /// `eth_blockNumber` of the node at `url` (`http://host:port`), or `None` if it does not
    /// answer one within `timeout`.
    async fn head_block(&self, url: &str, timeout: Duration) -> Option<u64>;
}

/// Every URL's head, in order, asked concurrently.
pub async fn probe_all(
    probe: &dyn HeadProbe,
    urls: &[String],
    timeout: Duration,
) -> Vec<Option<u64>> {
    futures_util::future::join_all(urls.iter().map(|url| probe.head_block(url, timeout))).await
}

/// `eth_blockNumber` as a JSON-RPC POST over HTTP/1.1, one connection per call.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcHeadProbe;

#[async_trait]
impl HeadProbe for RpcHeadProbe {
    async fn head_block(&self, url: &str, timeout: Duration) -> Option<u64> {
        tokio::time::timeout(timeout, block_number(url))
            .await
            .ok()
            .flatten()
    }
}

async fn block_number(url: &str) -> Option<u64> {
    let uri: http::Uri = url.parse().ok()?;
    if uri.scheme_str() != Some("http") {
        return None;
    }
    let authority = uri.authority()?.clone();
    let port = authority.port_u16().unwrap_or(80);
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let stream = TcpStream::connect((host, port)).await.ok()?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    let driver = tokio::spawn(connection);
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#;
    let request = http::Request::post("/")
        .header(http::header::HOST, authority.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .ok()?;
    let answer = async {
        let response = sender.send_request(request).await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let limited = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES);
        let bytes = limited.collect().await.ok()?.to_bytes();
        parse_block_number(&bytes)
    }
    .await;
    driver.abort();
    answer
}

/// The block number in a JSON-RPC answer (`{"result":"0x2a"}` is 42).
pub fn parse_block_number(answer: &[u8]) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_slice(answer).ok()?;
    let hex = value.get("result")?.as_str()?.strip_prefix("0x")?;
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_numbers_parse_from_json_rpc_answers() {
        assert_eq!(
            parse_block_number(br#"{"jsonrpc":"2.0","id":1,"result":"0x2a"}"#),
            Some(42)
        );
        assert_eq!(parse_block_number(br#"{"result":"0x0"}"#), Some(0));
        for bad in [
            &br#"{"error":{"code":-32601,"message":"no"}}"#[..],
            br#"{"result":"42"}"#,
            br#"{"result":"0xzz"}"#,
            b"not json",
        ] {
            assert_eq!(parse_block_number(bad), None);
        }
    }
}
