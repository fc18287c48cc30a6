//! `nodefleet plan --client geth --nodes 6 --zones 3 [--json]`: capacity planning by bin
//! packing. All the arithmetic and the table live in `nodefleet_reactor::capacity` (pure,
//! tested there); this file parses the flags and prints. `--json` prints the whole plan
//! (every feasible packing, every infeasible type with its shortfalls, the cheapest) as one
//! JSON object for scripts.

use std::io::Write as _;

use anyhow::Context;
use clap::Args;
use nodefleet_reactor::capacity::{plan_for_client, render_plan};

/// Nodes per fleet when none is given: two per zone over three zones, so that one node per
/// zone can be replaced while the other serves.
const DEFAULT_NODES: u32 = 6;
/// Zones when none is given: the three the design spreads over.
const DEFAULT_ZONES: u32 = 3;

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Execution client: geth, reth, erigon, nethermind, besu.
    #[arg(long)]
    client: String,
    /// Serving nodes in the fleet.
    #[arg(long, default_value_t = DEFAULT_NODES)]
    nodes: u32,
    /// Availability zones the nodes are spread over.
    #[arg(long, default_value_t = DEFAULT_ZONES)]
    zones: u32,
    /// Print the plan as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: PlanArgs) -> anyhow::Result<()> {
    let plan = plan_for_client(&args.client, args.nodes, args.zones)?;
    let output = if args.json {
        serde_json::to_string_pretty(&plan).context("cannot encode the plan as JSON")?
    } else {
        render_plan(&plan)
    };
    write_output(output.trim_end())
}

/// Write the command's output; a reader that closed early (`| head`) is not an error.
fn write_output(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write the plan to stdout")
        }
        _ => Ok(()),
    }
}
