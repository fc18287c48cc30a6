//! What each principal of the deployment may call: the one place that says which port
//! methods each role's code calls, and from that (through the AWS adapters' `SDK_CALLS`
//! tables, see `nodefleet_aws::operations`) the IAM actions its role needs. The SAM
//! template's policies are checked against [`iam_actions`].
//!
//! | principal | runs as | its code |
//! |---|---|---|
//! | [`Principal::RpcGateway`] | Lambda | forwards JSON-RPC to the NLB: no AWS API |
//! | [`Principal::HealthReactor`] | Lambda | `nodefleet_reactor` (service, reconcile) through [`crate::reactor`] |
//! | [`Principal::SnapshotUpdater`] | Lambda | `nodefleet_updater` through [`crate::updater`]: channel commands and reports, verify, publish, prune |
//! | [`Principal::NodeTask`] | ECS task role of a serving node | the agent's hydration: reads the catalog, refs, manifests and packs |
//! | [`Principal::UpdaterTask`] | ECS task role of the updater node | hydration, snapshot uploads (`nodefleet_snapshot::create`, publishing on `POST /snapshot`), its channel report |
//!
//! Three layers keep this true:
//!
//! 1. `nodefleet-aws`'s `tests/sdk_calls.rs` proves each adapter table against moto: a port
//!    method sends only the SDK operations its entry lists, and every listed one is sent.
//! 2. `tests/permissions.rs` here runs each principal's code on fakes behind the ports'
//!    counting wrappers and proves [`port_calls`]: every method the code calls is declared,
//!    and every declared one is called.
//! 3. The template test checks the template's policies against [`iam_actions`].
//!
//! Resource scoping (which table, bucket, cluster) is the template's; this says which
//! actions.

use std::collections::BTreeSet;

use nodefleet_aws::ecs::RUN_TASK_EXTRA_IAM_ACTIONS;
use nodefleet_aws::operations::{SdkCalls, ecs::RUN_TASK, sdk_calls_of};
use nodefleet_aws::{
    AwsOperation, DynamoStateStore, EcsScheduler, ElbTargetRegistry, S3ObjectStore,
};

/// A role in the deployment whose code calls AWS APIs (or, for the gateway, does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Principal {
    RpcGateway,
    HealthReactor,
    SnapshotUpdater,
    /// A serving node's ECS task (its agent).
    NodeTask,
    /// The updater node's ECS task (its agent, role `updater`).
    UpdaterTask,
}

impl Principal {
    pub const ALL: [Principal; 5] = [
        Principal::RpcGateway,
        Principal::HealthReactor,
        Principal::SnapshotUpdater,
        Principal::NodeTask,
        Principal::UpdaterTask,
    ];

    /// The principal's name: the function's directory under `functions/` for the Lambdas.
    pub fn name(self) -> &'static str {
        match self {
            Principal::RpcGateway => "rpc-gateway",
            Principal::HealthReactor => "health-reactor",
            Principal::SnapshotUpdater => "snapshot-updater",
            Principal::NodeTask => "node-task",
            Principal::UpdaterTask => "updater-task",
        }
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The port methods a principal's code calls, per port, named as
/// `nodefleet_ports::faults` counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PortCalls {
    pub state: &'static [&'static str],
    pub scheduler: &'static [&'static str],
    pub targets: &'static [&'static str],
    pub objects: &'static [&'static str],
}

/// The health reactor: the service reads (or seeds) the fleet config, loads and saves its
/// memory, lists snapshots for launches; the reconcile observes nodes, tasks and target
/// health, claims and completes an idempotency key per action (reading it when the claim
/// is taken), launches, stops, registers and deregisters, keeps node records and audits.
const HEALTH_REACTOR: PortCalls = PortCalls {
    state: &[
        "get_config",
        "save_config",
        "get_control_state",
        "save_control_state",
        "list_snapshots",
        "list_nodes",
        "get_node",
        "save_node",
        "claim_idempotency_key",
        "complete_idempotency_key",
        "get_idempotency_key",
        "append_event",
    ],
    scheduler: &["launch", "stop", "list_tasks"],
    targets: &["register", "deregister", "describe_health"],
    objects: &[],
};

