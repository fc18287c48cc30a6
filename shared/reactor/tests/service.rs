//! The reactor service (`nodefleet_reactor::service::run`) over several invocations on the
//! stateful fakes: the fleet config seeded on the first run, the memory (budget, spot
//! warnings) carried from one invocation to the next through the state store, events of
//! other fleets ignored, unreadable events reconciled anyway, and concurrent invocations
//! merging what they spent.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use nodefleet_local::EmbeddedStateStore;
use nodefleet_ports::fakes::targets::RegistryCall;
use nodefleet_ports::fakes::{FakeScheduler, FakeTargetRegistry};
use nodefleet_ports::{
    ControlState, FleetConfig, NODE_RPC_PORT, NetworkMode, StateStore, TaskStatus, Timestamp,
    Version, Zone, target_for_task,
};
use nodefleet_reactor::planner::{Action, AlertKind, ReplacementBudget};
use nodefleet_reactor::reconcile::Ports;
use nodefleet_reactor::service::{
    self, CATCH_UP_BUDGET, MEMORY_NAME, ReactorError, ReactorMemory, ReactorRun, ReactorSettings,
    Reconciled, default_grace,
};
use nodefleet_reactor::triggers::{FleetScope, Trigger, TriggerError, parse_trigger};
use serde_json::json;

const GRACE: Duration = Duration::from_secs(60);
const STEP: Duration = Duration::from_secs(30);

fn t0() -> Timestamp {
    Timestamp::from_millis(1_800_000_000_000)
}

fn zones() -> Vec<Zone> {
    ["zone-a", "zone-b", "zone-c"].map(Zone::new).to_vec()
}

fn seed(nodes: u32) -> FleetConfig {
    FleetConfig {
        name: "test".to_owned(),
        zones: zones(),
        serving_nodes: nodes,
        healthy_floor: 1,
        storm_percent: 34,
        max_head_age_secs: 60,
        min_peers: 1,
        version: Version::NEW,
    }
}

fn settings(nodes: u32, replacements_per_hour: u32) -> ReactorSettings {
    ReactorSettings {
        owner: "test".to_owned(),
        seed_config: Some(seed(nodes)),
        grace: GRACE,
        network_mode: NetworkMode::Bridge,
        container_port: NODE_RPC_PORT,
        replacements_per_hour,
        scope: Some(FleetScope::new("nodefleet", "test")),
    }
}

fn schedule() -> Result<Trigger, TriggerError> {
    Ok(Trigger::Schedule { at: None })
}

struct Fleet {
    scheduler: FakeScheduler,
    registry: FakeTargetRegistry,
    state: EmbeddedStateStore,
    settings: ReactorSettings,
    now: Timestamp,
}

impl Fleet {
    fn new(nodes: u32, replacements_per_hour: u32) -> Fleet {
        let scheduler = FakeScheduler::with_zones(zones(), 10);
        scheduler.set_now(t0());
        Fleet {
            scheduler,
            registry: FakeTargetRegistry::healthy_after(0),
            state: EmbeddedStateStore::in_memory().unwrap(),
            settings: settings(nodes, replacements_per_hour),
            now: t0(),
        }
    }

    fn ports(&self) -> Ports<'_> {
        Ports {
            state: &self.state,
            scheduler: &self.scheduler,
            registry: &self.registry,
        }
    }

    async fn run(&mut self, trigger: &Result<Trigger, TriggerError>) -> Reconciled {
        let run = service::run(self.ports(), &self.settings, trigger, self.now)
            .await
            .unwrap();
        self.now = self.now.plus(STEP);
        self.scheduler.set_now(self.now);
        match run {
            ReactorRun::Reconciled(reconciled) => *reconciled,
            other => panic!("expected a reconcile, got {other:?}"),
        }
    }

    /// Runs schedule ticks until the fleet is past grace and has every target healthy.
    async fn settle(&mut self) {
        for _ in 0..6 {
            self.run(&schedule()).await;
        }
        let live = self.live_tasks();
        let healthy = self.registry.registered().len();
        assert_eq!(live.len(), healthy, "every live task is registered");
    }

    fn live_tasks(&self) -> Vec<nodefleet_ports::TaskInfo> {
        self.scheduler
            .tasks()
            .into_iter()
            .filter(|t| matches!(t.last_status, TaskStatus::Pending | TaskStatus::Running))
            .collect()
    }

    async fn memory(&self) -> ReactorMemory {
        let record = self
            .state
            .get_control_state(MEMORY_NAME)
            .await
            .unwrap()
            .unwrap();
        serde_json::from_str(&record.body).unwrap()
    }
}

