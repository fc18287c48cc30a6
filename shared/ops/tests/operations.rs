//! The operator functions over the port fakes (`FakeScheduler`, `FakeTargetRegistry`, an
//! in-memory `EmbeddedStateStore` and object store), as `nodefleet up` and the stack
//! commands call them: a status of a three-node fleet, replacing a node (launched once,
//! refused when unknown, deduplicated with a concurrent reactor run), the audit trail newest
//! first across pages, and starting a snapshot round (started, already running, busy).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use nodefleet_local::EmbeddedStateStore;
use nodefleet_ops::events::{EVENT_PAGE, EventFilter, recent_events};
use nodefleet_ops::probe::RpcHeadProbe;
use nodefleet_ops::replace::{ReplaceError, Replaced, replace};
use nodefleet_ops::round::{RoundStart, start_round};
use nodefleet_ops::status::{StatusOptions, status};
use nodefleet_ports::fakes::{FakeScheduler, FakeTargetRegistry, MemoryObjectStore};
use nodefleet_ports::{
    AuditEvent, FleetConfig, LaunchRequest, NODE_RPC_PORT, NetworkMode, NodeId, NodeRecord,
    NodeState, ObjectStore, Role, Scheduler, StateStore, TargetRegistry, TaskStatus, Timestamp,
    Version, Zone, target_for_task,
};
use nodefleet_reactor::planner::ReplaceRefusal;
use nodefleet_reactor::reconcile::Ports;
use nodefleet_reactor::service::{self, ReactorError, ReactorSettings};
use nodefleet_reactor::triggers::Trigger;
use nodefleet_updater::round::{RoundSettings, StepTimeouts};
use nodefleet_updater::service::{UPDATER_NAME, UpdaterPorts, UpdaterSettings};

const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);
const ZONES: [&str; 3] = ["zone-a", "zone-b", "zone-c"];
/// The fleet was launched this long before `NOW`: past any grace window.
const AGE: Duration = Duration::from_secs(6 * 60 * 60);

struct Fleet {
    state: EmbeddedStateStore,
    scheduler: FakeScheduler,
    registry: FakeTargetRegistry,
    store: Arc<dyn ObjectStore>,
}

fn node(index: usize) -> NodeId {
    NodeId::new(format!("{}-1", ZONES[index]))
}

impl Fleet {
    /// Three serving nodes, one per zone, healthy; a stored config; no snapshot.
    async fn new() -> Fleet {
        let scheduler = FakeScheduler::with_zones(ZONES, 4);
        let registry = FakeTargetRegistry::healthy_after(0);
        let state = EmbeddedStateStore::in_memory().unwrap();
        state
            .save_config(&FleetConfig {
                name: "mainnet".into(),
                zones: ZONES.iter().map(|z| Zone::new(*z)).collect(),
                serving_nodes: 3,
                healthy_floor: 2,
                storm_percent: 34,
                max_head_age_secs: 60,
                min_peers: 1,
                version: Version::NEW,
            })
            .await
            .unwrap();
        let launched = NOW.minus(AGE);
        scheduler.set_now(launched);
        for (index, zone) in ZONES.iter().enumerate() {
            let report = scheduler
                .launch(&LaunchRequest {
                    node: node(index),
                    zone: Zone::new(*zone),
                    role: Role::Serving,
                    snapshot: None,
                    idempotency_key: format!("setup/{index}"),
                    count: 1,
                })
                .await
                .unwrap();
            let task = report.started[0].clone();
            let target = target_for_task(&task, NetworkMode::Bridge, NODE_RPC_PORT).unwrap();
            registry
                .register(std::slice::from_ref(&target))
                .await
                .unwrap();
            state
                .save_node(&NodeRecord {
                    id: node(index),
                    task: Some(task.id.clone()),
                    zone: Zone::new(*zone),
                    target: Some(target),
                    role: Role::Serving,
                    state: NodeState::Serving,
                    snapshot: None,
                    created_at: launched,
                    updated_at: launched,
                    version: Version::NEW,
                })
                .await
                .unwrap();
        }
        scheduler.set_now(NOW);
        Fleet {
            state,
            scheduler,
            registry,
            store: Arc::new(MemoryObjectStore::new()),
        }
    }

