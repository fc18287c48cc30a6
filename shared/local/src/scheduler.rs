//! `LocalProcessScheduler`: the `Scheduler` port on one machine, node tasks as child
//! processes in zone labels.
//!
//! A task is one process started from a [`NodeCommand`] (a program and arguments with
//! `{port}`, `{data_dir}` and `{host}` placeholders: [`NodeCommand::agent`], the node agent
//! running anvil, is the quickstart's node; [`NodeCommand::anvil`], bare anvil, is for tests
//! that cannot run the `nodefleet` binary). Each task gets a free loopback port, a folder
//! `<root>/tasks/<task-id>/` with its data dir (`data/`) and its log (`node.log`, stdout and
//! stderr), and the environment variables
//! `NODEFLEET_TASK_ID`, `NODEFLEET_NODE_ID`, `NODEFLEET_ROLE`, `NODEFLEET_SNAPSHOT_ID` (only
//! when a snapshot is named), `NODEFLEET_ZONE`, `NODEFLEET_DATA_DIR` and `NODEFLEET_RPC_PORT`.
//!
//! Zones are labels, each with a capacity (the most live tasks it takes): a launch into a full
//! zone reports [`PlacementFailure::ResourceMemory`], into a zone the scheduler does not have
//! [`PlacementFailure::Attribute`], as ECS would, so callers move to another zone the same way
//! in both modes.
//!
//! # Failed zones (chaos)
//!
//! [`LocalProcessScheduler::fail_zone`] plays the loss of an availability zone, for demos
//! and tests (`nodefleet chaos fail-zone`): every live task in the zone is killed at once
//! (SIGKILL to its process group: an outage gives no time for a clean stop) and stops with
//! the reason [`zone_failed_reason`], and until [`LocalProcessScheduler::restore_zone`]
//! every launch into the zone reports [`PlacementFailure::ResourceMemory`], as ECS reports a
//! zone with no capacity left, and starts nothing. A launch replayed under an idempotency
//! key that started tasks before still returns those, as ECS replays a `clientToken`.
//!
//! # Lifecycle
//!
//! A task is `Running` from its spawn until its process is seen to exit (launch does not wait
//! for the node to answer: like ECS, the scheduler knows processes, not readiness), `Stopping`
//! between a [`Scheduler::stop`] and the exit, then `Stopped` with a stop reason:
//! `stopped by the scheduler: <reason>`, `exited with status N` or `killed by signal N`.
//! Exits are noticed by a reaper that polls every [`REAP_INTERVAL`], and again on every call.
//! `stop` sends SIGTERM to the task's process group, SIGKILL after the grace period, and
//! returns once the process is gone. Stopped tasks are listed for [`STOPPED_TASK_RETENTION`],
//! then forgotten; stopping a forgotten task is still fine, an id never seen is
//! [`SchedulerError::TaskNotFound`]. A task's folder stays after it stops (its log is what
//! tells why it died); removing old folders is the fleet folder's owner's business.
//!
//! # Children never outlive the scheduler
//!
//! Every task runs in its own process group (so a node's own children are signalled with it)
//! with `PR_SET_PDEATHSIG` = SIGKILL. The kernel sends that signal when the *thread* that
//! forked the child exits, not the process, so children are forked from one dedicated spawner
//! thread that lives exactly as long as the scheduler: tokio's blocking-pool threads exit after
//! idling and `block_in_place` retires worker threads, either of which would kill nodes that
//! are meant to run on. Dropping the scheduler kills and reaps every task; a parent killed
//! outright takes its nodes with it through the death signal.
//!
//! # Idempotency
//!
//! Launches are serialised. A launch whose idempotency key started tasks before returns those
//! tasks (as they are now) and the failures of that first launch, and starts nothing. A key
//! whose launch started nothing is not remembered, so a retry can start the tasks once the
//! zone has room. A key is forgotten with the last of its tasks.
//!
//! # Error policy
//!
//! Placement problems are failures in the [`LaunchReport`]. A launch that starts nothing
//! because the program cannot be run (missing, not executable) is `InvalidRequest`; other
//! local failures (folder creation, fork) are `Backend` when nothing started, and failures in
//! the report when some tasks did.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use nodefleet_ports::model::unique_suffix;
use nodefleet_ports::{
    LaunchFailure, LaunchReport, LaunchRequest, NODE_RPC_PORT, PlacementFailure, PortBinding,
    Scheduler, SchedulerError, TaskId, TaskInfo, TaskStatus, Timestamp, Zone,
};
use tokio::sync::oneshot;

use crate::child::{own_group_dying_with_parent, signal_group};
use crate::node::{LOCAL_BLOCK_TIME_SECS, LOCAL_CHAIN_ID, LOCAL_MAX_HEAD_AGE};

