//! The `Scheduler` contract: what every adapter (ECS, local processes, the fake) promises.
//!
//! Three macros, because not every backend can show every promise:
//!
//! - [`scheduler_contract!`](crate::scheduler_contract) (every adapter): a launch reports
//!   the task it started with the zone, node, role and snapshot read back; listing and
//!   describing see it; describing leaves unknown ids out; a stopped task reaches `Stopped`
//!   with a reason and stopping it again is fine; `count` starts that many tasks.
//! - [`scheduler_idempotency_contract!`](crate::scheduler_idempotency_contract) (adapters
//!   whose backend honours idempotency keys): a retried launch with the same key starts no
//!   second task, and a different key does start one. moto ignores ECS's `clientToken`, so
//!   `EcsScheduler` proves its part (that it sends the token) with request inspection instead.
//! - [`scheduler_capacity_contract!`](crate::scheduler_capacity_contract) (fixtures that can
//!   fill a zone): launching into a full zone starts nothing and reports a zone-capacity
//!   failure for that zone, and another zone still takes the task.
//!
//! Each macro takes an expression that evaluates to a future of a fresh fixture (an
//! `async { ... }` block, or a call of an `async fn`), and expands into one `#[tokio::test]`
//! per promise. The cases are the plain `pub async fn`s below. Every case uses node ids and
//! idempotency keys of its own, and stops the tasks it started, so fixtures may share a
//! backend.
//!
//! ```text
//! nodefleet_ports::scheduler_contract!(async {
//!     SchedulerFixture::new(my_scheduler().await, vec![Zone::new("local-a")])
//! });
//! ```

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use crate::model::{NodeId, Role, SnapshotId, TaskId, Zone, unique_suffix};
use crate::scheduler::{LaunchRequest, Scheduler, TaskInfo, TaskStatus};

/// How long a stopped task may take to show `Stopped` by default: a local process gets a
/// graceful-shutdown window, and ECS takes tens of seconds on real clusters (moto is instant).
pub const DEFAULT_SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a case re-reads while waiting: fast enough not to slow the suite, slow enough
/// not to hammer a real endpoint.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A task id no adapter will have issued: no slash-separated ARN part, no digits-only pid.
pub const DEFAULT_UNKNOWN_TASK: &str = "nodefleet-contract-unknown-task";

/// A fresh adapter and what the cases need to know about its backend.
pub struct SchedulerFixture<S> {
    pub scheduler: S,
    /// Zones the adapter can launch into (at least one). Cases launch into each of them.
    pub zones: Vec<Zone>,
    /// A well-formed id of a task that does not exist (defaults to [`DEFAULT_UNKNOWN_TASK`];
    /// an ECS fixture passes an ARN of the right shape).
    pub unknown_task: TaskId,
    /// How long a stopped task may take to show `Stopped`.
    pub settle_timeout: Duration,
    /// Whatever must outlive the test (temporary directories, servers); dropped with it.
    pub keep_alive: Vec<Box<dyn Any + Send>>,
}

impl<S> SchedulerFixture<S> {
    /// A fixture with the defaults: [`DEFAULT_UNKNOWN_TASK`], [`DEFAULT_SETTLE_TIMEOUT`].
    pub fn new(scheduler: S, zones: Vec<Zone>) -> Self {
        SchedulerFixture {
            scheduler,
            zones,
            unknown_task: TaskId::new(DEFAULT_UNKNOWN_TASK),
            settle_timeout: DEFAULT_SETTLE_TIMEOUT,
            keep_alive: Vec::new(),
        }
    }

    pub fn with_unknown_task(mut self, task: TaskId) -> Self {
        self.unknown_task = task;
        self
    }

    pub fn with_settle_timeout(mut self, timeout: Duration) -> Self {
        self.settle_timeout = timeout;
        self
    }

    /// Keeps `value` alive as long as the fixture.
    pub fn keep(mut self, value: impl Any + Send) -> Self {
        self.keep_alive.push(Box::new(value));
        self
    }