    fn ports(&self) -> Ports<'_> {
        Ports {
            state: &self.state,
            scheduler: &self.scheduler,
            registry: &self.registry,
        }
    }

    fn updater_ports(&self) -> UpdaterPorts<'_> {
        UpdaterPorts {
            state: &self.state,
            scheduler: &self.scheduler,
            store: &self.store,
        }
    }

    fn launches(&self) -> usize {
        self.scheduler.launches().len() - ZONES.len()
    }

    fn live_tasks_of(&self, id: &NodeId) -> usize {
        self.scheduler
            .tasks()
            .iter()
            .filter(|t| t.node.as_ref() == Some(id))
            .filter(|t| matches!(t.last_status, TaskStatus::Pending | TaskStatus::Running))
            .count()
    }
}

fn reactor_settings(owner: &str) -> ReactorSettings {
    ReactorSettings {
        owner: owner.to_owned(),
        seed_config: None,
        grace: Duration::from_secs(30 * 60),
        network_mode: NetworkMode::Bridge,
        container_port: NODE_RPC_PORT,
        replacements_per_hour: 10,
        scope: None,
    }
}

fn updater_settings(owner: &str) -> UpdaterSettings {
    UpdaterSettings {
        owner: owner.to_owned(),
        round: RoundSettings {
            interval: Duration::from_secs(4 * 3600),
            timeouts: StepTimeouts::default(),
            max_head_age: Duration::from_secs(60),
            heartbeat_stale: Duration::from_secs(120),
        },
        lease_ttl: Duration::from_secs(960),
        zone: None,
        verify_sample_chunks: 16,
        verify_concurrency: 4,
        keep_snapshots: 3,
        prune_grace: Duration::from_secs(4 * 3600),
        max_ticks: 16,
    }
}

fn status_options() -> StatusOptions {
    StatusOptions {
        source: "fakes".into(),
        fleet: "mainnet".into(),
        network_mode: NetworkMode::Bridge,
        container_port: NODE_RPC_PORT,
        events_since: Duration::from_secs(24 * 3600),
        events_limit: 10,
        head_timeout: Duration::ZERO,
    }
}

#[tokio::test]
async fn a_status_shows_the_fleet_and_a_replacement_in_flight() {
    let fleet = Fleet::new().await;
    let report = status(fleet.ports(), &status_options(), &RpcHeadProbe, NOW)
        .await
        .unwrap();
    assert_eq!(report.healthy, 3);
    assert_eq!(report.nodes.len(), 3);
    assert_eq!(report.heads.asked, 0, "a zero timeout skips the probe");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);

    let replaced = replace(fleet.ports(), &reactor_settings("operator"), &node(1), NOW)
        .await
        .unwrap();
    let Replaced::Launched { task, .. } = replaced else {
        panic!("{replaced:?}")
    };
    let report = status(fleet.ports(), &status_options(), &RpcHeadProbe, NOW)
        .await
        .unwrap();
    let row = report.nodes.iter().find(|n| n.id == node(1)).unwrap();
    assert_eq!(row.replacement.as_ref().map(|r| &r.task), Some(&task));
    assert_eq!(report.events[0].kind, "reactor.launch");
    assert!(
        report.events[0]
            .detail
            .starts_with("operator request: replace zone-b-1"),
        "{}",
        report.events[0].detail
    );
}

