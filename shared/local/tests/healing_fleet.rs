//! `HealingFleet`: the reactor's reconcile over the local adapters. A fresh state each run
//! (an earlier run's records and keys are gone, a folder in use is refused), and with real
//! anvil nodes: the fleet fills itself, a node killed outright is replaced by the loop alone,
//! the routes and the status file follow, and shutting down leaves no process behind.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nodefleet_local::healing::{
    DEFAULT_NODES, DEFAULT_ZONES, FleetError, RESUMED_EVENT, STATE_FILE, TASKS_DIR, fleet_config,
};
use nodefleet_local::scheduler::NodeCommand;
use nodefleet_local::status::process_start_time;
use nodefleet_local::{
    EmbeddedStateStore, FleetStatus, FleetView, HealingFleet, LocalFleetOptions, tools,
};
use nodefleet_ports::model::unique_suffix;
use nodefleet_ports::{
    AuditEvent, ControlState, NodeId, NodeRecord, NodeState, Role, StateStore, TaskId, Timestamp,
    Version, Zone,
};
use nodefleet_reactor::service::MEMORY_NAME;
use nodefleet_updater::round::{AbortReason, Round, RoundOutcome, Step, UpdaterMemory};
use nodefleet_updater::service::UPDATER_NAME;
use tokio::sync::watch;

/// A set of routes as the balancer is handed them: (node id, URL).
type Routes = Vec<(String, String)>;

/// Bound of every wait on the fleet: generous for a loaded two-core machine, where a
/// replacement normally takes about a second.
const WAIT: Duration = Duration::from_secs(60);

/// A fresh folder, removed when dropped.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("nodefleet-healing-{name}-{}", unique_suffix()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn options(dir: &TempDir, command: NodeCommand, nodes: u32) -> LocalFleetOptions {
    LocalFleetOptions {
        dir: dir.0.clone(),
        command,
        nodes: Some(nodes),
        zones: Some(3),
        gateway: "http://127.0.0.1:8545".into(),
        snapshot_interval: None,
    }
}

fn anvil() -> PathBuf {
    let tools = std::env::var_os(tools::TOOLS_DIR_ENV).map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../..")
                .join(tools::DEFAULT_TOOLS_DIR)
        },
        PathBuf::from,
    );
    match tools::find_anvil(&tools) {
        Ok(found) => found.path,
        Err(e) => panic!("{e}\n(the README's test command installs it: scripts/test.sh)"),
    }
}

/// A record of a node an earlier run had, naming its task (gone now).
fn old_record(id: &str, role: Role, now: Timestamp) -> NodeRecord {
    NodeRecord {
        id: NodeId::new(id),
        task: Some(TaskId::new(format!("task-of-{id}"))),
        zone: Zone::new("local-a"),
        target: None,
        role,
        state: NodeState::Serving,
        snapshot: None,
        created_at: now,
        updated_at: now,
        version: Version::NEW,
    }
}

