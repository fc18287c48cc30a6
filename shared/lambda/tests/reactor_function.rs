//! The health-reactor function's adapter without AWS: its settings read from an environment
//! map (every error names its variable), and events through `handle_event` on the stateful
//! fakes, checking the answer and the EMF documents it produces.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nodefleet_aws::ecs::{EcsLaunch, EcsNetwork};
use nodefleet_lambda::env::{Env, EnvError};
use nodefleet_lambda::reactor::{Handled, ReactorEnv, handle_event};
use nodefleet_local::EmbeddedStateStore;
use nodefleet_ports::fakes::{FakeScheduler, FakeTargetRegistry};
use nodefleet_ports::{Timestamp, Zone};
use nodefleet_reactor::reconcile::Ports;
use nodefleet_reactor::service::default_grace;
use serde_json::{Value, json};

fn base() -> HashMap<&'static str, &'static str> {
    HashMap::from([
        ("TABLE_NAME", "nodefleet-state"),
        ("FLEET_NAME", "mainnet"),
        ("CLUSTER", "nodefleet"),
        ("TASK_DEFINITION", "nodefleet-node:3"),
        (
            "TARGET_GROUP_ARN",
            "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/nodes/abc",
        ),
    ])
}

fn read(vars: &HashMap<&'static str, &'static str>) -> Result<ReactorEnv, EnvError> {
    let var = |name: &str| vars.get(name).map(|v| (*v).to_owned());
    ReactorEnv::from_env(Env::new(&var))
}

/// When the handler runs: a fixed `now`, so timestamps in the answer are known.
const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);
/// Room per fake zone: more than the three-node fleets here need.
const ZONE_CAPACITY: u32 = 4;

/// Hands `event` to the handler on empty fakes (zones a, b and c, zone-c with
/// `zone_c_capacity`); returns what it produced and the scheduler to inspect.
async fn handle_on_fakes(
    env: &ReactorEnv,
    zone_c_capacity: u32,
    event: &Value,
) -> (Handled, FakeScheduler) {
    let scheduler = FakeScheduler::with_zones(["zone-a", "zone-b", "zone-c"], ZONE_CAPACITY);
    scheduler.set_capacity(&Zone::new("zone-c"), zone_c_capacity);
    scheduler.set_now(NOW);
    let registry = FakeTargetRegistry::healthy_after(0);
    let state = EmbeddedStateStore::in_memory().unwrap();
    let ports = Ports {
        state: &state,
        scheduler: &scheduler,
        registry: &registry,
    };
    let handled = handle_event(
        ports,
        &env.settings("req"),
        "mainnet",
        event,
        NOW,
        Instant::now(),
    )
    .await
    .unwrap();
    (handled, scheduler)
}

#[test]
fn defaults_fill_everything_but_the_required_names() {
    let env = read(&base()).unwrap();
    assert_eq!(env.scheduler.container_name, "node");
    assert_eq!(env.scheduler.network, EcsNetwork::Bridge);
    assert_eq!(env.scheduler.launch, EcsLaunch::Ec2);
    assert_eq!(env.client, "geth");
    let reservation = nodefleet_reactor::capacity::task_size_for_client("geth").unwrap();
    let size = env.scheduler.task_size.unwrap();
    assert_eq!(
        (size.cpu_units, size.memory_mib),
        (reservation.cpu_units, reservation.memory_mib),
        "RunTask asks for the capacity planner's reservation"
    );
    assert_eq!(env.grace, default_grace("geth").unwrap());
    assert_eq!(env.container_port, 8545);
    assert_eq!(env.replacements_per_hour, 10);
    assert_eq!(env.seed, None, "no seed without SERVING_NODES");
    let settings = env.settings("req-1");
    assert_eq!(settings.owner, "req-1");
    assert!(settings.scope.is_some());
}

#[test]
fn every_required_variable_is_named_when_missing() {
    for name in [
        "TABLE_NAME",
        "FLEET_NAME",
        "CLUSTER",
        "TASK_DEFINITION",
        "TARGET_GROUP_ARN",
    ] {
        let mut vars = base();
        vars.remove(name);
        assert_eq!(read(&vars), Err(EnvError::Missing(name)), "{name}");
        vars.insert(name, "   ");
        assert_eq!(read(&vars), Err(EnvError::Missing(name)), "{name} blank");
    }
}

