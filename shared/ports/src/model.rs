//! The records the control plane keeps: fleet configuration, nodes, snapshots, leases,
//! idempotency keys and audit events.
//!
//! Every record that can be changed by two writers at once carries a [`Version`]. A store
//! saves a record only if the stored version is the one the writer read ([`Version::NEW`]
//! meaning "must not exist yet"), and hands back the record with the next version. That is
//! the whole concurrency story: a lost race is a [`crate::StateError::Conflict`], and the
//! loser re-reads and decides again.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Timestamp;
use crate::targets::Target;

/// Optimistic-concurrency version of a stored record.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Version(pub u64);

impl Version {
    /// A record that has not been stored yet: saving it requires that the key be free.
    pub const NEW: Version = Version(0);

    pub fn next(self) -> Version {
        Version(self.0.saturating_add(1))
    }

    pub fn is_new(self) -> bool {
        self == Version::NEW
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.to_owned())
            }
        }
    };
}

string_id!(
    /// An availability zone (`us-east-1a`), or a local zone label (`local-a`).
    Zone
);
string_id!(
    /// The fleet's own name for a node; stable across the node's task being replaced.
    NodeId
);
string_id!(
    /// The scheduler's id of a running task: an ECS task ARN, or a local process id.
    TaskId
);
string_id!(
    /// A published chain-data snapshot.
    SnapshotId
);

/// What a node is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Serves RPC traffic behind the load balancer.
    Serving,
    /// Follows the chain and makes snapshots; never behind the load balancer.
    Updater,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Serving => "serving",
            Role::Updater => "updater",
        }
    }

    pub fn parse(value: &str) -> Option<Role> {
        match value {
            "serving" => Some(Role::Serving),
            "updater" => Some(Role::Updater),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Its task has been asked for and has not started yet.
    Launching,
    /// Its agent is filling the data dir from a snapshot.
    Hydrating,
    /// Its client runs and is catching up with the chain.
    Syncing,
    /// Healthy and in rotation.
    Serving,
    /// Failing its health check.
    Unhealthy,
    /// Being taken out of rotation before it is stopped.
    Draining,
    /// Its task has stopped; the record stays for the audit of what happened.
    Stopped,
}

/// Desired shape of the fleet. Stored once per fleet, changed by operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetConfig {
    /// The fleet's name; it also tags the fleet's tasks.
    pub name: String,
    /// Zones the fleet spreads over (three or more in production).
    pub zones: Vec<Zone>,
    /// How many serving nodes the fleet wants in all.
    pub serving_nodes: u32,
    /// Replacement never takes the number of healthy serving nodes below this.
    pub healthy_floor: u32,
    /// If more than this share (percent) of serving nodes is unhealthy at once, it is a storm:
    /// alert instead of replacing everything.
    pub storm_percent: u8,
    /// A node whose head block is older than this is unhealthy (seconds).
    pub max_head_age_secs: u64,
    /// A node with fewer peers than this is unhealthy, where the client reports peers.
    pub min_peers: u32,
    pub version: Version,
}

/// One node of the fleet, as the control plane knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: NodeId,
    /// Its current task, once launched.
    pub task: Option<TaskId>,
    pub zone: Zone,
    /// Its load-balancer target, once registered.
    pub target: Option<Target>,
    pub role: Role,
    pub state: NodeState,
    /// The snapshot its data dir was hydrated from.
    pub snapshot: Option<SnapshotId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub version: Version,
}

/// Where a snapshot is in its making.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotState {
    /// Chunks and manifest are being written.
    Uploading,
    /// Every chunk was read back and matched the manifest.
    Verified,
    /// Named by `latest`: new nodes hydrate from it.
    Published,
    /// No longer offered; kept until retention deletes it.
    Retired,
    /// Verification or upload failed; never offered.
    Failed,
}

/// One entry of the snapshot catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub id: SnapshotId,
    pub block_height: u64,
    /// The execution client (geth, reth, ...) and its version.
    pub client: String,
    pub client_version: String,
    /// Object-store key of the manifest.
    pub manifest_key: String,
    /// Raw bytes of the data dir it holds.
    #[serde(default)]
    pub bytes: u64,
    /// Bytes its upload wrote to the store (new packs and the manifest): what was not
    /// already there from earlier snapshots.
    #[serde(default)]
    pub uploaded_bytes: u64,
    pub state: SnapshotState,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub version: Version,
}

/// What a controller (the health reactor, the snapshot updater) carries from one invocation
/// to the next: a named JSON document, saved versioned like every record, so two concurrent
/// invocations cannot both overwrite it (the loser re-reads and merges).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlState {
    /// The controller's name, e.g. `reactor`.
    pub name: String,
    /// The controller's own document, as JSON text; the store does not look inside.
    pub body: String,
    pub updated_at: Timestamp,
    pub version: Version,
}

/// A named lease: at most one holder at a time until it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    pub acquired_at: Timestamp,
    pub expires_at: Timestamp,
    /// Grows by one with every acquire and renew: a fencing token for whatever the holder
    /// writes while it believes it holds the lease.
    pub version: Version,
}

impl Lease {
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at <= now
    }
}

/// A side effect that has been (or is being) done once, under a caller-chosen key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub key: String,
    /// Who claimed it (a Lambda request id, a process name).
    pub owner: String,
    pub created_at: Timestamp,
    /// After this the key is forgotten and may be claimed again.
    pub expires_at: Timestamp,
    /// What the side effect produced (a task ARN, say), once the owner recorded it.
    pub outcome: Option<String>,
}

impl IdempotencyRecord {
    /// A fresh claim of `key` by `owner` at `now`, live for `ttl`, with no outcome yet.
    pub fn claim(key: &str, owner: &str, ttl: Duration, now: Timestamp) -> IdempotencyRecord {
        IdempotencyRecord {
            key: key.to_owned(),
            owner: owner.to_owned(),
            created_at: now,
            expires_at: now.plus(ttl),
            outcome: None,
        }
    }

    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at <= now
    }
}

/// One line of the audit trail: what the control plane did and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub at: Timestamp,
    /// Unique among events of the same millisecond; orders them.
    pub id: String,
    /// What happened: `node.launched`, `snapshot.published`, ...
    pub kind: String,
    /// What it happened to: a node id, a snapshot id, ...
    pub subject: String,
    /// Free-form details, usually JSON.
    pub detail: String,
    /// The event is dropped after this.
    pub expires_at: Timestamp,
}

impl AuditEvent {
    /// An event at `at`, kept for `retention`, with a fresh unique id.
    pub fn new(
        at: Timestamp,
        kind: impl Into<String>,
        subject: impl Into<String>,
        detail: impl Into<String>,
        retention: Duration,
    ) -> AuditEvent {
        AuditEvent {
            at,
            id: unique_suffix(),
            kind: kind.into(),
            subject: subject.into(),
            detail: detail.into(),
            expires_at: at.plus(retention),
        }
    }
}

/// A short id unique within this process and, with high probability, across processes:
/// process id, a counter and the clock's nanoseconds, hex-encoded.
pub fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:x}-{count:x}-{nanos:x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_roles() {
        assert!(Version::NEW.is_new());
        assert_eq!(Version::NEW.next(), Version(1));
        assert_eq!(Role::parse("updater"), Some(Role::Updater));
        assert_eq!(Role::parse("Updater"), None);
        assert_eq!(Role::Serving.to_string(), "serving");
    }

    #[test]
    fn unique_suffixes_differ() {
        let a = unique_suffix();
        let b = unique_suffix();
        assert_ne!(a, b);
    }
}
