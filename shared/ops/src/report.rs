//! The fleet report `nodefleet status` shows: a pure function ([`FleetReport::build`], `now`
//! passed in) from what the control plane stores and sees ([`ReportInputs`]: the fleet
//! config, node records, tasks, target health, the snapshot catalog, the updater's memory and
//! the audit trail) to the nodes grouped by zone, the updater, the latest snapshot and its
//! age, and the recent events; rendered as text ([`FleetReport::render`]) or serialised as
//! JSON (serde).
//!
//! # What a row says
//!
//! Each serving node is a record that is not `stopped`, or a live task tagged with a node id
//! that has no record yet (its launch ran, its record was not written). Its task is the
//! record's (else its oldest live tagged task); another live tagged task is its
//! *replacement*, shown with its own status and target state. Its zone is where its live
//! task runs (a replacement may have moved it), else the record's. Its target is its live
//! task's (bridge: instance and host port; awsvpc: address and container port), else the
//! record's; its health is what the load balancer says of that target. It is *healthy* when
//! its task is live and its target healthy. Updater nodes (role `updater`) are listed apart,
//! with the round the snapshot updater is in.
//!
//! Head blocks are not stored anywhere: each row carries the URL of its node's JSON-RPC
//! endpoint where its address is known ([`rpc_url`]), and [`FleetReport::probe_heads`]
//! asks each through a [`HeadProbe`](crate::probe::HeadProbe), concurrently.
//!
//! # JSON
//!
//! Field names follow the local fleet's status document (`nodes[]` with `id`, `zone`,
//! `state`, `healthy`, `target_state`, `head_block`, `snapshot_id`, `task`;
//! `latest_snapshot`; `snapshots[]`; `events[]` with `at`, `kind`, `subject`, `detail`), so
//! a script reads either. `nodes[]` is flat, ordered by zone (the config's order) then id;
//! the text groups it by zone. Times are milliseconds since the Unix epoch.
//!
//! # Error policy
//!
//! None: building never fails. Sources the caller could not read are passed as
//! [`ReportInputs::warnings`] and shown.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use nodefleet_ports::{
    AuditEvent, FleetConfig, NetworkMode, NodeId, NodeRecord, NodeState, Role, SnapshotId,
    SnapshotRecord, SnapshotState, Target, TargetHealth, TargetState, TaskId, TaskInfo, TaskStatus,
    Timestamp, Zone, target_for_task,
};
use nodefleet_updater::round::{RoundOutcome, UpdaterMemory};
use serde::Serialize;

use crate::probe::{HeadProbe, probe_all};

/// Snapshots the report lists (newest first): the published one and a few to fall back to,
/// about a day of four-hourly rounds.
pub const REPORT_SNAPSHOTS: usize = 6;

/// Everything a report is built from.
#[derive(Debug, Clone)]
pub struct ReportInputs {
    /// The fleet's name (its key prefix and task group).
    pub fleet: String,
    /// Where the fleet was read from (`stack NAME`), for the heading.
    pub source: String,
    /// `None` until the health reactor stored one (its first run).
    pub config: Option<FleetConfig>,
    pub nodes: Vec<NodeRecord>,
    /// `None` when the scheduler could not be read (see `warnings`).
    pub tasks: Option<Vec<TaskInfo>>,
    /// `None` when the load balancer could not be read (see `warnings`).
    pub targets: Option<Vec<TargetHealth>>,
    pub snapshots: Vec<SnapshotRecord>,
    /// The snapshot updater's memory, if it has run.
    pub updater: Option<UpdaterMemory>,
    /// Recent audit events, newest first.
    pub events: Vec<AuditEvent>,
    pub network_mode: NetworkMode,
    /// The container port the load balancer routes to (and the node's RPC listens on).
    pub container_port: u16,
    /// Sources that could not be read, one line each.
    pub warnings: Vec<String>,
}

/// A task as a row shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskView {
    pub id: TaskId,
    /// `pending`, `running`, `stopping`, `stopped`; `None` when the scheduler does not list
    /// it (ECS forgets stopped tasks after about an hour) or could not be read.
    pub status: Option<TaskStatus>,
    /// Why it stopped, when it did.
    pub stop_reason: Option<String>,
}

