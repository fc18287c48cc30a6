//! Fault-injecting wrappers: each implements a port around any adapter of it, so the
//! reactor's and updater's scenario tests can break the world on cue.
//!
//! One [`Faults`] handle is shared by the test and every wrapper it built. Rules:
//!
//! - [`Faults::fail_nth`]: the nth call of an operation (counted from when the rule is
//!   added, 1-based) fails without reaching the adapter; one shot.
//! - [`Faults::fail_always`]: every call of an operation fails, until [`Faults::clear`].
//! - [`Faults::lose_answer_nth`]: the nth call reaches the adapter and succeeds there, then
//!   the caller gets an error, as when a write lands and its answer is lost. This is the
//!   fault idempotency keys exist for.
//! - [`Faults::delay`]: every call of an operation waits first (tokio time, so a paused
//!   test clock makes it instant).
//! - [`Faults::fail_zone`]: launches into a zone report a placement failure and start
//!   nothing, as when ECS has no capacity left there.
//!
//! Operations are named by the port's method name (`"save_node"`, `"launch"`, ...), or
//! [`ANY`] for every method of every wrapper; [`STATE_STORE_OPERATIONS`],
//! [`SCHEDULER_OPERATIONS`], [`TARGET_REGISTRY_OPERATIONS`] and [`OBJECT_STORE_OPERATIONS`]
//! list them per port. Injected failures are the ports' retryable `Unavailable` errors, with
//! a message that says they were injected.
//!
//! Without rules a wrapper only counts: [`Faults::calls`] and [`Faults::called`] say which
//! port methods a piece of code called, which is how the IAM permissions of each principal
//! are checked against its code (`nodefleet_lambda::permissions`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::Timestamp;
use crate::model::{
    AuditEvent, ControlState, FleetConfig, IdempotencyRecord, Lease, NodeId, NodeRecord,
    SnapshotId, SnapshotRecord, TaskId, Version, Zone,
};
use crate::objects::{
    CompletedPart, ListPage, MultipartUpload, ObjectError, ObjectMeta, ObjectStore,
};
use crate::scheduler::{
    LaunchFailure, LaunchReport, LaunchRequest, PlacementFailure, Scheduler, SchedulerError,
    TaskInfo,
};
use crate::state::{StateError, StateStore};
use crate::targets::{RegistryError, Target, TargetHealth, TargetRegistry};

/// Matches every operation of every wrapper.
pub const ANY: &str = "*";

/// Every operation [`FaultyStateStore`] counts: the `StateStore` methods, in the trait's
/// order. Kept next to the wrappers, which must name each method anyway.
pub const STATE_STORE_OPERATIONS: &[&str] = &[
    "get_config",
    "save_config",
    "get_control_state",
    "save_control_state",
    "get_node",
    "list_nodes",
    "save_node",
    "delete_node",
    "get_snapshot",
    "list_snapshots",
    "save_snapshot",
    "acquire_lease",
    "renew_lease",
    "release_lease",
    "get_lease",
    "claim_idempotency_key",
    "complete_idempotency_key",
    "get_idempotency_key",
    "append_event",
    "list_events",
];

/// Every operation [`FaultyScheduler`] counts: the `Scheduler` methods.
pub const SCHEDULER_OPERATIONS: &[&str] = &["launch", "stop", "list_tasks", "describe_tasks"];

/// Every operation [`FaultyTargetRegistry`] counts: the `TargetRegistry` methods.
pub const TARGET_REGISTRY_OPERATIONS: &[&str] = &["register", "deregister", "describe_health"];

/// Every operation [`FaultyObjectStore`] counts: the `ObjectStore` methods.
pub const OBJECT_STORE_OPERATIONS: &[&str] = &[
    "put",
    "put_if_absent",
    "get",
    "head",
    "list",
    "delete",
    "create_multipart",
    "upload_part",
    "complete_multipart",
    "abort_multipart",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Fail,
    LoseAnswer,
    Delay(Duration),
}

#[derive(Debug)]
struct Rule {
    operation: String,
    action: Action,
    /// Matching calls to let through before firing; `None` fires on every call.
    skip: Option<u64>,
    spent: bool,
}

#[derive(Debug, Default)]
struct FaultState {
    rules: Vec<Rule>,
    calls: HashMap<String, u64>,
    injected: Vec<String>,
    failing_zones: HashMap<Zone, PlacementFailure>,
}

/// The faults to inject, shared by a test and its wrappers. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    state: Arc<Mutex<FaultState>>,
}

/// What the wrapper does for one call.
#[derive(Debug, Default)]
struct Decision {
    delay: Duration,
    fail: bool,
    lose_answer: bool,
}

impl Faults {
    pub fn new() -> Faults {
        Faults::default()
    }

