//! The execution client as a child process: its command line per client, starting it,
//! stopping it gracefully, and noticing when it dies on its own.
//!
//! # Command lines
//!
//! [`command_line`] is a pure function of a [`LaunchSpec`]; the agent adds nothing else, so
//! what runs is exactly what this table says, followed by the operator's `extra_args`
//! (network selection, p2p ports, the engine API's `--authrpc.jwtsecret` for the consensus
//! client, ...). HTTP JSON-RPC listens on `rpc_addr` (`127.0.0.1:<port>` by default: the
//! agent's probe is local; on ECS the NLB reaches the task's address, so the task sets
//! `0.0.0.0`). `rpc_apis` (default `eth,net,web3`: what the gateway's default allowlist and
//! the agent's probe call) names the namespaces exposed.
//!
//! | client | data dir | HTTP RPC |
//! |---|---|---|
//! | geth | `--datadir D` | `--http --http.addr H --http.port P --http.api eth,net,web3 --http.vhosts=*` |
//! | reth | `node --datadir D` | `--http --http.addr H --http.port P --http.api eth,net,web3` |
//! | erigon | `--datadir D` | `--http --http.addr H --http.port P --http.api eth,net,web3 --http.vhosts=*` |
//! | nethermind | `--data-dir D` | `--JsonRpc.Enabled true --JsonRpc.Host H --JsonRpc.Port P --JsonRpc.EnabledModules Eth,Net,Web3` |
//! | besu | `--data-path=D` | `--rpc-http-enabled --rpc-http-host=H --rpc-http-port=P --rpc-http-api=ETH,NET,WEB3 --host-allowlist=*` |
//! | anvil | `--state D/state.json` | `--host H --port P --block-time N` |
//!
//! geth, erigon and besu check the HTTP `Host` header against an allowlist that defaults to
//! `localhost`; requests through the load balancer carry its DNS name, so the allowlist is
//! opened (`*`): the RPC port is reachable only from the load balancer (security group), and
//! the gateway in front is the policy boundary. anvil keeps its whole chain in memory;
//! `--state FILE` loads it at start and dumps it on a clean exit, so its state survives a
//! stop and a snapshot of the data dir carries it.
//!
//! # Process handling
//!
//! The child runs in its own process group, so a Ctrl-C in the agent's terminal reaches
//! the agent only (which then stops the client the graceful way) and a stop reaches the
//! client's own children too. It gets `PR_SET_PDEATHSIG` = SIGKILL, so it dies with the
//! agent even when the agent is killed outright. The kernel sends that signal when the
//! *thread* that forked the child exits, not the process, and tokio's blocking threads come
//! and go, so each client is forked from a thread of its own that lives exactly as long as
//! the child (it is released when the child has been reaped).
//!
//! Stopping sends the profile's `stop_signal` (SIGINT for geth, reth and erigon, which flush
//! their databases on it; SIGTERM for the others) to the client's process group and waits
//! up to `stop_timeout` (both can be overridden in the [`LaunchSpec`]); then SIGKILL. A stop is *clean* when the client exited by itself within the timeout (with any
//! exit code: a JVM exits 143 after its shutdown hooks ran), not when a signal's default
//! action killed it. Dropping a [`RunningClient`] stops the client the same way in the
//! background. The outcome of every run is a [`ClientExit`], published on a watch channel,
//! so the lifecycle notices a client that died on its own.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nodefleet_local::child::{own_group_dying_with_parent, signal_group};
use nodefleet_snapshot::profile::{self, ClientProfile};
use tokio::process::{Child, Command};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

/// Block time of anvil when nothing else is said: the local fleet's (one block a second),
/// so a local head never looks stalled.
pub const DEFAULT_ANVIL_BLOCK_TIME_SECS: u64 = 1;
/// The namespaces exposed over HTTP: what the gateway's default allowlist and the agent's
/// probe call (`eth_*`, `net_version`/`net_peerCount`, `web3_clientVersion`).
pub const DEFAULT_RPC_APIS: &[&str] = &["eth", "net", "web3"];
/// The file anvil keeps its state in, inside the data dir.
pub const ANVIL_STATE_FILE: &str = "state.json";

/// The execution clients the agent can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    Geth,
    Reth,
    Erigon,
    Nethermind,
    Besu,
    Anvil,
}

impl ClientKind {
    pub const ALL: [ClientKind; 6] = [
        ClientKind::Geth,
        ClientKind::Reth,
        ClientKind::Erigon,
        ClientKind::Nethermind,
        ClientKind::Besu,
        ClientKind::Anvil,
    ];

