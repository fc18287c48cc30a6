//! Trigger parsing against AWS's published sample events (`tests/fixtures`, sources in its
//! README): each fixture gives the expected [`Trigger`] with its fields; foreign task events are
//! recognised; malformed input gives typed errors; arbitrary JSON never panics.
#![allow(clippy::unwrap_used)]

use nodefleet_ports::Timestamp;
use nodefleet_ports::model::{TaskId, Zone};
use nodefleet_ports::scheduler::{PortBinding, TaskStatus};
use nodefleet_reactor::triggers::{
    AlarmState, ContainerExit, FleetScope, SPOT_INTERRUPTION_NOTICE, SpotAction, Trigger,
    TriggerError, fleet_task_group, parse_trigger, parse_trigger_bytes,
};
use proptest::prelude::*;
use serde_json::{Value, json};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap()
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_slice(&fixture(name)).unwrap()
}

fn parse_fixture(name: &str) -> Trigger {
    parse_trigger_bytes(&fixture(name)).unwrap()
}

const FLEET_TASK: &str =
    "arn:aws:ecs:us-east-1:123456789012:task/nodefleet/5f3c1b2a9d8e4f6a8b7c6d5e4f3a2b1c";
const FLEET_CLUSTER: &str = "arn:aws:ecs:us-east-1:123456789012:cluster/nodefleet";

fn mainnet() -> FleetScope {
    FleetScope::new("nodefleet", "mainnet")
}

#[test]
fn unhealthy_host_count_alarm_names_its_target_group_and_zone() {
    let Trigger::AlarmStateChange(alarm) = parse_fixture("alarm-unhealthy-host-count.json") else {
        panic!("not an alarm state change");
    };
    assert_eq!(alarm.alarm, "nodefleet-mainnet-unhealthy-us-east-1b");
    assert_eq!(alarm.state, AlarmState::Alarm);
    assert_eq!(alarm.previous_state, Some(AlarmState::Ok));
    assert_eq!(
        alarm.target_group.as_deref(),
        Some("targetgroup/nodefleet-mainnet/73e2d6bc24d8a067")
    );
    assert_eq!(
        alarm.load_balancer.as_deref(),
        Some("net/nodefleet-mainnet/50dc6c495c0c9188")
    );
    assert_eq!(alarm.zone, Some(Zone::new("us-east-1b")));
    assert!(alarm.reason.starts_with("Threshold Crossed"));
    assert_eq!(alarm.at, Some(Timestamp::from_millis(1_715_679_100_000)));
}

#[test]
fn alarm_back_to_ok_and_insufficient_data_are_read() {
    let mut event = fixture_json("alarm-unhealthy-host-count.json");
    event["detail"]["state"]["value"] = json!("OK");
    event["detail"]["previousState"]["value"] = json!("ALARM");
    let Trigger::AlarmStateChange(alarm) = parse_trigger(&event).unwrap() else {
        panic!("not an alarm state change");
    };
    assert_eq!(
        (alarm.state, alarm.previous_state),
        (AlarmState::Ok, Some(AlarmState::Alarm))
    );

    event["detail"]["state"]["value"] = json!("INSUFFICIENT_DATA");
    let Trigger::AlarmStateChange(alarm) = parse_trigger(&event).unwrap() else {
        panic!("not an alarm state change");
    };
    assert_eq!(alarm.state, AlarmState::InsufficientData);
}

#[test]
fn metric_math_alarm_skips_expressions_and_has_no_fleet_dimensions() {
    let Trigger::AlarmStateChange(alarm) = parse_fixture("alarm-metric-math.json") else {
        panic!("not an alarm state change");
    };
    assert_eq!(alarm.alarm, "TotalNetworkTrafficTooHigh");
    assert_eq!(alarm.state, AlarmState::Alarm);
    assert_eq!(alarm.previous_state, Some(AlarmState::InsufficientData));
    assert_eq!((alarm.target_group, alarm.zone), (None, None));
    assert_eq!(alarm.at, Some(Timestamp::from_millis(1_570_036_848_000)));
}