    fn lock(&self) -> MutexGuard<'_, FaultState> {
        // A test that panicked while holding the lock has failed already; keep going.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn add(&self, operation: &str, action: Action, skip: Option<u64>) -> &Faults {
        self.lock().rules.push(Rule {
            operation: operation.to_owned(),
            action,
            skip,
            spent: false,
        });
        self
    }

    /// The `n`th call (1-based, from now) of `operation` fails without reaching the adapter.
    pub fn fail_nth(&self, operation: &str, n: u64) -> &Faults {
        self.add(operation, Action::Fail, Some(n.saturating_sub(1)))
    }

    /// Every call of `operation` fails without reaching the adapter.
    pub fn fail_always(&self, operation: &str) -> &Faults {
        self.add(operation, Action::Fail, None)
    }

    /// The `n`th call (1-based, from now) of `operation` succeeds in the adapter, and the
    /// caller gets an error anyway.
    pub fn lose_answer_nth(&self, operation: &str, n: u64) -> &Faults {
        self.add(operation, Action::LoseAnswer, Some(n.saturating_sub(1)))
    }

    /// Every call of `operation` waits `delay` first.
    pub fn delay(&self, operation: &str, delay: Duration) -> &Faults {
        self.add(operation, Action::Delay(delay), None)
    }

    /// Launches into `zone` report `reason` and start nothing.
    pub fn fail_zone(&self, zone: &Zone, reason: PlacementFailure) -> &Faults {
        self.lock().failing_zones.insert(zone.clone(), reason);
        self
    }

    /// Lets `zone` take launches again.
    pub fn heal_zone(&self, zone: &Zone) -> &Faults {
        self.lock().failing_zones.remove(zone);
        self
    }

    /// Removes every rule and zone failure (call counts are kept).
    pub fn clear(&self) {
        let mut state = self.lock();
        state.rules.clear();
        state.failing_zones.clear();
    }

    /// How many calls of `operation` went through any wrapper.
    pub fn calls(&self, operation: &str) -> u64 {
        self.lock().calls.get(operation).copied().unwrap_or(0)
    }

    /// Every operation called through any wrapper so far, with its number of calls.
    pub fn called(&self) -> BTreeMap<String, u64> {
        self.lock()
            .calls
            .iter()
            .map(|(operation, calls)| (operation.clone(), *calls))
            .collect()
    }

    /// The faults injected so far, as `"<operation>: <what>"`, oldest first.
    pub fn injected(&self) -> Vec<String> {
        self.lock().injected.clone()
    }

    fn failing_zone(&self, zone: &Zone) -> Option<PlacementFailure> {
        self.lock().failing_zones.get(zone).cloned()
    }

    fn decide(&self, operation: &str) -> Decision {
        let mut state = self.lock();
        *state.calls.entry(operation.to_owned()).or_insert(0) += 1;
        let mut decision = Decision::default();
        let mut fired = Vec::new();
        for rule in &mut state.rules {
            if rule.spent || (rule.operation != operation && rule.operation != ANY) {
                continue;
            }
            match rule.skip {
                Some(0) => rule.spent = true,
                Some(ref mut left) => {
                    *left -= 1;
                    continue;
                }
                None => {}
            }
            match rule.action {
                Action::Fail => decision.fail = true,
                Action::LoseAnswer => decision.lose_answer = true,
                Action::Delay(delay) => decision.delay += delay,
            }
            fired.push(format!("{operation}: {:?}", rule.action));
        }
        state.injected.extend(fired);
        decision
    }

    /// Runs one call of `operation` under the rules: delay, fail before, or lose the answer.
    async fn run<T, E: Injected>(
        &self,
        operation: &str,
        call: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let decision = self.decide(operation);
        if !decision.delay.is_zero() {
            tokio::time::sleep(decision.delay).await;
        }
        if decision.fail {
            return Err(E::injected(format!(
                "injected fault: {operation} failed before reaching the backend"
            )));
        }
        let result = call.await;
        if decision.lose_answer && result.is_ok() {
            return Err(E::injected(format!(
                "injected fault: {operation} succeeded but its answer was lost"
            )));
        }
        result
    }
}

/// Port errors that can carry an injected (retryable) failure.
trait Injected {
    fn injected(message: String) -> Self;
}

impl Injected for StateError {
    fn injected(message: String) -> Self {
        StateError::Unavailable { message }
    }
}

impl Injected for SchedulerError {
    fn injected(message: String) -> Self {
        SchedulerError::Unavailable { message }
    }
}

impl Injected for RegistryError {
    fn injected(message: String) -> Self {
        RegistryError::Unavailable { message }
    }
}

impl Injected for ObjectError {
    fn injected(message: String) -> Self {
        ObjectError::Unavailable { message }
    }
}

