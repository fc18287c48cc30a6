//! The snapshot-updater function's adapter without AWS: its settings read from an environment
//! map (every error names its variable), and events through `handle_event` on an embedded
//! state store, the fake scheduler and an in-memory object store, checking the answer, the
//! launch and the EMF documents.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use nodefleet_aws::ecs::{EcsLaunch, EcsNetwork};
use nodefleet_lambda::env::{Env, EnvError};
use nodefleet_lambda::function::Handled;
use nodefleet_lambda::updater::{
    DEFAULT_LEASE_TTL_SECS, FUNCTION_TIMEOUT_SECS, MAX_TICKS, STEP_TIMEOUT_VARIABLES, UpdaterEnv,
    UpdaterEvent, handle_event,
};
use nodefleet_local::EmbeddedStateStore;
use nodefleet_ports::fakes::{FakeScheduler, MemoryObjectStore};
use nodefleet_ports::{
    ControlState, ObjectStore, Role, StateStore, StoreUrl, Timestamp, Version, Zone,
};
use nodefleet_updater::round::{StepTimeouts, UpdaterMemory};
use nodefleet_updater::service::{UPDATER_NAME, UpdaterPorts};
use serde_json::{Value, json};

fn base() -> HashMap<&'static str, &'static str> {
    HashMap::from([
        ("TABLE_NAME", "nodefleet-state"),
        ("FLEET_NAME", "mainnet"),
        ("CLUSTER", "nodefleet"),
        ("TASK_DEFINITION", "nodefleet-node:3"),
        ("SNAPSHOT_BUCKET", "nodefleet-chain-data"),
    ])
}

fn read(vars: &HashMap<&'static str, &'static str>) -> Result<UpdaterEnv, EnvError> {
    let var = |name: &str| vars.get(name).map(|v| (*v).to_owned());
    UpdaterEnv::from_env(Env::new(&var))
}

fn invalid_name(result: Result<UpdaterEnv, EnvError>) -> &'static str {
    match result {
        Err(EnvError::Invalid { name, .. }) => name,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

/// When the handler runs: a fixed `now`, so timestamps in the answer are known.
const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);

/// An empty fleet on fakes: no config, no tasks, an empty store.
struct Fakes {
    state: EmbeddedStateStore,
    scheduler: FakeScheduler,
    store: Arc<dyn ObjectStore>,
}

impl Fakes {
    fn new() -> Fakes {
        let scheduler = FakeScheduler::with_zones(["zone-a", "zone-b"], 2);
        scheduler.set_now(NOW);
        Fakes {
            state: EmbeddedStateStore::in_memory().unwrap(),
            scheduler,
            store: Arc::new(MemoryObjectStore::new()),
        }
    }

    fn ports(&self) -> UpdaterPorts<'_> {
        UpdaterPorts {
            state: &self.state,
            scheduler: &self.scheduler,
            store: &self.store,
        }
    }

    async fn handle(&self, env: &UpdaterEnv, owner: &str, event: &Value) -> Handled {
        handle_event(self.ports(), &env.settings(owner), "mainnet", event, NOW)
            .await
            .unwrap()
    }
}

fn env_with_zone() -> UpdaterEnv {
    let mut vars = base();
    vars.insert("UPDATER_ZONE", "zone-b");
    read(&vars).unwrap()
}

#[test]
fn defaults_fill_everything_but_the_required_names() {
    let env = read(&base()).unwrap();
    assert_eq!(env.table, "nodefleet-state");
    assert_eq!(env.fleet, "mainnet");
    assert_eq!(env.scheduler.container_name, "node");
    assert_eq!(env.scheduler.network, EcsNetwork::Bridge);
    assert_eq!(env.scheduler.launch, EcsLaunch::Ec2);
    assert_eq!(env.client, "geth");
    let reservation = nodefleet_reactor::capacity::task_size_for_client("geth").unwrap();
    let size = env.scheduler.task_size.unwrap();
    assert_eq!(
        (size.cpu_units, size.memory_mib),
        (reservation.cpu_units, reservation.memory_mib),
        "RunTask asks for the capacity planner's reservation, as the reactor does"
    );
    assert_eq!(
        env.store,
        StoreUrl::S3 {
            bucket: "nodefleet-chain-data".into(),
            prefix: String::new()
        }
    );
    assert_eq!(env.zone, None);
    assert_eq!(env.round.interval, Duration::from_secs(4 * 60 * 60));
    assert_eq!(env.round.timeouts, StepTimeouts::default());
    assert_eq!(env.round.max_head_age, Duration::from_secs(60));
    assert_eq!(env.round.heartbeat_stale, Duration::from_secs(120));
    assert_eq!(env.lease_ttl, Duration::from_secs(DEFAULT_LEASE_TTL_SECS));
    assert!(
        env.lease_ttl > Duration::from_secs(FUNCTION_TIMEOUT_SECS),
        "the lease outlives the invocation that holds it"
    );
    assert_eq!(env.verify_sample_chunks, 256);
    assert_eq!(env.verify_concurrency, 32);
    assert_eq!(env.keep_snapshots, 3);
    assert_eq!(env.prune_grace, Duration::from_secs(4 * 60 * 60));
    assert!(env.prune_grace > env.round.timeouts.upload);
    let settings = env.settings("req-1");
    assert_eq!(settings.owner, "req-1");
    assert_eq!(settings.max_ticks, MAX_TICKS);
    assert_eq!(settings.round, env.round);
}