/// The zone labels of a local fleet: three, like the three AZs a production fleet spreads over.
pub const DEFAULT_ZONES: [&str; 3] = ["local-a", "local-b", "local-c"];
/// Live tasks a default zone takes: room for the quickstart's node of the zone plus a
/// replacement started before the node it replaces has stopped, with slack for a second one,
/// while a runaway loop still hits the limit after a handful of processes.
pub const DEFAULT_ZONE_CAPACITY: u32 = 4;
/// How long a task gets to exit after SIGTERM before it is killed: long enough for a node to
/// flush its database (anvil exits at once; an agent stops its anvil, which writes a state
/// of a few kilobytes, well within it), short enough that Ctrl-C feels prompt. An agent
/// killed after it anyway takes its client with it (the client's death signal).
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long a stopped task stays in `list_tasks`: ECS shows stopped tasks for at least an
/// hour, and the reactor reads stop reasons from there.
pub const STOPPED_TASK_RETENTION: Duration = Duration::from_secs(3_600);
/// How often the reaper looks for exited tasks: a stop time accurate to a tenth of a second,
/// for one non-blocking `waitpid` per live task.
pub const REAP_INTERVAL: Duration = Duration::from_millis(100);
/// How often `stop` looks whether its task has exited: short, since it is waiting on it.
const STOP_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How long a task may take to disappear after SIGKILL before `stop` reports an error: the
/// kernel delivers SIGKILL at once unless the process is stuck in uninterruptible I/O.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How many free ports are tried for a task before giving up: a port found free can be one
/// this scheduler handed to a task whose node has not bound it yet.
const PORT_ATTEMPTS: usize = 16;
/// The most tasks one launch may ask for: ECS RunTask's limit, so callers written against
/// either scheduler batch the same way.
pub const MAX_LAUNCH_COUNT: u32 = 10;
/// The stop reason of tasks still alive when the scheduler is dropped.
const SHUTDOWN_REASON: &str = "the scheduler shut down";

/// Placeholder in [`NodeCommand::args`] for the task's RPC port.
pub const PORT_PLACEHOLDER: &str = "{port}";
/// Placeholder in [`NodeCommand::args`] for the task's data dir.
pub const DATA_DIR_PLACEHOLDER: &str = "{data_dir}";
/// Placeholder in [`NodeCommand::args`] for the address the node listens on (`127.0.0.1`).
pub const HOST_PLACEHOLDER: &str = "{host}";

/// Environment variable: the task's id.
pub const ENV_TASK_ID: &str = "NODEFLEET_TASK_ID";
/// The variables every scheduler sets (node, role, zone, snapshot).
pub use nodefleet_ports::scheduler::{ENV_NODE_ID, ENV_ROLE, ENV_SNAPSHOT_ID, ENV_ZONE};
/// Environment variable: the task's data dir.
pub const ENV_DATA_DIR: &str = "NODEFLEET_DATA_DIR";
/// Environment variable: the port the node's RPC must listen on.
pub const ENV_RPC_PORT: &str = "NODEFLEET_RPC_PORT";

/// Where the agent of a [`NodeCommand::agent`] task serves its own `/health`: an ephemeral
/// loopback port. That endpoint is for a load balancer's HTTP health check; the local
/// registry checks anvil's JSON-RPC port itself ([`crate::targets::HealthCheck::SyncedHead`]), so
/// nobody needs to find it, and a fixed port (the agent's default 8580) would clash between
/// the nodes of one machine.
pub const AGENT_HEALTH_LISTEN: &str = "127.0.0.1:0";

/// The address local nodes listen on.
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// How a node process is started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCommand {
    pub program: PathBuf,
    /// Arguments; [`PORT_PLACEHOLDER`], [`DATA_DIR_PLACEHOLDER`] and [`HOST_PLACEHOLDER`] are
    /// replaced wherever they appear.
    pub args: Vec<String>,
    /// Extra environment variables for every task (the `NODEFLEET_*` ones are set anyway).
    pub env: Vec<(String, String)>,
}

impl NodeCommand {
    pub fn new(
        program: impl Into<PathBuf>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        NodeCommand {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
        }
    }

    /// anvil on the task's port, with the local fleet's block time and chain id
    /// ([`crate::node`]).
    pub fn anvil(binary: &Path) -> Self {
        let block_time = LOCAL_BLOCK_TIME_SECS.to_string();
        let chain_id = LOCAL_CHAIN_ID.to_string();
        NodeCommand::new(
            binary,
            [
                "--host",
                HOST_PLACEHOLDER,
                "--port",
                PORT_PLACEHOLDER,
                "--block-time",
                &block_time,
                "--chain-id",
                &chain_id,
            ],
        )
    }