    fn first_zone(&self) -> Zone {
        self.zones
            .first()
            .cloned()
            .unwrap_or_else(|| panic!("a scheduler fixture must name at least one zone"))
    }
}

impl<S> fmt::Debug for SchedulerFixture<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchedulerFixture")
            .field("zones", &self.zones)
            .field("unknown_task", &self.unknown_task)
            .field("settle_timeout", &self.settle_timeout)
            .finish_non_exhaustive()
    }
}

/// A fresh adapter with one zone that cannot take another task.
pub struct CapacityFixture<S> {
    pub scheduler: S,
    /// A zone the fixture has filled (or given no capacity).
    pub full_zone: Zone,
    /// A zone that still has room, if the fixture has one: a launch there must succeed.
    pub open_zone: Option<Zone>,
    /// Whatever must outlive the test; dropped with it.
    pub keep_alive: Vec<Box<dyn Any + Send>>,
}

impl<S> CapacityFixture<S> {
    pub fn new(scheduler: S, full_zone: Zone, open_zone: Option<Zone>) -> Self {
        CapacityFixture {
            scheduler,
            full_zone,
            open_zone,
            keep_alive: Vec::new(),
        }
    }

    /// Keeps `value` alive as long as the fixture.
    pub fn keep(mut self, value: impl Any + Send) -> Self {
        self.keep_alive.push(Box::new(value));
        self
    }
}

impl<S> fmt::Debug for CapacityFixture<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CapacityFixture")
            .field("full_zone", &self.full_zone)
            .field("open_zone", &self.open_zone)
            .finish_non_exhaustive()
    }
}

/// A launch request for a node of its own (unique id and key), so cases never see each
/// other's tasks even on a shared backend.
pub fn request(zone: &Zone, role: Role, snapshot: Option<&str>, count: u32) -> LaunchRequest {
    let suffix = unique_suffix();
    LaunchRequest {
        node: NodeId::new(format!("contract-{suffix}")),
        zone: zone.clone(),
        role,
        snapshot: snapshot.map(SnapshotId::new),
        idempotency_key: format!("contract-launch-{suffix}"),
        count,
    }
}

/// Asserts that `task` is what `request` asked for, read back from the backend.
fn assert_matches_request(task: &TaskInfo, request: &LaunchRequest, context: &str) {
    assert_eq!(
        task.node.as_ref(),
        Some(&request.node),
        "{context}: node of {task:?}"
    );
    assert_eq!(
        task.zone.as_ref(),
        Some(&request.zone),
        "{context}: zone of {task:?}"
    );
    assert_eq!(task.role, Some(request.role), "{context}: role of {task:?}");
    assert_eq!(
        task.snapshot, request.snapshot,
        "{context}: snapshot of {task:?}"
    );
    assert!(
        matches!(task.last_status, TaskStatus::Pending | TaskStatus::Running),
        "{context}: a fresh task is pending or running: {task:?}"
    );
    assert_eq!(
        task.desired_status,
        TaskStatus::Running,
        "{context}: a fresh task is meant to run: {task:?}"
    );
}

/// Launches `request` and asserts that every asked-for task started, nothing failed.
async fn launch_all<S: Scheduler>(scheduler: &S, request: &LaunchRequest) -> Vec<TaskInfo> {
    let report = scheduler
        .launch(request)
        .await
        .unwrap_or_else(|e| panic!("launch {request:?}: {e}"));
    assert!(
        report.failures.is_empty(),
        "launch into {} failed: {:?}",
        request.zone,
        report.failures
    );
    assert_eq!(
        report.started.len(),
        request.count as usize,
        "launch of {} task(s) started {:?}",
        request.count,
        report.started
    );
    report.started
}

/// Stops the tasks a case started, so a local backend does not keep processes around.
async fn clean_up<S: Scheduler>(scheduler: &S, tasks: &[TaskInfo]) {
    for task in tasks {
        if let Err(e) = scheduler.stop(&task.id, "contract case done").await {
            panic!("stopping {} after the case: {e}", task.id);
        }
    }
}

