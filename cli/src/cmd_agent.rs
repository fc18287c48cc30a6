//! `nodefleet agent run`: the entrypoint of every node task. Reads what the scheduler put in
//! the task's environment (`NODEFLEET_ROLE`, `NODEFLEET_NODE_ID`, `NODEFLEET_SNAPSHOT_ID`,
//! `NODEFLEET_DATA_DIR`, `NODEFLEET_RPC_PORT`, `NODEFLEET_STORE`), so ECS and the local
//! scheduler need no flags, and hands over to `nodefleet_agent::run`. Exits 0 after a clean
//! stop on SIGTERM; non-zero when hydration failed, the client died (the scheduler then
//! replaces the task) or an updater has no node id. Its log (what it hydrated from, the
//! client's start and stop, the updater channel's commands) is JSON lines on stderr, written
//! directly so that nothing is lost when it exits with an error: the task's log (`node.log`
//! of a local task, the container's log on ECS).

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use nodefleet_agent::{
    AgentConfig, ClientKind, DEFAULT_CHANNEL_POLL, DEFAULT_HEALTH_PORT, DEFAULT_HEARTBEAT, Role,
    Shutdown,
};
use nodefleet_gateway::logging;
use nodefleet_ports::NODE_RPC_PORT;
use nodefleet_ports::scheduler::ENV_NODE_ID;
use nodefleet_snapshot::catalog::Selector;

use crate::stores::open_store;

#[derive(Debug, Args)]
pub struct AgentArgs {
    #[command(subcommand)]
    action: AgentAction,
}

#[derive(Debug, Subcommand)]
enum AgentAction {
    /// Hydrate the data dir, run the client, serve /health, stop cleanly on SIGTERM.
    Run(RunArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The execution client: geth, reth, erigon, nethermind, besu, anvil.
    #[arg(long, env = "NODEFLEET_CLIENT")]
    client: String,
    /// The client's data dir (hydrated from the snapshot before the client starts).
    #[arg(long, env = "NODEFLEET_DATA_DIR")]
    data_dir: PathBuf,
    /// Where snapshots live: s3://bucket/prefix or file:///path.
    #[arg(long, env = "NODEFLEET_STORE")]
    store: String,
    /// The snapshot to hydrate from: an id, or `latest`.
    #[arg(long, env = "NODEFLEET_SNAPSHOT_ID", default_value = "latest")]
    snapshot: String,
    /// serving (behind the load balancer) or updater (takes the snapshot updater's commands
    /// through the store's channel, and makes snapshots on POST /snapshot).
    #[arg(long, env = "NODEFLEET_ROLE", default_value = "serving")]
    role: String,
    /// The node's id: names the updater channel in the store (required with --role updater).
    #[arg(long, env = ENV_NODE_ID)]
    node_id: Option<String>,
    /// How often an updater reads its channel's command, in milliseconds.
    #[arg(long, default_value_t = millis(DEFAULT_CHANNEL_POLL))]
    channel_poll_ms: u64,
    /// The longest an updater's channel report goes unwritten, in milliseconds.
    #[arg(long, default_value_t = millis(DEFAULT_HEARTBEAT))]
    heartbeat_ms: u64,
    /// The client's JSON-RPC port (on --rpc-host).
    #[arg(long, env = "NODEFLEET_RPC_PORT", default_value_t = NODE_RPC_PORT)]
    rpc_port: u16,
    /// The address the client's RPC binds: 0.0.0.0 on ECS so the load balancer reaches it.
    #[arg(long, default_value = "127.0.0.1")]
    rpc_host: IpAddr,
    /// Where /health (and /snapshot on an updater) listens.
    #[arg(long, default_value_t = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_HEALTH_PORT))]
    health_listen: SocketAddr,
    /// The client's executable [default: its name on PATH; anvil: the project's tools folder].
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Unhealthy when the head block is older than this.
    #[arg(long, default_value_t = 60)]
    max_head_age_secs: u64,
    /// Unhealthy with fewer peers (where the client reports them).
    #[arg(long, default_value_t = 1)]
    min_peers: u64,
    /// anvil's block time.
    #[arg(long, default_value_t = 1)]
    block_time_secs: u64,
    /// When set, POST /snapshot needs `Authorization: Bearer <token>`.
    #[arg(long, env = "NODEFLEET_CONTROL_TOKEN", hide_env_values = true)]
    control_token: Option<String>,
    /// Extra arguments for the client (network, JWT secret, p2p ports), after `--`.
    #[arg(last = true)]
    client_args: Vec<OsString>,
}

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let AgentAction::Run(args) = args.action;
    logging::init_json("info", true);
    let kind = ClientKind::from_name(&args.client).with_context(|| {
        let names: Vec<_> = ClientKind::ALL.iter().map(|k| k.name()).collect();
        format!(
            "unknown client {:?} (known: {})",
            args.client,
            names.join(", ")
        )
    })?;
    let role = Role::parse(&args.role)
        .with_context(|| format!("unknown role {:?} (serving or updater)", args.role))?;
    let mut config = AgentConfig::new(kind, &args.data_dir);
    config.role = role;
    config.snapshot = Selector::parse(&args.snapshot);
    config.launch.rpc_addr = SocketAddr::new(args.rpc_host, args.rpc_port);
    config.launch.anvil_block_time_secs = args.block_time_secs;
    config.launch.extra_args = args.client_args;
    config.launch.binary = match (args.binary, kind) {
        (Some(binary), _) => binary,
        (None, ClientKind::Anvil) => {
            nodefleet_local::tools::find_anvil(&nodefleet_local::tools::tools_dir(None))?.path
        }
        (None, _) => config.launch.binary,
    };
    config.health_listen = args.health_listen;
    config.thresholds.max_head_age = Duration::from_secs(args.max_head_age_secs);
    config.thresholds.min_peers = args.min_peers;
    config.control_token = args.control_token;
    config.node_id = args.node_id;
    anyhow::ensure!(
        args.channel_poll_ms > 0 && args.heartbeat_ms > 0,
        "--channel-poll-ms and --heartbeat-ms must be above 0"
    );
    config.channel_poll = Duration::from_millis(args.channel_poll_ms);
    config.heartbeat = Duration::from_millis(args.heartbeat_ms);

    let store = open_store(&args.store).await?;
    let shutdown = Shutdown::on_signals().context("cannot install the signal handlers")?;
    match nodefleet_agent::run(config, store, shutdown).await {
        Ok(_) => Ok(()),
        Err(error) => {
            let code = error.exit_code();
            eprintln!("error: {error}");
            std::process::exit(code);
        }
    }
}

/// A default duration as a flag's milliseconds.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
