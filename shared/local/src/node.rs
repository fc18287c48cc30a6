//! What every local node shares: anvil's block time and chain id as the local fleet runs
//! it, how long a node may take to start, and a bare `eth_blockNumber` call to ask a node
//! for its head (the start-up wait of tests, the head block of `nodefleet status`).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Block time of local nodes: anvil otherwise mines only on transactions, and a head that
/// never moves would look stalled to any freshness check.
pub const LOCAL_BLOCK_TIME_SECS: u32 = 1;
/// The chain id anvil uses by default; stated so every local node agrees.
pub const LOCAL_CHAIN_ID: u64 = 31_337;
/// How long a node may take to answer its first call: an agent hydrating a local snapshot
/// and starting anvil on it, or bare anvil, answers in well under a second, but a loaded CI
/// machine can be slow.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`block_number`] waits: far above a loopback round trip, and short enough for a
/// caller that waits on a node in a loop.
pub const BLOCK_NUMBER_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks a node for its block number over a raw HTTP/1.1 request (no client dependency
/// here; the gateway has the real client). `None` when it does not answer within
/// [`BLOCK_NUMBER_TIMEOUT`].
pub async fn block_number(addr: SocketAddr) -> Option<u64> {
    block_number_within(addr, BLOCK_NUMBER_TIMEOUT).await
}

/// [`block_number`] with its own time limit.
pub async fn block_number_within(addr: SocketAddr, timeout: Duration) -> Option<u64> {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#;
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8(response).ok()?;
        let (_, json) = text.split_once("\r\n\r\n")?;
        let value: serde_json::Value = serde_json::from_str(json.trim()).ok()?;
        let hex = value.get("result")?.as_str()?.strip_prefix("0x")?;
        u64::from_str_radix(hex, 16).ok()
    };
    tokio::time::timeout(timeout, exchange).await.ok().flatten()
}