/// Re-reads `task` until it is `Stopped`, for at most `timeout`.
async fn wait_until_stopped<S: Scheduler>(
    scheduler: &S,
    task: &TaskId,
    timeout: Duration,
) -> TaskInfo {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let described = scheduler
            .describe_tasks(std::slice::from_ref(task))
            .await
            .unwrap_or_else(|e| panic!("describe {task}: {e}"));
        let last = described.into_iter().find(|t| &t.id == task);
        match last {
            Some(info) if info.last_status == TaskStatus::Stopped => return info,
            other => {
                if tokio::time::Instant::now() >= deadline {
                    panic!("task {task} not stopped within {timeout:?}; last seen: {other:?}");
                }
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A launch of one task into each zone reports one started task there, with the node, role
/// and snapshot it was asked for.
pub async fn launch_reports_the_started_task<S: Scheduler>(fixture: SchedulerFixture<S>) {
    assert!(
        !fixture.zones.is_empty(),
        "a scheduler fixture must name at least one zone"
    );
    let mut started = Vec::new();
    for (index, zone) in fixture.zones.iter().enumerate() {
        let role = if index % 2 == 0 {
            Role::Serving
        } else {
            Role::Updater
        };
        let request = request(zone, role, Some("snap-contract-1"), 1);
        let tasks = launch_all(&fixture.scheduler, &request).await;
        assert_matches_request(&tasks[0], &request, "launch report");
        started.extend(tasks);
    }
    clean_up(&fixture.scheduler, &started).await;
}

/// `list_tasks` includes a launched task, with what it was launched for read back.
pub async fn listed_tasks_include_a_launched_task<S: Scheduler>(fixture: SchedulerFixture<S>) {
    let zone = fixture.first_zone();
    let request = request(&zone, Role::Updater, Some("snap-contract-2"), 1);
    let tasks = launch_all(&fixture.scheduler, &request).await;
    let listed = fixture.scheduler.list_tasks().await.expect("list tasks");
    let mine: Vec<&TaskInfo> = listed.iter().filter(|t| t.id == tasks[0].id).collect();
    assert_eq!(mine.len(), 1, "listed exactly once: {listed:?}");
    assert_matches_request(mine[0], &request, "list_tasks");
    clean_up(&fixture.scheduler, &tasks).await;
}

/// A task launched without a snapshot reads back as having none.
pub async fn a_launch_without_snapshot_reads_back_none<S: Scheduler>(fixture: SchedulerFixture<S>) {
    let zone = fixture.first_zone();
    let request = request(&zone, Role::Serving, None, 1);
    let tasks = launch_all(&fixture.scheduler, &request).await;
    let described = fixture
        .scheduler
        .describe_tasks(&[tasks[0].id.clone()])
        .await
        .expect("describe");
    assert_eq!(described.len(), 1, "{described:?}");
    assert_matches_request(&described[0], &request, "describe_tasks");
    clean_up(&fixture.scheduler, &tasks).await;
}

/// `describe_tasks` answers for the named tasks and leaves unknown ids out.
pub async fn describe_returns_known_tasks_and_leaves_out_unknown_ones<S: Scheduler>(
    fixture: SchedulerFixture<S>,
) {
    let zone = fixture.first_zone();
    let request = request(&zone, Role::Serving, Some("snap-contract-3"), 1);
    let tasks = launch_all(&fixture.scheduler, &request).await;
    let described = fixture
        .scheduler
        .describe_tasks(&[tasks[0].id.clone(), fixture.unknown_task.clone()])
        .await
        .expect("describe a known and an unknown task");
    assert_eq!(described.len(), 1, "only the known task: {described:?}");
    assert_eq!(described[0].id, tasks[0].id);
    assert_matches_request(&described[0], &request, "describe_tasks");

    let none = fixture
        .scheduler
        .describe_tasks(std::slice::from_ref(&fixture.unknown_task))
        .await
        .expect("describing only unknown tasks is not an error");
    assert!(none.is_empty(), "{none:?}");
    let empty = fixture
        .scheduler
        .describe_tasks(&[])
        .await
        .expect("describing no tasks is not an error");
    assert!(empty.is_empty(), "{empty:?}");
    clean_up(&fixture.scheduler, &tasks).await;
}

/// A stopped task reaches `Stopped` (within the settle timeout) with a stop reason, still
/// carries its node, and stopping it again is fine.
pub async fn a_stopped_task_reaches_stopped_with_a_reason<S: Scheduler>(
    fixture: SchedulerFixture<S>,
) {
    let zone = fixture.first_zone();
    let request = request(&zone, Role::Serving, Some("snap-contract-4"), 1);
    let tasks = launch_all(&fixture.scheduler, &request).await;
    let task = &tasks[0].id;
    fixture
        .scheduler
        .stop(task, "contract: replaced")
        .await
        .expect("stop a running task");
    let stopped = wait_until_stopped(&fixture.scheduler, task, fixture.settle_timeout).await;
    assert_eq!(stopped.desired_status, TaskStatus::Stopped, "{stopped:?}");
    let reason = stopped.stop_reason.clone().unwrap_or_default();
    assert!(
        !reason.trim().is_empty(),
        "a stopped task says why: {stopped:?}"
    );
    assert_eq!(stopped.node.as_ref(), Some(&request.node), "{stopped:?}");

    fixture
        .scheduler
        .stop(task, "contract: replaced again")
        .await
        .expect("stopping a stopped task is fine");
    let listed = fixture.scheduler.list_tasks().await.expect("list tasks");
    if let Some(seen) = listed.iter().find(|t| &t.id == task) {
        assert_eq!(
            seen.last_status,
            TaskStatus::Stopped,
            "a stopped task stays stopped: {seen:?}"
        );
    }
}

/// A launch with `count: 2` starts two distinct tasks for the node, in the zone.
pub async fn a_launch_of_two_starts_two_tasks<S: Scheduler>(fixture: SchedulerFixture<S>) {
    let zone = fixture.first_zone();
    let request = request(&zone, Role::Serving, Some("snap-contract-5"), 2);
    let tasks = launch_all(&fixture.scheduler, &request).await;
    assert_ne!(tasks[0].id, tasks[1].id, "two distinct tasks: {tasks:?}");
    for task in &tasks {
        assert_matches_request(task, &request, "launch of two");
    }
    let listed = fixture.scheduler.list_tasks().await.expect("list tasks");
    let mine = listed
        .iter()
        .filter(|t| t.node.as_ref() == Some(&request.node))
        .count();
    assert_eq!(mine, 2, "both listed for the node: {listed:?}");
    clean_up(&fixture.scheduler, &tasks).await;
}

/// A retried launch with the same idempotency key starts no second task and reports only
/// the tasks the first one started; a new key for the same node does start one.
pub async fn a_retried_launch_starts_nothing_new<S: Scheduler>(fixture: SchedulerFixture<S>) {
    let zone = fixture.first_zone();
    let request = request(&zone, Role::Serving, Some("snap-contract-6"), 1);
    let first = launch_all(&fixture.scheduler, &request).await;
    let retry = fixture
        .scheduler
        .launch(&request)
        .await
        .expect("retried launch");
    for task in &retry.started {
        assert!(
            first.iter().any(|t| t.id == task.id),
            "a retry reports only the first launch's tasks: first {first:?}, retry {retry:?}"
        );
    }
    assert!(retry.failures.is_empty(), "{retry:?}");
    let listed = fixture.scheduler.list_tasks().await.expect("list tasks");
    let mine: Vec<&TaskInfo> = listed
        .iter()
        .filter(|t| t.node.as_ref() == Some(&request.node))
        .collect();
    assert_eq!(
        mine.len(),
        1,
        "one task for the node after a retry: {mine:?}"
    );
    assert_eq!(mine[0].id, first[0].id);

    let mut fresh = request.clone();
    fresh.idempotency_key = format!("{}-second", request.idempotency_key);
    let second = launch_all(&fixture.scheduler, &fresh).await;
    assert_ne!(second[0].id, first[0].id, "a new key is a new launch");
    clean_up(&fixture.scheduler, &first).await;
    clean_up(&fixture.scheduler, &second).await;
}

/// Launching into a full zone starts nothing and reports a zone-capacity failure for that
/// zone, so the caller can move the node; an open zone still takes it.
pub async fn a_full_zone_reports_a_capacity_failure<S: Scheduler>(fixture: CapacityFixture<S>) {
    let request = request(
        &fixture.full_zone,
        Role::Serving,
        Some("snap-contract-7"),
        1,
    );
    let report = fixture
        .scheduler
        .launch(&request)
        .await
        .expect("a placement failure is data, not an error");
    assert!(
        report.started.is_empty(),
        "nothing starts in a full zone: {report:?}"
    );
    assert_eq!(
        report.failures.len(),
        1,
        "one failure per missing task: {report:?}"
    );
    let failure = &report.failures[0];
    assert_eq!(failure.zone, fixture.full_zone, "{failure:?}");
    assert!(
        failure.reason.is_zone_capacity(),
        "a zone-capacity reason: {failure:?}"
    );
    let listed = fixture.scheduler.list_tasks().await.expect("list tasks");
    assert!(
        !listed
            .iter()
            .any(|t| t.node.as_ref() == Some(&request.node)),
        "no task for the node: {listed:?}"
    );

    if let Some(open) = &fixture.open_zone {
        let mut moved = request.clone();
        moved.zone = open.clone();
        moved.idempotency_key = format!("{}-moved", request.idempotency_key);
        let tasks = launch_all(&fixture.scheduler, &moved).await;
        assert_matches_request(&tasks[0], &moved, "launch moved to the open zone");
        clean_up(&fixture.scheduler, &tasks).await;
    }
}

/// Builds a fixture from the macro's expression: any future of a fixture.
#[doc(hidden)]
pub async fn build<F: Future>(fixture: F) -> F::Output {
    fixture.await
}

/// Expands into one `#[tokio::test]` per promise every scheduler keeps. The argument is an
/// expression evaluating to a future of a
/// [`SchedulerFixture`](crate::contract::scheduler::SchedulerFixture); it is evaluated once
/// per test.
#[macro_export]
macro_rules! scheduler_contract {
    (@cases $fixture:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let fixture = $crate::contract::scheduler::build($fixture).await;
                $crate::contract::scheduler::$case(fixture).await;
            }
        )+
    };
    ($fixture:expr) => {
        $crate::scheduler_contract!(@cases $fixture;
            launch_reports_the_started_task,
            listed_tasks_include_a_launched_task,
            a_launch_without_snapshot_reads_back_none,
            describe_returns_known_tasks_and_leaves_out_unknown_ones,
            a_stopped_task_reaches_stopped_with_a_reason,
            a_launch_of_two_starts_two_tasks,
        );
    };
}

/// Expands into the idempotency case, for adapters whose backend honours idempotency keys.
/// Same argument as [`scheduler_contract!`](crate::scheduler_contract).
#[macro_export]
macro_rules! scheduler_idempotency_contract {
    ($fixture:expr) => {
        $crate::scheduler_contract!(@cases $fixture; a_retried_launch_starts_nothing_new);
    };
}

/// Expands into the capacity case. The argument is an expression evaluating to a future of a
/// [`CapacityFixture`](crate::contract::scheduler::CapacityFixture).
#[macro_export]
macro_rules! scheduler_capacity_contract {
    ($fixture:expr) => {
        $crate::scheduler_contract!(@cases $fixture; a_full_zone_reports_a_capacity_failure);
    };
}