#[test]
fn composite_alarm_parses_without_metrics() {
    let Trigger::AlarmStateChange(alarm) = parse_fixture("alarm-composite.json") else {
        panic!("not an alarm state change");
    };
    assert_eq!(alarm.alarm, "ServiceAggregatedAlarm");
    assert_eq!(alarm.state, AlarmState::Alarm);
    assert_eq!(alarm.previous_state, Some(AlarmState::Ok));
    assert_eq!(alarm.target_group, None);
}

#[test]
fn stopped_fleet_task_is_task_stopped_with_its_exit() {
    let trigger = parse_fixture("ecs-task-stopped.json");
    assert!(mainnet().admits(&trigger));
    let Trigger::TaskStopped(task) = trigger else {
        panic!("not a stopped task");
    };
    assert_eq!(task.cluster_arn, FLEET_CLUSTER);
    assert_eq!(task.task_arn, TaskId::new(FLEET_TASK));
    assert_eq!(task.group.as_deref(), Some("nodefleet:mainnet"));
    assert_eq!(task.started_by.as_deref(), Some("nodefleet-mainnet"));
    assert_eq!(
        task.stopped_reason.as_deref(),
        Some("Essential container in task exited")
    );
    assert_eq!(task.stop_code.as_deref(), Some("EssentialContainerExited"));
    assert_eq!(task.availability_zone, Some(Zone::new("us-east-1b")));
    assert_eq!(
        task.containers,
        vec![ContainerExit {
            name: "node".to_owned(),
            exit_code: Some(137),
            reason: Some("OutOfMemoryError: Container killed due to memory usage".to_owned()),
        }]
    );
    assert_eq!(task.at, Some(Timestamp::from_millis(1_715_677_927_000)));
}

#[test]
fn running_fleet_task_is_a_change_hint_with_host_ports() {
    let trigger = parse_fixture("ecs-task-running.json");
    assert!(mainnet().admits(&trigger));
    let Trigger::TaskChange(task) = trigger else {
        panic!("not a task change");
    };
    assert_eq!(
        task.task_arn,
        TaskId::new(
            "arn:aws:ecs:us-east-1:123456789012:task/nodefleet/8a7b6c5d4e3f40a1b2c3d4e5f6a7b8c9"
        )
    );
    assert_eq!(task.last_status, TaskStatus::Running);
    assert_eq!(task.desired_status, Some(TaskStatus::Running));
    assert_eq!(task.availability_zone, Some(Zone::new("us-east-1c")));
    assert_eq!(
        task.bindings,
        vec![
            PortBinding {
                container_port: 8545,
                host_port: 32771
            },
            PortBinding {
                container_port: 8080,
                host_port: 32772
            },
        ]
    );
    assert_eq!(task.at, Some(Timestamp::from_millis(1_715_678_092_000)));
}

#[test]
fn stopping_task_is_a_change_not_a_stop() {
    let mut event = fixture_json("ecs-task-stopped.json");
    event["detail"]["lastStatus"] = json!("DEACTIVATING");
    let Trigger::TaskChange(task) = parse_trigger(&event).unwrap() else {
        panic!("not a task change");
    };
    assert_eq!(task.last_status, TaskStatus::Stopping);
    assert_eq!(task.desired_status, Some(TaskStatus::Stopped));
}

#[test]
fn documented_fargate_task_is_foreign_to_the_fleet() {
    let trigger = parse_fixture("ecs-task-running-fargate-foreign.json");
    let Trigger::TaskChange(task) = &trigger else {
        panic!("not a task change");
    };
    assert_eq!(task.group.as_deref(), Some("family:sample-fargate"));
    assert!(task.bindings.is_empty());
    assert!(!mainnet().admits(&trigger));
    assert!(
        FleetScope::new("FargateCluster", "sample")
            .owns_task(&task.cluster_arn, Some("nodefleet:sample"))
    );
}

