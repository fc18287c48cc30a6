//! The JSON-RPC gateway's decisions, free of I/O.
//!
//! Given a request body and a [`Policy`], [`prepare`] answers what it can locally and says
//! what must go to a node; [`Exchange::finish`] turns the node's answer into the client's.
//! The only inputs from the outside world are the upstream's answer and, for `eth_getLogs`
//! with block tags, the head block number: both are passed in, so every rule here is tested
//! without sockets or clocks. The adapters that do the I/O live in `nodefleet-gateway`.
//!
//! Modules:
//! - [`jsonrpc`]: the wire format (parsing that keeps ids and params as written; writers);
//! - [`policy`]: which methods may reach a node, and the operator's TOML file;
//! - [`limits`]: body, batch and `eth_getLogs` range caps;
//! - [`params`]: params checks for the methods the gateway inspects;
//! - [`exchange`]: one request from body to answer;
//! - [`conformance`]: the promises above as executable checks, for tests and the fuzz target.

pub mod conformance;
pub mod exchange;
pub mod jsonrpc;
pub mod limits;
pub mod params;
pub mod policy;

pub use exchange::{
    Counts, Exchange, Reply, UpstreamAnswer, UpstreamFailure, UpstreamRequest, prepare,
};
pub use limits::Limits;
pub use policy::{Policy, PolicyError, Verdict};
