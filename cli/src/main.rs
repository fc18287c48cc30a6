//! `nodefleet`: the local fleet, the gateway as a server, and tools. Each subcommand parses
//! its flags and calls into the shared crates; errors print as one line and exit 1.

mod cmd_agent;
mod cmd_chaos;
mod cmd_events;
mod cmd_gateway;
mod cmd_plan;
mod cmd_replace;
mod cmd_snapshot;
mod cmd_status;
mod cmd_tools;
mod cmd_up;
mod local_fleet;
mod signals;
mod stack;
mod stores;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "nodefleet",
    version,
    about = "A self-healing Ethereum JSON-RPC fleet on AWS, and its local twin"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Bring up the local fleet: node agents running anvil behind the gateway, hydrated
    /// from the latest snapshot in the fleet's store, replaced when they die, until Ctrl-C.
    Up(cmd_up::UpArgs),
    /// Show the running local fleet (or a deployed stack): nodes, zones, health, head
    /// blocks, snapshots, the updater and recent events.
    Status(cmd_status::StatusArgs),
    /// The audit trail (a deployed stack's, or the local fleet's): what the control plane
    /// and operators did and why, newest first.
    Events(cmd_events::EventsArgs),
    /// Replace one node now (of a deployed stack, or of the local fleet), the way the health
    /// reactor would.
    Replace(cmd_replace::ReplaceArgs),
    /// Break the running local fleet on purpose (kill or stall a node, fail or restore a
    /// zone) and watch it heal itself.
    Chaos(cmd_chaos::ChaosArgs),
    /// Serve the JSON-RPC gateway in front of an upstream node or load balancer.
    Gateway(cmd_gateway::GatewayArgs),
    /// Gateway policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Install the tools the local fleet needs (anvil) into the tools folder.
    Tools(cmd_tools::ToolsArgs),
    /// Chain-data snapshots in an s3:// or file:// store: create, restore, list, verify, prune.
    Snapshot(cmd_snapshot::SnapshotArgs),
    /// The node agent, the entrypoint of every node task.
    Agent(cmd_agent::AgentArgs),
    /// Capacity plan: nodes per instance, instances per zone, utilisation and monthly cost
    /// per instance type, and the cheapest.
    Plan(cmd_plan::PlanArgs),
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Check a policy file and show how it decides the given methods.
    Check(cmd_gateway::PolicyArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `gateway --workers 1` (the default) runs on a single-threaded runtime, the leanest
    // event loop tokio has; everything else on the multi-threaded one.
    let mut runtime = match &cli.command {
        Command::Gateway(args) if args.workers == 1 => {
            tokio::runtime::Builder::new_current_thread()
        }
        Command::Gateway(args) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(usize::from(args.workers));
            builder
        }
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up(args) => cmd_up::run(args).await,
            Command::Status(args) => cmd_status::run(args).await,
            Command::Events(args) => cmd_events::run(args).await,
            Command::Replace(args) => cmd_replace::run(args).await,
            Command::Chaos(args) => cmd_chaos::run(args).await,
            Command::Gateway(args) => cmd_gateway::run(args).await,
            Command::Policy(PolicyCommand::Check(args)) => cmd_gateway::check_policy(args),
            Command::Tools(args) => cmd_tools::run(args).await,
            Command::Snapshot(args) => cmd_snapshot::run(args).await,
            Command::Agent(args) => cmd_agent::run(args).await,
            Command::Plan(args) => cmd_plan::run(args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(error: &anyhow::Error) -> ExitCode {
    eprintln!("error: {error:#}");
    ExitCode::FAILURE
}
