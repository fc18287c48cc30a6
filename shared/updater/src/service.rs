//! The snapshot updater as a service: what one tick does, the same in the Lambda and in
//! `nodefleet up`.
//!
//! 1. Take the lease `snapshot-updater` for [`UpdaterSettings::lease_ttl`]. Held by someone
//!    else: nothing is done ([`UpdaterRun::Busy`]).
//! 2. Read the memory ([`UpdaterMemory`], control state `snapshot-updater`).
//! 3. Observe: the live updater tasks (scheduler), the round node's agent report (channel),
//!    what `latest` names (object store; its block from the catalog record, or the manifest).
//! 4. [`transition`] with a tick; save the memory (versioned); perform the effects one by
//!    one, feeding each result back through [`transition`] and saving after each. Then
//!    observe again and tick again, until a tick changes nothing or
//!    [`UpdaterSettings::max_ticks`] is reached: a round moves as far as it can without
//!    waiting, and no further (each step's waiting is for the next invocation).
//! 5. Release the lease.
//!
//! [`node_gone`] is the other invocation, under the same lease: it tells the round in flight
//! that its task is gone for sure (a local fleet restarting on its state, whose previous
//! run's tasks died with it) and performs what follows, without a tick.
//!
//! The lease is renewed before every effect that can take a while (verify, publish, prune):
//! a renewal that fails (someone took the lease) stops the invocation before the effect.
//! An invocation works with the one `now` it was given, so a renewal checks the lease is
//! still this tick's (its version is a fencing token) but does not move its expiry past
//! `now + lease_ttl`: [`UpdaterSettings::lease_ttl`] must exceed the longest invocation (the
//! Lambda's default is its 900 s timeout plus a minute).
//!
//! # Effects
//!
//! - **Launch**: a task with role `updater` in the configured zone (default: the fleet's
//!   first), hydrated from the newest published catalog snapshot, under the round's
//!   idempotency key; a node record (role updater) is saved so operators see it.
//! - **Issue**: the command is written to the node's channel.
//! - **Verify**: the manifest is read (refused if corrupt or another format), its chain
//!   point compared with what the agent reported, and
//!   [`VerifyScope::Sample`] run: every pack must exist and be long enough for all its
//!   blobs, and [`UpdaterSettings::verify_sample_chunks`] chunks (chosen by the snapshot id)
//!   are read back and hashed. A catalog record in state `verified` (or `failed`) is saved.
//! - **Publish**: the next generation of `latest`, a conditional create; then the catalog
//!   record becomes `published` and every older published record `retired`.
//! - **Prune**: [`prune`] with [`UpdaterSettings::keep_snapshots`] and the grace; catalog
//!   records of deleted snapshots become `retired`.
//!
//! # Error policy
//!
//! [`UpdaterError`] stops an invocation: the state store, scheduler or object store could
//! not be read while observing, the memory is unreadable, or a save lost to a concurrent
//! writer (the lease should make that impossible; if it happens, the next tick re-reads).
//! Failed effects are not errors: their results go into the machine, which retries what is
//! retryable on the next tick and aborts the round on the rest, each step within its timeout.

use std::sync::Arc;
use std::time::Duration;

use nodefleet_ports::{
    AuditEvent, ControlState, LaunchRequest, Lease, NodeRecord, NodeState, ObjectStore, Role,
    Scheduler, SchedulerError, SnapshotId, SnapshotRecord, SnapshotState, StateError, StateStore,
    TaskStatus, Timestamp, Version, Zone,
};
use nodefleet_snapshot::catalog;
use nodefleet_snapshot::channel::{self, AgentPhase, UploadResult};
use nodefleet_snapshot::error::SnapshotError;
use nodefleet_snapshot::format::ChainPoint;
use nodefleet_snapshot::list::created_at_of;
use nodefleet_snapshot::prune::prune;
use nodefleet_snapshot::verify::{VerifyScope, verify};

use crate::round::{
    Effect, Failure, Input, Published, RoundSettings, RoundSummary, Seen, UpdaterMemory,
    UpdaterTask, Verified, transition,
};

/// The name of the updater's lease and of its control state.
pub const UPDATER_NAME: &str = "snapshot-updater";