fn launches(reconciled: &Reconciled) -> usize {
    reconciled.outcome.plan.launches().count()
}

#[tokio::test]
async fn a_first_run_seeds_the_config_and_fills_the_fleet_across_zones() {
    let mut fleet = Fleet::new(3, 10);
    assert_eq!(fleet.state.get_config().await.unwrap(), None);
    let first = fleet.run(&schedule()).await;
    assert_eq!(launches(&first), 3);
    assert_eq!(first.outcome.report.started.len(), 3);
    let stored = fleet.state.get_config().await.unwrap().unwrap();
    assert_eq!(stored.serving_nodes, 3);
    let mut zones: Vec<Zone> = fleet
        .live_tasks()
        .into_iter()
        .filter_map(|t| t.zone)
        .collect();
    zones.sort();
    assert_eq!(zones, self::zones(), "one node per zone");
    fleet.settle().await;
    assert_eq!(fleet.live_tasks().len(), 3);
    let steady = fleet.run(&schedule()).await;
    assert!(
        steady.outcome.plan.actions.is_empty(),
        "a healthy full fleet needs nothing: {:?}",
        steady.outcome.plan.actions
    );
}

#[tokio::test]
async fn the_stored_config_wins_over_the_seed() {
    let mut fleet = Fleet::new(3, 10);
    fleet.state.save_config(&seed(1)).await.unwrap();
    let first = fleet.run(&schedule()).await;
    assert_eq!(launches(&first), 1, "the stored config asks for one node");
}

#[tokio::test]
async fn the_budget_is_carried_between_invocations() {
    let mut fleet = Fleet::new(6, 1);
    fleet.settle().await;
    let tasks = fleet.live_tasks();
    // Two of six lost: not a storm (one third is not more than one third), but the budget of
    // one replacement per hour covers only one.
    for task in &tasks[..2] {
        assert!(
            fleet
                .scheduler
                .terminate(&task.id, "Essential container exited")
        );
    }
    let first = fleet.run(&schedule()).await;
    assert_eq!(launches(&first), 1);
    assert!(
        first
            .outcome
            .plan
            .alerts()
            .any(|a| a == AlertKind::BudgetSpent)
    );
    assert_eq!(fleet.memory().await.budget.tokens(), 0);
    for _ in 0..3 {
        let next = fleet.run(&schedule()).await;
        assert_eq!(
            next.outcome
                .plan
                .launches()
                .filter(|a| matches!(a, Action::Launch { idempotency_key, .. } if idempotency_key.starts_with("replace/")))
                .count(),
            0,
            "a later invocation reads the spent budget back: nothing more is replaced"
        );
    }
    // An hour on, a token is back and the second node is replaced.
    fleet.now = fleet.now.plus(Duration::from_secs(3600));
    fleet.scheduler.set_now(fleet.now);
    let later = fleet.run(&schedule()).await;
    assert_eq!(launches(&later), 1);
}

#[tokio::test]
async fn a_spot_warning_is_remembered_by_the_next_invocations() {
    let mut fleet = Fleet::new(3, 10);
    fleet.settle().await;
    let doomed = fleet.live_tasks()[0].clone();
    let instance = doomed.instance_id.clone().unwrap();
    let target = target_for_task(&doomed, NetworkMode::Bridge, NODE_RPC_PORT).unwrap();
    let event = json!({
        "version": "0",
        "id": "spot-1",
        "detail-type": "EC2 Spot Instance Interruption Warning",
        "source": "aws.ec2",
        "account": "123456789012",
        "time": "2027-01-15T08:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {"instance-id": instance, "instance-action": "terminate"}
    });
    let spot = fleet.run(&parse_trigger(&event)).await;
    assert_eq!(spot.trigger, "spot_interruption");
    assert_eq!(launches(&spot), 1, "the replacement starts at once");
    assert!(
        fleet
            .registry
            .calls()
            .contains(&RegistryCall::Deregister(vec![target.clone()])),
        "the doomed target drains"
    );
    assert_eq!(fleet.memory().await.spot_warnings.len(), 1);
    for _ in 0..3 {
        let next = fleet.run(&schedule()).await;
        assert_eq!(launches(&next), 0, "no second replacement");
        assert!(
            !next
                .outcome
                .plan
                .actions
                .iter()
                .any(|a| matches!(a, Action::RegisterTarget { target: t, .. } if *t == target)),
            "a later schedule tick still knows the target is doomed and does not put it back: {:?}",
            next.outcome.plan.actions
        );
    }
}

