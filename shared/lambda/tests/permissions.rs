//! `permissions::port_calls` against each principal's code, on fakes: the code runs behind
//! the ports' counting wrappers (`nodefleet_ports::faults`, no rules) through scenarios that
//! take its paths, and then every port method it called must be declared (the hard
//! requirement: an undeclared call would be an IAM denial in production), and every
//! declared method must have been called (so the role is granted nothing its code does not
//! use).
//!
//! - health reactor: `reactor::handle_event` over several minutes of a six-node fleet that
//!   is seeded, filled, registered, loses a node and has a target turn unhealthy (so it
//!   launches, registers, deregisters and stops), with two invocations at once (so one finds
//!   the other's idempotency keys taken);
//! - snapshot updater: `updater::handle_event` through published rounds until retention
//!   prunes, and an updater task that dies (so the next round retires its channel), with
//!   the updater crate's in-process agent (`shared/updater/tests/support`, shared here by
//!   path so there is one such agent);
//! - agents: driving `nodefleet agent` needs a real client (anvil), so the agent's store
//!   calls are driven through the functions it calls: its hydration
//!   (`nodefleet_agent::hydrate::hydrate`), and on the updater node the snapshot engine's
//!   `create` (without publishing, as a channel upload; publishing, as `POST /snapshot`)
//!   and its channel reads and report writes.

#![allow(clippy::unwrap_used)]

#[path = "../../updater/tests/support/mod.rs"]
mod updater_world;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nodefleet_agent::hydrate::{Hydration, hydrate};
use nodefleet_lambda::env::Env;
use nodefleet_lambda::permissions::{Principal, port_calls};
use nodefleet_lambda::reactor::{ReactorEnv, handle_event as reactor_event};
use nodefleet_lambda::updater::handle_event as updater_event;
use nodefleet_local::EmbeddedStateStore;
use nodefleet_ports::fakes::{FakeScheduler, FakeTargetRegistry, MemoryObjectStore};
use nodefleet_ports::faults::{
    Faults, FaultyObjectStore, FaultyScheduler, FaultyStateStore, FaultyTargetRegistry,
    OBJECT_STORE_OPERATIONS, SCHEDULER_OPERATIONS, STATE_STORE_OPERATIONS,
    TARGET_REGISTRY_OPERATIONS,
};
use nodefleet_ports::{
    NODE_RPC_PORT, NetworkMode, ObjectStore, StateStore, Timestamp, target_for_task,
};
use nodefleet_reactor::reconcile::Ports;
use nodefleet_snapshot::catalog::Selector;
use nodefleet_snapshot::channel::{
    self, AgentPhase, Command, CommandAction, Report, ReportedHealth,
};
use nodefleet_snapshot::create::{CreateOptions, create};
use nodefleet_snapshot::format::ChainPoint;
use nodefleet_snapshot::profile;
use nodefleet_snapshot::progress::NoProgress;
use nodefleet_snapshot::restore::RestoreOptions;
use nodefleet_updater::round::UpdaterMemory;
use nodefleet_updater::service::UPDATER_NAME;
use serde_json::{Value, json};

/// The port methods counted since `baseline`, by port (every wrapper of a scenario shares
/// one `Faults`; the ports' method names are distinct, so the name says the port).
fn called_since(faults: &Faults, baseline: &BTreeMap<String, u64>) -> BTreeSet<String> {
    faults
        .called()
        .into_iter()
        .filter(|(operation, calls)| baseline.get(operation) != Some(calls))
        .map(|(operation, _)| operation)
        .collect()
}