/// How long audit events of finished rounds are kept: long enough to look back over a
/// month of rounds when a snapshot went stale.
pub const AUDIT_RETENTION: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// What a tick needs besides the ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdaterSettings {
    /// The lease holder: the Lambda's request id, or the local process.
    pub owner: String,
    pub round: RoundSettings,
    /// How long a tick may hold the lease between renewals: more than the longest effect
    /// (a verify), less than the wait a dead tick costs the next one.
    pub lease_ttl: Duration,
    /// Where the updater is launched; `None`: the fleet config's first zone.
    pub zone: Option<Zone>,
    /// Chunks read back and hashed by verification (every pack is checked regardless).
    pub verify_sample_chunks: u64,
    /// Requests in flight while verifying.
    pub verify_concurrency: usize,
    /// Published snapshots retention keeps.
    pub keep_snapshots: usize,
    /// Unpublished uploads and packs younger than this are never pruned: more than the
    /// longest upload (see [`nodefleet_snapshot::prune`]).
    pub prune_grace: Duration,
    /// Ticks per invocation: a bound on one invocation's work.
    pub max_ticks: usize,
}

/// The ports a tick talks to.
#[derive(Clone, Copy)]
pub struct UpdaterPorts<'a> {
    pub state: &'a dyn StateStore,
    pub scheduler: &'a dyn Scheduler,
    pub store: &'a Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for UpdaterPorts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdaterPorts").finish_non_exhaustive()
    }
}

/// What one invocation did.
#[derive(Debug, Clone, PartialEq)]
pub enum UpdaterRun {
    /// Another invocation holds the lease.
    Busy {
        holder: String,
        until: Timestamp,
    },
    Ran(Box<Ran>),
}

/// A tick that held the lease.
#[derive(Debug, Clone, PartialEq)]
pub struct Ran {
    /// The memory as saved at the end.
    pub memory: UpdaterMemory,
    /// Rounds that ended in this invocation.
    pub finished: Vec<RoundSummary>,
    /// What `latest` named when last observed.
    pub latest: Option<Published>,
    /// When that snapshot was created, for the age metric.
    pub latest_created_at: Option<Timestamp>,
    /// Transitions that changed the memory.
    pub transitions: usize,
}

