//! The local fleet's status file, `<dir>/status.json`: what `nodefleet up` publishes after
//! every reconcile, and what `nodefleet status` reads.
//!
//! `up` holds the fleet's redb file open (redb locks it), so another process cannot read the
//! state store; the status file is the fleet as the running loop last saw it: every node
//! with its record's state, its target's health, its head block, snapshot and process id,
//! the updater node (`null` when there is none), the snapshot catalog (verified, published
//! and retired snapshots, newest first, and `latest_snapshot`, the published one new nodes
//! are launched on), plus the gateway's address and the `up` process itself. It is written
//! to a temporary file and renamed over the old one, so a reader never sees half a document.
//!
//! ```json
//! { "up_pid": 4242, "gateway": "http://127.0.0.1:8545", "nodes": [{"id": "local-a-1", ...,
//!   "snapshot_id": "1764620000000-0123456789abcdef"}], "updater": null,
//!   "latest_snapshot": "1764620000000-0123456789abcdef",
//!   "snapshots": [{"id": "1764620000000-0123456789abcdef", "block": 42,
//!     "created_at": 1764620000000, "bytes": 9000, "uploaded_bytes": 0, "state": "published"}],
//!   ... }
//! ```
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

use nodefleet_gateway::TrafficWindow;
use nodefleet_ports::{
    AuditEvent, NodeState, SnapshotId, SnapshotRecord, SnapshotState, TaskId, Timestamp,
};
use serde::{Deserialize, Serialize};

use crate::node::block_number_within;

/// The file's name in the fleet folder.
pub const STATUS_FILE: &str = "status.json";

/// A status file older than this means its `up` has stopped reconciling: the loop writes it
/// at least every second, and its slowest reconcile (a stop waits up to 5 s for SIGTERM and
/// 5 s more after SIGKILL, a health probe up to 2 s) stays well below this.
pub const STALE_AFTER: Duration = Duration::from_secs(30);

/// The most recent audit events a status carries: a screenful on the status page, and the
/// full trail is one `nodefleet events` away.
pub const STATUS_EVENTS: usize = 30;

/// The fleet as `nodefleet up` last saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// The updater node, which makes the snapshots (never behind the gateway); `null` when
    /// there is none.
    #[serde(default)]
    pub updater: Option<UpdaterStatus>,
    /// The published snapshot new nodes are launched on; `null` when there is none (new
    /// nodes start on a new chain).
    #[serde(default)]
    pub latest_snapshot: Option<SnapshotId>,
    /// The catalog's verified, published and retired snapshots, newest first.
    #[serde(default)]
    pub snapshots: Vec<SnapshotStatus>,
    /// The status page's URL (`nodefleet up --console`), where the control API is too; `null`
    /// when `up` serves none.
    #[serde(default)]
    pub console: Option<String>,
    /// The latest audit events (at most [`STATUS_EVENTS`]), newest first.
    #[serde(default)]
    pub events: Vec<EventStatus>,
    /// Requests per second and latency over the last minutes, as the gateway saw them.
    #[serde(default)]
    pub traffic: TrafficWindow,
    /// Zones failed by `nodefleet chaos fail-zone` (launches there fail, their nodes were
    /// lost), until `chaos restore-zone`.
    #[serde(default)]
    pub failed_zones: Vec<String>,
}

/// One event of the audit trail: what the reactor, the updater or an operator did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventStatus {
    /// When (milliseconds since the Unix epoch).
    pub at: Timestamp,
    /// What happened: `node.launched`, `snapshot.published`, `chaos.zone_failed`, ...
    pub kind: String,
    /// What it happened to: a node id, a snapshot id, a zone.
    pub subject: String,
    /// The reason and outcome, usually JSON.
    pub detail: String,
}

impl From<&AuditEvent> for EventStatus {
    fn from(event: &AuditEvent) -> Self {
        EventStatus {
            at: event.at,
            kind: event.kind.clone(),
            subject: event.subject.clone(),
            detail: event.detail.clone(),
        }
    }
}

/// The updater node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdaterStatus {
    pub id: String,
    pub zone: String,
    /// Its record's state.
    pub state: NodeState,
    /// Its head block, if it answered `eth_blockNumber`.
    pub head_block: Option<u64>,
    /// The snapshot its data dir was hydrated from.
    pub snapshot_id: Option<SnapshotId>,
    /// The process of its current task, while it runs.
    pub pid: Option<u32>,
    pub task: Option<TaskId>,
    /// Its JSON-RPC URL.
    pub url: Option<String>,
}

