//! Gathering a fleet's status through the ports: every source of a [`FleetReport`] read at
//! once ([`gather`]), then the report built and the heads probed ([`status`]). The same over
//! a deployed stack's adapters (`nodefleet status --stack`) and over any other ports.
//!
//! # Error policy
//!
//! The state store is the fleet's record: if its config, nodes or snapshot catalog cannot be
//! read, there is no status ([`StatusError`]). The scheduler, the load balancer, the
//! updater's memory and the audit trail only add to it: a failure to read one becomes a
//! warning in the report, and its columns show `-`.

use std::time::Duration;

use nodefleet_ports::{NetworkMode, StateError, Timestamp};
use nodefleet_reactor::reconcile::Ports;
use nodefleet_updater::round::UpdaterMemory;
use nodefleet_updater::service::UPDATER_NAME;

use crate::events::{EventFilter, recent_events};
use crate::probe::HeadProbe;
use crate::report::{FleetReport, ReportInputs};

/// Events a status shows: a screenful, enough to see the last incident.
pub const STATUS_EVENTS: usize = 10;

/// The window a status reads events from: the last day (see
/// [`crate::events::DEFAULT_EVENTS_SINCE`]).
pub const STATUS_EVENTS_SINCE: Duration = crate::events::DEFAULT_EVENTS_SINCE;

/// What a status needs besides the ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusOptions {
    /// Where the fleet is (`stack nodefleet-prod`), for the heading.
    pub source: String,
    pub fleet: String,
    pub network_mode: NetworkMode,
    /// The port the load balancer routes to (the node's RPC port).
    pub container_port: u16,
    /// How far back events are read, and how many are shown.
    pub events_since: Duration,
    pub events_limit: usize,
    /// The time each node gets to say its head block; zero skips the probe.
    pub head_timeout: Duration,
}

/// Why there is no status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    #[error("cannot read the fleet's {what}: {source}")]
    State {
        what: &'static str,
        source: StateError,
    },
}

/// Reads every source of the report at once (see the module doc).
pub async fn gather(
    ports: Ports<'_>,
    options: &StatusOptions,
    now: Timestamp,
) -> Result<ReportInputs, StatusError> {
    let state = ports.state;
    let all_events = EventFilter::default();
    let (config, nodes, snapshots, updater, events, tasks, targets) = tokio::join!(
        state.get_config(),
        state.list_nodes(),
        state.list_snapshots(),
        state.get_control_state(UPDATER_NAME),
        recent_events(
            state,
            now.minus(options.events_since),
            now,
            options.events_limit,
            &all_events,
        ),
        ports.scheduler.list_tasks(),
        ports.registry.describe_health(),
    );
    let fail = |what: &'static str| move |source| StatusError::State { what, source };
    let mut warnings = Vec::new();
    let updater = match updater {
        Ok(None) => None,
        Ok(Some(stored)) => match serde_json::from_str::<UpdaterMemory>(&stored.body) {
            Ok(memory) => Some(memory),
            Err(e) => {
                warnings.push(format!("the snapshot updater's memory is unreadable: {e}"));
                None
            }
        },
        Err(e) => {
            warnings.push(format!("cannot read the snapshot updater's memory: {e}"));
            None
        }
    };
    let events = events.unwrap_or_else(|e| {
        warnings.push(format!("cannot read the audit trail: {e}"));
        Vec::new()
    });
    let tasks = tasks
        .map_err(|e| warnings.push(format!("cannot list the fleet's tasks: {e}")))
        .ok();
    let targets = targets
        .map_err(|e| warnings.push(format!("cannot read target health: {e}")))
        .ok();
    Ok(ReportInputs {
        fleet: options.fleet.clone(),
        source: options.source.clone(),
        config: config.map_err(fail("config"))?,
        nodes: nodes.map_err(fail("node records"))?,
        tasks,
        targets,
        snapshots: snapshots.map_err(fail("snapshot catalog"))?,
        updater,
        events,
        network_mode: options.network_mode,
        container_port: options.container_port,
        warnings,
    })
}

/// [`gather`], [`FleetReport::build`], then every head asked through `probe` (unless the
/// options' head timeout is zero).
pub async fn status(
    ports: Ports<'_>,
    options: &StatusOptions,
    probe: &dyn HeadProbe,
    now: Timestamp,
) -> Result<FleetReport, StatusError> {
    let inputs = gather(ports, options, now).await?;
    let mut report = FleetReport::build(&inputs, now);
    if !options.head_timeout.is_zero() {
        report.probe_heads(probe, options.head_timeout).await;
    }
    Ok(report)
}
