//! The `StateStore` contract: the promises of [`crate::state`] written as test cases, run
//! against every adapter (DynamoDB on moto, the embedded redb store on a file and in memory).
//!
//! Each case is a plain `pub async fn` taking a fresh, empty store; the
//! [`state_store_contract!`](crate::state_store_contract) macro expands into one
//! `#[tokio::test]` per case inside the calling test file. Time is always passed in (cases
//! count from [`T0`]), never read from a clock, so expiry cases are instant.
//!
//! What the cases promise, in short:
//!
//! - versioned saves of config, controller state, nodes and snapshots: create with [`Version::NEW`], update at
//!   the stored version, anything else is [`StateError::Conflict`] and overwrites nothing;
//!   a race of 20 saves from the same read has exactly one winner;
//! - lists are complete and in id order;
//! - leases: granted when free, expired or already the caller's; refused while someone else
//!   holds them; renew extends; renew or release after losing the lease is
//!   [`StateError::LeaseLost`]; the version (fencing token) grows with every grant;
//! - idempotency keys: claimed once (50 concurrent claims, one winner), completed by their
//!   owner only, forgotten at expiry;
//! - audit events: listed oldest first from `since`, at most `limit`, expired ones left out.

use std::sync::Arc;
use std::time::Duration;

use crate::model::{
    AuditEvent, ControlState, FleetConfig, NodeId, NodeRecord, NodeState, Role, SnapshotId,
    SnapshotRecord, SnapshotState, TaskId, Version, Zone,
};
use crate::state::{Entity, StateError, StateStore};
use crate::targets::Target;
use crate::{Lease, Timestamp};

/// The `now` every case counts from: 2100-01-01T00:00:00Z. In the future so that a real
/// DynamoDB table's TTL sweeper (which deletes items whose `ttl` has passed) never removes a
/// record while a case runs against it; moto and the embedded store never delete by TTL.
pub const T0: Timestamp = Timestamp::from_millis(4_102_444_800_000);

/// How many tasks claim one idempotency key at once in the claim race.
pub const CLAIM_RACERS: usize = 50;

/// How many tasks save the same node from the same read at once in the save race.
pub const SAVE_RACERS: usize = 20;

/// More nodes than fit in one page of a small page limit, and enough that an adapter
/// returning a fixed-size first page (100 is a common default) is caught.
pub const MANY_NODES: usize = 120;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn at(offset_secs: u64) -> Timestamp {
    T0.plus(secs(offset_secs))
}

/// A fleet configuration as an operator would first save it.
pub fn sample_config() -> FleetConfig {
    FleetConfig {
        name: "contract".to_owned(),
        zones: vec![
            Zone::from("us-east-1a"),
            Zone::from("us-east-1b"),
            Zone::from("us-east-1c"),
        ],
        serving_nodes: 6,
        healthy_floor: 4,
        storm_percent: 50,
        max_head_age_secs: 60,
        min_peers: 3,
        version: Version::NEW,
    }
}

/// A node record with every optional field filled, so the whole record round-trips.
pub fn sample_node(id: &str) -> NodeRecord {
    NodeRecord {
        id: NodeId::from(id),
        task: Some(TaskId::new(format!(
            "arn:aws:ecs:us-east-1:123456789012:task/nodefleet-contract/{id}-0123456789abcdef0123456789abcdef"
        ))),
        zone: Zone::from("us-east-1b"),
        target: Some(Target {
            id: "i-0123456789abcdef0".to_owned(),
            port: 32_768,
        }),
        role: Role::Serving,
        state: NodeState::Launching,
        snapshot: Some(SnapshotId::from("snap-000042")),
        created_at: T0,
        updated_at: T0,
        version: Version::NEW,
    }
}

/// A catalog entry being uploaded.
pub fn sample_snapshot(id: &str) -> SnapshotRecord {
    SnapshotRecord {
        id: SnapshotId::from(id),
        block_height: 21_000_000,
        client: "geth".to_owned(),
        client_version: "1.15.11".to_owned(),
        manifest_key: format!("manifests/{id}.json"),
        bytes: 1_200_000_000_000,
        uploaded_bytes: 3_000_000_000,
        state: SnapshotState::Uploading,
        created_at: T0,
        updated_at: T0,
        version: Version::NEW,
    }
}

