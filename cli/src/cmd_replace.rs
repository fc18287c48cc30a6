//! `nodefleet replace [--stack NAME | --dir .nodefleet] NODE [--json]`: replace one serving
//! node of a deployed stack (or of the local fleet, through its console) now, through the health reactor's planner and executor and its idempotency keys
//! (`nodefleet_ops::replace`), with the reactor function's own settings (from the stack's
//! outputs). A node that is being replaced already is an answer, not an error (exit 0, so
//! the command can be retried); an unknown node, the updater, or a failed launch exit 1.

use clap::Args;
use nodefleet_ports::{NodeId, Timestamp};
use nodefleet_reactor::reconcile::Ports;

use http::Method;

use crate::stack::{Fleet, FleetArg};

#[derive(Debug, Args)]
pub struct ReplaceArgs {
    #[command(flatten)]
    fleet: FleetArg,
    /// The node to replace (as `nodefleet status --stack NAME` lists it).
    node: String,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: ReplaceArgs) -> anyhow::Result<()> {
    let stack = match args.fleet.fleet() {
        Fleet::Stack(stack) => stack,
        Fleet::Local(dir) => {
            let path = format!("/api/replace/{}", args.node);
            return crate::local_fleet::print_answer(
                &crate::local_fleet::call(&dir, Method::POST, &path).await?,
                args.json,
            );
        }
    };
    let adapters = crate::stack::open(&stack).await?;
    let settings = adapters
        .settings
        .reactor
        .settings(&crate::stack::operator());
    let ports = Ports {
        state: &adapters.state,
        scheduler: &adapters.scheduler,
        registry: &adapters.registry,
    };
    let replaced =
        nodefleet_ops::replace(ports, &settings, &NodeId::new(args.node), Timestamp::now()).await?;
    if args.json {
        crate::stack::print_json(&replaced)
    } else {
        crate::stack::print(&replaced.render())
    }
}
