//! The node: the one running client, shared by the lifecycle ([`crate::run()`]) and the
//! updater's control endpoint ([`crate::server`]).
//!
//! The client sits in a slot behind an async mutex. Whoever stops it takes it out of the
//! slot first, so a stop on request (shutdown, snapshot) is never mistaken for a death: a
//! client that exits with nobody holding its stop is reported on the `fatal` watch, which
//! the lifecycle waits on, and the agent exits with the client's status (ECS replaces the
//! task). A [`Phase`] watch tells `/health` when there is no client to probe (hydrating,
//! stopped for a snapshot, stopping).
//!
//! # Snapshot on command (`--role updater`)
//!
//! [`Node::snapshot`] runs one at a time (a second caller gets [`SnapshotFailure::Busy`]):
//!
//! 1. The node must be healthy ([`crate::health::judge`] with the agent's thresholds): a
//!    snapshot of a node that is behind would hand every new node stale data. Its chain
//!    point (client version, chain id, head number and hash) is read for the manifest.
//! 2. The client is stopped with its profile's signal and timeout. A snapshot is taken only
//!    after a *clean* stop (DESIGN: a consistent snapshot comes from a stopped client); a
//!    client that had to be killed may not have flushed, so nothing is uploaded.
//! 3. [`nodefleet_snapshot::create::create`] uploads what the store lacks, verifies, and
//!    publishes `latest` when asked.
//! 4. The client is started again, whatever `create` said. If that fails the node is
//!    useless: it is reported as fatal and the agent exits.
//!
//! A shutdown during the snapshot abandons `create` (it publishes last, so an abandoned
//! create leaves the previous `latest` in place, invariant 4) and leaves the client stopped.

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use nodefleet_ports::ObjectStore;
use nodefleet_snapshot::create::{CreateOptions, CreateSummary, create};
use nodefleet_snapshot::error::SnapshotError;
use tokio::sync::{Mutex, watch};

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
    /// The client is stopped while a snapshot is made.
    Snapshotting,
    /// The agent is stopping (or the client is gone for good).
    Stopping,
}

impl Phase {
    /// Why `/health` is 503 in this phase without probing; `None` when it probes.
    pub fn unhealthy_reason(&self) -> Option<&'static str> {
        match self {
            Phase::Hydrating => Some("hydrating the data dir from a snapshot"),
            Phase::Running => None,
            Phase::Snapshotting => Some("the client is stopped while a snapshot is made"),
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

/// Why a snapshot was not made. Every variant but `Create`, `Restart` and `ShuttingDown`
/// leaves the client running as it was.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFailure {
    #[error("this agent does not have the updater role")]
    NotUpdater,
    #[error("a snapshot is already being made")]
    Busy,
    #[error("the agent is stopping")]
    ShuttingDown,
    #[error("the node is not healthy, so it is not snapshotted: {0}")]
    NotHealthy(String),
    #[error("cannot read the chain point for the manifest: {0}")]
    ChainPoint(#[from] ProbeError),
    #[error("the client did not stop cleanly ({0}), so nothing was uploaded; it was started again")]
    NotClean(ClientExit),
    #[error("creating the snapshot failed (the client was started again): {0}")]
    Create(#[from] SnapshotError),
    #[error("the client could not be started again after the snapshot: {0}")]
    Restart(String),
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
    snapshot_running: Mutex<()>,
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
            snapshot_running: Mutex::new(()),
            phase: watch::channel(Phase::Hydrating).0,
            fatal: watch::channel(None).0,
        }
    }

    /// Hydration is done: every later start requires the data dir's marker to name
    /// `snapshot` (none for an empty store). Only the first call counts.
    pub fn set_required_snapshot(&self, snapshot: Option<String>) {
        let _ = self.required_snapshot.set(snapshot);
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

    /// Stops the client, if one runs; its exit.
    pub async fn stop(&self) -> Option<ClientExit> {
        self.set_phase(Phase::Stopping);
        let client = self.client.lock().await.take()?;
        if client.has_exited() {
            return client.exit_watch().borrow().as_ref().copied();
        }
        Some(client.stop().await)
    }

    /// Stops the client, makes a snapshot, starts the client again. See the module doc.
    pub async fn snapshot(
        self: &Arc<Self>,
        publish: bool,
        mut shutdown: Shutdown,
    ) -> Result<CreateSummary, SnapshotFailure> {
        let Some(updater) = &self.updater else {
            return Err(SnapshotFailure::NotUpdater);
        };
        let Ok(_one_at_a_time) = self.snapshot_running.try_lock() else {
            return Err(SnapshotFailure::Busy);
        };
        if shutdown.is_fired() {
            return Err(SnapshotFailure::ShuttingDown);
        }

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
        let Some(client) = slot.take() else {
            return Err(SnapshotFailure::ShuttingDown);
        };
        self.set_phase(Phase::Snapshotting);
        tracing::info!(
            block = chain.block_height,
            "stopping the client for a snapshot"
        );
        let exit = client.stop().await;

        let outcome = if exit.is_clean() {
            let options = CreateOptions {
                profile: self.spec.kind.profile(),
                chain,
                concurrency: updater.concurrency,
                now_ms: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                publish,
            };
            let creating = create(
                updater.store.clone(),
                &self.spec.data_dir,
                &options,
                Arc::new(LogProgress::new("snapshot")),
            );
            tokio::select! {
                created = creating => created.map_err(SnapshotFailure::from),
                () = shutdown.wait() => {
                    self.set_phase(Phase::Stopping);
                    return Err(SnapshotFailure::ShuttingDown);
                }
            }
        } else {
            Err(SnapshotFailure::NotClean(exit))
        };
        match &outcome {
            Ok(summary) => {
                tracing::info!(snapshot = %summary.snapshot, bytes_transferred = summary.bytes_transferred, "snapshot made")
            }
            Err(error) => tracing::error!(%error, "snapshot failed"),
        }

        if shutdown.is_fired() {
            self.set_phase(Phase::Stopping);
            return outcome;
        }
        if let Err(error) = self.start_into(&mut slot).await {
            let message = error.to_string();
            tracing::error!(%message, "the client did not start again after the snapshot");
            self.set_phase(Phase::Stopping);
            self.fatal
                .send_replace(Some(Fatal::RestartFailed(message.clone())));
            return Err(SnapshotFailure::Restart(message));
        }
        self.set_phase(Phase::Running);
        outcome
    }
}
