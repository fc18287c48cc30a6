//! What the `nodefleet` binary's tests share: the binary as a command that dies with its
//! test, a fresh folder per test, waiting for a line of its output, and a running
//! `nodefleet up` with `nodefleet status` asked about it.

#![allow(dead_code)] // each test file uses a different part of this module

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nodefleet_local::status::process_start_time;
use nodefleet_testkit::anvil;
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
    let mut child = nodefleet()
        .args(["up", "--nodes", &nodes.to_string()])
        .args(extra)
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
