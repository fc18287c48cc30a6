//! The `nodefleet` binary from the outside: one-line errors, `gateway` in front of a
//! recording node, and `up` with real anvil nodes (requests flow, a killed node costs no
//! failed reads, Ctrl-C leaves no process behind).

#![allow(clippy::unwrap_used)] // a test fails loudly by design

mod support;

use support::nodefleet;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nodefleet_testkit::client::post;
use nodefleet_testkit::{RecordingNode, anvil};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

fn temp_dir(name: &str) -> PathBuf {
    support::temp_dir("cli", name)
}

/// Runs to completion and returns (exit code, stderr).
async fn run(command: &mut Command) -> (i32, String) {
    let output = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn assert_one_line_error(stderr: &str, needle: &str) {
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
}

#[tokio::test]
async fn a_busy_port_is_a_one_line_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, stderr) = run(nodefleet().args([
        "gateway",
        "--listen",
        &addr,
        "--upstream",
        "http://127.0.0.1:9",
    ]))
    .await;
    assert_eq!(code, 1);
    assert_one_line_error(&stderr, "already in use");
    let dir = temp_dir("busy");
    let (code, stderr) = run(nodefleet()
        .args(["up", "--listen", &addr, "--console", "127.0.0.1:0", "--dir"])
        .arg(&dir))
    .await;
    assert_eq!(code, 1);
    assert_one_line_error(&stderr, "already in use");
    let (code, stderr) = run(nodefleet()
        .args(["up", "--listen", "127.0.0.1:0", "--console", &addr, "--dir"])
        .arg(&dir))
    .await;
    assert_eq!(code, 1);
    assert_one_line_error(&stderr, "cannot open the console (--console)");
    assert!(stderr.contains("already in use"), "{stderr}");
}

#[tokio::test]
async fn a_missing_anvil_says_how_to_install_it() {
    let dir = temp_dir("noanvil");
    let (code, stderr) = run(nodefleet()
        .args(["up", "--no-install", "--listen", "127.0.0.1:0"])
        .args(["--console", "127.0.0.1:0", "--dir"])
        .arg(dir.join("state"))
        .arg("--tools")
        .arg(dir.join("empty-tools"))
        .env_remove("NODEFLEET_ANVIL"))
    .await;
    assert_eq!(code, 1);
    assert_one_line_error(&stderr, "nodefleet tools install");
}

#[tokio::test]
async fn an_unreadable_or_invalid_policy_file_is_a_one_line_error() {
    let dir = temp_dir("policy");
    let missing = dir.join("missing.toml");
    let (code, stderr) = run(nodefleet()
        .args([
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "http://127.0.0.1:9",
            "--policy",
        ])
        .arg(&missing))
    .await;
    assert_eq!(code, 1);
    assert_one_line_error(
        &stderr,
        &format!("cannot read policy file {}", missing.display()),
    );

    let invalid = dir.join("invalid.toml");
    std::fs::write(&invalid, "allow = [\"admin_*\"]\n").unwrap();
    let (code, stderr) = run(nodefleet().args(["policy", "check"]).arg(&invalid)).await;
    assert_eq!(code, 1);
    assert_one_line_error(&stderr, "unsafe_allow");

    let valid = dir.join("valid.toml");
    std::fs::write(&valid, "tiers = [\"trace\"]\n").unwrap();
    let output = nodefleet()
        .args(["policy", "check"])
        .arg(&valid)
        .args(["trace_block", "admin_peers"])
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("trace_block: allow") && stdout.contains("admin_peers: deny"),
        "{stdout}"
    );
}

/// Reads stdout lines until one contains `needle`; returns it.
async fn line_with(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    needle: &str,
) -> String {
    support::line_with(lines, needle, Duration::from_secs(120)).await
}

fn spawn_with_stdout(
    command: &mut Command,
) -> (
    Child,
    tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

#[tokio::test]
async fn gateway_serves_the_policy_in_front_of_an_upstream() {
    let node = RecordingNode::start().await;
    let (mut child, mut lines) = spawn_with_stdout(
        nodefleet()
            .args([
                "gateway",
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                &node.url(),
            ])
            .env("RUST_LOG", "warn"),
    );
    let line = line_with(&mut lines, "listening on").await;
    let url = line.rsplit(' ').next().unwrap().to_owned();
    let answer = post(&url, r#"[{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"},{"jsonrpc":"2.0","id":2,"method":"debug_setHead","params":["0x0"]}]"#).await;
    let items = answer.json();
    assert_eq!(items[0], json!({"jsonrpc":"2.0","id":1,"result":"0x10"}));
    assert_eq!(items[1]["error"]["code"], -32601);
    assert_eq!(node.methods(), ["eth_blockNumber"]);
    child.kill().await.unwrap();
}

fn pid_alive(pid: i32) -> bool {
    // A zombie still answers kill(0); read the state instead.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| stat.split(' ').nth(2).is_none_or(|state| state != "Z"))
        .unwrap_or(false)
}

#[tokio::test]
async fn up_serves_through_the_gateway_survives_a_killed_node_and_stops_cleanly() {
    let dir = temp_dir("up");
    let (mut child, mut lines) = spawn_with_stdout(
        nodefleet()
            .args([
                "up",
                "--nodes",
                "3",
                "--listen",
                "127.0.0.1:0",
                "--console",
                "127.0.0.1:0",
                "--no-install",
                "--dir",
            ])
            .arg(dir.join("state"))
            .env("NODEFLEET_ANVIL", anvil::binary()),
    );
    let line = line_with(&mut lines, "JSON-RPC at").await;
    let url = line.rsplit(' ').next().unwrap().to_owned();
    let mut pids = Vec::new();
    for _ in 0..3 {
        let line = line_with(&mut lines, " pid ").await;
        pids.push(line.rsplit(' ').next().unwrap().parse::<i32>().unwrap());
    }
    assert!(pids.iter().all(|&pid| pid_alive(pid)));

    let chain_id = post(&url, r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}"#)
        .await
        .json();
    assert_eq!(chain_id["result"], "0x7a69", "anvil's chain id 31337");
    let denied = post(
        &url,
        r#"{"jsonrpc":"2.0","id":2,"method":"anvil_setBalance","params":[]}"#,
    )
    .await
    .json();
    assert_eq!(denied["error"]["code"], -32601);

    // Kill one node outright: reads keep succeeding, none fails.
    #[allow(unsafe_code)]
    // SAFETY: kill(2) on a pid this test started has no memory effects.
    unsafe {
        libc::kill(pids[0], libc::SIGKILL);
    }
    for i in 0..30 {
        let answer = post(
            &url,
            format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"eth_blockNumber"}}"#),
        )
        .await
        .json();
        assert!(
            answer["result"]
                .as_str()
                .is_some_and(|r| r.starts_with("0x")),
            "read {i} failed: {answer}"
        );
    }

    // Ctrl-C: the command exits 0 and no node is left.
    #[allow(unsafe_code)]
    // SAFETY: as above.
    unsafe {
        libc::kill(child.id().unwrap() as i32, libc::SIGINT);
    }
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    for pid in &pids[1..] {
        assert!(!pid_alive(*pid), "node pid {pid} left behind");
    }
    assert!(dir.join("state/gateway.log").exists());
}
