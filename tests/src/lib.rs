//! Test doubles for the workspace's tests.
//!
//! - [`RecordingNode`]: an HTTP JSON-RPC node that records every method it receives, with
//!   switchable misbehaviour (garbage, delays, HTTP errors): proves what reaches a node.
//! - [`FakeRuntimeApi`]: the Lambda Runtime API on loopback, so a real Lambda binary can be
//!   started, fed API Gateway events, and timed from process start to ready.
//! - [`anvil`]: the pinned anvil from the project's tools folder.
//! - [`moto`]: the moto server's URL, raw EC2 and moto-api calls, unique names.

#![allow(clippy::unwrap_used)] // test support: a broken double should fail the test loudly

pub mod anvil;
pub mod client;
mod http_server;
pub mod lambda_runtime_api;
pub mod moto;
pub mod recording_node;

pub use lambda_runtime_api::{FakeRuntimeApi, Invocation};
pub use recording_node::{NodeBehaviour, RecordingNode};

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}