    /// The node agent (`nodefleet agent run`, `exe` being the `nodefleet` executable) with
    /// anvil as its client: the node task of `nodefleet up`. The agent hydrates the task's
    /// data dir from the object store at `store_url` (the snapshot `NODEFLEET_SNAPSHOT_ID`
    /// names when the launch named one, else the store's `latest`, else nothing: an empty
    /// store starts anvil on a new chain), then runs anvil on the task's port with its state
    /// (`state.json`) in the data dir, the local fleet's block time and chain id. The role
    /// comes from `NODEFLEET_ROLE`, like the snapshot from the environment the scheduler
    /// sets. The agent's own `/health` listens on [`AGENT_HEALTH_LISTEN`]. Paths are passed
    /// as they are: give absolute ones (the task runs in its own folder).
    pub fn agent(exe: &Path, anvil: &Path, store_url: &str) -> Self {
        let block_time = LOCAL_BLOCK_TIME_SECS.to_string();
        let max_head_age = LOCAL_MAX_HEAD_AGE.as_secs().to_string();
        let chain_id = LOCAL_CHAIN_ID.to_string();
        let anvil = anvil.to_string_lossy();
        NodeCommand::new(
            exe,
            [
                "agent",
                "run",
                "--client",
                "anvil",
                "--store",
                store_url,
                "--data-dir",
                DATA_DIR_PLACEHOLDER,
                "--rpc-host",
                HOST_PLACEHOLDER,
                "--rpc-port",
                PORT_PLACEHOLDER,
                "--health-listen",
                AGENT_HEALTH_LISTEN,
                "--binary",
                &anvil,
                "--block-time-secs",
                &block_time,
                // anvil has no peers; the agent's /health must not wait for one.
                "--min-peers",
                "0",
                // The local fleet's freshness rule, so the agent's /health (and the report
                // the snapshot updater waits on) agrees with the registry's check.
                "--max-head-age-secs",
                &max_head_age,
                // On the updater node: a local round's steps take milliseconds, so the agent
                // looks for commands five times a second and reports every second (the
                // production defaults, 5 s and 15 s, suit a one-minute tick).
                "--channel-poll-ms",
                "200",
                "--heartbeat-ms",
                "1000",
                "--",
                "--chain-id",
                &chain_id,
            ],
        )
    }

    /// The arguments with the placeholders filled in.
    pub fn render_args(&self, port: u16, data_dir: &Path) -> Vec<String> {
        let port = port.to_string();
        let data_dir = data_dir.to_string_lossy();
        let host = LOOPBACK.to_string();
        self.args
            .iter()
            .map(|arg| {
                arg.replace(PORT_PLACEHOLDER, &port)
                    .replace(DATA_DIR_PLACEHOLDER, &data_dir)
                    .replace(HOST_PLACEHOLDER, &host)
            })
            .collect()
    }
}

/// A zone label and how many live tasks it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalZone {
    pub name: Zone,
    pub capacity: u32,
}

impl LocalZone {
    pub fn new(name: impl Into<Zone>, capacity: u32) -> Self {
        LocalZone {
            name: name.into(),
            capacity,
        }
    }
}

/// [`DEFAULT_ZONES`], each with `capacity`.
pub fn default_zones(capacity: u32) -> Vec<LocalZone> {
    DEFAULT_ZONES
        .iter()
        .map(|&name| LocalZone::new(name, capacity))
        .collect()
}

/// What a [`LocalProcessScheduler`] runs, and where.
#[derive(Debug, Clone)]
pub struct LocalSchedulerConfig {
    /// The fleet folder; tasks live under `<root>/tasks/`.
    pub root: PathBuf,
    pub command: NodeCommand,
    pub zones: Vec<LocalZone>,
    /// SIGTERM to SIGKILL.
    pub stop_grace: Duration,
    /// How long stopped tasks stay listed.
    pub stopped_retention: Duration,
}

impl LocalSchedulerConfig {
    /// `command` in the default zones, with the default grace and retention.
    pub fn new(root: impl Into<PathBuf>, command: NodeCommand) -> Self {
        LocalSchedulerConfig {
            root: root.into(),
            command,
            zones: default_zones(DEFAULT_ZONE_CAPACITY),
            stop_grace: STOP_GRACE,
            stopped_retention: STOPPED_TASK_RETENTION,
        }
    }
}

/// Node tasks as local processes. See the module doc.
#[derive(Debug)]
pub struct LocalProcessScheduler {
    config: LocalSchedulerConfig,
    tasks: Arc<Mutex<Tasks>>,
    /// Serialises launches, so capacity checks and idempotency keys see every earlier launch.
    launch_lock: tokio::sync::Mutex<()>,
    /// `None` only while dropping.
    spawner: Option<mpsc::Sender<SpawnRequest>>,
    spawner_thread: Option<JoinHandle<()>>,
}