/// Why an invocation stopped. See the module doc.
#[derive(Debug, thiserror::Error)]
pub enum UpdaterError {
    #[error("state store: {0}")]
    State(#[from] StateError),
    #[error("scheduler: {0}")]
    Scheduler(#[from] SchedulerError),
    #[error("object store: {0}")]
    Store(#[from] SnapshotError),
    #[error("the updater's memory is unreadable: {0}")]
    CorruptMemory(String),
}

impl UpdaterError {
    /// True if the next tick may succeed without a person.
    pub fn is_retryable(&self) -> bool {
        match self {
            UpdaterError::State(e) => e.is_retryable() || e.is_conflict(),
            UpdaterError::Scheduler(e) => e.is_retryable(),
            UpdaterError::Store(e) => e.is_retryable(),
            UpdaterError::CorruptMemory(_) => false,
        }
    }
}

/// One invocation; see the module doc. `start` asks for a round now (if none runs).
pub async fn run(
    ports: UpdaterPorts<'_>,
    settings: &UpdaterSettings,
    start: bool,
    now: Timestamp,
) -> Result<UpdaterRun, UpdaterError> {
    invoke(ports, settings, Work::Tick { start }, now).await
}

/// Tells the updater that the task of the round in flight is gone for sure, not merely
/// missing from a listing that may lag ([`Input::NodeGone`], `detail` saying how that is
/// known), under the lease like a tick: the round aborts as `node_lost` at once (or, having
/// published, goes on to prune), and what that entails is done (the audit event of a round
/// that ended, a prune). No tick follows: nothing is observed and no round is started. A
/// memory with no round in flight is left as it is. For a process that restarts on the same
/// state (`nodefleet up`): the tasks of its previous run died with it.
pub async fn node_gone(
    ports: UpdaterPorts<'_>,
    settings: &UpdaterSettings,
    detail: &str,
    now: Timestamp,
) -> Result<UpdaterRun, UpdaterError> {
    let detail = detail.to_owned();
    invoke(ports, settings, Work::NodeGone { detail }, now).await
}

/// What an invocation does under the lease.
enum Work {
    Tick { start: bool },
    NodeGone { detail: String },
}

/// Takes the lease, does `work`, releases the lease.
async fn invoke(
    ports: UpdaterPorts<'_>,
    settings: &UpdaterSettings,
    work: Work,
    now: Timestamp,
) -> Result<UpdaterRun, UpdaterError> {
    let lease = match ports
        .state
        .acquire_lease(UPDATER_NAME, &settings.owner, settings.lease_ttl, now)
        .await
    {
        Ok(lease) => lease,
        Err(StateError::LeaseHeld {
            holder, expires_at, ..
        }) => {
            return Ok(UpdaterRun::Busy {
                holder,
                until: expires_at,
            });
        }
        Err(error) => return Err(error.into()),
    };
    let mut tick = Tick {
        ports,
        settings,
        now,
        lease,
        memory: UpdaterMemory::default(),
        version: Version::NEW,
        finished: Vec::new(),
        latest: None,
        transitions: 0,
    };
    let result = match work {
        Work::Tick { start } => tick.run(start).await,
        Work::NodeGone { detail } => tick.node_gone(detail).await,
    };
    if let Err(error) = ports.state.release_lease(&tick.lease).await {
        tracing::warn!(%error, "could not release the updater's lease; it expires on its own");
    }
    result?;
    let latest_created_at = match &tick.latest {
        Some(latest) => created_at(ports.state, &latest.snapshot).await,
        None => None,
    };
    Ok(UpdaterRun::Ran(Box::new(Ran {
        memory: tick.memory,
        finished: tick.finished,
        latest: tick.latest,
        latest_created_at,
        transitions: tick.transitions,
    })))
}

/// One invocation's working state.
struct Tick<'a> {
    ports: UpdaterPorts<'a>,
    settings: &'a UpdaterSettings,
    now: Timestamp,
    lease: Lease,
    memory: UpdaterMemory,
    version: Version,
    finished: Vec<RoundSummary>,
    latest: Option<Published>,
    transitions: usize,
}

impl Tick<'_> {
    async fn run(&mut self, mut start: bool) -> Result<(), UpdaterError> {
        self.load().await?;
        for _ in 0..self.settings.max_ticks.max(1) {
            let seen = self.observe().await?;
            let before = self.memory.clone();
            let tick = transition(
                &self.memory,
                Input::Tick {
                    seen: Box::new(seen),
                    start,
                },
                &self.settings.round,
                self.now,
            );
            start = false;
            self.apply(tick.memory, tick.effects).await?;
            if self.memory == before {
                break;
            }
        }
        Ok(())
    }

    async fn node_gone(&mut self, detail: String) -> Result<(), UpdaterError> {
        self.load().await?;
        if self.memory.round.is_none() {
            return Ok(());
        }
        let next = transition(
            &self.memory,
            Input::NodeGone { detail },
            &self.settings.round,
            self.now,
        );
        self.apply(next.memory, next.effects).await
    }

    async fn load(&mut self) -> Result<(), UpdaterError> {
        if let Some(stored) = self.ports.state.get_control_state(UPDATER_NAME).await? {
            self.memory = serde_json::from_str(&stored.body)
                .map_err(|e| UpdaterError::CorruptMemory(e.to_string()))?;
            self.version = stored.version;
        }
        Ok(())
    }

    async fn save(&mut self, memory: UpdaterMemory) -> Result<(), UpdaterError> {
        if memory == self.memory {
            return Ok(());
        }
        let body = serde_json::to_string(&memory)
            .map_err(|e| UpdaterError::CorruptMemory(e.to_string()))?;
        let saved = self
            .ports
            .state
            .save_control_state(&ControlState {
                name: UPDATER_NAME.to_owned(),
                body,
                updated_at: self.now,
                version: self.version,
            })
            .await?;
        self.version = saved.version;
        self.memory = memory;
        self.transitions += 1;
        Ok(())
    }

    /// Saves `memory`, then performs `effects`, feeding each result back.
    async fn apply(
        &mut self,
        memory: UpdaterMemory,
        effects: Vec<Effect>,
    ) -> Result<(), UpdaterError> {
        self.save(memory).await?;
        let mut queue = std::collections::VecDeque::from(effects);
        while let Some(effect) = queue.pop_front() {
            let Some(input) = self.perform(effect).await? else {
                continue;
            };
            let next = transition(&self.memory, input, &self.settings.round, self.now);
            self.save(next.memory).await?;
            queue.extend(next.effects);
        }
        Ok(())
    }

    async fn observe(&mut self) -> Result<Seen, UpdaterError> {
        let updaters: Vec<UpdaterTask> = self
            .ports
            .scheduler
            .list_tasks()
            .await?
            .into_iter()
            .filter(|t| {
                t.role == Some(Role::Updater)
                    && matches!(t.last_status, TaskStatus::Pending | TaskStatus::Running)
                    && t.desired_status != TaskStatus::Stopped
            })
            .filter_map(|t| {
                Some(UpdaterTask {
                    node: t.node?,
                    task: t.id,
                    started_at: t.started_at,
                })
            })
            .collect();
        let node = self.memory.round.as_ref().and_then(|r| r.node.clone());
        let report = match &node {
            Some(node) => channel::read_report(self.ports.store.as_ref(), node.as_str()).await?,
            None => None,
        };
        if let (Some(node), Some(report)) = (&node, &report) {
            self.follow_report(node, report).await;
        }
        self.latest = self.published().await?;
        Ok(Seen {
            updaters,
            report,
            latest: self.latest.clone(),
        })
    }

    /// Keeps the updater's node record in step with what its agent reports, so operators
    /// (and `nodefleet status`) see it hydrating, following the chain (`syncing`), synced
    /// (`serving`: for an updater that means synced, it never takes traffic) or stopped for
    /// a snapshot (`draining`). Best effort: a failed save is retried on the next tick.
    async fn follow_report(&self, node: &nodefleet_ports::NodeId, report: &channel::Report) {
        let state = match report.phase {
            AgentPhase::Hydrating => NodeState::Hydrating,
            AgentPhase::Running if report.health.healthy => NodeState::Serving,
            AgentPhase::Running => NodeState::Syncing,
            AgentPhase::Quiesced | AgentPhase::Stopping => NodeState::Draining,
        };
        match self.ports.state.get_node(node).await {
            Ok(Some(mut record)) if record.state != state && record.state != NodeState::Stopped => {
                record.state = state;
                record.updated_at = self.now;
                if record.snapshot.is_none() {
                    record.snapshot = report.hydrated_from.clone().map(SnapshotId::new);
                }
                if let Err(error) = self.ports.state.save_node(&record).await {
                    tracing::warn!(%error, node = %node, "could not update the updater's record");
                }
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, node = %node, "could not read the updater's record")
            }
        }
    }

