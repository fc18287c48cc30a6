//! What the `--stack NAME` commands share: the flag (or `--dir` for the local fleet), opening the stack (its outputs, the
//! functions' settings from them, the AWS adapters, through `nodefleet_lambda::stack`, with
//! the standard AWS environment: region, credentials, `AWS_ENDPOINT_URL`), the name an
//! operator's claims and leases are held under, and writing the answer to stdout.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use nodefleet_lambda::stack::StackAdapters;

/// The fleet a command operates on: a deployed stack (`--stack NAME`) or the local fleet
/// running in a folder (`--dir`, the default `.nodefleet`).
#[derive(Debug, Clone, Args)]
pub struct FleetArg {
    /// The CloudFormation stack `sam deploy` created (its outputs name the fleet's table,
    /// cluster, target group, task definitions and store). Region and credentials come from
    /// the standard AWS environment.
    #[arg(long, value_name = "NAME", conflicts_with = "dir")]
    pub stack: Option<String>,
    /// The local fleet's state folder (as given to `nodefleet up`), asked through its
    /// console [default: .nodefleet]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Which fleet [`FleetArg`] names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fleet {
    Stack(String),
    Local(PathBuf),
}

impl FleetArg {
    pub fn fleet(&self) -> Fleet {
        match (&self.stack, &self.dir) {
            (Some(stack), _) => Fleet::Stack(stack.clone()),
            (None, Some(dir)) => Fleet::Local(dir.clone()),
            (None, None) => Fleet::Local(PathBuf::from(".nodefleet")),
        }
    }
}

/// Reads the stack's outputs and builds its adapters once.
pub async fn open(stack: &str) -> anyhow::Result<StackAdapters> {
    let sdk = nodefleet_aws::load_sdk_config().await;
    Ok(StackAdapters::open(&sdk, stack).await?)
}

/// Who an operator command claims idempotency keys and holds leases as: the user, the host
/// and the process, so the audit trail and a held lease say who it was.
pub fn operator() -> String {
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("operator:{user}@{host}:{}", std::process::id())
}

/// Writes `text` and a newline to stdout; a closed pipe (`| head`) is not an error.
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{}", text.trim_end()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}

/// `value` as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    print(&serde_json::to_string_pretty(value).context("cannot encode the answer as JSON")?)
}
