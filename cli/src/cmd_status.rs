//! `nodefleet status [--dir .nodefleet] [--json]`: the running local fleet, from the status
//! file `nodefleet up` writes after every reconcile (`nodefleet_local::status`), with every
//! node's head block asked live. No running `up` (no file, its process gone, or the file
//! stale) is an error: one line, exit 1.
//!
//! `nodefleet status --stack NAME [--json] [--no-heads]`: a deployed stack, read through its
//! adapters (`nodefleet_ops::status`): nodes per zone with task, target health, head block
//! and snapshot, the updater's round, the latest snapshot and its age, recent events.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use nodefleet_local::FleetStatus;
use nodefleet_ops::probe::{DEFAULT_HEAD_TIMEOUT, RpcHeadProbe};
use nodefleet_ops::status::{STATUS_EVENTS, STATUS_EVENTS_SINCE, StatusOptions};
use nodefleet_ports::Timestamp;
use nodefleet_reactor::reconcile::Ports;

/// How long each node gets to say its head block: a loopback answer takes a millisecond, and
/// the command should answer at once even when a node hangs.
const HEAD_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The fleet's state folder (as given to `nodefleet up`).
    #[arg(long, default_value = ".nodefleet")]
    dir: PathBuf,
    /// A deployed stack instead of the local fleet, read through its CloudFormation
    /// outputs (region and credentials from the standard AWS environment).
    #[arg(long, value_name = "NAME", conflicts_with = "dir")]
    stack: Option<String>,
    /// With --stack: do not ask the nodes for their head blocks (they listen on private
    /// addresses in the VPC; from outside it every head is `-` after a second).
    #[arg(long, requires = "stack")]
    no_heads: bool,
    /// Print the status as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    if let Some(stack) = &args.stack {
        return stack_status(stack, args.no_heads, args.json).await;
    }
    let mut status = FleetStatus::read(&args.dir)?;
    status.check_running(&args.dir, Timestamp::now())?;
    status.probe_heads(HEAD_TIMEOUT).await;
    let output = if args.json {
        serde_json::to_string_pretty(&status).context("cannot encode the status as JSON")?
    } else {
        status.render(Timestamp::now())
    };
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{}", output.trim_end()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write the status to stdout")
        }
        _ => Ok(()),
    }
}

async fn stack_status(stack: &str, no_heads: bool, json: bool) -> anyhow::Result<()> {
    let adapters = crate::stack::open(stack).await?;
    let reactor = &adapters.settings.reactor;
    let options = StatusOptions {
        source: format!("stack {stack}"),
        fleet: reactor.fleet.clone(),
        network_mode: reactor.scheduler.network.mode(),
        container_port: reactor.container_port,
        events_since: STATUS_EVENTS_SINCE,
        events_limit: STATUS_EVENTS,
        head_timeout: if no_heads {
            Duration::ZERO
        } else {
            DEFAULT_HEAD_TIMEOUT
        },
    };
    let ports = Ports {
        state: &adapters.state,
        scheduler: &adapters.scheduler,
        registry: &adapters.registry,
    };
    let now = Timestamp::now();
    let report = nodefleet_ops::status(ports, &options, &RpcHeadProbe, now).await?;
    if json {
        crate::stack::print_json(&report)
    } else {
        crate::stack::print(&report.render(now))
    }
}