#[tokio::test]
async fn another_fleets_task_event_reconciles_nothing() {
    let fleet = Fleet::new(3, 10);
    let event = json!({
        "version": "0",
        "id": "ecs-1",
        "detail-type": "ECS Task State Change",
        "source": "aws.ecs",
        "account": "123456789012",
        "time": "2027-01-15T08:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {
            "clusterArn": "arn:aws:ecs:us-east-1:123456789012:cluster/nodefleet",
            "taskArn": "arn:aws:ecs:us-east-1:123456789012:task/nodefleet/abc",
            "group": "service:web",
            "lastStatus": "STOPPED",
            "desiredStatus": "STOPPED",
            "containers": []
        }
    });
    let trigger = parse_trigger(&event);
    assert!(
        matches!(trigger, Ok(Trigger::TaskStopped(_))),
        "{trigger:?}"
    );
    let run = service::run(fleet.ports(), &fleet.settings, &trigger, fleet.now)
        .await
        .unwrap();
    assert!(matches!(run, ReactorRun::NotOurs { .. }), "{run:?}");
    assert_eq!(fleet.scheduler.launches().len(), 0);
    assert_eq!(
        fleet.state.get_config().await.unwrap(),
        None,
        "nothing was read or written"
    );
}

#[tokio::test]
async fn an_unreadable_event_still_reconciles() {
    let mut fleet = Fleet::new(3, 10);
    let trigger = parse_trigger(&json!({"not": "an event"}));
    assert!(trigger.is_err());
    let run = fleet.run(&trigger).await;
    assert_eq!(run.trigger, "unreadable");
    assert_eq!(launches(&run), 3);
}

