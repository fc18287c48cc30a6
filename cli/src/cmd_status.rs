//! `nodefleet status [--dir .nodefleet] [--json]`: the running local fleet, from the status
//! file `nodefleet up` writes after every reconcile (`nodefleet_local::status`), with every
//! node's head block asked live. No running `up` (no file, its process gone, or the file
//! stale) is an error: one line, exit 1.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use nodefleet_local::FleetStatus;
use nodefleet_ports::Timestamp;

/// How long each node gets to say its head block: a loopback answer takes a millisecond, and
/// the command should answer at once even when a node hangs.
const HEAD_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The fleet's state folder (as given to `nodefleet up`).
    #[arg(long, default_value = ".nodefleet")]
    dir: PathBuf,
    /// Print the status as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
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
