//! A cached chain head for resolving `eth_getLogs` block tags.
//!
//! The head is fetched with `eth_blockNumber` through the same upstream and reused while it
//! is at most [`HEAD_MAX_AGE`] old. Concurrent requests that find it stale wait for one fetch
//! (the lock is held across it) instead of each asking the node. A failed fetch is not cached.

use std::time::Duration;

use bytes::Bytes;
use nodefleet_gateway_core::UpstreamFailure;
use nodefleet_gateway_core::params::parse_block_number;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::upstream::{Upstream, UpstreamCall};

/// How stale a head may be: a slot is 12 s, so 2 s keeps range checks within a block of the
/// truth while a busy gateway asks for the head at most once every 2 s.
pub const HEAD_MAX_AGE: Duration = Duration::from_secs(2);

const BLOCK_NUMBER_CALL: &[u8] =
    br#"{"jsonrpc":"2.0","id":0,"method":"eth_blockNumber","params":[]}"#;

/// The last head seen and when.
#[derive(Debug)]
pub struct HeadCache {
    max_age: Duration,
    last: Mutex<Option<(u64, Instant)>>,
}

impl Default for HeadCache {
    fn default() -> Self {
        HeadCache::new(HEAD_MAX_AGE)
    }
}

impl HeadCache {
    pub fn new(max_age: Duration) -> HeadCache {
        HeadCache {
            max_age,
            last: Mutex::new(None),
        }
    }

    /// The head block number, fetched when the cached one is older than the max age.
    pub async fn head<U: Upstream>(&self, upstream: &U) -> Result<u64, UpstreamFailure> {
        let mut last = self.last.lock().await;
        if let Some((head, at)) = *last
            && at.elapsed() <= self.max_age
        {
            return Ok(head);
        }
        let call = UpstreamCall {
            body: Bytes::from_static(BLOCK_NUMBER_CALL),
            retryable: true,
        };
        let response = upstream.send(call).await.map_err(|e| e.failure())?;
        let invalid = UpstreamFailure::InvalidResponse {
            status: response.status,
        };
        let head = serde_json::from_slice::<BlockNumberAnswer<'_>>(&response.body)
            .ok()
            .and_then(|a| a.result)
            .and_then(|r| parse_block_number(r.get()))
            .ok_or(invalid)?;
        *last = Some((head, Instant::now()));
        Ok(head)
    }
}

#[derive(Deserialize)]
struct BlockNumberAnswer<'a> {
    #[serde(borrow)]
    result: Option<&'a RawValue>,
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::upstream::{UpstreamError, UpstreamResponse};

    /// Answers eth_blockNumber with an increasing head and counts the calls.
    #[derive(Default)]
    struct CountingNode {
        calls: AtomicU64,
    }

    impl Upstream for CountingNode {
        async fn send(&self, _call: UpstreamCall) -> Result<UpstreamResponse, UpstreamError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let body = format!(r#"{{"jsonrpc":"2.0","id":0,"result":"0x{n:x}"}}"#);
            Ok(UpstreamResponse {
                status: 200,
                body: body.into(),
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_head_is_reused_while_fresh_and_refetched_when_stale() {
        let node = CountingNode::default();
        let cache = HeadCache::default();
        assert_eq!(cache.head(&node).await, Ok(1));
        tokio::time::advance(Duration::from_millis(1_900)).await;
        assert_eq!(cache.head(&node).await, Ok(1));
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(cache.head(&node).await, Ok(2));
        assert_eq!(node.calls.load(Ordering::SeqCst), 2);
    }

    struct GarbageNode;

    impl Upstream for GarbageNode {
        async fn send(&self, _call: UpstreamCall) -> Result<UpstreamResponse, UpstreamError> {
            Ok(UpstreamResponse {
                status: 502,
                body: Bytes::from_static(b"<html>"),
            })
        }
    }

    #[tokio::test]
    async fn a_garbage_answer_is_an_invalid_response_and_not_cached() {
        let cache = HeadCache::default();
        assert_eq!(
            cache.head(&GarbageNode).await,
            Err(UpstreamFailure::InvalidResponse { status: 502 })
        );
        assert_eq!(cache.head(&CountingNode::default()).await, Ok(1));
    }
}
