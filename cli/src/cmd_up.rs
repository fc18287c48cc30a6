//! `nodefleet up`: the local fleet on one machine, self-healing.
//!
//! Opens the gateway's listener first (a busy port fails before anything starts), finds or
//! installs anvil, opens the [`HealingFleet`] in the state folder and runs its loop: the
//! reactor's reconcile every second over the local adapters, which fills the fleet and
//! replaces nodes that die.
//!
//! A second `up` on the same folder resumes the fleet from its state (`state.redb`): its
//! shape (`--nodes` and `--zones` default to the stored ones; given, they update it), its
//! snapshot catalog, its audit trail and the reactor's memory. The earlier run's nodes died
//! with it; what they left in the state is cleared and the first reconcile starts the fleet
//! again under the same node ids (`nodefleet_local::healing` says what and why).
//!
//! The gateway serves over a [`LocalBalancer`] fed with the fleet's routes after every
//! reconcile that changes them. The banner is printed once the nodes are healthy; Ctrl-C or
//! SIGTERM stops the gateway, the loop, and every node.
//!
//! Every node is a node agent, as on ECS: this same executable as `nodefleet agent run
//! --client anvil` ([`NodeCommand::agent`]) on the fleet's object store `<dir>/store`. It
//! hydrates its data dir from the snapshot the reactor names (the newest published one in
//! the catalog, which the store's `latest` is seeded into at every start) and then runs anvil
//! on it, so the nodes share that snapshot's chain; with nothing published they start on a
//! new chain each. The store is kept across runs like the state: a snapshot published
//! into it (`nodefleet snapshot create --client anvil --from <stopped anvil's data dir>
//! --store file://<absolute dir>/store --block-height N`, or by the snapshot updater) is
//! where the next `up` starts from.
//!
//! The snapshot updater runs in the same loop (`nodefleet_local::snapshots`): the first
//! round starts at once (on a resumed fleet: once one is due since the last run's) and then
//! one every `--snapshot-interval-secs` (120). A round launches a dedicated updater node (an
//! agent with role `updater` in `local-a`, never in the gateway's routes), waits until it is
//! synced, has its agent stop anvil, upload a snapshot and start anvil again, verifies it and
//! publishes it as `latest`: every node the reactor launches after that (a replacement)
//! hydrates from it. Ctrl-C stops each agent with SIGTERM, and the agent stops its anvil.
//!
//! The console (`--console`, default `127.0.0.1:8550`; `nodefleet_local::console`) serves the
//! live status page at `/` and the control API the `--dir` commands call; its listener is
//! opened right after the gateway's, so a busy port fails before anything starts too. The
//! gateway counts every request in a `TrafficRecorder` the status carries (requests per
//! second and latency, charted by the page).
//!
//! Request logs go to `<dir>/gateway.log`, the loop's and the reactor's to
//! `<dir>/reactor.log`, each agent's output to `<dir>/tasks/<task>/node.log` and its anvil's
//! to `<dir>/tasks/<task>/data.anvil.log`; `<dir>/status.json` is what `nodefleet status`
//! reads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use nodefleet_gateway::balancer::PROBE_INTERVAL;
use nodefleet_gateway::upstream::DEFAULT_TIMEOUT;
use nodefleet_gateway::{
    Gateway, HttpUpstreamConfig, LocalBalancer, TrafficRecorder, logging, server,
};
use nodefleet_local::healing::{self, DEFAULT_NODES, DEFAULT_ZONES, MAX_ZONES};
use nodefleet_local::node::START_TIMEOUT;
use nodefleet_local::scheduler::NodeCommand;
use nodefleet_local::snapshots::DEFAULT_ROUND_INTERVAL;
use nodefleet_local::{HealingFleet, LocalFleetOptions, console, tools};
use tokio::sync::watch;

use crate::cmd_gateway::{policy_from, timeout_from};
use crate::signals;

/// The most nodes one machine is asked to run: each anvil takes a core's share under load.
const MAX_NODES: u32 = 32;

