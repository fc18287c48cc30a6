//! `FakeTargetRegistry`: an in-memory load-balancer target group that models health
//! transitions, which moto does not (it reports every target healthy).
//!
//! The model:
//!
//! - A registered target is `Initial` (reason `Elb.RegistrationInProgress`) until it has been
//!   seen by a configurable number of [`TargetRegistry::describe_health`] calls (default 1),
//!   then `Healthy`: the first look shows it initial, the next one healthy.
//! - [`FakeTargetRegistry::set_health`] pins a target's state and reason (say `Unhealthy`,
//!   `Target.FailedHealthChecks`) until [`FakeTargetRegistry::clear_health`]; a pinned state
//!   wins over the model, and can be set before the target is registered.
//! - A deregistered target shows `Draining` (reason `Target.DeregistrationInProgress`) in the
//!   next describe, then vanishes. Registering it again starts it over at `Initial`.
//! - Registering a registered target changes nothing; deregistering an unknown one is fine.
//! - [`FakeTargetRegistry::reject`] makes registering a target id fail with `InvalidTarget`
//!   (an instance that is not running), and [`FakeTargetRegistry::set_zone`] says which zone
//!   the balancer reports a target in.
//!
//! Reason codes are ELBv2's, so code that reads them sees what it will see in production.
//! The handle is cheap to clone; clones share one state.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::model::Zone;
use crate::targets::{RegistryError, Target, TargetHealth, TargetRegistry, TargetState};

/// Describe calls a registered target is seen `Initial` in before it turns `Healthy`: one, so
/// code sees the initial state once, as it does with a real balancer's first health checks.
pub const DEFAULT_HEALTHY_AFTER: u32 = 1;

/// ELBv2's reason for a target whose first health checks are still running.
pub const REASON_REGISTRATION_IN_PROGRESS: &str = "Elb.RegistrationInProgress";
/// ELBv2's reason for a target that is being deregistered.
pub const REASON_DEREGISTRATION_IN_PROGRESS: &str = "Target.DeregistrationInProgress";

/// One call made to the fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryCall {
    Register(Vec<Target>),
    Deregister(Vec<Target>),
}

/// A pinned health: state, reason code and description.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pinned {
    state: TargetState,
    reason: Option<String>,
    description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Membership {
    /// Registered; `seen` counts the describe calls that listed it.
    Registered { seen: u32 },
    /// Deregistered; listed as draining by the next describe, then dropped.
    Draining,
}

#[derive(Debug)]
struct State {
    healthy_after: u32,
    targets: BTreeMap<Target, Membership>,
    pinned: HashMap<Target, Pinned>,
    zones: HashMap<String, Zone>,
    rejected: HashMap<String, String>,
    calls: Vec<RegistryCall>,
}

/// A stateful in-memory [`TargetRegistry`]; see the module doc for what it models.
#[derive(Debug, Clone)]
pub struct FakeTargetRegistry {
    state: Arc<Mutex<State>>,
}

impl Default for FakeTargetRegistry {
    fn default() -> Self {
        FakeTargetRegistry::new()
    }
}

impl FakeTargetRegistry {
    /// An empty target group; targets turn healthy after [`DEFAULT_HEALTHY_AFTER`] describes.
    pub fn new() -> FakeTargetRegistry {
        FakeTargetRegistry::healthy_after(DEFAULT_HEALTHY_AFTER)
    }