/// One node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeRow {
    pub id: NodeId,
    pub zone: Zone,
    pub role: Role,
    /// The record's state; `launching` for a task without a record yet.
    pub state: NodeState,
    /// Its task is live and its target healthy.
    pub healthy: bool,
    /// Its task (the record's, else its oldest live tagged one).
    pub task: Option<TaskId>,
    pub task_status: Option<TaskStatus>,
    pub stop_reason: Option<String>,
    /// Its load-balancer target (`i-0abc:8545`, `10.0.1.7:8545`).
    pub target: Option<String>,
    /// The load balancer's state of that target; `None` when it is not registered.
    pub target_state: Option<TargetState>,
    /// The load balancer's reason code for a target that is not healthy.
    pub target_reason: Option<String>,
    /// A second live task for the node: its replacement.
    pub replacement: Option<ReplacementView>,
    /// `eth_blockNumber` of its RPC, when asked and answered.
    pub head_block: Option<u64>,
    /// Where its RPC listens, when its address is known.
    pub rpc_url: Option<String>,
    /// The snapshot its data dir was hydrated from.
    pub snapshot_id: Option<SnapshotId>,
}

/// A node's replacement task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplacementView {
    pub task: TaskId,
    pub status: TaskStatus,
    pub target_state: Option<TargetState>,
}

/// The snapshot updater: its nodes and the round it is in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpdaterView {
    /// Updater nodes with a live task or a record that is not stopped.
    pub nodes: Vec<NodeRow>,
    /// The round in progress.
    pub round: Option<RoundView>,
    /// The last finished round.
    pub last_round: Option<LastRoundView>,
    pub rounds_published: u64,
    pub rounds_aborted: u64,
}

/// A round in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoundView {
    pub id: String,
    /// `ensure_node`, `wait_synced`, ... (the updater's step names).
    pub step: String,
    pub started_at: Timestamp,
    pub step_started_at: Timestamp,
    pub node: Option<NodeId>,
    pub task: Option<TaskId>,
    /// Set when the round is being wound down: why.
    pub aborting: Option<String>,
}

/// How the last round ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastRoundView {
    pub id: String,
    pub finished_at: Timestamp,
    /// `published <snapshot> at block <n>`, or `aborted in <step>: <reason> (<detail>)`.
    pub outcome: String,
}

/// One snapshot of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotRow {
    pub id: SnapshotId,
    pub block: u64,
    pub created_at: Timestamp,
    pub bytes: u64,
    pub uploaded_bytes: u64,
    pub state: SnapshotState,
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRow {
    pub at: Timestamp,
    pub kind: String,
    pub subject: String,
    pub detail: String,
}

impl From<&AuditEvent> for EventRow {
    fn from(event: &AuditEvent) -> EventRow {
        EventRow {
            at: event.at,
            kind: event.kind.clone(),
            subject: event.subject.clone(),
            detail: event.detail.clone(),
        }
    }
}

/// What probing heads found, for the line under the nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HeadsSummary {
    /// Nodes whose RPC was asked.
    pub asked: usize,
    /// Nodes that answered.
    pub answered: usize,
    /// Nodes without a known address.
    pub no_address: usize,
    /// The time each node had to answer (milliseconds); 0 when nothing was probed.
    pub timeout_ms: u64,
}

/// The report. See the module doc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FleetReport {
    pub fleet: String,
    pub source: String,
    pub generated_at: Timestamp,
    /// Serving nodes the fleet wants (`None` without a stored config).
    pub desired_nodes: Option<u32>,
    pub healthy_floor: Option<u32>,
    /// The zones, in the config's order (then any other zone a node runs in).
    pub zones: Vec<Zone>,
    pub healthy: usize,
    /// Serving nodes, by zone then id.
    pub nodes: Vec<NodeRow>,
    pub updater: UpdaterView,
    /// The published snapshot new nodes hydrate from (highest block; ties: later id).
    pub latest_snapshot: Option<SnapshotId>,
    /// How old it is (from its creation).
    pub latest_snapshot_age_secs: Option<u64>,
    /// Verified, published and retired snapshots, newest first, at most
    /// [`REPORT_SNAPSHOTS`].
    pub snapshots: Vec<SnapshotRow>,
    /// Newest first.
    pub events: Vec<EventRow>,
    pub heads: HeadsSummary,
    pub warnings: Vec<String>,
}