#[tokio::test]
async fn replace_launches_once_with_the_reactors_key_and_refuses_what_it_cannot_replace() {
    let fleet = Fleet::new().await;
    let old = fleet
        .state
        .get_node(&node(0))
        .await
        .unwrap()
        .unwrap()
        .task
        .unwrap();
    let settings = reactor_settings("operator@test");
    let first = replace(fleet.ports(), &settings, &node(0), NOW)
        .await
        .unwrap();
    let Replaced::Launched {
        zone,
        key,
        replacing,
        ..
    } = &first
    else {
        panic!("{first:?}")
    };
    assert_eq!(
        zone.as_str(),
        "zone-a",
        "a healthy node is replaced in its own zone"
    );
    assert_eq!(key, &format!("replace/zone-a-1/{old}/zone-a"));
    assert_eq!(replacing.as_ref(), Some(&old));
    assert!(
        first.render().contains("launched task"),
        "{}",
        first.render()
    );
    let claim = fleet
        .state
        .get_idempotency_key(key, NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claim.owner, "operator@test");

    let second = replace(fleet.ports(), &settings, &node(0), NOW)
        .await
        .unwrap();
    assert!(
        matches!(&second, Replaced::AlreadyReplacing { node: n, .. } if *n == node(0)),
        "{second:?}"
    );
    assert_eq!(fleet.launches(), 1);
    assert_eq!(
        fleet.live_tasks_of(&node(0)),
        2,
        "the old task runs until the new is healthy"
    );

    let unknown = replace(fleet.ports(), &settings, &NodeId::new("nope"), NOW)
        .await
        .unwrap_err();
    assert!(
        matches!(
            unknown,
            ReplaceError::Refused(ReplaceRefusal::UnknownNode { .. })
        ),
        "{unknown:?}"
    );
    assert_eq!(
        unknown.to_string(),
        "node nope is not one of the fleet's nodes"
    );
    assert!(!unknown.is_retryable());
    assert_eq!(fleet.launches(), 1);
}