/// Checks `called` against `port_calls(principal)` both ways.
fn check(principal: Principal, called: &BTreeSet<String>) {
    let declared = port_calls(principal);
    let ports = [
        ("StateStore", declared.state, STATE_STORE_OPERATIONS),
        ("Scheduler", declared.scheduler, SCHEDULER_OPERATIONS),
        (
            "TargetRegistry",
            declared.targets,
            TARGET_REGISTRY_OPERATIONS,
        ),
        ("ObjectStore", declared.objects, OBJECT_STORE_OPERATIONS),
    ];
    for method in called {
        let Some((port, declared, _)) = ports.iter().find(|(_, _, all)| all.contains(&&**method))
        else {
            panic!("{method} is no port method the wrappers know");
        };
        assert!(
            declared.contains(&method.as_str()),
            "{principal}'s code called {port}::{method}, which permissions::port_calls does \
             not declare for it: its role would be denied the call"
        );
    }
    for (port, declared, _) in ports {
        for method in declared {
            assert!(
                called.contains(*method),
                "permissions::port_calls declares {port}::{method} for {principal}, but its \
                 code never called it here (declare only what the code calls, or make the \
                 scenario reach it)"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// health reactor
// ---------------------------------------------------------------------------------------

/// When the reactor scenario starts.
const REACTOR_T0: Timestamp = Timestamp::from_millis(1_800_000_000_000);

fn reactor_env() -> ReactorEnv {
    let vars = [
        ("TABLE_NAME", "nodefleet-state"),
        ("FLEET_NAME", "mainnet"),
        ("CLUSTER", "nodefleet"),
        ("TASK_DEFINITION", "nodefleet-node:3"),
        (
            "TARGET_GROUP_ARN",
            "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/nodes/abc",
        ),
        // No stored config: the first invocation seeds it. Six nodes, so two failing ones
        // (a third) are no storm (34% is).
        ("SERVING_NODES", "6"),
        ("ZONES", "zone-a,zone-b,zone-c"),
        // A minute of grace, so the scenario judges nodes within a few minutes.
        ("GRACE_SECS", "60"),
    ];
    let var = |name: &str| {
        vars.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| (*value).to_owned())
    };
    ReactorEnv::from_env(Env::new(&var)).unwrap()
}

fn schedule_event() -> Value {
    json!({
        "version": "0", "id": "tick", "detail-type": "Scheduled Event", "source": "aws.events",
        "account": "123456789012", "time": "2027-01-15T08:00:00Z", "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/nodefleet-reactor"],
        "detail": {}
    })
}

#[tokio::test]
async fn the_health_reactor_calls_what_it_declares() {
    let env = reactor_env();
    let faults = Faults::new();
    let fake_scheduler = FakeScheduler::with_zones(["zone-a", "zone-b", "zone-c"], 4);
    let fake_registry = FakeTargetRegistry::healthy_after(0);
    let state = FaultyStateStore::new(EmbeddedStateStore::in_memory().unwrap(), faults.clone());
    let scheduler = FaultyScheduler::new(fake_scheduler.clone(), faults.clone());
    let registry = FaultyTargetRegistry::new(fake_registry.clone(), faults.clone());
    let ports = Ports {
        state: &state,
        scheduler: &scheduler,
        registry: &registry,
    };
    let event = schedule_event();
    let minute = |m: u64| REACTOR_T0.plus(Duration::from_secs(60 * m));
    let invoke = |owner: &'static str, at: Timestamp| {
        fake_scheduler.set_now(at);
        let settings = env.settings(owner);
        let event = &event;
        async move {
            reactor_event(ports, &settings, "mainnet", event, at, Instant::now())
                .await
                .unwrap()
        }
    };

    // Two invocations at once on an empty fleet: the config is seeded, six nodes are
    // launched once, and the loser of each claim reads the winner's key.
    let (first, second) = tokio::join!(invoke("req-1", minute(0)), invoke("req-2", minute(0)));
    assert_eq!(fake_scheduler.launches().len(), 6, "{first:?} {second:?}");
    // The tasks run: their targets are registered and the records adopt them.
    invoke("req-3", minute(1)).await;
    assert_eq!(fake_registry.registered().len(), 6);

    // Past grace, node 0's task is lost and node 1's target fails its health checks.
    let tasks = fake_scheduler.tasks();
    assert!(fake_scheduler.terminate(&tasks[0].id, "instance lost"));
    let failing = target_for_task(&tasks[1], NetworkMode::Bridge, NODE_RPC_PORT).unwrap();
    fake_registry.set_unhealthy(&failing, "Health checks failed");
    for at in 3..15 {
        invoke("req-later", minute(at)).await;
        if faults.calls("stop") > 0 && faults.calls("deregister") > 0 {
            break;
        }
    }
    assert!(
        faults.calls("stop") > 0 && faults.calls("deregister") > 0,
        "the scenario should replace both nodes, drain the lost one and stop the failing \
         one; called: {:?}",
        faults.called()
    );
    check(
        Principal::HealthReactor,
        &called_since(&faults, &BTreeMap::new()),
    );
}

// ---------------------------------------------------------------------------------------
// snapshot updater
// ---------------------------------------------------------------------------------------

/// The updater's memory, read past the counting wrapper.
async fn updater_memory(world: &updater_world::World) -> UpdaterMemory {
    let stored = world
        .state
        .inner()
        .get_control_state(UPDATER_NAME)
        .await
        .unwrap()
        .unwrap();
    serde_json::from_str(&stored.body).unwrap()
}

/// Lets the agent act, then hands `event` to the Lambda's handler, a second apart, until
/// `done` (at most 30 invocations).
async fn drive_until(
    world: &mut updater_world::World,
    event: &Value,
    done: impl Fn(&UpdaterMemory) -> bool,
) {
    let settings = updater_world::settings("permissions");
    for _ in 0..30 {
        world.agent_step().await;
        // Single invocations may fail (an agent told to be silent); the round recovers.
        let _ = updater_event(world.ports(), &settings, "test", event, world.now).await;
        world.advance(Duration::from_secs(1));
        if done(&updater_memory(world).await) {
            return;
        }
    }
    panic!(
        "not done after 30 invocations: {:#?}",
        updater_memory(world).await
    );
}

#[tokio::test]
async fn the_snapshot_updater_calls_what_it_declares() {
    let mut world = updater_world::World::new("permissions").await;
    // The world seeded a fleet config through the wrapper: not the updater's call.
    let baseline = world.faults.called();
    let start = json!({"action": "start-round"});
    let tick = json!({"action": "tick"});

    // Three rounds an hour apart: each publishes, the third's retention (two kept) prunes
    // the first snapshot.
    drive_until(&mut world, &start, |m| m.rounds_published == 1).await;
    for published in 2..=3 {
        world.advance(Duration::from_secs(3600));
        drive_until(&mut world, &tick, |m| m.rounds_published == published).await;
    }
    assert!(
        world.faults.calls("delete") > 0,
        "the third round should prune the first snapshot"
    );

    // The updater task dies mid-round: the round aborts, and the next one launches a new
    // updater after retiring the old one's record and channel.
    world.advance(Duration::from_secs(3600));
    drive_until(&mut world, &tick, |m| {
        m.round.as_ref().is_some_and(|r| r.task.is_some())
    })
    .await;
    let task = updater_memory(&world).await.round.unwrap().task.unwrap();
    world.agent.silent = true;
    assert!(world.fake_scheduler.terminate(&task, "instance lost"));
    drive_until(&mut world, &tick, |m| m.round.is_none()).await;
    world.agent.silent = false;
    world.agent.restart();
    world.advance(Duration::from_secs(3600));
    drive_until(&mut world, &tick, |m| m.rounds_published == 4).await;
    assert_eq!(world.fake_scheduler.launches().len(), 2);

    check(
        Principal::SnapshotUpdater,
        &called_since(&world.faults, &baseline),
    );
}

// ---------------------------------------------------------------------------------------
// the agents
// ---------------------------------------------------------------------------------------

/// A folder under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!(
            "nf-permissions-{name}-{}",
            nodefleet_ports::model::unique_suffix()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A small data dir in `dir` whose state file changes with `block`.
fn write_chain_data(dir: &Path, block: u64) {
    std::fs::create_dir_all(dir.join("chaindata")).unwrap();
    std::fs::write(
        dir.join("chaindata/state.bin"),
        updater_world::noise(block, 64 * 1024),
    )
    .unwrap();
    std::fs::write(
        dir.join("chaindata/frozen.bin"),
        updater_world::noise(0, 1024 * 1024),
    )
    .unwrap();
}

fn options(block: u64, now_ms: u64, publish: bool) -> CreateOptions {
    CreateOptions {
        profile: &profile::ANVIL,
        chain: ChainPoint {
            client: "anvil".into(),
            block_height: block,
            ..ChainPoint::default()
        },
        concurrency: 2,
        now_ms,
        publish,
    }
}

/// The agent's hydration of `data_dir` from `latest`.
async fn hydrate_latest(store: &Arc<dyn ObjectStore>, data_dir: &Path) -> Hydration {
    hydrate(
        store.clone(),
        data_dir,
        &Selector::Latest,
        &RestoreOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_serving_node_task_calls_what_it_declares() {
    let scratch = Scratch::new("node-task");
    let memory = MemoryObjectStore::new();
    let faults = Faults::new();
    let store: Arc<dyn ObjectStore> =
        Arc::new(FaultyObjectStore::new(memory.clone(), faults.clone()));
    let source = scratch.join("source");
    let data_dir = scratch.join("data");

    // A node started before anything was published syncs on its own.
    assert_eq!(
        hydrate_latest(&store, &data_dir).await,
        Hydration::EmptyStore
    );
    // The updater publishes (not this principal's calls: straight into the store).
    let direct: Arc<dyn ObjectStore> = Arc::new(memory.clone());
    write_chain_data(&source, 100);
    create(
        direct.clone(),
        &source,
        &options(100, 1_000, true),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert!(matches!(
        hydrate_latest(&store, &data_dir).await,
        Hydration::Restored(_)
    ));
    // Restarted on the same host: nothing to fetch.
    assert!(matches!(
        hydrate_latest(&store, &data_dir).await,
        Hydration::AlreadyRestored { .. }
    ));
    // A newer snapshot: a new node restores it over an older dir, fetching what changed.
    write_chain_data(&source, 110);
    create(
        direct,
        &source,
        &options(110, 2_000, true),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    std::fs::remove_file(data_dir.join(nodefleet_snapshot::restore::RESTORE_MARKER)).unwrap();
    assert!(matches!(
        hydrate_latest(&store, &data_dir).await,
        Hydration::Restored(_)
    ));

    check(
        Principal::NodeTask,
        &called_since(&faults, &BTreeMap::new()),
    );
}

#[tokio::test]
async fn the_updater_node_task_calls_what_it_declares() {
    const NODE: &str = "updater-1";
    let scratch = Scratch::new("updater-task");
    let memory = MemoryObjectStore::new();
    let faults = Faults::new();
    let store: Arc<dyn ObjectStore> =
        Arc::new(FaultyObjectStore::new(memory.clone(), faults.clone()));
    let data_dir = scratch.join("data");

    // Hydration on a store nothing was published to yet; the channel loop reads what an
    // earlier agent left and the command, and reports.
    assert_eq!(
        hydrate_latest(&store, &data_dir).await,
        Hydration::EmptyStore
    );
    assert_eq!(
        channel::read_report(store.as_ref(), NODE).await.unwrap(),
        None
    );
    let upload = Command::new("round-1", CommandAction::Upload, 1_000, 60_000);
    // The snapshot updater's write, straight into the store.
    channel::issue(&memory, NODE, &upload).await.unwrap();
    assert_eq!(
        channel::read_command(store.as_ref(), NODE).await.unwrap(),
        Some(upload)
    );
    let report = Report {
        node: NODE.to_owned(),
        agent: "agent-1".to_owned(),
        agent_started_at_ms: 1_000,
        heartbeat_at_ms: 1_000,
        phase: AgentPhase::Quiesced,
        health: ReportedHealth {
            healthy: false,
            block: Some(100),
            head_age_secs: Some(1),
            reason: None,
        },
        hydrated_from: None,
        ack: None,
    };
    channel::write_report(store.as_ref(), &report)
        .await
        .unwrap();

    // The upload command: a snapshot without publishing.
    write_chain_data(&data_dir, 100);
    let uploaded = create(
        store.clone(),
        &data_dir,
        &options(100, 2_000, false),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!(uploaded.published_generation, None);
    // `POST /snapshot`: a snapshot that re-uses the first one's packs, and publishes.
    write_chain_data(&data_dir, 110);
    let published = create(
        store.clone(),
        &data_dir,
        &options(110, 3_000, true),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!(published.published_generation, Some(1));
    // A new updater task hydrates from it.
    assert!(matches!(
        hydrate_latest(&store, &scratch.join("next")).await,
        Hydration::Restored(_)
    ));

    check(
        Principal::UpdaterTask,
        &called_since(&faults, &BTreeMap::new()),
    );
}
