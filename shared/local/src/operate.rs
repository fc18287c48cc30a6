//! What an operator sees and does on the running local fleet: [`HealingFleet`] as the
//! console's [`ConsoleBackend`] (`nodefleet up --console`).
//!
//! - the status is the one the loop last wrote (the status file's document), with every
//!   node's head block asked again, as `nodefleet status` does, and the traffic window
//!   ending now: the page and the command print the same JSON;
//!   With `after`, it waits (up to the given time) for the loop to publish a newer one;
//! - the events are the fleet's audit trail, newest first;
//! - the control requests are done by the loop, between two reconciles: a zone fails or is
//!   restored in the scheduler ([`HealingFleet::fail_zone`]), a node is replaced through the
//!   reactor's planner, executor and keys (`nodefleet_ops::replace`, as for a deployed
//!   stack), a round starts through the updater's service (`nodefleet_ops::start_round`).
//!   Each answer is `{"ok": true, "message": "<one line>", ...}`.
//!
//! # Error policy
//!
//! No status yet (the first reconcile has not finished) is a [`ControlError::Conflict`]; an
//! unreadable state is [`ControlError::Failed`]. An unknown zone or node is `NotFound`, a
//! replacement the planner refuses (the updater, a pending replacement) or a fleet without
//! an updater `Conflict`, and a failed launch, tick or scheduler `Failed`.

use std::time::Duration;

use async_trait::async_trait;
use nodefleet_ops::{ReplaceError, RoundStart};
use nodefleet_ports::Timestamp;
use nodefleet_reactor::planner::ReplaceRefusal;
use nodefleet_updater::service::UpdaterPorts;
use serde_json::{Value, json};

use crate::console::{ConsoleBackend, ControlError, ControlRequest};
use crate::healing::{ChaosError, HealingFleet};
use crate::status::{EventStatus, FleetStatus};

/// How long each node gets to say its head block for the console: the page asks every
/// second, so a hung node must not hold an answer longer than a fraction of that.
const HEAD_TIMEOUT: Duration = Duration::from_millis(500);

#[async_trait]
impl ConsoleBackend for HealingFleet {
    async fn status(
        &self,
        after: Option<u64>,
        wait: Duration,
    ) -> Result<FleetStatus, ControlError> {
        if let Some(after) = after {
            self.wait_for_status_after(after, wait).await;
        }
        let mut status = self.latest_status().ok_or_else(|| {
            ControlError::Conflict("the fleet has not finished its first reconcile yet".into())
        })?;
        status.probe_heads(HEAD_TIMEOUT).await;
        status.traffic = self.traffic_now();
        Ok(status)
    }

    async fn events(&self, limit: usize) -> Result<Vec<EventStatus>, ControlError> {
        self.newest_events(Timestamp::EPOCH, limit)
            .await
            .map_err(|e| ControlError::Failed(format!("cannot read the audit trail: {e}")))
    }

    async fn control(&self, request: ControlRequest) -> Result<Value, ControlError> {
        self.submit(request).await
    }
}

/// How long a console's round request waits for the loop's own updater tick to let go of
/// the updater's lease: a local tick takes milliseconds, one with a verify a second or two.
const ROUND_LEASE_WAIT: Duration = Duration::from_secs(10);
/// How often the round request tries for the lease meanwhile.
const ROUND_LEASE_RETRY: Duration = Duration::from_millis(100);

/// `{"ok": true, "message": <one line>, ...value's fields}`: what every control answer is.
fn answer(value: impl serde::Serialize, message: String) -> Result<Value, ControlError> {
    let mut value = serde_json::to_value(value)
        .map_err(|e| ControlError::Failed(format!("cannot encode the answer: {e}")))?;
    if let Value::Object(fields) = &mut value {
        fields.insert("ok".into(), Value::Bool(true));
        fields.insert("message".into(), Value::String(message));
    }
    Ok(value)
}

impl HealingFleet {
    /// Does one control request; called by the loop between reconciles
    /// ([`HealingFleet::run`]), so every change to the fleet is made by the one task that
    /// reconciles it.
    pub(crate) async fn perform(&self, request: ControlRequest) -> Result<Value, ControlError> {
        match request {
            ControlRequest::FailZone(zone) => {
                let stopped = self.fail_zone(&zone).await.map_err(chaos_error)?;
                let message = format!("zone {zone} failed; {} task(s) lost", stopped.len());
                answer(json!({ "zone": zone, "stopped": stopped }), message)
            }
            ControlRequest::RestoreZone(zone) => {
                let was_failed = self.restore_zone(&zone).await.map_err(chaos_error)?;
                let message = if was_failed {
                    format!("zone {zone} restored")
                } else {
                    format!("zone {zone} had not failed")
                };
                answer(json!({ "zone": zone, "was_failed": was_failed }), message)
            }
            ControlRequest::Replace(node) => {
                let replaced =
                    nodefleet_ops::replace(self.ports(), &self.settings(), &node, Timestamp::now())
                        .await
                        .map_err(replace_error)?;
                let message = replaced.render();
                answer(replaced, message)
            }
            ControlRequest::SnapshotRound => self.snapshot_round().await,
        }
    }

    /// Starts a snapshot round now through the updater's own service
    /// (`nodefleet_ops::start_round`), waiting for the lease while the loop's tick holds it.
    async fn snapshot_round(&self) -> Result<Value, ControlError> {
        let updater = self.updater().ok_or_else(|| {
            ControlError::Conflict(
                "this fleet runs no snapshot updater (--snapshot-interval-secs 0)".into(),
            )
        })?;
        let ports = UpdaterPorts {
            state: self.state(),
            scheduler: self.scheduler(),
            store: &updater.store,
        };
        let deadline = tokio::time::Instant::now() + ROUND_LEASE_WAIT;
        loop {
            let started = nodefleet_ops::start_round(ports, &updater.settings, Timestamp::now())
                .await
                .map_err(|e| {
                    ControlError::Failed(format!("the snapshot updater's tick failed: {e}"))
                })?;
            match started {
                RoundStart::Busy { .. } if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(ROUND_LEASE_RETRY).await;
                }
                started => {
                    let message = started.render();
                    return answer(started, message);
                }
            }
        }
    }
}

fn chaos_error(error: ChaosError) -> ControlError {
    match error {
        ChaosError::UnknownZone { .. } => ControlError::NotFound(error.to_string()),
        ChaosError::Scheduler(_) => ControlError::Failed(error.to_string()),
    }
}

fn replace_error(error: ReplaceError) -> ControlError {
    match &error {
        ReplaceError::Refused(ReplaceRefusal::UnknownNode { .. }) => {
            ControlError::NotFound(error.to_string())
        }
        ReplaceError::Refused(_) => ControlError::Conflict(error.to_string()),
        _ => ControlError::Failed(error.to_string()),
    }
}