    /// The client's name, as profiles and the CLI spell it.
    pub fn name(self) -> &'static str {
        self.profile().name
    }

    /// The client called `name`.
    pub fn from_name(name: &str) -> Option<ClientKind> {
        ClientKind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// The snapshot engine's profile: excluded files, stop signal and timeout.
    pub fn profile(self) -> &'static ClientProfile {
        match self {
            ClientKind::Geth => &profile::GETH,
            ClientKind::Reth => &profile::RETH,
            ClientKind::Erigon => &profile::ERIGON,
            ClientKind::Nethermind => &profile::NETHERMIND,
            ClientKind::Besu => &profile::BESU,
            ClientKind::Anvil => &profile::ANVIL,
        }
    }

    /// The executable looked up on `PATH` when no binary is given.
    pub fn default_binary(self) -> &'static str {
        self.name()
    }
}

impl fmt::Display for ClientKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the client's output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientLog {
    /// Appended to this file (created with its folder).
    File(PathBuf),
    /// The agent's own stdout/stderr (a container's log driver collects them).
    Inherit,
}

/// Everything needed to start one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    pub kind: ClientKind,
    pub binary: PathBuf,
    pub data_dir: PathBuf,
    /// Where the client's HTTP JSON-RPC listens.
    pub rpc_addr: SocketAddr,
    /// Namespaces exposed over HTTP (see [`DEFAULT_RPC_APIS`]).
    pub rpc_apis: Vec<String>,
    /// anvil's `--block-time` (ignored by the other clients).
    pub anvil_block_time_secs: u64,
    /// Appended after the agent's own arguments.
    pub extra_args: Vec<OsString>,
    pub log: ClientLog,
    /// The signal that asks the client to stop (default: the profile's).
    pub stop_signal: i32,
    /// How long a stop may take before SIGKILL (default: the profile's; keep it within the
    /// container's own stop timeout).
    pub stop_timeout: Duration,
}

impl LaunchSpec {
    /// A spec with the defaults: the client from `PATH`, [`DEFAULT_RPC_APIS`], the
    /// default anvil block time, no extra arguments, output to [`default_log_file`], the
    /// profile's stop signal and timeout.
    pub fn new(kind: ClientKind, data_dir: impl Into<PathBuf>, rpc_addr: SocketAddr) -> Self {
        let data_dir = data_dir.into();
        LaunchSpec {
            kind,
            binary: PathBuf::from(kind.default_binary()),
            log: ClientLog::File(default_log_file(&data_dir, kind)),
            data_dir,
            rpc_addr,
            rpc_apis: DEFAULT_RPC_APIS.iter().map(|&api| api.to_owned()).collect(),
            anvil_block_time_secs: DEFAULT_ANVIL_BLOCK_TIME_SECS,
            extra_args: Vec::new(),
            stop_signal: kind.profile().stop_signal,
            stop_timeout: kind.profile().stop_timeout,
        }
    }
}

/// `<parent of data dir>/<data dir name>.<client>.log`: next to the data dir, never inside
/// it (a log must not end up in a snapshot, nor be removed by a restore).
pub fn default_log_file(data_dir: &Path, kind: ClientKind) -> PathBuf {
    match (data_dir.parent(), data_dir.file_name()) {
        (Some(parent), Some(name)) => {
            let mut file = name.to_os_string();
            file.push(format!(".{kind}.log"));
            parent.join(file)
        }
        _ => std::env::temp_dir().join(format!("nodefleet-{kind}.log")),
    }
}

