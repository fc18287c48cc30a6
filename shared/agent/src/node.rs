//! The node: the one running client, shared by the lifecycle ([`crate::run()`]), the
//! updater channel ([`crate::updater`]) and the updater's control endpoint
//! ([`crate::server`]).
//!
//! The client sits in a slot behind an async mutex. Whoever stops it takes it out of the
//! slot first, so a stop on request (shutdown, snapshot) is never mistaken for a death: a
//! client that exits with nobody holding its stop is reported on the `fatal` watch, which
//! the lifecycle waits on, and the agent exits with the client's status (ECS replaces the
//! task). A [`Phase`] watch tells `/health` when there is no client to probe (hydrating,
//! stopped for a snapshot, stopping).
//!
//! # Snapshots: quiesce, upload, resume (`--role updater`)
//!
//! A snapshot is made of three primitives, shared by both ways an updater is driven: the
//! updater channel ([`crate::updater`], one command at a time) and `POST /snapshot`
//! ([`Node::snapshot`], all three in a row). One operation runs at a time on a node (a
//! second caller gets [`SnapshotFailure::Busy`]), so a command can never restart the client
//! under a running upload.
//!
//! 1. [`Node::quiesce`]: the node must be healthy ([`crate::health::judge`] with the agent's
//!    thresholds): a snapshot of a node that is behind would hand every new node stale
//!    data. Its chain point (client version, chain id, head number and hash) is read for
//!    the manifest. Then the client is stopped with its profile's signal and timeout. A
//!    snapshot is taken only after a *clean* stop (DESIGN: a consistent snapshot comes from
//!    a stopped client); a client that had to be killed may not have flushed, so it is
//!    started again and the quiesce fails. The phase is [`Phase::Quiesced`] from the stop on.
//! 2. [`Node::upload`]: [`nodefleet_snapshot::create::create`] on the stopped data dir
//!    uploads what the store lacks, verifies, and publishes `latest` when asked. It refuses
//!    while a client runs.
//! 3. [`Node::resume`]: the client is started again (after the restore-marker check of
//!    invariant 3, like every start), or left alone when it runs. If it cannot be started
//!    the node is useless: that is reported as fatal and the agent exits.
//!
//! `POST /snapshot` resumes whatever the upload said. A shutdown during it abandons
//! `create` (it publishes last, so an abandoned create leaves the previous `latest` in
//! place, invariant 4) and leaves the client stopped. No start happens once the agent is
//! stopping.

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use nodefleet_ports::ObjectStore;
use nodefleet_snapshot::create::{CreateOptions, CreateSummary, create};
use nodefleet_snapshot::error::SnapshotError;
use nodefleet_snapshot::format::ChainPoint;
use tokio::sync::{Mutex, MutexGuard, watch};

use crate::client::{ClientError, ClientExit, ExitCause, LaunchSpec, RunningClient};
use crate::health::{Thresholds, judge};
use crate::hydrate::{HydrateError, require_marker};
use crate::probe::{ProbeError, RpcClient};
use crate::progress::LogProgress;
use crate::shutdown::Shutdown;

/// What the agent is doing, as far as `/health` is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Hydrating the data dir; no client yet.
    Hydrating,
    /// The client was started; `/health` probes it.
    Running,
    /// The client is stopped by a quiesce, for a snapshot (uploading or waiting to resume).
    Quiesced,
    /// The agent is stopping (or the client is gone for good).
    Stopping,
}

impl Phase {
    /// Why `/health` is 503 in this phase without probing; `None` when it probes.
    pub fn unhealthy_reason(&self) -> Option<&'static str> {
        match self {
            Phase::Hydrating => Some("hydrating the data dir from a snapshot"),
            Phase::Running => None,
            Phase::Quiesced => Some("the client is stopped for a snapshot"),
            Phase::Stopping => Some("the agent is stopping"),
        }
    }
}

/// Why the node cannot go on: the agent exits.
#[derive(Debug, Clone)]
pub enum Fatal {
    /// The client exited with nobody asking it to.
    ClientDied(ClientExit),
    /// The client could not be started again after a snapshot.
    RestartFailed(String),
}