#[test]
fn every_required_variable_is_named_when_missing() {
    for name in ["TABLE_NAME", "FLEET_NAME", "CLUSTER", "TASK_DEFINITION"] {
        let mut vars = base();
        vars.remove(name);
        assert_eq!(read(&vars), Err(EnvError::Missing(name)), "{name}");
        vars.insert(name, "  ");
        assert_eq!(read(&vars), Err(EnvError::Missing(name)), "{name} blank");
    }
    let mut vars = base();
    vars.remove("SNAPSHOT_BUCKET");
    let error = read(&vars).unwrap_err();
    assert!(
        error.to_string().contains("SNAPSHOT_BUCKET")
            && error.to_string().contains("SNAPSHOT_STORE"),
        "{error}"
    );
}

#[test]
fn bad_values_are_named_with_what_was_expected() {
    let mut cases = vec![
        ("ROUND_INTERVAL_SECS", "4h"),
        ("ROUND_INTERVAL_SECS", "0"),
        ("LEASE_TTL_SECS", "-1"),
        ("VERIFY_SAMPLE_CHUNKS", "many"),
        ("VERIFY_CONCURRENCY", "0"),
        ("KEEP_SNAPSHOTS", "0"),
        ("KEEP_SNAPSHOTS", "three"),
        ("PRUNE_GRACE_SECS", "1.5"),
        ("MAX_HEAD_AGE_SECS", "sixty"),
        ("HEARTBEAT_STALE_SECS", "0"),
        ("NETWORK_MODE", "host"),
        ("NODE_CLIENT", "anvil"),
        ("SNAPSHOT_BUCKET", "Not_A_Bucket"),
    ];
    for (_, name) in STEP_TIMEOUT_VARIABLES {
        cases.push((name, "soon"));
        cases.push((name, "0"));
    }
    for (name, value) in cases {
        let mut vars = base();
        vars.insert(name, value);
        assert_eq!(invalid_name(read(&vars)), name, "{name}={value}");
    }
    // A grace the upload's timeout outlasts could prune an upload still in flight.
    let mut vars = base();
    vars.insert("PRUNE_GRACE_SECS", "3600");
    assert_eq!(invalid_name(read(&vars)), "PRUNE_GRACE_SECS");
    vars.insert("STEP_TIMEOUT_UPLOAD_SECS", "1800");
    assert_eq!(read(&vars).unwrap().prune_grace, Duration::from_secs(3600));
}

