//! `ElbTargetRegistry` against the target-registry contract on moto, with IP targets
//! (awsvpc) and with instance targets (bridge), plus aws-smithy-mocks tests of what moto
//! never answers: unhealthy and draining targets with reasons, zones, throttling, a missing
//! target group, a rejected target.
//!
//! Known moto gaps (5.2.5), each covered elsewhere:
//!
//! - moto reports every registered target `healthy` at once: there is no `initial`, no
//!   failing health check, no `draining`. The contract allows that first look; the health
//!   mapping is tested with mocks below, and health transitions are modelled by
//!   `FakeTargetRegistry` (nodefleet-ports).
//! - moto keys targets by id alone, so one instance with two ports is one target. The
//!   contract's targets all have distinct ids.
//! - moto rejects deregistering a target that is not registered with `InvalidTarget` (the
//!   adapter skips such targets, one at a time, so that case runs on moto).
//! - A target group needs a VPC, and instance targets need running instances; there is no
//!   EC2 SDK here, so the fixture calls moto's EC2 query API over plain HTTP.

#![allow(clippy::unwrap_used)]

mod support;

use nodefleet_testkit::moto::{ec2_query as moto_ec2, first_xml_value as first_value};

use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use aws_sdk_elasticloadbalancingv2::Client;
use aws_sdk_elasticloadbalancingv2::operation::deregister_targets::DeregisterTargetsOutput;
use aws_sdk_elasticloadbalancingv2::operation::describe_target_health::DescribeTargetHealthOutput;
use aws_sdk_elasticloadbalancingv2::types::{
    ProtocolEnum, TargetDescription, TargetHealthDescription, TargetHealthReasonEnum,
    TargetHealthStateEnum, TargetTypeEnum,
};
use aws_smithy_mocks::{Rule, mock};
use aws_smithy_runtime_api::http::{Response, StatusCode};
use aws_smithy_types::body::SdkBody;
use nodefleet_aws::ElbTargetRegistry;
use nodefleet_ports::contract::target_registry::{
    TargetRegistryFixture, TargetSource, targets_from_fn,
};
use nodefleet_ports::{NetworkMode, RegistryError, Target, TargetRegistry, TargetState, Zone};

// ---------------------------------------------------------------------------------------
// moto: the contract
// ---------------------------------------------------------------------------------------

/// A target group of `kind` in moto's default VPC.
async fn moto_target_group(kind: TargetTypeEnum) -> (Client, String) {
    let vpcs = moto_ec2(
        "Action=DescribeVpcs&Version=2016-11-15&Filter.1.Name=is-default&Filter.1.Value.1=true",
    )
    .await;
    let vpc = first_value(&vpcs, "vpcId");
    let client = Client::new(&support::moto_config());
    let group = client
        .create_target_group()
        .name(support::unique_name("nf-tg"))
        .protocol(ProtocolEnum::Tcp)
        .port(8545)
        .vpc_id(vpc)
        .target_type(kind)
        .health_check_path("/health")
        .send()
        .await
        .unwrap();
    let arn = group.target_groups()[0]
        .target_group_arn()
        .unwrap()
        .to_owned();
    (client, arn)
}

/// Distinct IPs in the default VPC's 172.31.0.0/16, across every test of the run.
fn next_ip_target() -> Target {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Target {
        id: format!("172.31.{}.{}", (n / 250) % 250, n % 250 + 1),
        port: 8545,
    }
}

async fn ip_fixture() -> TargetRegistryFixture<ElbTargetRegistry> {
    let (client, arn) = moto_target_group(TargetTypeEnum::Ip).await;
    TargetRegistryFixture::new(
        ElbTargetRegistry::new(client, arn, NetworkMode::Awsvpc),
        targets_from_fn(next_ip_target),
    )
}

nodefleet_ports::target_registry_contract!(ip_fixture());

/// Instance targets: a running moto EC2 instance each, on a dynamic host port.
#[derive(Debug)]
struct RunningInstances;

#[async_trait]
impl TargetSource for RunningInstances {
    async fn make_target(&mut self) -> Target {
        let answer = moto_ec2(
            "Action=RunInstances&Version=2016-11-15&ImageId=ami-12c6146b&MinCount=1&MaxCount=1\
             &InstanceType=i3.2xlarge&Placement.AvailabilityZone=us-east-1a",
        )
        .await;
        Target {
            id: first_value(&answer, "instanceId"),
            port: 32768,
        }
    }
}