    /// What `latest` names, with its block (from its catalog record, else its manifest).
    async fn published(&self) -> Result<Option<Published>, UpdaterError> {
        let Some(latest) = catalog::latest(self.ports.store.as_ref()).await? else {
            return Ok(None);
        };
        let id = SnapshotId::new(latest.snapshot.clone());
        let block_height = match self.ports.state.get_snapshot(&id).await? {
            Some(record) => record.block_height,
            None => {
                catalog::read_manifest(self.ports.store.as_ref(), &latest.snapshot)
                    .await?
                    .chain
                    .block_height
            }
        };
        Ok(Some(Published {
            snapshot: id,
            block_height,
        }))
    }

    async fn renew(&mut self) -> Result<(), UpdaterError> {
        self.lease = self
            .ports
            .state
            .renew_lease(&self.lease, self.settings.lease_ttl, self.now)
            .await?;
        Ok(())
    }

    async fn perform(&mut self, effect: Effect) -> Result<Option<Input>, UpdaterError> {
        Ok(Some(match effect {
            Effect::Launch {
                node,
                idempotency_key,
            } => Input::Launched(self.launch(node, idempotency_key).await),
            Effect::Issue { node, command } => {
                tracing::info!(node = %node, command = %command.id, "issuing a command to the updater's agent");
                Input::Issued(
                    channel::issue(self.ports.store.as_ref(), node.as_str(), &command)
                        .await
                        .map_err(failure),
                )
            }
            Effect::Verify { upload, chain } => {
                self.renew().await?;
                Input::Verified(self.verify(&upload, &chain).await)
            }
            Effect::Publish { upload, chain } => {
                self.renew().await?;
                Input::Published(self.publish(&upload, &chain).await)
            }
            Effect::Prune => {
                self.renew().await?;
                Input::Pruned(self.prune().await)
            }
            Effect::Finished(summary) => {
                self.finished_round(&summary).await;
                self.finished.push(summary);
                return Ok(None);
            }
        }))
    }

