//! `HealingFleet`: the reactor's reconcile over the local adapters. A fresh state each run
//! (an earlier run's records and keys are gone, a folder in use is refused), and with real
//! anvil nodes: the fleet fills itself, a node killed outright is replaced by the loop alone,
//! the routes and the status file follow, and shutting down leaves no process behind.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nodefleet_local::healing::{FleetError, STATE_FILE, TASKS_DIR, fleet_config};
use nodefleet_local::scheduler::NodeCommand;
use nodefleet_local::status::process_start_time;
use nodefleet_local::{
    EmbeddedStateStore, FleetStatus, FleetView, HealingFleet, LocalFleetOptions, tools,
};
use nodefleet_ports::model::unique_suffix;
use nodefleet_ports::{
    NodeId, NodeRecord, NodeState, Role, StateStore, TaskId, Timestamp, Version, Zone,
};
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
        nodes,
        zones: 3,
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

#[tokio::test]
async fn open_discards_an_earlier_runs_state_and_refuses_a_folder_in_use() {
    let dir = TempDir::new("fresh");
    let now = Timestamp::now();
    {
        // What a killed run leaves: a record naming a task that is gone, a launch key that
        // would make the new fleet skip `local-a-1`, and a task folder.
        let old = EmbeddedStateStore::open(dir.0.join(STATE_FILE)).unwrap();
        old.save_node(&NodeRecord {
            id: NodeId::new("local-a-1"),
            task: Some(TaskId::new("task-of-a-dead-run")),
            zone: Zone::new("local-a"),
            target: None,
            role: Role::Serving,
            state: NodeState::Serving,
            snapshot: None,
            created_at: now,
            updated_at: now,
            version: Version::NEW,
        })
        .await
        .unwrap();
        old.claim_idempotency_key("launch/local-a-1", "old-up", WAIT * 10, now)
            .await
            .unwrap();
    }
    let old_task = dir.0.join(TASKS_DIR).join("task-of-a-dead-run");
    std::fs::create_dir_all(&old_task).unwrap();

    let command = NodeCommand::new("sh", ["-c", "exec sleep 1000"]);
    let fleet = HealingFleet::open(options(&dir, command.clone(), 3))
        .await
        .unwrap();
    let state = fleet.state();
    assert!(state.list_nodes().await.unwrap().is_empty());
    assert!(
        state
            .get_idempotency_key("launch/local-a-1", now)
            .await
            .unwrap()
            .is_none()
    );
    let stored = state.get_config().await.unwrap().unwrap();
    assert_eq!(
        stored,
        nodefleet_ports::FleetConfig {
            version: Version(1),
            ..fleet_config(3, 3)
        }
    );
    assert_eq!(fleet.config(), &stored);
    assert_eq!(fleet.desired().zones, fleet_config(3, 3).zones);
    assert_eq!(fleet.desired().storm_share.numerator, 34);
    assert!(
        !old_task.exists(),
        "the earlier run's task folders are gone"
    );

    // The open fleet holds its state file: a second `up` on the folder is refused, and the
    // first one's state is untouched.
    let second = HealingFleet::open(options(&dir, command, 3)).await;
    assert!(
        matches!(second, Err(FleetError::InUse { .. })),
        "{second:?}"
    );
    assert!(state.get_config().await.unwrap().is_some());

    let bad = HealingFleet::open(LocalFleetOptions {
        zones: 27,
        ..options(
            &TempDir::new("shape"),
            NodeCommand::new("sh", ["-c", "true"]),
            3,
        )
    })
    .await;
    assert!(matches!(bad, Err(FleetError::Shape(_))), "{bad:?}");
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
