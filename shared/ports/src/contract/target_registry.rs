//! The `TargetRegistry` contract: what every adapter (ELBv2, the local balancer, the fake)
//! promises.
//!
//! [`target_registry_contract!`](crate::target_registry_contract) takes an expression that
//! evaluates to a future of a fresh [`TargetRegistryFixture`] (an `async { ... }` block, or a
//! call of an `async fn`) and expands into one `#[tokio::test]` per promise; the cases are
//! the plain `pub async fn`s below. A fixture carries a [`TargetSource`] that makes targets
//! the backend accepts: an IP in the target group's VPC for ELBv2, a live HTTP endpoint for
//! the local balancer.
//!
//! The promises are about membership, not health checks (moto reports every target healthy,
//! a real balancer takes a minute): on first look a registered target is `Initial` or
//! `Healthy`, and a deregistered one is `Draining` or gone.
//!
//! ```text
//! nodefleet_ports::target_registry_contract!(async {
//!     TargetRegistryFixture::new(my_registry().await, targets_from_fn(|| make_target()))
//! });
//! ```

use std::any::Any;
use std::fmt;
use std::future::Future;

use async_trait::async_trait;

use crate::targets::{Target, TargetHealth, TargetRegistry, TargetState};

/// Makes targets the fixture's backend will accept.
#[async_trait]
pub trait TargetSource: Send {
    /// A target no earlier call returned.
    async fn make_target(&mut self) -> Target;
}

/// A [`TargetSource`] from a plain closure (see [`targets_from_fn`]).
pub struct FnTargets<F>(F);

impl<F> fmt::Debug for FnTargets<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnTargets")
    }
}

#[async_trait]
impl<F> TargetSource for FnTargets<F>
where
    F: FnMut() -> Target + Send,
{
    async fn make_target(&mut self) -> Target {
        (self.0)()
    }
}

/// A [`TargetSource`] that calls `make` for each target.
pub fn targets_from_fn<F>(make: F) -> FnTargets<F>
where
    F: FnMut() -> Target + Send,
{
    FnTargets(make)
}

/// A fresh adapter and a way to make targets its backend accepts.
pub struct TargetRegistryFixture<R> {
    pub registry: R,
    pub targets: Box<dyn TargetSource>,
    /// Whatever must outlive the test (servers, temporary directories); dropped with it.
    pub keep_alive: Vec<Box<dyn Any + Send>>,
}

impl<R> TargetRegistryFixture<R> {
    pub fn new(registry: R, targets: impl TargetSource + 'static) -> Self {
        TargetRegistryFixture {
            registry,
            targets: Box::new(targets),
            keep_alive: Vec::new(),
        }
    }

    /// Keeps `value` alive as long as the fixture.
    pub fn keep(mut self, value: impl Any + Send) -> Self {
        self.keep_alive.push(Box::new(value));
        self
    }
}

impl<R> fmt::Debug for TargetRegistryFixture<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TargetRegistryFixture")
            .finish_non_exhaustive()
    }
}

/// The health entries the registry reports for `target`.
async fn entries_for<R: TargetRegistry>(registry: &R, target: &Target) -> Vec<TargetHealth> {
    registry
        .describe_health()
        .await
        .unwrap_or_else(|e| panic!("describe health: {e}"))
        .into_iter()
        .filter(|h| &h.target == target)
        .collect()
}

/// Asserts `target` is listed exactly once, in a state a fresh registration may show.
async fn assert_listed_fresh<R: TargetRegistry>(registry: &R, target: &Target) {
    let entries = entries_for(registry, target).await;
    assert_eq!(
        entries.len(),
        1,
        "{target} listed exactly once: {entries:?}"
    );
    assert!(
        matches!(
            entries[0].state,
            TargetState::Initial | TargetState::Healthy
        ),
        "a freshly registered target is initial or healthy: {:?}",
        entries[0]
    );
}

/// Asserts `target` is gone, or draining.
async fn assert_gone_or_draining<R: TargetRegistry>(registry: &R, target: &Target) {
    let entries = entries_for(registry, target).await;
    assert!(
        entries.is_empty() || (entries.len() == 1 && entries[0].state == TargetState::Draining),
        "a deregistered target is gone or draining: {entries:?}"
    );
}

/// A registered target is listed, `Initial` or `Healthy` on first look.
pub async fn a_registered_target_is_listed<R: TargetRegistry>(
    mut fixture: TargetRegistryFixture<R>,
) {
    let target = fixture.targets.make_target().await;
    fixture
        .registry
        .register(std::slice::from_ref(&target))
        .await
        .expect("register");
    assert_listed_fresh(&fixture.registry, &target).await;
}