impl LocalProcessScheduler {
    /// A scheduler for `config`; starts its spawner thread. Tasks run in their own folders,
    /// so a relative root (`.nodefleet`) and a relative program path with a folder in it
    /// (`tools/.../anvil`) are taken from the caller's working directory; a bare program
    /// name (`sh`) is still looked up in `PATH`.
    pub fn new(mut config: LocalSchedulerConfig) -> io::Result<Self> {
        config.root = std::path::absolute(&config.root)?;
        let program = &config.command.program;
        if program.is_relative() && program.components().count() > 1 {
            config.command.program = std::path::absolute(program)?;
        }
        let tasks = Arc::new(Mutex::new(Tasks::default()));
        let (sender, receiver) = mpsc::channel();
        let thread_tasks = Arc::clone(&tasks);
        let spawner_thread = std::thread::Builder::new()
            .name("nodefleet-spawner".into())
            .spawn(move || spawner_loop(&receiver, &thread_tasks))?;
        Ok(LocalProcessScheduler {
            config,
            tasks,
            launch_lock: tokio::sync::Mutex::new(()),
            spawner: Some(sender),
            spawner_thread: Some(spawner_thread),
        })
    }

    /// anvil nodes ([`NodeCommand::anvil`]) in the default zones under `root`.
    pub fn anvil(root: impl Into<PathBuf>, binary: &Path) -> io::Result<Self> {
        LocalProcessScheduler::new(LocalSchedulerConfig::new(root, NodeCommand::anvil(binary)))
    }

    pub fn config(&self) -> &LocalSchedulerConfig {
        &self.config
    }

    /// The task's folder: `<root>/tasks/<task-id>`.
    pub fn task_dir(&self, task: &TaskId) -> PathBuf {
        self.config.root.join("tasks").join(task.as_str())
    }

    /// The task's data dir (`NODEFLEET_DATA_DIR`).
    pub fn data_dir(&self, task: &TaskId) -> PathBuf {
        self.task_dir(task).join("data")
    }

    /// The task's log: the node's stdout and stderr.
    pub fn log_path(&self, task: &TaskId) -> PathBuf {
        self.task_dir(task).join("node.log")
    }

    /// The task's process id, while its process has not been reaped.
    pub fn pid(&self, task: &TaskId) -> Option<u32> {
        let tasks = lock(&self.tasks);
        tasks
            .entries
            .get(task)
            .and_then(|entry| entry.child.as_ref())
            .map(Child::id)
    }

    /// Fails `zone` (see the module doc): its live tasks are killed and lost, and launches
    /// into it fail until [`LocalProcessScheduler::restore_zone`]. Returns the tasks killed,
    /// once they are gone (none when the zone had failed already). A zone this scheduler
    /// does not have is `InvalidRequest`; a task still there [`KILL_WAIT`] after SIGKILL is
    /// `Backend`.
    pub async fn fail_zone(&self, zone: &Zone) -> Result<Vec<TaskId>, SchedulerError> {
        self.known_zone(zone)?;
        // No launch is half-way into the zone while it fails.
        let _serialised = self.launch_lock.lock().await;
        let killed: Vec<TaskId> = {
            let mut tasks = self.refreshed();
            tasks.failed_zones.insert(zone.clone());
            let reason = zone_failed_reason(zone);
            tasks
                .entries
                .iter_mut()
                .filter(|(_, e)| e.info.zone.as_ref() == Some(zone))
                .filter_map(|(id, entry)| {
                    let child = entry.child.as_ref()?;
                    signal_group(child.id(), libc::SIGKILL);
                    entry.lost = Some(reason.clone());
                    entry.info.desired_status = TaskStatus::Stopped;
                    Some(id.clone())
                })
                .collect()
        };
        for task in &killed {
            if !self.wait_exit(task, KILL_WAIT).await {
                return Err(SchedulerError::Backend {
                    message: format!(
                        "task {task} of failed zone {zone} did not exit within {KILL_WAIT:?} of SIGKILL"
                    ),
                });
            }
        }
        Ok(killed)
    }

    /// Ends a [`LocalProcessScheduler::fail_zone`]: the zone takes launches again. True if
    /// it had failed. A zone this scheduler does not have is `InvalidRequest`.
    pub fn restore_zone(&self, zone: &Zone) -> Result<bool, SchedulerError> {
        self.known_zone(zone)?;
        Ok(lock(&self.tasks).failed_zones.remove(zone))
    }

    /// The zones failed now, in name order.
    pub fn failed_zones(&self) -> Vec<Zone> {
        lock(&self.tasks).failed_zones.iter().cloned().collect()
    }

