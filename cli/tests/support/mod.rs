//! What the `nodefleet` binary's tests share: the binary as a command that dies with its
//! test, a fresh folder per test, and waiting for a line of its output.

#![allow(dead_code)] // each test file uses a different part of this module

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{BufReader, Lines};
use tokio::process::{ChildStdout, Command};

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
