//! The local fleet's status file, `<dir>/status.json`: what `nodefleet up` publishes after
//! every reconcile, and what `nodefleet status` reads.
//!
//! `up` holds the fleet's redb file open (redb locks it), so another process cannot read the
//! state store; the status file is the fleet as the running loop last saw it: every node
//! with its record's state, its target's health, its head block, snapshot and process id,
//! plus the gateway's address and the `up` process itself. It is written to a temporary
//! file and renamed over the old one, so a reader never sees half a document.
//!
//! # Is an `up` running?
//!
//! A status file outlives an `up` that was killed outright, so [`FleetStatus::check_running`]
//! decides from more than the file's presence: the recorded process must be alive (not a
//! zombie) with the start time it recorded (a pid reused by another process does not count),
//! and the file must be younger than [`STALE_AFTER`]. A clean shutdown removes the file.
//!
//! # Error policy
//!
//! Every [`StatusError`] is a final answer for the command that asked (nothing here is worth
//! a retry): no file, an unreadable or invalid file, or an `up` that is gone or stuck.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nodefleet_ports::{NodeState, SnapshotId, TaskId, Timestamp};
use serde::{Deserialize, Serialize};

use crate::node::block_number_within;

/// The file's name in the fleet folder.
pub const STATUS_FILE: &str = "status.json";

/// A status file older than this means its `up` has stopped reconciling: the loop writes it
/// at least every second, and its slowest reconcile (a stop waits up to 5 s for SIGTERM and
/// 5 s more after SIGKILL, a health probe up to 2 s) stays well below this.
pub const STALE_AFTER: Duration = Duration::from_secs(30);

/// The fleet as `nodefleet up` last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetStatus {
    /// The `nodefleet up` process.
    pub up_pid: u32,
    /// Its start time (clock ticks after boot, `/proc/<pid>/stat`), to tell a reused pid.
    pub up_started: Option<u64>,
    /// The gateway's JSON-RPC URL.
    pub gateway: String,
    /// Serving nodes the fleet wants.
    pub desired_nodes: u32,
    pub zones: Vec<String>,
    /// When this was written (milliseconds since the Unix epoch).
    pub updated_at: Timestamp,
    /// Why the last reconcile could not observe the fleet, if it could not.
    pub last_error: Option<String>,
    pub nodes: Vec<NodeStatus>,
}

/// One node of the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: String,
    pub zone: String,
    /// The node record's state (`launching`, `syncing`, `serving`, ...).
    pub state: NodeState,
    /// Its target is registered and its last health check passed.
    pub healthy: bool,
    /// Its target's state as the registry reports it (`healthy`, `initial`, ...), if
    /// registered.
    pub target_state: Option<String>,
    /// Its head block, if it answered `eth_blockNumber` (at `updated_at` in the file; live
    /// in `nodefleet status`).
    pub head_block: Option<u64>,
    /// The snapshot its data dir was hydrated from (none for bare anvil).
    pub snapshot_id: Option<SnapshotId>,
    /// The process of its current task, while it runs.
    pub pid: Option<u32>,
    /// Its current task.
    pub task: Option<TaskId>,
    /// Its JSON-RPC URL, `http://127.0.0.1:<port>`.
    pub url: Option<String>,
}

/// Why a status file says no fleet is running, or cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("no nodefleet up is running in {dir}: {path} does not exist")]
    Missing { dir: PathBuf, path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a fleet status: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(
        "no nodefleet up is running in {dir}: its process {pid} is gone (the status file is left from a run that was killed)"
    )]
    Gone { dir: PathBuf, pid: u32 },
    #[error(
        "nodefleet up (pid {pid}) in {dir} has not updated its status for {age_secs} s (more than {} s): it is stuck or stopping",
        STALE_AFTER.as_secs()
    )]
    Stale {
        dir: PathBuf,
        pid: u32,
        age_secs: u64,
    },
}

