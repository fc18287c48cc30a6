//! What an operator sees and does on the running local fleet: [`HealingFleet`] as the
//! console's [`ConsoleBackend`] (`nodefleet up --console`).
//!
//! - the status is the one the loop last wrote (the status file's document), with every
//!   node's head block asked again, as `nodefleet status` does, and the traffic window
//!   ending now: the page and the command print the same JSON;
//!   With `after`, it waits (up to the given time) for the loop to publish a newer one;
//! - the events are the fleet's audit trail, newest first;
//! - the control requests go to the fleet's own methods, which act through the same ports
//!   the loop's reconcile uses.
//!
//! # Error policy
//!
//! No status yet (the first reconcile has not finished) is a [`ControlError::Conflict`]; an
//! unreadable state is [`ControlError::Failed`]. The control methods map their own errors.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::console::{ConsoleBackend, ControlError, ControlRequest};
use crate::healing::HealingFleet;
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
        self.newest_events(limit)
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

impl HealingFleet {
    /// Does one control request; called by the loop between reconciles
    /// ([`HealingFleet::run`]), so every change to the fleet is made by the one task that
    /// reconciles it.
    pub(crate) async fn perform(&self, request: ControlRequest) -> Result<Value, ControlError> {
        match request {
            ControlRequest::FailZone(zone) => self.fail_zone_for_console(&zone).await,
            ControlRequest::RestoreZone(zone) => self.restore_zone_for_console(&zone).await,
            ControlRequest::Replace(node) => self.replace_for_console(&node).await,
            ControlRequest::SnapshotRound => self.snapshot_round_for_console().await,
        }
    }

    /// Starts a snapshot round now, through the updater's service as the loop ticks it (with
    /// `start`), waiting for the lease while the loop's own tick holds it.
    async fn snapshot_round_for_console(&self) -> Result<Value, ControlError> {
        let updater = self.updater().ok_or_else(|| {
            ControlError::Conflict(
                "this fleet runs no snapshot updater (--snapshot-interval-secs 0)".into(),
            )
        })?;
        let deadline = tokio::time::Instant::now() + ROUND_LEASE_WAIT;
        loop {
            let now = nodefleet_ports::Timestamp::now();
            match updater.start(self.state(), self.scheduler(), now).await {
                Ok(nodefleet_updater::service::UpdaterRun::Busy { holder, .. }) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(ControlError::Conflict(format!(
                            "the snapshot updater is busy (its lease is held by {holder}); try again"
                        )));
                    }
                    tokio::time::sleep(ROUND_LEASE_RETRY).await;
                }
                Ok(nodefleet_updater::service::UpdaterRun::Ran(ran)) => {
                    return Ok(serde_json::json!({
                        "ok": true,
                        "round": ran.memory.round.as_ref().map(|r| serde_json::json!({
                            "id": r.id,
                            "step": r.step.as_str(),
                            "started_at": r.started_at,
                        })),
                    }));
                }
                Err(error) => {
                    return Err(ControlError::Failed(format!(
                        "the snapshot updater's tick failed: {error}"
                    )));
                }
            }
        }
    }

    async fn fail_zone_for_console(
        &self,
        _zone: &nodefleet_ports::Zone,
    ) -> Result<Value, ControlError> {
        Err(ControlError::NotFound(
            "not in this build yet: the next commit adds it".into(),
        ))
    }
    async fn restore_zone_for_console(
        &self,
        _zone: &nodefleet_ports::Zone,
    ) -> Result<Value, ControlError> {
        Err(ControlError::NotFound(
            "not in this build yet: the next commit adds it".into(),
        ))
    }
    async fn replace_for_console(
        &self,
        _node: &nodefleet_ports::NodeId,
    ) -> Result<Value, ControlError> {
        Err(ControlError::NotFound(
            "not in this build yet: the next commit adds it".into(),
        ))
    }
}