fn is_live(task: &TaskInfo) -> bool {
    matches!(task.last_status, TaskStatus::Pending | TaskStatus::Running)
        && task.desired_status != TaskStatus::Stopped
}

/// The URL of `task`'s JSON-RPC endpoint, where its address is known: awsvpc, the task's own
/// address and `container_port`; bridge, its instance's address (`TaskInfo::ip`, where the
/// scheduler knows it) and the host port published for `container_port`.
pub fn rpc_url(task: &TaskInfo, mode: NetworkMode, container_port: u16) -> Option<String> {
    let ip = task.ip?;
    let port = match mode {
        NetworkMode::Awsvpc => container_port,
        NetworkMode::Bridge => {
            task.bindings
                .iter()
                .find(|b| b.container_port == container_port)?
                .host_port
        }
    };
    Some(match ip {
        std::net::IpAddr::V4(v4) => format!("http://{v4}:{port}"),
        std::net::IpAddr::V6(v6) => format!("http://[{v6}]:{port}"),
    })
}

/// The published snapshot with the highest block (ties: the later id), as the reactor picks
/// the one new nodes hydrate from.
pub fn latest_published(snapshots: &[SnapshotRecord]) -> Option<&SnapshotRecord> {
    snapshots
        .iter()
        .filter(|s| s.state == SnapshotState::Published)
        .max_by(|a, b| (a.block_height, &a.id).cmp(&(b.block_height, &b.id)))
}

struct Builder<'a> {
    inputs: &'a ReportInputs,
    health: HashMap<&'a Target, &'a TargetHealth>,
    tasks: &'a [TaskInfo],
}

impl<'a> Builder<'a> {
    fn target_of(&self, task: &TaskInfo) -> Option<Target> {
        target_for_task(task, self.inputs.network_mode, self.inputs.container_port)
    }

    fn target_state(&self, target: Option<&Target>) -> Option<&'a TargetHealth> {
        target.and_then(|t| self.health.get(t).copied())
    }

    /// A row for node `id`: its record (if any), its current task and other live tasks.
    fn row(
        &self,
        id: &NodeId,
        record: Option<&NodeRecord>,
        live_tagged: &[&'a TaskInfo],
    ) -> Option<NodeRow> {
        let by_id = |task: &TaskId| self.tasks.iter().find(|t| &t.id == task);
        let current: Option<&TaskInfo> = match record.and_then(|r| r.task.as_ref()) {
            Some(task) => by_id(task),
            None => live_tagged.first().copied(),
        };
        let current_id = current
            .map(|t| t.id.clone())
            .or_else(|| record.and_then(|r| r.task.clone()));
        let replacement = live_tagged
            .iter()
            .copied()
            .filter(|t| Some(&t.id) != current_id.as_ref())
            .max_by_key(|t| (t.started_at.map_or(u64::MAX, Timestamp::as_millis), &t.id));
        let zone = current
            .filter(|t| is_live(t))
            .and_then(|t| t.zone.clone())
            .or_else(|| record.map(|r| r.zone.clone()))
            .or_else(|| current.and_then(|t| t.zone.clone()))?;
        let target = current
            .filter(|t| is_live(t))
            .and_then(|t| self.target_of(t))
            .or_else(|| record.and_then(|r| r.target.clone()));
        let health = self.target_state(target.as_ref());
        let live = current.is_some_and(is_live);
        Some(NodeRow {
            id: id.clone(),
            zone,
            role: record
                .map(|r| r.role)
                .or_else(|| current.and_then(|t| t.role))
                .unwrap_or(Role::Serving),
            state: record.map_or(NodeState::Launching, |r| r.state),
            healthy: live && health.is_some_and(|h| h.state == TargetState::Healthy),
            task: current_id,
            task_status: current.map(|t| t.last_status),
            stop_reason: current
                .filter(|t| !is_live(t))
                .and_then(|t| t.stop_reason.clone()),
            target: target.as_ref().map(ToString::to_string),
            target_state: health.map(|h| h.state),
            target_reason: health
                .filter(|h| h.state != TargetState::Healthy)
                .and_then(|h| h.reason.clone()),
            replacement: replacement.map(|t| ReplacementView {
                task: t.id.clone(),
                status: t.last_status,
                target_state: self
                    .target_state(self.target_of(t).as_ref())
                    .map(|h| h.state),
            }),
            head_block: None,
            rpc_url: current
                .filter(|t| is_live(t))
                .and_then(|t| rpc_url(t, self.inputs.network_mode, self.inputs.container_port)),
            snapshot_id: record
                .and_then(|r| r.snapshot.clone())
                .or_else(|| current.and_then(|t| t.snapshot.clone())),
        })
    }
}