/// An audit event with a chosen id, so cases know the order of same-millisecond events.
pub fn sample_event(at: Timestamp, id: &str, retention: Duration) -> AuditEvent {
    AuditEvent {
        at,
        id: id.to_owned(),
        kind: "node.launched".to_owned(),
        subject: format!("node-{id}"),
        detail: r#"{"zone":"us-east-1a"}"#.to_owned(),
        expires_at: at.plus(retention),
    }
}

fn assert_conflict<T: std::fmt::Debug>(result: Result<T, StateError>, entity: Entity, what: &str) {
    match result {
        Err(StateError::Conflict { entity: got, .. }) if got == entity => {}
        other => panic!("{what}: expected a {entity} Conflict, got {other:?}"),
    }
}

fn assert_lease_lost<T: std::fmt::Debug>(result: Result<T, StateError>, what: &str) {
    match result {
        Err(StateError::LeaseLost { .. }) => {}
        other => panic!("{what}: expected LeaseLost, got {other:?}"),
    }
}

fn assert_already_claimed<T: std::fmt::Debug>(result: Result<T, StateError>, what: &str) {
    match result {
        Err(StateError::AlreadyClaimed { .. }) => {}
        other => panic!("{what}: expected AlreadyClaimed, got {other:?}"),
    }
}

// ---- versioned saves ----

/// The fleet config is created once, updated at its version, and a stale or repeated create
/// is a conflict that leaves the stored config alone.
pub async fn config_save_is_versioned<S: StateStore + 'static>(store: S) {
    assert_eq!(store.get_config().await.expect("get_config"), None);

    let created = store
        .save_config(&sample_config())
        .await
        .expect("create the config");
    assert_eq!(
        created.version,
        Version::NEW.next(),
        "a create stores version 1"
    );
    assert_eq!(
        created,
        FleetConfig {
            version: created.version,
            ..sample_config()
        },
        "the stored config is the one saved, with its new version"
    );
    assert_eq!(
        store.get_config().await.expect("get_config"),
        Some(created.clone())
    );

    let mut changed = created.clone();
    changed.serving_nodes = 9;
    let updated = store
        .save_config(&changed)
        .await
        .expect("update at version 1");
    assert_eq!(updated.version, created.version.next());
    assert_eq!(updated.serving_nodes, 9);

    let mut stale = created.clone();
    stale.serving_nodes = 1;
    assert_conflict(
        store.save_config(&stale).await,
        Entity::FleetConfig,
        "stale save",
    );
    assert_conflict(
        store.save_config(&sample_config()).await,
        Entity::FleetConfig,
        "second create",
    );
    assert_eq!(
        store.get_config().await.expect("get_config"),
        Some(updated),
        "conflicting saves overwrote nothing"
    );
}