/// Why a snapshot step failed. After `NotHealthy`, `ChainPoint`, `NotClean` (it was started
/// again), `Busy` and `NotUpdater` the client runs as it did; after `Create` and
/// `ClientRunning` it is as it was before the upload; after `Restart` the node is fatal.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFailure {
    #[error("this agent does not have the updater role")]
    NotUpdater,
    #[error("a snapshot is already being made")]
    Busy,
    #[error("the agent is stopping")]
    ShuttingDown,
    #[error("the data dir is still being hydrated; the client has not started yet")]
    Hydrating,
    #[error("the node is not healthy, so it is not snapshotted: {0}")]
    NotHealthy(String),
    #[error("cannot read the chain point for the manifest: {0}")]
    ChainPoint(#[from] ProbeError),
    #[error("the client did not stop cleanly ({0}), so nothing was uploaded; it was started again")]
    NotClean(ClientExit),
    #[error("the client runs: a snapshot is made only of a stopped data dir")]
    ClientRunning,
    #[error("creating the snapshot failed: {0}")]
    Create(#[from] SnapshotError),
    #[error("the client could not be started again after the snapshot: {0}")]
    Restart(String),
}

impl SnapshotFailure {
    /// True when the same request may succeed later without a person: the node was busy,
    /// behind or briefly unreachable, the stop was not clean this time, or the store
    /// throttled.
    pub fn is_retryable(&self) -> bool {
        match self {
            SnapshotFailure::Busy
            | SnapshotFailure::ShuttingDown
            | SnapshotFailure::Hydrating
            | SnapshotFailure::NotHealthy(_)
            | SnapshotFailure::ChainPoint(_)
            | SnapshotFailure::NotClean(_) => true,
            SnapshotFailure::Create(error) => error.is_retryable(),
            SnapshotFailure::NotUpdater
            | SnapshotFailure::ClientRunning
            | SnapshotFailure::Restart(_) => false,
        }
    }
}

/// What [`Node::resume`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resumed {
    /// The client was stopped and is started again.
    Started,
    /// The client was running already.
    WasRunning,
}

/// How snapshots are made on this node (the updater role).
#[derive(Clone)]
pub struct UpdaterSettings {
    pub store: Arc<dyn ObjectStore>,
    /// Pack uploads in flight.
    pub concurrency: usize,
}

impl std::fmt::Debug for UpdaterSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdaterSettings")
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

/// The running client and what is needed to start it again. See the module doc.
#[derive(Debug)]
pub struct Node {
    spec: LaunchSpec,
    /// Set once hydration is done: the snapshot the data dir must hold (its restore
    /// marker) before any start, `None` when hydration found an empty store. Unset, no
    /// client may start.
    required_snapshot: OnceLock<Option<String>>,
    rpc: RpcClient,
    thresholds: Thresholds,
    updater: Option<UpdaterSettings>,
    client: Mutex<Option<RunningClient>>,
    /// Held by the one snapshot operation that runs (a step or a whole snapshot).
    operation: Mutex<()>,
    phase: watch::Sender<Phase>,
    fatal: watch::Sender<Option<Fatal>>,
}