impl FleetReport {
    /// Builds the report; see the module doc.
    pub fn build(inputs: &ReportInputs, now: Timestamp) -> FleetReport {
        let tasks: &[TaskInfo] = inputs.tasks.as_deref().unwrap_or(&[]);
        let builder = Builder {
            inputs,
            health: inputs
                .targets
                .iter()
                .flatten()
                .map(|h| (&h.target, h))
                .collect(),
            tasks,
        };
        let mut tagged: BTreeMap<&NodeId, Vec<&TaskInfo>> = BTreeMap::new();
        for task in tasks.iter().filter(|t| is_live(t)) {
            if let Some(node) = &task.node {
                tagged.entry(node).or_default().push(task);
            }
        }
        for live in tagged.values_mut() {
            live.sort_by_key(|t| (t.started_at.map_or(u64::MAX, Timestamp::as_millis), &t.id));
        }
        let records: BTreeMap<&NodeId, &NodeRecord> =
            inputs.nodes.iter().map(|n| (&n.id, n)).collect();
        let mut ids: BTreeSet<&NodeId> = inputs
            .nodes
            .iter()
            .filter(|n| n.state != NodeState::Stopped)
            .map(|n| &n.id)
            .collect();
        ids.extend(tagged.keys().copied());
        let mut serving = Vec::new();
        let mut updaters = Vec::new();
        for id in ids {
            let live = tagged.get(id).map(Vec::as_slice).unwrap_or(&[]);
            let Some(row) = builder.row(id, records.get(id).copied(), live) else {
                continue;
            };
            match row.role {
                Role::Serving => serving.push(row),
                Role::Updater => updaters.push(row),
            }
        }

        let mut zones: Vec<Zone> = inputs
            .config
            .as_ref()
            .map(|c| c.zones.clone())
            .unwrap_or_default();
        for row in &serving {
            if !zones.contains(&row.zone) {
                zones.push(row.zone.clone());
            }
        }
        let zone_index = |zone: &Zone| zones.iter().position(|z| z == zone).unwrap_or(usize::MAX);
        serving.sort_by(|a, b| (zone_index(&a.zone), &a.id).cmp(&(zone_index(&b.zone), &b.id)));

        let latest = latest_published(&inputs.snapshots);
        let mut snapshots: Vec<SnapshotRow> = inputs
            .snapshots
            .iter()
            .filter(|s| {
                matches!(
                    s.state,
                    SnapshotState::Verified | SnapshotState::Published | SnapshotState::Retired
                )
            })
            .map(|s| SnapshotRow {
                id: s.id.clone(),
                block: s.block_height,
                created_at: s.created_at,
                bytes: s.bytes,
                uploaded_bytes: s.uploaded_bytes,
                state: s.state,
            })
            .collect();
        snapshots.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        snapshots.truncate(REPORT_SNAPSHOTS);

        let mut warnings = inputs.warnings.clone();
        if inputs.config.is_none() {
            warnings.push(
                "no fleet config is stored yet: the health reactor stores it on its first run"
                    .to_owned(),
            );
        }
        FleetReport {
            fleet: inputs.fleet.clone(),
            source: inputs.source.clone(),
            generated_at: now,
            desired_nodes: inputs.config.as_ref().map(|c| c.serving_nodes),
            healthy_floor: inputs.config.as_ref().map(|c| c.healthy_floor),
            healthy: serving.iter().filter(|n| n.healthy).count(),
            zones,
            nodes: serving,
            updater: updater_view(updaters, inputs.updater.as_ref()),
            latest_snapshot: latest.map(|s| s.id.clone()),
            latest_snapshot_age_secs: latest.map(|s| now.since(s.created_at).as_secs()),
            snapshots,
            events: inputs.events.iter().map(EventRow::from).collect(),
            heads: HeadsSummary::default(),
            warnings,
        }
    }

