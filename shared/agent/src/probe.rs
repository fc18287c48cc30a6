//! The JSON-RPC probe: asks the node what [`crate::health::judge`] needs, over HTTP.
//!
//! [`RpcClient`] is a small JSON-RPC 2.0 client on hyper's pooled HTTP/1.1 client: one
//! `POST` per call, keep-alive connections reused between probes (the health endpoint may
//! be asked every few seconds by several load balancer nodes). Every call has its own
//! timeout ([`PROBE_TIMEOUT`] by default), and [`RpcClient::observe`] makes its three calls
//! concurrently, so a probe takes at most one timeout however the node misbehaves.
//!
//! [`RpcClient::observe`] turns the answers into an [`Observation`]: `eth_syncing` and
//! `eth_getBlockByNumber("latest", false)` are required (any failure makes the node
//! `Unreachable`, with the reason); `net_peerCount` is optional (a client that does not
//! answer it, like anvil, is not judged on peers). [`RpcClient::chain_point`] reads what a
//! snapshot manifest records about the chain (client version, chain id, head number and
//! hash).
//!
//! Quantities are accepted as `0x` hex strings (the JSON-RPC spec) or plain JSON numbers
//! (which some clients send for `net_peerCount`).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use nodefleet_snapshot::format::ChainPoint;
use serde_json::{Value, json};

use crate::health::{HeadBlock, NodeStatus, Observation, SyncState};

/// How long one call may take. Far above a loopback round trip for a healthy node; short
/// enough that `/health` answers well within a load balancer's check timeout (NLB: 6 s for
/// HTTP checks by default, 2 s at the lowest setting, hence below 2 s with the agent's own
/// work on top).
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);
/// The most of an answer that is read. `eth_getBlockByNumber(.., false)` lists transaction
/// hashes only: a full mainnet block is ~1,500 hashes, ~110 KB; 4 MiB leaves room for any
/// chain while keeping a misbehaving node from filling memory.
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;
/// Idle connections kept per node: enough for the probe's three concurrent calls.
const IDLE_CONNECTIONS: usize = 4;

/// Why a call gave no usable result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("{method}: no answer within {timeout:?}")]
    Timeout { method: String, timeout: Duration },
    #[error("{method}: {detail}")]
    Transport { method: String, detail: String },
    #[error("{method}: HTTP {status}")]
    Status { method: String, status: u16 },
    #[error("{method}: not a usable answer: {detail}")]
    Malformed { method: String, detail: String },
    #[error("{method}: JSON-RPC error {code}: {message}")]
    Rpc {
        method: String,
        code: i64,
        message: String,
    },
}

/// A JSON-RPC client for one node.
#[derive(Debug, Clone)]
pub struct RpcClient {
    uri: http::Uri,
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl RpcClient {
    /// A client for the node at `addr`, each call bounded by `timeout`.
    pub fn new(addr: SocketAddr, timeout: Duration) -> RpcClient {
        let uri = http::Uri::builder()
            .scheme("http")
            .authority(addr.to_string())
            .path_and_query("/")
            .build()
            .unwrap_or_else(|_| http::Uri::from_static("http://127.0.0.1/"));
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(IDLE_CONNECTIONS)
            .build(connector);
        RpcClient {
            uri,
            client,
            timeout,
        }
    }

    /// The node's URL.
    pub fn uri(&self) -> &http::Uri {
        &self.uri
    }

    /// One JSON-RPC call; its `result` (which may be `null`).
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, ProbeError> {
        match tokio::time::timeout(self.timeout, self.exchange(method, params)).await {
            Ok(result) => result,
            Err(_) => Err(ProbeError::Timeout {
                method: method.to_owned(),
                timeout: self.timeout,
            }),
        }
    }

    async fn exchange(&self, method: &str, params: Value) -> Result<Value, ProbeError> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let malformed = |detail: String| ProbeError::Malformed {
            method: method.to_owned(),
            detail,
        };
        let request = http::Request::post(self.uri.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| malformed(format!("cannot build the request: {e}")))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| ProbeError::Transport {
                method: method.to_owned(),
                detail: describe_chain(&e),
            })?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| ProbeError::Transport {
                method: method.to_owned(),
                detail: format!("reading the answer: {e}"),
            })?
            .to_bytes();
        let answer: Value = match serde_json::from_slice(&bytes) {
            Ok(answer) => answer,
            Err(_) if !status.is_success() => {
                return Err(ProbeError::Status {
                    method: method.to_owned(),
                    status: status.as_u16(),
                });
            }
            Err(e) => return Err(malformed(format!("not JSON ({e})"))),
        };
        if let Some(error) = answer.get("error").filter(|e| !e.is_null()) {
            return Err(ProbeError::Rpc {
                method: method.to_owned(),
                code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: error
                    .get("message")
                    .and_then(Value::as_str)
                    .map_or_else(|| error.to_string(), str::to_owned),
            });
        }
        if !status.is_success() {
            return Err(ProbeError::Status {
                method: method.to_owned(),
                status: status.as_u16(),
            });
        }
        match answer {
            Value::Object(mut fields) => fields
                .remove("result")
                .ok_or_else(|| malformed("no result and no error".to_owned())),
            other => Err(malformed(format!("not a JSON-RPC object: {other}"))),
        }
    }

    /// Asks the node for its sync state, head and peers (see the module doc).
    pub async fn observe(&self) -> Observation {
        let (syncing, head, peers) = tokio::join!(
            self.call("eth_syncing", json!([])),
            self.call("eth_getBlockByNumber", json!(["latest", false])),
            self.call("net_peerCount", json!([])),
        );
        let status = syncing.and_then(|s| parse_syncing(&s)).and_then(|syncing| {
            let head = parse_head(&head?)?;
            let peers = peers.ok().and_then(|p| quantity(&p));
            Ok(NodeStatus {
                syncing,
                head,
                peers,
            })
        });
        match status {
            Ok(status) => Observation::Answered(status),
            Err(error) => Observation::Unreachable {
                error: error.to_string(),
            },
        }
    }

    /// What a snapshot of this node records about the chain; `client` is the profile name.
    pub async fn chain_point(&self, client: &str) -> Result<ChainPoint, ProbeError> {
        let (version, chain_id, head) = tokio::join!(
            self.call("web3_clientVersion", json!([])),
            self.call("eth_chainId", json!([])),
            self.call("eth_getBlockByNumber", json!(["latest", false])),
        );
        let version = version?;
        let client_version = version
            .as_str()
            .ok_or_else(|| ProbeError::Malformed {
                method: "web3_clientVersion".to_owned(),
                detail: format!("not a string: {version}"),
            })?
            .to_owned();
        let chain_id = chain_id?;
        let chain_id = quantity(&chain_id).ok_or_else(|| ProbeError::Malformed {
            method: "eth_chainId".to_owned(),
            detail: format!("not a quantity: {chain_id}"),
        })?;
        let head = head?;
        let number = parse_head(&head)?.number;
        let hash = head
            .get("hash")
            .and_then(Value::as_str)
            .ok_or_else(|| ProbeError::Malformed {
                method: "eth_getBlockByNumber".to_owned(),
                detail: "the latest block has no hash".to_owned(),
            })?
            .to_owned();
        Ok(ChainPoint {
            client: client.to_owned(),
            client_version,
            chain_id,
            block_height: number,
            block_hash: hash,
        })
    }
}