#[test]
fn stopped_task_of_another_group_or_cluster_is_foreign() {
    let mut other_group = fixture_json("ecs-task-stopped.json");
    other_group["detail"]["group"] = json!("nodefleet:testnet");
    assert!(!mainnet().admits(&parse_trigger(&other_group).unwrap()));

    let mut service_task = fixture_json("ecs-task-stopped.json");
    service_task["detail"]["group"] = json!("service:gateway");
    assert!(!mainnet().admits(&parse_trigger(&service_task).unwrap()));

    let mut no_group = fixture_json("ecs-task-stopped.json");
    no_group["detail"].as_object_mut().unwrap().remove("group");
    assert!(!mainnet().admits(&parse_trigger(&no_group).unwrap()));

    let mut other_cluster = fixture_json("ecs-task-stopped.json");
    other_cluster["detail"]["clusterArn"] =
        json!("arn:aws:ecs:us-east-1:123456789012:cluster/nodefleet-staging");
    assert!(!mainnet().admits(&parse_trigger(&other_cluster).unwrap()));
}

#[test]
fn fleet_cluster_matches_by_name_or_arn() {
    let group = fleet_task_group("mainnet");
    assert_eq!(group, "nodefleet:mainnet");
    assert!(FleetScope::new("nodefleet", "mainnet").owns_task(FLEET_CLUSTER, Some(&group)));
    assert!(FleetScope::new(FLEET_CLUSTER, "mainnet").owns_task(FLEET_CLUSTER, Some(&group)));
    assert!(!FleetScope::new("node", "mainnet").owns_task(FLEET_CLUSTER, Some(&group)));
    assert!(!FleetScope::new("nodefleet", "main").owns_task(FLEET_CLUSTER, Some(&group)));
}

#[test]
fn spot_warning_gives_instance_action_and_its_time() {
    let trigger = parse_fixture("spot-interruption-warning.json");
    assert!(mainnet().admits(&trigger));
    let Trigger::SpotInterruption(spot) = trigger else {
        panic!("not a spot interruption");
    };
    let warned = Timestamp::from_millis(1_715_680_920_000);
    assert_eq!(spot.instance_id, "i-1234567890abcdef0");
    assert_eq!(spot.action, SpotAction::Terminate);
    assert_eq!(spot.warned_at, Some(warned));
    assert_eq!(
        spot.instance_action_time,
        Some(Timestamp::from_millis(1_715_681_040_000))
    );
    assert_eq!(SPOT_INTERRUPTION_NOTICE.as_secs(), 120);
}

#[test]
fn spot_actions_stop_hibernate_and_new_ones_are_kept() {
    let mut event = fixture_json("spot-interruption-warning.json");
    for (action, expected) in [
        ("stop", SpotAction::Stop),
        ("hibernate", SpotAction::Hibernate),
        ("reboot", SpotAction::Other("reboot".to_owned())),
    ] {
        event["detail"]["instance-action"] = json!(action);
        let Trigger::SpotInterruption(spot) = parse_trigger(&event).unwrap() else {
            panic!("not a spot interruption");
        };
        assert_eq!(spot.action, expected);
    }
}

#[test]
fn scheduled_event_is_the_fallback_tick() {
    assert_eq!(
        parse_fixture("scheduled-event.json"),
        Trigger::Schedule {
            at: Some(Timestamp::from_millis(1_444_323_186_000))
        }
    );
}

#[test]
fn unknown_event_still_wakes_a_reconcile() {
    let trigger = parse_fixture("ec2-instance-state-change.json");
    assert_eq!(
        trigger,
        Trigger::Unknown {
            detail_type: "EC2 Instance State-change Notification".to_owned(),
            source: "aws.ec2".to_owned(),
        }
    );
    assert!(mainnet().admits(&trigger));

    // A known detail-type from an unexpected source is not trusted as that event.
    let mut spoofed = fixture_json("spot-interruption-warning.json");
    spoofed["source"] = json!("custom.tests");
    assert!(matches!(
        parse_trigger(&spoofed).unwrap(),
        Trigger::Unknown { .. }
    ));
}

#[test]
fn event_without_time_parses_with_no_time() {
    let mut event = fixture_json("spot-interruption-warning.json");
    event.as_object_mut().unwrap().remove("time");
    let Trigger::SpotInterruption(spot) = parse_trigger(&event).unwrap() else {
        panic!("not a spot interruption");
    };
    assert_eq!((spot.warned_at, spot.instance_action_time), (None, None));
}