    async fn launch(
        &self,
        node: nodefleet_ports::NodeId,
        idempotency_key: String,
    ) -> Result<UpdaterTask, Failure> {
        let zone = match &self.settings.zone {
            Some(zone) => zone.clone(),
            None => self
                .ports
                .state
                .get_config()
                .await
                .map_err(failure)?
                .and_then(|c| c.zones.first().cloned())
                .ok_or_else(|| Failure {
                    detail: "no zone: the fleet config has none and none was set".to_owned(),
                    retryable: false,
                })?,
        };
        let snapshot = newest_published(self.ports.state).await.map_err(failure)?;
        self.retire_gone_updaters().await;
        tracing::info!(node = %node, zone = %zone, snapshot = ?snapshot, "launching the updater node");
        let report = self
            .ports
            .scheduler
            .launch(&LaunchRequest {
                node: node.clone(),
                zone: zone.clone(),
                role: Role::Updater,
                snapshot: snapshot.clone(),
                idempotency_key,
                count: 1,
            })
            .await
            .map_err(|e| Failure {
                retryable: e.is_retryable(),
                detail: e.to_string(),
            })?;
        let Some(task) = report.started.into_iter().next() else {
            let reasons: Vec<String> = report
                .failures
                .iter()
                .map(|f| format!("{}: {} ({})", f.zone, f.reason.as_reason(), f.detail))
                .collect();
            return Err(Failure {
                detail: format!("no updater task was placed: {}", reasons.join("; ")),
                retryable: false,
            });
        };
        let record = NodeRecord {
            id: node.clone(),
            task: Some(task.id.clone()),
            zone,
            target: None,
            role: Role::Updater,
            state: NodeState::Launching,
            snapshot,
            created_at: self.now,
            updated_at: self.now,
            version: Version::NEW,
        };
        if let Err(error) = self.ports.state.save_node(&record).await {
            tracing::warn!(%error, node = %node, "could not record the updater node");
        }
        Ok(UpdaterTask {
            node,
            task: task.id,
            started_at: task.started_at,
        })
    }

    /// Before a launch (no updater task is live): the records of earlier updaters are marked
    /// stopped and their channels removed, so neither operators nor a later round mistake them
    /// for a running updater. Best effort: a failure is a warning, the launch goes on.
    async fn retire_gone_updaters(&self) {
        let records = match self.ports.state.list_nodes().await {
            Ok(records) => records,
            Err(error) => {
                tracing::warn!(%error, "could not list node records to retire old updaters");
                return;
            }
        };
        for mut record in records
            .into_iter()
            .filter(|r| r.role == Role::Updater && r.state != NodeState::Stopped)
        {
            record.state = NodeState::Stopped;
            record.updated_at = self.now;
            if let Err(error) = self.ports.state.save_node(&record).await {
                tracing::warn!(%error, node = %record.id, "could not mark an old updater stopped");
            }
            if let Err(error) = channel::remove(self.ports.store.as_ref(), record.id.as_str()).await
            {
                tracing::warn!(%error, node = %record.id, "could not remove an old updater's channel");
            }
        }
    }