#[tokio::test]
async fn no_config_and_no_seed_fails_without_a_retry() {
    let fleet = Fleet::new(3, 10);
    let mut settings = fleet.settings.clone();
    settings.seed_config = None;
    let error = service::run(fleet.ports(), &settings, &schedule(), fleet.now)
        .await
        .unwrap_err();
    assert_eq!(error, ReactorError::NoFleetConfig);
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn a_corrupt_memory_is_an_error_and_launches_nothing() {
    let fleet = Fleet::new(3, 10);
    fleet
        .state
        .save_control_state(&ControlState {
            name: MEMORY_NAME.to_owned(),
            body: "{not json".to_owned(),
            updated_at: t0(),
            version: Version::NEW,
        })
        .await
        .unwrap();
    let error = service::run(fleet.ports(), &fleet.settings, &schedule(), fleet.now)
        .await
        .unwrap_err();
    assert!(matches!(error, ReactorError::CorruptMemory(_)), "{error:?}");
    assert_eq!(fleet.scheduler.launches().len(), 0);
}

#[tokio::test]
async fn a_changed_budget_setting_resizes_the_bucket_keeping_what_was_spent() {
    let mut fleet = Fleet::new(6, 3);
    fleet.settle().await;
    let tasks = fleet.live_tasks();
    assert!(
        fleet
            .scheduler
            .terminate(&tasks[0].id, "Essential container exited")
    );
    fleet.run(&schedule()).await;
    assert_eq!(fleet.memory().await.budget.tokens(), 2);
    fleet.settings.replacements_per_hour = 10;
    fleet.run(&schedule()).await;
    let memory = fleet.memory().await;
    assert_eq!(memory.budget.bucket.capacity, 10);
    assert_eq!(memory.budget.tokens(), 9, "one spent of ten");
}

#[test]
fn concurrent_invocations_merge_their_payments() {
    let now = t0();
    let before = ReactorMemory::new(10, now);
    let mut mine = before.clone();
    let mut budget: ReplacementBudget = mine.budget.clone();
    budget.pay("replace/a/task-1/zone-a", now);
    mine.budget = budget;
    let mut theirs = before.clone();
    theirs.budget.pay("replace/b/task-2/zone-b", now);
    theirs.budget.pay("replace/a/task-1/zone-a", now);
    let mut merged = theirs.clone();
    mine.merge_into(&before, &mut merged, now);
    assert_eq!(
        merged.budget.tokens(),
        8,
        "a key both paid for costs one token"
    );
    let mut third = before.clone();
    third.budget.pay("replace/c/task-3/zone-c", now);
    mine.merge_into(&before, &mut third, now);
    assert_eq!(
        third.budget.tokens(),
        8,
        "keys paid only here cost a token there"
    );
    assert_eq!(third.budget.paid_keys.len(), 2);
}

#[test]
fn grace_comes_from_the_client_profile() {
    let geth = default_grace("geth").unwrap();
    assert!(geth > CATCH_UP_BUDGET, "{geth:?}");
    assert!(geth < Duration::from_secs(2 * 3600), "{geth:?}");
    assert!(
        default_grace("reth").unwrap() >= geth,
        "reth keeps more data than geth"
    );
    assert_eq!(default_grace("anvil"), None);
}

#[tokio::test]
async fn a_forgiven_zone_takes_the_next_replacement_at_once() {
    use nodefleet_reactor::planner::ZoneFailures;

    let mut fleet = Fleet::new(3, 10);
    fleet.settle().await;
    let lost_zone = Zone::new("zone-b");
    // A capacity failure in zone-b a moment ago: it is avoided for the backoff.
    let record = fleet
        .state
        .get_control_state(MEMORY_NAME)
        .await
        .unwrap()
        .unwrap();
    let mut memory: ReactorMemory = serde_json::from_str(&record.body).unwrap();
    memory.budget.zone_backoff.zones.insert(
        lost_zone.clone(),
        ZoneFailures {
            consecutive: 1,
            last_failure_at: fleet.now,
            avoid_until: fleet.now.plus(Duration::from_secs(3600)),
            last_reason: "RESOURCE:MEMORY".into(),
        },
    );
    fleet
        .state
        .save_control_state(&ControlState {
            body: serde_json::to_string(&memory).unwrap(),
            ..record
        })
        .await
        .unwrap();
    let in_zone = |fleet: &Fleet, zone: &Zone| {
        fleet
            .live_tasks()
            .into_iter()
            .filter(|t| t.zone.as_ref() == Some(zone))
            .collect::<Vec<_>>()
    };
    // Its node dies: the replacement goes elsewhere.
    let victim = in_zone(&fleet, &lost_zone).remove(0);
    assert!(fleet.scheduler.terminate(&victim.id, "zone lost"));
    let launched = fleet.run(&schedule()).await;
    let zones: Vec<&Zone> = launched
        .outcome
        .plan
        .launches()
        .filter_map(|a| match a {
            Action::Launch { zone, .. } => Some(zone),
            _ => None,
        })
        .collect();
    assert_eq!(zones.len(), 1);
    assert_ne!(zones[0], &lost_zone, "a zone in backoff is skipped");
    fleet.settle().await;

    // The operator says the capacity is back: forgiven once, then nothing to forgive.
    assert!(
        service::forgive_zone(&fleet.state, &lost_zone, fleet.now)
            .await
            .unwrap()
    );
    assert!(
        !service::forgive_zone(&fleet.state, &lost_zone, fleet.now)
            .await
            .unwrap()
    );
    let failures = fleet.memory().await.budget.zone_backoff.zones[&lost_zone].clone();
    assert_eq!(failures.consecutive, 0);
    assert_eq!(
        failures.last_failure_at, memory.budget.zone_backoff.zones[&lost_zone].last_failure_at,
        "the failure stays counted, not counted again"
    );
    // The node that moved dies: its replacement goes back to the zone with the deficit.
    let moved = fleet
        .live_tasks()
        .into_iter()
        .find(|t| t.node == victim.node)
        .unwrap();
    assert!(fleet.scheduler.terminate(&moved.id, "killed"));
    let launched = fleet.run(&schedule()).await;
    let zones: Vec<&Zone> = launched
        .outcome
        .plan
        .launches()
        .filter_map(|a| match a {
            Action::Launch { zone, .. } => Some(zone),
            _ => None,
        })
        .collect();
    assert_eq!(zones, [&lost_zone]);
}
