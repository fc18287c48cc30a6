//! The `StateStore` port: everything the control plane remembers between invocations.
//!
//! # Semantics every adapter keeps
//!
//! - **Versioned saves.** `save_*` writes a record only if the stored version equals the
//!   record's `version` ([`Version::NEW`]: only if nothing is stored under that key), and
//!   returns the record as stored, with the next version. Otherwise
//!   [`StateError::Conflict`]; nothing is overwritten.
//! - **Leases** ([`StateStore::acquire_lease`]) are granted when the lease is free, expired,
//!   or already held by the same holder; a renew or release by someone who no longer holds
//!   it is [`StateError::LeaseLost`]. Expiry is compared against the `now` the caller passes.
//!   Every acquire and renew gives the lease a higher version, across holders and releases
//!   (a release keeps the version), so the version is a fencing token and a stale copy of a
//!   lease can no longer be renewed.
//! - **Idempotency keys** are claimed once: of any number of concurrent claims of one key,
//!   exactly one gets `Ok`; the rest get [`StateError::AlreadyClaimed`]. An expired key may
//!   be claimed again. Completing a key that is absent or expired is
//!   [`StateError::NotFound`]; completing one another owner holds is `AlreadyClaimed`.
//! - **Audit events** are keyed by `(at, id)`: appending the same event twice (a retry after
//!   a lost answer) stores it once.
//! - **Expiry is compared, never trusted to deletion.** DynamoDB's TTL deletes items lazily
//!   (up to days late), so every read and every condition compares `expires_at` with `now`:
//!   an expired record reads as absent and can be taken over.
//!
//! # Error policy
//!
//! [`StateError::is_retryable`] is true for throttling and for failures to reach the store
//! (the caller may retry the same call after a back-off). Conflicts, held or lost leases and
//! claimed keys are answers, not failures: the caller re-reads and decides again. `Corrupt`
//! and `Backend` (missing table, access denied) need an operator.

use std::time::Duration;

use async_trait::async_trait;

use crate::Timestamp;
use crate::model::{
    AuditEvent, ControlState, FleetConfig, IdempotencyRecord, Lease, NodeId, NodeRecord,
    SnapshotId, SnapshotRecord, Version,
};

/// The kinds of record a store keeps; used in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Entity {
    FleetConfig,
    ControlState,
    Node,
    Snapshot,
    Lease,
    IdempotencyKey,
    AuditEvent,
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Entity::FleetConfig => "fleet config",
            Entity::ControlState => "control state",
            Entity::Node => "node",
            Entity::Snapshot => "snapshot",
            Entity::Lease => "lease",
            Entity::IdempotencyKey => "idempotency key",
            Entity::AuditEvent => "audit event",
        })
    }
}

/// Why a state-store call failed. See the module doc for the error policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The record changed (or appeared, or vanished) since the caller read it.
    #[error("{entity} {key} was changed by someone else (expected version {expected:?})")]
    Conflict {
        entity: Entity,
        key: String,
        expected: Version,
    },
    /// Someone else holds the lease until `expires_at`.
    #[error("lease {name} is held by {holder} until {expires_at}")]
    LeaseHeld {
        name: String,
        holder: String,
        expires_at: Timestamp,
    },
    /// The caller's lease expired or was taken over.
    #[error("lease {name} is no longer held by {holder}")]
    LeaseLost { name: String, holder: String },
    /// The idempotency key was claimed first by someone else (or by this caller earlier).
    #[error("idempotency key {key} is already claimed")]
    AlreadyClaimed { key: String },
    /// A record the call needs does not exist.
    #[error("{entity} {key} does not exist")]
    NotFound { entity: Entity, key: String },
    /// The store asked us to slow down.
    #[error("state store throttled the request: {message}")]
    Throttled { message: String },
    /// The store could not be reached or did not answer in time.
    #[error("state store unavailable: {message}")]
    Unavailable { message: String },
    /// A stored record could not be read back.
    #[error("{entity} {key} is unreadable: {message}")]
    Corrupt {
        entity: Entity,
        key: String,
        message: String,
    },
    /// Anything else: missing table, access denied, a bad request. Needs an operator.
    #[error("state store error: {message}")]
    Backend { message: String },
}