/// The client's arguments (see the table in the module doc), then `extra_args`.
pub fn command_line(spec: &LaunchSpec) -> Vec<OsString> {
    fn add(args: &mut Vec<OsString>, items: &[&str]) {
        args.extend(items.iter().map(OsString::from));
    }
    let host = spec.rpc_addr.ip().to_string();
    let port = spec.rpc_addr.port().to_string();
    let apis = |case: fn(&str) -> String| {
        spec.rpc_apis
            .iter()
            .map(|api| case(api))
            .collect::<Vec<_>>()
            .join(",")
    };
    let data_dir = spec.data_dir.as_os_str().to_owned();
    let mut args: Vec<OsString> = Vec::new();
    match spec.kind {
        ClientKind::Geth | ClientKind::Erigon => {
            add(&mut args, &["--datadir"]);
            args.push(data_dir);
            add(
                &mut args,
                &["--http", "--http.addr", &host, "--http.port", &port],
            );
            add(
                &mut args,
                &["--http.api", &apis(str::to_owned), "--http.vhosts=*"],
            );
        }
        ClientKind::Reth => {
            add(&mut args, &["node", "--datadir"]);
            args.push(data_dir);
            add(
                &mut args,
                &["--http", "--http.addr", &host, "--http.port", &port],
            );
            add(&mut args, &["--http.api", &apis(str::to_owned)]);
        }
        ClientKind::Nethermind => {
            add(&mut args, &["--data-dir"]);
            args.push(data_dir);
            add(
                &mut args,
                &["--JsonRpc.Enabled", "true", "--JsonRpc.Host", &host],
            );
            add(&mut args, &["--JsonRpc.Port", &port]);
            add(&mut args, &["--JsonRpc.EnabledModules", &apis(capitalized)]);
        }
        ClientKind::Besu => {
            let mut flag = OsString::from("--data-path=");
            flag.push(&data_dir);
            args.push(flag);
            add(
                &mut args,
                &[
                    "--rpc-http-enabled",
                    &format!("--rpc-http-host={host}"),
                    &format!("--rpc-http-port={port}"),
                    &format!("--rpc-http-api={}", apis(str::to_uppercase)),
                    "--host-allowlist=*",
                ],
            );
        }
        ClientKind::Anvil => {
            add(&mut args, &["--host", &host, "--port", &port, "--state"]);
            args.push(spec.data_dir.join(ANVIL_STATE_FILE).into_os_string());
            add(
                &mut args,
                &["--block-time", &spec.anvil_block_time_secs.to_string()],
            );
        }
    }
    args.extend(spec.extra_args.iter().cloned());
    args
}

/// `eth` -> `Eth` (Nethermind's module names).
fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Why a client did not start.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot create {path}: {source}")]
    Prepare { path: PathBuf, source: io::Error },
    #[error("cannot start {kind} ({binary}): {source}")]
    Spawn {
        kind: ClientKind,
        binary: PathBuf,
        source: io::Error,
    },
}

/// How a client run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCause {
    /// Nobody asked it to stop.
    OnItsOwn,
    /// It exited after the stop signal, within the stop timeout.
    Stopped { signal: i32, after: Duration },
    /// It did not exit within the stop timeout and was killed.
    Killed { timeout: Duration },
}

/// The end of a client run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientExit {
    /// The exit status; `None` if the child could not be reaped (an OS error).
    pub status: Option<ExitStatus>,
    pub cause: ExitCause,
}

impl ClientExit {
    /// Stopped on request, by itself, within the timeout (see the module doc).
    pub fn is_clean(&self) -> bool {
        matches!(self.cause, ExitCause::Stopped { .. })
            && self.status.is_some_and(|status| status.code().is_some())
    }

    /// What the agent's process should exit with when this ends its run: the client's own
    /// exit code when it had a non-zero one, 128 + signal when a signal killed it (the
    /// shell's convention), 1 otherwise (a client that exits 0 on its own still ended a
    /// node that should be running).
    pub fn agent_exit_code(&self) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        match self.status {
            Some(status) => match (status.code(), status.signal()) {
                (Some(code), _) if code != 0 => code,
                (None, Some(signal)) => 128 + signal,
                _ => 1,
            },
            None => 1,
        }
    }
}

impl fmt::Display for ClientExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use std::os::unix::process::ExitStatusExt;
        let status = match self.status {
            None => "could not be reaped".to_owned(),
            Some(status) => match (status.code(), status.signal()) {
                (Some(code), _) => format!("exited with status {code}"),
                (None, Some(signal)) => format!("killed by signal {signal}"),
                _ => format!("ended: {status}"),
            },
        };
        match self.cause {
            ExitCause::OnItsOwn => write!(f, "{status} on its own"),
            ExitCause::Stopped { signal, after } => {
                write!(f, "{status} {after:.1?} after signal {signal}")
            }
            ExitCause::Killed { timeout } => {
                write!(f, "{status}: killed after not stopping within {timeout:?}")
            }
        }
    }
}

/// A started client. See the module doc.
#[derive(Debug)]
pub struct RunningClient {
    kind: ClientKind,
    pid: u32,
    stop: Option<oneshot::Sender<()>>,
    exit: watch::Receiver<Option<ClientExit>>,
}

