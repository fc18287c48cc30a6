//! `FakeTargetRegistry` against the target-registry contract, and tests of its health model:
//! initial then healthy, pinned health, draining then gone, rejected targets and zones.

#![allow(clippy::unwrap_used)]

use nodefleet_ports::contract::target_registry::{TargetRegistryFixture, targets_from_fn};
use nodefleet_ports::fakes::FakeTargetRegistry;
use nodefleet_ports::fakes::targets::{
    REASON_DEREGISTRATION_IN_PROGRESS, REASON_REGISTRATION_IN_PROGRESS, RegistryCall,
};
use nodefleet_ports::{RegistryError, Target, TargetHealth, TargetRegistry, TargetState, Zone};

fn ip_targets() -> impl FnMut() -> Target + Send {
    let mut next = 0u16;
    move || {
        next += 1;
        Target {
            id: format!("10.0.0.{next}"),
            port: 8545,
        }
    }
}

nodefleet_ports::target_registry_contract!(async {
    TargetRegistryFixture::new(FakeTargetRegistry::new(), targets_from_fn(ip_targets()))
});

mod healthy_at_once {
    //! The contract again with targets healthy on first look.
    use super::*;

    nodefleet_ports::target_registry_contract!(async {
        TargetRegistryFixture::new(
            FakeTargetRegistry::healthy_after(0),
            targets_from_fn(ip_targets()),
        )
    });
}

fn target(id: &str) -> Target {
    Target {
        id: id.to_owned(),
        port: 32768,
    }
}

async fn health_of(registry: &FakeTargetRegistry, target: &Target) -> Option<TargetHealth> {
    registry
        .describe_health()
        .await
        .unwrap()
        .into_iter()
        .find(|h| &h.target == target)
}

#[tokio::test]
async fn a_target_is_initial_for_the_configured_describes_then_healthy() {
    let registry = FakeTargetRegistry::healthy_after(2);
    let t = target("i-1");
    registry.register(std::slice::from_ref(&t)).await.unwrap();
    for _ in 0..2 {
        let health = health_of(&registry, &t).await.unwrap();
        assert_eq!(health.state, TargetState::Initial);
        assert_eq!(
            health.reason.as_deref(),
            Some(REASON_REGISTRATION_IN_PROGRESS)
        );
    }
    let health = health_of(&registry, &t).await.unwrap();
    assert_eq!(health.state, TargetState::Healthy);
    assert_eq!(health.reason, None);

    let default = FakeTargetRegistry::new();
    default.register(std::slice::from_ref(&t)).await.unwrap();
    assert_eq!(
        health_of(&default, &t).await.unwrap().state,
        TargetState::Initial
    );
    assert_eq!(
        health_of(&default, &t).await.unwrap().state,
        TargetState::Healthy
    );
}

#[tokio::test]
async fn pinned_health_wins_until_cleared() {
    let registry = FakeTargetRegistry::healthy_after(0);
    let t = target("i-1");
    registry.set_unhealthy(&t, "Health checks failed with these codes: [503]");
    registry.register(std::slice::from_ref(&t)).await.unwrap();
    let health = health_of(&registry, &t).await.unwrap();
    assert_eq!(health.state, TargetState::Unhealthy);
    assert_eq!(health.reason.as_deref(), Some("Target.FailedHealthChecks"));
    assert_eq!(
        health.description.as_deref(),
        Some("Health checks failed with these codes: [503]")
    );
    registry.set_health(&t, TargetState::Unused, Some("Target.NotInUse"), None);
    assert_eq!(
        health_of(&registry, &t).await.unwrap().state,
        TargetState::Unused
    );
    registry.clear_health(&t);
    assert_eq!(
        health_of(&registry, &t).await.unwrap().state,
        TargetState::Healthy
    );
}

#[tokio::test]
async fn a_deregistered_target_drains_for_one_describe_then_vanishes() {
    let registry = FakeTargetRegistry::healthy_after(0);
    let t = target("i-1");
    registry.set_unhealthy(&t, "down");
    registry.register(std::slice::from_ref(&t)).await.unwrap();
    registry.deregister(std::slice::from_ref(&t)).await.unwrap();
    assert!(registry.registered().is_empty());
    let draining = health_of(&registry, &t).await.unwrap();
    assert_eq!(
        draining.state,
        TargetState::Draining,
        "draining beats pinned health"
    );
    assert_eq!(
        draining.reason.as_deref(),
        Some(REASON_DEREGISTRATION_IN_PROGRESS)
    );
    assert_eq!(health_of(&registry, &t).await, None);
}

#[tokio::test]
async fn registering_a_draining_target_starts_it_over() {
    let registry = FakeTargetRegistry::new();
    let t = target("i-1");
    registry.register(std::slice::from_ref(&t)).await.unwrap();
    assert_eq!(
        health_of(&registry, &t).await.unwrap().state,
        TargetState::Initial
    );
    assert_eq!(
        health_of(&registry, &t).await.unwrap().state,
        TargetState::Healthy
    );
    registry.deregister(std::slice::from_ref(&t)).await.unwrap();
    registry.register(std::slice::from_ref(&t)).await.unwrap();
    assert_eq!(
        health_of(&registry, &t).await.unwrap().state,
        TargetState::Initial
    );
    // Registering a registered target does not restart its health checks.
    registry.register(std::slice::from_ref(&t)).await.unwrap();
    assert_eq!(
        health_of(&registry, &t).await.unwrap().state,
        TargetState::Healthy
    );
}

#[tokio::test]
async fn a_rejected_target_fails_the_whole_call() {
    let registry = FakeTargetRegistry::new();
    registry.reject(
        "i-stopped",
        "The following targets are not in a running state",
    );
    let err = registry
        .register(&[target("i-good"), target("i-stopped")])
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::InvalidTarget { .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert!(registry.registered().is_empty(), "nothing registered");
    assert!(
        registry.calls().is_empty(),
        "a rejected call is not recorded"
    );
}

#[tokio::test]
async fn zones_and_calls_are_reported() {
    let registry = FakeTargetRegistry::new();
    registry.set_zone("i-1", "us-east-1b");
    let (a, b) = (target("i-1"), target("i-2"));
    registry.register(&[a.clone(), b.clone()]).await.unwrap();
    registry.deregister(std::slice::from_ref(&b)).await.unwrap();
    let health = registry.describe_health().await.unwrap();
    let zone_of = |t: &Target| health.iter().find(|h| &h.target == t).unwrap().zone.clone();
    assert_eq!(zone_of(&a), Some(Zone::new("us-east-1b")));
    assert_eq!(zone_of(&b), None);
    assert_eq!(
        registry.calls(),
        vec![
            RegistryCall::Register(vec![a.clone(), b.clone()]),
            RegistryCall::Deregister(vec![b]),
        ]
    );
    let clone = registry.clone();
    assert_eq!(clone.registered(), vec![a]);
}