/// Controller states are kept per name: each is created once, updated at its version, and a
/// stale save or a second create is a conflict that leaves the stored document alone.
pub async fn control_state_save_is_versioned_per_name<S: StateStore + 'static>(store: S) {
    assert_eq!(store.get_control_state("reactor").await.expect("get"), None);
    let draft = |name: &str, body: &str| ControlState {
        name: name.to_owned(),
        body: body.to_owned(),
        updated_at: T0,
        version: Version::NEW,
    };
    let reactor = store
        .save_control_state(&draft("reactor", r#"{"tokens":10}"#))
        .await
        .expect("create the reactor's state");
    assert_eq!(
        reactor.version,
        Version::NEW.next(),
        "a create stores version 1"
    );
    let updater = store
        .save_control_state(&draft("snapshot-updater", r#"{"step":"idle"}"#))
        .await
        .expect("another name is another record");
    assert_eq!(updater.version, Version::NEW.next());

    let mut changed = reactor.clone();
    changed.body = r#"{"tokens":9}"#.to_owned();
    changed.updated_at = T0.plus(Duration::from_secs(60));
    let updated = store
        .save_control_state(&changed)
        .await
        .expect("update at version 1");
    assert_eq!(updated.version, reactor.version.next());

    assert_conflict(
        store.save_control_state(&reactor).await,
        Entity::ControlState,
        "stale save",
    );
    assert_conflict(
        store.save_control_state(&draft("reactor", "{}")).await,
        Entity::ControlState,
        "second create",
    );
    assert_eq!(
        store.get_control_state("reactor").await.expect("get"),
        Some(updated),
        "conflicting saves overwrote nothing"
    );
    assert_eq!(
        store
            .get_control_state("snapshot-updater")
            .await
            .expect("get"),
        Some(updater),
        "names do not share a record"
    );
}

/// Node records: create, update at the right version, stale update and repeated create are
/// conflicts; other nodes are independent.
pub async fn node_save_is_versioned<S: StateStore + 'static>(store: S) {
    let id = NodeId::from("node-a");
    assert_eq!(store.get_node(&id).await.expect("get_node"), None);

    let created = store
        .save_node(&sample_node("node-a"))
        .await
        .expect("create");
    assert_eq!(created.version, Version(1));
    assert_eq!(
        created,
        NodeRecord {
            version: Version(1),
            ..sample_node("node-a")
        }
    );
    let other = store
        .save_node(&sample_node("node-b"))
        .await
        .expect("create another");
    assert_eq!(other.version, Version(1), "versions are per record");

    let mut serving = created.clone();
    serving.state = NodeState::Serving;
    serving.updated_at = at(30);
    let updated = store
        .save_node(&serving)
        .await
        .expect("update at version 1");
    assert_eq!(updated.version, Version(2));
    assert_eq!(updated.state, NodeState::Serving);

    let mut stale = created.clone();
    stale.state = NodeState::Stopped;
    assert_conflict(store.save_node(&stale).await, Entity::Node, "stale save");
    assert_conflict(
        store.save_node(&sample_node("node-a")).await,
        Entity::Node,
        "second create",
    );
    assert_eq!(
        store.get_node(&id).await.expect("get_node"),
        Some(updated),
        "conflicting saves overwrote nothing"
    );
    assert_eq!(
        store
            .get_node(&NodeId::from("node-b"))
            .await
            .expect("get_node"),
        Some(other)
    );
}

/// Snapshot catalog entries follow the same versioning.
pub async fn snapshot_save_is_versioned<S: StateStore + 'static>(store: S) {
    let id = SnapshotId::from("snap-1");
    assert_eq!(store.get_snapshot(&id).await.expect("get_snapshot"), None);

    let created = store
        .save_snapshot(&sample_snapshot("snap-1"))
        .await
        .expect("create");
    assert_eq!(created.version, Version(1));

    let mut verified = created.clone();
    verified.state = SnapshotState::Verified;
    let updated = store.save_snapshot(&verified).await.expect("update");
    assert_eq!(updated.version, Version(2));

    let mut stale = created.clone();
    stale.state = SnapshotState::Failed;
    assert_conflict(
        store.save_snapshot(&stale).await,
        Entity::Snapshot,
        "stale save",
    );
    assert_conflict(
        store.save_snapshot(&sample_snapshot("snap-1")).await,
        Entity::Snapshot,
        "second create",
    );
    assert_eq!(
        store.get_snapshot(&id).await.expect("get_snapshot"),
        Some(updated)
    );
}

/// Saving at a version for a record that was never stored is a conflict (someone deleted it,
/// or the caller made the version up), and stores nothing.
pub async fn save_of_a_missing_record_at_a_version_conflicts<S: StateStore + 'static>(store: S) {
    let mut node = sample_node("ghost");
    node.version = Version(3);
    assert_conflict(
        store.save_node(&node).await,
        Entity::Node,
        "save of a missing node",
    );
    assert_eq!(store.get_node(&node.id).await.expect("get_node"), None);

    let mut snapshot = sample_snapshot("ghost");
    snapshot.version = Version(1);
    assert_conflict(
        store.save_snapshot(&snapshot).await,
        Entity::Snapshot,
        "save of a missing snapshot",
    );
    assert_eq!(store.get_snapshot(&snapshot.id).await.expect("get"), None);

    let mut config = sample_config();
    config.version = Version(2);
    assert_conflict(
        store.save_config(&config).await,
        Entity::FleetConfig,
        "save of a missing config",
    );
    assert_eq!(store.get_config().await.expect("get_config"), None);
}

/// A node is deleted only at its stored version; deleting it again is a conflict.
pub async fn delete_node_is_versioned<S: StateStore + 'static>(store: S) {
    let created = store
        .save_node(&sample_node("node-d"))
        .await
        .expect("create");
    let updated = store.save_node(&created).await.expect("update");

    assert_conflict(
        store.delete_node(&created.id, created.version).await,
        Entity::Node,
        "delete at a stale version",
    );
    assert_conflict(
        store.delete_node(&created.id, Version::NEW).await,
        Entity::Node,
        "delete at version NEW",
    );
    assert_eq!(
        store.get_node(&created.id).await.expect("get_node"),
        Some(updated.clone()),
        "a conflicting delete deleted nothing"
    );

    store
        .delete_node(&updated.id, updated.version)
        .await
        .expect("delete at the stored version");
    assert_eq!(store.get_node(&updated.id).await.expect("get_node"), None);
    assert_conflict(
        store.delete_node(&updated.id, updated.version).await,
        Entity::Node,
        "delete of a deleted node",
    );
    assert!(store.list_nodes().await.expect("list").is_empty());
}

