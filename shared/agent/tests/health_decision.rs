//! The health decision, rule by rule: every row of the table is an observation, the
//! thresholds and `now`, and the verdict and reason `judge` must give.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nodefleet_agent::health::{
    DEFAULT_MAX_HEAD_AGE, DEFAULT_MIN_PEERS, HeadBlock, Health, NodeStatus, Observation, SyncState,
    Thresholds, judge,
};

/// A fixed "now": 2026-01-01T00:00:00Z.
const NOW: u64 = 1_767_225_600;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

fn status(syncing: SyncState, head_age_secs: i64, peers: Option<u64>) -> Observation {
    Observation::Answered(NodeStatus {
        syncing,
        head: HeadBlock {
            number: 1_000,
            timestamp: (NOW as i64 - head_age_secs) as u64,
        },
        peers,
    })
}

fn thresholds(max_head_age_secs: u64, min_peers: u64) -> Thresholds {
    Thresholds {
        max_head_age: Duration::from_secs(max_head_age_secs),
        min_peers,
    }
}

const SYNCED: SyncState = SyncState::NotSyncing;

#[test]
fn the_table() {
    let syncing = SyncState::Syncing {
        current: Some(100),
        highest: Some(200),
    };
    let syncing_bare = SyncState::Syncing {
        current: None,
        highest: None,
    };
    let syncing_current = SyncState::Syncing {
        current: Some(7),
        highest: None,
    };
    let defaults = Thresholds::default();
    // (what, observation, thresholds, healthy, reason)
    let rows: Vec<(&str, Observation, Thresholds, bool, Option<&str>)> = vec![
        (
            "synced, fresh head, enough peers",
            status(SYNCED, 5, Some(30)),
            defaults,
            true,
            None,
        ),
        (
            "RPC does not answer",
            Observation::Unreachable {
                error: "eth_syncing: connection refused".into(),
            },
            defaults,
            false,
            Some("RPC does not answer: eth_syncing: connection refused"),
        ),
        (
            "syncing with progress",
            status(syncing, 5, Some(30)),
            defaults,
            false,
            Some("syncing (block 100 of 200)"),
        ),
        (
            "syncing: true, no progress object",
            status(syncing_bare, 5, Some(30)),
            defaults,
            false,
            Some("syncing"),
        ),
        (
            "syncing with the current block only",
            status(syncing_current, 5, Some(30)),
            defaults,
            false,
            Some("syncing (block 7)"),
        ),
        (
            "head exactly at the limit is healthy",
            status(SYNCED, 60, Some(30)),
            defaults,
            true,
            None,
        ),
        (
            "head one second past the limit",
            status(SYNCED, 61, Some(30)),
            defaults,
            false,
            Some("head is 61 s old (max 60 s)"),
        ),
        (
            "head 75 s old",
            status(SYNCED, 75, Some(30)),
            defaults,
            false,
            Some("head is 75 s old (max 60 s)"),
        ),
        (
            "head stamped in the future counts as fresh",
            status(SYNCED, -30, Some(30)),
            defaults,
            true,
            None,
        ),
        (
            "a tight limit",
            status(SYNCED, 4, None),
            thresholds(3, 0),
            false,
            Some("head is 4 s old (max 3 s)"),
        ),
        (
            "too few peers",
            status(SYNCED, 5, Some(2)),
            thresholds(60, 3),
            false,
            Some("2 peers (min 3)"),
        ),
        (
            "one peer, two wanted",
            status(SYNCED, 5, Some(1)),
            thresholds(60, 2),
            false,
            Some("1 peer (min 2)"),
        ),
        (
            "no peers with the default minimum",
            status(SYNCED, 5, Some(0)),
            defaults,
            false,
            Some("0 peers (min 1)"),
        ),
        (
            "exactly the minimum of peers",
            status(SYNCED, 5, Some(3)),
            thresholds(60, 3),
            true,
            None,
        ),
        (
            "peers not reported: not judged",
            status(SYNCED, 5, None),
            thresholds(60, 50),
            true,
            None,
        ),
        (
            "every rule failing names every failure",
            status(syncing, 300, Some(0)),
            defaults,
            false,
            Some("syncing (block 100 of 200); head is 300 s old (max 60 s); 0 peers (min 1)"),
        ),
    ];
    for (what, observation, thresholds, healthy, reason) in rows {
        let health = judge(&observation, &thresholds, now());
        assert_eq!(health.healthy, healthy, "{what}: {health:?}");
        assert_eq!(health.reason.as_deref(), reason, "{what}");
    }
}

#[test]
fn a_fractional_limit_is_said_as_such() {
    let limit = Thresholds {
        max_head_age: Duration::from_millis(2_500),
        min_peers: 0,
    };
    let health = judge(&status(SYNCED, 3, None), &limit, now());
    assert_eq!(
        health.reason.as_deref(),
        Some("head is 3 s old (max 2.5 s)")
    );
    assert!(judge(&status(SYNCED, 2, None), &limit, now()).healthy);
}

#[test]
fn the_verdict_carries_what_the_node_said() {
    let health = judge(&status(SYNCED, 12, Some(9)), &Thresholds::default(), now());
    assert_eq!(
        health,
        Health {
            healthy: true,
            reason: None,
            block: Some(1_000),
            head_age_secs: Some(12),
            peers: Some(9),
            syncing: Some(false),
        }
    );
    let json = serde_json::to_value(&health).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"healthy": true, "block": 1000, "head_age_secs": 12, "peers": 9, "syncing": false})
    );
    let down = judge(
        &Observation::Unreachable {
            error: "timeout".into(),
        },
        &Thresholds::default(),
        now(),
    );
    assert_eq!(
        serde_json::to_value(&down).unwrap(),
        serde_json::json!({"healthy": false, "reason": "RPC does not answer: timeout"})
    );
}

#[test]
fn the_defaults_are_five_slots_and_one_peer() {
    assert_eq!(DEFAULT_MAX_HEAD_AGE, Duration::from_secs(5 * 12));
    assert_eq!(DEFAULT_MIN_PEERS, 1);
    assert_eq!(
        Thresholds::default(),
        Thresholds {
            max_head_age: DEFAULT_MAX_HEAD_AGE,
            min_peers: DEFAULT_MIN_PEERS
        }
    );
}
