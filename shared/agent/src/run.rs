//! The agent's lifecycle: hydrate, start the client, serve `/health`, stop cleanly.
//!
//! 1. **Listen.** The health port is opened first, so a port clash fails the task at once,
//!    and `/health` answers 503 "hydrating" while the data dir fills instead of refusing
//!    connections.
//! 2. **Hydrate** ([`crate::hydrate`]): restore the wanted snapshot, or find it already
//!    there, or find an empty store. Any failure ends the run with an error before a client
//!    exists (invariant 3). A shutdown during hydration ends the run at once (a restore
//!    resumes next time).
//! 3. **Start** the client ([`crate::client`]), after checking the data dir's restore
//!    marker once more. `/health` now probes it.
//! 4. **Run** until one of: the shutdown signal (SIGTERM from ECS, Ctrl-C): the client is
//!    stopped gracefully and the run ends `Ok`, so the process exits 0; or the client exits
//!    on its own (or cannot be started again after a snapshot): the run ends with
//!    [`AgentError::ClientDied`], whose [`AgentError::exit_code`] is non-zero, and ECS
//!    replaces the task.
//!
//! On an updater (`Role::Updater`), the updater channel loop ([`crate::updater`]) runs
//! beside all of this from step 1 on: it reports to the snapshot updater through the store
//! and takes its quiesce, upload and resume commands; its last report is written after the
//! client stopped. An updater needs its node id ([`AgentConfig::node_id`], set by the
//! schedulers) to find its channel: without one the run fails before anything starts.
//! `POST /snapshot` on the health port makes a whole snapshot in one request (stop, create,
//! start: [`crate::node`]).
//!
//! ECS gives a stopping task `stopTimeout` seconds (at most 120) between SIGTERM and
//! SIGKILL; the task definition should give at least the profile's `stop_timeout` where it
//! can, since a client killed mid-flush may need a long recovery on its next start.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nodefleet_ports::{NODE_RPC_PORT, ObjectStore};
use nodefleet_snapshot::catalog::Selector;
use nodefleet_snapshot::restore::RestoreOptions;
use tokio::net::TcpListener;

use crate::client::{ClientExit, ClientKind, LaunchSpec};
use crate::health::Thresholds;
use crate::hydrate::{HydrateError, Hydration, hydrate};
use crate::node::{Fatal, Node, Phase, StartFailure, UpdaterSettings};
use crate::probe::{PROBE_TIMEOUT, RpcClient};
use crate::progress::LogProgress;
use crate::server::{self, BindError, Control, HEALTH_CACHE_TTL, HealthEndpoint, Server};
use crate::shutdown::Shutdown;
use crate::updater::{ChannelLoop, ChannelSettings, DEFAULT_CHANNEL_POLL, DEFAULT_HEARTBEAT};

/// The agent's own port (`/health`, `/snapshot`): clear of the clients' defaults (8545-8551
/// RPC and engine, 6060/9001/9090/9091/9545 metrics and private APIs) and of common
/// consensus clients' ports that may share the task's network namespace.
pub const DEFAULT_HEALTH_PORT: u16 = 8580;
/// Pack uploads in flight when an updater makes a snapshot.
pub const DEFAULT_CREATE_CONCURRENCY: usize = 8;

/// What this agent's node is for: the fleet's own [`nodefleet_ports::Role`]. A serving node
/// is behind the load balancer; an updater makes snapshots on command (`POST /snapshot`).
pub use nodefleet_ports::Role;

/// Everything `nodefleet agent run` decides. Build it with [`AgentConfig::new`] and change
/// the fields the command line sets.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The client, its binary, data dir, RPC address, extra arguments and log.
    pub launch: LaunchSpec,
    /// Where `/health` (and `/snapshot` on an updater) listens.
    pub health_listen: SocketAddr,
    pub role: Role,
    /// The snapshot to hydrate from (default `latest`).
    pub snapshot: Selector,
    pub thresholds: Thresholds,
    /// Timeout of each JSON-RPC call of a health probe.
    pub probe_timeout: Duration,
    /// How long a health verdict is reused.
    pub health_cache_ttl: Duration,
    pub restore: RestoreOptions,
    /// Pack uploads in flight when making a snapshot (updater).
    pub create_concurrency: usize,
    /// When set, `POST /snapshot` needs `Authorization: Bearer <token>`.
    pub control_token: Option<String>,
    /// The node's id (`NODEFLEET_NODE_ID`): names the updater channel. Required on an
    /// updater.
    pub node_id: Option<String>,
    /// How often an updater reads its channel's command.
    pub channel_poll: Duration,
    /// The longest an updater's channel report goes unwritten.
    pub heartbeat: Duration,
}

