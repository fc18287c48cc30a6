//! One anvil node as a child process.
//!
//! The child gets `PR_SET_PDEATHSIG`, so it dies with the process that started it even when
//! that process is killed outright, and `kill_on_drop`, so dropping the handle stops it: a
//! local fleet never leaves nodes behind. Output goes to a log file in the node's folder.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// Block time of local nodes: anvil otherwise mines only on transactions, and a head that
/// never moves would look stalled to any freshness check.
pub const LOCAL_BLOCK_TIME_SECS: u32 = 1;
/// The chain id anvil uses by default; stated so every local node agrees.
pub const LOCAL_CHAIN_ID: u64 = 31_337;
/// How long a node may take to answer its first call: anvil starts in well under a second,
/// but a loaded CI machine can be slow.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create the node folder {path}: {source}")]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("node {name} exited during start-up ({status}); see {log}")]
    Exited {
        name: String,
        status: std::process::ExitStatus,
        log: PathBuf,
    },
    #[error("node {name} did not answer on {addr} within {timeout:?}; see {log}")]
    NotReady {
        name: String,
        addr: SocketAddr,
        timeout: Duration,
        log: PathBuf,
    },
}

/// A running anvil node.
#[derive(Debug)]
pub struct NodeProcess {
    pub name: String,
    pub addr: SocketAddr,
    pub log: PathBuf,
    child: Child,
}

impl NodeProcess {
    /// Starts anvil on `addr`, logging into `folder`, and waits until it answers.
    pub async fn start(
        name: &str,
        binary: &Path,
        addr: SocketAddr,
        folder: &Path,
    ) -> Result<NodeProcess, StartError> {
        std::fs::create_dir_all(folder).map_err(|source| StartError::Folder {
            path: folder.to_path_buf(),
            source,
        })?;
        let log = folder.join("anvil.log");
        let log_file = std::fs::File::create(&log).map_err(|source| StartError::Folder {
            path: log.clone(),
            source,
        })?;
        let log_err = log_file.try_clone().map_err(|source| StartError::Folder {
            path: log.clone(),
            source,
        })?;
        let mut command = Command::new(binary);
        command
            .arg("--host")
            .arg(addr.ip().to_string())
            .arg("--port")
            .arg(addr.port().to_string())
            .arg("--block-time")
            .arg(LOCAL_BLOCK_TIME_SECS.to_string())
            .arg("--chain-id")
            .arg(LOCAL_CHAIN_ID.to_string())
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .kill_on_drop(true);
        die_with_parent(&mut command);
        let child = command.spawn().map_err(|source| StartError::Spawn {
            binary: binary.to_path_buf(),
            source,
        })?;
        let mut node = NodeProcess {
            name: name.to_owned(),
            addr,
            log,
            child,
        };
        node.wait_ready(START_TIMEOUT).await?;
        Ok(node)
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<(), StartError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(StartError::Exited {
                    name: self.name.clone(),
                    status,
                    log: self.log.clone(),
                });
            }
            if block_number(self.addr).await.is_some() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StartError::NotReady {
                    name: self.name.clone(),
                    addr: self.addr,
                    timeout,
                    log: self.log.clone(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The URL of the node's JSON-RPC endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stops the node: SIGTERM, then SIGKILL if it has not exited after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        if let Some(pid) = self.child.id() {
            send_sigterm(pid);
            if tokio::time::timeout(grace, self.child.wait()).await.is_ok() {
                return;
            }
        }
        let _ = self.child.kill().await;
    }
}

/// Asks a node for its block number over a raw HTTP/1.1 request (no client dependency
/// here; the gateway has the real client). `None` when it does not answer.
pub async fn block_number(addr: SocketAddr) -> Option<u64> {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#;
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8(response).ok()?;
        let (_, json) = text.split_once("\r\n\r\n")?;
        let value: serde_json::Value = serde_json::from_str(json.trim()).ok()?;
        let hex = value.get("result")?.as_str()?.strip_prefix("0x")?;
        u64::from_str_radix(hex, 16).ok()
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}

#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2),
    // which is async-signal-safe; it touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[allow(unsafe_code)]
fn send_sigterm(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) with a pid of our own child and a valid signal has no memory effects.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}