    fn known_zone(&self, zone: &Zone) -> Result<(), SchedulerError> {
        if self.config.zones.iter().any(|z| &z.name == zone) {
            return Ok(());
        }
        let known: Vec<&str> = self.config.zones.iter().map(|z| z.name.as_str()).collect();
        Err(SchedulerError::InvalidRequest {
            message: format!(
                "zone {zone} is not one of this scheduler's zones ({})",
                known.join(", ")
            ),
        })
    }

    /// Reaps exited tasks and forgets expired ones; the lock is held by the caller's guard.
    fn refreshed(&self) -> MutexGuard<'_, Tasks> {
        let mut tasks = lock(&self.tasks);
        let now = Timestamp::now();
        tasks.reap(now);
        tasks.forget_expired(now, self.config.stopped_retention);
        tasks
    }

    /// Starts one task; the error says whether it was the configuration's fault.
    async fn start_task(&self, request: &LaunchRequest) -> Result<TaskInfo, StartFailure> {
        let id = TaskId::new(format!("task-{}", unique_suffix()));
        let folder = self.task_dir(&id);
        let data_dir = self.data_dir(&id);
        std::fs::create_dir_all(&data_dir).map_err(|source| StartFailure::Local {
            what: format!("cannot create the task folder {}", data_dir.display()),
            source,
        })?;
        let result = self.spawn_in(request, id, &folder, &data_dir).await;
        if result.is_err() {
            // Nothing runs in it; a failed start leaves no folder behind.
            let _ = std::fs::remove_dir_all(&folder);
        }
        result
    }

    async fn spawn_in(
        &self,
        request: &LaunchRequest,
        id: TaskId,
        folder: &Path,
        data_dir: &Path,
    ) -> Result<TaskInfo, StartFailure> {
        let log_path = folder.join("node.log");
        let log = std::fs::File::create(&log_path).map_err(|source| StartFailure::Local {
            what: format!("cannot create the log {}", log_path.display()),
            source,
        })?;
        let log_err = log.try_clone().map_err(|source| StartFailure::Local {
            what: format!("cannot share the log {}", log_path.display()),
            source,
        })?;
        let port = {
            let tasks = self.refreshed();
            tasks.free_port().map_err(|source| StartFailure::Local {
                what: "cannot find a free loopback port".into(),
                source,
            })?
        };
        let command_spec = &self.config.command;
        let mut command = Command::new(&command_spec.program);
        command
            .args(command_spec.render_args(port, data_dir))
            .envs(command_spec.env.iter().map(|(k, v)| (k, v)))
            .env(ENV_TASK_ID, id.as_str())
            .env(ENV_NODE_ID, request.node.as_str())
            .env(ENV_ROLE, request.role.as_str())
            .env(ENV_ZONE, request.zone.as_str())
            .env(ENV_DATA_DIR, data_dir)
            .env(ENV_RPC_PORT, port.to_string())
            .env_remove(ENV_SNAPSHOT_ID)
            .current_dir(folder)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        if let Some(snapshot) = &request.snapshot {
            command.env(ENV_SNAPSHOT_ID, snapshot.as_str());
        }
        own_group_dying_with_parent(&mut command);

        let info = TaskInfo {
            id,
            node: Some(request.node.clone()),
            zone: Some(request.zone.clone()),
            role: Some(request.role),
            snapshot: request.snapshot.clone(),
            last_status: TaskStatus::Running,
            desired_status: TaskStatus::Running,
            stop_reason: None,
            started_at: None,
            stopped_at: None,
            // Local processes are networked like ECS bridge tasks: the machine is the
            // instance, and the node's RPC port (NODE_RPC_PORT in a container) is published
            // on a host port of its own. So `target_for_task(.., Bridge, NODE_RPC_PORT)`
            // gives `127.0.0.1:<port>`, as it gives `<instance>:<host port>` on ECS.
            instance_id: Some(LOOPBACK.to_string()),
            ip: Some(LOOPBACK),
            bindings: vec![PortBinding {
                container_port: NODE_RPC_PORT,
                host_port: port,
            }],
        };
        let (reply, answer) = oneshot::channel();
        let spawn = SpawnRequest {
            command,
            info,
            port,
            idempotency_key: request.idempotency_key.clone(),
            reply,
        };
        let spawner_gone = || StartFailure::Spawner;
        self.spawner
            .as_ref()
            .ok_or_else(spawner_gone)?
            .send(spawn)
            .map_err(|_| spawner_gone())?;
        match answer.await {
            Ok(Ok(info)) => Ok(info),
            Ok(Err(source)) => Err(StartFailure::Spawn {
                program: command_spec.program.clone(),
                source,
            }),
            Err(_) => Err(spawner_gone()),
        }
    }

    /// Waits until the task's process has been reaped; false if `limit` passed first.
    async fn wait_exit(&self, task: &TaskId, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if !self.refreshed().is_live(task) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(STOP_POLL_INTERVAL).await;
        }
    }
}