/// `list_nodes` returns every node, in id (string) order, whatever the insertion order.
pub async fn list_nodes_is_complete_and_in_id_order<S: StateStore + 'static>(store: S) {
    assert!(
        store
            .list_nodes()
            .await
            .expect("list of nothing")
            .is_empty()
    );

    let mut saved = Vec::with_capacity(MANY_NODES);
    // A stride coprime with MANY_NODES visits every index once, out of order; unpadded
    // ids make string order differ from numeric order (n10 < n2).
    for step in 0..MANY_NODES {
        let index = (step * 37) % MANY_NODES;
        let mut node = sample_node(&format!("n{index}"));
        node.zone = Zone::new(format!("zone-{}", index % 3));
        saved.push(store.save_node(&node).await.expect("save node"));
    }
    saved.sort_by(|a, b| a.id.cmp(&b.id));

    let listed = store.list_nodes().await.expect("list_nodes");
    assert_eq!(listed.len(), MANY_NODES, "every node is listed");
    assert_eq!(listed, saved, "nodes are listed in id order, as stored");
}

/// `list_snapshots` returns every catalog entry in id order, and nothing else.
pub async fn list_snapshots_is_complete_and_in_id_order<S: StateStore + 'static>(store: S) {
    assert!(store.list_snapshots().await.expect("list").is_empty());
    let ids = ["snap-20", "snap-03", "snap-3", "snap-100", "snap-07"];
    let mut saved = Vec::new();
    for id in ids {
        saved.push(
            store
                .save_snapshot(&sample_snapshot(id))
                .await
                .expect("save"),
        );
    }
    // A node record must not show up among the snapshots (nor the reverse).
    store
        .save_node(&sample_node("snap-99"))
        .await
        .expect("save node");
    saved.sort_by(|a, b| a.id.cmp(&b.id));

    let listed = store.list_snapshots().await.expect("list_snapshots");
    assert_eq!(listed, saved);
    assert_eq!(store.list_nodes().await.expect("list_nodes").len(), 1);
}

/// Of 20 saves of the same node from the same read, racing, exactly one wins; the others
/// are conflicts and the stored record is the winner's.
pub async fn node_save_race_has_one_winner<S: StateStore + 'static>(store: S) {
    let store = Arc::new(store);
    let read = store
        .save_node(&sample_node("contested"))
        .await
        .expect("create");

    let mut racers = Vec::with_capacity(SAVE_RACERS);
    for racer in 0..SAVE_RACERS {
        let store = Arc::clone(&store);
        let mut node = read.clone();
        node.task = Some(TaskId::new(format!("task-of-racer-{racer}")));
        node.state = NodeState::Hydrating;
        racers.push(tokio::spawn(async move { store.save_node(&node).await }));
    }
    let mut winners = Vec::new();
    for racer in racers {
        match racer.await.expect("racer task") {
            Ok(saved) => winners.push(saved),
            Err(StateError::Conflict {
                entity: Entity::Node,
                ..
            }) => {}
            Err(other) => panic!("a losing save must be a Conflict, got {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one of {SAVE_RACERS} saves wins");
    let winner = winners.remove(0);
    assert_eq!(winner.version, read.version.next());
    assert_eq!(
        store.get_node(&read.id).await.expect("get_node"),
        Some(winner),
        "the stored record is the winner's"
    );
}

// ---- leases ----

const LEASE: &str = "snapshot-updater";

/// A free lease is granted; while it is held, another holder is told who holds it and until
/// when.
pub async fn lease_is_granted_when_free_and_refused_when_held<S: StateStore + 'static>(store: S) {
    assert_eq!(store.get_lease(LEASE, T0).await.expect("get_lease"), None);

    let lease = store
        .acquire_lease(LEASE, "alpha", secs(30), T0)
        .await
        .expect("acquire a free lease");
    assert_eq!(lease.name, LEASE);
    assert_eq!(lease.holder, "alpha");
    assert_eq!(lease.acquired_at, T0);
    assert_eq!(lease.expires_at, at(30));
    assert!(
        lease.version > Version::NEW,
        "a granted lease has a version"
    );
    assert_eq!(
        store.get_lease(LEASE, at(1)).await.expect("get_lease"),
        Some(lease.clone())
    );

    match store.acquire_lease(LEASE, "beta", secs(30), at(29)).await {
        Err(StateError::LeaseHeld {
            name,
            holder,
            expires_at,
        }) => {
            assert_eq!(name, LEASE);
            assert_eq!(holder, "alpha");
            assert_eq!(expires_at, at(30));
        }
        other => panic!("a held lease must be refused with LeaseHeld, got {other:?}"),
    }
    assert_eq!(
        store.get_lease(LEASE, at(2)).await.expect("get_lease"),
        Some(lease),
        "a refused acquire changed nothing"
    );

    let other = store
        .acquire_lease("retention", "beta", secs(30), T0)
        .await
        .expect("leases are independent by name");
    assert_eq!(other.holder, "beta");
}

