//! Stateful in-memory adapters for scenario tests: they keep what they are told and model
//! what the real backend would do (capacity per zone, target health transitions), so the
//! logic moto cannot exercise (placement, health) is still tested.
//!
//! The `StateStore` fake is `nodefleet_local::state::EmbeddedStateStore` opened in memory:
//! the same code as the local adapter, so there is one implementation of its conditions.

pub mod objects;
pub mod scheduler;
pub mod targets;

pub use objects::MemoryObjectStore;
pub use scheduler::FakeScheduler;
pub use targets::FakeTargetRegistry;
