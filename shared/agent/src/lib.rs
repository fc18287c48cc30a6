//! The node agent (`nodefleet agent run`): the entrypoint of every node task.
//!
//! It hydrates the node's data dir from the newest published snapshot (or the one asked
//! for), starts the execution client with its profile, serves a sync-aware `/health` for
//! the load balancer, stops the client gracefully on SIGTERM, and, on an updater node,
//! quiesces, uploads and resumes on the snapshot updater's commands (through the store) or
//! snapshots on `POST /snapshot`. The pieces:
//!
//! | module | does |
//! |---|---|
//! | [`health`] | the pure health decision: `judge(observation, thresholds, now)` |
//! | [`probe`] | the JSON-RPC probe that gets the observation from the client |
//! | [`server`] | `GET /health` (200/503 JSON, cached 1 s) and the updater's `POST /snapshot` |
//! | [`client`] | the client's command line per profile, start, graceful stop, exit status |
//! | [`hydrate`] | restore before start; never start on unverified data (invariant 3) |
//! | [`node`] | the running client shared by the lifecycle, the channel and the control endpoint; the quiesce, upload and resume steps |
//! | [`updater`] | the updater channel loop: reads the updater's command, runs it, writes the agent's report |
//! | [`run`](mod@run) | the lifecycle that ties them together |
//! | [`shutdown`] | the stop signal the caller passes in (SIGTERM/SIGINT, or a trigger) |
//! | [`progress`] | restore and create progress as log lines |
//!
//! # Calling it
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn nodefleet_ports::ObjectStore>) {
//! use nodefleet_agent::{AgentConfig, ClientKind, Role, Shutdown};
//!
//! let mut config = AgentConfig::new(ClientKind::Geth, "/data/geth");
//! config.role = Role::Updater; // only on the updater node, which needs its id
//! config.node_id = Some("updater-1".to_owned());
//! let shutdown = Shutdown::on_signals().expect("signal handlers");
//! match nodefleet_agent::run(config, store, shutdown).await {
//!     Ok(_report) => std::process::exit(0),
//!     Err(error) => {
//!         eprintln!("{error}");
//!         std::process::exit(error.exit_code());
//!     }
//! }
//! # }
//! ```

pub mod client;
pub mod health;
pub mod hydrate;
pub mod node;
pub mod probe;
pub mod progress;
pub mod run;
pub mod server;
pub mod shutdown;
pub mod updater;

pub use client::{ClientExit, ClientKind, ClientLog, ExitCause, LaunchSpec};
pub use health::{Health, Observation, Thresholds, judge};
pub use hydrate::{HydrateError, Hydration};
pub use run::{
    AgentConfig, AgentError, DEFAULT_HEALTH_PORT, Role, RunReport, run, run_with_listener,
};
pub use shutdown::{Shutdown, ShutdownTrigger};
pub use updater::{ChannelLoop, ChannelSettings, DEFAULT_CHANNEL_POLL, DEFAULT_HEARTBEAT};
