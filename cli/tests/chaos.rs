//! `nodefleet chaos`, end to end: for every chaos action a fleet of three nodes over three
//! zones, clients reading steadily through the gateway all along, the action run as the real
//! CLI, and the fleet back to full health by itself within a stated bound, with no failed
//! read (a zone failure: at most [`FAIL_ZONE_MAX_FAILED_READS`]).
//!
//! - `kill-node` (without and with an ID): the node's process is killed outright; a new
//!   process takes its place in its zone.
//! - `stall-node ID`: the node stops producing blocks while its process lives; its health
//!   check fails once its head is older than the local max head age, it is replaced, and
//!   its old process is stopped only after the replacement is healthy.
//! - `fail-zone ZONE` then `restore-zone ZONE` (through the console's control API, so these
//!   need the console `up` serves): the zone's node is lost and replaced in another zone (a launch
//!   into the failed zone fails with a capacity error first); after the restore, the next
//!   node lost comes back to the restored zone, the one with the deficit.
//!
//! The fleets run one at a time ([`ONE_FLEET`]): each is six processes (three agents and
//! their anvils) on a two-core machine, and a stall is judged on seconds.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

mod support;

use support::{SteadyReads, alive, all_healthy, nodes, run_in, spawn_up, spawn_up_with};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nodefleet_local::EmbeddedStateStore;
use nodefleet_local::healing::STATE_FILE;
use nodefleet_local::node::{LOCAL_BLOCK_TIME_SECS, LOCAL_MAX_HEAD_AGE};
use nodefleet_ports::{StateStore, Timestamp};
use serde_json::Value;
use tokio::io::BufReader;
use tokio::process::{Child, ChildStdout};

/// Bound of the start-up (three agents, their anvils, the first checks) on a loaded
/// two-core CI machine; it takes a few seconds on an idle one.
const START: Duration = Duration::from_secs(60);
/// Bound of a heal after a node is lost (killed, or lost with its zone): the loop sees the
/// exit within a tenth of a second, the replacement's agent starts anvil in under a second
/// and passes its first check, a heal takes 1 to 3 s on an idle machine; ten times that for
/// a loaded two-core CI machine.
const HEAL: Duration = Duration::from_secs(30);
/// Bound of a heal after a stall: the stall is seen only once the head is older than the
/// local max head age, then it heals like a lost node.
const STALL_HEAL: Duration = Duration::from_secs(LOCAL_MAX_HEAD_AGE.as_secs() + HEAL.as_secs());
/// Clients reading through the gateway during each action.
const CLIENTS: usize = 2;
/// Reads the clients must have made for a run to count as steady traffic: a few seconds'
/// worth at one read per client every 15 ms.
const MIN_READS: usize = 100;
/// The failed reads a zone failure may cost. The reads in flight when the zone's node is
/// killed are at most [`CLIENTS`] (each client sends its next read once the last is
/// answered). The gateway's balancer sends a read whose connection is refused or breaks
/// before an answer to the next node (`nodefleet_gateway::balancer`: a killed node's
/// connection is reset, which is `ConnectionLost`, retried for reads), and the other
/// zones' nodes are up, so none of those reads fails: the bound is zero. Only a write (never
/// resent) or a fleet with no other node up could lose one.
const FAIL_ZONE_MAX_FAILED_READS: usize = 0;

/// One fleet at a time in this file (see the module doc).
static ONE_FLEET: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn temp_dir(name: &str) -> PathBuf {
    support::temp_dir("chaos", name)
}

/// Waits for the banner; the gateway's URL.
async fn gateway_url(lines: &mut tokio::io::Lines<BufReader<ChildStdout>>) -> String {
    let line = support::line_with(lines, "JSON-RPC at", START * 2).await;
    line.rsplit(' ').next().unwrap().to_owned()
}

/// Three healthy serving nodes, one per zone.
async fn full_fleet(dir: &Path) -> Value {
    let status = support::wait_status(dir, "three healthy serving nodes", START, |s| {
        all_healthy(s, 3) && nodes(s).iter().all(|n| n["state"] == "serving")
    })
    .await;
    let zones: Vec<&str> = nodes(&status)
        .iter()
        .map(|n| n["zone"].as_str().unwrap())
        .collect();
    assert_eq!(zones, ["local-a", "local-b", "local-c"]);
    status
}

