//! The health-reactor Lambda: reads its settings once (see `nodefleet_lambda::reactor`),
//! builds the DynamoDB, ECS and ELB clients once, and reconciles the fleet on every alarm,
//! task, spot and schedule event until the runtime shuts it down.

use nodefleet_gateway::logging;
use nodefleet_lambda::env::Env;
use nodefleet_lambda::reactor::{self, ReactorEnv, ReactorFunction};

// One invocation at a time per Lambda sandbox: a single-threaded runtime is all it needs.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    logging::init_json("info", false);
    let var = |name: &str| std::env::var(name).ok();
    let env = ReactorEnv::from_env(Env::new(&var))
        .map_err(|e| anyhow::anyhow!("health-reactor configuration: {e}"))?;
    let sdk = nodefleet_aws::load_sdk_config().await;
    let function = ReactorFunction::new(&sdk, env)
        .map_err(|e| anyhow::anyhow!("health-reactor configuration: {e}"))?;
    reactor::serve(function)
        .await
        .map_err(|e| anyhow::anyhow!("lambda runtime: {e}"))
}