    async fn verify(&self, upload: &UploadResult, chain: &ChainPoint) -> Result<Verified, Failure> {
        let store = self.ports.store;
        let result = async {
            let manifest = catalog::read_manifest(store.as_ref(), &upload.snapshot).await?;
            let seed = seed_of(&manifest.id);
            let report = verify(
                store.clone(),
                &manifest,
                &VerifyScope::Sample {
                    chunks: self.settings.verify_sample_chunks,
                    seed,
                },
                self.settings.verify_concurrency,
            )
            .await?;
            Ok::<_, SnapshotError>((manifest, report))
        }
        .await;
        let (state, verdict) = match result {
            Ok((manifest, report)) => (
                SnapshotState::Verified,
                Ok(Verified {
                    snapshot: SnapshotId::new(manifest.id.clone()),
                    block_height: manifest.chain.block_height,
                    block_hash: manifest.chain.block_hash.clone(),
                    chunks_checked: report.chunks_checked,
                }),
            ),
            Err(error) if error.is_retryable() => return Err(failure(error)),
            Err(error) => (SnapshotState::Failed, Err(failure(error))),
        };
        match &verdict {
            Ok(v) => {
                tracing::info!(snapshot = %v.snapshot, block = v.block_height, chunks_checked = v.chunks_checked, "snapshot verified")
            }
            Err(f) => {
                tracing::error!(snapshot = %upload.snapshot, detail = %f.detail, "snapshot failed verification")
            }
        }
        let record_block = verdict
            .as_ref()
            .map_or(chain.block_height, |v| v.block_height);
        let mut record = self.record(upload, chain, state);
        record.block_height = record_block;
        if let Err(error) = self.save_record(record).await {
            tracing::warn!(%error, "could not record the snapshot in the catalog");
        }
        verdict
    }

    /// A catalog record of `upload` in `state` (not yet saved).
    fn record(
        &self,
        upload: &UploadResult,
        chain: &ChainPoint,
        state: SnapshotState,
    ) -> SnapshotRecord {
        SnapshotRecord {
            id: SnapshotId::new(upload.snapshot.clone()),
            block_height: chain.block_height,
            client: chain.client.clone(),
            client_version: chain.client_version.clone(),
            manifest_key: nodefleet_snapshot::format::manifest_key(&upload.snapshot),
            bytes: upload.bytes_total,
            uploaded_bytes: upload.bytes_uploaded,
            state,
            created_at: created_at_of(&upload.snapshot).map_or(self.now, Timestamp::from_millis),
            updated_at: self.now,
            version: Version::NEW,
        }
    }

    /// Saves `record` over whatever version is stored (the lease makes this tick the only
    /// writer of the catalog).
    async fn save_record(&self, mut record: SnapshotRecord) -> Result<SnapshotRecord, StateError> {
        if let Some(stored) = self.ports.state.get_snapshot(&record.id).await? {
            record.version = stored.version;
            record.created_at = stored.created_at;
        }
        self.ports.state.save_snapshot(&record).await
    }

    async fn publish(&self, upload: &UploadResult, chain: &ChainPoint) -> Result<(), Failure> {
        let store = self.ports.store.as_ref();
        let current = catalog::latest(store).await.map_err(failure)?;
        if current.as_ref().map(|r| r.snapshot.as_str()) != Some(upload.snapshot.as_str()) {
            // The machine checked this on its last look; someone may have published since
            // (an operator's `nodefleet snapshot create --publish`).
            if let Some(published) = self.published().await.map_err(|e| Failure {
                retryable: e.is_retryable(),
                detail: e.to_string(),
            })? && published.block_height >= chain.block_height
            {
                return Err(Failure {
                    detail: format!(
                        "block {} is not newer than the published snapshot {}'s block {}",
                        chain.block_height, published.snapshot, published.block_height
                    ),
                    retryable: false,
                });
            }
            let published = catalog::publish(store, &upload.snapshot, self.now.as_millis())
                .await
                .map_err(failure)?;
            tracing::info!(snapshot = %upload.snapshot, generation = published.generation, block = chain.block_height, "published as latest");
        }
        let record = self.record(upload, chain, SnapshotState::Published);
        self.save_record(record).await.map_err(failure)?;
        let older = self.ports.state.list_snapshots().await.map_err(failure)?;
        for mut old in older
            .into_iter()
            .filter(|r| r.state == SnapshotState::Published && r.id.as_str() != upload.snapshot)
        {
            old.state = SnapshotState::Retired;
            old.updated_at = self.now;
            if let Err(error) = self.ports.state.save_snapshot(&old).await {
                tracing::warn!(%error, snapshot = %old.id, "could not retire an older snapshot's record");
            }
        }
        Ok(())
    }