/// The holder acquiring its own live lease again renews it: later expiry, higher version.
pub async fn lease_reacquire_by_its_holder_renews_it<S: StateStore + 'static>(store: S) {
    let first = store
        .acquire_lease(LEASE, "alpha", secs(30), T0)
        .await
        .expect("acquire");
    let again = store
        .acquire_lease(LEASE, "alpha", secs(30), at(10))
        .await
        .expect("re-acquire by the same holder");
    assert_eq!(again.holder, "alpha");
    assert_eq!(again.expires_at, at(40));
    assert!(again.version > first.version, "a re-acquire is a new grant");
    assert_eq!(
        store.get_lease(LEASE, at(35)).await.expect("get_lease"),
        Some(again)
    );
}

/// Renew extends a live lease from `now` and grows its version; renewing an older copy of
/// the lease (a version that is no longer stored) is LeaseLost.
pub async fn lease_renew_extends_and_a_stale_renew_is_lost<S: StateStore + 'static>(store: S) {
    let lease = store
        .acquire_lease(LEASE, "alpha", secs(30), T0)
        .await
        .expect("acquire");
    let renewed = store
        .renew_lease(&lease, secs(60), at(20))
        .await
        .expect("renew a live lease");
    assert_eq!(renewed.holder, "alpha");
    assert_eq!(
        renewed.acquired_at, lease.acquired_at,
        "renew keeps acquired_at"
    );
    assert_eq!(renewed.expires_at, at(80));
    assert!(renewed.version > lease.version);
    assert_eq!(
        store.get_lease(LEASE, at(50)).await.expect("get_lease"),
        Some(renewed.clone()),
        "the lease is held past its first expiry"
    );

    assert_lease_lost(
        store.renew_lease(&lease, secs(60), at(21)).await,
        "renew of a stale copy",
    );
    assert_eq!(
        store.get_lease(LEASE, at(22)).await.expect("get_lease"),
        Some(renewed)
    );
}

/// A lease that expired cannot be renewed, even if nobody took it.
pub async fn lease_renew_after_expiry_is_lost<S: StateStore + 'static>(store: S) {
    let lease = store
        .acquire_lease(LEASE, "alpha", secs(30), T0)
        .await
        .expect("acquire");
    assert_eq!(
        store.get_lease(LEASE, at(30)).await.expect("get_lease"),
        None,
        "a lease reads as free from its expiry on"
    );
    assert_lease_lost(
        store.renew_lease(&lease, secs(30), at(30)).await,
        "renew at expiry",
    );
    assert_lease_lost(
        store.renew_lease(&lease, secs(30), at(31)).await,
        "renew after expiry",
    );
}

/// After expiry another holder takes the lease; the old holder's renew and release are then
/// LeaseLost and leave the new holder's lease alone.
pub async fn lease_expired_is_taken_over_and_the_old_holder_loses_it<S: StateStore + 'static>(
    store: S,
) {
    let old = store
        .acquire_lease(LEASE, "alpha", secs(30), T0)
        .await
        .expect("acquire");
    assert!(
        matches!(
            store.acquire_lease(LEASE, "beta", secs(30), at(29)).await,
            Err(StateError::LeaseHeld { .. })
        ),
        "not taken over before expiry"
    );

    let new = store
        .acquire_lease(LEASE, "beta", secs(30), at(30))
        .await
        .expect("take over an expired lease");
    assert_eq!(new.holder, "beta");
    assert_eq!(new.acquired_at, at(30));
    assert_eq!(new.expires_at, at(60));
    assert!(new.version > old.version, "the fencing token grows");

    assert_lease_lost(
        store.renew_lease(&old, secs(30), at(31)).await,
        "old holder's renew",
    );
    assert_lease_lost(store.release_lease(&old).await, "old holder's release");
    assert_eq!(
        store.get_lease(LEASE, at(32)).await.expect("get_lease"),
        Some(new),
        "the new holder's lease is untouched"
    );
    match store.acquire_lease(LEASE, "alpha", secs(30), at(33)).await {
        Err(StateError::LeaseHeld { holder, .. }) => assert_eq!(holder, "beta"),
        other => panic!("the old holder must see LeaseHeld, got {other:?}"),
    }
}

