//! The local fleet: what `nodefleet up` runs on one machine instead of AWS, and the
//! embedded adapters of the control plane's ports.
//!
//! - [`tools`]: finds the anvil binary, installing it from the npm registry into the
//!   project's tools folder when it is missing;
//! - [`process`]: one anvil node as a child process that dies with its parent;
//! - [`child`]: child processes in their own group that die with their parent;
//! - [`fleet`]: N nodes started together and stopped together;
//! - [`state`]: `EmbeddedStateStore`, the `StateStore` in a redb file in the fleet's folder;
//! - [`objects`]: `FsObjectStore`, the `ObjectStore` on the local file system;
//! - [`scheduler`]: `LocalProcessScheduler`, node tasks as local processes in zone labels;
//! - [`targets`]: `LocalTargetRegistry`, targets probed on their health endpoints.

pub mod child;
pub mod fleet;
pub mod objects;
pub mod process;
pub mod scheduler;
pub mod state;
pub mod targets;
pub mod tools;

pub use fleet::{LocalFleet, LocalFleetConfig, NodeInfo};
pub use objects::FsObjectStore;
pub use scheduler::LocalProcessScheduler;
pub use state::EmbeddedStateStore;
pub use targets::LocalTargetRegistry;
pub use tools::{AnvilLocation, ToolError};
