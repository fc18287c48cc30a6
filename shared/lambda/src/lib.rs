//! The control plane's Lambda adapters: the primary side of the hexagon. Each function's
//! `main` reads its settings once, builds its AWS adapters once and hands every event to a
//! handler here, which calls the shared service and returns its answer; the services know
//! nothing of Lambda.
//!
//! - [`env`]: settings from the environment, with errors that name the variable;
//! - [`reactor`]: the health-reactor function.

pub mod env;
pub mod reactor;