    /// Asks every node with a known RPC URL for its head block through `probe`, all at
    /// once, each within `timeout`; fills `head_block` and [`FleetReport::heads`].
    pub async fn probe_heads(&mut self, probe: &dyn HeadProbe, timeout: Duration) {
        let rows = self.nodes.iter_mut().chain(self.updater.nodes.iter_mut());
        let mut asked: Vec<(&mut NodeRow, String)> = Vec::new();
        let mut no_address = 0;
        for row in rows {
            match row.rpc_url.clone() {
                Some(url) => asked.push((row, url)),
                None => no_address += 1,
            }
        }
        let urls: Vec<String> = asked.iter().map(|(_, url)| url.clone()).collect();
        let heads = probe_all(probe, &urls, timeout).await;
        let mut answered = 0;
        for ((row, _), head) in asked.into_iter().zip(heads) {
            answered += usize::from(head.is_some());
            row.head_block = head;
        }
        self.heads = HeadsSummary {
            asked: urls.len(),
            answered,
            no_address,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
    }

    /// The report as text for a terminal (see the module doc), ages counted from `now`.
    pub fn render(&self, now: Timestamp) -> String {
        let mut out = String::new();
        let desired = self
            .desired_nodes
            .map_or_else(|| "?".to_owned(), |n| n.to_string());
        out.push_str(&format!(
            "{}, fleet {}: {} of {desired} serving nodes healthy, zones {}\n",
            self.source,
            self.fleet,
            self.healthy,
            join(self.zones.iter().map(Zone::as_str)),
        ));
        for warning in &self.warnings {
            out.push_str(&format!("warning: {warning}\n"));
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
            (None, _) => out.push_str("no published snapshot: new nodes sync from genesis\n"),
        }
        out.push_str(&self.render_updater(now));
        for zone in &self.zones {
            let rows: Vec<&NodeRow> = self.nodes.iter().filter(|n| &n.zone == zone).collect();
            let healthy = rows.iter().filter(|n| n.healthy).count();
            out.push_str(&format!(
                "\nzone {zone}: {} nodes, {healthy} healthy\n",
                rows.len()
            ));
            if !rows.is_empty() {
                out.push_str(&table(&rows, "  "));
            }
        }
        if !self.updater.nodes.is_empty() {
            out.push_str("\nupdater nodes\n");
            let rows: Vec<&NodeRow> = self.updater.nodes.iter().collect();
            out.push_str(&table(&rows, "  "));
        }
        out.push_str(&self.heads_line());
        out.push_str(&format!(
            "\nrecent events ({}, newest first)\n",
            self.events.len()
        ));
        if self.events.is_empty() {
            out.push_str("  none\n");
        }
        out.push_str(&render_events(&self.events, now, "  "));
        out
    }

    fn latest(&self) -> Option<&SnapshotRow> {
        let id = self.latest_snapshot.as_ref()?;
        self.snapshots.iter().find(|s| &s.id == id)
    }

    fn render_updater(&self, now: Timestamp) -> String {
        let updater = &self.updater;
        let mut line = match &updater.round {
            Some(round) => format!(
                "snapshot updater: round {} at {} for {}{}{}",
                round.id,
                round.step,
                ago(now.since(round.step_started_at)),
                round
                    .task
                    .as_ref()
                    .map(|t| format!(", task {}", short_task(t)))
                    .unwrap_or_default(),
                round
                    .aborting
                    .as_ref()
                    .map(|why| format!(", aborting: {why}"))
                    .unwrap_or_default(),
            ),
            None => "snapshot updater: idle".to_owned(),
        };
        if let Some(last) = &updater.last_round {
            line.push_str(&format!(
                "; last round {} {} ago: {}",
                last.id,
                ago(now.since(last.finished_at)),
                last.outcome
            ));
        }
        line.push_str(&format!(
            " ({} published, {} aborted)\n",
            updater.rounds_published, updater.rounds_aborted
        ));
        line
    }

    fn heads_line(&self) -> String {
        let heads = &self.heads;
        if heads.asked == 0 && heads.no_address == 0 {
            return String::new();
        }
        let mut line = String::from("\nheads: ");
        if heads.asked > 0 {
            line.push_str(&format!(
                "{} of {} nodes answered eth_blockNumber within {} ms",
                heads.answered, heads.asked, heads.timeout_ms
            ));
        }
        if heads.no_address > 0 {
            if heads.asked > 0 {
                line.push_str("; ");
            }
            line.push_str(&format!("{} without a known address", heads.no_address));
        }
        if heads.answered < heads.asked + heads.no_address {
            line.push_str(
                ". '-' is a head not seen: nodes listen on private addresses in the VPC, so \
                 run this from a machine inside it to see them",
            );
        }
        line.push('\n');
        line
    }
}

fn updater_view(nodes: Vec<NodeRow>, memory: Option<&UpdaterMemory>) -> UpdaterView {
    let round = memory.and_then(|m| m.round.as_ref()).map(|r| RoundView {
        id: r.id.clone(),
        step: r.step.as_str().to_owned(),
        started_at: r.started_at,
        step_started_at: r.step_started_at,
        node: r.node.clone(),
        task: r.task.clone(),
        aborting: r
            .abort
            .as_ref()
            .map(|a| format!("{} in {}: {}", a.reason.as_str(), a.step.as_str(), a.detail)),
    });
    let last_round = memory
        .and_then(|m| m.last.as_ref())
        .map(|last| LastRoundView {
            id: last.id.clone(),
            finished_at: last.finished_at,
            outcome: match &last.outcome {
                RoundOutcome::Published {
                    snapshot,
                    block_height,
                    ..
                } => format!("published {snapshot} at block {block_height}"),
                RoundOutcome::Aborted(abort) => format!(
                    "aborted in {}: {} ({})",
                    abort.step.as_str(),
                    abort.reason.as_str(),
                    abort.detail
                ),
            },
        });
    UpdaterView {
        nodes,
        round,
        last_round,
        rounds_published: memory.map_or(0, |m| m.rounds_published),
        rounds_aborted: memory.map_or(0, |m| m.rounds_aborted),
    }
}

/// The node table, each line indented by `indent`.
fn table(rows: &[&NodeRow], indent: &str) -> String {
    let dash = || "-".to_owned();
    let mut cells = vec![
        [
            "NODE",
            "STATE",
            "TASK",
            "STATUS",
            "TARGET",
            "HEALTH",
            "HEAD",
            "SNAPSHOT",
            "REPLACEMENT",
        ]
        .map(str::to_owned),
    ];
    cells.extend(rows.iter().map(|node| {
        [
            node.id.to_string(),
            snake(&node.state),
            node.task.as_ref().map_or_else(dash, short_task),
            node.task_status.as_ref().map_or_else(dash, snake),
            node.target.clone().unwrap_or_else(dash),
            match (&node.target_state, &node.target_reason) {
                (Some(state), Some(reason)) => format!("{} ({reason})", snake(state)),
                (Some(state), None) => snake(state),
                (None, _) => dash(),
            },
            node.head_block.map_or_else(dash, |h| h.to_string()),
            node.snapshot_id
                .as_ref()
                .map_or_else(dash, ToString::to_string),
            node.replacement.as_ref().map_or_else(dash, |r| {
                format!(
                    "{} {}{}",
                    short_task(&r.task),
                    snake(&r.status),
                    r.target_state
                        .as_ref()
                        .map(|s| format!(", {}", snake(s)))
                        .unwrap_or_default()
                )
            }),
        ]
    }));
    let columns = cells[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| cells.iter().map(|row| row[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &cells {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(indent);
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Events as lines: UTC time, age, kind, subject, detail; each indented by `indent`.
pub fn render_events(events: &[EventRow], now: Timestamp, indent: &str) -> String {
    let kind_width = events.iter().map(|e| e.kind.len()).max().unwrap_or(0);
    let subject_width = events.iter().map(|e| e.subject.len()).max().unwrap_or(0);
    let mut out = String::new();
    for event in events {
        out.push_str(&format!(
            "{indent}{}  {:>8} ago  {:<kind_width$}  {:<subject_width$}  {}\n",
            utc(event.at),
            ago(now.since(event.at)),
            event.kind,
            event.subject,
            event.detail.replace('\n', " "),
        ));
    }
    out
}

/// The last path segment of an ECS task ARN (`arn:...:task/cluster/<id>`), which is what
/// the console shows; other ids whole.
pub fn short_task(task: &TaskId) -> String {
    task.as_str()
        .rsplit('/')
        .next()
        .unwrap_or(task.as_str())
        .to_owned()
}

/// A serde enum as JSON spells it (`serving`, `wait_synced`).
fn snake<T: Serialize + std::fmt::Debug>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{value:?}"))
}

fn join<'s>(items: impl Iterator<Item = &'s str>) -> String {
    let items: Vec<&str> = items.collect();
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(" ")
    }
}

/// A duration as a person reads an age: `42 s`, `5 min`, `3 h`, `2 d` (whole units, rounded
/// down; each unit until the next one reads at least 2). The local status uses the same.
pub fn ago(age: Duration) -> String {
    let secs = age.as_secs();
    match secs {
        0..120 => format!("{secs} s"),
        120..7_200 => format!("{} min", secs / 60),
        7_200..172_800 => format!("{} h", secs / 3_600),
        _ => format!("{} d", secs / 86_400),
    }
}

/// A byte count in binary units with one decimal (`512 B`, `8.8 KiB`, `1.5 GiB`).
pub fn size(bytes: u64) -> String {
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

/// A timestamp as UTC, `2026-03-01T12:34:56Z` (civil date from days since the epoch:
/// Howard Hinnant's `civil_from_days`, exact for the proleptic Gregorian calendar).
pub fn utc(at: Timestamp) -> String {
    let secs = at.as_millis() / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let z = i64::try_from(days).unwrap_or(i64::MAX / 2) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_are_civil() {
        assert_eq!(utc(Timestamp::EPOCH), "1970-01-01T00:00:00Z");
        // 2000-02-29 (a leap day of a century leap year) 12:34:56.
        assert_eq!(
            utc(Timestamp::from_millis(951_827_696_000)),
            "2000-02-29T12:34:56Z"
        );
        assert_eq!(
            utc(Timestamp::from_millis(1_800_000_000_000)),
            "2027-01-15T08:00:00Z"
        );
    }

    #[test]
    fn ages_and_sizes_read_like_the_local_status() {
        assert_eq!(ago(Duration::from_secs(42)), "42 s");
        assert_eq!(ago(Duration::from_secs(300)), "5 min");
        assert_eq!(ago(Duration::from_secs(3 * 3_600)), "3 h");
        assert_eq!(ago(Duration::from_secs(3 * 86_400)), "3 d");
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
    }

    #[test]
    fn task_arns_are_shortened_to_their_id() {
        assert_eq!(
            short_task(&TaskId::new("arn:aws:ecs:us-east-1:1:task/c/0123abcd")),
            "0123abcd"
        );
        assert_eq!(short_task(&TaskId::new("task-7")), "task-7");
    }
}
