//! What the `--dir` commands share: the `nodefleet up` running in a folder (its status file,
//! checked as `nodefleet status` checks it) and calls to its console's API
//! (`nodefleet_local::console`), whose URL the status file names.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use http::Method;
use nodefleet_local::FleetStatus;
use nodefleet_local::console;
use nodefleet_ports::Timestamp;
use serde_json::Value;

/// The local fleet a command talks to.
#[derive(Debug, Clone, Args)]
pub struct DirArg {
    /// The fleet's state folder (as given to `nodefleet up`).
    #[arg(long, default_value = ".nodefleet")]
    pub dir: PathBuf,
}

/// The status of the `up` running in `dir`, or why there is none.
pub fn running(dir: &Path) -> anyhow::Result<FleetStatus> {
    let status = FleetStatus::read(dir)?;
    status.check_running(dir, Timestamp::now())?;
    Ok(status)
}

/// `method path` on the console of the `up` running in `dir`: the answer's JSON, or the
/// console's `{"error": ...}` as the error.
pub async fn call(dir: &Path, method: Method, path: &str) -> anyhow::Result<Value> {
    let status = running(dir)?;
    let url = status.console.with_context(|| {
        format!(
            "nodefleet up (pid {}) in {} serves no console, so it cannot be asked to do this",
            status.up_pid,
            dir.display()
        )
    })?;
    Ok(console::call(&url, method, path).await?)
}

/// Prints a control answer: its JSON with `json`, else its `message` line.
pub fn print_answer(answer: &Value, json: bool) -> anyhow::Result<()> {
    if json {
        return crate::stack::print_json(answer);
    }
    crate::stack::print(answer["message"].as_str().unwrap_or("done"))
}