/// Registering a registered target is fine, and it is still listed once.
pub async fn registering_twice_lists_the_target_once<R: TargetRegistry>(
    mut fixture: TargetRegistryFixture<R>,
) {
    let target = fixture.targets.make_target().await;
    let targets = std::slice::from_ref(&target);
    fixture.registry.register(targets).await.expect("register");
    fixture
        .registry
        .register(targets)
        .await
        .expect("registering again is fine");
    let entries = entries_for(&fixture.registry, &target).await;
    assert_eq!(entries.len(), 1, "listed once: {entries:?}");
}

/// A deregistered target is gone, or draining.
pub async fn a_deregistered_target_is_gone_or_draining<R: TargetRegistry>(
    mut fixture: TargetRegistryFixture<R>,
) {
    let target = fixture.targets.make_target().await;
    let targets = std::slice::from_ref(&target);
    fixture.registry.register(targets).await.expect("register");
    assert_listed_fresh(&fixture.registry, &target).await;
    fixture
        .registry
        .deregister(targets)
        .await
        .expect("deregister");
    assert_gone_or_draining(&fixture.registry, &target).await;
}

/// Deregistering a target that was never registered is fine and lists nothing.
pub async fn deregistering_an_unknown_target_is_fine<R: TargetRegistry>(
    mut fixture: TargetRegistryFixture<R>,
) {
    let target = fixture.targets.make_target().await;
    fixture
        .registry
        .deregister(std::slice::from_ref(&target))
        .await
        .expect("deregistering an unknown target is fine");
    let entries = entries_for(&fixture.registry, &target).await;
    assert!(entries.is_empty(), "{entries:?}");
}

/// Several targets registered in one call are listed exactly once each, and deregistering
/// one leaves the others listed.
pub async fn several_targets_are_listed_once_each<R: TargetRegistry>(
    mut fixture: TargetRegistryFixture<R>,
) {
    let mut targets = Vec::new();
    for _ in 0..3 {
        targets.push(fixture.targets.make_target().await);
    }
    fixture
        .registry
        .register(&targets)
        .await
        .expect("register three");
    for target in &targets {
        assert_listed_fresh(&fixture.registry, target).await;
    }
    let (gone, kept) = targets.split_at(1);
    fixture
        .registry
        .deregister(gone)
        .await
        .expect("deregister one");
    assert_gone_or_draining(&fixture.registry, &gone[0]).await;
    for target in kept {
        let entries = entries_for(&fixture.registry, target).await;
        assert_eq!(entries.len(), 1, "{target} still listed once: {entries:?}");
        assert_ne!(entries[0].state, TargetState::Draining, "{:?}", entries[0]);
    }
}

/// Registering or deregistering no targets is fine and changes nothing.
pub async fn empty_calls_change_nothing<R: TargetRegistry>(mut fixture: TargetRegistryFixture<R>) {
    let target = fixture.targets.make_target().await;
    fixture
        .registry
        .register(std::slice::from_ref(&target))
        .await
        .expect("register");
    fixture
        .registry
        .register(&[])
        .await
        .expect("registering nothing is fine");
    fixture
        .registry
        .deregister(&[])
        .await
        .expect("deregistering nothing is fine");
    assert_listed_fresh(&fixture.registry, &target).await;
}

/// Builds a fixture from the macro's expression: any future of a fixture.
#[doc(hidden)]
pub async fn build<F: Future>(fixture: F) -> F::Output {
    fixture.await
}

/// Expands into one `#[tokio::test]` per promise every target registry keeps. The argument is
/// an expression evaluating to a future of a
/// [`TargetRegistryFixture`](crate::contract::target_registry::TargetRegistryFixture); it is
/// evaluated once per test.
#[macro_export]
macro_rules! target_registry_contract {
    (@cases $fixture:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let fixture = $crate::contract::target_registry::build($fixture).await;
                $crate::contract::target_registry::$case(fixture).await;
            }
        )+
    };
    ($fixture:expr) => {
        $crate::target_registry_contract!(@cases $fixture;
            a_registered_target_is_listed,
            registering_twice_lists_the_target_once,
            a_deregistered_target_is_gone_or_draining,
            deregistering_an_unknown_target_is_fine,
            several_targets_are_listed_once_each,
            empty_calls_change_nothing,
        );
    };
}
