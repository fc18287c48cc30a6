//! A deployed stack as an operator reaches it (`nodefleet status|events|replace|snapshot
//! round --stack NAME`): the stack's CloudFormation outputs turned into the environment the
//! health-reactor and snapshot-updater functions run with, read by the functions' own
//! parsers ([`ReactorEnv::from_env`], [`UpdaterEnv::from_env`]), and the same AWS adapters
//! the functions build from it ([`StackAdapters`]). So an operator's replacement or round
//! runs with the functions' settings: the same task definitions, capacity provider, task
//! size, grace window (hence the same idempotency-key lifetime) and round settings.
//!
//! | variable | from output | read by |
//! |---|---|---|
//! | `TABLE_NAME` | `StateTableName` | both |
//! | `FLEET_NAME` | `FleetName` | both |
//! | `CLUSTER` | `ClusterName` | both |
//! | `CAPACITY_PROVIDER` | `CapacityProviderName` | both |
//! | `NODE_CLIENT` | `NodeClient` | both |
//! | `TASK_DEFINITION` | `NodeTaskDefinitionArn` / `UpdaterTaskDefinitionArn` | reactor / updater |
//! | `TARGET_GROUP_ARN` | `TargetGroupArn` | reactor |
//! | `SNAPSHOT_STORE` | `SnapshotStore` | updater |
//! | `UPDATER_ZONE` | `UpdaterZone` | updater |
//!
//! Every other variable is left to the parsers' defaults, which are the values
//! `infra/template.yaml` gives the functions: `tests/tests/template.rs` checks that the
//! settings read here from the template's outputs equal those read from its function
//! environments, so a template that sets a variable to something else must add an output
//! for it. The fleet-config seed (`ZONES`, `SERVING_NODES`, ...) is not carried: the reactor
//! stores the config on its first run, and operator commands read the stored one.
//!
//! # Error policy
//!
//! [`StackSettingsError`] is final: an output the stack lacks (an older template) or a value
//! the functions' parser rejects, each named, with the stack. Adapter construction fails
//! only on a configuration the adapters reject, the same as a function's init.

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_config::SdkConfig;
use nodefleet_aws::{
    CloudFormationStack, DynamoStateStore, EcsScheduler, ElbTargetRegistry, S3ObjectStore,
    StackError,
};
use nodefleet_ports::ObjectStore;

use crate::env::{Env, EnvError};
use crate::function::InitError;
use crate::permissions::Principal;
use crate::reactor::ReactorEnv;
use crate::updater::UpdaterEnv;

/// Which function reads a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    Both,
    Reactor,
    Updater,
}

/// `(variable, output, reader)`: the table of the module doc.
const FROM_OUTPUTS: &[(&str, &str, Reader)] = &[
    ("TABLE_NAME", "StateTableName", Reader::Both),
    ("FLEET_NAME", "FleetName", Reader::Both),
    ("CLUSTER", "ClusterName", Reader::Both),
    ("CAPACITY_PROVIDER", "CapacityProviderName", Reader::Both),
    ("NODE_CLIENT", "NodeClient", Reader::Both),
    ("TASK_DEFINITION", "NodeTaskDefinitionArn", Reader::Reactor),
    ("TARGET_GROUP_ARN", "TargetGroupArn", Reader::Reactor),
    (
        "TASK_DEFINITION",
        "UpdaterTaskDefinitionArn",
        Reader::Updater,
    ),
    ("SNAPSHOT_STORE", "SnapshotStore", Reader::Updater),
    ("UPDATER_ZONE", "UpdaterZone", Reader::Updater),
];

/// Why a stack's outputs do not give the functions' settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StackSettingsError {
    #[error(
        "stack {stack} has no output {output} (needed for the {function} settings; is it \
         deployed from an older template? `sam deploy` the current infra/template.yaml)"
    )]
    MissingOutput {
        stack: String,
        output: &'static str,
        function: &'static str,
    },
    #[error("stack {stack}'s outputs give the {function} a bad setting: {source}")]
    Invalid {
        stack: String,
        function: &'static str,
        source: EnvError,
    },
}