impl Drop for LocalProcessScheduler {
    fn drop(&mut self) {
        // The spawner sees the channel close, kills and reaps every task, and ends.
        self.spawner = None;
        if let Some(thread) = self.spawner_thread.take() {
            let _ = thread.join();
        }
        // In case the spawner thread died early: nothing may outlive the scheduler.
        lock(&self.tasks).kill_all(Timestamp::now());
    }
}

#[async_trait]
impl Scheduler for LocalProcessScheduler {
    async fn launch(&self, request: &LaunchRequest) -> Result<LaunchReport, SchedulerError> {
        if request.count == 0 || request.count > MAX_LAUNCH_COUNT {
            return Err(SchedulerError::InvalidRequest {
                message: format!(
                    "a launch starts 1 to {MAX_LAUNCH_COUNT} tasks, not {}",
                    request.count
                ),
            });
        }
        let _serialised = self.launch_lock.lock().await;
        let live = {
            let tasks = self.refreshed();
            if let Some(report) = tasks.remembered_launch(&request.idempotency_key) {
                return Ok(report);
            }
            if tasks.failed_zones.contains(&request.zone) {
                let failure = LaunchFailure {
                    zone: request.zone.clone(),
                    reason: PlacementFailure::ResourceMemory,
                    detail: format!(
                        "zone {} has failed (chaos): no capacity until it is restored",
                        request.zone
                    ),
                };
                return Ok(LaunchReport {
                    started: Vec::new(),
                    failures: vec![failure; request.count as usize],
                });
            }
            tasks.live_in(&request.zone)
        };
        let Some(zone) = self.config.zones.iter().find(|z| z.name == request.zone) else {
            let known: Vec<&str> = self.config.zones.iter().map(|z| z.name.as_str()).collect();
            let failure = LaunchFailure {
                zone: request.zone.clone(),
                reason: PlacementFailure::Attribute,
                detail: format!(
                    "zone {} is not one of this scheduler's zones ({})",
                    request.zone,
                    known.join(", ")
                ),
            };
            return Ok(LaunchReport {
                started: Vec::new(),
                failures: vec![failure; request.count as usize],
            });
        };

        let mut report = LaunchReport::default();
        let mut live = live;
        for _ in 0..request.count {
            if live >= zone.capacity as usize {
                report.failures.push(LaunchFailure {
                    zone: request.zone.clone(),
                    reason: PlacementFailure::ResourceMemory,
                    detail: format!(
                        "zone {} is full: {live} of {} live tasks",
                        request.zone, zone.capacity
                    ),
                });
                continue;
            }
            match self.start_task(request).await {
                Ok(info) => {
                    report.started.push(info);
                    live += 1;
                }
                Err(failure) if report.started.is_empty() => return Err(failure.into_error()),
                Err(failure) => report.failures.push(LaunchFailure {
                    zone: request.zone.clone(),
                    reason: PlacementFailure::Other(failure.reason().into()),
                    detail: failure.to_string(),
                }),
            }
        }
        if !report.started.is_empty() {
            let mut tasks = lock(&self.tasks);
            if let Some(launch) = tasks.launches.get_mut(&request.idempotency_key) {
                launch.failures = report.failures.clone();
            }
        }
        Ok(report)
    }

    async fn stop(&self, task: &TaskId, reason: &str) -> Result<(), SchedulerError> {
        {
            let mut tasks = self.refreshed();
            if tasks.forgotten.contains(task) {
                return Ok(());
            }
            let entry = tasks
                .entries
                .get_mut(task)
                .ok_or_else(|| SchedulerError::TaskNotFound { task: task.clone() })?;
            let Some(child) = &entry.child else {
                return Ok(());
            };
            if entry.stop_requested.is_none() {
                entry.stop_requested = Some(reason.to_owned());
                entry.info.desired_status = TaskStatus::Stopped;
                entry.info.last_status = TaskStatus::Stopping;
                signal_group(child.id(), libc::SIGTERM);
            }
        }
        if self.wait_exit(task, self.config.stop_grace).await {
            return Ok(());
        }
        {
            let tasks = self.refreshed();
            if let Some(child) = tasks.entries.get(task).and_then(|e| e.child.as_ref()) {
                signal_group(child.id(), libc::SIGKILL);
            }
        }
        if self.wait_exit(task, KILL_WAIT).await {
            Ok(())
        } else {
            Err(SchedulerError::Backend {
                message: format!("task {task} did not exit within {KILL_WAIT:?} of SIGKILL"),
            })
        }
    }