/// Release frees the lease at once; releasing again, or releasing a lease that never
/// existed, is fine.
pub async fn lease_release_frees_it<S: StateStore + 'static>(store: S) {
    let lease = store
        .acquire_lease(LEASE, "alpha", secs(30), T0)
        .await
        .expect("acquire");
    store.release_lease(&lease).await.expect("release");
    assert_eq!(
        store.get_lease(LEASE, at(1)).await.expect("get_lease"),
        None
    );
    store
        .release_lease(&lease)
        .await
        .expect("a second release is fine");

    let next = store
        .acquire_lease(LEASE, "beta", secs(30), at(2))
        .await
        .expect("a released lease is free before its expiry");
    assert!(
        next.version > lease.version,
        "the fencing token never repeats"
    );
    assert_lease_lost(
        store.release_lease(&lease).await,
        "release after a new grant",
    );
    assert_eq!(
        store.get_lease(LEASE, at(3)).await.expect("get_lease"),
        Some(next)
    );

    let never = Lease {
        name: "never-acquired".to_owned(),
        holder: "alpha".to_owned(),
        acquired_at: T0,
        expires_at: at(30),
        version: Version(1),
    };
    store
        .release_lease(&never)
        .await
        .expect("releasing a lease that does not exist is fine");
}

/// The version grows with every acquire, renew and takeover: a fencing token never repeats.
pub async fn lease_version_grows_with_every_grant<S: StateStore + 'static>(store: S) {
    let mut versions = Vec::new();
    let first = store
        .acquire_lease(LEASE, "alpha", secs(10), T0)
        .await
        .expect("acquire");
    versions.push(first.version);
    let renewed = store
        .renew_lease(&first, secs(10), at(5))
        .await
        .expect("renew");
    versions.push(renewed.version);
    let again = store
        .acquire_lease(LEASE, "alpha", secs(10), at(6))
        .await
        .expect("re-acquire");
    versions.push(again.version);
    let taken = store
        .acquire_lease(LEASE, "beta", secs(10), at(16))
        .await
        .expect("take over");
    versions.push(taken.version);
    store.release_lease(&taken).await.expect("release");
    let after_release = store
        .acquire_lease(LEASE, "gamma", secs(10), at(17))
        .await
        .expect("acquire after release");
    versions.push(after_release.version);

    assert!(
        versions.windows(2).all(|pair| pair[0] < pair[1]),
        "versions must strictly grow: {versions:?}"
    );
}

// ---- idempotency keys ----

const KEY: &str = "launch/node-a/attempt-1";

/// A key is claimed once; every later claim (by anyone, the owner included) is refused.
pub async fn idempotency_key_is_claimed_once<S: StateStore + 'static>(store: S) {
    assert_eq!(store.get_idempotency_key(KEY, T0).await.expect("get"), None);

    let claim = store
        .claim_idempotency_key(KEY, "request-1", secs(60), T0)
        .await
        .expect("first claim");
    assert_eq!(claim.key, KEY);
    assert_eq!(claim.owner, "request-1");
    assert_eq!(claim.created_at, T0);
    assert_eq!(claim.expires_at, at(60));
    assert_eq!(claim.outcome, None);

    assert_already_claimed(
        store
            .claim_idempotency_key(KEY, "request-2", secs(60), at(1))
            .await,
        "claim by another",
    );
    assert_already_claimed(
        store
            .claim_idempotency_key(KEY, "request-1", secs(60), at(1))
            .await,
        "claim again by the owner",
    );
    assert_eq!(
        store.get_idempotency_key(KEY, at(2)).await.expect("get"),
        Some(claim),
        "refused claims changed nothing"
    );
    store
        .claim_idempotency_key("another-key", "request-2", secs(60), at(1))
        .await
        .expect("keys are independent");
}

