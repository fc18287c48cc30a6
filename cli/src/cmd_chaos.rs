//! `nodefleet chaos`: break the running local fleet on purpose, for demos and tests, and
//! watch it heal itself (`nodefleet status`).
//!
//! - `kill-node [ID]`: SIGKILL the node's process (its agent; the agent's anvil dies with it),
//!   as a crash from outside. Without an ID, the first healthy serving node. Nothing tells
//!   the fleet: its loop sees the task exit and replaces the node.
//! - `stall-node ID`: the node stops producing blocks while its process lives: anvil's own
//!   RPC on the node's URL (not through the gateway) turns interval mining off
//!   (`evm_setIntervalMining 0`; with `--block-time` set, `evm_setAutomine false` alone keeps
//!   mining) and automine off (so a transaction mines nothing either). Its head ages past the
//!   fleet's max head age, its health check fails, and the reactor replaces it, stopping it
//!   once the replacement is healthy.
//! - `fail-zone ZONE` / `restore-zone ZONE`: asks the running `up` through its console's
//!   control API (`POST <console>/api/chaos/fail-zone/<zone>`, the console's URL from the
//!   status file): the zone's nodes are lost and launches there fail with a capacity error
//!   until restored; the replacements go to the other zones.
//!
//! Every action first checks that an `up` runs in `--dir` (its status file, as
//! `nodefleet status` does), and a node's process is signalled only while that `up` is its
//! parent, so a pid reused since the status was written is never hit.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use http::Method;
use nodefleet_local::FleetStatus;
use nodefleet_local::child::{kill_outright, parent_of};
use nodefleet_local::node::{self, LOCAL_MAX_HEAD_AGE};
use nodefleet_local::status::NodeStatus;
use serde_json::{Value, json};

use crate::local_fleet::{DirArg, call, running};

/// How long a node's RPC gets per call: a loopback answer takes a millisecond; a node that
/// takes seconds is not one to stall politely.
const RPC_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Args)]
pub struct ChaosArgs {
    #[command(subcommand)]
    action: ChaosAction,
}

#[derive(Debug, Subcommand)]
enum ChaosAction {
    /// SIGKILL a node's process, as a crash; the fleet notices and replaces it on its own.
    KillNode {
        /// The node (`nodefleet status` lists them) [default: the first healthy serving
        /// node]
        id: Option<String>,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Make a node stop producing blocks while its process lives; its health check fails
    /// once its head is too old, and the fleet replaces it.
    StallNode {
        /// The node (`nodefleet status` lists them).
        id: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Fail a zone of the running fleet: its nodes are lost and launches there fail with a
    /// capacity error until `restore-zone`.
    FailZone {
        /// The zone (`local-a`, `local-b`, ...).
        zone: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// End a `fail-zone`: the zone takes launches again.
    RestoreZone {
        /// The zone (`local-a`, `local-b`, ...).
        zone: String,
        #[command(flatten)]
        dir: DirArg,
    },
}

pub async fn run(args: ChaosArgs) -> anyhow::Result<()> {
    match args.action {
        ChaosAction::KillNode { id, dir } => kill_node(&dir.dir, id.as_deref()),
        ChaosAction::StallNode { id, dir } => stall_node(&dir.dir, &id).await,
        ChaosAction::FailZone { zone, dir } => fail_zone(&dir.dir, &zone).await,
        ChaosAction::RestoreZone { zone, dir } => restore_zone(&dir.dir, &zone).await,
    }
}

/// The serving node `id` of `status`, or an error listing the ones there are.
fn node<'a>(status: &'a FleetStatus, id: &str) -> anyhow::Result<&'a NodeStatus> {
    status.nodes.iter().find(|n| n.id == id).with_context(|| {
        let ids: Vec<&str> = status.nodes.iter().map(|n| n.id.as_str()).collect();
        format!(
            "no serving node {id} in the fleet (it has {})",
            if ids.is_empty() {
                "none".to_owned()
            } else {
                ids.join(", ")
            }
        )
    })
}

fn kill_node(dir: &Path, id: Option<&str>) -> anyhow::Result<()> {
    let status = running(dir)?;
    let victim = match id {
        Some(id) => node(&status, id)?,
        None => status
            .nodes
            .iter()
            .find(|n| n.healthy && n.pid.is_some())
            .context("no healthy serving node to kill (see `nodefleet status`)")?,
    };
    let pid = victim
        .pid
        .with_context(|| format!("node {} has no running process now", victim.id))?;
    if parent_of(pid) != Some(status.up_pid) {
        bail!(
            "process {pid} of node {} is not a node of nodefleet up (pid {}) any more; try again",
            victim.id,
            status.up_pid
        );
    }
    kill_outright(pid).with_context(|| format!("cannot kill process {pid}"))?;
    say(&format!(
        "killed node {} in {} (pid {pid}, task {}) with SIGKILL; the fleet replaces it on its \
         own (`nodefleet status --dir {}`)",
        victim.id,
        victim.zone,
        victim.task.as_ref().map_or("-", |t| t.as_str()),
        dir.display()
    ));
    Ok(())
}

async fn stall_node(dir: &Path, id: &str) -> anyhow::Result<()> {
    let status = running(dir)?;
    let victim = node(&status, id)?;
    let url = victim
        .url
        .as_deref()
        .with_context(|| format!("node {id} has no RPC URL yet"))?;
    let addr: SocketAddr = url
        .strip_prefix("http://")
        .and_then(|rest| rest.parse().ok())
        .with_context(|| format!("node {id}'s URL {url} is not http://<ip>:<port>"))?;
    for (method, params) in [
        ("evm_setIntervalMining", json!([0])),
        ("evm_setAutomine", json!([false])),
    ] {
        node::call_within(addr, method, params, RPC_TIMEOUT)
            .await
            .with_context(|| format!("cannot stall node {id} at {url}"))?;
    }
    let head = node::block_number_within(addr, RPC_TIMEOUT)
        .await
        .map_or_else(|| "?".to_owned(), |block| block.to_string());
    say(&format!(
        "stalled node {id} in {} ({url}): it stopped producing blocks at block {head} and \
         its process runs on; once its head is older than {} s its health check fails and \
         the fleet replaces it",
        victim.zone,
        LOCAL_MAX_HEAD_AGE.as_secs()
    ));
    Ok(())
}

async fn fail_zone(dir: &Path, zone: &str) -> anyhow::Result<()> {
    let answer = call(dir, Method::POST, &format!("/api/chaos/fail-zone/{zone}")).await?;
    let stopped: Vec<&str> = answer["stopped"]
        .as_array()
        .map(|tasks| tasks.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    say(&format!(
        "zone {zone} failed: {}; launches there fail with a capacity error until \
         `nodefleet chaos restore-zone {zone}`, and the fleet moves its nodes to the other zones",
        if stopped.is_empty() {
            "no task was running there".to_owned()
        } else {
            format!("its tasks {} are lost", stopped.join(", "))
        }
    ));
    Ok(())
}

async fn restore_zone(dir: &Path, zone: &str) -> anyhow::Result<()> {
    call(
        dir,
        Method::POST,
        &format!("/api/chaos/restore-zone/{zone}"),
    )
    .await?;
    say(&format!(
        "zone {zone} restored: it takes launches again; nodes go back to it as the fleet \
         replaces them"
    ));
    Ok(())
}

/// A line for the person at the terminal.
fn say(line: &str) {
    #[allow(clippy::print_stdout)] // the command's output
    {
        println!("{line}");
    }
}