/// One snapshot of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotStatus {
    pub id: SnapshotId,
    /// The block it holds the chain up to.
    pub block: u64,
    /// When it was made (milliseconds since the Unix epoch).
    pub created_at: Timestamp,
    /// Raw bytes of the data dir it holds.
    pub bytes: u64,
    /// Bytes its upload wrote to the store; 0 when not known (a snapshot found in the store
    /// when `up` started).
    pub uploaded_bytes: u64,
    /// `verified`, `published` or `retired`.
    pub state: SnapshotState,
}

impl From<&SnapshotRecord> for SnapshotStatus {
    fn from(record: &SnapshotRecord) -> Self {
        SnapshotStatus {
            id: record.id.clone(),
            block: record.block_height,
            created_at: record.created_at,
            bytes: record.bytes,
            uploaded_bytes: record.uploaded_bytes,
            state: record.state,
        }
    }
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
    /// How many blocks it is behind the highest head among the serving nodes; `null` when
    /// its head is not known.
    #[serde(default)]
    pub lag_blocks: Option<u64>,
    /// The snapshot its data dir was hydrated from (none when the fleet had no published
    /// snapshot at its launch, and for bare anvil).
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

    /// Asks every node (and the updater) for its head block now, each within `timeout`, in
    /// place of the file's (`None` for a node that does not answer).
    pub async fn probe_heads(&mut self, timeout: Duration) {
        let head_of = |url: Option<&str>| {
            let addr = url.and_then(|url| {
                url.strip_prefix("http://")
                    .and_then(|rest| rest.parse::<SocketAddr>().ok())
            });
            async move { block_number_within(addr?, timeout).await }
        };
        let updater_url = self.updater.as_ref().and_then(|u| u.url.clone());
        let (heads, updater_head) = tokio::join!(
            futures_util::future::join_all(
                self.nodes.iter().map(|node| head_of(node.url.as_deref()))
            ),
            head_of(updater_url.as_deref())
        );
        for (node, head) in self.nodes.iter_mut().zip(heads) {
            node.head_block = head;
        }
        if let Some(updater) = &mut self.updater {
            updater.head_block = updater_head;
        }
        self.fill_lag();
    }

    /// Sets every node's [`NodeStatus::lag_blocks`] from the head blocks: its distance to
    /// the highest head among the serving nodes.
    pub fn fill_lag(&mut self) {
        let highest = self.nodes.iter().filter_map(|n| n.head_block).max();
        for node in &mut self.nodes {
            node.lag_blocks = node
                .head_block
                .zip(highest)
                .map(|(head, highest)| highest.saturating_sub(head));
        }
    }