impl AgentConfig {
    /// The defaults for `client` on `data_dir`: RPC on `127.0.0.1:8545`, `/health` on
    /// `0.0.0.0:8580`, role serving, `latest`, default thresholds and engine options.
    pub fn new(client: ClientKind, data_dir: impl Into<PathBuf>) -> AgentConfig {
        AgentConfig {
            launch: LaunchSpec::new(
                client,
                data_dir,
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), NODE_RPC_PORT),
            ),
            health_listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_HEALTH_PORT),
            role: Role::Serving,
            snapshot: Selector::Latest,
            thresholds: Thresholds::default(),
            probe_timeout: PROBE_TIMEOUT,
            health_cache_ttl: HEALTH_CACHE_TTL,
            restore: RestoreOptions::default(),
            create_concurrency: DEFAULT_CREATE_CONCURRENCY,
            control_token: None,
            node_id: None,
            channel_poll: DEFAULT_CHANNEL_POLL,
            heartbeat: DEFAULT_HEARTBEAT,
        }
    }

    /// The updater channel's settings: `None` for a serving node, an error for an updater
    /// without a node id.
    fn channel(&self) -> Result<Option<ChannelSettings>, AgentError> {
        if self.role != Role::Updater {
            return Ok(None);
        }
        let node = self
            .node_id
            .clone()
            .filter(|id| !id.trim().is_empty())
            .ok_or(AgentError::NoNodeId)?;
        Ok(Some(ChannelSettings {
            node,
            poll: self.channel_poll,
            heartbeat: self.heartbeat,
        }))
    }

    /// Where the agent reaches the client's RPC: its listen address, with a wildcard
    /// (`0.0.0.0`, `::`) replaced by loopback.
    pub fn probe_addr(&self) -> SocketAddr {
        let addr = self.launch.rpc_addr;
        match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
            }
            _ => addr,
        }
    }
}

/// How a run that ended on the shutdown signal went.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// What hydration did; `None` if the shutdown came first.
    pub hydration: Option<Hydration>,
    /// How the client stopped; `None` if it never started.
    pub client_exit: Option<ClientExit>,
}

/// Why the agent stopped other than on request.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Hydrate(#[from] HydrateError),
    #[error("the client was not started: {0}")]
    Start(#[from] StartFailure),
    #[error("the client {0}")]
    ClientDied(ClientExit),
    #[error("the client could not be started again after a snapshot: {0}")]
    RestartFailed(String),
    #[error(
        "an updater needs its node id to find its channel in the store: pass --node-id or set NODEFLEET_NODE_ID"
    )]
    NoNodeId,
}

impl AgentError {
    /// The agent process's exit status for this error: the client's own status when it
    /// died (see [`ClientExit::agent_exit_code`]), 1 otherwise. Never 0.
    pub fn exit_code(&self) -> i32 {
        match self {
            AgentError::ClientDied(exit) => exit.agent_exit_code(),
            _ => 1,
        }
    }
}

/// Runs the agent until `shutdown` fires (`Ok`) or the node cannot go on (`Err`). See the
/// module doc.
pub async fn run(
    config: AgentConfig,
    store: Arc<dyn ObjectStore>,
    shutdown: Shutdown,
) -> Result<RunReport, AgentError> {
    config.channel()?;
    let listener = server::bind(config.health_listen).await?;
    run_with_listener(config, listener, store, shutdown).await
}

/// [`run`] on a listener the caller opened (`config.health_listen` is not used): lets a
/// test listen on port 0 and know the port.
pub async fn run_with_listener(
    config: AgentConfig,
    listener: TcpListener,
    store: Arc<dyn ObjectStore>,
    mut shutdown: Shutdown,
) -> Result<RunReport, AgentError> {
    let channel = config.channel()?;
    let rpc = RpcClient::new(config.probe_addr(), config.probe_timeout);
    let updater = channel.is_some().then(|| UpdaterSettings {
        store: store.clone(),
        concurrency: config.create_concurrency,
    });
    let node = Arc::new(Node::new(
        config.launch.clone(),
        rpc.clone(),
        config.thresholds,
        updater,
    ));
    let control = node.is_updater().then(|| Control {
        node: node.clone(),
        token: config.control_token.clone(),
        shutdown: shutdown.clone(),
    });
    let health = Arc::new(
        HealthEndpoint::new(rpc, config.thresholds).with_cache_ttl(config.health_cache_ttl),
    );
    let server = Arc::new(Server::for_node(health.clone(), node.phase(), control));
    let (stop_serving, serving_stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server::serve(listener, server, async {
        let _ = serving_stopped.await;
    }));
    let channel =
        channel.map(|settings| ChannelLoop::spawn(node.clone(), store.clone(), health, settings));
    let finish = |result: Result<RunReport, AgentError>| async {
        // The channel's last report comes after the client stopped, while /health still
        // answers.
        if let Some(channel) = channel {
            channel.stop().await;
        }
        let _ = stop_serving.send(());
        let _ = serving.await;
        result
    };

    let hydrating = hydrate(
        store,
        &config.launch.data_dir,
        &config.snapshot,
        &config.restore,
        Arc::new(LogProgress::new("restore")),
    );
    let hydration = tokio::select! {
        hydrated = hydrating => match hydrated {
            Ok(hydration) => hydration,
            Err(error) => {
                tracing::error!(%error, "hydration failed; the client is not started");
                node.set_phase(Phase::Stopping);
                return finish(Err(error.into())).await;
            }
        },
        () = shutdown.wait() => {
            node.set_phase(Phase::Stopping);
            return finish(Ok(RunReport { hydration: None, client_exit: None })).await;
        }
    };
    node.set_required_snapshot(hydration.snapshot().map(str::to_owned));

    if let Err(error) = node.start().await {
        tracing::error!(%error, "the client did not start");
        node.set_phase(Phase::Stopping);
        return finish(Err(error.into())).await;
    }

    let result = tokio::select! {
        fatal = node.fatal() => {
            // Nothing runs any more, but make sure of it (a failed restart leaves the slot
            // empty; a dead client is reaped already).
            let _ = node.stop().await;
            Err(match fatal {
                Fatal::ClientDied(exit) => AgentError::ClientDied(exit),
                Fatal::RestartFailed(message) => AgentError::RestartFailed(message),
            })
        }
        () = shutdown.wait() => {
            let client_exit = node.stop().await;
            Ok(RunReport { hydration: Some(hydration), client_exit })
        }
    };
    finish(result).await
}