/// The node of `status` with id `id`.
fn node<'a>(status: &'a Value, id: &str) -> &'a Value {
    nodes(status).iter().find(|n| n["id"] == id).unwrap()
}

fn str_of<'a>(node: &'a Value, field: &str) -> &'a str {
    node[field].as_str().unwrap()
}

/// `nodefleet chaos <args> --dir DIR`; panics unless it exits 0; its stdout.
async fn chaos(dir: &Path, args: &[&str]) -> String {
    let mut all = vec!["chaos"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = run_in(dir, &all).await;
    assert_eq!(code, 0, "chaos {args:?}: {stdout}{stderr}");
    stdout
}

/// Waits until node `id` runs a task other than `old_task` and the fleet is whole again.
async fn healed(dir: &Path, id: &str, old_task: &str, within: Duration) -> Value {
    support::wait_status(dir, &format!("{id} replaced, three healthy"), within, |s| {
        all_healthy(s, 3)
            && nodes(s)
                .iter()
                .any(|n| n["id"] == id && n["task"] != old_task)
    })
    .await
}

/// The loop's log lines (target `nodefleet::fleet`) so far.
fn fleet_log(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("reactor.log"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["target"] == "nodefleet::fleet")
        .collect()
}

/// Asserts the clients read steadily and at most `max_failed` reads failed.
fn assert_reads(reads: &support::Reads, max_failed: usize, during: &str) {
    assert!(
        reads.failures.len() <= max_failed,
        "{during}: {} failed reads (at most {max_failed}): {:#?}",
        reads.failures.len(),
        reads.failures
    );
    assert!(
        reads.ok >= MIN_READS,
        "{during}: the clients read steadily: only {} reads",
        reads.ok
    );
}

/// Stops `up` with Ctrl-C, and checks it left none of `status`'s node processes.
async fn stop(mut up: Child, status: &Value) {
    support::interrupt(&mut up, START).await;
    for node in nodes(status) {
        let pid = node["pid"].as_u64().unwrap();
        assert!(!alive(pid), "{node} left behind");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_node_is_healed_by_the_fleet_itself_and_no_read_fails() {
    let _one = ONE_FLEET.lock().await;
    let dir = temp_dir("kill");
    let (up, mut lines) = spawn_up(&dir, 3);
    let url = gateway_url(&mut lines).await;
    let before = full_fleet(&dir).await;
    let reads = SteadyReads::start(&url, CLIENTS);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Without an ID: a healthy serving node is picked, and named.
    let said = chaos(&dir, &["kill-node"]).await;
    let picked = said
        .strip_prefix("killed node ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("which node? {said}"))
        .to_owned();
    let victim = node(&before, &picked).clone();
    let killed = Instant::now();
    assert!(said.contains(&format!("pid {}", victim["pid"])), "{said}");
    let after = healed(&dir, &picked, str_of(&victim, "task"), HEAL).await;
    let first_heal = killed.elapsed();
    assert!(!alive(victim["pid"].as_u64().unwrap()));
    assert_eq!(
        node(&after, &picked)["zone"],
        victim["zone"],
        "replaced in its own zone"
    );

    // With an ID: that node.
    let second = nodes(&after)
        .iter()
        .find(|n| n["id"] != picked.as_str())
        .unwrap()
        .clone();
    let id = str_of(&second, "id");
    let said = chaos(&dir, &["kill-node", id]).await;
    assert!(said.starts_with(&format!("killed node {id} ")), "{said}");
    let killed = Instant::now();
    let last = healed(&dir, id, str_of(&second, "task"), HEAL).await;
    let second_heal = killed.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reads = reads.stop().await;
    assert_reads(&reads, 0, "kill-node");

    // Refusals: a node the fleet does not have, and no fleet at all.
    let (code, _, stderr) = run_in(&dir, &["chaos", "kill-node", "local-q-9"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("no serving node local-q-9"), "{stderr}");
    let elsewhere = temp_dir("kill-nothing");
    let (code, _, stderr) = run_in(&elsewhere, &["chaos", "kill-node"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("no nodefleet up is running"), "{stderr}");

    eprintln!(
        "kill-node healed in {first_heal:?} and {second_heal:?}; {} reads, none failed",
        reads.ok
    );
    stop(up, &last).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_node_is_replaced_and_stopped_once_its_replacement_is_healthy() {
    let _one = ONE_FLEET.lock().await;
    let dir = temp_dir("stall");
    let (up, mut lines) = spawn_up(&dir, 3);
    let url = gateway_url(&mut lines).await;
    let before = full_fleet(&dir).await;
    let reads = SteadyReads::start(&url, CLIENTS);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let victim = nodes(&before)[1].clone();
    let (id, old_task, old_pid) = (
        str_of(&victim, "id").to_owned(),
        str_of(&victim, "task").to_owned(),
        victim["pid"].as_u64().unwrap(),
    );
    let node_addr = str_of(&victim, "url")
        .strip_prefix("http://")
        .unwrap()
        .parse()
        .unwrap();
    let said = chaos(&dir, &["stall-node", &id]).await;
    let stalled = Instant::now();
    assert!(said.starts_with(&format!("stalled node {id} ")), "{said}");

    // Its chain stands still while its process lives.
    let head = nodefleet_local::node::block_number(node_addr)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        nodefleet_local::node::block_number(node_addr).await,
        Some(head),
        "no block since the stall"
    );
    assert!(alive(old_pid), "the stalled node's process runs on");

    let after = healed(&dir, &id, &old_task, STALL_HEAL).await;
    let heal = stalled.elapsed();
    // Block timestamps are whole seconds and the last block came less than a block time
    // before the stall, so the head is too old from the max head age less one block time on.
    let earliest = LOCAL_MAX_HEAD_AGE - Duration::from_secs(u64::from(LOCAL_BLOCK_TIME_SECS));
    assert!(
        heal >= earliest,
        "replaced after {heal:?}, before its head could be too old"
    );
    assert_eq!(node(&after, &id)["zone"], victim["zone"]);
    let new_task = str_of(node(&after, &id), "task").to_owned();
    // Its old process is stopped, by the reactor (not killed by anything else)...
    let deadline = Instant::now() + HEAL;
    while alive(old_pid) {
        assert!(
            Instant::now() < deadline,
            "the stalled node {old_pid} still runs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reads = reads.stop().await;
    assert_reads(&reads, 0, "stall-node");

    // ... and only after its replacement was healthy. The log says when each happened.
    let log = fleet_log(&dir);
    let replaced_for_health = log.iter().any(|e| {
        e["event"] == "action"
            && e["action"] == "launch"
            && e["node"] == id.as_str()
            && e["outcome"] == "done"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("Unhealthy past grace"))
    });
    assert!(replaced_for_health, "{log:#?}");
    let ready_at = log
        .iter()
        .find(|e| e["event"] == "node_ready" && e["task"] == new_task.as_str())
        .and_then(|e| e["at_ms"].as_u64())
        .unwrap();
    let exit = log
        .iter()
        .find(|e| e["event"] == "task_exit" && e["task"] == old_task.as_str())
        .unwrap();
    assert!(
        exit["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("stopped by the scheduler: ")),
        "{exit}"
    );
    let stopped_at = exit["stopped_at_ms"].as_u64().unwrap();
    assert!(
        ready_at <= stopped_at,
        "stopped at {stopped_at}, before its replacement was ready at {ready_at}"
    );

    eprintln!(
        "stall-node healed in {heal:?} (max head age {LOCAL_MAX_HEAD_AGE:?}); {} reads, none failed",
        reads.ok
    );
    stop(up, &after).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_zones_node_moves_to_the_other_zones_and_a_restored_zone_takes_nodes_again() {
    let _one = ONE_FLEET.lock().await;
    let dir = temp_dir("zone");
    let (up, mut lines) = spawn_up_with(&dir, 3, &["--snapshot-interval-secs", "0"]);
    let url = gateway_url(&mut lines).await;
    let before = full_fleet(&dir).await;
    let lost_zone = "local-b";
    let victim = nodes(&before)
        .iter()
        .find(|n| n["zone"] == lost_zone)
        .unwrap()
        .clone();
    let (id, old_task, old_pid) = (
        str_of(&victim, "id").to_owned(),
        str_of(&victim, "task").to_owned(),
        victim["pid"].as_u64().unwrap(),
    );

    // Fail the zone mid-traffic: its node is lost and comes back in another zone.
    let reads = SteadyReads::start(&url, CLIENTS);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let said = chaos(&dir, &["fail-zone", lost_zone]).await;
    let failed = Instant::now();
    assert!(said.starts_with("zone local-b failed: "), "{said}");
    assert!(said.contains(&old_task), "{said}");
    assert!(
        !alive(old_pid),
        "the zone's node is gone when the command returns"
    );
    let moved = support::wait_status(&dir, "the lost node replaced in another zone", HEAL, |s| {
        all_healthy(s, 3)
            && s["failed_zones"] == serde_json::json!([lost_zone])
            && nodes(s).iter().all(|n| n["zone"] != lost_zone)
            && nodes(s)
                .iter()
                .any(|n| n["id"] == id.as_str() && n["task"] != old_task.as_str())
    })
    .await;
    let fail_heal = failed.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during_failure = reads.stop().await;
    assert_reads(&during_failure, FAIL_ZONE_MAX_FAILED_READS, "fail-zone");

    let log = fleet_log(&dir);
    let exit = log
        .iter()
        .find(|e| e["event"] == "task_exit" && e["task"] == old_task.as_str())
        .unwrap();
    assert_eq!(exit["reason"], "lost: zone local-b failed (chaos)");
    // The reactor tried the zone with the deficit, was told it has no capacity, and moved on.
    let launches: Vec<&Value> = log
        .iter()
        .filter(|e| e["event"] == "action" && e["action"] == "launch" && e["node"] == id.as_str())
        .collect();
    assert!(
        launches
            .iter()
            .any(|e| e["zone"] == lost_zone && e["outcome"] == "failed"),
        "{launches:#?}"
    );
    assert!(
        launches
            .iter()
            .any(|e| e["zone"] != lost_zone && e["outcome"] == "done"),
        "{launches:#?}"
    );
    let (table_code, table, _) = support::status(&dir, false).await;
    assert_eq!(table_code, 0);
    assert!(table.contains("failed zones (chaos): local-b"), "{table}");

    // Restore it; the next node lost goes back to it.
    let reads = SteadyReads::start(&url, CLIENTS);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let said = chaos(&dir, &["restore-zone", lost_zone]).await;
    assert!(said.starts_with("zone local-b restored"), "{said}");
    support::wait_status(&dir, "no zone failed", HEAL, |s| {
        s["failed_zones"] == serde_json::json!([])
    })
    .await;
    let moved_node = node(&moved, &id).clone();
    chaos(&dir, &["kill-node", &id]).await;
    let killed = Instant::now();
    let back = support::wait_status(&dir, "a node back in the restored zone", HEAL, |s| {
        all_healthy(s, 3)
            && nodes(s)
                .iter()
                .any(|n| n["id"] == id.as_str() && n["zone"] == lost_zone)
    })
    .await;
    let restore_heal = killed.elapsed();
    assert_ne!(node(&back, &id)["task"], moved_node["task"]);
    let zones: Vec<&str> = nodes(&back).iter().map(|n| str_of(n, "zone")).collect();
    assert_eq!(
        zones,
        ["local-a", "local-b", "local-c"],
        "one per zone again"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_restore = reads.stop().await;
    assert_reads(&after_restore, 0, "restore-zone and a kill");

    // A zone the fleet does not have is refused, and nothing changes.
    let (code, _, stderr) = run_in(&dir, &["chaos", "fail-zone", "local-q"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("local-q"), "{stderr}");

    eprintln!(
        "fail-zone healed in {fail_heal:?} with {} failed reads of {}; after restore-zone a kill \
         healed in {restore_heal:?} back in {lost_zone}",
        during_failure.failures.len(),
        during_failure.ok + during_failure.failures.len()
    );
    stop(up, &back).await;

    // The audit trail has both actions.
    let state = EmbeddedStateStore::open(dir.join(STATE_FILE)).unwrap();
    let events = state
        .list_events(Timestamp::EPOCH, Timestamp::now(), 10_000)
        .await
        .unwrap();
    let chaos: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e.kind.starts_with("chaos."))
        .map(|e| (e.kind.as_str(), e.subject.as_str()))
        .collect();
    assert_eq!(
        chaos,
        [
            ("chaos.zone_failed", lost_zone),
            ("chaos.zone_restored", lost_zone)
        ]
    );
}
