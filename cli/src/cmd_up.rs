//! `nodefleet up`: the local fleet on one machine.
//!
//! Opens the gateway's listener first (a busy port fails before anything starts), finds or
//! installs anvil, starts the nodes, and serves the gateway over a [`LocalBalancer`] that
//! probes them, until Ctrl-C or SIGTERM; then stops the gateway and every node. Request
//! logs go to `<dir>/gateway.log`, node logs to `<dir>/nodes/<name>/anvil.log`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use nodefleet_gateway::balancer::PROBE_INTERVAL;
use nodefleet_gateway::upstream::DEFAULT_TIMEOUT;
use nodefleet_gateway::{Gateway, HttpUpstreamConfig, LocalBalancer, logging, server};
use nodefleet_local::{LocalFleet, LocalFleetConfig, tools};
use tokio::sync::watch;

use crate::cmd_gateway::{policy_from, timeout_from};
use crate::signals;

/// The fleet's size when not told: one node per zone of the three-zone layout.
const DEFAULT_NODES: usize = 3;
/// The most nodes one machine is asked to run: each anvil takes a core's share under load.
const MAX_NODES: usize = 32;

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = DEFAULT_NODES)]
    nodes: usize,
    /// Address the gateway listens on.
    #[arg(long, default_value = "127.0.0.1:8545")]
    listen: SocketAddr,
    /// State folder for logs and node data.
    #[arg(long, default_value = ".nodefleet")]
    dir: PathBuf,
    /// Operator policy file (TOML) for the gateway.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Tools folder [default: $NODEFLEET_TOOLS_DIR or ./tools]
    #[arg(long)]
    tools: Option<PathBuf>,
    /// Do not install anvil when it is missing; fail instead.
    #[arg(long)]
    no_install: bool,
    /// Upstream timeout in milliseconds.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT.as_millis() as u64)]
    timeout_ms: u64,
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=MAX_NODES).contains(&args.nodes),
        "--nodes must be from 1 to {MAX_NODES}"
    );
    let policy = policy_from(args.policy.as_deref())?;
    let timeout = timeout_from(args.timeout_ms)?;
    let listener = server::bind(args.listen).await?;
    let listen = listener.local_addr().context("listener address")?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create the state folder {}", args.dir.display()))?;
    let _log = logging::init_json_to_file("info", &args.dir.join("gateway.log"))
        .with_context(|| format!("cannot open {}", args.dir.join("gateway.log").display()))?;

    let tools_dir = tools::tools_dir(args.tools.as_deref());
    let anvil = if args.no_install {
        tools::find_anvil(&tools_dir)?
    } else {
        if tools::find_anvil(&tools_dir).is_err() {
            say(&format!(
                "installing anvil {} into {} ...",
                tools::ANVIL_VERSION,
                tools_dir.display()
            ));
        }
        tools::ensure_anvil(&tools_dir).await?
    };
    let config = LocalFleetConfig {
        nodes: args.nodes,
        dir: args.dir.clone(),
        anvil: anvil.path,
    };
    let fleet = LocalFleet::start(&config).await?;

    let balancer = Arc::new(LocalBalancer::new(HttpUpstreamConfig {
        timeout,
        ..Default::default()
    }));
    let nodes = fleet.nodes();
    balancer.set_nodes(
        &nodes
            .iter()
            .map(|n| (n.name.clone(), n.url.clone()))
            .collect::<Vec<_>>(),
    )?;
    balancer.probe().await;

    say(&format!("nodefleet is up: JSON-RPC at http://{listen}"));
    for node in &nodes {
        say(&format!(
            "  {} {} pid {}",
            node.name,
            node.url,
            node.pid.map_or("-".into(), |p| p.to_string())
        ));
    }
    say(&format!("logs in {}; Ctrl-C to stop", args.dir.display()));

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let prober = {
        let balancer = balancer.clone();
        let stop = stopped(stop_rx.clone());
        tokio::spawn(async move { balancer.probe_until(PROBE_INTERVAL, stop).await })
    };
    let gateway = Arc::new(Gateway::new(policy, balancer));
    let serving = tokio::spawn(server::serve(listener, gateway, stopped(stop_rx)));

    signals::shutdown().await;
    say("stopping ...");
    let _ = stop_tx.send(true);
    let _ = serving.await;
    let _ = prober.await;
    fleet.stop().await;
    say("stopped");
    Ok(())
}

/// A line for the person at the terminal.
fn say(line: &str) {
    #[allow(clippy::print_stdout)] // the command's output
    {
        println!("{line}");
    }
}