    async fn list_tasks(&self) -> Result<Vec<TaskInfo>, SchedulerError> {
        let tasks = self.refreshed();
        let mut infos: Vec<TaskInfo> = tasks.entries.values().map(|e| e.info.clone()).collect();
        infos.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        Ok(infos)
    }

    async fn describe_tasks(&self, ids: &[TaskId]) -> Result<Vec<TaskInfo>, SchedulerError> {
        let tasks = self.refreshed();
        Ok(ids
            .iter()
            .filter_map(|id| tasks.entries.get(id))
            .map(|entry| entry.info.clone())
            .collect())
    }
}

/// Why one task did not start.
#[derive(Debug, thiserror::Error)]
enum StartFailure {
    #[error("cannot start {}: {source}", program.display())]
    Spawn { program: PathBuf, source: io::Error },
    #[error("{what}: {source}")]
    Local { what: String, source: io::Error },
    #[error("the scheduler's spawner thread is gone")]
    Spawner,
}

impl StartFailure {
    /// The short reason a [`PlacementFailure::Other`] carries.
    fn reason(&self) -> &'static str {
        match self {
            StartFailure::Spawn { .. } => "SPAWN",
            StartFailure::Local { .. } => "LOCAL",
            StartFailure::Spawner => "SPAWNER",
        }
    }

    /// The error of a launch that started nothing.
    fn into_error(self) -> SchedulerError {
        let message = self.to_string();
        match self {
            StartFailure::Spawn { source, .. }
                if matches!(
                    source.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
                ) =>
            {
                SchedulerError::InvalidRequest { message }
            }
            _ => SchedulerError::Backend { message },
        }
    }
}

/// One task the scheduler started.
#[derive(Debug)]
struct TaskEntry {
    info: TaskInfo,
    /// `None` once the process has been reaped.
    child: Option<Child>,
    port: u16,
    /// Set by `stop`: the reason the caller gave.
    stop_requested: Option<String>,
    /// Set when its zone failed: the stop reason, whatever else was asked.
    lost: Option<String>,
}

impl TaskEntry {
    /// Records the exit of the task's process.
    fn finish(&mut self, exit: Result<ExitStatus, io::Error>, now: Timestamp) {
        self.child = None;
        self.info.last_status = TaskStatus::Stopped;
        self.info.desired_status = TaskStatus::Stopped;
        self.info.stopped_at = Some(now);
        self.info.stop_reason = Some(match (&self.lost, &self.stop_requested, exit) {
            (Some(lost), _, _) => lost.clone(),
            (None, Some(reason), _) => format!("stopped by the scheduler: {reason}"),
            (None, None, Ok(status)) => describe_exit(status),
            (None, None, Err(e)) => format!("exit status unknown: {e}"),
        });
    }
}

/// A launch remembered under its idempotency key.
#[derive(Debug, Default)]
struct RememberedLaunch {
    tasks: Vec<TaskId>,
    failures: Vec<LaunchFailure>,
}

/// Everything the scheduler knows, shared with the spawner thread.
#[derive(Debug, Default)]
struct Tasks {
    entries: BTreeMap<TaskId, TaskEntry>,
    /// Ids of tasks dropped after their retention: stopping them again is fine.
    forgotten: HashSet<TaskId>,
    launches: HashMap<String, RememberedLaunch>,
    /// Zones failed by [`LocalProcessScheduler::fail_zone`].
    failed_zones: BTreeSet<Zone>,
}

impl Tasks {
    /// Notices every exited process (non-blocking).
    fn reap(&mut self, now: Timestamp) {
        for entry in self.entries.values_mut() {
            let Some(child) = entry.child.as_mut() else {
                continue;
            };
            match child.try_wait() {
                Ok(None) => {}
                Ok(Some(status)) => entry.finish(Ok(status), now),
                Err(e) => entry.finish(Err(e), now),
            }
        }
    }