#[test]
fn malformed_inputs_give_typed_errors() {
    assert!(matches!(
        parse_trigger_bytes(b"{\"detail-type\":"),
        Err(TriggerError::NotJson { .. })
    ));
    assert_eq!(
        parse_trigger(&json!(["CloudWatch Alarm State Change"])),
        Err(TriggerError::NotAnObject)
    );
    assert_eq!(
        parse_trigger(&json!({"source": "aws.ecs", "detail": {}})),
        Err(TriggerError::MissingField {
            field: "detail-type"
        })
    );
    assert_eq!(
        parse_trigger(&json!({"detail-type": 7, "source": "aws.ecs", "detail": {}})),
        Err(TriggerError::MissingField {
            field: "detail-type"
        })
    );
    assert_eq!(
        parse_trigger(&json!({"detail-type": "Scheduled Event", "detail": {}})),
        Err(TriggerError::MissingField { field: "source" })
    );

    let mut bad_time = fixture_json("scheduled-event.json");
    bad_time["time"] = json!("yesterday");
    assert!(matches!(
        parse_trigger(&bad_time),
        Err(TriggerError::MalformedEnvelope { .. })
    ));

    let mut no_detail = fixture_json("scheduled-event.json");
    no_detail.as_object_mut().unwrap().remove("detail");
    assert!(matches!(
        parse_trigger(&no_detail),
        Err(TriggerError::MalformedEnvelope { .. })
    ));
}

#[test]
fn known_events_with_broken_details_give_malformed_detail() {
    let mut task = fixture_json("ecs-task-stopped.json");
    task["detail"].as_object_mut().unwrap().remove("taskArn");
    assert!(matches!(
        parse_trigger(&task),
        Err(TriggerError::MalformedDetail {
            detail_type: "ECS Task State Change",
            ..
        })
    ));

    let mut spot = fixture_json("spot-interruption-warning.json");
    spot["detail"]["instance-id"] = json!(42);
    assert!(matches!(
        parse_trigger(&spot),
        Err(TriggerError::MalformedDetail {
            detail_type: "EC2 Spot Instance Interruption Warning",
            ..
        })
    ));

    let mut alarm = fixture_json("alarm-unhealthy-host-count.json");
    alarm["detail"].as_object_mut().unwrap().remove("state");
    assert!(matches!(
        parse_trigger(&alarm),
        Err(TriggerError::MalformedDetail {
            detail_type: "CloudWatch Alarm State Change",
            ..
        })
    ));

    let mut alarm_name = fixture_json("alarm-unhealthy-host-count.json");
    alarm_name["detail"]["alarmName"] = Value::Null;
    assert!(matches!(
        parse_trigger(&alarm_name),
        Err(TriggerError::MalformedDetail { .. })
    ));
}

/// Any JSON value, nested a few levels.
fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::hash_map(".{0,8}", inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A known envelope with an arbitrary detail: reaches the detail parsers.
fn known_event_with_arbitrary_detail() -> impl Strategy<Value = Value> {
    let kinds = prop_oneof![
        Just(("aws.cloudwatch", "CloudWatch Alarm State Change")),
        Just(("aws.ecs", "ECS Task State Change")),
        Just(("aws.ec2", "EC2 Spot Instance Interruption Warning")),
        Just(("aws.events", "Scheduled Event")),
    ];
    (kinds, arbitrary_json()).prop_map(|((source, detail_type), detail)| {
        json!({"version": "0", "detail-type": detail_type, "source": source, "detail": detail})
    })
}

proptest! {
    #[test]
    fn arbitrary_json_never_panics(value in arbitrary_json()) {
        let _ = parse_trigger(&value);
        let _ = parse_trigger_bytes(value.to_string().as_bytes());
    }

    #[test]
    fn arbitrary_details_of_known_events_never_panic(event in known_event_with_arbitrary_detail()) {
        // Either a trigger or a typed error; a scheduled event ignores its detail.
        let result = parse_trigger(&event);
        if event["detail-type"] == "Scheduled Event" {
            prop_assert_eq!(result, Ok(Trigger::Schedule { at: None }));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_trigger_bytes(&bytes);
    }
}
