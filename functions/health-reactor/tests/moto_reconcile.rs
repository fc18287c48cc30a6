//! The real `health-reactor` binary, started against a fake Lambda Runtime API, reconciling
//! a fleet whose AWS resources live on moto: the first schedule tick seeds the config and
//! fills the fleet with one RunTask per node, the next registers their targets, a crashed
//! task's STOPPED event launches exactly one replacement however often it is delivered, and
//! another fleet's event reconciles nothing. moto's gaps (placement ignored, every target
//! healthy) are covered by the fakes in shared/reactor's tests.

#![allow(clippy::unwrap_used)]

mod support;

use aws_sdk_elasticloadbalancingv2::Client as ElbClient;
use serde_json::Value;
use support::{MotoFleet, ReactorProcess, schedule_event};

const BINARY: &str = env!("CARGO_BIN_EXE_health-reactor");

fn launches_done(answer: &Value) -> usize {
    answer["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"]["action"] == "launch" && a["result"] == "done")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_reconcile_per_event_heals_the_fleet_on_moto() {
    let fleet = MotoFleet::create(&["us-east-1a", "us-east-1b", "us-east-1c"], 1).await;
    let reactor = ReactorProcess::start(BINARY, fleet.env(3)).await;

    let first = reactor.reconcile(&schedule_event()).await;
    assert_eq!(first["trigger"], "schedule", "{first}");
    assert_eq!(launches_done(&first), 3, "{first}");
    assert_eq!(fleet.running_tasks().await.len(), 3);

    // The tasks' targets are registered once their host ports are known.
    let second = reactor.reconcile(&schedule_event()).await;
    let elb = ElbClient::new(&fleet.sdk);
    let health = elb
        .describe_target_health()
        .target_group_arn(&fleet.target_group_arn)
        .send()
        .await
        .unwrap();
    assert_eq!(
        health.target_health_descriptions().len(),
        3,
        "second reconcile: {second}"
    );

    // A crash, its event delivered three times: one replacement.
    let victim = fleet.running_tasks().await[0].clone();
    let event = fleet.crash(&victim).await;
    let mut launched = 0;
    for _ in 0..3 {
        let answer = reactor.reconcile(&event).await;
        assert_eq!(answer["trigger"], "task_stopped", "{answer}");
        launched += launches_done(&answer);
    }
    assert_eq!(
        launched, 1,
        "duplicate events launch exactly one replacement"
    );
    let running = fleet.running_tasks().await;
    assert_eq!(running.len(), 3, "back to full strength");
    assert!(!running.contains(&victim));

    // Another cluster's task event is not the fleet's.
    let mut foreign = event.clone();
    foreign["detail"]["clusterArn"] =
        Value::String("arn:aws:ecs:us-east-1:123456789012:cluster/other".to_owned());
    let answer = reactor.reconcile(&foreign).await;
    assert_eq!(answer["reconciled"], false, "{answer}");
}

#[tokio::test]
async fn a_missing_setting_fails_at_init_naming_it() {
    let fleet = MotoFleet::create(&["us-east-1a"], 1).await;
    let env: Vec<(String, String)> = fleet
        .env(1)
        .into_iter()
        .filter(|(k, _)| k != "TARGET_GROUP_ARN")
        .collect();
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        tokio::process::Command::new(BINARY)
            .env_clear()
            .envs(env)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("health-reactor configuration: TARGET_GROUP_ARN is not set"),
        "stderr: {stderr}"
    );
}
