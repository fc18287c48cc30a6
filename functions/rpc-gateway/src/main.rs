//! The rpc-gateway Lambda: reads its settings once (see `nodefleet_gateway::config`),
//! builds the pooled upstream client once, and serves API Gateway events with the shared
//! handler until the runtime shuts it down.

use std::sync::Arc;

use nodefleet_gateway::config::GatewayConfig;
use nodefleet_gateway::{Gateway, lambda, logging};

// One invocation at a time per Lambda sandbox: a single-threaded runtime is all it needs.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    logging::init_json("info", false);
    let config = GatewayConfig::from_env(|name| std::env::var(name).ok())
        .map_err(|e| anyhow::anyhow!("rpc-gateway configuration: {e}"))?;
    let gateway = Arc::new(Gateway::new(config.policy, config.upstream));
    lambda::run(gateway)
        .await
        .map_err(|e| anyhow::anyhow!("lambda runtime: {e}"))
}