    async fn prune(&self) -> Result<(), Failure> {
        let summary = prune(
            self.ports.store.as_ref(),
            self.settings.keep_snapshots,
            self.settings.prune_grace,
            self.now.as_millis(),
            false,
        )
        .await
        .map_err(failure)?;
        tracing::info!(
            kept = summary.kept_snapshots.len(),
            deleted = summary.deleted_snapshots.len(),
            deleted_pack_bytes = summary.deleted_pack_bytes,
            "pruned"
        );
        for id in &summary.deleted_snapshots {
            let id = SnapshotId::new(id.clone());
            if let Ok(Some(mut record)) = self.ports.state.get_snapshot(&id).await
                && record.state != SnapshotState::Retired
            {
                record.state = SnapshotState::Retired;
                record.updated_at = self.now;
                if let Err(error) = self.ports.state.save_snapshot(&record).await {
                    tracing::warn!(%error, snapshot = %id, "could not retire a pruned snapshot's record");
                }
            }
        }
        Ok(())
    }

    async fn finished_round(&self, summary: &RoundSummary) {
        let detail = serde_json::to_string(summary).unwrap_or_default();
        match &summary.outcome {
            crate::round::RoundOutcome::Published {
                snapshot,
                block_height,
                ..
            } => {
                tracing::info!(round = %summary.id, snapshot = %snapshot, block = block_height, warnings = ?summary.warnings, "round published a snapshot");
            }
            crate::round::RoundOutcome::Aborted(abort) => {
                tracing::warn!(round = %summary.id, reason = abort.reason.as_str(), step = abort.step.as_str(), detail = %abort.detail, "round aborted; the previous snapshot stays published");
            }
        }
        let kind = match summary.outcome {
            crate::round::RoundOutcome::Published { .. } => "snapshot.round_published",
            crate::round::RoundOutcome::Aborted(_) => "snapshot.round_aborted",
        };
        let event = AuditEvent::new(self.now, kind, &summary.id, detail, AUDIT_RETENTION);
        if let Err(error) = self.ports.state.append_event(&event).await {
            tracing::warn!(%error, "could not record the round in the audit trail");
        }
    }
}

/// The newest published snapshot in the catalog: what a new updater hydrates from.
async fn newest_published(state: &dyn StateStore) -> Result<Option<SnapshotId>, StateError> {
    Ok(state
        .list_snapshots()
        .await?
        .into_iter()
        .filter(|s| s.state == SnapshotState::Published)
        .max_by_key(|s| (s.created_at, s.id.clone()))
        .map(|s| s.id))
}

/// When `snapshot` was made: its catalog record, or the time in its id.
async fn created_at(state: &dyn StateStore, snapshot: &SnapshotId) -> Option<Timestamp> {
    match state.get_snapshot(snapshot).await {
        Ok(Some(record)) => Some(record.created_at),
        _ => created_at_of(snapshot.as_str()).map(Timestamp::from_millis),
    }
}

/// The sampling seed of a snapshot: the first 8 bytes of its id's BLAKE3, so a re-run of
/// the same verification reads the same chunks.
fn seed_of(snapshot: &str) -> u64 {
    let hash = blake3::hash(snapshot.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(bytes)
}

/// An error as the machine sees it.
fn failure(error: impl Into<FailureSource>) -> Failure {
    let source = error.into();
    Failure {
        retryable: source.retryable,
        detail: source.detail,
    }
}

/// What [`failure`] takes: any of the ports' errors.
struct FailureSource {
    detail: String,
    retryable: bool,
}

impl From<SnapshotError> for FailureSource {
    fn from(error: SnapshotError) -> Self {
        FailureSource {
            retryable: error.is_retryable(),
            detail: error.to_string(),
        }
    }
}

impl From<StateError> for FailureSource {
    fn from(error: StateError) -> Self {
        FailureSource {
            retryable: error.is_retryable() || error.is_conflict(),
            detail: error.to_string(),
        }
    }
}
