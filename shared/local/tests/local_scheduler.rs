//! `LocalProcessScheduler`: the scheduler contract, and what only local processes show (zone
//! capacity, idempotency, stop reasons, data dirs, environment, children that never outlive
//! the scheduler). The nodes are small shell commands; one test runs the real anvil.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nodefleet_local::scheduler::{
    ENV_DATA_DIR, ENV_NODE_ID, ENV_ROLE, ENV_RPC_PORT, ENV_SNAPSHOT_ID, ENV_TASK_ID, ENV_ZONE,
    LocalProcessScheduler, LocalSchedulerConfig, LocalZone, NodeCommand, default_zones,
};
use nodefleet_local::targets::{HealthCheck, LocalTargetRegistry};
use nodefleet_local::{node, tools};
use nodefleet_ports::contract::scheduler::{CapacityFixture, SchedulerFixture};
use nodefleet_ports::model::unique_suffix;
use nodefleet_ports::{
    LaunchRequest, NodeId, PlacementFailure, Role, Scheduler, SchedulerError, SnapshotId,
    TargetRegistry, TargetState, TaskId, TaskInfo, TaskStatus, Zone,
};
use nodefleet_ports::{NODE_RPC_PORT, NetworkMode, target_for_task};

/// A fresh folder, removed when dropped (after the scheduler that uses it, in fixtures).
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("nodefleet-scheduler-{name}-{}", unique_suffix()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A node that is `sh -c script`, with the port and the data dir as `$1` and `$2`.
fn sh(script: &str) -> NodeCommand {
    NodeCommand::new("sh", ["-c", script, "node", "{port}", "{data_dir}"])
}

/// A node that sleeps until it is stopped.
fn sleeper() -> NodeCommand {
    sh("exec sleep 1000")
}

fn config(root: &Path, command: NodeCommand) -> LocalSchedulerConfig {
    LocalSchedulerConfig::new(root, command)
}

fn request(zone: &str, key: &str, count: u32) -> LaunchRequest {
    LaunchRequest {
        node: NodeId::new(format!("node-{key}")),
        zone: Zone::new(zone),
        role: Role::Serving,
        snapshot: None,
        idempotency_key: key.to_owned(),
        count,
    }
}

async fn launch_one(scheduler: &LocalProcessScheduler, request: &LaunchRequest) -> TaskInfo {
    let report = scheduler.launch(request).await.unwrap();
    assert!(report.failures.is_empty(), "{report:?}");
    assert_eq!(report.started.len(), 1, "{report:?}");
    report.started.into_iter().next().unwrap()
}

async fn describe(scheduler: &LocalProcessScheduler, task: &TaskId) -> TaskInfo {
    let mut found = scheduler
        .describe_tasks(std::slice::from_ref(task))
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "{task}: {found:?}");
    found.remove(0)
}

async fn wait_stopped(scheduler: &LocalProcessScheduler, task: &TaskId) -> TaskInfo {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = describe(scheduler, task).await;
        if info.last_status == TaskStatus::Stopped {
            return info;
        }
        assert!(Instant::now() < deadline, "{task} did not stop: {info:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never written",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn is_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some(Some('Z' | 'X')) | None)
}