    /// The catalog entry of [`FleetStatus::latest_snapshot`], if it is listed.
    pub fn latest(&self) -> Option<&SnapshotStatus> {
        let id = self.latest_snapshot.as_ref()?;
        self.snapshots.iter().find(|s| &s.id == id)
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
        if !self.failed_zones.is_empty() {
            out.push_str(&format!(
                "failed zones (chaos): {}: launches there fail until restore-zone\n",
                self.failed_zones.join(" ")
            ));
        }
        match (&self.latest_snapshot, self.latest()) {
            (Some(_), Some(latest)) => out.push_str(&format!(
                "latest snapshot {}: block {}, made {} ago, {}\n",
                latest.id,
                latest.block,
                ago(now.since(latest.created_at)),
                size(latest.bytes)
            )),
            (Some(id), None) => out.push_str(&format!("latest snapshot {id}\n")),
            (None, _) => out.push_str("no published snapshot: new nodes start on a new chain\n"),
        }
        if let Some(updater) = &self.updater {
            let dash = || "-".to_owned();
            out.push_str(&format!(
                "updater {} in {}: {}, head {}, pid {}, snapshot {}\n",
                updater.id,
                updater.zone,
                state_name(updater.state),
                updater.head_block.map_or_else(dash, |h| h.to_string()),
                updater.pid.map_or_else(dash, |p| p.to_string()),
                updater
                    .snapshot_id
                    .as_ref()
                    .map_or_else(dash, ToString::to_string)
            ));
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
        if let Some(line) = traffic_line(&self.traffic) {
            out.push_str(&line);
        }
        if !self.events.is_empty() {
            out.push_str("recent events:\n");
            for event in self.events.iter().take(RENDERED_EVENTS) {
                out.push_str(&format!(
                    "  {} ago  {}  {}\n",
                    ago(now.since(event.at)),
                    event.kind,
                    event.subject
                ));
            }
        }
        if let Some(console) = &self.console {
            out.push_str(&format!("status page: {console}\n"));
        }
        out
    }
}

/// Events the terminal table shows: the status page and `nodefleet events` have more.
const RENDERED_EVENTS: usize = 5;
/// Seconds the terminal's traffic line sums over: recent enough to show a kill's effect.
const TRAFFIC_LINE_SECS: usize = 10;

/// `gateway: 64.3 requests/s over the last 10 s, 0 failed, p99 1.2 ms`, or `None` when the
/// window is empty (no gateway counted, or an old status file).
fn traffic_line(traffic: &TrafficWindow) -> Option<String> {
    let recent = &traffic.seconds[traffic.seconds.len().saturating_sub(TRAFFIC_LINE_SECS)..];
    if recent.is_empty() {
        return None;
    }
    let requests: u64 = recent.iter().map(|s| s.requests).sum();
    let errors: u64 = recent.iter().map(|s| s.errors).sum();
    let p99 = recent
        .iter()
        .filter_map(|s| s.p99_ms)
        .fold(None, |max: Option<f64>, p| {
            Some(max.map_or(p, |m| m.max(p)))
        });
    Some(format!(
        "gateway: {:.1} requests/s over the last {} s, {errors} failed{}\n",
        requests as f64 / recent.len() as f64,
        recent.len(),
        p99.map_or_else(String::new, |p| format!(", p99 {p:.1} ms"))
    ))
}

/// A duration as a person reads an age: `42 s`, `5 min`, `3 h`, `2 d` (whole units, rounded
/// down; each unit until the next one reads at least 2).
fn ago(age: Duration) -> String {
    let secs = age.as_secs();
    match secs {
        0..120 => format!("{secs} s"),
        120..7_200 => format!("{} min", secs / 60),
        7_200..172_800 => format!("{} h", secs / 3_600),
        _ => format!("{} d", secs / 86_400),
    }
}

/// A byte count in binary units with one decimal (`512 B`, `8.8 KiB`, `1.5 GiB`).
fn size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
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
                lag_blocks: Some(0),
            }],
            updater: None,
            latest_snapshot: None,
            snapshots: Vec::new(),
            console: None,
            events: Vec::new(),
            traffic: TrafficWindow::default(),
            failed_zones: Vec::new(),
        }
    }

    const SNAPSHOT: &str = "1764620000000-0123456789abcdef";

    /// [`status`] with a published snapshot (the nodes' and the updater's), a retired older
    /// one, and an updater.
    fn with_snapshots(updated_at: Timestamp) -> FleetStatus {
        let mut fleet = status(updated_at);
        fleet.nodes[0].snapshot_id = Some(SnapshotId::new(SNAPSHOT));
        fleet.latest_snapshot = Some(SnapshotId::new(SNAPSHOT));
        fleet.snapshots = vec![
            SnapshotStatus {
                id: SnapshotId::new(SNAPSHOT),
                block: 42,
                created_at: updated_at.minus(Duration::from_secs(300)),
                bytes: 9_000,
                uploaded_bytes: 0,
                state: SnapshotState::Published,
            },
            SnapshotStatus {
                id: SnapshotId::new("1764610000000-fedcba9876543210"),
                block: 7,
                created_at: updated_at.minus(Duration::from_secs(10_300)),
                bytes: 4_000,
                uploaded_bytes: 4_100,
                state: SnapshotState::Retired,
            },
        ];
        fleet.updater = Some(UpdaterStatus {
            id: "updater-1".into(),
            zone: "local-b".into(),
            state: NodeState::Syncing,
            head_block: Some(50),
            snapshot_id: Some(SnapshotId::new(SNAPSHOT)),
            pid: Some(4343),
            task: Some(TaskId::new("task-2")),
            url: Some("http://127.0.0.1:40002".into()),
        });
        fleet
    }

    #[test]
    fn the_json_has_the_catalog_the_latest_snapshot_and_the_updater_or_nulls() {
        let now = Timestamp::from_millis(1_764_620_300_000);
        let json = serde_json::to_value(with_snapshots(now)).unwrap();
        assert_eq!(json["latest_snapshot"], SNAPSHOT);
        assert_eq!(json["nodes"][0]["snapshot_id"], SNAPSHOT);
        let snapshots = json["snapshots"].as_array().unwrap();
        assert_eq!(snapshots.len(), 2);
        assert_eq!(
            snapshots[0],
            serde_json::json!({
                "id": SNAPSHOT,
                "block": 42,
                "created_at": 1_764_620_000_000u64,
                "bytes": 9_000,
                "uploaded_bytes": 0,
                "state": "published",
            })
        );
        assert_eq!(snapshots[1]["state"], "retired");
        let updater = &json["updater"];
        for (key, value) in [
            ("id", serde_json::json!("updater-1")),
            ("zone", serde_json::json!("local-b")),
            ("state", serde_json::json!("syncing")),
            ("pid", serde_json::json!(4343)),
            ("head_block", serde_json::json!(50)),
            ("snapshot_id", serde_json::json!(SNAPSHOT)),
        ] {
            assert_eq!(updater[key], value, "{key}: {updater}");
        }

        // Nothing published and no updater: the keys are there, null and empty.
        let json = serde_json::to_value(status(now)).unwrap();
        assert!(json["updater"].is_null(), "{json}");
        assert!(json["latest_snapshot"].is_null(), "{json}");
        assert_eq!(json["snapshots"], serde_json::json!([]));

        // A file written before these keys existed still reads.
        let mut old = serde_json::to_value(status(now)).unwrap();
        for key in ["updater", "latest_snapshot", "snapshots"] {
            old.as_object_mut().unwrap().remove(key);
        }
        let read: FleetStatus = serde_json::from_value(old).unwrap();
        assert_eq!(read, status(now));
        let full = with_snapshots(now);
        let text = serde_json::to_string(&full).unwrap();
        assert_eq!(serde_json::from_str::<FleetStatus>(&text).unwrap(), full);
        assert_eq!(full.latest().map(|s| s.block), Some(42));
    }

    #[test]
    fn the_table_names_the_latest_snapshot_its_age_and_the_updater() {
        let now = Timestamp::from_millis(1_764_620_300_000);
        let table = with_snapshots(now).render(now);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[1],
            format!("latest snapshot {SNAPSHOT}: block 42, made 5 min ago, 8.8 KiB"),
            "{table}"
        );
        assert_eq!(
            lines[2],
            format!(
                "updater updater-1 in local-b: syncing, head 50, pid 4343, snapshot {SNAPSHOT}"
            ),
            "{table}"
        );
        assert!(lines[3].starts_with("NODE"), "{table}");
        assert!(lines[4].contains(SNAPSHOT), "{table}");
        // The updater is not a row of the node table.
        assert!(
            !lines[4..].iter().any(|l| l.contains("updater-1")),
            "{table}"
        );
    }

    #[test]
    fn ages_and_sizes_read_in_whole_units() {
        let cases = [
            (0, "0 s"),
            (119, "119 s"),
            (120, "2 min"),
            (7_199, "119 min"),
            (7_200, "2 h"),
            (172_799, "47 h"),
            (172_800, "2 d"),
        ];
        for (secs, text) in cases {
            assert_eq!(ago(Duration::from_secs(secs)), text);
        }
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1_023), "1023 B");
        assert_eq!(size(1_024), "1.0 KiB");
        assert_eq!(size(9_000), "8.8 KiB");
        assert_eq!(size(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
        assert_eq!(size(u64::MAX), "16.0 EiB");
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
        assert_eq!(
            lines[2],
            "no published snapshot: new nodes start on a new chain"
        );
        assert!(
            lines[3].starts_with("NODE       ZONE     STATE    HEALTHY"),
            "{table}"
        );
        let row: Vec<&str> = lines[4].split_whitespace().collect();
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
        let mut fleet = with_snapshots(Timestamp::now());
        // Nobody listens on a port just released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        fleet.nodes[0].url = Some(format!("http://127.0.0.1:{port}"));
        if let Some(updater) = &mut fleet.updater {
            updater.url = Some(format!("http://127.0.0.1:{port}"));
        }
        fleet.probe_heads(Duration::from_millis(500)).await;
        assert_eq!(fleet.nodes[0].head_block, None);
        assert_eq!(fleet.updater.and_then(|u| u.head_block), None);
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