/// Only the owner records the outcome, while its claim is live; the outcome is kept.
pub async fn idempotency_key_is_completed_by_its_owner_only<S: StateStore + 'static>(store: S) {
    let claim = store
        .claim_idempotency_key(KEY, "request-1", secs(60), T0)
        .await
        .expect("claim");

    assert_already_claimed(
        store
            .complete_idempotency_key(KEY, "request-2", "arn:task/intruder", at(1))
            .await,
        "complete by a non-owner",
    );
    assert_eq!(
        store.get_idempotency_key(KEY, at(1)).await.expect("get"),
        Some(claim.clone()),
        "a refused complete recorded nothing"
    );

    let done = store
        .complete_idempotency_key(KEY, "request-1", "arn:task/abc", at(2))
        .await
        .expect("complete by the owner");
    assert_eq!(done.outcome.as_deref(), Some("arn:task/abc"));
    assert_eq!(done.owner, claim.owner);
    assert_eq!(done.created_at, claim.created_at);
    assert_eq!(done.expires_at, claim.expires_at);
    assert_eq!(
        store.get_idempotency_key(KEY, at(3)).await.expect("get"),
        Some(done)
    );
    assert_already_claimed(
        store
            .claim_idempotency_key(KEY, "request-3", secs(60), at(4))
            .await,
        "claim of a completed key",
    );

    match store
        .complete_idempotency_key("never-claimed", "request-1", "x", at(4))
        .await
    {
        Err(StateError::NotFound {
            entity: Entity::IdempotencyKey,
            ..
        }) => {}
        other => panic!("completing an unclaimed key must be NotFound, got {other:?}"),
    }
}

/// At its expiry a key reads as absent, the old owner can no longer complete it, and it can
/// be claimed again.
pub async fn idempotency_key_expires_and_can_be_reclaimed<S: StateStore + 'static>(store: S) {
    store
        .claim_idempotency_key(KEY, "request-1", secs(60), T0)
        .await
        .expect("claim");
    assert!(
        store
            .get_idempotency_key(KEY, at(59))
            .await
            .expect("get")
            .is_some(),
        "live just before expiry"
    );
    assert_eq!(
        store.get_idempotency_key(KEY, at(60)).await.expect("get"),
        None,
        "an expired key reads as absent"
    );
    match store
        .complete_idempotency_key(KEY, "request-1", "late", at(60))
        .await
    {
        Err(StateError::NotFound { .. }) => {}
        other => panic!("completing an expired claim must be NotFound, got {other:?}"),
    }

    let reclaimed = store
        .claim_idempotency_key(KEY, "request-2", secs(60), at(61))
        .await
        .expect("an expired key can be claimed again");
    assert_eq!(reclaimed.owner, "request-2");
    assert_eq!(reclaimed.created_at, at(61));
    assert_eq!(reclaimed.outcome, None);
    assert_already_claimed(
        store
            .complete_idempotency_key(KEY, "request-1", "late", at(62))
            .await,
        "the old owner completing a reclaimed key",
    );
    assert_eq!(
        store.get_idempotency_key(KEY, at(62)).await.expect("get"),
        Some(reclaimed)
    );
}

