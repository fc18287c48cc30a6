//! The control plane's ports and the domain types they carry.
//!
//! Four capabilities, each a trait named for what it does; adapters are named for what backs
//! them (`nodefleet-aws` for AWS, `nodefleet-local` for one machine):
//!
//! | port | carries | AWS adapter | local adapter |
//! |---|---|---|---|
//! | [`StateStore`] | config, nodes, snapshot catalog, leases, idempotency keys, audit | `DynamoStateStore` | `EmbeddedStateStore` (redb) |
//! | [`Scheduler`] | node tasks in zones | `EcsScheduler` | `LocalProcessScheduler` |
//! | [`TargetRegistry`] | load-balancer targets and their health | `ElbTargetRegistry` | `LocalTargetRegistry` |
//! | [`ObjectStore`] | chunks, manifests, refs | `S3ObjectStore` | `FsObjectStore` |
//!
//! Each port's module documents its semantics and its error policy (which errors are worth
//! a retry). [`fakes`] has stateful in-memory adapters for scenario tests, [`faults`] has
//! wrappers that inject failures into any adapter, and (feature `contract`) `contract` has
//! the one test suite per port that every adapter runs.

pub mod fakes;
pub mod faults;
pub mod model;
pub mod objects;
pub mod scheduler;
pub mod state;
pub mod targets;
mod time;
pub mod url;

#[cfg(feature = "contract")]
pub mod contract;

pub use model::{
    AuditEvent, ControlState, FleetConfig, IdempotencyRecord, Lease, NodeId, NodeRecord, NodeState,
    Role, SnapshotId, SnapshotRecord, SnapshotState, TaskId, Version, Zone,
};
pub use objects::{
    ByteRange, CompletedPart, ListPage, MultipartUpload, ObjectError, ObjectMeta, ObjectStore,
};
pub use scheduler::{
    LaunchFailure, LaunchReport, LaunchRequest, PlacementFailure, PortBinding, Scheduler,
    SchedulerError, TaskInfo, TaskStatus,
};
pub use state::{Entity, StateError, StateStore};
pub use targets::{
    NODE_RPC_PORT, NetworkMode, RegistryError, Target, TargetHealth, TargetRegistry, TargetState,
    target_for_task,
};
pub use time::Timestamp;
pub use url::{StoreUrl, StoreUrlError};
