//! `EmbeddedStateStore`: the `StateStore` of the local fleet, in a redb database file in the
//! fleet's folder ([`EmbeddedStateStore::open`]), or in memory
//! ([`EmbeddedStateStore::in_memory`]), which is also the `StateStore` fake of the scenario
//! tests: one implementation of the conditions, shared by the local mode and the tests.
//!
//! # Key design
//!
//! One redb table, `state`, keyed by strings, valued by JSON documents; the same idea as the
//! DynamoDB table (one table, the record kind in the key), without the fleet name, because
//! a database belongs to one fleet:
//!
//! | record | key | value |
//! |---|---|---|
//! | fleet config | `config` | `FleetConfig` |
//! | controller state | `control/<name>` | `ControlState` |
//! | node | `node/<node id>` | `NodeRecord` |
//! | snapshot | `snapshot/<snapshot id>` | `SnapshotRecord` |
//! | lease | `lease/<name>` | holder (absent when released), acquired_at, expires_at, version |
//! | idempotency key | `idem/<key>` | `IdempotencyRecord` |
//! | audit event | `event/<at, 20-digit millis>#<event id>` | `AuditEvent` |
//!
//! Keys sort as strings, so a range over `node/` lists nodes in id order and a range over
//! `event/` lists events oldest first (zero-padded milliseconds, then id).
//!
//! # Conditions
//!
//! Every write reads the record, checks its condition and writes inside one redb write
//! transaction. redb serialises write transactions, so check-and-write is atomic: of racing
//! claims exactly one sees the key free. A failed condition aborts the transaction, so
//! nothing is written. redb calls block, so each runs on tokio's blocking pool
//! (`spawn_blocking`), never on an async worker.
//!
//! Expiry works as in DynamoDB: expired leases, idempotency keys and events stay stored
//! and are compared with the caller's `now`; [`EmbeddedStateStore::purge_expired`] is the
//! embedded stand-in for DynamoDB's TTL sweeper. A released lease keeps its record (without
//! a holder) so its version, the fencing token, keeps growing.
//! [`EmbeddedStateStore::forget_claims`] drops the keys and leases of owners known to be gone
//! before they expire (a `nodefleet up` reopening its folder: [`crate::healing`]).
//!
//! # Error policy
//!
//! Lost races are the port's typed answers (`Conflict`, `LeaseHeld`, `LeaseLost`,
//! `AlreadyClaimed`, `NotFound`). A record that does not parse is `Corrupt`. Every redb
//! failure (I/O, a corrupted or locked file, a full disk) is `Backend`: retrying does not
//! fix a local disk, an operator does. The embedded store is never `Throttled` or
//! `Unavailable`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nodefleet_ports::model::{
    AuditEvent, ControlState, FleetConfig, IdempotencyRecord, Lease, NodeId, NodeRecord,
    SnapshotId, SnapshotRecord, Version,
};
use nodefleet_ports::{Entity, StateError, StateStore, Timestamp};
use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The one table every record lives in (see the key design in the module doc).
const STATE_TABLE: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("state");

const CONFIG_KEY: &str = "config";
const CONTROL_PREFIX: &str = "control/";
const NODE_PREFIX: &str = "node/";
const SNAPSHOT_PREFIX: &str = "snapshot/";
const LEASE_PREFIX: &str = "lease/";
const IDEMPOTENCY_PREFIX: &str = "idem/";
const EVENT_PREFIX: &str = "event/";

/// A lease as stored: `holder` is `None` once released, and the version stays so the next
/// grant gets a higher one.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredLease {
    holder: Option<String>,
    acquired_at: Timestamp,
    expires_at: Timestamp,
    version: Version,
}

impl StoredLease {
    /// The holder, if the lease is held at `now`.
    fn live_holder(&self, now: Timestamp) -> Option<&str> {
        self.holder.as_deref().filter(|_| self.expires_at > now)
    }

    fn to_lease(&self, name: &str) -> Option<Lease> {
        self.holder.as_ref().map(|holder| Lease {
            name: name.to_owned(),
            holder: holder.clone(),
            acquired_at: self.acquired_at,
            expires_at: self.expires_at,
            version: self.version,
        })
    }
}