    /// Drops tasks stopped longer than `retention` ago, and keys whose tasks are all gone.
    fn forget_expired(&mut self, now: Timestamp, retention: Duration) {
        let expired: Vec<TaskId> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.info
                    .stopped_at
                    .is_some_and(|at| now.since(at) >= retention)
            })
            .map(|(id, _)| id.clone())
            .collect();
        if expired.is_empty() {
            return;
        }
        for id in expired {
            self.entries.remove(&id);
            self.forgotten.insert(id);
        }
        let entries = &self.entries;
        self.launches
            .retain(|_, launch| launch.tasks.iter().any(|t| entries.contains_key(t)));
    }

    fn is_live(&self, task: &TaskId) -> bool {
        self.entries.get(task).is_some_and(|e| e.child.is_some())
    }

    fn live_in(&self, zone: &Zone) -> usize {
        self.entries
            .values()
            .filter(|e| e.child.is_some() && e.info.zone.as_ref() == Some(zone))
            .count()
    }

    fn remembered_launch(&self, key: &str) -> Option<LaunchReport> {
        let launch = self.launches.get(key)?;
        Some(LaunchReport {
            started: launch
                .tasks
                .iter()
                .filter_map(|id| self.entries.get(id))
                .map(|e| e.info.clone())
                .collect(),
            failures: launch.failures.clone(),
        })
    }

    /// A loopback port free now and not handed to a live task.
    fn free_port(&self) -> io::Result<u16> {
        let taken: HashSet<u16> = self
            .entries
            .values()
            .filter(|e| e.child.is_some())
            .map(|e| e.port)
            .collect();
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            match std::net::TcpListener::bind(SocketAddr::new(LOOPBACK, 0))
                .and_then(|listener| listener.local_addr())
            {
                Ok(addr) if !taken.contains(&addr.port()) => return Ok(addr.port()),
                Ok(_) => {}
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{PORT_ATTEMPTS} ports tried, all taken by live tasks"),
            )
        }))
    }

    /// SIGKILLs every live task and waits for it (used when the scheduler goes away).
    fn kill_all(&mut self, now: Timestamp) {
        for entry in self.entries.values_mut() {
            let Some(child) = entry.child.as_mut() else {
                continue;
            };
            signal_group(child.id(), libc::SIGKILL);
            let exit = child.wait();
            entry
                .stop_requested
                .get_or_insert_with(|| SHUTDOWN_REASON.into());
            entry.finish(exit, now);
        }
    }
}

/// A task to fork on the spawner thread.
#[derive(Debug)]
struct SpawnRequest {
    command: Command,
    info: TaskInfo,
    port: u16,
    idempotency_key: String,
    reply: oneshot::Sender<io::Result<TaskInfo>>,
}

/// The spawner thread: forks tasks (so their death signal is tied to this thread), reaps
/// exited ones every [`REAP_INTERVAL`], and kills them all when the scheduler goes away.
fn spawner_loop(requests: &mpsc::Receiver<SpawnRequest>, tasks: &Mutex<Tasks>) {
    loop {
        match requests.recv_timeout(REAP_INTERVAL) {
            Ok(request) => spawn_tracked(request, tasks),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        lock(tasks).reap(Timestamp::now());
    }
    lock(tasks).kill_all(Timestamp::now());
}

/// Forks one task and records it in the same critical section, so a started process is
/// always tracked even if the launch that asked for it has been cancelled.
fn spawn_tracked(request: SpawnRequest, tasks: &Mutex<Tasks>) {
    let SpawnRequest {
        mut command,
        mut info,
        port,
        idempotency_key,
        reply,
    } = request;
    let mut tasks = lock(tasks);
    let result = command.spawn().map(|child| {
        info.started_at = Some(Timestamp::now());
        let id = info.id.clone();
        tasks.entries.insert(
            id.clone(),
            TaskEntry {
                info: info.clone(),
                child: Some(child),
                port,
                stop_requested: None,
                lost: None,
            },
        );
        tasks
            .launches
            .entry(idempotency_key)
            .or_default()
            .tasks
            .push(id);
        info
    });
    let _ = reply.send(result);
}

fn lock(tasks: &Mutex<Tasks>) -> MutexGuard<'_, Tasks> {
    // A panic elsewhere must not stop the scheduler from killing its children.
    tasks.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The stop reason of a task lost with its zone: `lost: zone local-b failed (chaos)`.
pub fn zone_failed_reason(zone: &Zone) -> String {
    format!("lost: zone {zone} failed (chaos)")
}

/// `exited with status N` or `killed by signal N`.
pub fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => format!("ended: {status}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_command_runs_anvil_on_the_tasks_port_data_dir_and_store() {
        let command = NodeCommand::agent(
            Path::new("/opt/nodefleet"),
            Path::new("/tools/anvil"),
            "file:///fleet/store",
        );
        assert_eq!(command.program, Path::new("/opt/nodefleet"));
        let args = command.render_args(40_123, Path::new("/fleet/tasks/task-1/data"));
        assert_eq!(
            args.join(" "),
            "agent run --client anvil --store file:///fleet/store \
             --data-dir /fleet/tasks/task-1/data --rpc-host 127.0.0.1 --rpc-port 40123 \
             --health-listen 127.0.0.1:0 --binary /tools/anvil --block-time-secs 1 \
             --min-peers 0 --max-head-age-secs 10 --channel-poll-ms 200 --heartbeat-ms 1000 -- --chain-id 31337"
        );
        // Role and snapshot come from the environment the scheduler sets per task.
        assert!(command.env.is_empty());
    }
}
