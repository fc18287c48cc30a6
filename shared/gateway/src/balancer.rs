//! The local stand-in for the NLB: round robin over the nodes that answer.
//!
//! Each node is marked up or down by a probe (`eth_blockNumber`, every
//! [`PROBE_INTERVAL`] by default) and by live traffic: a node whose connection fails is
//! marked down at once and a read moves on to the next node, so a killed node costs no
//! failed reads. When every node is marked down, each is tried anyway (the marks may be
//! stale) before the call fails with [`UpstreamError::NoNodeAvailable`].

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;

use crate::upstream::{
    HttpUpstream, HttpUpstreamConfig, Upstream, UpstreamCall, UpstreamError, UpstreamResponse,
    UpstreamUrlError,
};

/// How often nodes are probed: fast enough that a node that comes back rejoins within a
/// second, cheap enough (one tiny call per node) to be invisible next to real traffic.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// A probe gets this long: a local node that cannot say its block number in 2 s is not
/// fit to serve.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

const PROBE_CALL: &[u8] = br#"{"jsonrpc":"2.0","id":0,"method":"eth_blockNumber","params":[]}"#;

/// One balanced node.
#[derive(Debug)]
struct Node {
    name: String,
    upstream: HttpUpstream,
    up: AtomicBool,
}

/// What the balancer knows of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    pub url: String,
    pub up: bool,
}

/// Round robin over local nodes.
#[derive(Debug, Default)]
pub struct LocalBalancer {
    nodes: RwLock<Arc<Vec<Arc<Node>>>>,
    next: AtomicUsize,
    config: HttpUpstreamConfig,
}

impl LocalBalancer {
    pub fn new(config: HttpUpstreamConfig) -> LocalBalancer {
        LocalBalancer {
            nodes: RwLock::default(),
            next: AtomicUsize::new(0),
            config,
        }
    }

    /// Replaces the set of nodes (name, URL). Nodes already known keep their up mark;
    /// new ones start down until a probe or a call succeeds.
    pub fn set_nodes(&self, nodes: &[(String, String)]) -> Result<(), UpstreamUrlError> {
        let current = self.current();
        let mut next = Vec::with_capacity(nodes.len());
        for (name, url) in nodes {
            let existing = current
                .iter()
                .find(|n| &n.name == name && n.upstream.uri() == url.as_str());
            next.push(match existing {
                Some(node) => node.clone(),
                None => Arc::new(Node {
                    name: name.clone(),
                    upstream: HttpUpstream::new(url, self.config.clone())?,
                    up: AtomicBool::new(false),
                }),
            });
        }
        *self.nodes.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        Ok(())
    }

    /// The nodes and their marks.
    pub fn nodes(&self) -> Vec<NodeView> {
        self.current()
            .iter()
            .map(|n| NodeView {
                name: n.name.clone(),
                url: n.upstream.uri().to_string(),
                up: n.up.load(Ordering::Relaxed),
            })
            .collect()
    }

    fn current(&self) -> Arc<Vec<Arc<Node>>> {
        self.nodes.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Probes every node once and updates the marks.
    pub async fn probe(&self) {
        let nodes = self.current();
        let probes = nodes.iter().map(|node| async move {
            let call = node.upstream.send_once(Bytes::from_static(PROBE_CALL));
            let up = matches!(
                tokio::time::timeout(PROBE_TIMEOUT, call).await,
                Ok(Ok(UpstreamResponse { status: 200, .. }))
            );
            let was_up = node.up.swap(up, Ordering::Relaxed);
            if was_up != up {
                tracing::info!(node = %node.name, up, "node availability changed");
            }
        });
        futures_util::future::join_all(probes).await;
    }

    /// Probes every `interval` until `shutdown` resolves.
    pub async fn probe_until(
        &self,
        interval: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => self.probe().await,
                () = &mut shutdown => return,
            }
        }
    }
}

impl Upstream for LocalBalancer {
    async fn send(&self, call: UpstreamCall) -> Result<UpstreamResponse, UpstreamError> {
        let nodes = self.current();
        if nodes.is_empty() {
            return Err(UpstreamError::NoNodeAvailable);
        }
        // Round robin over the nodes marked up; then the others, in case the marks are stale.
        let (up, down): (Vec<&Arc<Node>>, Vec<&Arc<Node>>) =
            nodes.iter().partition(|n| n.up.load(Ordering::Relaxed));
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let rotated_up = (0..up.len()).map(|i| up[(start + i) % up.len()]);
        let mut last_error = UpstreamError::NoNodeAvailable;
        for node in rotated_up.chain(down) {
            match node.upstream.send_once(call.body.clone()).await {
                Ok(response) => {
                    node.up.store(true, Ordering::Relaxed);
                    return Ok(response);
                }
                Err(error) if error.is_retryable() => {
                    node.up.store(false, Ordering::Relaxed);
                    if !call.retryable && error == UpstreamError::ConnectionLost {
                        // The write may have reached the node: do not send it twice.
                        return Err(error);
                    }
                    last_error = error;
                }
                Err(error) => return Err(error),
            }
        }
        Err(match last_error {
            UpstreamError::ConnectFailed => UpstreamError::NoNodeAvailable,
            other => other,
        })
    }
}