#[derive(Debug, Args)]
pub struct UpArgs {
    #[arg(long, help = format!(
        "Number of serving nodes; the fleet keeps this many, replacing any that die \
         [default: the stored fleet's in --dir, else {DEFAULT_NODES}; given, it updates it]"
    ))]
    nodes: Option<u32>,
    #[arg(long, help = format!(
        "Zones the nodes are spread over (local-a, local-b, ...) \
         [default: the stored fleet's in --dir, else {DEFAULT_ZONES}; given, it updates it]"
    ))]
    zones: Option<u32>,
    /// Address the gateway listens on.
    #[arg(long, default_value = "127.0.0.1:8545")]
    listen: SocketAddr,
    /// Address of the console: the live status page at `/` and the control API the
    /// `--dir` commands (chaos, replace, snapshot round, events) call.
    #[arg(long, default_value = console::DEFAULT_CONSOLE_ADDR)]
    console: SocketAddr,
    /// State folder: state, status, logs, node data and the snapshot store `store/`. An
    /// `up` on a folder an earlier run used resumes that fleet from its state (its nodes are
    /// started again; their old data is discarded, the store is kept).
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
    /// Seconds between snapshot rounds of the updater node (the first starts at once);
    /// 0 runs no snapshot updater.
    #[arg(long, default_value_t = DEFAULT_ROUND_INTERVAL.as_secs())]
    snapshot_interval_secs: u64,
}

/// Request lines (and the gateway's own events) go to `gateway.log`; the rest to
/// `reactor.log`.
fn is_gateway_event(target: &str) -> bool {
    target.starts_with("nodefleet::rpc") || target.starts_with("nodefleet_gateway")
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.nodes
            .is_none_or(|nodes| (1..=MAX_NODES).contains(&nodes)),
        "--nodes must be from 1 to {MAX_NODES}"
    );
    anyhow::ensure!(
        args.zones
            .is_none_or(|zones| (1..=MAX_ZONES).contains(&zones)),
        "--zones must be from 1 to {MAX_ZONES}"
    );
    let policy = policy_from(args.policy.as_deref())?;
    let timeout = timeout_from(args.timeout_ms)?;
    let listener = server::bind(args.listen).await?;
    let listen = listener.local_addr().context("listener address")?;
    let console_listener = server::bind(args.console)
        .await
        .context("cannot open the console (--console)")?;
    let console_url = format!(
        "http://{}",
        console_listener.local_addr().context("console address")?
    );
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create the state folder {}", args.dir.display()))?;
    let (gateway_log, reactor_log) = (args.dir.join("gateway.log"), args.dir.join("reactor.log"));
    let _log =
        logging::init_json_to_two_files("info", &gateway_log, &reactor_log, is_gateway_event)
            .with_context(|| format!("cannot open the logs in {}", args.dir.display()))?;

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
    // The agents run in their tasks' folders: every path they get is absolute.
    let agent = std::env::current_exe()
        .context("cannot find the nodefleet executable to run as the node agent")?;
    let anvil_path = std::path::absolute(&anvil.path)
        .with_context(|| format!("cannot resolve {}", anvil.path.display()))?;
    let store = healing::store_url(&args.dir)?;
    let fleet = HealingFleet::open(LocalFleetOptions {
        dir: args.dir.clone(),
        command: NodeCommand::agent(&agent, &anvil_path, &store),
        nodes: args.nodes,
        zones: args.zones,
        gateway: format!("http://{listen}"),
        snapshot_interval: (args.snapshot_interval_secs > 0)
            .then(|| std::time::Duration::from_secs(args.snapshot_interval_secs)),
    })
    .await?;
    if let Some(resumed) = fleet.resumed() {
        say(&format!(
            "resuming the fleet in {}: {} nodes over {} zones{}",
            args.dir.display(),
            resumed.nodes,
            resumed.zones,
            if resumed.config_updated {
                " (shape updated)"
            } else {
                ""
            }
        ));
    }
    let traffic = Arc::new(TrafficRecorder::new());
    let fleet = Arc::new(
        fleet
            .with_console(console_url.clone())
            .with_traffic(traffic.clone()),
    );

    let balancer = Arc::new(LocalBalancer::new(HttpUpstreamConfig {
        timeout,
        ..Default::default()
    }));
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let prober = {
        let balancer = balancer.clone();
        let stop = stopped(stop_rx.clone());
        tokio::spawn(async move { balancer.probe_until(PROBE_INTERVAL, stop).await })
    };
    let gateway = Arc::new(Gateway::new(policy, balancer.clone()).with_traffic(traffic));
    let serving = tokio::spawn(server::serve(listener, gateway, stopped(stop_rx.clone())));
    let console_serving = tokio::spawn(console::serve(
        console_listener,
        fleet.clone(),
        stopped(stop_rx.clone()),
    ));

    // The balancer follows the fleet's routes; a changed set is probed at once, so a new
    // node takes traffic without waiting for the next probe round.
    let feed = |routes: &[(String, String)]| {
        if let Err(error) = balancer.set_nodes(routes) {
            tracing::error!(error = %error, "a route is not a valid URL");
            return;
        }
        let balancer = balancer.clone();
        tokio::spawn(async move { balancer.probe().await });
    };
    let nodes = fleet.config().serving_nodes as usize;
    let dir = args.dir.clone();
    let front = async {
        // One signal future for both waits, so a Ctrl-C between them is not lost.
        let shutdown = signals::shutdown();
        tokio::pin!(shutdown);
        let outcome = tokio::select! {
            view = fleet.wait_healthy(nodes, START_TIMEOUT) => Some(view),
            () = &mut shutdown => None,
        };
        let result = match outcome {
            None => Ok(()),
            Some(view) => {
                let healthy = view.as_ref().map_or(0, |v| v.healthy());
                if healthy == 0 {
                    Err(anyhow::anyhow!(
                        "no node became healthy within {}s; see {} and the node logs under {}",
                        START_TIMEOUT.as_secs(),
                        dir.join("reactor.log").display(),
                        dir.join("tasks").display()
                    ))
                } else {
                    banner(listen, &console_url, &dir, view.as_ref(), nodes);
                    shutdown.await;
                    Ok(())
                }
            }
        };
        say("stopping ...");
        let _ = stop_tx.send(true);
        result
    };
    let (result, ()) = tokio::join!(front, fleet.run(stopped(stop_rx), feed));
    let _ = serving.await;
    let _ = prober.await;
    let _ = console_serving.await;
    fleet.shut_down("nodefleet up stopped").await;
    drop(fleet);
    say("stopped");
    result
}