/// A `StateStore` that injects [`Faults`] into calls to the one it wraps.
#[derive(Debug, Clone)]
pub struct FaultyStateStore<S> {
    inner: S,
    faults: Faults,
}

impl<S> FaultyStateStore<S> {
    pub fn new(inner: S, faults: Faults) -> Self {
        FaultyStateStore { inner, faults }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }
}

#[async_trait]
impl<S: StateStore> StateStore for FaultyStateStore<S> {
    async fn get_config(&self) -> Result<Option<FleetConfig>, StateError> {
        self.faults.run("get_config", self.inner.get_config()).await
    }
    async fn save_config(&self, config: &FleetConfig) -> Result<FleetConfig, StateError> {
        self.faults
            .run("save_config", self.inner.save_config(config))
            .await
    }
    async fn get_control_state(&self, name: &str) -> Result<Option<ControlState>, StateError> {
        self.faults
            .run("get_control_state", self.inner.get_control_state(name))
            .await
    }
    async fn save_control_state(&self, state: &ControlState) -> Result<ControlState, StateError> {
        self.faults
            .run("save_control_state", self.inner.save_control_state(state))
            .await
    }
    async fn get_node(&self, id: &NodeId) -> Result<Option<NodeRecord>, StateError> {
        self.faults.run("get_node", self.inner.get_node(id)).await
    }
    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, StateError> {
        self.faults.run("list_nodes", self.inner.list_nodes()).await
    }
    async fn save_node(&self, node: &NodeRecord) -> Result<NodeRecord, StateError> {
        self.faults
            .run("save_node", self.inner.save_node(node))
            .await
    }
    async fn delete_node(&self, id: &NodeId, expected: Version) -> Result<(), StateError> {
        self.faults
            .run("delete_node", self.inner.delete_node(id, expected))
            .await
    }
    async fn get_snapshot(&self, id: &SnapshotId) -> Result<Option<SnapshotRecord>, StateError> {
        self.faults
            .run("get_snapshot", self.inner.get_snapshot(id))
            .await
    }
    async fn list_snapshots(&self) -> Result<Vec<SnapshotRecord>, StateError> {
        self.faults
            .run("list_snapshots", self.inner.list_snapshots())
            .await
    }
    async fn save_snapshot(&self, snapshot: &SnapshotRecord) -> Result<SnapshotRecord, StateError> {
        self.faults
            .run("save_snapshot", self.inner.save_snapshot(snapshot))
            .await
    }
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Lease, StateError> {
        self.faults
            .run(
                "acquire_lease",
                self.inner.acquire_lease(name, holder, ttl, now),
            )
            .await
    }
    async fn renew_lease(
        &self,
        lease: &Lease,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Lease, StateError> {
        self.faults
            .run("renew_lease", self.inner.renew_lease(lease, ttl, now))
            .await
    }
    async fn release_lease(&self, lease: &Lease) -> Result<(), StateError> {
        self.faults
            .run("release_lease", self.inner.release_lease(lease))
            .await
    }
    async fn get_lease(&self, name: &str, now: Timestamp) -> Result<Option<Lease>, StateError> {
        self.faults
            .run("get_lease", self.inner.get_lease(name, now))
            .await
    }
    async fn claim_idempotency_key(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<IdempotencyRecord, StateError> {
        self.faults
            .run(
                "claim_idempotency_key",
                self.inner.claim_idempotency_key(key, owner, ttl, now),
            )
            .await
    }
    async fn complete_idempotency_key(
        &self,
        key: &str,
        owner: &str,
        outcome: &str,
        now: Timestamp,
    ) -> Result<IdempotencyRecord, StateError> {
        self.faults
            .run(
                "complete_idempotency_key",
                self.inner
                    .complete_idempotency_key(key, owner, outcome, now),
            )
            .await
    }
    async fn get_idempotency_key(
        &self,
        key: &str,
        now: Timestamp,
    ) -> Result<Option<IdempotencyRecord>, StateError> {
        self.faults
            .run(
                "get_idempotency_key",
                self.inner.get_idempotency_key(key, now),
            )
            .await
    }
    async fn append_event(&self, event: &AuditEvent) -> Result<(), StateError> {
        self.faults
            .run("append_event", self.inner.append_event(event))
            .await
    }
    async fn list_events(
        &self,
        since: Timestamp,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StateError> {
        self.faults
            .run("list_events", self.inner.list_events(since, now, limit))
            .await
    }
}

/// A `Scheduler` that injects [`Faults`], zone failures included.
#[derive(Debug, Clone)]
pub struct FaultyScheduler<S> {
    inner: S,
    faults: Faults,
}

impl<S> FaultyScheduler<S> {
    pub fn new(inner: S, faults: Faults) -> Self {
        FaultyScheduler { inner, faults }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }
}

#[async_trait]
impl<S: Scheduler> Scheduler for FaultyScheduler<S> {
    async fn launch(&self, request: &LaunchRequest) -> Result<LaunchReport, SchedulerError> {
        if let Some(reason) = self.faults.failing_zone(&request.zone) {
            let operation = "launch";
            return self
                .faults
                .run(operation, async {
                    Ok(LaunchReport {
                        started: Vec::new(),
                        failures: (0..request.count.max(1))
                            .map(|_| LaunchFailure {
                                zone: request.zone.clone(),
                                detail: format!(
                                    "injected fault: zone {} has no capacity",
                                    request.zone
                                ),
                                reason: reason.clone(),
                            })
                            .collect(),
                    })
                })
                .await;
        }
        self.faults.run("launch", self.inner.launch(request)).await
    }
    async fn stop(&self, task: &TaskId, reason: &str) -> Result<(), SchedulerError> {
        self.faults.run("stop", self.inner.stop(task, reason)).await
    }
    async fn list_tasks(&self) -> Result<Vec<TaskInfo>, SchedulerError> {
        self.faults.run("list_tasks", self.inner.list_tasks()).await
    }
    async fn describe_tasks(&self, tasks: &[TaskId]) -> Result<Vec<TaskInfo>, SchedulerError> {
        self.faults
            .run("describe_tasks", self.inner.describe_tasks(tasks))
            .await
    }
}

/// A `TargetRegistry` that injects [`Faults`].
#[derive(Debug, Clone)]
pub struct FaultyTargetRegistry<R> {
    inner: R,
    faults: Faults,
}

impl<R> FaultyTargetRegistry<R> {
    pub fn new(inner: R, faults: Faults) -> Self {
        FaultyTargetRegistry { inner, faults }
    }

    pub fn inner(&self) -> &R {
        &self.inner
    }
}

#[async_trait]
impl<R: TargetRegistry> TargetRegistry for FaultyTargetRegistry<R> {
    async fn register(&self, targets: &[Target]) -> Result<(), RegistryError> {
        self.faults
            .run("register", self.inner.register(targets))
            .await
    }
    async fn deregister(&self, targets: &[Target]) -> Result<(), RegistryError> {
        self.faults
            .run("deregister", self.inner.deregister(targets))
            .await
    }
    async fn describe_health(&self) -> Result<Vec<TargetHealth>, RegistryError> {
        self.faults
            .run("describe_health", self.inner.describe_health())
            .await
    }
}

/// An `ObjectStore` that injects [`Faults`].
#[derive(Debug, Clone)]
pub struct FaultyObjectStore<S> {
    inner: S,
    faults: Faults,
}

impl<S> FaultyObjectStore<S> {
    pub fn new(inner: S, faults: Faults) -> Self {
        FaultyObjectStore { inner, faults }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for FaultyObjectStore<S> {
    async fn put(&self, key: &str, body: Bytes) -> Result<ObjectMeta, ObjectError> {
        self.faults.run("put", self.inner.put(key, body)).await
    }
    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<ObjectMeta, ObjectError> {
        self.faults
            .run("put_if_absent", self.inner.put_if_absent(key, body))
            .await
    }
    async fn get(
        &self,
        key: &str,
        range: Option<crate::objects::ByteRange>,
    ) -> Result<Bytes, ObjectError> {
        self.faults.run("get", self.inner.get(key, range)).await
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, ObjectError> {
        self.faults.run("head", self.inner.head(key)).await
    }
    async fn list(
        &self,
        prefix: &str,
        continuation: Option<&str>,
        max_keys: u32,
    ) -> Result<ListPage, ObjectError> {
        self.faults
            .run("list", self.inner.list(prefix, continuation, max_keys))
            .await
    }
    async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        self.faults.run("delete", self.inner.delete(key)).await
    }
    async fn create_multipart(&self, key: &str) -> Result<MultipartUpload, ObjectError> {
        self.faults
            .run("create_multipart", self.inner.create_multipart(key))
            .await
    }
    async fn upload_part(
        &self,
        upload: &MultipartUpload,
        number: u32,
        body: Bytes,
    ) -> Result<CompletedPart, ObjectError> {
        self.faults
            .run("upload_part", self.inner.upload_part(upload, number, body))
            .await
    }
    async fn complete_multipart(
        &self,
        upload: &MultipartUpload,
        parts: &[CompletedPart],
    ) -> Result<ObjectMeta, ObjectError> {
        self.faults
            .run(
                "complete_multipart",
                self.inner.complete_multipart(upload, parts),
            )
            .await
    }
    async fn abort_multipart(&self, upload: &MultipartUpload) -> Result<(), ObjectError> {
        self.faults
            .run("abort_multipart", self.inner.abort_multipart(upload))
            .await
    }
}