impl StateError {
    /// True if the same call may succeed when retried after a back-off.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StateError::Throttled { .. } | StateError::Unavailable { .. }
        )
    }

    /// True if the call lost a race (the answer is to re-read, not to retry blindly).
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            StateError::Conflict { .. }
                | StateError::LeaseHeld { .. }
                | StateError::LeaseLost { .. }
                | StateError::AlreadyClaimed { .. }
        )
    }
}

/// Everything the control plane remembers. See the module doc for the semantics.
#[async_trait]
pub trait StateStore: Send + Sync {
    // ---- fleet configuration ----

    async fn get_config(&self) -> Result<Option<FleetConfig>, StateError>;
    /// Versioned save of the fleet configuration.
    async fn save_config(&self, config: &FleetConfig) -> Result<FleetConfig, StateError>;

    // ---- controller state ----

    /// The named controller state, if one was saved.
    async fn get_control_state(&self, name: &str) -> Result<Option<ControlState>, StateError>;
    /// Versioned save of a controller state (by its name).
    async fn save_control_state(&self, state: &ControlState) -> Result<ControlState, StateError>;

    // ---- nodes ----

    async fn get_node(&self, id: &NodeId) -> Result<Option<NodeRecord>, StateError>;
    /// Every node record, in id order.
    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, StateError>;
    /// Versioned save of a node record.
    async fn save_node(&self, node: &NodeRecord) -> Result<NodeRecord, StateError>;
    /// Deletes the node record if it is still at `expected`; deleting an absent record is
    /// a conflict too (someone else deleted it).
    async fn delete_node(&self, id: &NodeId, expected: Version) -> Result<(), StateError>;

    // ---- snapshot catalog ----

    async fn get_snapshot(&self, id: &SnapshotId) -> Result<Option<SnapshotRecord>, StateError>;
    /// Every catalog entry, in id order.
    async fn list_snapshots(&self) -> Result<Vec<SnapshotRecord>, StateError>;
    /// Versioned save of a catalog entry.
    async fn save_snapshot(&self, snapshot: &SnapshotRecord) -> Result<SnapshotRecord, StateError>;

    // ---- leases ----

    /// Takes the lease for `ttl` if it is free, expired at `now`, or already `holder`'s.
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Lease, StateError>;
    /// Extends a lease the caller holds (same version, not expired at `now`).
    async fn renew_lease(
        &self,
        lease: &Lease,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Lease, StateError>;
    /// Gives a lease up. Releasing a lease that is gone is fine; releasing one that someone
    /// else now holds is [`StateError::LeaseLost`] and leaves theirs alone.
    async fn release_lease(&self, lease: &Lease) -> Result<(), StateError>;
    /// The lease as stored, if it is held at `now`.
    async fn get_lease(&self, name: &str, now: Timestamp) -> Result<Option<Lease>, StateError>;

    // ---- idempotency keys ----

    /// Claims `key` for `owner` for `ttl`: exactly one concurrent claimer wins.
    async fn claim_idempotency_key(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<IdempotencyRecord, StateError>;
    /// Records what the side effect produced. Only the owner may, while the claim is live.
    async fn complete_idempotency_key(
        &self,
        key: &str,
        owner: &str,
        outcome: &str,
        now: Timestamp,
    ) -> Result<IdempotencyRecord, StateError>;
    /// The claim, if it is live at `now`.
    async fn get_idempotency_key(
        &self,
        key: &str,
        now: Timestamp,
    ) -> Result<Option<IdempotencyRecord>, StateError>;

    // ---- audit trail ----

    async fn append_event(&self, event: &AuditEvent) -> Result<(), StateError>;
    /// Events at or after `since` that are live at `now`, oldest first, at most `limit`.
    async fn list_events(
        &self,
        since: Timestamp,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StateError>;
}
