//! What the `nodefleet` binary's tests share: the binary as a command that dies with its
//! test, a fresh folder per test, waiting for a line of its output, a running
//! `nodefleet up` with `nodefleet status` asked about it, and clients reading steadily
//! through its gateway.

#![allow(dead_code)] // each test file uses a different part of this module

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nodefleet_local::status::process_start_time;
use nodefleet_testkit::anvil;
use nodefleet_testkit::client::{client, try_post};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// The built `nodefleet` binary, with no standard input, killed if the test drops it.
pub fn nodefleet() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nodefleet"));
    command.stdin(Stdio::null()).kill_on_drop(true);
    command
}

/// An empty folder `nodefleet-<suite>-<name>-<pid>` in the temp dir (emptied if it exists).
pub fn temp_dir(suite: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nodefleet-{suite}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Reads a child's stdout lines until one contains `needle` and returns it; panics if the
/// output ends first or `within` passes.
pub async fn line_with(
    lines: &mut Lines<BufReader<ChildStdout>>,
    needle: &str,
    within: Duration,
) -> String {
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains(needle) {
                return line;
            }
        }
        panic!("stdout ended before {needle:?}");
    };
    tokio::time::timeout(within, read).await.expect(needle)
}

/// `nodefleet up --nodes N` on an ephemeral gateway port in `dir`, with the pinned anvil, its
/// stdout as lines (the banner says `JSON-RPC at <url>`) and its stderr the test's.
/// The snapshot updater is off (`--snapshot-interval-secs 0`): these tests are about the
/// serving nodes; `up_updater.rs` runs it.
pub fn spawn_up(dir: &Path, nodes: u32) -> (Child, Lines<BufReader<ChildStdout>>) {
    spawn_up_with(dir, nodes, &["--snapshot-interval-secs", "0"])
}

/// [`spawn_up`] with more arguments for `up`.
pub fn spawn_up_with(
    dir: &Path,
    nodes: u32,
    extra: &[&str],
) -> (Child, Lines<BufReader<ChildStdout>>) {
    let nodes = nodes.to_string();
    let args: Vec<&str> = ["--nodes", nodes.as_str()]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    spawn_up_in(dir, &args)
}