impl RunningClient {
    /// Starts the client `spec` describes (creating its data dir and log folder). Does not
    /// wait for its RPC: a large database can take minutes to open, and `/health` says so
    /// meanwhile.
    pub async fn start(spec: &LaunchSpec) -> Result<RunningClient, ClientError> {
        std::fs::create_dir_all(&spec.data_dir).map_err(|source| ClientError::Prepare {
            path: spec.data_dir.clone(),
            source,
        })?;
        let (stdout, stderr) = match &spec.log {
            ClientLog::Inherit => (Stdio::inherit(), Stdio::inherit()),
            ClientLog::File(path) => {
                let prepare = |source| ClientError::Prepare {
                    path: path.clone(),
                    source,
                };
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(prepare)?;
                }
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(prepare)?;
                let copy = file.try_clone().map_err(prepare)?;
                (Stdio::from(file), Stdio::from(copy))
            }
        };
        let mut command = Command::new(&spec.binary);
        command
            .args(command_line(spec))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true);
        own_group_dying_with_parent(command.as_std_mut());

        let (child, release) =
            spawn_on_own_thread(command)
                .await
                .map_err(|source| ClientError::Spawn {
                    kind: spec.kind,
                    binary: spec.binary.clone(),
                    source,
                })?;
        let pid = child.id().unwrap_or(0);
        tracing::info!(client = %spec.kind, pid, rpc = %spec.rpc_addr, data_dir = %spec.data_dir.display(), "client started");
        let (stop_tx, stop_rx) = oneshot::channel();
        let (exit_tx, exit_rx) = watch::channel(None);
        tokio::spawn(supervise(
            child,
            pid,
            spec.stop_signal,
            spec.stop_timeout,
            stop_rx,
            exit_tx,
            release,
        ));
        Ok(RunningClient {
            kind: spec.kind,
            pid,
            stop: Some(stop_tx),
            exit: exit_rx,
        })
    }

    pub fn kind(&self) -> ClientKind {
        self.kind
    }

    /// The client's process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The run's outcome as it becomes known: `None` while the client runs.
    pub fn exit_watch(&self) -> watch::Receiver<Option<ClientExit>> {
        self.exit.clone()
    }

    /// Whether the client has exited.
    pub fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    /// Waits until the client exits (on its own, unless a stop was asked elsewhere).
    pub async fn wait(&mut self) -> ClientExit {
        wait_exit(&mut self.exit).await
    }

    /// Stops the client: the profile's stop signal, SIGKILL after its stop timeout.
    pub async fn stop(mut self) -> ClientExit {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let exit = wait_exit(&mut self.exit).await;
        tracing::info!(client = %self.kind, pid = self.pid, "client {exit}");
        exit
    }
}

async fn wait_exit(exit: &mut watch::Receiver<Option<ClientExit>>) -> ClientExit {
    let seen = exit
        .wait_for(Option::is_some)
        .await
        .ok()
        .and_then(|seen| *seen);
    // `None`: the supervising task is gone without a word (only when the runtime shuts
    // down); the last value it published, if any, is all there is.
    seen.or_else(|| *exit.borrow()).unwrap_or(UNREAPED)
}

const UNREAPED: ClientExit = ClientExit {
    status: None,
    cause: ExitCause::OnItsOwn,
};

/// Owns the child: reports its exit, or stops it when asked (or when the handle is dropped).
async fn supervise(
    mut child: Child,
    pid: u32,
    stop_signal: i32,
    stop_timeout: Duration,
    stop: oneshot::Receiver<()>,
    exit: watch::Sender<Option<ClientExit>>,
    _release: std::sync::mpsc::Sender<()>,
) {
    let outcome = tokio::select! {
        status = child.wait() => ClientExit { status: status.ok(), cause: ExitCause::OnItsOwn },
        // A stop request, or the handle was dropped: stop either way.
        _ = stop => {
            let asked = Instant::now();
            // The child is not reaped yet (its wait did not complete), so its pid, which is
            // also its group id, cannot have been reused.
            signal_group(pid, stop_signal);
            match tokio::time::timeout(stop_timeout, child.wait()).await {
                Ok(status) => ClientExit {
                    status: status.ok(),
                    cause: ExitCause::Stopped { signal: stop_signal, after: asked.elapsed() },
                },
                Err(_) => {
                    signal_group(pid, libc::SIGKILL);
                    let status = child.wait().await;
                    ClientExit { status: status.ok(), cause: ExitCause::Killed { timeout: stop_timeout } }
                }
            }
        }
    };
    exit.send_replace(Some(outcome));
    // `_release` drops here: the forking thread ends now that the child is reaped.
}