    /// An empty target group whose targets are `Initial` in the first `describes` describe
    /// calls that list them (zero: healthy at once).
    pub fn healthy_after(describes: u32) -> FakeTargetRegistry {
        FakeTargetRegistry {
            state: Arc::new(Mutex::new(State {
                healthy_after: describes,
                targets: BTreeMap::new(),
                pinned: HashMap::new(),
                zones: HashMap::new(),
                rejected: HashMap::new(),
                calls: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already; the state is still
        // the best account of what happened.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Pins `target`'s health (with ELBv2's reason code and a description) until
    /// [`FakeTargetRegistry::clear_health`].
    pub fn set_health(
        &self,
        target: &Target,
        state: TargetState,
        reason: Option<&str>,
        description: Option<&str>,
    ) {
        self.lock().pinned.insert(
            target.clone(),
            Pinned {
                state,
                reason: reason.map(str::to_owned),
                description: description.map(str::to_owned),
            },
        );
    }

    /// Pins `target` unhealthy with ELBv2's failed-health-check reason.
    pub fn set_unhealthy(&self, target: &Target, description: &str) {
        self.set_health(
            target,
            TargetState::Unhealthy,
            Some("Target.FailedHealthChecks"),
            Some(description),
        );
    }

    /// Lets `target` follow the model again.
    pub fn clear_health(&self, target: &Target) {
        self.lock().pinned.remove(target);
    }

    /// The zone the balancer reports targets with this id in (an instance id or an IP).
    pub fn set_zone(&self, target_id: &str, zone: impl Into<Zone>) {
        self.lock().zones.insert(target_id.to_owned(), zone.into());
    }

    /// Registering a target with this id fails with `InvalidTarget` and `message`.
    pub fn reject(&self, target_id: &str, message: &str) {
        self.lock()
            .rejected
            .insert(target_id.to_owned(), message.to_owned());
    }

    /// The targets registered now (not draining), without counting as a describe.
    pub fn registered(&self) -> Vec<Target> {
        self.lock()
            .targets
            .iter()
            .filter(|(_, m)| matches!(m, Membership::Registered { .. }))
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Every register and deregister call so far, in order.
    pub fn calls(&self) -> Vec<RegistryCall> {
        self.lock().calls.clone()
    }
}

#[async_trait]
impl TargetRegistry for FakeTargetRegistry {
    async fn register(&self, targets: &[Target]) -> Result<(), RegistryError> {
        let mut state = self.lock();
        // ELBv2 validates the whole call before registering any of it.
        if let Some((id, message)) = targets
            .iter()
            .find_map(|t| state.rejected.get(&t.id).map(|m| (t.id.clone(), m.clone())))
        {
            return Err(RegistryError::InvalidTarget {
                message: format!("{id}: {message}"),
            });
        }
        state.calls.push(RegistryCall::Register(targets.to_vec()));
        for target in targets {
            let membership = state
                .targets
                .entry(target.clone())
                .or_insert(Membership::Draining);
            if *membership == Membership::Draining {
                *membership = Membership::Registered { seen: 0 };
            }
        }
        Ok(())
    }

    async fn deregister(&self, targets: &[Target]) -> Result<(), RegistryError> {
        let mut state = self.lock();
        state.calls.push(RegistryCall::Deregister(targets.to_vec()));
        for target in targets {
            if let Some(membership) = state.targets.get_mut(target) {
                *membership = Membership::Draining;
            }
        }
        Ok(())
    }

    async fn describe_health(&self) -> Result<Vec<TargetHealth>, RegistryError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let mut answer = Vec::with_capacity(state.targets.len());
        for (target, membership) in &mut state.targets {
            let (model_state, model_reason) = match membership {
                Membership::Registered { seen } => {
                    let healthy = *seen >= state.healthy_after;
                    *seen = seen.saturating_add(1);
                    if healthy {
                        (TargetState::Healthy, None)
                    } else {
                        (TargetState::Initial, Some(REASON_REGISTRATION_IN_PROGRESS))
                    }
                }
                Membership::Draining => (
                    TargetState::Draining,
                    Some(REASON_DEREGISTRATION_IN_PROGRESS),
                ),
            };
            let pinned = state.pinned.get(target);
            // A draining target drains whatever its health was.
            let health = match (pinned, membership) {
                (Some(pinned), Membership::Registered { .. }) => TargetHealth {
                    target: target.clone(),
                    zone: None,
                    state: pinned.state,
                    reason: pinned.reason.clone(),
                    description: pinned.description.clone(),
                },
                _ => TargetHealth {
                    target: target.clone(),
                    zone: None,
                    state: model_state,
                    reason: model_reason.map(str::to_owned),
                    description: None,
                },
            };
            answer.push(TargetHealth {
                zone: state.zones.get(&target.id).cloned(),
                ..health
            });
        }
        state
            .targets
            .retain(|_, membership| *membership != Membership::Draining);
        Ok(answer)
    }
}