/// `nodefleet up` with exactly `args` (no `--nodes`: a second `up` on a folder resumes its
/// stored fleet) on ephemeral gateway and console ports in `dir`, with the pinned anvil, its
/// stdout as lines and its stderr the test's.
pub fn spawn_up_in(dir: &Path, args: &[&str]) -> (Child, Lines<BufReader<ChildStdout>>) {
    let mut child = nodefleet()
        .arg("up")
        .args(args)
        .args(["--listen", "127.0.0.1:0", "--console", "127.0.0.1:0"])
        .args(["--no-install", "--dir"])
        .arg(dir)
        .env("NODEFLEET_ANVIL", anvil::binary())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

/// `nodefleet <args> --dir DIR`: (exit code, stdout, stderr).
pub async fn run_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let output = nodefleet()
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .await
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `nodefleet status --dir DIR [--json]`: (exit code, stdout, stderr).
pub async fn status(dir: &Path, json: bool) -> (i32, String, String) {
    let mut command = nodefleet();
    command.arg("status").arg("--dir").arg(dir);
    if json {
        command.arg("--json");
    }
    let output = command.output().await.unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Polls `status --json` until `done` holds; panics with the last answer after `within`.
pub async fn wait_status(
    dir: &Path,
    what: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    let mut last = None;
    while Instant::now() < deadline {
        let (code, stdout, stderr) = status(dir, true).await;
        if code == 0 {
            let value: Value = serde_json::from_str(&stdout).unwrap();
            if done(&value) {
                return value;
            }
            last = Some(value);
        } else {
            last = Some(Value::String(stderr));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{what} not within {within:?}; last status: {last:#?}");
}

/// The `nodes` of a status document.
pub fn nodes(status: &Value) -> &Vec<Value> {
    status["nodes"].as_array().unwrap()
}

/// `count` nodes, each healthy with a process and a head block.
pub fn all_healthy(status: &Value, count: usize) -> bool {
    let nodes = nodes(status);
    nodes.len() == count
        && nodes
            .iter()
            .all(|n| n["healthy"] == true && n["pid"].is_u64() && n["head_block"].is_u64())
}

/// A process of that id runs (and is not a zombie).
pub fn alive(pid: u64) -> bool {
    process_start_time(u32::try_from(pid).unwrap()).is_some()
}

/// The processes whose parent is `pid` (from `/proc/*/stat`): an agent's client.
pub fn children(pid: u64) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let child: u64 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // After the command name in parentheses: the state, then the parent's pid.
            let (_, rest) = stat.rsplit_once(')')?;
            let parent: u64 = rest.split_whitespace().nth(1)?.parse().ok()?;
            (parent == pid).then_some(child)
        })
        .collect()
}

/// Stops `nodefleet up` as Ctrl-C would (SIGINT) and waits for it to exit cleanly.
pub async fn interrupt(up: &mut Child, within: Duration) {
    let sent = std::process::Command::new("kill")
        .args(["-INT", &up.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let exit = tokio::time::timeout(within, up.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit}");
}

/// How often each steady client sends a read: a steady stream, so a chaos action lands
/// mid-traffic.
pub const READ_EVERY: Duration = Duration::from_millis(15);
/// Reads per client at most (the clients are stopped long before: this bounds the loop
/// whatever happens): eight minutes at one read per [`READ_EVERY`].
pub const MAX_READS: usize = 32_000;
/// The first account of anvil's default mnemonic (it holds 10,000 ETH).
pub const FUNDED: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";

/// What one client saw.
#[derive(Debug, Default)]
pub struct Reads {
    pub ok: usize,
    pub failures: Vec<String>,
}

/// Sends reads (`eth_blockNumber` and `eth_getBalance` in turn) through the gateway every
/// [`READ_EVERY`] until `stop`, on one keep-alive client, one at a time (a read is sent once
/// the last one is answered). A read counts as good only if it is HTTP 200 with a JSON-RPC
/// `result`.
pub async fn read_steadily(url: String, client_id: usize, stop: Arc<AtomicBool>) -> Reads {
    let client = client();
    let mut reads = Reads::default();
    for i in 0..MAX_READS {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let body = if i % 2 == 0 {
            format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"eth_blockNumber","params":[]}}"#)
        } else {
            format!(
                r#"{{"jsonrpc":"2.0","id":{i},"method":"eth_getBalance","params":["{FUNDED}","latest"]}}"#
            )
        };
        let sent = Instant::now();
        match try_post(&client, &url, body).await {
            Ok(answer) => {
                let json: Option<Value> = serde_json::from_str(&answer.body).ok();
                let result = json
                    .as_ref()
                    .and_then(|j| j.get("result"))
                    .and_then(Value::as_str);
                if answer.status == 200 && result.is_some_and(|r| r.starts_with("0x")) {
                    reads.ok += 1;
                } else {
                    reads.failures.push(format!(
                        "client {client_id} read {i}: HTTP {} {}",
                        answer.status, answer.body
                    ));
                }
            }
            Err(error) => reads
                .failures
                .push(format!("client {client_id} read {i}: {error}")),
        }
        tokio::time::sleep(READ_EVERY.saturating_sub(sent.elapsed())).await;
    }
    reads
}

/// `count` clients reading steadily through the gateway at `url` ([`read_steadily`]) until
/// [`SteadyReads::stop`].
pub struct SteadyReads {
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<Reads>>,
}

impl SteadyReads {
    pub fn start(url: &str, count: usize) -> SteadyReads {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..count)
            .map(|id| tokio::spawn(read_steadily(url.to_owned(), id, stop.clone())))
            .collect();
        SteadyReads { stop, clients }
    }

    /// Stops the clients; the good reads of all and every failure.
    pub async fn stop(self) -> Reads {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Reads::default();
        for client in self.clients {
            let reads = client.await.unwrap();
            all.ok += reads.ok;
            all.failures.extend(reads.failures);
        }
        all
    }
}