#[tokio::test]
async fn replace_needs_a_stored_fleet_config() {
    let fleet = Fleet {
        state: EmbeddedStateStore::in_memory().unwrap(),
        scheduler: FakeScheduler::with_zones(ZONES, 1),
        registry: FakeTargetRegistry::healthy_after(0),
        store: Arc::new(MemoryObjectStore::new()),
    };
    let error = replace(fleet.ports(), &reactor_settings("op"), &node(0), NOW)
        .await
        .unwrap_err();
    assert_eq!(error, ReplaceError::Fleet(ReactorError::NoFleetConfig));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replace_and_a_concurrent_reactor_run_launch_one_task() {
    let fleet = Arc::new(Fleet::new().await);
    // Node 2's task dies: the reactor would replace it as well.
    let task = fleet
        .state
        .get_node(&node(2))
        .await
        .unwrap()
        .unwrap()
        .task
        .unwrap();
    assert!(
        fleet
            .scheduler
            .terminate(&task, "Essential container in task exited")
    );
    let operator = {
        let fleet = Arc::clone(&fleet);
        tokio::spawn(async move {
            replace(fleet.ports(), &reactor_settings("operator"), &node(2), NOW).await
        })
    };
    let reactor = {
        let fleet = Arc::clone(&fleet);
        tokio::spawn(async move {
            let trigger = Ok(Trigger::Schedule { at: None });
            service::run(fleet.ports(), &reactor_settings("reactor"), &trigger, NOW).await
        })
    };
    let replaced = operator.await.unwrap().unwrap();
    reactor.await.unwrap().unwrap();
    assert_eq!(fleet.launches(), 1, "{:?}", fleet.scheduler.launches());
    assert_eq!(fleet.live_tasks_of(&node(2)), 1);
    assert!(
        matches!(
            replaced,
            Replaced::Launched { .. }
                | Replaced::AlreadyReplacing { .. }
                | Replaced::AlreadyLaunched { .. }
        ),
        "{replaced:?}"
    );
}

#[tokio::test]
async fn events_come_newest_first_across_pages_within_the_window() {
    let state = EmbeddedStateStore::in_memory().unwrap();
    let retention = Duration::from_secs(90 * 24 * 3600);
    // 1,200 events over the last 1,200 seconds, three per second at the same millisecond,
    // plus one two days old.
    let total = 1_200u64;
    for i in 0..total {
        let at = NOW.minus(Duration::from_secs(total - i / 3));
        let kind = if i % 2 == 0 {
            "reactor.launch"
        } else {
            "snapshot.round"
        };
        let event = AuditEvent::new(at, kind, format!("s-{i}"), "", retention);
        state.append_event(&event).await.unwrap();
    }
    let old = AuditEvent::new(
        NOW.minus(Duration::from_secs(2 * 86_400)),
        "old",
        "x",
        "",
        retention,
    );
    state.append_event(&old).await.unwrap();
    assert!(total as usize > 2 * EVENT_PAGE, "the listing spans pages");

    let since = NOW.minus(Duration::from_secs(86_400));
    let newest = recent_events(&state, since, NOW, 5, &EventFilter::default())
        .await
        .unwrap();
    let subjects: Vec<&str> = newest.iter().map(|e| e.subject.as_str()).collect();
    assert_eq!(subjects.len(), 5);
    assert!(
        newest.windows(2).all(|w| w[0].at >= w[1].at),
        "{subjects:?}"
    );
    let mut all = recent_events(&state, since, NOW, 10_000, &EventFilter::default())
        .await
        .unwrap();
    assert_eq!(
        all.len(),
        total as usize,
        "every event of the window once, the old one out"
    );
    all.truncate(5);
    assert_eq!(all, newest);

    let launches = recent_events(
        &state,
        since,
        NOW,
        10_000,
        &EventFilter {
            kind_prefix: Some("reactor.".into()),
            subject: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(launches.len(), total as usize / 2);
    let everything = recent_events(
        &state,
        Timestamp::EPOCH,
        NOW,
        10_000,
        &EventFilter::default(),
    )
    .await
    .unwrap();
    assert_eq!(everything.last().map(|e| e.kind.as_str()), Some("old"));
}

#[tokio::test]
async fn a_round_starts_once_and_a_held_lease_is_reported() {
    let fleet = Fleet::new().await;
    let started = start_round(fleet.updater_ports(), &updater_settings("operator"), NOW)
        .await
        .unwrap();
    let RoundStart::Started { round } = &started else {
        panic!("{started:?}")
    };
    assert_eq!(round.id, format!("r-{:013}", NOW.as_millis()));
    let task = round
        .task
        .clone()
        .expect("the updater task is launched at once");
    let updater = fleet
        .scheduler
        .tasks()
        .into_iter()
        .find(|t| t.id == task)
        .unwrap();
    assert_eq!(updater.role, Some(Role::Updater));
    assert_eq!(
        updater.zone,
        Some(Zone::new("zone-a")),
        "the config's first zone"
    );
    assert!(
        started.render().starts_with("started snapshot round r-"),
        "{}",
        started.render()
    );
    // The service released its lease; the round is in the updater's memory.
    assert!(
        fleet
            .state
            .get_lease(UPDATER_NAME, NOW)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        fleet
            .state
            .get_control_state(UPDATER_NAME)
            .await
            .unwrap()
            .is_some()
    );

    let later = NOW.plus(Duration::from_secs(60));
    let again = start_round(fleet.updater_ports(), &updater_settings("operator"), later)
        .await
        .unwrap();
    assert!(
        matches!(&again, RoundStart::AlreadyRunning { round: r } if r.id == round.id),
        "{again:?}"
    );
    let updaters = fleet
        .scheduler
        .tasks()
        .iter()
        .filter(|t| t.role == Some(Role::Updater))
        .count();
    assert_eq!(updaters, 1, "one updater task");

    fleet
        .state
        .acquire_lease(
            UPDATER_NAME,
            "lambda-request-7",
            Duration::from_secs(960),
            later,
        )
        .await
        .unwrap();
    let busy = start_round(fleet.updater_ports(), &updater_settings("operator"), later)
        .await
        .unwrap();
    assert!(
        matches!(&busy, RoundStart::Busy { holder, .. } if holder == "lambda-request-7"),
        "{busy:?}"
    );
    assert!(busy.render().contains("lambda-request-7"));
}