#[test]
fn overrides_the_store_url_and_the_shared_ecs_settings_are_read() {
    let mut vars = base();
    vars.insert("SNAPSHOT_PREFIX", "/mainnet/");
    assert_eq!(
        read(&vars).unwrap().store,
        StoreUrl::S3 {
            bucket: "nodefleet-chain-data".into(),
            prefix: "mainnet/".into()
        }
    );
    // One URL instead, as the agents get it; not both.
    vars.insert("SNAPSHOT_STORE", "s3://other-bucket/chain");
    assert_eq!(invalid_name(read(&vars)), "SNAPSHOT_STORE");
    vars.remove("SNAPSHOT_BUCKET");
    assert_eq!(invalid_name(read(&vars)), "SNAPSHOT_PREFIX");
    vars.remove("SNAPSHOT_PREFIX");
    assert_eq!(
        read(&vars).unwrap().store,
        StoreUrl::S3 {
            bucket: "other-bucket".into(),
            prefix: "chain/".into()
        }
    );
    vars.insert("SNAPSHOT_STORE", "file:///var/lib/chain");
    assert_eq!(invalid_name(read(&vars)), "SNAPSHOT_STORE");
    vars.insert("SNAPSHOT_STORE", "s3://other-bucket");

    vars.insert("NETWORK_MODE", "awsvpc");
    assert_eq!(read(&vars), Err(EnvError::Missing("SUBNETS_BY_ZONE")));
    vars.insert("SUBNETS_BY_ZONE", "us-east-1a=subnet-a1+subnet-a2");
    vars.insert("CAPACITY_PROVIDER", "nodefleet-i3");
    vars.insert("NODE_CLIENT", "reth");
    vars.insert("UPDATER_ZONE", "us-east-1a");
    vars.insert("ROUND_INTERVAL_SECS", "7200");
    vars.insert("STEP_TIMEOUT_UPLOAD_SECS", "5400");
    vars.insert("STEP_TIMEOUT_WAIT_SYNCED_SECS", "600");
    vars.insert("LEASE_TTL_SECS", "300");
    vars.insert("VERIFY_SAMPLE_CHUNKS", "0");
    vars.insert("KEEP_SNAPSHOTS", "5");
    let env = read(&vars).unwrap();
    assert!(
        matches!(&env.scheduler.network, EcsNetwork::Awsvpc { subnets_by_zone, .. }
        if subnets_by_zone[&Zone::new("us-east-1a")] == ["subnet-a1", "subnet-a2"])
    );
    assert!(
        matches!(&env.scheduler.launch, EcsLaunch::CapacityProviders(p) if p[0].capacity_provider == "nodefleet-i3")
    );
    let reth = nodefleet_reactor::capacity::task_size_for_client("reth").unwrap();
    assert_eq!(env.scheduler.task_size.unwrap().memory_mib, reth.memory_mib);
    assert_eq!(env.zone, Some(Zone::new("us-east-1a")));
    assert_eq!(env.round.interval, Duration::from_secs(7200));
    assert_eq!(env.round.timeouts.upload, Duration::from_secs(5400));
    assert_eq!(env.round.timeouts.wait_synced, Duration::from_secs(600));
    assert_eq!(
        env.round.timeouts.verify,
        StepTimeouts::default().verify,
        "a step without an override keeps its default"
    );
    assert_eq!(env.lease_ttl, Duration::from_secs(300));
    assert_eq!(env.verify_sample_chunks, 0);
    assert_eq!(env.keep_snapshots, 5);
}

#[test]
fn only_start_round_starts_a_round() {
    assert_eq!(
        UpdaterEvent::parse(&json!({"action": "start-round"})),
        UpdaterEvent::StartRound
    );
    for tick in [
        json!({"action": "tick"}),
        json!({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}}),
        json!({}),
        json!(null),
        json!("start-round"),
        json!({"action": 7}),
    ] {
        assert_eq!(UpdaterEvent::parse(&tick), UpdaterEvent::Tick, "{tick}");
    }
}

#[tokio::test]
async fn a_start_round_event_on_an_empty_fleet_launches_one_updater() {
    let env = env_with_zone();
    let fakes = Fakes::new();
    let handled = fakes
        .handle(&env, "req-1", &json!({"action": "start-round"}))
        .await;
    let answer = &handled.answer;
    assert_eq!(answer["outcome"], "ran", "{answer}");
    assert_eq!(answer["event"], "start-round");
    // Launched and adopted; now waiting for the agent to report the node synced.
    assert_eq!(answer["round"]["step"], "wait_synced", "{answer}");
    let round_id = answer["round"]["id"].as_str().unwrap();
    assert_eq!(round_id, format!("r-{:013}", NOW.as_millis()));
    assert!(
        answer["round"]["node"]
            .as_str()
            .unwrap()
            .starts_with("updater-")
    );
    assert_eq!(answer["finished"], json!([]));
    assert_eq!(answer["latest"], Value::Null, "nothing published yet");
    assert!(answer["transitions"].as_u64().unwrap() >= 1);

    let launches = fakes.scheduler.launches();
    assert_eq!(launches.len(), 1);
    assert_eq!(launches[0].request.role, Role::Updater);
    assert_eq!(
        launches[0].request.zone,
        Zone::new("zone-b"),
        "UPDATER_ZONE"
    );
    assert_eq!(launches[0].request.count, 1);
    assert_eq!(
        launches[0].request.snapshot, None,
        "no snapshot to hydrate from"
    );
    // The lease was given back, and the round saved.
    let lease = fakes.state.get_lease(UPDATER_NAME, NOW).await.unwrap();
    assert_eq!(lease, None);
    let saved = fakes
        .state
        .get_control_state(UPDATER_NAME)
        .await
        .unwrap()
        .unwrap();
    let memory: UpdaterMemory = serde_json::from_str(&saved.body).unwrap();
    assert_eq!(memory.round.unwrap().id, round_id);
    // No snapshot, no round finished: no metric yet.
    assert!(handled.metrics.is_empty(), "{:?}", handled.metrics);

    // A second start-round while the round runs starts nothing new.
    let again = fakes
        .handle(&env, "req-2", &json!({"action": "start-round"}))
        .await;
    assert_eq!(again.answer["round"]["id"], round_id);
    assert_eq!(fakes.scheduler.launches().len(), 1);
}