/// The banner: where to send calls, the nodes, where the logs are.
fn banner(
    listen: SocketAddr,
    console: &str,
    dir: &std::path::Path,
    view: Option<&nodefleet_local::FleetView>,
    nodes: usize,
) {
    say(&format!("nodefleet is up: JSON-RPC at http://{listen}"));
    say(&format!("  status page: {console}/"));
    if let Some(view) = view {
        let latest = view
            .latest_snapshot
            .as_ref()
            .and_then(|id| view.snapshots.iter().find(|s| &s.id == id));
        match latest {
            Some(snapshot) => say(&format!(
                "  nodes hydrated from snapshot {} (block {})",
                snapshot.id, snapshot.block_height
            )),
            None => say(&format!(
                "  no snapshot published in {}: the nodes started on new chains",
                dir.join(healing::STORE_DIR).display()
            )),
        }
        for node in &view.nodes {
            say(&format!(
                "  {} {} {} pid {}",
                node.id,
                node.zone,
                node.url().unwrap_or_else(|| "-".into()),
                node.pid.map_or("-".into(), |p| p.to_string())
            ));
        }
        if view.healthy() < nodes {
            say(&format!(
                "  {} of {nodes} nodes healthy so far; the fleet keeps trying",
                view.healthy()
            ));
        }
    }
    say(&format!(
        "self-healing: a node that dies is replaced; `nodefleet status --dir {}` shows the fleet",
        dir.display()
    ));
    say(&format!("logs in {}; Ctrl-C to stop", dir.display()));
}

/// A line for the person at the terminal.
fn say(line: &str) {
    #[allow(clippy::print_stdout)] // the command's output
    {
        println!("{line}");
    }
}