/// What [`EmbeddedStateStore::forget_claims`] forgot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForgottenClaims {
    /// Idempotency keys deleted (each attempt `<key>#<n>` counts once).
    pub keys: usize,
    /// Names of the leases released.
    pub leases: Vec<String>,
}

/// The `StateStore` in a redb database. Cheap to clone: clones share the database.
#[derive(Debug, Clone)]
pub struct EmbeddedStateStore {
    db: Arc<Database>,
    /// The database file; `None` in memory.
    path: Option<PathBuf>,
}

impl EmbeddedStateStore {
    /// Opens the database file at `path`, creating it (not its folder) if it is missing.
    /// Blocks on file I/O: call it at start-up, not on a busy async worker.
    pub fn open(path: impl AsRef<Path>) -> Result<EmbeddedStateStore, StateError> {
        let path = path.as_ref();
        let db = Database::create(path).map_err(|error| StateError::Backend {
            message: format!("cannot open state database {}: {error}", path.display()),
        })?;
        EmbeddedStateStore::prepare(db, Some(path.to_path_buf()))
    }

    /// A database that lives in memory and is gone when the last clone is dropped: the
    /// `StateStore` fake for tests.
    pub fn in_memory() -> Result<EmbeddedStateStore, StateError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(backend)?;
        EmbeddedStateStore::prepare(db, None)
    }

    /// A store on a database the caller opened itself (to tell a file locked by another
    /// process from other failures: [`crate::healing`]).
    pub(crate) fn from_database(
        db: Database,
        path: PathBuf,
    ) -> Result<EmbeddedStateStore, StateError> {
        EmbeddedStateStore::prepare(db, Some(path))
    }

    /// The database file, or `None` for an in-memory store.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Creates the table, so read transactions always find it.
    fn prepare(db: Database, path: Option<PathBuf>) -> Result<EmbeddedStateStore, StateError> {
        let txn = db.begin_write().map_err(backend)?;
        txn.open_table(STATE_TABLE).map_err(backend)?;
        txn.commit().map_err(backend)?;
        Ok(EmbeddedStateStore {
            db: Arc::new(db),
            path,
        })
    }

    /// Deletes idempotency keys and audit events that expired at `now` and returns how many:
    /// the embedded stand-in for DynamoDB's TTL sweeper. Reads already ignore expired
    /// records; this only reclaims space.
    pub async fn purge_expired(&self, now: Timestamp) -> Result<usize, StateError> {
        self.write(move |table| {
            let mut expired = Vec::new();
            for entry in table.range(IDEMPOTENCY_PREFIX..).map_err(backend)? {
                let (key, value) = entry.map_err(backend)?;
                let key = key.value();
                if !key.starts_with(IDEMPOTENCY_PREFIX) {
                    break;
                }
                let record: IdempotencyRecord = parse(value.value(), Entity::IdempotencyKey, key)?;
                if record.is_expired(now) {
                    expired.push(key.to_owned());
                }
            }
            for entry in table.range(EVENT_PREFIX..).map_err(backend)? {
                let (key, value) = entry.map_err(backend)?;
                let key = key.value();
                if !key.starts_with(EVENT_PREFIX) {
                    break;
                }
                let event: AuditEvent = parse(value.value(), Entity::AuditEvent, key)?;
                if event.expires_at <= now {
                    expired.push(key.to_owned());
                }
            }
            for key in &expired {
                table.remove(key.as_str()).map_err(backend)?;
            }
            Ok(expired.len())
        })
        .await
    }

    /// Forgets every claim held by an owner whose name starts with `owner_prefix`: deletes
    /// its idempotency keys (expired or not) and releases its leases (the lease record stays,
    /// without a holder, so its version keeps growing). For a process that knows those
    /// owners are gone: `nodefleet up` opening a fleet folder, whose redb lock proves that no
    /// earlier `up` (owner `nodefleet-up-<pid>`) still runs ([`crate::healing`]). One write
    /// transaction; nothing is changed if a record does not parse.
    pub async fn forget_claims(&self, owner_prefix: &str) -> Result<ForgottenClaims, StateError> {
        let prefix = owner_prefix.to_owned();
        self.write(move |table| {
            let mut forgotten = ForgottenClaims::default();
            let mut keys = Vec::new();
            for entry in table.range(IDEMPOTENCY_PREFIX..).map_err(backend)? {
                let (key, value) = entry.map_err(backend)?;
                let key = key.value();
                if !key.starts_with(IDEMPOTENCY_PREFIX) {
                    break;
                }
                let record: IdempotencyRecord = parse(value.value(), Entity::IdempotencyKey, key)?;
                if record.owner.starts_with(&prefix) {
                    keys.push(key.to_owned());
                }
            }
            let mut leases = Vec::new();
            for entry in table.range(LEASE_PREFIX..).map_err(backend)? {
                let (key, value) = entry.map_err(backend)?;
                let key = key.value();
                if !key.starts_with(LEASE_PREFIX) {
                    break;
                }
                let lease: StoredLease = parse(value.value(), Entity::Lease, key)?;
                if lease
                    .holder
                    .as_deref()
                    .is_some_and(|h| h.starts_with(&prefix))
                {
                    leases.push((key.to_owned(), lease));
                }
            }
            for key in keys {
                table.remove(key.as_str()).map_err(backend)?;
                forgotten.keys += 1;
            }
            for (key, mut lease) in leases {
                lease.holder = None;
                lease.expires_at = Timestamp::EPOCH;
                put(table, &key, &lease, Entity::Lease)?;
                forgotten.leases.push(display_key(&key));
            }
            Ok(forgotten)
        })
        .await
    }

    /// Runs `work` in one write transaction on the blocking pool; commits if it returns
    /// `Ok`, aborts (writes nothing) if it returns an error.
    async fn write<T, F>(&self, work: F) -> Result<T, StateError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Table<'_, &'static str, &'static [u8]>) -> Result<T, StateError>
            + Send
            + 'static,
    {
        let db = Arc::clone(&self.db);
        run_blocking(move || {
            let txn = db.begin_write().map_err(backend)?;
            let outcome = {
                let mut table = txn.open_table(STATE_TABLE).map_err(backend)?;
                work(&mut table)
            };
            match outcome {
                Ok(value) => {
                    txn.commit().map_err(backend)?;
                    Ok(value)
                }
                Err(error) => {
                    txn.abort().map_err(backend)?;
                    Err(error)
                }
            }
        })
        .await
    }

    /// Runs `work` on a read transaction (a consistent snapshot) on the blocking pool.
    async fn read<T, F>(&self, work: F) -> Result<T, StateError>
    where
        T: Send + 'static,
        F: FnOnce(&redb::ReadOnlyTable<&'static str, &'static [u8]>) -> Result<T, StateError>
            + Send
            + 'static,
    {
        let db = Arc::clone(&self.db);
        run_blocking(move || {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(STATE_TABLE).map_err(backend)?;
            work(&table)
        })
        .await
    }

    async fn get_json<T>(&self, key: String, entity: Entity) -> Result<Option<T>, StateError>
    where
        T: DeserializeOwned + Send + 'static,
    {
        self.read(move |table| get(table, &key, entity)).await
    }

    /// Every record whose key starts with `prefix`, in key order.
    async fn list_json<T>(&self, prefix: &'static str, entity: Entity) -> Result<Vec<T>, StateError>
    where
        T: DeserializeOwned + Send + 'static,
    {
        self.read(move |table| {
            let mut records = Vec::new();
            for entry in table.range(prefix..).map_err(backend)? {
                let (key, value) = entry.map_err(backend)?;
                if !key.value().starts_with(prefix) {
                    break;
                }
                records.push(parse(value.value(), entity, key.value())?);
            }
            Ok(records)
        })
        .await
    }

    /// The versioned save every record kind shares: writes `record` (already carrying the
    /// next version) if the stored version is `expected` (`NEW`: nothing stored).
    async fn save_versioned<T>(
        &self,
        key: String,
        entity: Entity,
        expected: Version,
        record: T,
        version_of: fn(&T) -> Version,
    ) -> Result<T, StateError>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
    {
        self.write(move |table| {
            let stored: Option<T> = get(table, &key, entity)?;
            let stored_version = stored.as_ref().map(version_of);
            let matches = match stored_version {
                None => expected.is_new(),
                Some(version) => !expected.is_new() && version == expected,
            };
            if !matches {
                return Err(StateError::Conflict {
                    entity,
                    key: display_key(&key),
                    expected,
                });
            }
            put(table, &key, &record, entity)?;
            Ok(record)
        })
        .await
    }
}