async fn wait_dead(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while is_alive(pid) {
        assert!(Instant::now() < deadline, "process {pid} still alive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

mod contract {
    use super::*;

    async fn fixture() -> SchedulerFixture<LocalProcessScheduler> {
        let dir = TempDir::new("contract");
        let scheduler = LocalProcessScheduler::new(config(&dir.0, sleeper())).unwrap();
        let zones = default_zones(1).into_iter().map(|z| z.name).collect();
        SchedulerFixture::new(scheduler, zones).keep(dir)
    }

    /// Zone `local-a` holds one task and has one; `local-b` is open.
    async fn capacity_fixture() -> CapacityFixture<LocalProcessScheduler> {
        let dir = TempDir::new("capacity-contract");
        let mut config = config(&dir.0, sleeper());
        config.zones = vec![LocalZone::new("local-a", 1), LocalZone::new("local-b", 1)];
        let scheduler = LocalProcessScheduler::new(config).unwrap();
        launch_one(&scheduler, &request("local-a", "filler", 1)).await;
        CapacityFixture::new(scheduler, Zone::new("local-a"), Some(Zone::new("local-b"))).keep(dir)
    }

    nodefleet_ports::scheduler_contract!(fixture());
    nodefleet_ports::scheduler_idempotency_contract!(fixture());
    nodefleet_ports::scheduler_capacity_contract!(capacity_fixture());
}

#[tokio::test]
async fn a_task_gets_its_port_data_dir_log_and_environment() {
    let dir = TempDir::new("env");
    let script = r#"env > "$NODEFLEET_DATA_DIR/env.tmp" && mv "$NODEFLEET_DATA_DIR/env.tmp" "$NODEFLEET_DATA_DIR/env.txt"
echo "$1 $2" > "$2/args.txt"
echo node started
exec sleep 1000"#;
    let mut command = sh(script);
    command
        .env
        .push(("NODEFLEET_EXTRA".into(), "passed".into()));
    let scheduler = LocalProcessScheduler::new(config(&dir.0, command)).unwrap();
    let mut launch = request("local-b", "env-1", 1);
    launch.role = Role::Updater;
    launch.snapshot = Some(SnapshotId::new("snap-42"));
    let task = launch_one(&scheduler, &launch).await;

    assert_eq!(task.node, Some(NodeId::new("node-env-1")));
    assert_eq!(task.zone, Some(Zone::new("local-b")));
    assert_eq!(task.role, Some(Role::Updater));
    assert_eq!(task.snapshot, Some(SnapshotId::new("snap-42")));
    assert_eq!(
        (task.last_status, task.desired_status),
        (TaskStatus::Running, TaskStatus::Running)
    );
    assert!(
        task.started_at.is_some() && task.stopped_at.is_none(),
        "{task:?}"
    );
    assert_eq!(task.ip, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(task.bindings.len(), 1, "{task:?}");
    let port = task.bindings[0].host_port;
    assert_eq!(task.bindings[0].container_port, NODE_RPC_PORT);
    assert_ne!(port, 0);

    let data_dir = dir.0.join("tasks").join(task.id.as_str()).join("data");
    assert_eq!(scheduler.data_dir(&task.id), data_dir);
    let env = wait_for_file(&data_dir.join("env.txt")).await;
    let var = |name: &str| {
        env.lines()
            .find_map(|line| line.strip_prefix(&format!("{name}=")))
            .map(str::to_owned)
    };
    assert_eq!(var(ENV_TASK_ID).as_deref(), Some(task.id.as_str()));
    assert_eq!(var(ENV_NODE_ID).as_deref(), Some("node-env-1"));
    assert_eq!(var(ENV_ROLE).as_deref(), Some("updater"));
    assert_eq!(var(ENV_SNAPSHOT_ID).as_deref(), Some("snap-42"));
    assert_eq!(var(ENV_ZONE).as_deref(), Some("local-b"));
    assert_eq!(var(ENV_DATA_DIR), Some(data_dir.display().to_string()));
    assert_eq!(var(ENV_RPC_PORT), Some(port.to_string()));
    assert_eq!(var("NODEFLEET_EXTRA").as_deref(), Some("passed"));
    let args = wait_for_file(&data_dir.join("args.txt")).await;
    assert_eq!(args.trim(), format!("{port} {}", data_dir.display()));
    let log = scheduler.log_path(&task.id);
    assert_eq!(
        log,
        dir.0.join("tasks").join(task.id.as_str()).join("node.log")
    );
    assert_eq!(wait_for_file(&log).await, "node started\n");

    // Without a snapshot the variable is not set at all (not even inherited).
    let mut genesis = request("local-b", "env-2", 1);
    genesis.snapshot = None;
    let second = launch_one(&scheduler, &genesis).await;
    assert_ne!(
        second.bindings[0].host_port, port,
        "every task has a port of its own"
    );
    let env = wait_for_file(&scheduler.data_dir(&second.id).join("env.txt")).await;
    assert!(!env.contains(ENV_SNAPSHOT_ID), "{env}");
}

#[tokio::test]
async fn zones_have_a_capacity_and_unknown_zones_are_refused() {
    let dir = TempDir::new("capacity");
    let mut config = config(&dir.0, sleeper());
    config.zones = vec![LocalZone::new("local-a", 2), LocalZone::new("local-b", 1)];
    let scheduler = LocalProcessScheduler::new(config).unwrap();

    let report = scheduler
        .launch(&request("local-a", "cap-1", 3))
        .await
        .unwrap();
    assert_eq!(report.started.len(), 2, "{report:?}");
    assert_eq!(report.failures.len(), 1, "{report:?}");
    let full = &report.failures[0];
    assert_eq!(full.zone, Zone::new("local-a"));
    assert_eq!(full.reason, PlacementFailure::ResourceMemory);
    assert!(full.detail.contains("local-a is full"), "{full:?}");

    let report = scheduler
        .launch(&request("us-east-1a", "cap-2", 2))
        .await
        .unwrap();
    assert!(report.started.is_empty(), "{report:?}");
    assert_eq!(
        report.failures.len(),
        2,
        "one failure per missing task: {report:?}"
    );
    assert_eq!(report.failures[0].reason, PlacementFailure::Attribute);
    assert!(
        report.failures[0].detail.contains("local-a, local-b"),
        "{report:?}"
    );

    // The other zone has its own room.
    launch_one(&scheduler, &request("local-b", "cap-3", 1)).await;
    let report = scheduler
        .launch(&request("local-b", "cap-4", 1))
        .await
        .unwrap();
    assert_eq!(
        report.failures[0].reason,
        PlacementFailure::ResourceMemory,
        "{report:?}"
    );

    // A stopped task frees its place, and so does one that exits on its own.
    scheduler
        .stop(&report_id(&scheduler, "local-a").await, "make room")
        .await
        .unwrap();
    launch_one(&scheduler, &request("local-a", "cap-5", 1)).await;
    let report = scheduler
        .launch(&request("local-a", "cap-6", 1))
        .await
        .unwrap();
    assert!(
        report.started.is_empty(),
        "the zone is full again: {report:?}"
    );
    let pid = scheduler
        .pid(&report_id(&scheduler, "local-a").await)
        .unwrap();
    kill(pid, "KILL");
    wait_dead(pid).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let report = scheduler
            .launch(&request("local-a", "cap-7", 1))
            .await
            .unwrap();
        if report.started.len() == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the crashed task's place never freed: {report:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    assert!(matches!(
        scheduler.launch(&request("local-a", "cap-8", 0)).await,
        Err(SchedulerError::InvalidRequest { .. })
    ));
    assert!(matches!(
        scheduler.launch(&request("local-a", "cap-9", 11)).await,
        Err(SchedulerError::InvalidRequest { .. })
    ));
}

/// The id of a running task in `zone`.
async fn report_id(scheduler: &LocalProcessScheduler, zone: &str) -> TaskId {
    let tasks = scheduler.list_tasks().await.unwrap();
    tasks
        .into_iter()
        .find(|t| t.zone == Some(Zone::new(zone)) && t.last_status == TaskStatus::Running)
        .unwrap()
        .id
}

fn kill(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn a_retried_launch_returns_the_same_tasks_and_starts_nothing() {
    let dir = TempDir::new("idempotency");
    let mut config = config(&dir.0, sleeper());
    config.zones = vec![LocalZone::new("local-a", 3)];
    let scheduler = LocalProcessScheduler::new(config).unwrap();

    let first = scheduler
        .launch(&request("local-a", "key-1", 2))
        .await
        .unwrap();
    let retry = scheduler
        .launch(&request("local-a", "key-1", 2))
        .await
        .unwrap();
    assert_eq!(first, retry, "the same tasks, as they are now");
    assert_eq!(scheduler.list_tasks().await.unwrap().len(), 2);

    // Concurrent retries of one key start it once.
    let retried = request("local-a", "key-2", 1);
    let (a, b) = tokio::join!(scheduler.launch(&retried), scheduler.launch(&retried));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.started.len(), 1, "{a:?}");
    assert_eq!(a.started[0].id, b.started[0].id);
    assert_eq!(scheduler.list_tasks().await.unwrap().len(), 3);

    // A key whose launch started nothing is not remembered: once there is room, it starts.
    let refused = scheduler
        .launch(&request("local-a", "key-3", 1))
        .await
        .unwrap();
    assert!(refused.started.is_empty(), "{refused:?}");
    scheduler.stop(&a.started[0].id, "make room").await.unwrap();
    let later = scheduler
        .launch(&request("local-a", "key-3", 1))
        .await
        .unwrap();
    assert_eq!(later.started.len(), 1, "{later:?}");

    // A retry after the task stopped reports it stopped, and still starts nothing.
    let again = scheduler
        .launch(&request("local-a", "key-2", 1))
        .await
        .unwrap();
    assert_eq!(again.started.len(), 1);
    assert_eq!(again.started[0].id, a.started[0].id);
    assert_eq!(again.started[0].last_status, TaskStatus::Stopped);
}

#[tokio::test]
async fn stop_reasons_tell_a_crash_a_signal_and_a_stop_apart() {
    let dir = TempDir::new("reasons");
    let scheduler = LocalProcessScheduler::new(config(&dir.0, sleeper())).unwrap();
    let crashing = LocalProcessScheduler::new(config(&dir.0, sh("sleep 0.2; exit 3"))).unwrap();

    let crashed = launch_one(&crashing, &request("local-a", "crash", 1)).await;
    let killed = launch_one(&scheduler, &request("local-a", "signal", 1)).await;
    let stopped = launch_one(&scheduler, &request("local-a", "stop", 1)).await;

    // The reaper notices the crash without being asked: its stop time is close to the exit,
    // not to when it was next looked at.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let crashed = describe(&crashing, &crashed.id).await;
    assert_eq!(crashed.last_status, TaskStatus::Stopped, "{crashed:?}");
    assert_eq!(crashed.desired_status, TaskStatus::Stopped);
    assert_eq!(crashed.stop_reason.as_deref(), Some("exited with status 3"));
    let lifetime = crashed
        .stopped_at
        .unwrap()
        .since(crashed.started_at.unwrap());
    assert!(
        lifetime < Duration::from_millis(1_000),
        "noticed after {lifetime:?}"
    );

    kill(scheduler.pid(&killed.id).unwrap(), "KILL");
    let killed = wait_stopped(&scheduler, &killed.id).await;
    assert_eq!(killed.stop_reason.as_deref(), Some("killed by signal 9"));

    let started = Instant::now();
    scheduler.stop(&stopped.id, "replaced").await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "SIGTERM was enough"
    );
    let stopped = describe(&scheduler, &stopped.id).await;
    assert_eq!(
        stopped.last_status,
        TaskStatus::Stopped,
        "stop returns once it is gone"
    );
    assert_eq!(stopped.desired_status, TaskStatus::Stopped);
    assert_eq!(
        stopped.stop_reason.as_deref(),
        Some("stopped by the scheduler: replaced")
    );
    assert!(stopped.stopped_at.unwrap() >= stopped.started_at.unwrap());
    assert!(scheduler.pid(&stopped.id).is_none());
}

#[tokio::test]
async fn a_node_that_ignores_sigterm_is_killed_after_the_grace() {
    let dir = TempDir::new("grace");
    let mut config = config(&dir.0, sh("trap '' TERM; exec sleep 1000"));
    config.stop_grace = Duration::from_millis(400);
    let scheduler = LocalProcessScheduler::new(config).unwrap();
    let task = launch_one(&scheduler, &request("local-a", "stubborn", 1)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let pid = scheduler.pid(&task.id).unwrap();

    let started = Instant::now();
    scheduler.stop(&task.id, "stubborn").await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400),
        "killed before the grace: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(!is_alive(pid));
    let stopped = describe(&scheduler, &task.id).await;
    assert_eq!(
        stopped.stop_reason.as_deref(),
        Some("stopped by the scheduler: stubborn")
    );
}

#[tokio::test]
async fn stopping_twice_is_fine_forgotten_tasks_too_and_unknown_ids_are_not_found() {
    let dir = TempDir::new("stop");
    let mut config = config(&dir.0, sleeper());
    config.stopped_retention = Duration::from_millis(300);
    let scheduler = LocalProcessScheduler::new(config).unwrap();
    let task = launch_one(&scheduler, &request("local-a", "twice", 1)).await;

    scheduler.stop(&task.id, "first").await.unwrap();
    scheduler.stop(&task.id, "second").await.unwrap();
    let stopped = describe(&scheduler, &task.id).await;
    assert_eq!(
        stopped.stop_reason.as_deref(),
        Some("stopped by the scheduler: first")
    );

    let unknown = TaskId::new("task-never-started");
    assert_eq!(
        scheduler.stop(&unknown, "why").await,
        Err(SchedulerError::TaskNotFound {
            task: unknown.clone()
        })
    );

    // After the retention the task is forgotten: not listed, not described, still stoppable,
    // and its key may start a new task.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(scheduler.list_tasks().await.unwrap().is_empty());
    assert!(
        scheduler
            .describe_tasks(std::slice::from_ref(&task.id))
            .await
            .unwrap()
            .is_empty()
    );
    scheduler.stop(&task.id, "third").await.unwrap();
    let fresh = launch_one(&scheduler, &request("local-a", "twice", 1)).await;
    assert_ne!(fresh.id, task.id);
}

#[tokio::test]
async fn a_program_that_cannot_run_is_an_invalid_request_and_leaves_nothing() {
    let dir = TempDir::new("missing");
    let command = NodeCommand::new(dir.0.join("no-such-node"), ["{port}"]);
    let scheduler = LocalProcessScheduler::new(config(&dir.0, command)).unwrap();
    let result = scheduler.launch(&request("local-a", "missing", 1)).await;
    let Err(SchedulerError::InvalidRequest { message }) = result else {
        panic!("{result:?}");
    };
    assert!(message.contains("no-such-node"), "{message}");
    assert!(scheduler.list_tasks().await.unwrap().is_empty());
    let folders = std::fs::read_dir(dir.0.join("tasks")).unwrap().count();
    assert_eq!(folders, 0, "the failed task's folder is removed");
}

/// `path` (absolute) as a path relative to the working directory: `../..` up to the root,
/// then `path`.
fn relative_to_cwd(path: &Path) -> PathBuf {
    let ups = std::env::current_dir().unwrap().components().count() - 1;
    std::iter::repeat_n(std::path::Component::ParentDir.as_os_str(), ups)
        .chain(path.components().skip(1).map(|c| c.as_os_str()))
        .collect()
}

#[tokio::test]
async fn a_relative_root_and_program_path_are_taken_from_the_callers_working_directory() {
    // Tasks run in their own folders, so `tools/.../anvil` and `.nodefleet` (how
    // `nodefleet up` names them by default) must not be looked up from there.
    let dir = TempDir::new("relative");
    let script = dir.0.join("node.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\necho \"$NODEFLEET_DATA_DIR\" > \"$NODEFLEET_DATA_DIR/where.tmp\" && mv \"$NODEFLEET_DATA_DIR/where.tmp\" \"$NODEFLEET_DATA_DIR/where\"\nexec sleep 1000\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (root, program) = (relative_to_cwd(&dir.0), relative_to_cwd(&script));
    assert!(root.is_relative() && program.is_relative());
    let scheduler = LocalProcessScheduler::new(config(
        &root,
        NodeCommand::new(&program, Vec::<String>::new()),
    ))
    .unwrap();
    let resolved = &scheduler.config().command.program;
    assert!(resolved.is_absolute(), "{}", resolved.display());
    assert_eq!(
        resolved.canonicalize().unwrap(),
        script.canonicalize().unwrap()
    );
    let task = launch_one(&scheduler, &request("local-a", "relative", 1)).await;
    let data_dir = scheduler.data_dir(&task.id);
    assert!(data_dir.is_absolute(), "{}", data_dir.display());
    let told = wait_for_file(&data_dir.join("where")).await;
    assert_eq!(Path::new(told.trim()), data_dir);
    assert!(is_alive(scheduler.pid(&task.id).unwrap()));
}

#[test]
fn a_task_outlives_the_thread_and_runtime_that_launched_it() {
    let dir = TempDir::new("thread");
    let scheduler = LocalProcessScheduler::new(config(&dir.0, sleeper())).unwrap();
    let task = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(launch_one(&scheduler, &request("local-a", "thread", 1)))
            })
            .join()
            .unwrap()
    });
    // The launching thread is gone; PR_SET_PDEATHSIG is tied to the spawner thread instead.
    std::thread::sleep(Duration::from_millis(300));
    let pid = scheduler.pid(&task.id).unwrap();
    assert!(
        is_alive(pid),
        "the node died with the thread that launched it"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let info = runtime.block_on(describe(&scheduler, &task.id));
    assert_eq!(info.last_status, TaskStatus::Running);
    drop(scheduler);
    assert!(!is_alive(pid));
}

