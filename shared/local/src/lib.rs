//! The local fleet: what `nodefleet up` runs on one machine instead of AWS, and the
//! embedded adapters of the control plane's ports.
//!
//! - [`tools`]: finds the anvil binary, installing it from the npm registry into the
//!   project's tools folder when it is missing;
//! - [`node`]: what local nodes share (block time, chain id, start timeout) and a bare
//!   `eth_blockNumber` call;
//! - [`child`]: child processes in their own group that die with their parent;
//! - [`healing`]: `HealingFleet`, the self-healing local fleet: the reactor's reconcile on a
//!   timer over the local adapters, its nodes hydrated from the fleet's object store;
//! - [`catalog`]: the snapshot catalog re-seeded from the object store's `latest` when the
//!   fleet opens, and which catalog entries the status shows;
//! - [`snapshots`]: the snapshot updater's service ticked by the fleet's loop, with local
//!   intervals and timeouts;
//! - [`status`]: `FleetStatus`, the status file the running fleet writes and
//!   `nodefleet status` reads;
//! - [`console`]: the running fleet's status page and control API on a listener of its own,
//!   and the client the CLI's `--dir` commands call it with;
//! - [`operate`]: the running fleet as the console's backend: its status, events and
//!   control actions;
//! - [`state`]: `EmbeddedStateStore`, the `StateStore` in a redb file in the fleet's folder;
//! - [`objects`]: `FsObjectStore`, the `ObjectStore` on the local file system;
//! - [`scheduler`]: `LocalProcessScheduler`, node tasks as local processes in zone labels;
//! - [`targets`]: `LocalTargetRegistry`, targets probed on their health endpoints.

pub mod catalog;
pub mod child;
pub mod console;
pub mod healing;
pub mod node;
pub mod objects;
pub mod operate;
pub mod scheduler;
pub mod snapshots;
pub mod state;
pub mod status;
pub mod targets;
pub mod tools;

pub use healing::{FleetView, HealingFleet, LocalFleetOptions};
pub use objects::FsObjectStore;
pub use scheduler::LocalProcessScheduler;
pub use state::EmbeddedStateStore;
pub use status::FleetStatus;
pub use targets::LocalTargetRegistry;
pub use tools::{AnvilLocation, ToolError};