#[tokio::test]
async fn open_resumes_an_earlier_runs_state_clears_what_died_with_it_and_refuses_a_folder_in_use() {
    let dir = TempDir::new("resume");
    let now = Timestamp::now();
    let old_owner = "nodefleet-up-4242";
    let reactor_memory = r#"{"budget":"kept as it is"}"#;
    {
        // What a killed run leaves: its config, records naming tasks that are gone, launch
        // keys that would make the new fleet skip `local-a-1`, the updater's lease, the
        // reactor's memory, its audit trail, a round waiting for its updater to sync, and a
        // task folder.
        let old = EmbeddedStateStore::open(dir.0.join(STATE_FILE)).unwrap();
        old.save_config(&fleet_config(3, 3)).await.unwrap();
        for record in [
            old_record("local-a-1", Role::Serving, now),
            old_record("local-b-1", Role::Serving, now),
            old_record("updater-0000001000000", Role::Updater, now),
        ] {
            old.save_node(&record).await.unwrap();
        }
        for key in ["launch/local-a-1#1", "replace/local-b-1/task-1/local-b#1"] {
            old.claim_idempotency_key(key, old_owner, WAIT * 10, now)
                .await
                .unwrap();
        }
        old.claim_idempotency_key("other/key", "someone-else", WAIT * 10, now)
            .await
            .unwrap();
        old.acquire_lease(UPDATER_NAME, old_owner, WAIT * 10, now)
            .await
            .unwrap();
        old.save_control_state(&ControlState {
            name: MEMORY_NAME.into(),
            body: reactor_memory.into(),
            updated_at: now,
            version: Version::NEW,
        })
        .await
        .unwrap();
        let waiting = UpdaterMemory {
            round: Some(Round {
                id: "r-0000001000000".into(),
                started_at: now,
                step: Step::WaitSynced,
                step_started_at: now,
                node: Some(NodeId::new("updater-0000001000000")),
                task: Some(TaskId::new("task-of-updater-0000001000000")),
                launched: true,
                chain: None,
                upload: None,
                abort: None,
                warnings: Vec::new(),
                step_millis: Vec::new(),
            }),
            last_started_at: Some(now),
            ..UpdaterMemory::default()
        };
        old.save_control_state(&ControlState {
            name: UPDATER_NAME.into(),
            body: serde_json::to_string(&waiting).unwrap(),
            updated_at: now,
            version: Version::NEW,
        })
        .await
        .unwrap();
        old.append_event(&AuditEvent::new(
            now,
            "reactor.launch",
            "local-a-1",
            "from the earlier run",
            WAIT * 100,
        ))
        .await
        .unwrap();
    }
    let old_task = dir.0.join(TASKS_DIR).join("task-of-local-a-1");
    std::fs::create_dir_all(&old_task).unwrap();

    // No shape given: the stored one.
    let command = NodeCommand::new("sh", ["-c", "exec sleep 1000"]);
    let resume = || LocalFleetOptions {
        nodes: None,
        zones: None,
        ..options(&dir, command.clone(), 3)
    };
    let fleet = HealingFleet::open(resume()).await.unwrap();
    let state = fleet.state();
    let later = Timestamp::now();
    let stored = state.get_config().await.unwrap().unwrap();
    assert_eq!(
        stored,
        nodefleet_ports::FleetConfig {
            version: Version(1),
            ..fleet_config(3, 3)
        },
        "kept as it was"
    );
    assert_eq!(fleet.config(), &stored);
    assert_eq!(fleet.desired().storm_share.numerator, 34);
    let resumed = fleet.resumed().unwrap().clone();
    assert_eq!((resumed.nodes, resumed.zones), (3, 3));
    assert!(!resumed.config_updated);

    // The records, the earlier runs' keys and leases are gone; the rest is kept.
    assert!(state.list_nodes().await.unwrap().is_empty());
    assert_eq!(
        resumed.records_cleared,
        ["local-a-1", "local-b-1", "updater-0000001000000"]
    );
    for key in ["launch/local-a-1#1", "replace/local-b-1/task-1/local-b#1"] {
        assert!(
            state
                .get_idempotency_key(key, later)
                .await
                .unwrap()
                .is_none(),
            "{key}"
        );
    }
    assert_eq!(resumed.keys_forgotten, 2);
    assert!(
        state
            .get_idempotency_key("other/key", later)
            .await
            .unwrap()
            .is_some(),
        "a key of another owner is left to expire"
    );
    assert_eq!(resumed.leases_released, [UPDATER_NAME]);
    assert!(
        state
            .get_lease(UPDATER_NAME, later)
            .await
            .unwrap()
            .is_none()
    );
    let memory = state.get_control_state(MEMORY_NAME).await.unwrap().unwrap();
    assert_eq!(memory.body, reactor_memory, "the reactor's memory is kept");
    // The round that waited for a dead updater ended at once, as a lost node.
    let updater = state
        .get_control_state(UPDATER_NAME)
        .await
        .unwrap()
        .unwrap();
    let updater: UpdaterMemory = serde_json::from_str(&updater.body).unwrap();
    assert_eq!(updater.round, None);
    let last = updater.last.unwrap();
    assert!(
        matches!(&last.outcome, RoundOutcome::Aborted(abort) if abort.reason == AbortReason::NodeLost),
        "{last:?}"
    );
    assert_eq!(
        resumed.round_ended.as_deref(),
        Some("r-0000001000000: aborted (node_lost)")
    );
    // The audit trail goes on: the earlier run's event, the round, the resume.
    let events = state
        .list_events(Timestamp::EPOCH, later, 100)
        .await
        .unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["reactor.launch", "snapshot.round_aborted", RESUMED_EVENT],
        "{events:#?}"
    );
    let detail: serde_json::Value = serde_json::from_str(&events[2].detail).unwrap();
    assert_eq!(detail["keys_forgotten"], 2);
    assert!(
        !old_task.exists(),
        "the earlier run's task folders are gone"
    );

    // The open fleet holds its state file: a second `up` on the folder is refused, and the
    // first one's state is untouched.
    let second = HealingFleet::open(resume()).await;
    assert!(
        matches!(second, Err(FleetError::InUse { .. })),
        "{second:?}"
    );
    assert!(state.get_config().await.unwrap().is_some());
    drop(fleet);

    // A shape given updates the stored config; nothing of the last open is left to clear.
    let grown = HealingFleet::open(LocalFleetOptions {
        nodes: Some(5),
        ..resume()
    })
    .await
    .unwrap();
    assert_eq!(
        grown.config(),
        &nodefleet_ports::FleetConfig {
            version: Version(2),
            ..fleet_config(5, 3)
        }
    );
    let resumed = grown.resumed().unwrap();
    assert!(resumed.config_updated);
    assert_eq!((resumed.nodes, resumed.zones), (5, 3));
    assert!(resumed.records_cleared.is_empty() && resumed.round_ended.is_none());
    drop(grown);

    let bad = HealingFleet::open(LocalFleetOptions {
        zones: Some(27),
        ..options(
            &TempDir::new("shape"),
            NodeCommand::new("sh", ["-c", "true"]),
            3,
        )
    })
    .await;
    assert!(matches!(bad, Err(FleetError::Shape(_))), "{bad:?}");
    // A new folder has no earlier run: nothing resumed, the default shape.
    let new = TempDir::new("new");
    let fresh = HealingFleet::open(LocalFleetOptions {
        nodes: None,
        zones: None,
        ..options(&new, NodeCommand::new("sh", ["-c", "true"]), 3)
    })
    .await
    .unwrap();
    assert!(fresh.resumed().is_none());
    assert_eq!(fresh.config().serving_nodes, DEFAULT_NODES);
    assert_eq!(fresh.config().zones.len(), DEFAULT_ZONES as usize);
}