#[tokio::test]
async fn dropping_the_scheduler_kills_its_tasks_and_their_children() {
    let dir = TempDir::new("drop");
    let script = r#"sleep 1000 &
echo $! > "$2/child.tmp" && mv "$2/child.tmp" "$2/child.pid"
wait"#;
    let scheduler = LocalProcessScheduler::new(config(&dir.0, sh(script))).unwrap();
    let task = launch_one(&scheduler, &request("local-c", "drop", 1)).await;
    let node = scheduler.pid(&task.id).unwrap();
    let child: u32 = wait_for_file_trimmed(&scheduler.data_dir(&task.id).join("child.pid")).await;
    assert!(is_alive(node) && is_alive(child));
    drop(scheduler);
    assert!(
        !is_alive(node),
        "the node is reaped by the time drop returns"
    );
    wait_dead(child).await;
}

async fn wait_for_file_trimmed(path: &Path) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(value) = text.trim().parse()
        {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{} never written",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_http_node_is_healthy_behind_the_local_registry_until_it_is_stopped() {
    let dir = TempDir::new("http");
    let command = NodeCommand::new(
        "python3",
        ["-m", "http.server", "{port}", "--bind", "{host}"],
    );
    let scheduler = LocalProcessScheduler::new(config(&dir.0, command)).unwrap();
    let task = launch_one(&scheduler, &request("local-a", "http", 1)).await;
    let target = target_for_task(&task, NetworkMode::Bridge, NODE_RPC_PORT).unwrap();
    assert_eq!(target.id, "127.0.0.1");
    assert_eq!(target.port, task.bindings[0].host_port);

    let registry = LocalTargetRegistry::with_check(HealthCheck::Http { path: "/".into() });
    registry
        .register(std::slice::from_ref(&target))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let health = registry.describe_health().await.unwrap();
        assert_eq!(health.len(), 1, "{health:?}");
        if health[0].state == TargetState::Healthy {
            break;
        }
        assert_eq!(
            health[0].state,
            TargetState::Initial,
            "starting: {health:?}"
        );
        assert!(
            Instant::now() < deadline,
            "python never answered: {health:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    scheduler.stop(&task.id, "done").await.unwrap();
    let health = registry.describe_health().await.unwrap();
    assert_eq!(health[0].state, TargetState::Unhealthy, "{health:?}");
    assert_eq!(
        health[0].reason.as_deref(),
        Some("Target.FailedHealthChecks")
    );
}

/// The pinned anvil: `$NODEFLEET_ANVIL`, else the project's tools folder.
fn anvil() -> PathBuf {
    let tools = std::env::var_os(tools::TOOLS_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools"));
    match tools::find_anvil(&tools) {
        Ok(found) => found.path,
        Err(e) => panic!("{e}\n(the README's test command installs it: scripts/test.sh)"),
    }
}

#[tokio::test]
async fn anvil_nodes_answer_and_are_healthy_behind_the_local_registry() {
    let dir = TempDir::new("anvil");
    let scheduler = LocalProcessScheduler::anvil(&dir.0, &anvil()).unwrap();
    let report = scheduler
        .launch(&request("local-c", "anvil", 2))
        .await
        .unwrap();
    assert_eq!(report.started.len(), 2, "{report:?}");
    let targets: Vec<_> = report
        .started
        .iter()
        .map(|t| target_for_task(t, NetworkMode::Bridge, NODE_RPC_PORT).unwrap())
        .collect();

    for target in &targets {
        let addr = format!("{}:{}", target.id, target.port).parse().unwrap();
        let deadline = Instant::now() + node::START_TIMEOUT;
        while node::block_number(addr).await.is_none() {
            assert!(Instant::now() < deadline, "anvil on {addr} never answered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let registry = LocalTargetRegistry::with_check(HealthCheck::JsonRpc);
    registry.register(&targets).await.unwrap();
    let health = registry.describe_health().await.unwrap();
    assert_eq!(health.len(), 2);
    assert!(
        health.iter().all(|h| h.state == TargetState::Healthy),
        "{health:?}"
    );

    let first = &report.started[0];
    scheduler.stop(&first.id, "replaced").await.unwrap();
    let stopped = describe(&scheduler, &first.id).await;
    assert_eq!(
        stopped.stop_reason.as_deref(),
        Some("stopped by the scheduler: replaced")
    );
    let health = registry.describe_health().await.unwrap();
    let state_of = |port: u16| health.iter().find(|h| h.target.port == port).unwrap().state;
    assert_eq!(
        state_of(targets[0].port),
        TargetState::Unhealthy,
        "{health:?}"
    );
    assert_eq!(
        state_of(targets[1].port),
        TargetState::Healthy,
        "{health:?}"
    );
    let log = std::fs::read_to_string(scheduler.log_path(&first.id)).unwrap();
    assert!(
        log.contains(&targets[0].port.to_string()),
        "anvil logs where it listens: {log}"
    );
}

#[tokio::test]
async fn a_failed_zone_loses_its_tasks_and_refuses_launches_until_restored() {
    let dir = TempDir::new("fail-zone");
    let script = r#"sleep 1000 &
echo $! > "$2/child.tmp" && mv "$2/child.tmp" "$2/child.pid"
wait"#;
    let scheduler = LocalProcessScheduler::new(config(&dir.0, sh(script))).unwrap();
    let lost_zone = Zone::new("local-b");
    let in_b = launch_one(&scheduler, &request("local-b", "b-1", 1)).await;
    let in_a = launch_one(&scheduler, &request("local-a", "a-1", 1)).await;
    let b_pid = scheduler.pid(&in_b.id).unwrap();
    let b_child = wait_for_file_trimmed(&scheduler.data_dir(&in_b.id).join("child.pid")).await;
    assert!(scheduler.failed_zones().is_empty());

    let killed = scheduler.fail_zone(&lost_zone).await.unwrap();
    assert_eq!(killed, std::slice::from_ref(&in_b.id));
    assert_eq!(scheduler.failed_zones(), std::slice::from_ref(&lost_zone));
    // Gone by the time the call returns, its own children with it (the process group).
    assert!(!is_alive(b_pid));
    wait_dead(b_child).await;
    let lost = describe(&scheduler, &in_b.id).await;
    assert_eq!(lost.last_status, TaskStatus::Stopped);
    assert_eq!(
        lost.stop_reason.as_deref(),
        Some("lost: zone local-b failed (chaos)")
    );
    assert_eq!(
        describe(&scheduler, &in_a.id).await.last_status,
        TaskStatus::Running,
        "other zones are untouched"
    );

    // Launches into it fail with a capacity error and start nothing; other zones take them.
    let report = scheduler
        .launch(&request("local-b", "b-2", 2))
        .await
        .unwrap();
    assert!(report.started.is_empty(), "{report:?}");
    assert_eq!(report.failures.len(), 2);
    assert!(report.failures.iter().all(|f| f.zone == lost_zone
        && f.reason == PlacementFailure::ResourceMemory
        && f.reason.is_zone_capacity()));
    launch_one(&scheduler, &request("local-c", "c-1", 1)).await;
    // A launch replayed under a key that started a task before returns that task.
    let replayed = scheduler
        .launch(&request("local-b", "b-1", 1))
        .await
        .unwrap();
    assert_eq!(replayed.started.len(), 1);
    assert_eq!(replayed.started[0].id, in_b.id);
    // Failing it again kills nothing more.
    assert!(scheduler.fail_zone(&lost_zone).await.unwrap().is_empty());

    // Restored: it takes launches again.
    assert!(scheduler.restore_zone(&lost_zone).unwrap());
    assert!(!scheduler.restore_zone(&lost_zone).unwrap());
    assert!(scheduler.failed_zones().is_empty());
    launch_one(&scheduler, &request("local-b", "b-3", 1)).await;

    // A zone the scheduler does not have is refused both ways.
    let unknown = Zone::new("local-q");
    assert!(matches!(
        scheduler.fail_zone(&unknown).await,
        Err(SchedulerError::InvalidRequest { .. })
    ));
    assert!(matches!(
        scheduler.restore_zone(&unknown),
        Err(SchedulerError::InvalidRequest { .. })
    ));
}

#[tokio::test]
async fn an_anvil_that_stops_mining_fails_the_synced_head_check_while_it_runs() {
    let dir = TempDir::new("stall");
    let scheduler = LocalProcessScheduler::anvil(&dir.0, &anvil()).unwrap();
    let task = launch_one(&scheduler, &request("local-a", "stall", 1)).await;
    let target = target_for_task(&task, NetworkMode::Bridge, NODE_RPC_PORT).unwrap();
    let addr: std::net::SocketAddr = format!("{}:{}", target.id, target.port).parse().unwrap();
    let max_head_age = Duration::from_secs(2);
    let registry = LocalTargetRegistry::with_check(HealthCheck::SyncedHead { max_head_age });
    registry
        .register(std::slice::from_ref(&target))
        .await
        .unwrap();
    let wait_for = |want: TargetState| {
        let registry = &registry;
        async move {
            let deadline = Instant::now() + node::START_TIMEOUT;
            loop {
                let health = registry.describe_health().await.unwrap();
                if health[0].state == want {
                    return health[0].clone();
                }
                assert!(Instant::now() < deadline, "never {want:?}: {health:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_for(TargetState::Healthy).await;

    // anvil 1.7's own RPC: interval mining off (with `--block-time` set, `evm_setAutomine
    // false` alone keeps mining), automine off so a transaction mines nothing either.
    let off = |method: &'static str, params: serde_json::Value| async move {
        node::call_within(addr, method, params, Duration::from_secs(2))
            .await
            .unwrap()
    };
    off("evm_setIntervalMining", serde_json::json!([0])).await;
    off("evm_setAutomine", serde_json::json!([false])).await;
    let stalled_at = node::block_number(addr).await.unwrap();
    let unhealthy = wait_for(TargetState::Unhealthy).await;
    let said = unhealthy.description.unwrap_or_default();
    assert!(
        said.starts_with("head is ") && said.ends_with(" s old (max 2 s)"),
        "{said}"
    );
    assert_eq!(
        unhealthy.reason.as_deref(),
        Some("Target.FailedHealthChecks")
    );
    assert_eq!(
        node::block_number(addr).await,
        Some(stalled_at),
        "no block since"
    );
    let pid = scheduler.pid(&task.id).unwrap();
    assert!(is_alive(pid), "its process lives on");
    // A plain JSON-RPC check is blind to it: the node still answers.
    let blind = LocalTargetRegistry::with_check(HealthCheck::JsonRpc);
    blind.register(std::slice::from_ref(&target)).await.unwrap();
    assert_eq!(
        blind.describe_health().await.unwrap()[0].state,
        TargetState::Healthy
    );
    // Mining again: healthy again.
    off("evm_setIntervalMining", serde_json::json!([1])).await;
    wait_for(TargetState::Healthy).await;
}