/// Forks `command` from a new thread that lives until the returned sender is dropped
/// (see the module doc: the death signal follows the forking thread).
async fn spawn_on_own_thread(
    mut command: Command,
) -> io::Result<(Child, std::sync::mpsc::Sender<()>)> {
    let runtime = tokio::runtime::Handle::current();
    let (child_tx, child_rx) = oneshot::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("nodefleet-client".into())
        .spawn(move || {
            let spawned = {
                let _runtime = runtime.enter();
                command.spawn()
            };
            let started = spawned.is_ok();
            let _ = child_tx.send(spawned);
            if started {
                // Returns when the supervisor drops the sender, after reaping the child.
                let _ = release_rx.recv();
            }
        })?;
    let child = child_rx
        .await
        .map_err(|_| io::Error::other("the spawning thread ended without an answer"))??;
    Ok((child, release_tx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: ClientKind) -> LaunchSpec {
        LaunchSpec::new(kind, "/data/node", SocketAddr::from(([127, 0, 0, 1], 8545)))
    }

    fn args(kind: ClientKind) -> Vec<String> {
        command_line(&spec(kind))
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn every_client_gets_its_data_dir_and_loopback_rpc() {
        assert_eq!(
            args(ClientKind::Geth).join(" "),
            "--datadir /data/node --http --http.addr 127.0.0.1 --http.port 8545 --http.api eth,net,web3 --http.vhosts=*"
        );
        assert_eq!(
            args(ClientKind::Reth).join(" "),
            "node --datadir /data/node --http --http.addr 127.0.0.1 --http.port 8545 --http.api eth,net,web3"
        );
        assert_eq!(
            args(ClientKind::Erigon).join(" "),
            "--datadir /data/node --http --http.addr 127.0.0.1 --http.port 8545 --http.api eth,net,web3 --http.vhosts=*"
        );
        assert_eq!(
            args(ClientKind::Nethermind).join(" "),
            "--data-dir /data/node --JsonRpc.Enabled true --JsonRpc.Host 127.0.0.1 --JsonRpc.Port 8545 --JsonRpc.EnabledModules Eth,Net,Web3"
        );
        assert_eq!(
            args(ClientKind::Besu).join(" "),
            "--data-path=/data/node --rpc-http-enabled --rpc-http-host=127.0.0.1 --rpc-http-port=8545 --rpc-http-api=ETH,NET,WEB3 --host-allowlist=*"
        );
        assert_eq!(
            args(ClientKind::Anvil).join(" "),
            "--host 127.0.0.1 --port 8545 --state /data/node/state.json --block-time 1"
        );
    }

    #[test]
    fn extra_args_come_last() {
        let mut spec = spec(ClientKind::Geth);
        spec.extra_args = vec!["--sepolia".into(), "--authrpc.jwtsecret=/s/jwt".into()];
        let args = command_line(&spec);
        assert_eq!(
            args[args.len() - 2..],
            [
                OsString::from("--sepolia"),
                OsString::from("--authrpc.jwtsecret=/s/jwt")
            ]
        );
    }

    #[test]
    fn the_log_sits_next_to_the_data_dir() {
        assert_eq!(
            default_log_file(Path::new("/data/node"), ClientKind::Geth),
            PathBuf::from("/data/node.geth.log")
        );
        assert_eq!(
            default_log_file(Path::new("/data/node/"), ClientKind::Anvil),
            PathBuf::from("/data/node.anvil.log")
        );
    }

    #[test]
    fn names_round_trip() {
        for kind in ClientKind::ALL {
            assert_eq!(ClientKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(ClientKind::from_name("generic"), None);
    }

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        use std::os::unix::process::ExitStatusExt;
        let exit = |raw: i32, cause| ClientExit {
            status: Some(ExitStatus::from_raw(raw)),
            cause,
        };
        // Raw wait statuses: code N is N << 8; a signal is its number.
        assert_eq!(exit(3 << 8, ExitCause::OnItsOwn).agent_exit_code(), 3);
        assert_eq!(exit(0, ExitCause::OnItsOwn).agent_exit_code(), 1);
        assert_eq!(exit(9, ExitCause::OnItsOwn).agent_exit_code(), 137);
        let stopped = ExitCause::Stopped {
            signal: 15,
            after: Duration::from_millis(5),
        };
        assert!(exit(0, stopped).is_clean());
        assert!(exit(143 << 8, stopped).is_clean());
        assert!(!exit(15, stopped).is_clean());
        assert!(
            !exit(
                9,
                ExitCause::Killed {
                    timeout: Duration::from_secs(1)
                }
            )
            .is_clean()
        );
    }
}