/// The snapshot updater: a lease per invocation, its memory, the updater node's record and
/// task, the snapshot catalog and audit; in the store the channel (commands written,
/// reports read, both removed when an updater is retired), `latest` and manifests read,
/// packs verified (HEAD, sampled ranged GETs), a ref published (conditional create), and
/// old snapshots pruned.
const SNAPSHOT_UPDATER: PortCalls = PortCalls {
    state: &[
        "acquire_lease",
        "renew_lease",
        "release_lease",
        "get_config",
        "get_control_state",
        "save_control_state",
        "get_node",
        "list_nodes",
        "save_node",
        "get_snapshot",
        "list_snapshots",
        "save_snapshot",
        "append_event",
    ],
    scheduler: &["launch", "list_tasks"],
    targets: &[],
    objects: &["get", "list", "head", "put", "put_if_absent", "delete"],
};

/// A serving node's agent only hydrates: lists refs, reads the ref, the manifest and packs.
const NODE_TASK: PortCalls = PortCalls {
    state: &[],
    scheduler: &[],
    targets: &[],
    objects: &["get", "list"],
};

/// The updater node's agent: hydrates like a serving node; makes snapshots (lists and reads
/// manifests and packs to re-use chunks, puts packs and the manifest, verifies them with
/// HEADs and reads, and on `POST /snapshot` publishes a ref with a conditional create); and
/// reads its channel's command and report and writes its report. It never deletes: removing
/// channels and pruning are the snapshot updater's.
const UPDATER_TASK: PortCalls = PortCalls {
    state: &[],
    scheduler: &[],
    targets: &[],
    objects: &["get", "list", "head", "put", "put_if_absent"],
};

/// The port methods the principal's code calls, per port.
pub fn port_calls(principal: Principal) -> PortCalls {
    match principal {
        Principal::RpcGateway => PortCalls::default(),
        Principal::HealthReactor => HEALTH_REACTOR,
        Principal::SnapshotUpdater => SNAPSHOT_UPDATER,
        Principal::NodeTask => NODE_TASK,
        Principal::UpdaterTask => UPDATER_TASK,
    }
}

/// The SDK operations the principal's code sends: its port methods through the AWS
/// adapters' `SDK_CALLS`.
pub fn sdk_operations(principal: Principal) -> BTreeSet<AwsOperation> {
    let calls = port_calls(principal);
    let ports: [(SdkCalls, &[&str]); 4] = [
        (DynamoStateStore::SDK_CALLS, calls.state),
        (EcsScheduler::SDK_CALLS, calls.scheduler),
        (ElbTargetRegistry::SDK_CALLS, calls.targets),
        (S3ObjectStore::SDK_CALLS, calls.objects),
    ];
    ports
        .iter()
        .flat_map(|(table, methods)| {
            methods
                .iter()
                .filter_map(|method| sdk_calls_of(table, method))
                .flatten()
                .copied()
        })
        .collect()
}