mod instance_targets {
    //! The contract again on an `instance` target group (bridge networking).
    use super::*;

    async fn instance_fixture() -> TargetRegistryFixture<ElbTargetRegistry> {
        let (client, arn) = moto_target_group(TargetTypeEnum::Instance).await;
        TargetRegistryFixture::new(
            ElbTargetRegistry::new(client, arn, NetworkMode::Bridge),
            RunningInstances,
        )
    }

    nodefleet_ports::target_registry_contract!(instance_fixture());
}

#[tokio::test]
async fn a_missing_target_group_on_moto_is_not_found() {
    let client = Client::new(&support::moto_config());
    let registry = ElbTargetRegistry::new(
        client,
        "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/nf-gone/0123456789abcdef",
        NetworkMode::Awsvpc,
    );
    let err = registry.describe_health().await.unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err:?}");
    assert!(!err.is_retryable());
    let err = registry.register(&[next_ip_target()]).await.unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err:?}");
}

// ---------------------------------------------------------------------------------------
// aws-smithy-mocks: what moto never answers
// ---------------------------------------------------------------------------------------

const GROUP_ARN: &str = "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/nf/abc";

fn mocked(rules: &[&Rule], mode: NetworkMode) -> ElbTargetRegistry {
    let config = aws_sdk_elasticloadbalancingv2::config::Builder::from(&support::mock_config())
        .interceptor(support::mock_interceptor(rules))
        .build();
    ElbTargetRegistry::new(Client::from_conf(config), GROUP_ARN, mode)
}

/// An ELBv2 (query protocol) error answer, parsed by the SDK as the real service's would be.
fn elb_error(status: u16, code: &str, message: &str) -> Response {
    Response::new(
        StatusCode::try_from(status).unwrap(),
        SdkBody::from(format!(
            "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>\
             <Message>{message}</Message></Error><RequestId>r-1</RequestId></ErrorResponse>"
        )),
    )
}

fn health(
    id: &str,
    zone: Option<&str>,
    state: TargetHealthStateEnum,
    reason: Option<TargetHealthReasonEnum>,
    description: Option<&str>,
) -> TargetHealthDescription {
    let mut target = TargetDescription::builder().id(id).port(32768);
    if let Some(zone) = zone {
        target = target.availability_zone(zone);
    }
    let mut health = aws_sdk_elasticloadbalancingv2::types::TargetHealth::builder().state(state);
    if let Some(reason) = reason {
        health = health.reason(reason);
    }
    if let Some(description) = description {
        health = health.description(description);
    }
    TargetHealthDescription::builder()
        .target(target.build())
        .target_health(health.build())
        .build()
}

#[tokio::test]
async fn health_states_reasons_and_zones_are_read() {
    let describe = mock!(Client::describe_target_health).then_output(|| {
        DescribeTargetHealthOutput::builder()
            .target_health_descriptions(health(
                "i-1",
                Some("us-east-1a"),
                TargetHealthStateEnum::Initial,
                Some(TargetHealthReasonEnum::RegistrationInProgress),
                None,
            ))
            .target_health_descriptions(health(
                "i-2",
                Some("us-east-1b"),
                TargetHealthStateEnum::Unhealthy,
                Some(TargetHealthReasonEnum::FailedHealthChecks),
                Some("Health checks failed with these codes: [503]"),
            ))
            .target_health_descriptions(health(
                "i-3",
                Some("all"),
                TargetHealthStateEnum::Draining,
                Some(TargetHealthReasonEnum::DeregistrationInProgress),
                None,
            ))
            .target_health_descriptions(health(
                "i-4",
                None,
                TargetHealthStateEnum::UnhealthyDraining,
                None,
                None,
            ))
            .build()
    });
    let registry = mocked(&[&describe], NetworkMode::Bridge);
    let healths = registry.describe_health().await.unwrap();
    let by_id = |id: &str| healths.iter().find(|h| h.target.id == id).unwrap().clone();

    let initial = by_id("i-1");
    assert_eq!(initial.state, TargetState::Initial);
    assert_eq!(
        initial.reason.as_deref(),
        Some("Elb.RegistrationInProgress")
    );
    assert_eq!(initial.zone, Some(Zone::new("us-east-1a")));
    assert_eq!(initial.target.port, 32768);

    let unhealthy = by_id("i-2");
    assert_eq!(unhealthy.state, TargetState::Unhealthy);
    assert_eq!(
        unhealthy.reason.as_deref(),
        Some("Target.FailedHealthChecks")
    );
    assert_eq!(
        unhealthy.description.as_deref(),
        Some("Health checks failed with these codes: [503]")
    );

    let draining = by_id("i-3");
    assert_eq!(draining.state, TargetState::Draining);
    assert_eq!(draining.zone, None, "\"all\" is no zone");
    assert_eq!(by_id("i-4").state, TargetState::Unhealthy);
}

