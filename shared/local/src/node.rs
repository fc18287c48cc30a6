//! What every local node shares: anvil's block time and chain id as the local fleet runs
//! it, how old its head may be, how long a node may take to start, and small JSON-RPC calls
//! to a node (its head for the start-up wait of tests and the head block of `nodefleet
//! status`; any method for `nodefleet chaos`), over a plain HTTP/1.1 exchange.
//!
//! # Error policy
//!
//! [`call_within`] says why a call gave no result ([`CallError`]: no answer in time, no
//! connection or a broken one, an answer that is not a JSON-RPC result, a JSON-RPC error);
//! none is retried here, the caller decides. [`block_number`] folds them into `None`.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

use crate::targets::exchange;

/// Block time of local nodes: anvil otherwise mines only on transactions, and a head that
/// never moves would look stalled to any freshness check.
pub const LOCAL_BLOCK_TIME_SECS: u32 = 1;
/// The chain id anvil uses by default; stated so every local node agrees.
pub const LOCAL_CHAIN_ID: u64 = 31_337;
/// The oldest a local node's head may be before the node is unhealthy: ten of anvil's
/// one-second blocks. The design's default (60 s, five 12-second slots) would let a local
/// node that stopped producing blocks serve a stale head for a minute; ten blocks is still
/// far more than a loaded two-core machine delays one anvil's mining, so a busy node does
/// not flap out of rotation, while a stalled one is seen within seconds.
pub const LOCAL_MAX_HEAD_AGE: Duration = Duration::from_secs(10);
/// How long a node may take to answer its first call: an agent hydrating a local snapshot
/// and starting anvil on it, or bare anvil, answers in well under a second, but a loaded CI
/// machine can be slow.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`block_number`] waits: far above a loopback round trip, and short enough for a
/// caller that waits on a node in a loop.
pub const BLOCK_NUMBER_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a call gave no result.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{method}: no answer from {addr} within {timeout:?}")]
    Timeout {
        method: String,
        addr: SocketAddr,
        timeout: Duration,
    },
    #[error("{method}: {addr}: {detail}")]
    Transport {
        method: String,
        addr: SocketAddr,
        detail: String,
    },
    #[error("{method}: {addr} answered HTTP {status}")]
    Status {
        method: String,
        addr: SocketAddr,
        status: u16,
    },
    #[error("{method}: {addr} gave no JSON-RPC result: {detail}")]
    Malformed {
        method: String,
        addr: SocketAddr,
        detail: String,
    },
    #[error("{method}: JSON-RPC error {code}: {message}")]
    Rpc {
        method: String,
        code: i64,
        message: String,
    },
}

/// Calls `method` with `params` on the node at `addr` (a `POST /` on a connection closed
/// after the answer) and returns its `result`, within `timeout`.
pub async fn call_within(
    addr: SocketAddr,
    method: &str,
    params: Value,
    timeout: Duration,
) -> Result<Value, CallError> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let method = method.to_owned();
    let response = match tokio::time::timeout(timeout, exchange(addr, request.as_bytes())).await {
        Err(_) => {
            return Err(CallError::Timeout {
                method,
                addr,
                timeout,
            });
        }
        Ok(Err(error)) => {
            return Err(CallError::Transport {
                method,
                addr,
                detail: error.to_string(),
            });
        }
        Ok(Ok(response)) => response,
    };
    if response.status != 200 {
        return Err(CallError::Status {
            method,
            addr,
            status: response.status,
        });
    }
    let answer: Value =
        serde_json::from_slice(&response.body).map_err(|e| CallError::Malformed {
            method: method.clone(),
            addr,
            detail: e.to_string(),
        })?;
    if let Some(error) = answer.get("error") {
        return Err(CallError::Rpc {
            method,
            code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: error
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| error.to_string(), str::to_owned),
        });
    }
    match answer.get("result") {
        Some(result) => Ok(result.clone()),
        None => Err(CallError::Malformed {
            method,
            addr,
            detail: "the answer has neither a result nor an error".to_owned(),
        }),
    }
}

/// Asks a node for its block number. `None` when it does not answer within
/// [`BLOCK_NUMBER_TIMEOUT`].
pub async fn block_number(addr: SocketAddr) -> Option<u64> {
    block_number_within(addr, BLOCK_NUMBER_TIMEOUT).await
}

/// [`block_number`] with its own time limit.
pub async fn block_number_within(addr: SocketAddr, timeout: Duration) -> Option<u64> {
    let result = call_within(addr, "eth_blockNumber", json!([]), timeout)
        .await
        .ok()?;
    let hex = result.as_str()?.strip_prefix("0x")?;
    u64::from_str_radix(hex, 16).ok()
}