/// The IAM actions the principal's code needs, sorted: the actions of its
/// [`sdk_operations`], plus what RunTask needs besides `ecs:RunTask`
/// ([`RUN_TASK_EXTRA_IAM_ACTIONS`]: passing the task's roles, tagging on create).
pub fn iam_actions(principal: Principal) -> BTreeSet<&'static str> {
    let operations = sdk_operations(principal);
    let mut actions: BTreeSet<&'static str> =
        operations.iter().map(AwsOperation::iam_action).collect();
    if operations.contains(&RUN_TASK) {
        actions.extend(RUN_TASK_EXTRA_IAM_ACTIONS);
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodefleet_ports::faults::{
        OBJECT_STORE_OPERATIONS, SCHEDULER_OPERATIONS, STATE_STORE_OPERATIONS,
        TARGET_REGISTRY_OPERATIONS,
    };

    #[test]
    fn names_are_distinct_and_all_lists_every_principal_once() {
        let names: BTreeSet<&str> = Principal::ALL.iter().map(|p| p.name()).collect();
        assert_eq!(names.len(), Principal::ALL.len());
        assert_eq!(Principal::HealthReactor.to_string(), "health-reactor");
    }

    #[test]
    fn every_declared_method_is_a_port_method_in_its_adapters_table() {
        for principal in Principal::ALL {
            let calls = port_calls(principal);
            for (port, methods, all, table) in [
                (
                    "state",
                    calls.state,
                    STATE_STORE_OPERATIONS,
                    DynamoStateStore::SDK_CALLS,
                ),
                (
                    "scheduler",
                    calls.scheduler,
                    SCHEDULER_OPERATIONS,
                    EcsScheduler::SDK_CALLS,
                ),
                (
                    "targets",
                    calls.targets,
                    TARGET_REGISTRY_OPERATIONS,
                    ElbTargetRegistry::SDK_CALLS,
                ),
                (
                    "objects",
                    calls.objects,
                    OBJECT_STORE_OPERATIONS,
                    S3ObjectStore::SDK_CALLS,
                ),
            ] {
                let unique: BTreeSet<&str> = methods.iter().copied().collect();
                assert_eq!(
                    unique.len(),
                    methods.len(),
                    "{principal} declares a {port} method twice: {methods:?}"
                );
                for method in methods {
                    assert!(
                        all.contains(method),
                        "{principal} declares {method}, which is no {port} port method"
                    );
                    assert!(
                        sdk_calls_of(table, method).is_some(),
                        "{principal} declares {port} method {method}, which its adapter's \
                         SDK_CALLS does not map"
                    );
                }
            }
        }
    }

    #[test]
    fn iam_actions_are_sorted_and_only_the_gateway_needs_none() {
        for principal in Principal::ALL {
            let actions: Vec<&str> = iam_actions(principal).into_iter().collect();
            let mut sorted = actions.clone();
            sorted.sort_unstable();
            assert_eq!(actions, sorted, "{principal}");
            assert_eq!(
                actions.is_empty(),
                principal == Principal::RpcGateway,
                "{principal}: {actions:?}"
            );
        }
    }

    #[test]
    fn write_actions_are_the_expected_ones() {
        let has = |principal, action| iam_actions(principal).contains(action);
        // Serving nodes only read.
        assert_eq!(
            iam_actions(Principal::NodeTask),
            BTreeSet::from(["s3:GetObject", "s3:ListBucket"])
        );
        // The updater node writes packs, manifests, refs and its report, and deletes nothing;
        // it never uploads in parts, so it needs no AbortMultipartUpload.
        assert!(has(Principal::UpdaterTask, "s3:PutObject"));
        assert!(!has(Principal::UpdaterTask, "s3:DeleteObject"));
        assert!(!has(Principal::UpdaterTask, "s3:AbortMultipartUpload"));
        // The snapshot updater prunes and removes channels.
        assert!(has(Principal::SnapshotUpdater, "s3:DeleteObject"));
        assert!(has(Principal::SnapshotUpdater, "s3:PutObject"));
        // Only the two Lambdas that launch tasks pass roles and tag tasks.
        for principal in Principal::ALL {
            let launches = matches!(
                principal,
                Principal::HealthReactor | Principal::SnapshotUpdater
            );
            for action in ["ecs:RunTask", "iam:PassRole", "ecs:TagResource"] {
                assert_eq!(has(principal, action), launches, "{principal} {action}");
            }
        }
        // The reactor stops tasks and changes targets; the updater does neither.
        for action in [
            "ecs:StopTask",
            "elasticloadbalancing:RegisterTargets",
            "elasticloadbalancing:DeregisterTargets",
        ] {
            assert!(has(Principal::HealthReactor, action), "{action}");
            assert!(!has(Principal::SnapshotUpdater, action), "{action}");
        }
        // Neither Lambda deletes DynamoDB items, and only the updater takes leases.
        assert!(!has(Principal::HealthReactor, "dynamodb:DeleteItem"));
        assert!(!has(Principal::SnapshotUpdater, "dynamodb:DeleteItem"));
        assert!(!has(Principal::HealthReactor, "dynamodb:UpdateItem"));
        assert!(has(Principal::SnapshotUpdater, "dynamodb:UpdateItem"));
        // Nobody provisions.
        for principal in Principal::ALL {
            for action in ["dynamodb:CreateTable", "s3:CreateBucket"] {
                assert!(!has(principal, action), "{principal} {action}");
            }
        }
    }
}
