//! The health decision: is this node fit to serve RPC traffic right now?
//!
//! A plain TCP or `GET /` check passes for a node that is hours behind; this one looks at
//! what the node itself says over JSON-RPC (DESIGN.md, Health). [`judge`] is a pure
//! function of an [`Observation`] (what the probe got from the node), the [`Thresholds`]
//! and `now`, so every rule is a table test and the I/O lives in [`crate::probe`].
//!
//! # Rules
//!
//! A node is healthy when all of these hold:
//!
//! 1. its RPC answers `eth_syncing` and `eth_getBlockByNumber("latest", false)`;
//! 2. `eth_syncing` is `false` (any object means the client is still catching up);
//! 3. the head block is recent: `now - head.timestamp <= max_head_age` (a head stamped in
//!    the future, which clock skew between the proposer and this host can give, counts as
//!    age zero);
//! 4. where the client answers `net_peerCount`, it has at least `min_peers` peers. Clients
//!    that do not answer it (anvil: "Method not found") are not judged on peers.
//!
//! When several rules fail, the reason names every failure, separated by `; `, so the
//! load balancer's and the operator's view say everything at once
//! (`syncing (block 100 of 200); head is 75 s old (max 60 s)`).
//!
//! # Defaults
//!
//! [`DEFAULT_MAX_HEAD_AGE`] is 60 s: five 12-second slots. A healthy mainnet node sees a
//! new head every 12 s; a missed slot (about 1% of slots) or two in a row happens and must
//! not flap the node out of rotation, while a node 5+ slots behind serves stale data and
//! should leave it. [`DEFAULT_MIN_PEERS`] is 1: a node with no peers cannot follow the
//! chain, whatever its head looks like for the next minute; operators who want more
//! headroom raise it. Local anvil has no peers at all and does not report them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// The oldest a head may be: five 12-second slots (see the module doc).
pub const DEFAULT_MAX_HEAD_AGE: Duration = Duration::from_secs(60);
/// The fewest peers a node that reports peers may have (see the module doc).
pub const DEFAULT_MIN_PEERS: u64 = 1;

/// The limits a healthy node stays within.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Thresholds {
    /// The oldest the head block may be.
    pub max_head_age: Duration,
    /// The fewest peers, for clients that report them.
    pub min_peers: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            max_head_age: DEFAULT_MAX_HEAD_AGE,
            min_peers: DEFAULT_MIN_PEERS,
        }
    }
}

/// What the probe got from the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The node did not answer the required calls: refused, timed out, garbled, or a
    /// JSON-RPC error. `error` says which.
    Unreachable { error: String },
    /// The node answered.
    Answered(NodeStatus),
}

/// What an answering node said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub syncing: SyncState,
    pub head: HeadBlock,
    /// `net_peerCount`, or `None` when the client does not answer it.
    pub peers: Option<u64>,
}

/// `eth_syncing`: `false`, or an object with the client's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncState {
    /// `false`.
    NotSyncing,
    /// An object; its `currentBlock`/`highestBlock` where present.
    Syncing {
        current: Option<u64>,
        highest: Option<u64>,
    },
}

/// The head block: its number and timestamp (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadBlock {
    pub number: u64,
    pub timestamp: u64,
}

/// The verdict, as `/health` answers it (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    pub healthy: bool,
    /// Why not, when not healthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The head block number, when the node answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block: Option<u64>,
    /// How old the head is, in whole seconds, when the node answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_age_secs: Option<u64>,
    /// The peer count, when the client reports it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<u64>,
    /// Whether the client says it is syncing, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syncing: Option<bool>,
}

impl Health {
    /// Unhealthy for a reason that is not about the node's answers (hydrating, stopped).
    pub fn unhealthy(reason: impl Into<String>) -> Health {
        Health {
            healthy: false,
            reason: Some(reason.into()),
            block: None,
            head_age_secs: None,
            peers: None,
            syncing: None,
        }
    }
}

/// Judges `observation` against `thresholds` at `now`. See the module doc for the rules.
pub fn judge(observation: &Observation, thresholds: &Thresholds, now: SystemTime) -> Health {
    let status = match observation {
        Observation::Unreachable { error } => {
            return Health::unhealthy(format!("RPC does not answer: {error}"));
        }
        Observation::Answered(status) => status,
    };
    let mut failures: Vec<String> = Vec::new();

    if let SyncState::Syncing { current, highest } = status.syncing {
        failures.push(match (current, highest) {
            (Some(current), Some(highest)) => format!("syncing (block {current} of {highest})"),
            (Some(current), None) => format!("syncing (block {current})"),
            _ => "syncing".to_owned(),
        });
    }

    let age = head_age_secs(status.head.timestamp, now);
    if Duration::from_secs(age) > thresholds.max_head_age {
        failures.push(format!(
            "head is {age} s old (max {})",
            seconds(thresholds.max_head_age)
        ));
    }

    if let Some(peers) = status.peers
        && peers < thresholds.min_peers
    {
        failures.push(format!(
            "{peers} peer{} (min {})",
            if peers == 1 { "" } else { "s" },
            thresholds.min_peers
        ));
    }

    Health {
        healthy: failures.is_empty(),
        reason: (!failures.is_empty()).then(|| failures.join("; ")),
        block: Some(status.head.number),
        head_age_secs: Some(age),
        peers: status.peers,
        syncing: Some(matches!(status.syncing, SyncState::Syncing { .. })),
    }
}

/// `now - timestamp` in whole seconds (block timestamps are whole seconds, so the age is
/// judged at that grain and the reason never says "60 s old (max 60 s)"); zero for a head
/// stamped in the future.
fn head_age_secs(timestamp: u64, now: SystemTime) -> u64 {
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    now.saturating_sub(timestamp)
}

/// `60 s`, or `2.5 s` for a limit with a fraction.
fn seconds(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        format!("{} s", duration.as_secs())
    } else {
        format!("{} s", duration.as_secs_f64())
    }
}
