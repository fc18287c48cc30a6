//! The local fleet's snapshot updater: the same `nodefleet_updater::service::run` the
//! `snapshot-updater` Lambda runs, ticked by the fleet's loop ([`crate::healing`]) over the
//! local adapters, with a dedicated updater node (an agent with role `updater`, launched by
//! the round through the local scheduler) and the fleet's folder store.
//!
//! The Lambda is ticked every minute and starts a round every four hours; locally the loop
//! ticks every second and a round starts every [`DEFAULT_ROUND_INTERVAL`], with step
//! timeouts sized for anvil's few kilobytes of state ([`local_timeouts`]), so a demo sees a
//! snapshot published within seconds of `nodefleet up` and a fresh one every two minutes.
//! A tick logs (target `nodefleet::snapshots`) every round that ends and every tick that
//! fails; the service itself logs each step.

use std::sync::Arc;
use std::time::Duration;

use nodefleet_ports::{ObjectStore, Scheduler, StateStore, Timestamp};
use nodefleet_updater::round::{RoundOutcome, RoundSettings, StepTimeouts, UpdaterMemory};
use nodefleet_updater::service::{self, UpdaterPorts, UpdaterRun, UpdaterSettings};

/// A round every two minutes: often enough that a demo's killed node hydrates a recent
/// snapshot, rare enough that the updater spends most of its time following the chain.
pub const DEFAULT_ROUND_INTERVAL: Duration = Duration::from_secs(120);
/// The lease a local tick holds: a local tick takes milliseconds (the agent does the
/// upload), so a `nodefleet up` killed mid-tick blocks the next one for half a minute only.
pub const LOCAL_LEASE_TTL: Duration = Duration::from_secs(30);
/// Local uploads are kept this long before prune may take an unpublished one: more than
/// the local upload timeout.
pub const LOCAL_PRUNE_GRACE: Duration = Duration::from_secs(10 * 60);
/// Published snapshots kept locally, as in production.
pub const LOCAL_KEEP_SNAPSHOTS: usize = 3;
/// Every chunk of a local snapshot is read back before it is published: there are a
/// handful.
pub const LOCAL_VERIFY_SAMPLE_CHUNKS: u64 = 1_000_000;
/// A local agent's report is stale after this: it reports every second.
pub const LOCAL_HEARTBEAT_STALE: Duration = Duration::from_secs(10);

/// Step timeouts for anvil: its agent starts in under a second and its state is kilobytes,
/// so a minute per step is generous on a loaded CI machine, and an upload gets five.
pub fn local_timeouts() -> StepTimeouts {
    StepTimeouts {
        upload: Duration::from_secs(5 * 60),
        ..StepTimeouts::all(Duration::from_secs(60))
    }
}

/// The updater's settings for a local fleet whose rounds start every `interval`.
pub fn local_settings(owner: &str, interval: Duration, max_head_age: Duration) -> UpdaterSettings {
    UpdaterSettings {
        owner: owner.to_owned(),
        round: RoundSettings {
            interval,
            timeouts: local_timeouts(),
            max_head_age,
            heartbeat_stale: LOCAL_HEARTBEAT_STALE,
        },
        lease_ttl: LOCAL_LEASE_TTL,
        zone: None,
        verify_sample_chunks: LOCAL_VERIFY_SAMPLE_CHUNKS,
        verify_concurrency: 4,
        keep_snapshots: LOCAL_KEEP_SNAPSHOTS,
        prune_grace: LOCAL_PRUNE_GRACE,
        max_ticks: 16,
    }
}

/// The local updater: its settings and the store it works on.
#[derive(Clone)]
pub struct LocalUpdater {
    pub settings: UpdaterSettings,
    pub store: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for LocalUpdater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalUpdater")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

const LOG_TARGET: &str = "nodefleet::snapshots";

/// `ensure_node=12 wait_synced=300 ...`: how long each step of a round took, in ms.
fn step_times(steps: &[(nodefleet_updater::round::Step, u64)]) -> String {
    steps
        .iter()
        .map(|(step, millis)| format!("{}={millis}", step.as_str()))
        .collect::<Vec<_>>()
        .join(" ")
}

impl LocalUpdater {
    /// One tick; the memory as it is after it (`None` if the lease was held or it failed).
    pub async fn tick(
        &self,
        state: &dyn StateStore,
        scheduler: &dyn Scheduler,
        now: Timestamp,
    ) -> Option<UpdaterMemory> {
        let ports = UpdaterPorts {
            state,
            scheduler,
            store: &self.store,
        };
        match service::run(ports, &self.settings, false, now).await {
            Ok(UpdaterRun::Ran(ran)) => {
                for round in &ran.finished {
                    match &round.outcome {
                        RoundOutcome::Published {
                            snapshot,
                            block_height,
                            bytes_uploaded,
                            bytes_total,
                            ..
                        } => tracing::info!(
                            target: LOG_TARGET,
                            event = "round",
                            round = %round.id,
                            snapshot = snapshot.as_str(),
                            block = block_height,
                            bytes_uploaded,
                            bytes_total,
                            took_ms = round.finished_at.since(round.started_at).as_millis() as u64,
                            steps = %step_times(&round.step_millis),
                            "a snapshot was published"
                        ),
                        RoundOutcome::Aborted(abort) => tracing::warn!(
                            target: LOG_TARGET,
                            event = "round",
                            round = %round.id,
                            reason = abort.reason.as_str(),
                            step = abort.step.as_str(),
                            detail = %abort.detail,
                            "a snapshot round was aborted; the previous snapshot stays published"
                        ),
                    }
                }
                Some(ran.memory)
            }
            Ok(UpdaterRun::Busy { .. }) => None,
            Err(error) => {
                tracing::warn!(target: LOG_TARGET, event = "tick", error = %error, "the snapshot updater's tick failed; the next one retries");
                None
            }
        }
    }
}