#[tokio::test]
async fn throttling_is_retryable_and_a_missing_group_or_bad_target_is_not() {
    let throttled = mock!(Client::describe_target_health)
        .then_http_response(|| elb_error(400, "Throttling", "Rate exceeded"));
    let err = mocked(&[&throttled], NetworkMode::Bridge)
        .describe_health()
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Throttled { .. }), "{err:?}");
    assert!(err.is_retryable());

    let missing = mock!(Client::register_targets).then_http_response(|| {
        elb_error(
            400,
            "TargetGroupNotFound",
            "One or more target groups not found",
        )
    });
    let target = Target {
        id: "i-1".into(),
        port: 32768,
    };
    let err = mocked(&[&missing], NetworkMode::Bridge)
        .register(std::slice::from_ref(&target))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err:?}");

    let invalid = mock!(Client::register_targets).then_http_response(|| {
        elb_error(
            400,
            "InvalidTarget",
            "The following targets are not in a running state",
        )
    });
    let err = mocked(&[&invalid], NetworkMode::Bridge)
        .register(std::slice::from_ref(&target))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::InvalidTarget { .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_target_of_the_wrong_kind_is_refused_before_any_call() {
    let register = mock!(Client::register_targets).then_output(|| {
        aws_sdk_elasticloadbalancingv2::operation::register_targets::RegisterTargetsOutput::builder(
        )
        .build()
    });
    let ip = Target {
        id: "10.0.0.7".into(),
        port: 8545,
    };
    let instance = Target {
        id: "i-0abc".into(),
        port: 32768,
    };
    let bridge = mocked(&[&register], NetworkMode::Bridge);
    let err = bridge
        .register(std::slice::from_ref(&ip))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::InvalidTarget { .. }),
        "{err:?}"
    );
    let awsvpc = mocked(&[&register], NetworkMode::Awsvpc);
    let err = awsvpc
        .register(std::slice::from_ref(&instance))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::InvalidTarget { .. }),
        "{err:?}"
    );
    assert_eq!(register.num_calls(), 0);
    awsvpc.register(std::slice::from_ref(&ip)).await.unwrap();
    bridge
        .register(std::slice::from_ref(&instance))
        .await
        .unwrap();
    assert_eq!(register.num_calls(), 2);
}

#[tokio::test]
async fn a_deregistration_rejected_for_an_unknown_target_goes_one_by_one() {
    let batch = mock!(Client::deregister_targets)
        .match_requests(|input| input.targets().len() > 1)
        .then_http_response(|| {
            elb_error(400, "InvalidTarget", "The specified target does not exist")
        });
    let unknown = mock!(Client::deregister_targets)
        .match_requests(|input| input.targets()[0].id() == Some("i-unknown"))
        .then_http_response(|| {
            elb_error(400, "InvalidTarget", "The specified target does not exist")
        });
    let known = mock!(Client::deregister_targets)
        .then_output(|| DeregisterTargetsOutput::builder().build());
    let registry = mocked(&[&batch, &unknown, &known], NetworkMode::Bridge);
    let targets: Vec<Target> = ["i-1", "i-unknown", "i-2"]
        .iter()
        .map(|id| Target {
            id: (*id).into(),
            port: 32768,
        })
        .collect();
    registry.deregister(&targets).await.unwrap();
    assert_eq!(batch.num_calls(), 1);
    assert_eq!(unknown.num_calls(), 1);
    assert_eq!(
        known.num_calls(),
        2,
        "the known targets were still deregistered"
    );

    // Any other failure on the way is reported.
    let throttled = mock!(Client::deregister_targets)
        .then_http_response(|| elb_error(400, "Throttling", "Rate exceeded"));
    let err = mocked(&[&throttled], NetworkMode::Bridge)
        .deregister(&targets)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Throttled { .. }), "{err:?}");
}