#[tokio::test]
async fn a_tick_with_nothing_due_does_nothing() {
    let env = env_with_zone();
    let fakes = Fakes::new();
    // The last round started an hour ago; the interval is four hours.
    let memory = UpdaterMemory {
        last_started_at: Some(NOW.minus(Duration::from_secs(3600))),
        ..UpdaterMemory::default()
    };
    fakes
        .state
        .save_control_state(&ControlState {
            name: UPDATER_NAME.to_owned(),
            body: serde_json::to_string(&memory).unwrap(),
            updated_at: NOW,
            version: Version::NEW,
        })
        .await
        .unwrap();
    for event in [
        json!({"action": "tick"}),
        json!({"version": "0", "detail-type": "Scheduled Event", "source": "aws.events", "detail": {}}),
    ] {
        let handled = fakes.handle(&env, "req-tick", &event).await;
        assert_eq!(
            handled.answer,
            json!({
                "outcome": "ran",
                "event": "tick",
                "round": null,
                "finished": [],
                "latest": null,
                "transitions": 0,
            })
        );
        assert!(handled.metrics.is_empty());
    }
    assert!(fakes.scheduler.launches().is_empty());

    // A start-round does not wait for the interval.
    let started = fakes
        .handle(&env, "req-start", &json!({"action": "start-round"}))
        .await;
    assert_eq!(started.answer["round"]["step"], "wait_synced");
    assert_eq!(fakes.scheduler.launches().len(), 1);
}

#[tokio::test]
async fn an_invocation_while_the_lease_is_held_answers_busy() {
    let env = env_with_zone();
    let fakes = Fakes::new();
    // Another invocation (another request id) is in the middle of a tick.
    let held = fakes
        .state
        .acquire_lease(UPDATER_NAME, "req-other", env.lease_ttl, NOW)
        .await
        .unwrap();
    let handled = fakes
        .handle(&env, "req-2", &json!({"action": "start-round"}))
        .await;
    assert_eq!(
        handled.answer,
        json!({
            "outcome": "busy",
            "event": "start-round",
            "holder": "req-other",
            "until_ms": held.expires_at.as_millis(),
        })
    );
    assert!(handled.metrics.is_empty());
    assert!(fakes.scheduler.launches().is_empty(), "nothing was done");
    assert_eq!(
        fakes.state.get_control_state(UPDATER_NAME).await.unwrap(),
        None,
        "the memory was not touched"
    );
    // The holder's lease is still its own.
    let lease = fakes
        .state
        .get_lease(UPDATER_NAME, NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lease.holder, "req-other");

    // Once it is given back, the next invocation runs.
    fakes.state.release_lease(&held).await.unwrap();
    let ran = fakes
        .handle(&env, "req-3", &json!({"action": "start-round"}))
        .await;
    assert_eq!(ran.answer["outcome"], "ran");
    assert_eq!(fakes.scheduler.launches().len(), 1);
}

#[tokio::test]
async fn a_round_without_a_zone_aborts_and_reports_the_metric() {
    // No UPDATER_ZONE and no fleet config: the launch cannot be placed.
    let env = read(&base()).unwrap();
    let fakes = Fakes::new();
    let handled = fakes
        .handle(&env, "req-1", &json!({"action": "start-round"}))
        .await;
    let answer = &handled.answer;
    assert_eq!(answer["round"], Value::Null, "{answer}");
    let finished = answer["finished"].as_array().unwrap();
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0]["outcome"]["outcome"], "aborted");
    assert_eq!(finished[0]["outcome"]["reason"], "launch_failed");
    let aborted: Vec<&Value> = handled
        .metrics
        .iter()
        .filter(|d| d.get("AbortedRounds").is_some())
        .collect();
    assert_eq!(aborted.len(), 1, "{:?}", handled.metrics);
    assert_eq!(aborted[0]["Reason"], "launch_failed");
    assert_eq!(aborted[0]["Fleet"], "mainnet");
    assert_eq!(
        aborted[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "nodefleet"
    );
    assert!(
        handled
            .metrics
            .iter()
            .any(|d| d.get("RoundDuration").is_some())
    );
}