/// `eth_syncing`: `false`, `true` (some clients), or a progress object.
fn parse_syncing(value: &Value) -> Result<SyncState, ProbeError> {
    match value {
        Value::Bool(false) => Ok(SyncState::NotSyncing),
        Value::Bool(true) => Ok(SyncState::Syncing {
            current: None,
            highest: None,
        }),
        Value::Object(progress) => Ok(SyncState::Syncing {
            current: progress.get("currentBlock").and_then(quantity),
            highest: progress.get("highestBlock").and_then(quantity),
        }),
        other => Err(ProbeError::Malformed {
            method: "eth_syncing".to_owned(),
            detail: format!("neither false nor an object: {other}"),
        }),
    }
}

/// The latest block's number and timestamp.
fn parse_head(value: &Value) -> Result<HeadBlock, ProbeError> {
    let malformed = |detail: String| ProbeError::Malformed {
        method: "eth_getBlockByNumber".to_owned(),
        detail,
    };
    if value.is_null() {
        return Err(malformed("the node has no latest block".to_owned()));
    }
    let field = |name: &str| {
        value
            .get(name)
            .and_then(quantity)
            .ok_or_else(|| malformed(format!("the latest block has no {name}")))
    };
    Ok(HeadBlock {
        number: field("number")?,
        timestamp: field("timestamp")?,
    })
}

/// A JSON-RPC quantity: `"0x1a"`, or a plain number.
pub fn quantity(value: &Value) -> Option<u64> {
    match value {
        Value::String(text) => {
            let digits = text.strip_prefix("0x")?;
            if digits.is_empty() {
                return None;
            }
            u64::from_str_radix(digits, 16).ok()
        }
        Value::Number(number) => number.as_u64(),
        _ => None,
    }
}

/// An error and its sources on one line (hyper's top-level message alone says little:
/// "client error (Connect)").
fn describe_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_hex_strings_or_numbers() {
        assert_eq!(quantity(&json!("0x1a")), Some(26));
        assert_eq!(quantity(&json!("0x0")), Some(0));
        assert_eq!(quantity(&json!(7)), Some(7));
        assert_eq!(quantity(&json!("0x")), None);
        assert_eq!(quantity(&json!("12")), None);
        assert_eq!(quantity(&json!("0xzz")), None);
        assert_eq!(quantity(&json!(null)), None);
    }

    #[test]
    fn eth_syncing_is_false_or_an_object() {
        assert_eq!(
            parse_syncing(&json!(false)).unwrap_or(SyncState::Syncing {
                current: None,
                highest: None
            }),
            SyncState::NotSyncing
        );
        assert_eq!(
            parse_syncing(
                &json!({"startingBlock":"0x0","currentBlock":"0x64","highestBlock":"0xc8"})
            )
            .ok(),
            Some(SyncState::Syncing {
                current: Some(100),
                highest: Some(200)
            })
        );
        assert!(parse_syncing(&json!("nope")).is_err());
    }

    #[test]
    fn a_missing_head_is_malformed() {
        assert!(parse_head(&json!(null)).is_err());
        assert!(parse_head(&json!({"number":"0x1"})).is_err());
        assert_eq!(
            parse_head(&json!({"number":"0x10","timestamp":"0x20"})).ok(),
            Some(HeadBlock {
                number: 16,
                timestamp: 32
            })
        );
    }
}
