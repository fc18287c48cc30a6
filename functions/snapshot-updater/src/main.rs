//! The snapshot-updater Lambda: reads its settings once (see `nodefleet_lambda::updater`),
//! builds the DynamoDB, ECS and S3 clients once, and on every schedule event (a 4-hour
//! `start-round`, a 1-minute tick) advances the leased snapshot round until the runtime
//! shuts it down.

use nodefleet_gateway::logging;
use nodefleet_lambda::env::Env;
use nodefleet_lambda::updater::{self, UpdaterEnv, UpdaterFunction};

// One invocation at a time per Lambda sandbox: a single-threaded runtime is all it needs
// (verification's requests are concurrent futures, not threads).
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    logging::init_json("info", false);
    let var = |name: &str| std::env::var(name).ok();
    let env = UpdaterEnv::from_env(Env::new(&var))
        .map_err(|e| anyhow::anyhow!("snapshot-updater configuration: {e}"))?;
    let sdk = nodefleet_aws::load_sdk_config().await;
    let function = UpdaterFunction::new(&sdk, env)
        .map_err(|e| anyhow::anyhow!("snapshot-updater configuration: {e}"))?;
    updater::serve(function)
        .await
        .map_err(|e| anyhow::anyhow!("lambda runtime: {e}"))
}
