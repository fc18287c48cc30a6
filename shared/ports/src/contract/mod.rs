//! One contract suite per port, written once and run against every adapter.
//!
//! Each suite is a macro that expands, inside the calling test file, into one `#[tokio::test]`
//! per promise, so a failing promise is reported by name for the adapter that broke it.

pub mod object_store;
pub mod scheduler;
pub mod state_store;
pub mod target_registry;