#[async_trait]
impl StateStore for EmbeddedStateStore {
    async fn get_config(&self) -> Result<Option<FleetConfig>, StateError> {
        self.get_json(CONFIG_KEY.to_owned(), Entity::FleetConfig)
            .await
    }

    async fn save_config(&self, config: &FleetConfig) -> Result<FleetConfig, StateError> {
        let expected = config.version;
        let record = FleetConfig {
            version: expected.next(),
            ..config.clone()
        };
        self.save_versioned(
            CONFIG_KEY.to_owned(),
            Entity::FleetConfig,
            expected,
            record,
            |c| c.version,
        )
        .await
    }

    async fn get_control_state(&self, name: &str) -> Result<Option<ControlState>, StateError> {
        self.get_json(format!("{CONTROL_PREFIX}{name}"), Entity::ControlState)
            .await
    }

    async fn save_control_state(&self, state: &ControlState) -> Result<ControlState, StateError> {
        let expected = state.version;
        let record = ControlState {
            version: expected.next(),
            ..state.clone()
        };
        self.save_versioned(
            format!("{CONTROL_PREFIX}{}", state.name),
            Entity::ControlState,
            expected,
            record,
            |c| c.version,
        )
        .await
    }

    async fn get_node(&self, id: &NodeId) -> Result<Option<NodeRecord>, StateError> {
        self.get_json(node_key(id), Entity::Node).await
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, StateError> {
        self.list_json(NODE_PREFIX, Entity::Node).await
    }

    async fn save_node(&self, node: &NodeRecord) -> Result<NodeRecord, StateError> {
        let expected = node.version;
        let record = NodeRecord {
            version: expected.next(),
            ..node.clone()
        };
        self.save_versioned(node_key(&node.id), Entity::Node, expected, record, |n| {
            n.version
        })
        .await
    }

    async fn delete_node(&self, id: &NodeId, expected: Version) -> Result<(), StateError> {
        let key = node_key(id);
        self.write(move |table| {
            let stored: Option<NodeRecord> = get(table, &key, Entity::Node)?;
            match stored {
                Some(node) if !expected.is_new() && node.version == expected => {
                    table.remove(key.as_str()).map_err(backend)?;
                    Ok(())
                }
                _ => Err(StateError::Conflict {
                    entity: Entity::Node,
                    key: display_key(&key),
                    expected,
                }),
            }
        })
        .await
    }

    async fn get_snapshot(&self, id: &SnapshotId) -> Result<Option<SnapshotRecord>, StateError> {
        self.get_json(snapshot_key(id), Entity::Snapshot).await
    }

    async fn list_snapshots(&self) -> Result<Vec<SnapshotRecord>, StateError> {
        self.list_json(SNAPSHOT_PREFIX, Entity::Snapshot).await
    }

    async fn save_snapshot(&self, snapshot: &SnapshotRecord) -> Result<SnapshotRecord, StateError> {
        let expected = snapshot.version;
        let record = SnapshotRecord {
            version: expected.next(),
            ..snapshot.clone()
        };
        self.save_versioned(
            snapshot_key(&snapshot.id),
            Entity::Snapshot,
            expected,
            record,
            |s| s.version,
        )
        .await
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Lease, StateError> {
        let name = name.to_owned();
        let holder = holder.to_owned();
        self.write(move |table| {
            let key = lease_key(&name);
            let stored: Option<StoredLease> = get(table, &key, Entity::Lease)?;
            if let Some(current) = &stored
                && let Some(current_holder) = current.live_holder(now)
                && current_holder != holder
            {
                return Err(StateError::LeaseHeld {
                    name,
                    holder: current_holder.to_owned(),
                    expires_at: current.expires_at,
                });
            }
            let version = stored.map_or(Version::NEW, |s| s.version).next();
            let granted = StoredLease {
                holder: Some(holder.clone()),
                acquired_at: now,
                expires_at: now.plus(ttl),
                version,
            };
            put(table, &key, &granted, Entity::Lease)?;
            Ok(Lease {
                name,
                holder,
                acquired_at: granted.acquired_at,
                expires_at: granted.expires_at,
                version,
            })
        })
        .await
    }

    async fn renew_lease(
        &self,
        lease: &Lease,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Lease, StateError> {
        let lease = lease.clone();
        self.write(move |table| {
            let key = lease_key(&lease.name);
            let stored: Option<StoredLease> = get(table, &key, Entity::Lease)?;
            let still_ours = stored.as_ref().is_some_and(|s| {
                s.version == lease.version && s.live_holder(now) == Some(lease.holder.as_str())
            });
            let Some(mut current) = stored.filter(|_| still_ours) else {
                return Err(StateError::LeaseLost {
                    name: lease.name,
                    holder: lease.holder,
                });
            };
            current.expires_at = now.plus(ttl);
            current.version = current.version.next();
            put(table, &key, &current, Entity::Lease)?;
            Ok(Lease {
                expires_at: current.expires_at,
                version: current.version,
                ..lease
            })
        })
        .await
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), StateError> {
        let lease = lease.clone();
        self.write(move |table| {
            let key = lease_key(&lease.name);
            let stored: Option<StoredLease> = get(table, &key, Entity::Lease)?;
            let Some(mut current) = stored else {
                return Ok(()); // never acquired: nothing to give up
            };
            match current.holder.as_deref() {
                None => Ok(()), // already released
                Some(holder) if holder == lease.holder && current.version == lease.version => {
                    current.holder = None;
                    current.expires_at = Timestamp::EPOCH;
                    put(table, &key, &current, Entity::Lease)
                }
                Some(_) => Err(StateError::LeaseLost {
                    name: lease.name,
                    holder: lease.holder,
                }),
            }
        })
        .await
    }

    async fn get_lease(&self, name: &str, now: Timestamp) -> Result<Option<Lease>, StateError> {
        let name = name.to_owned();
        self.read(move |table| {
            let stored: Option<StoredLease> = get(table, &lease_key(&name), Entity::Lease)?;
            Ok(stored
                .filter(|s| s.live_holder(now).is_some())
                .and_then(|s| s.to_lease(&name)))
        })
        .await
    }

    async fn claim_idempotency_key(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<IdempotencyRecord, StateError> {
        let record = IdempotencyRecord::claim(key, owner, ttl, now);
        self.write(move |table| {
            let storage_key = idempotency_key(&record.key);
            let stored: Option<IdempotencyRecord> =
                get(table, &storage_key, Entity::IdempotencyKey)?;
            if stored.is_some_and(|s| !s.is_expired(now)) {
                return Err(StateError::AlreadyClaimed { key: record.key });
            }
            put(table, &storage_key, &record, Entity::IdempotencyKey)?;
            Ok(record)
        })
        .await
    }

    async fn complete_idempotency_key(
        &self,
        key: &str,
        owner: &str,
        outcome: &str,
        now: Timestamp,
    ) -> Result<IdempotencyRecord, StateError> {
        let key = key.to_owned();
        let owner = owner.to_owned();
        let outcome = outcome.to_owned();
        self.write(move |table| {
            let storage_key = idempotency_key(&key);
            let stored: Option<IdempotencyRecord> =
                get(table, &storage_key, Entity::IdempotencyKey)?;
            let Some(mut record) = stored.filter(|s| s.expires_at > now) else {
                return Err(StateError::NotFound {
                    entity: Entity::IdempotencyKey,
                    key,
                });
            };
            if record.owner != owner {
                return Err(StateError::AlreadyClaimed { key });
            }
            record.outcome = Some(outcome);
            put(table, &storage_key, &record, Entity::IdempotencyKey)?;
            Ok(record)
        })
        .await
    }

    async fn get_idempotency_key(
        &self,
        key: &str,
        now: Timestamp,
    ) -> Result<Option<IdempotencyRecord>, StateError> {
        let stored: Option<IdempotencyRecord> = self
            .get_json(idempotency_key(key), Entity::IdempotencyKey)
            .await?;
        Ok(stored.filter(|s| s.expires_at > now))
    }

    async fn append_event(&self, event: &AuditEvent) -> Result<(), StateError> {
        let event = event.clone();
        self.write(move |table| {
            put(
                table,
                &event_key(event.at, &event.id),
                &event,
                Entity::AuditEvent,
            )
        })
        .await
    }

    async fn list_events(
        &self,
        since: Timestamp,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StateError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.read(move |table| {
            let start = event_time_prefix(since);
            let mut events = Vec::new();
            for entry in table.range(start.as_str()..).map_err(backend)? {
                let (key, value) = entry.map_err(backend)?;
                if !key.value().starts_with(EVENT_PREFIX) {
                    break;
                }
                let event: AuditEvent = parse(value.value(), Entity::AuditEvent, key.value())?;
                if event.expires_at > now {
                    events.push(event);
                    if events.len() == limit {
                        break;
                    }
                }
            }
            Ok(events)
        })
        .await
    }
}

fn node_key(id: &NodeId) -> String {
    format!("{NODE_PREFIX}{id}")
}

fn snapshot_key(id: &SnapshotId) -> String {
    format!("{SNAPSHOT_PREFIX}{id}")
}

fn lease_key(name: &str) -> String {
    format!("{LEASE_PREFIX}{name}")
}

fn idempotency_key(key: &str) -> String {
    format!("{IDEMPOTENCY_PREFIX}{key}")
}

/// The key prefix of every event at `at`: 20 digits hold any `u64`, so string order is time
/// order.
fn event_time_prefix(at: Timestamp) -> String {
    format!("{EVENT_PREFIX}{:020}", at.as_millis())
}

fn event_key(at: Timestamp, id: &str) -> String {
    format!("{}#{id}", event_time_prefix(at))
}

/// The record's own key for errors: the storage key without its kind prefix.
fn display_key(key: &str) -> String {
    key.split_once('/').map_or(key, |(_, rest)| rest).to_owned()
}

fn get<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
    entity: Entity,
) -> Result<Option<T>, StateError> {
    match table.get(key).map_err(backend)? {
        Some(value) => parse(value.value(), entity, key).map(Some),
        None => Ok(None),
    }
}

fn put<T: Serialize>(
    table: &mut Table<'_, &'static str, &'static [u8]>,
    key: &str,
    record: &T,
    entity: Entity,
) -> Result<(), StateError> {
    let bytes = serde_json::to_vec(record).map_err(|error| StateError::Backend {
        message: format!("cannot encode {entity} {}: {error}", display_key(key)),
    })?;
    table.insert(key, bytes.as_slice()).map_err(backend)?;
    Ok(())
}

fn parse<T: DeserializeOwned>(bytes: &[u8], entity: Entity, key: &str) -> Result<T, StateError> {
    serde_json::from_slice(bytes).map_err(|error| StateError::Corrupt {
        entity,
        key: display_key(key),
        message: error.to_string(),
    })
}

/// Every redb failure is a `Backend` error (see the error policy).
fn backend(error: impl Into<redb::Error>) -> StateError {
    StateError::Backend {
        message: format!("embedded state database: {}", error.into()),
    }
}

/// Runs blocking redb work on tokio's blocking pool.
async fn run_blocking<T, F>(work: F) -> Result<T, StateError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StateError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| StateError::Backend {
            message: format!("embedded state database task failed: {error}"),
        })?
}
