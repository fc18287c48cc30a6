//! The local console's status page in a real headless browser: `nodefleet up --console`
//! serves it, and `tests/browser/status_page.mjs` (playwright-core driving Debian's chromium)
//! checks that it renders the fleet and that a node killed outright shows as unhealthy (or
//! lost) and then replaced, with its charts and events, without the page reloading.
//!
//! The browser and playwright-core come from `scripts/browser.sh install` (scripts/test.sh
//! runs it); without them this test fails and says so: it is never skipped.
//! `NODEFLEET_SCREENSHOT=path.png` makes the script save a full-page screenshot.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

mod support;

use support::{all_healthy, interrupt, spawn_up_with, temp_dir, wait_status};

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

/// Bound of the waits on the fleet: its start with one snapshot round (a few seconds on an
/// idle machine), for a loaded two-core CI machine.
const WAIT: Duration = Duration::from_secs(120);
/// Bound of the browser script, which bounds itself at 180 s: this only catches a hung node.
const SCRIPT_RUN: Duration = Duration::from_secs(240);

/// The repository's root (the script and `scripts/browser.sh` are found from it).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Fails the test, saying what to run, unless chromium and playwright-core are installed.
async fn require_browser(root: &Path) {
    let check = Command::new("bash")
        .arg("scripts/browser.sh")
        .arg("check")
        .current_dir(root)
        .output()
        .await
        .unwrap();
    assert!(
        check.status.success(),
        "the status page's browser test needs chromium and playwright-core: run scripts/browser.sh install\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_a_killed_node_unhealthy_then_replaced_without_reloading() {
    let root = repo_root();
    require_browser(&root).await;
    let dir = temp_dir("page", "kill");
    // One snapshot round (the first starts at once; the next is an hour away), so the page
    // has a snapshot timeline and an updater to show, and the replacement hydrates from it.
    // `spawn_up_with` gives `up` its console on an ephemeral port.
    let (mut up, _lines) = spawn_up_with(&dir, 3, &["--snapshot-interval-secs", "3600"]);
    let status = wait_status(
        &dir,
        "three healthy nodes, a published snapshot and the console",
        WAIT,
        |s| all_healthy(s, 3) && s["latest_snapshot"].is_string() && s["console"].is_string(),
    )
    .await;
    let url = status["console"].as_str().unwrap().to_owned();

    let run = Command::new("node")
        .arg("tests/browser/status_page.mjs")
        .arg(&url)
        .current_dir(&root)
        .env("NODEFLEET_BROWSER_TOOLS", root.join("tools/browser"))
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(SCRIPT_RUN, run)
        .await
        .expect("the browser script hung")
        .expect("node runs (scripts/browser.sh install brings it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "the status page test failed ({}) against {url}:\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("status page: ok"), "{stdout}");

    // The fleet agrees with what the page showed: three healthy nodes again.
    wait_status(&dir, "three healthy nodes after the kill", WAIT, |s| {
        all_healthy(s, 3)
    })
    .await;
    interrupt(&mut up, WAIT).await;
}