/// Why the client was not started.
#[derive(Debug, thiserror::Error)]
pub enum StartFailure {
    #[error("the data dir was not hydrated")]
    NotHydrated,
    #[error(transparent)]
    Unverified(#[from] HydrateError),
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl Node {
    pub fn new(
        spec: LaunchSpec,
        rpc: RpcClient,
        thresholds: Thresholds,
        updater: Option<UpdaterSettings>,
    ) -> Node {
        Node {
            spec,
            required_snapshot: OnceLock::new(),
            rpc,
            thresholds,
            updater,
            client: Mutex::new(None),
            operation: Mutex::new(()),
            phase: watch::channel(Phase::Hydrating).0,
            fatal: watch::channel(None).0,
        }
    }

    /// Hydration is done: every later start requires the data dir's marker to name
    /// `snapshot` (none for an empty store). Only the first call counts.
    pub fn set_required_snapshot(&self, snapshot: Option<String>) {
        let _ = self.required_snapshot.set(snapshot);
    }

    /// The snapshot the data dir was hydrated from: `None` before hydration is done and
    /// after one that found an empty store.
    pub fn hydrated_from(&self) -> Option<String> {
        self.required_snapshot.get().cloned().flatten()
    }

    pub fn is_updater(&self) -> bool {
        self.updater.is_some()
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.send_replace(phase);
    }

    pub fn phase(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    fn is_stopping(&self) -> bool {
        *self.phase.borrow() == Phase::Stopping
    }

    /// Starts the client (the first time).
    pub async fn start(self: &Arc<Self>) -> Result<(), StartFailure> {
        let mut slot = self.client.lock().await;
        self.start_into(&mut slot).await?;
        self.set_phase(Phase::Running);
        Ok(())
    }

    /// Starts the client into `slot`, after checking invariant 3 once more.
    async fn start_into(
        self: &Arc<Self>,
        slot: &mut Option<RunningClient>,
    ) -> Result<(), StartFailure> {
        match self.required_snapshot.get() {
            None => return Err(StartFailure::NotHydrated),
            Some(Some(snapshot)) => require_marker(&self.spec.data_dir, snapshot)?,
            Some(None) => {}
        }
        let client = RunningClient::start(&self.spec).await?;
        let mut exit = client.exit_watch();
        let node = Arc::downgrade(self);
        tokio::spawn(async move {
            let Ok(seen) = exit.wait_for(Option::is_some).await else {
                return;
            };
            let Some(exit) = *seen else { return };
            if exit.cause == ExitCause::OnItsOwn
                && let Some(node) = node.upgrade()
            {
                tracing::error!("client {exit}");
                node.set_phase(Phase::Stopping);
                node.fatal.send_replace(Some(Fatal::ClientDied(exit)));
            }
        });
        *slot = Some(client);
        Ok(())
    }

    /// Starts the client into the empty `slot` again, unless the agent is stopping. A
    /// failure is fatal: a node without its client is useless.
    async fn restart_into(
        self: &Arc<Self>,
        slot: &mut Option<RunningClient>,
    ) -> Result<(), SnapshotFailure> {
        if self.is_stopping() {
            return Err(SnapshotFailure::ShuttingDown);
        }
        if let Err(error) = self.start_into(slot).await {
            let message = error.to_string();
            tracing::error!(%message, "the client did not start again");
            self.set_phase(Phase::Stopping);
            self.fatal
                .send_replace(Some(Fatal::RestartFailed(message.clone())));
            return Err(SnapshotFailure::Restart(message));
        }
        self.set_phase(Phase::Running);
        Ok(())
    }

    /// Waits until the node cannot go on.
    pub async fn fatal(&self) -> Fatal {
        let mut fatal = self.fatal.subscribe();
        loop {
            if let Some(fatal) = fatal.borrow_and_update().clone() {
                return fatal;
            }
            if fatal.changed().await.is_err() {
                // The node is being dropped: nothing more will happen.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Stops the client, if one runs; its exit. No client starts after this.
    pub async fn stop(&self) -> Option<ClientExit> {
        self.set_phase(Phase::Stopping);
        let client = self.client.lock().await.take()?;
        if client.has_exited() {
            return client.exit_watch().borrow().as_ref().copied();
        }
        Some(client.stop().await)
    }

    /// The right to run one snapshot operation, or `Busy`.
    fn operation(&self) -> Result<MutexGuard<'_, ()>, SnapshotFailure> {
        if self.updater.is_none() {
            return Err(SnapshotFailure::NotUpdater);
        }
        self.operation.try_lock().map_err(|_| SnapshotFailure::Busy)
    }

    /// Checks the node is healthy, reads its chain point and stops the client cleanly;
    /// the chain point. See the module doc.
    pub async fn quiesce(self: &Arc<Self>) -> Result<ChainPoint, SnapshotFailure> {
        let _one_at_a_time = self.operation()?;
        self.quiesce_locked().await
    }

    /// Snapshots the stopped data dir at `chain` into the store, publishing it when asked.
    pub async fn upload(
        &self,
        chain: ChainPoint,
        publish: bool,
    ) -> Result<CreateSummary, SnapshotFailure> {
        let _one_at_a_time = self.operation()?;
        self.upload_locked(chain, publish).await
    }

    /// Starts the client if it is stopped.
    pub async fn resume(self: &Arc<Self>) -> Result<Resumed, SnapshotFailure> {
        let _one_at_a_time = self.operation()?;
        self.resume_locked().await
    }

    async fn quiesce_locked(self: &Arc<Self>) -> Result<ChainPoint, SnapshotFailure> {
        let health = judge(
            &self.rpc.observe().await,
            &self.thresholds,
            SystemTime::now(),
        );
        if !health.healthy {
            return Err(SnapshotFailure::NotHealthy(
                health.reason.unwrap_or_default(),
            ));
        }
        let chain = self.rpc.chain_point(self.spec.kind.name()).await?;

        let mut slot = self.client.lock().await;
        if self.is_stopping() {
            return Err(SnapshotFailure::ShuttingDown);
        }
        let Some(client) = slot.take() else {
            return Err(SnapshotFailure::ShuttingDown);
        };
        self.set_phase(Phase::Quiesced);
        tracing::info!(
            block = chain.block_height,
            "stopping the client for a snapshot"
        );
        let exit = client.stop().await;
        if exit.is_clean() {
            return Ok(chain);
        }
        tracing::error!(%exit, "the client did not stop cleanly; starting it again");
        self.restart_into(&mut slot).await?;
        Err(SnapshotFailure::NotClean(exit))
    }

    async fn upload_locked(
        &self,
        chain: ChainPoint,
        publish: bool,
    ) -> Result<CreateSummary, SnapshotFailure> {
        let Some(updater) = &self.updater else {
            return Err(SnapshotFailure::NotUpdater);
        };
        if self.client.lock().await.is_some() {
            return Err(SnapshotFailure::ClientRunning);
        }
        let options = CreateOptions {
            profile: self.spec.kind.profile(),
            chain,
            concurrency: updater.concurrency,
            now_ms: now_ms(),
            publish,
        };
        let created = create(
            updater.store.clone(),
            &self.spec.data_dir,
            &options,
            Arc::new(LogProgress::new("snapshot")),
        )
        .await;
        match &created {
            Ok(summary) => tracing::info!(
                snapshot = %summary.snapshot,
                bytes_transferred = summary.bytes_transferred,
                published = publish,
                "snapshot made"
            ),
            Err(error) => tracing::error!(%error, "snapshot failed"),
        }
        Ok(created?)
    }

    async fn resume_locked(self: &Arc<Self>) -> Result<Resumed, SnapshotFailure> {
        let mut slot = self.client.lock().await;
        if *self.phase.borrow() == Phase::Hydrating {
            // The lifecycle makes the first start, after hydration.
            return Err(SnapshotFailure::Hydrating);
        }
        if slot.is_some() {
            // A client that died on its own is fatal already: it is not started again.
            return if self.is_stopping() {
                Err(SnapshotFailure::ShuttingDown)
            } else {
                Ok(Resumed::WasRunning)
            };
        }
        self.restart_into(&mut slot).await?;
        tracing::info!("the client was started again");
        Ok(Resumed::Started)
    }

    /// Quiesces, uploads and resumes, as `POST /snapshot` asks. See the module doc.
    pub async fn snapshot(
        self: &Arc<Self>,
        publish: bool,
        mut shutdown: Shutdown,
    ) -> Result<CreateSummary, SnapshotFailure> {
        let _one_at_a_time = self.operation()?;
        if shutdown.is_fired() {
            return Err(SnapshotFailure::ShuttingDown);
        }
        let chain = self.quiesce_locked().await?;
        let outcome = tokio::select! {
            created = self.upload_locked(chain, publish) => created,
            () = shutdown.wait() => {
                self.set_phase(Phase::Stopping);
                return Err(SnapshotFailure::ShuttingDown);
            }
        };
        if shutdown.is_fired() {
            self.set_phase(Phase::Stopping);
            return outcome;
        }
        self.resume_locked().await?;
        outcome
    }
}

/// The wall clock in Unix milliseconds (0 before 1970, saturating far after).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