/// 50 concurrent claims of one key: exactly one `Ok`, 49 `AlreadyClaimed`.
pub async fn idempotency_key_race_has_one_winner<S: StateStore + 'static>(store: S) {
    let store = Arc::new(store);
    let mut racers = Vec::with_capacity(CLAIM_RACERS);
    for racer in 0..CLAIM_RACERS {
        let store = Arc::clone(&store);
        racers.push(tokio::spawn(async move {
            store
                .claim_idempotency_key(KEY, &format!("racer-{racer}"), secs(60), T0)
                .await
        }));
    }
    let mut winners = Vec::new();
    let mut refused = 0;
    for racer in racers {
        match racer.await.expect("racer task") {
            Ok(claim) => winners.push(claim),
            Err(StateError::AlreadyClaimed { key }) => {
                assert_eq!(key, KEY);
                refused += 1;
            }
            Err(other) => panic!("a losing claim must be AlreadyClaimed, got {other:?}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one of {CLAIM_RACERS} claims wins"
    );
    assert_eq!(refused, CLAIM_RACERS - 1);
    assert_eq!(
        store.get_idempotency_key(KEY, at(1)).await.expect("get"),
        Some(winners.remove(0)),
        "the stored claim is the winner's"
    );
}

// ---- audit trail ----

const RETENTION: Duration = Duration::from_secs(86_400);

/// Events come back oldest first (same-millisecond events by id), from `since` inclusive,
/// at most `limit`; appending the same event twice (a retried call) stores it once.
pub async fn events_are_listed_oldest_first_from_since_up_to_limit<S: StateStore + 'static>(
    store: S,
) {
    assert!(
        store
            .list_events(T0, T0, 10)
            .await
            .expect("list")
            .is_empty()
    );

    let c = sample_event(at(3), "c", RETENTION);
    let b = sample_event(at(1), "b", RETENTION);
    let a = sample_event(at(1), "a", RETENTION);
    let d = sample_event(at(2), "d", RETENTION);
    let e = sample_event(at(5), "e", RETENTION);
    for event in [&c, &b, &a, &d, &e] {
        store.append_event(event).await.expect("append");
    }
    store
        .append_event(&c)
        .await
        .expect("append the same event again");

    let everything = store
        .list_events(Timestamp::EPOCH, at(6), 100)
        .await
        .expect("list");
    assert_eq!(
        everything,
        vec![a.clone(), b.clone(), d.clone(), c.clone(), e.clone()]
    );
    assert_eq!(
        store
            .list_events(at(2), at(6), 100)
            .await
            .expect("list since"),
        vec![d.clone(), c.clone(), e],
        "since is inclusive"
    );
    assert_eq!(
        store.list_events(T0, at(6), 2).await.expect("list limited"),
        vec![a, b],
        "the oldest `limit` events"
    );
    assert!(
        store
            .list_events(T0, at(6), 0)
            .await
            .expect("limit 0")
            .is_empty()
    );
    assert!(
        store
            .list_events(at(6), at(6), 10)
            .await
            .expect("list")
            .is_empty(),
        "nothing at or after `since`"
    );
}

/// Expired events are never listed, and `limit` counts only live ones.
pub async fn expired_events_are_not_listed<S: StateStore + 'static>(store: S) {
    let mut live = Vec::new();
    for index in 0..10u64 {
        let short_lived = index % 2 == 0;
        let retention = if short_lived { secs(60) } else { RETENTION };
        let event = sample_event(at(index), &format!("event-{index}"), retention);
        store.append_event(&event).await.expect("append");
        if !short_lived {
            live.push(event);
        }
    }
    let before_expiry = store.list_events(T0, at(30), 100).await.expect("list");
    assert_eq!(
        before_expiry.len(),
        10,
        "all live before the short ones expire"
    );

    // event-0 expires at T0+60s, event-8 at T0+68s: at T0+70s every short-lived one is gone.
    assert_eq!(
        store.list_events(T0, at(70), 100).await.expect("list"),
        live,
        "expired events are left out"
    );
    assert_eq!(
        store
            .list_events(T0, at(70), 3)
            .await
            .expect("list limited"),
        live[..3].to_vec(),
        "limit counts live events"
    );
}

/// Expands into one `#[tokio::test]` per `StateStore` promise, each on a fresh store built by
/// `$make` (an expression evaluating to a future of the store), inside a module named
/// `state_store_contract`.
///
/// ```text
/// nodefleet_ports::state_store_contract!(async { EmbeddedStateStore::in_memory().unwrap() });
/// ```
#[macro_export]
macro_rules! state_store_contract {
    ($make:expr) => {
        $crate::state_store_contract!(@cases $make;
            config_save_is_versioned,
            control_state_save_is_versioned_per_name,
            node_save_is_versioned,
            snapshot_save_is_versioned,
            save_of_a_missing_record_at_a_version_conflicts,
            delete_node_is_versioned,
            list_nodes_is_complete_and_in_id_order,
            list_snapshots_is_complete_and_in_id_order,
            node_save_race_has_one_winner,
            lease_is_granted_when_free_and_refused_when_held,
            lease_reacquire_by_its_holder_renews_it,
            lease_renew_extends_and_a_stale_renew_is_lost,
            lease_renew_after_expiry_is_lost,
            lease_expired_is_taken_over_and_the_old_holder_loses_it,
            lease_release_frees_it,
            lease_version_grows_with_every_grant,
            idempotency_key_is_claimed_once,
            idempotency_key_is_completed_by_its_owner_only,
            idempotency_key_expires_and_can_be_reclaimed,
            idempotency_key_race_has_one_winner,
            events_are_listed_oldest_first_from_since_up_to_limit,
            expired_events_are_not_listed,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        mod state_store_contract {
            #[allow(unused_imports)]
            use super::*;
            $(
                // Several worker threads, so the race cases really race.
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let store = ($make).await;
                    $crate::contract::state_store::$case(store).await;
                }
            )*
        }
    };
}
