//! The settings of every function that launches node tasks on ECS (the health reactor its
//! serving nodes, the snapshot updater its updater node): one parser, so both read
//! `CLUSTER`, `NETWORK_MODE` or `NODE_CLIENT` the same way and a deployment gives them the
//! same values.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `CLUSTER` | ECS cluster name or ARN | required |
//! | `TASK_DEFINITION` | node task definition (family, `family:rev` or ARN) | required |
//! | `CONTAINER_NAME` | the node container in it | `node` |
//! | `NETWORK_MODE` | `bridge` or `awsvpc` | `bridge` |
//! | `SUBNETS_BY_ZONE` | awsvpc only: `zone=subnet[+subnet...]`, comma-separated | required for awsvpc |
//! | `SECURITY_GROUPS` | awsvpc only: comma-separated | none |
//! | `CAPACITY_PROVIDER` | capacity provider for RunTask (else launch type EC2) | none |
//! | `NODE_CLIENT` | the execution client: RunTask's CPU/memory come from its capacity profile (as in `nodefleet plan`) | `geth` |

use std::collections::BTreeMap;

use nodefleet_aws::ecs::{
    CapacityProviderShare, EcsLaunch, EcsNetwork, EcsSchedulerConfig, TaskSize,
};
use nodefleet_ports::Zone;
use nodefleet_reactor::capacity::task_size_for_client;

use crate::env::{Env, EnvError};

/// The container name when `CONTAINER_NAME` is not set: what infra/template.yaml calls it.
pub const DEFAULT_CONTAINER_NAME: &str = "node";
/// The client when `NODE_CLIENT` is not set: the most deployed execution client.
pub const DEFAULT_CLIENT: &str = "geth";

/// How a function launches node tasks: the ECS scheduler's configuration (task size
/// included) and the client it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchEnv {
    pub scheduler: EcsSchedulerConfig,
    /// A client with a capacity profile (geth, reth, erigon, nethermind, besu).
    pub client: String,
}

impl LaunchEnv {
    /// Reads the variables of the module doc for `fleet`'s tasks.
    pub fn from_env(env: Env<'_>, fleet: &str) -> Result<LaunchEnv, EnvError> {
        let cluster = env.required("CLUSTER")?;
        let task_definition = env.required("TASK_DEFINITION")?;
        let container_name = env
            .optional("CONTAINER_NAME")
            .unwrap_or_else(|| DEFAULT_CONTAINER_NAME.to_owned());
        let mut scheduler =
            EcsSchedulerConfig::new(cluster, task_definition, container_name, fleet.to_owned());
        scheduler.network = network_from(env)?;
        if let Some(provider) = env.optional("CAPACITY_PROVIDER") {
            scheduler.launch = EcsLaunch::CapacityProviders(vec![CapacityProviderShare {
                capacity_provider: provider,
                weight: 1,
                base: 0,
            }]);
        }
        let client = env
            .optional("NODE_CLIENT")
            .unwrap_or_else(|| DEFAULT_CLIENT.to_owned());
        // The same reservation `nodefleet plan` packs instances with; a client without a
        // capacity profile (anvil is local-only) cannot be run on ECS.
        let reservation = task_size_for_client(&client).ok_or_else(|| {
            Env::invalid(
                "NODE_CLIENT",
                &client,
                "one of geth, reth, erigon, nethermind, besu",
            )
        })?;
        scheduler.task_size = Some(TaskSize {
            cpu_units: reservation.cpu_units,
            memory_mib: reservation.memory_mib,
        });
        Ok(LaunchEnv { scheduler, client })
    }
}

fn network_from(env: Env<'_>) -> Result<EcsNetwork, EnvError> {
    let mode = env
        .optional("NETWORK_MODE")
        .unwrap_or_else(|| "bridge".to_owned());
    match mode.as_str() {
        "bridge" => Ok(EcsNetwork::Bridge),
        "awsvpc" => {
            let entries = env.list("SUBNETS_BY_ZONE");
            if entries.is_empty() {
                return Err(EnvError::Missing("SUBNETS_BY_ZONE"));
            }
            let mut subnets_by_zone: BTreeMap<Zone, Vec<String>> = BTreeMap::new();
            for entry in &entries {
                let Some((zone, subnets)) = entry.split_once('=') else {
                    return Err(Env::invalid(
                        "SUBNETS_BY_ZONE",
                        entry,
                        "zone=subnet[+subnet...] entries, comma-separated",
                    ));
                };
                subnets_by_zone
                    .entry(Zone::new(zone.trim()))
                    .or_default()
                    .extend(subnets.split('+').map(|s| s.trim().to_owned()));
            }
            Ok(EcsNetwork::Awsvpc {
                subnets_by_zone,
                security_groups: env.list("SECURITY_GROUPS"),
            })
        }
        other => Err(Env::invalid("NETWORK_MODE", other, "bridge or awsvpc")),
    }
}