/// The environment `principal` (the health reactor or the snapshot updater) gets from the
/// stack's `outputs`, as far as the outputs carry it (see the module doc). Other principals
/// get an empty one.
pub fn function_environment(
    stack: &str,
    principal: Principal,
    outputs: &BTreeMap<String, String>,
) -> Result<BTreeMap<&'static str, String>, StackSettingsError> {
    let reader = match principal {
        Principal::HealthReactor => Reader::Reactor,
        Principal::SnapshotUpdater => Reader::Updater,
        _ => return Ok(BTreeMap::new()),
    };
    let mut env = BTreeMap::new();
    for (variable, output, read_by) in FROM_OUTPUTS {
        if *read_by != reader && *read_by != Reader::Both {
            continue;
        }
        let value = outputs
            .get(*output)
            .ok_or_else(|| StackSettingsError::MissingOutput {
                stack: stack.to_owned(),
                output,
                function: principal.name(),
            })?;
        env.insert(*variable, value.clone());
    }
    Ok(env)
}

/// The outputs the functions' settings are read from (the table of the module doc), sorted.
pub fn outputs_read() -> Vec<&'static str> {
    let mut outputs: Vec<&'static str> = FROM_OUTPUTS.iter().map(|(_, o, _)| *o).collect();
    outputs.sort_unstable();
    outputs.dedup();
    outputs
}

/// The two functions' settings as a deployed stack gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackSettings {
    pub stack: String,
    pub reactor: ReactorEnv,
    pub updater: UpdaterEnv,
}

impl StackSettings {
    /// Reads both functions' settings from `outputs` with their own parsers.
    pub fn from_outputs(
        stack: &str,
        outputs: &BTreeMap<String, String>,
    ) -> Result<StackSettings, StackSettingsError> {
        let parse = |principal: Principal| {
            let env = function_environment(stack, principal, outputs)?;
            let invalid = move |source| StackSettingsError::Invalid {
                stack: stack.to_owned(),
                function: principal.name(),
                source,
            };
            Ok::<_, StackSettingsError>((env, invalid))
        };
        let (env, invalid) = parse(Principal::HealthReactor)?;
        let lookup = |name: &str| env.get(name).cloned();
        let reactor = ReactorEnv::from_env(Env::new(&lookup)).map_err(invalid)?;
        let (env, invalid) = parse(Principal::SnapshotUpdater)?;
        let lookup = |name: &str| env.get(name).cloned();
        let updater = UpdaterEnv::from_env(Env::new(&lookup)).map_err(invalid)?;
        Ok(StackSettings {
            stack: stack.to_owned(),
            reactor,
            updater,
        })
    }
}

/// The AWS adapters of a deployed stack, built once, as the functions build theirs: the
/// state table, the node scheduler (the reactor's task definition), the updater's scheduler
/// (its own task definition; both list the fleet's tasks), the target group and the chain
/// data store.
pub struct StackAdapters {
    pub settings: StackSettings,
    pub state: DynamoStateStore,
    pub scheduler: EcsScheduler,
    pub updater_scheduler: EcsScheduler,
    pub registry: ElbTargetRegistry,
    pub store: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for StackAdapters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackAdapters")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Why a stack could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenStackError {
    #[error(transparent)]
    Stack(#[from] StackError),
    #[error(transparent)]
    Settings(#[from] StackSettingsError),
    #[error("stack {stack}: {source}")]
    Adapters { stack: String, source: InitError },
}

impl StackAdapters {
    /// Reads stack `name`'s outputs, the functions' settings from them, and builds the
    /// adapters.
    pub async fn open(sdk: &SdkConfig, name: &str) -> Result<StackAdapters, OpenStackError> {
        let stack = CloudFormationStack::read(sdk, name).await?;
        let settings = StackSettings::from_outputs(&stack.name, &stack.outputs)?;
        StackAdapters::new(sdk, settings).map_err(|source| OpenStackError::Adapters {
            stack: name.to_owned(),
            source,
        })
    }

    pub fn new(sdk: &SdkConfig, settings: StackSettings) -> Result<StackAdapters, InitError> {
        let reactor = &settings.reactor;
        let state = DynamoStateStore::new(sdk, &reactor.table, &reactor.fleet)?;
        let ecs = aws_sdk_ecs::Client::new(sdk);
        let scheduler = EcsScheduler::new(ecs.clone(), reactor.scheduler.clone())?;
        let updater_scheduler = EcsScheduler::new(ecs, settings.updater.scheduler.clone())?;
        let registry = ElbTargetRegistry::new(
            aws_sdk_elasticloadbalancingv2::Client::new(sdk),
            &reactor.target_group_arn,
            reactor.scheduler.network.mode(),
        );
        let store: Arc<dyn ObjectStore> =
            Arc::new(S3ObjectStore::new(sdk, &settings.updater.store)?);
        Ok(StackAdapters {
            settings,
            state,
            scheduler,
            updater_scheduler,
            registry,
            store,
        })
    }
}
