//! The local fleet: what `nodefleet up` runs on one machine instead of ECS tasks.
//!
//! - [`tools`]: finds the anvil binary, installing it from the npm registry into the
//!   project's tools folder when it is missing;
//! - [`process`]: one anvil node as a child process that dies with its parent;
//! - [`fleet`]: N nodes started together and stopped together.

pub mod fleet;
pub mod process;
pub mod tools;

pub use fleet::{LocalFleet, LocalFleetConfig, NodeInfo};
pub use tools::{AnvilLocation, ToolError};