impl FleetStatus {
    /// Reads `<dir>/status.json`.
    pub fn read(dir: &Path) -> Result<FleetStatus, StatusError> {
        let path = dir.join(STATUS_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StatusError::Missing {
                    dir: dir.to_path_buf(),
                    path,
                });
            }
            Err(source) => return Err(StatusError::Unreadable { path, source }),
        };
        serde_json::from_str(&text).map_err(|e| StatusError::Invalid {
            path,
            message: e.to_string(),
        })
    }

    /// Writes `<dir>/status.json` atomically: a temporary file in the same folder, flushed,
    /// then renamed over the old one.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let path = dir.join(STATUS_FILE);
        let temp = dir.join(format!(".{STATUS_FILE}.{}.tmp", std::process::id()));
        let mut file = std::fs::File::create(&temp)?;
        let written = serde_json::to_writer_pretty(&mut file, self)
            .map_err(std::io::Error::other)
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.flush());
        drop(file);
        match written.and_then(|()| std::fs::rename(&temp, &path)) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                Err(e)
            }
        }
    }

    /// Removes `<dir>/status.json` (a clean shutdown); a missing file is fine.
    pub fn remove(dir: &Path) -> std::io::Result<()> {
        match std::fs::remove_file(dir.join(STATUS_FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// `Ok` if the `up` that wrote this is still running and wrote it less than
    /// [`STALE_AFTER`] before `now` (see the module doc).
    pub fn check_running(&self, dir: &Path, now: Timestamp) -> Result<(), StatusError> {
        let alive = process_start_time(self.up_pid)
            .is_some_and(|started| self.up_started.is_none_or(|recorded| recorded == started));
        if !alive {
            return Err(StatusError::Gone {
                dir: dir.to_path_buf(),
                pid: self.up_pid,
            });
        }
        let age = now.since(self.updated_at);
        if age > STALE_AFTER {
            return Err(StatusError::Stale {
                dir: dir.to_path_buf(),
                pid: self.up_pid,
                age_secs: age.as_secs(),
            });
        }
        Ok(())
    }

    /// How many nodes are healthy.
    pub fn healthy(&self) -> usize {
        self.nodes.iter().filter(|n| n.healthy).count()
    }

    /// Asks every node for its head block now, each within `timeout`, in place of the file's
    /// (`None` for a node that does not answer).
    pub async fn probe_heads(&mut self, timeout: Duration) {
        let heads = futures_util::future::join_all(self.nodes.iter().map(|node| async move {
            let addr = node.url.as_deref().and_then(|url| {
                url.strip_prefix("http://")
                    .and_then(|rest| rest.parse::<SocketAddr>().ok())
            })?;
            block_number_within(addr, timeout).await
        }))
        .await;
        for (node, head) in self.nodes.iter_mut().zip(heads) {
            node.head_block = head;
        }
    }

    /// The status as a table for a terminal, its age counted from `now`.
    pub fn render(&self, now: Timestamp) -> String {
        let age = now.since(self.updated_at);
        let mut out = format!(
            "nodefleet up (pid {}) at {}: {} of {} nodes healthy, zones {}, updated {}.{} s ago\n",
            self.up_pid,
            self.gateway,
            self.healthy(),
            self.desired_nodes,
            self.zones.join(" "),
            age.as_secs(),
            age.subsec_millis() / 100
        );
        if let Some(error) = &self.last_error {
            out.push_str(&format!("last reconcile failed: {error}\n"));
        }
        let dash = || "-".to_owned();
        let mut rows = vec![
            [
                "NODE", "ZONE", "STATE", "HEALTHY", "HEAD", "PID", "SNAPSHOT", "TASK",
            ]
            .map(str::to_owned),
        ];
        rows.extend(self.nodes.iter().map(|node| {
            [
                node.id.clone(),
                node.zone.clone(),
                state_name(node.state),
                if node.healthy { "yes" } else { "no" }.to_owned(),
                node.head_block.map_or_else(dash, |h| h.to_string()),
                node.pid.map_or_else(dash, |p| p.to_string()),
                node.snapshot_id
                    .as_ref()
                    .map_or_else(dash, ToString::to_string),
                node.task.as_ref().map_or_else(dash, ToString::to_string),
            ]
        }));
        let widths: Vec<usize> = (0..8)
            .map(|column| rows.iter().map(|row| row[column].len()).max().unwrap_or(0))
            .collect();
        for row in &rows {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}

/// A node state as the JSON spells it (`serving`).
fn state_name(state: NodeState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{state:?}"))
}

/// The start time of a running process (clock ticks after boot, field 22 of
/// `/proc/<pid>/stat`); `None` if there is no such process or it is a zombie (exited, not
/// reaped).
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or parentheses:
    // the fields after the last ')' start at field 3, the state.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // Field 22 is the 19th after the state (field 3).
    fields.nth(18)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("nodefleet-status-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn status(updated_at: Timestamp) -> FleetStatus {
        FleetStatus {
            up_pid: std::process::id(),
            up_started: process_start_time(std::process::id()),
            gateway: "http://127.0.0.1:8545".into(),
            desired_nodes: 1,
            zones: vec!["local-a".into()],
            updated_at,
            last_error: None,
            nodes: vec![NodeStatus {
                id: "local-a-1".into(),
                zone: "local-a".into(),
                state: NodeState::Serving,
                healthy: true,
                target_state: Some("healthy".into()),
                head_block: Some(42),
                snapshot_id: None,
                pid: Some(4242),
                task: Some(TaskId::new("task-1")),
                url: Some("http://127.0.0.1:40001".into()),
            }],
        }
    }

    #[test]
    fn the_file_round_trips_and_is_replaced_whole() {
        let dir = temp_dir("round-trip");
        let now = Timestamp::now();
        let first = status(now);
        first.write(&dir).unwrap();
        assert_eq!(FleetStatus::read(&dir).unwrap(), first);
        let text = std::fs::read_to_string(dir.join(STATUS_FILE)).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let node = &json["nodes"][0];
        for key in [
            "id",
            "zone",
            "state",
            "healthy",
            "head_block",
            "snapshot_id",
            "pid",
        ] {
            assert!(node.get(key).is_some(), "{key} missing: {node}");
        }
        assert_eq!(node["state"], "serving");

        let mut second = status(now.plus(Duration::from_secs(1)));
        second.nodes.clear();
        second.write(&dir).unwrap();
        assert_eq!(FleetStatus::read(&dir).unwrap(), second);
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|name| name != STATUS_FILE)
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

        FleetStatus::remove(&dir).unwrap();
        FleetStatus::remove(&dir).unwrap();
        assert!(matches!(
            FleetStatus::read(&dir),
            Err(StatusError::Missing { .. })
        ));
        std::fs::write(dir.join(STATUS_FILE), "{not json").unwrap();
        assert!(matches!(
            FleetStatus::read(&dir),
            Err(StatusError::Invalid { .. })
        ));
    }

    #[test]
    fn a_live_fresh_writer_is_running_and_a_gone_reused_or_stale_one_is_not() {
        let dir = temp_dir("running");
        let now = Timestamp::now();
        assert!(status(now).check_running(&dir, now).is_ok());

        let stale = status(now.minus(STALE_AFTER + Duration::from_secs(1)));
        let error = stale.check_running(&dir, now).unwrap_err();
        assert!(
            matches!(error, StatusError::Stale { age_secs: 31, .. }),
            "{error}"
        );

        let mut reused = status(now);
        reused.up_started = reused.up_started.map(|t| t + 1);
        assert!(matches!(
            reused.check_running(&dir, now),
            Err(StatusError::Gone { .. })
        ));

        // A child that has exited and been reaped: its pid names no process.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let mut gone = status(now);
        gone.up_pid = pid;
        gone.up_started = None;
        let error = gone.check_running(&dir, now).unwrap_err();
        assert!(
            error.to_string().contains("no nodefleet up is running"),
            "{error}"
        );
    }

    #[test]
    fn the_table_has_a_row_per_node_and_says_how_old_it_is() {
        let now = Timestamp::now();
        let mut fleet = status(now.minus(Duration::from_millis(1_500)));
        fleet.last_error = Some("could not list tasks".into());
        fleet.nodes[0].pid = None;
        let table = fleet.render(now);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].contains("1 of 1 nodes healthy") && lines[0].contains("updated 1.5 s ago"),
            "{table}"
        );
        assert_eq!(lines[1], "last reconcile failed: could not list tasks");
        assert!(
            lines[2].starts_with("NODE       ZONE     STATE    HEALTHY"),
            "{table}"
        );
        let row: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(
            row,
            [
                "local-a-1",
                "local-a",
                "serving",
                "yes",
                "42",
                "-",
                "-",
                "task-1"
            ]
        );
    }

    #[tokio::test]
    async fn heads_are_probed_live_and_none_when_a_node_does_not_answer() {
        let mut fleet = status(Timestamp::now());
        // Nobody listens on a port just released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        fleet.nodes[0].url = Some(format!("http://127.0.0.1:{port}"));
        fleet.probe_heads(Duration::from_millis(500)).await;
        assert_eq!(fleet.nodes[0].head_block, None);
    }

    #[test]
    fn a_zombie_has_no_start_time() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not reaped yet: a zombie once it exits.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while process_start_time(pid).is_some() {
            assert!(std::time::Instant::now() < deadline, "{pid} never exited");
            std::thread::sleep(Duration::from_millis(10));
        }
        child.wait().unwrap();
        assert!(process_start_time(std::process::id()).is_some());
    }
}
