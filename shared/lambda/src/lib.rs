//! The control plane's Lambda adapters: the primary side of the hexagon. Each function's
//! `main` reads its settings once, builds its AWS adapters once and hands every event to a
//! handler here, which calls the shared service and returns its answer; the services know
//! nothing of Lambda.
//!
//! - [`env`](mod@env): settings from the environment, with errors that name the variable;
//! - [`launch`]: the ECS settings of every function that launches node tasks;
//! - [`function`]: what every function shares (init error, answer and metrics, EMF output);
//! - [`reactor`]: the health-reactor function;
//! - [`updater`]: the snapshot-updater function;
//! - [`stack`]: a deployed stack's outputs as the functions' settings and adapters, for
//!   operator commands (`nodefleet ... --stack NAME`);
//! - [`permissions`]: what each principal (the functions, the node tasks) calls, and the IAM
//!   actions its role needs.

pub mod env;
pub mod function;
pub mod launch;
pub mod permissions;
pub mod reactor;
pub mod stack;
pub mod updater;
