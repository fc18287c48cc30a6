//! N local nodes, started together and stopped together.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::process::{NodeProcess, StartError};

/// How many times a node start is tried on a fresh port: a port found free can be taken by
/// another process before anvil binds it.
const START_ATTEMPTS: usize = 3;
/// How long a node gets to exit after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// What to start.
#[derive(Debug, Clone)]
pub struct LocalFleetConfig {
    /// Number of nodes.
    pub nodes: usize,
    /// State folder; node `node-N` logs under `<dir>/nodes/node-N/`.
    pub dir: PathBuf,
    /// The anvil binary.
    pub anvil: PathBuf,
}

/// A node of the fleet, as others see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub url: String,
    pub pid: Option<u32>,
}

/// Running local nodes.
#[derive(Debug)]
pub struct LocalFleet {
    nodes: Vec<NodeProcess>,
}

impl LocalFleet {
    /// Starts every node and waits until each answers. On failure, the nodes already
    /// started are stopped (dropping them kills them).
    pub async fn start(config: &LocalFleetConfig) -> Result<LocalFleet, StartError> {
        let starts = (1..=config.nodes).map(|i| start_node(config, format!("node-{i}")));
        let mut nodes = Vec::with_capacity(config.nodes);
        let mut first_error = None;
        for result in futures_util::future::join_all(starts).await {
            match result {
                Ok(node) => nodes.push(node),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(LocalFleet { nodes }),
        }
    }

    /// The nodes, in order.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.nodes
            .iter()
            .map(|n| NodeInfo {
                name: n.name.clone(),
                url: n.url(),
                pid: n.pid(),
            })
            .collect()
    }

    /// Stops every node (SIGTERM, then SIGKILL after [`STOP_GRACE`]).
    pub async fn stop(self) {
        let stops = self.nodes.into_iter().map(|n| n.stop(STOP_GRACE));
        futures_util::future::join_all(stops).await;
    }
}

async fn start_node(config: &LocalFleetConfig, name: String) -> Result<NodeProcess, StartError> {
    let folder = config.dir.join("nodes").join(&name);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let addr = free_local_port();
        match NodeProcess::start(&name, &config.anvil, addr, &folder).await {
            Err(StartError::Exited { .. } | StartError::NotReady { .. })
                if attempt < START_ATTEMPTS =>
            {
                tracing::warn!(node = %name, %addr, attempt, "node did not start; trying another port");
            }
            result => return result,
        }
    }
}

/// A loopback port that is free now.
fn free_local_port() -> SocketAddr {
    let loopback = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    std::net::TcpListener::bind(loopback)
        .and_then(|l| l.local_addr())
        .unwrap_or(loopback)
}
