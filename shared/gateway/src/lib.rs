//! The JSON-RPC gateway's adapters: the upstream client, the head cache, the handler that
//! ties them to `nodefleet_gateway_core`'s decisions, and its two front doors (API Gateway
//! events through Lambda, and a plain HTTP server).
//!
//! ```text
//!  API Gateway event ─► lambda::respond ─┐
//!                                        ├─► Gateway::handle ─► core::prepare/finish
//!  HTTP request ──────► server::serve ───┘          │
//!                                                   └─► Upstream::send ─► NLB / LocalBalancer
//! ```

pub mod balancer;
pub mod config;
pub mod handler;
pub mod head;
pub mod http1;
pub mod lambda;
pub mod logging;
pub mod server;
pub mod traffic;
pub mod upstream;

pub use balancer::LocalBalancer;
pub use handler::Gateway;
pub use traffic::{TrafficRecorder, TrafficSecond, TrafficWindow};
pub use upstream::{
    HttpUpstream, HttpUpstreamConfig, Upstream, UpstreamCall, UpstreamError, UpstreamResponse,
};