/// Waits until `done` holds for the fleet's latest view; panics with the view after [`WAIT`].
async fn wait_view(
    fleet: &HealingFleet,
    what: &str,
    done: impl Fn(&FleetView) -> bool,
) -> FleetView {
    let mut views = fleet.views();
    let waited = matches!(
        tokio::time::timeout(
            WAIT,
            views.wait_for(|view| view.as_ref().is_some_and(&done))
        )
        .await,
        Ok(Ok(_))
    );
    let latest = views.borrow().clone();
    match latest {
        Some(view) if waited => view,
        latest => panic!("{what} not within {WAIT:?}; last view: {latest:#?}"),
    }
}

fn alive(pid: u32) -> bool {
    process_start_time(pid).is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_replaced_by_the_loop_and_shutting_down_leaves_nothing() {
    let dir = TempDir::new("anvil");
    let fleet = HealingFleet::open(options(&dir, NodeCommand::anvil(&anvil()), 3))
        .await
        .unwrap();
    let routes: Arc<Mutex<Vec<Routes>>> = Arc::default();
    let (stop, stopped) = watch::channel(false);
    let mut stopped_rx = stopped.clone();
    let shutdown = async move {
        let _ = stopped_rx.wait_for(|stop| *stop).await;
    };
    let seen = Arc::clone(&routes);
    let run = fleet.run(shutdown, move |r| seen.lock().unwrap().push(r.to_vec()));

    let test = async {
        // The first reconcile fills the fleet: one node per zone, all serving.
        let full = wait_view(&fleet, "three healthy nodes", |v| v.healthy() == 3).await;
        let zones: Vec<&str> = full.nodes.iter().map(|n| n.zone.as_str()).collect();
        assert_eq!(zones, ["local-a", "local-b", "local-c"]);
        let full = wait_view(&fleet, "three serving records", |v| {
            v.nodes.iter().all(|n| n.state == NodeState::Serving)
        })
        .await;
        assert_eq!(full.routes.len(), 3);
        let status = FleetStatus::read(&dir.0).unwrap();
        status.check_running(&dir.0, Timestamp::now()).unwrap();
        assert_eq!(status.healthy(), 3, "{status:?}");
        assert!(
            status
                .nodes
                .iter()
                .all(|n| n.pid.is_some() && n.head_block.is_some())
        );

        // Kill one node outright: the loop alone replaces it in its zone.
        let victim = full.nodes[1].clone();
        let (old_pid, old_task, old_url) = (
            victim.pid.unwrap(),
            victim.task.clone().unwrap(),
            victim.url().unwrap(),
        );
        let killed = Instant::now();
        let status = std::process::Command::new("kill")
            .args(["-9", &old_pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let back = wait_view(&fleet, "the killed node replaced", |v| {
            v.healthy() == 3
                && v.nodes
                    .iter()
                    .any(|n| n.id == victim.id && n.task.as_ref() != Some(&old_task))
        })
        .await;
        let replaced = Instant::now() - killed;
        assert_eq!(back.nodes.len(), 3, "{back:#?}");
        let node = back.nodes.iter().find(|n| n.id == victim.id).unwrap();
        assert_eq!(
            node.zone, victim.zone,
            "the deficit is in the zone that lost it"
        );
        assert_ne!(node.pid, Some(old_pid));
        assert!(alive(node.pid.unwrap()));
        assert!(!alive(old_pid));
        let urls: Vec<&str> = back.routes.iter().map(|r| r.url.as_str()).collect();
        assert!(!urls.contains(&old_url.as_str()), "{urls:?}");
        assert!(urls.contains(&node.url().unwrap().as_str()), "{urls:?}");
        // The balancer was handed the set without the dead node, then the one with its
        // replacement.
        let handed = routes.lock().unwrap().clone();
        let last = handed.last().unwrap();
        assert_eq!(last.len(), 3);
        assert!(
            handed
                .iter()
                .any(|set| set.len() == 2 && !set.iter().any(|(_, url)| *url == old_url))
        );
        let events = fleet
            .state()
            .list_events(Timestamp::EPOCH, Timestamp::now(), 100)
            .await
            .unwrap();
        let launches = events.iter().filter(|e| e.kind == "reactor.launch").count();
        assert_eq!(launches, 4, "three fills and one replacement: {events:#?}");
        eprintln!("replaced in {replaced:?}");
        back
    };
    let (back, ()) = tokio::join!(
        async {
            let back = test.await;
            let _ = stop.send(true);
            back
        },
        run
    );

    fleet.shut_down("test over").await;
    assert!(matches!(
        FleetStatus::read(&dir.0),
        Err(nodefleet_local::status::StatusError::Missing { .. })
    ));
    for node in &back.nodes {
        assert!(!alive(node.pid.unwrap()), "{} left running", node.id);
    }
}

/// Runs `fleet`'s loop until `test` is done, then stops the loop.
async fn while_running<T>(fleet: &HealingFleet, test: impl std::future::Future<Output = T>) -> T {
    let (stop, stopped) = watch::channel(false);
    let mut stopped_rx = stopped.clone();
    let shutdown = async move {
        let _ = stopped_rx.wait_for(|stop| *stop).await;
    };
    let run = fleet.run(shutdown, |_| {});
    let (out, ()) = tokio::join!(
        async {
            let out = test.await;
            let _ = stop.send(true);
            out
        },
        run
    );
    out
}

fn ids(view: &FleetView) -> Vec<String> {
    view.nodes.iter().map(|n| n.id.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_fills_the_fleet_again_with_the_same_node_ids_and_no_storm() {
    let dir = TempDir::new("resume-anvil");
    let first = HealingFleet::open(options(&dir, NodeCommand::anvil(&anvil()), 3))
        .await
        .unwrap();
    let before = while_running(&first, async {
        wait_view(&first, "three healthy nodes", |v| v.healthy() == 3).await
    })
    .await;
    first.shut_down("first run over").await;
    let pids: Vec<u32> = before.nodes.iter().map(|n| n.pid.unwrap()).collect();
    drop(first);
    for pid in &pids {
        assert!(!alive(*pid), "{pid} outlived its run");
    }

    // Resumed without a shape: the stored three nodes, the same ids, all healthy, and not
    // one storm alert (three lost records would have been one).
    let second = HealingFleet::open(LocalFleetOptions {
        nodes: None,
        zones: None,
        ..options(&dir, NodeCommand::anvil(&anvil()), 3)
    })
    .await
    .unwrap();
    assert_eq!(
        second.resumed().unwrap().records_cleared,
        ids(&before),
        "the first run's records are cleared"
    );
    let after = while_running(&second, async {
        wait_view(&second, "three healthy nodes again", |v| v.healthy() == 3).await
    })
    .await;
    assert_eq!(ids(&after), ids(&before));
    assert!(after.nodes.iter().all(|n| !pids.contains(&n.pid.unwrap())));
    let events = second
        .state()
        .list_events(Timestamp::EPOCH, Timestamp::now(), 1_000)
        .await
        .unwrap();
    let resumed_at = events.iter().position(|e| e.kind == RESUMED_EVENT).unwrap();
    let launches = |events: &[nodefleet_ports::AuditEvent]| {
        events.iter().filter(|e| e.kind == "reactor.launch").count()
    };
    assert_eq!(launches(&events[..resumed_at]), 3, "the first run's fills");
    assert_eq!(launches(&events[resumed_at..]), 3, "the second run's fills");
    assert!(
        !events.iter().any(|e| e.kind.starts_with("reactor.alert")),
        "{events:#?}"
    );
    second.shut_down("test over").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_zones_nodes_move_to_the_other_zones_and_come_back_after_a_restore() {
    let dir = TempDir::new("fail-zone");
    let fleet = HealingFleet::open(options(&dir, NodeCommand::anvil(&anvil()), 3))
        .await
        .unwrap();
    let lost_zone = Zone::new("local-b");
    let in_zone = |view: &FleetView, zone: &Zone| {
        view.nodes
            .iter()
            .filter(|n| &n.zone == zone && n.healthy)
            .count()
    };
    let unknown = Zone::new("local-q");
    assert!(matches!(
        fleet.fail_zone(&unknown).await,
        Err(nodefleet_local::healing::ChaosError::UnknownZone { .. })
    ));
    while_running(&fleet, async {
        let full = wait_view(&fleet, "three healthy nodes", |v| v.healthy() == 3).await;
        let victim = full
            .nodes
            .iter()
            .find(|n| n.zone == lost_zone)
            .unwrap()
            .clone();

        // The zone fails: its node is lost, its replacement lands in another zone.
        let killed = fleet.fail_zone(&lost_zone).await.unwrap();
        assert_eq!(killed, [victim.task.clone().unwrap()]);
        assert!(!alive(victim.pid.unwrap()));
        assert_eq!(fleet.failed_zones(), std::slice::from_ref(&lost_zone));
        let moved = wait_view(&fleet, "the lost node replaced elsewhere", |v| {
            v.healthy() == 3 && in_zone(v, &lost_zone) == 0
        })
        .await;
        let replaced = moved.nodes.iter().find(|n| n.id == victim.id).unwrap();
        assert_ne!(replaced.task, victim.task);
        let lost = moved
            .tasks
            .iter()
            .find(|t| Some(&t.id) == victim.task.as_ref())
            .unwrap();
        assert_eq!(
            lost.stop_reason.as_deref(),
            Some("lost: zone local-b failed (chaos)")
        );
        let status = FleetStatus::read(&dir.0).unwrap();
        assert_eq!(status.failed_zones, ["local-b"]);

        // Restored: the next node lost goes back to the zone with the deficit.
        assert!(fleet.restore_zone(&lost_zone).await.unwrap());
        assert!(fleet.failed_zones().is_empty());
        let pid = replaced.pid.unwrap();
        let status = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let back = wait_view(&fleet, "a node back in the restored zone", |v| {
            v.healthy() == 3 && in_zone(v, &lost_zone) == 1
        })
        .await;
        assert_eq!(
            back.nodes.iter().find(|n| n.zone == lost_zone).unwrap().id,
            victim.id
        );
        let status = FleetStatus::read(&dir.0).unwrap();
        assert!(status.failed_zones.is_empty(), "{status:?}");
    })
    .await;
    let events = fleet
        .state()
        .list_events(Timestamp::EPOCH, Timestamp::now(), 1_000)
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
            ("chaos.zone_failed", "local-b"),
            ("chaos.zone_restored", "local-b")
        ]
    );
    let restored: serde_json::Value = serde_json::from_str(
        &events
            .iter()
            .find(|e| e.kind == "chaos.zone_restored")
            .unwrap()
            .detail,
    )
    .unwrap();
    assert_eq!(restored["was_failed"], true);
    assert_eq!(restored["backoff_forgiven"], true);
    fleet.shut_down("test over").await;
}