#[test]
fn bad_values_are_named_with_what_was_expected() {
    for (name, value) in [
        ("NETWORK_MODE", "host"),
        ("NODE_CLIENT", "anvil"),
        ("CONTAINER_PORT", "70000"),
        ("REPLACEMENTS_PER_HOUR", "0"),
        ("REPLACEMENTS_PER_HOUR", "ten"),
        ("GRACE_SECS", "-5"),
    ] {
        let mut vars = base();
        vars.insert(name, value);
        match read(&vars) {
            Err(EnvError::Invalid { name: got, .. }) => assert_eq!(got, name),
            other => panic!("{name}={value}: expected Invalid, got {other:?}"),
        }
    }
    let mut vars = base();
    vars.insert("SERVING_NODES", "6");
    assert_eq!(read(&vars), Err(EnvError::Missing("ZONES")));
    vars.insert("ZONES", "us-east-1a,us-east-1b,us-east-1c");
    vars.insert("STORM_PERCENT", "0");
    assert!(matches!(
        read(&vars),
        Err(EnvError::Invalid {
            name: "STORM_PERCENT",
            ..
        })
    ));
}

#[test]
fn awsvpc_subnets_capacity_provider_and_seed_are_read() {
    let mut vars = base();
    vars.insert("NETWORK_MODE", "awsvpc");
    assert_eq!(read(&vars), Err(EnvError::Missing("SUBNETS_BY_ZONE")));
    vars.insert(
        "SUBNETS_BY_ZONE",
        "us-east-1a=subnet-a1+subnet-a2, us-east-1b=subnet-b",
    );
    vars.insert("SECURITY_GROUPS", "sg-1,sg-2");
    vars.insert("CAPACITY_PROVIDER", "nodefleet-i3");
    vars.insert("NODE_CLIENT", "reth");
    vars.insert("GRACE_SECS", "900");
    vars.insert("SERVING_NODES", "6");
    vars.insert("ZONES", "us-east-1a,us-east-1b,us-east-1c");
    let env = read(&vars).unwrap();
    match &env.scheduler.network {
        EcsNetwork::Awsvpc {
            subnets_by_zone,
            security_groups,
        } => {
            assert_eq!(
                subnets_by_zone[&Zone::new("us-east-1a")],
                vec!["subnet-a1", "subnet-a2"]
            );
            assert_eq!(subnets_by_zone[&Zone::new("us-east-1b")], vec!["subnet-b"]);
            assert_eq!(security_groups, &vec!["sg-1", "sg-2"]);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(&env.scheduler.launch, EcsLaunch::CapacityProviders(p) if p[0].capacity_provider == "nodefleet-i3")
    );
    assert_eq!(env.grace, Duration::from_secs(900));
    let seed = env.seed.unwrap();
    assert_eq!(seed.serving_nodes, 6);
    assert_eq!(seed.healthy_floor, 4, "two thirds of six");
    assert_eq!(seed.storm_percent, 34);
    assert_eq!(seed.zones.len(), 3);
    vars.insert("SUBNETS_BY_ZONE", "subnet-without-zone");
    assert!(matches!(
        read(&vars),
        Err(EnvError::Invalid {
            name: "SUBNETS_BY_ZONE",
            ..
        })
    ));
}

#[tokio::test]
async fn a_schedule_event_fills_the_fleet_and_reports_metrics() {
    let mut vars = base();
    vars.insert("SERVING_NODES", "3");
    vars.insert("ZONES", "zone-a,zone-b,zone-c");
    vars.insert("CLUSTER", "nodefleet");
    let env = read(&vars).unwrap();
    let event = json!({
        "version": "0", "id": "tick", "detail-type": "Scheduled Event", "source": "aws.events",
        "account": "123456789012", "time": "2027-01-15T08:00:00Z", "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/nodefleet-reactor"],
        "detail": {}
    });
    let (handled, _) = handle_on_fakes(&env, ZONE_CAPACITY, &event).await;
    assert_eq!(handled.answer["trigger"], "schedule");
    assert_eq!(handled.answer["reconciled"], true);
    assert_eq!(handled.answer["started"].as_array().unwrap().len(), 3);
    assert_eq!(handled.answer["actions"].as_array().unwrap().len(), 3);
    assert!(
        handled.answer["actions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["result"] == "done" && a["action"]["action"] == "launch")
    );
    let main = &handled.metrics[0];
    let directive = &main["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(directive["Namespace"], "nodefleet");
    assert_eq!(directive["Dimensions"], json!([["Fleet"]]));
    let names: Vec<&str> = directive["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Name"].as_str().unwrap())
        .collect();
    for name in [
        "ReconcileDuration",
        "ReplacementsLaunched",
        "NodesLaunched",
        "UnhealthyNodes",
        "StormGuardTrips",
    ] {
        assert!(names.contains(&name), "{name} in {names:?}");
        assert!(main[name].is_number(), "{name} has a value");
    }
    assert_eq!(main["Fleet"], "mainnet");
    assert_eq!(main["NodesLaunched"], 3.0);
    assert_eq!(main["ReplacementsLaunched"], 0.0);
    assert_eq!(main["_aws"]["Timestamp"], NOW.as_millis());
    assert_eq!(
        handled.metrics.len(),
        1,
        "no launch failed: no per-reason document"
    );
}

#[tokio::test]
async fn launch_failures_are_counted_by_reason() {
    let mut vars = base();
    vars.insert("SERVING_NODES", "3");
    vars.insert("ZONES", "zone-a,zone-b,zone-c");
    let env = read(&vars).unwrap();
    // zone-c has no room: its fill fails with RESOURCE:MEMORY.
    let (handled, _) = handle_on_fakes(
        &env,
        0,
        &json!({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}}),
    )
    .await;
    let by_reason: Vec<&Value> = handled
        .metrics
        .iter()
        .filter(|d| d.get("Reason").is_some())
        .collect();
    assert_eq!(by_reason.len(), 1, "{:?}", handled.metrics);
    assert_eq!(by_reason[0]["Reason"], "RESOURCE:MEMORY");
    assert_eq!(by_reason[0]["LaunchFailures"], 1.0);
    assert_eq!(
        by_reason[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        json!([["Fleet", "Reason"]])
    );
}

/// Every sample event the reactor is wired to (AWS's published shapes, kept as fixtures in
/// shared/reactor) wakes one reconcile through the Lambda's handler, with its kind named.
#[tokio::test]
async fn every_trigger_fixture_wakes_a_reconcile() {
    let fixtures = [
        ("alarm-unhealthy-host-count.json", "alarm"),
        ("alarm-metric-math.json", "alarm"),
        ("alarm-composite.json", "alarm"),
        ("ecs-task-stopped.json", "task_stopped"),
        ("ecs-task-running.json", "task_change"),
        ("spot-interruption-warning.json", "spot_interruption"),
        ("scheduled-event.json", "schedule"),
        ("ec2-instance-state-change.json", "unknown"),
        // Another cluster's task: not the fleet's, nothing is read or launched.
        ("ecs-task-running-fargate-foreign.json", "task_change"),
    ];
    let mut vars = base();
    vars.insert("SERVING_NODES", "3");
    vars.insert("ZONES", "zone-a,zone-b,zone-c");
    // The ECS fixtures are of cluster `nodefleet`, task group `nodefleet:mainnet`.
    vars.insert("CLUSTER", "nodefleet");
    let env = read(&vars).unwrap();
    for (name, kind) in fixtures {
        let path = format!(
            "{}/../reactor/tests/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let event: Value = serde_json::from_str(&text).unwrap();
        let (handled, scheduler) = handle_on_fakes(&env, ZONE_CAPACITY, &event).await;
        assert_eq!(handled.answer["trigger"], kind, "{name}");
        if name.contains("foreign") {
            assert_eq!(handled.answer["reconciled"], false, "{name}");
            assert!(scheduler.launches().is_empty(), "{name}");
            continue;
        }
        assert_eq!(
            handled.answer["reconciled"], true,
            "{name}: {}",
            handled.answer
        );
        assert_eq!(
            handled.answer["started"].as_array().unwrap().len(),
            3,
            "{name}: an empty fleet is filled whatever woke the reconcile"
        );
    }
}
