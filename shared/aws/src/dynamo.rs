//! `DynamoStateStore`: the `StateStore` in one DynamoDB table.
//!
//! # Key design
//!
//! One table, partition key `pk` (S) and sort key `sk` (S). Every key starts with the fleet's
//! name, so several fleets can share a table; a fleet name may not contain `#`, the
//! separator. Records that are listed together share a partition (one `Query` lists them in
//! sort-key order); each idempotency key gets a partition of its own, because they are many,
//! written in bursts and never listed.
//!
//! | record | `pk` | `sk` | other attributes |
//! |---|---|---|---|
//! | fleet config | `<fleet>#CONFIG` | `CONFIG` | `doc`, `version` |
//! | controller state | `<fleet>#CONTROL` | controller name | `doc`, `version` |
//! | node | `<fleet>#NODE` | node id | `doc`, `version` |
//! | snapshot | `<fleet>#SNAPSHOT` | snapshot id | `doc`, `version` |
//! | lease | `<fleet>#LEASE` | lease name | `holder` (absent once released), `acquired_at`, `expires_at`, `version` |
//! | idempotency key | `<fleet>#IDEM#<key>` | `IDEM` | `doc`, `owner`, `expires_at`, `ttl` |
//! | audit event | `<fleet>#EVENT` | `<at, 20-digit millis>#<event id>` | `doc`, `expires_at`, `ttl` |
//!
//! `doc` is the record as JSON (the port's model type, version included); the other
//! attributes are copies of the fields that conditions compare. Times are milliseconds since
//! the epoch (`N`), except `ttl`, which is DynamoDB's TTL attribute in epoch seconds, rounded
//! up ([`Timestamp::as_secs_ceil`]) so the sweeper never deletes a record before it expired.
//! Leases have no `doc`: every one of their fields is used by a condition, and their version
//! is incremented by the update itself. A released lease keeps its item (without `holder`)
//! so its version, the fencing token, keeps growing across holders.
//!
//! # Conditions
//!
//! | call | write | condition |
//! |---|---|---|
//! | create (`Version::NEW`) | `PutItem` | `attribute_not_exists(pk)` |
//! | update at version v | `PutItem` | `version = v` |
//! | delete node at v | `DeleteItem` | `version = v` |
//! | acquire lease | `UpdateItem`, `version = if_not_exists(version, 0) + 1` | `attribute_not_exists(pk) OR expires_at <= now OR holder = me` |
//! | renew lease | `UpdateItem`, `version = version + 1` | `holder = me AND version = v AND expires_at > now` |
//! | release lease | `UpdateItem`, `REMOVE holder`, `expires_at = 0` | `holder = me AND version = v` |
//! | claim key | `PutItem` | `attribute_not_exists(pk) OR expires_at <= now` |
//! | complete key | `PutItem` after a read | `doc = <the doc read> AND expires_at > now` |
//! | append event | `PutItem` (same key: same event, so a retry overwrites itself) | none |
//!
//! TTL deletes items lazily (up to days late), so expiry is never left to it: conditions and
//! reads compare `expires_at` with the caller's `now`, and an expired item counts as absent.
//! Reads are strongly consistent. Queries follow `LastEvaluatedKey` until the end (or until
//! `limit` live events are found); [`DynamoStateStore::with_page_limit`] caps a page's size.
//!
//! # Error policy
//!
//! A failed condition (`ConditionalCheckFailedException`) is the port's typed answer:
//! `Conflict` for versioned records, `LeaseHeld` (holder and expiry taken from the item
//! DynamoDB returns with the failure) or `LeaseLost` for leases, `AlreadyClaimed` for
//! idempotency keys. Throttling (`ProvisionedThroughputExceededException`,
//! `ThrottlingException`, `RequestLimitExceeded`, HTTP 429) is `Throttled`; 5xx answers,
//! timeouts and connection failures are `Unavailable`, both retryable (the SDK has already
//! retried them with its standard policy). A `doc` that does not parse is `Corrupt`. Every
//! other service error (missing table, access denied, validation) is `Backend`: an
//! operator's problem.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::error::{BuildError, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValue,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TimeToLiveSpecification,
    TimeToLiveStatus,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use nodefleet_ports::model::{
    AuditEvent, ControlState, FleetConfig, IdempotencyRecord, Lease, NodeId, NodeRecord,
    SnapshotId, SnapshotRecord, Version,
};
use nodefleet_ports::{Entity, StateError, StateStore, Timestamp};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{AwsFailure, classify, error_chain};
use crate::operations::SdkCalls;
use crate::operations::dynamodb::{
    CREATE_TABLE, DELETE_ITEM, DESCRIBE_TABLE, DESCRIBE_TIME_TO_LIVE, GET_ITEM, PUT_ITEM, QUERY,
    UPDATE_ITEM, UPDATE_TIME_TO_LIVE,
};

type Item = HashMap<String, AttributeValue>;

/// Attribute names (see the key design in the module doc).
const PK: &str = "pk";
const SK: &str = "sk";
const DOC: &str = "doc";
const VERSION: &str = "version";
const HOLDER: &str = "holder";
const ACQUIRED_AT: &str = "acquired_at";
const EXPIRES_AT: &str = "expires_at";
const OWNER: &str = "owner";
const TTL: &str = "ttl";

/// The separator between the parts of a key; a fleet name may not contain it.
const SEPARATOR: char = '#';

/// The error code of a failed condition.
const CONDITION_FAILED: &str = "ConditionalCheckFailedException";

/// The sort key of an idempotency key's item (its partition is its own).
const IDEMPOTENCY_SK: &str = "IDEM";

/// How long [`DynamoStateStore::create_table`] waits for a new table to become active: an
/// on-demand table with no indexes is usually active within seconds; a minute leaves room
/// for a busy account.
const TABLE_ACTIVE_WAIT: Duration = Duration::from_secs(60);

/// The `StateStore` in one DynamoDB table, for one fleet. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DynamoStateStore {
    client: Client,
    table: String,
    fleet: String,
    /// Items per `Query` page; `None` lets DynamoDB fill 1 MB pages.
    page_limit: Option<i32>,
}

impl DynamoStateStore {
    /// The DynamoDB operations each `StateStore` method calls (see the conditions table in
    /// the module doc): reads are one `GetItem`, lists `Query` pages, versioned saves, claims
    /// and events one `PutItem`, leases one `UpdateItem`; completing a key reads it first.
    pub const SDK_CALLS: SdkCalls = &[
        ("get_config", &[GET_ITEM]),
        ("save_config", &[PUT_ITEM]),
        ("get_control_state", &[GET_ITEM]),
        ("save_control_state", &[PUT_ITEM]),
        ("get_node", &[GET_ITEM]),
        ("list_nodes", &[QUERY]),
        ("save_node", &[PUT_ITEM]),
        ("delete_node", &[DELETE_ITEM]),
        ("get_snapshot", &[GET_ITEM]),
        ("list_snapshots", &[QUERY]),
        ("save_snapshot", &[PUT_ITEM]),
        ("acquire_lease", &[UPDATE_ITEM]),
        ("renew_lease", &[UPDATE_ITEM]),
        ("release_lease", &[UPDATE_ITEM]),
        ("get_lease", &[GET_ITEM]),
        ("claim_idempotency_key", &[PUT_ITEM]),
        ("complete_idempotency_key", &[GET_ITEM, PUT_ITEM]),
        ("get_idempotency_key", &[GET_ITEM]),
        ("append_event", &[PUT_ITEM]),
        ("list_events", &[QUERY]),
    ];

    /// What [`DynamoStateStore::create_table`] calls (the waiter polls `DescribeTable`):
    /// tooling's, not a function role's.
    pub const PROVISIONING: &'static [crate::AwsOperation] = &[
        CREATE_TABLE,
        DESCRIBE_TABLE,
        DESCRIBE_TIME_TO_LIVE,
        UPDATE_TIME_TO_LIVE,
    ];

    /// A store for `fleet` in `table`, with a client built from `config`.
    pub fn new(
        config: &SdkConfig,
        table: impl Into<String>,
        fleet: impl Into<String>,
    ) -> Result<DynamoStateStore, StateError> {
        DynamoStateStore::from_client(Client::new(config), table, fleet)
    }

    /// A store on an existing client (shared with other code, or a mocked one in tests).
    pub fn from_client(
        client: Client,
        table: impl Into<String>,
        fleet: impl Into<String>,
    ) -> Result<DynamoStateStore, StateError> {
        let fleet = fleet.into();
        if fleet.is_empty() || fleet.contains(SEPARATOR) {
            return Err(StateError::Backend {
                message: format!(
                    "fleet name {fleet:?} cannot key a state table: it must be non-empty and \
                     free of {SEPARATOR:?}"
                ),
            });
        }
        Ok(DynamoStateStore {
            client,
            table: table.into(),
            fleet,
            page_limit: None,
        })
    }

    /// Caps each `Query` page at `items` (at least 1). Lists still return everything; a
    /// small page makes them follow `LastEvaluatedKey`, which the tests use to prove it.
    pub fn with_page_limit(mut self, items: u32) -> DynamoStateStore {
        self.page_limit = Some(i32::try_from(items.max(1)).unwrap_or(i32::MAX));
        self
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table_name(&self) -> &str {
        &self.table
    }

    pub fn fleet(&self) -> &str {
        &self.fleet
    }

    /// Creates the table (on-demand billing, `pk`/`sk` string keys), waits until it is
    /// active, and enables TTL on `ttl`. A table that already exists is kept as it is (its
    /// TTL is enabled if it was not), so tooling may call this on every deploy.
    pub async fn create_table(&self) -> Result<(), StateError> {
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .attribute_definitions(string_attribute(PK)?)
            .attribute_definitions(string_attribute(SK)?)
            .key_schema(key_element(PK, KeyType::Hash)?)
            .key_schema(key_element(SK, KeyType::Range)?)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await;
        if let Err(error) = created {
            let failure = classify(&error);
            if failure.code() != Some("ResourceInUseException") {
                return Err(from_failure(failure));
            }
        }

        self.client
            .wait_until_table_exists()
            .table_name(&self.table)
            .wait(TABLE_ACTIVE_WAIT)
            .await
            .map_err(|error| StateError::Unavailable {
                message: format!(
                    "table {} did not become active: {}",
                    self.table,
                    error_chain(&error)
                ),
            })?;

        let ttl = self
            .client
            .describe_time_to_live()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|error| from_sdk(&error))?;
        let ttl_on = ttl.time_to_live_description().is_some_and(|description| {
            description.attribute_name() == Some(TTL)
                && matches!(
                    description.time_to_live_status(),
                    Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
                )
        });
        if !ttl_on {
            let specification = TimeToLiveSpecification::builder()
                .attribute_name(TTL)
                .enabled(true)
                .build()
                .map_err(build_error)?;
            self.client
                .update_time_to_live()
                .table_name(&self.table)
                .time_to_live_specification(specification)
                .send()
                .await
                .map_err(|error| from_sdk(&error))?;
        }
        Ok(())
    }

    // ---- keys ----

    fn partition(&self, kind: &str) -> String {
        format!("{}{SEPARATOR}{kind}", self.fleet)
    }

    fn config_pk(&self) -> String {
        self.partition("CONFIG")
    }

    fn control_pk(&self) -> String {
        self.partition("CONTROL")
    }

    fn node_pk(&self) -> String {
        self.partition("NODE")
    }

    fn snapshot_pk(&self) -> String {
        self.partition("SNAPSHOT")
    }

    fn lease_pk(&self) -> String {
        self.partition("LEASE")
    }

    fn idempotency_pk(&self, key: &str) -> String {
        self.partition(&format!("IDEM{SEPARATOR}{key}"))
    }

    fn event_pk(&self) -> String {
        self.partition("EVENT")
    }

    fn idempotency_item(&self, record: &IdempotencyRecord) -> Result<Item, StateError> {
        let mut item = key(self.idempotency_pk(&record.key), IDEMPOTENCY_SK.to_owned());
        item.insert(
            DOC.to_owned(),
            AttributeValue::S(encode(record, Entity::IdempotencyKey, &record.key)?),
        );
        item.insert(OWNER.to_owned(), AttributeValue::S(record.owner.clone()));
        item.insert(EXPIRES_AT.to_owned(), millis(record.expires_at));
        item.insert(TTL.to_owned(), number(record.expires_at.as_secs_ceil()));
        Ok(item)
    }

    // ---- generic operations ----

    /// The item at `pk`/`sk`, read strongly consistent.
    async fn get_item(&self, pk: String, sk: String) -> Result<Option<Item>, StateError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| from_sdk(&error))?;
        Ok(output.item)
    }

    async fn get_doc<T: DeserializeOwned>(
        &self,
        pk: String,
        sk: String,
        entity: Entity,
    ) -> Result<Option<T>, StateError> {
        match self.get_item(pk, sk.clone()).await? {
            Some(item) => doc(&item, entity, &sk).map(Some),
            None => Ok(None),
        }
    }

    /// Every item of partition `pk` (with `sk >= sk_from`, and `expires_at > live_at` when
    /// given) in sort-key order, following `LastEvaluatedKey`; stops at `max` items.
    async fn query(
        &self,
        pk: String,
        sk_from: Option<String>,
        live_at: Option<Timestamp>,
        max: Option<usize>,
    ) -> Result<Vec<Item>, StateError> {
        let mut items = Vec::new();
        let mut start_key: Option<Item> = None;
        loop {
            let mut request = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .set_limit(self.page_limit)
                .set_exclusive_start_key(start_key.take())
                .expression_attribute_names("#pk", PK)
                .expression_attribute_values(":pk", AttributeValue::S(pk.clone()));
            request = match &sk_from {
                Some(from) => request
                    .key_condition_expression("#pk = :pk AND #sk >= :from")
                    .expression_attribute_names("#sk", SK)
                    .expression_attribute_values(":from", AttributeValue::S(from.clone())),
                None => request.key_condition_expression("#pk = :pk"),
            };
            if let Some(now) = live_at {
                request = request
                    .filter_expression("#expires > :now")
                    .expression_attribute_names("#expires", EXPIRES_AT)
                    .expression_attribute_values(":now", millis(now));
            }
            let page = request.send().await.map_err(|error| from_sdk(&error))?;
            items.extend(page.items.unwrap_or_default());
            if let Some(max) = max
                && items.len() >= max
            {
                items.truncate(max);
                break;
            }
            match page.last_evaluated_key {
                Some(last) if !last.is_empty() => start_key = Some(last),
                _ => break,
            }
        }
        Ok(items)
    }

    async fn list_docs<T: DeserializeOwned>(
        &self,
        pk: String,
        entity: Entity,
    ) -> Result<Vec<T>, StateError> {
        let items = self.query(pk, None, None, None).await?;
        items
            .iter()
            .map(|item| doc(item, entity, string_attr(item, SK).unwrap_or_default()))
            .collect()
    }

    /// The versioned save every record kind shares: stores `record` (already carrying the
    /// next version) if the stored version is `expected` (`NEW`: nothing stored).
    async fn save_versioned<T: Serialize>(
        &self,
        entity: Entity,
        pk: String,
        sk: String,
        expected: Version,
        record: &T,
    ) -> Result<(), StateError> {
        let mut item = key(pk, sk.clone());
        item.insert(
            DOC.to_owned(),
            AttributeValue::S(encode(record, entity, &sk)?),
        );
        item.insert(VERSION.to_owned(), number(expected.next().0));
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        let request = if expected.is_new() {
            request
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", PK)
        } else {
            request
                .condition_expression("#version = :expected")
                .expression_attribute_names("#version", VERSION)
                .expression_attribute_values(":expected", number(expected.0))
        };
        match request.send().await {
            Ok(_) => Ok(()),
            Err(error) => Err(match classify(&error) {
                failure if is_condition_failure(&failure) => StateError::Conflict {
                    entity,
                    key: sk,
                    expected,
                },
                failure => from_failure(failure),
            }),
        }
    }
}

#[async_trait]
impl StateStore for DynamoStateStore {
    async fn get_config(&self) -> Result<Option<FleetConfig>, StateError> {
        self.get_doc(self.config_pk(), "CONFIG".to_owned(), Entity::FleetConfig)
            .await
    }

    async fn save_config(&self, config: &FleetConfig) -> Result<FleetConfig, StateError> {
        let record = FleetConfig {
            version: config.version.next(),
            ..config.clone()
        };
        self.save_versioned(
            Entity::FleetConfig,
            self.config_pk(),
            "CONFIG".to_owned(),
            config.version,
            &record,
        )
        .await?;
        Ok(record)
    }

    async fn get_control_state(&self, name: &str) -> Result<Option<ControlState>, StateError> {
        self.get_doc(self.control_pk(), name.to_owned(), Entity::ControlState)
            .await
    }

    async fn save_control_state(&self, state: &ControlState) -> Result<ControlState, StateError> {
        let record = ControlState {
            version: state.version.next(),
            ..state.clone()
        };
        self.save_versioned(
            Entity::ControlState,
            self.control_pk(),
            state.name.clone(),
            state.version,
            &record,
        )
        .await?;
        Ok(record)
    }

    async fn get_node(&self, id: &NodeId) -> Result<Option<NodeRecord>, StateError> {
        self.get_doc(self.node_pk(), id.0.clone(), Entity::Node)
            .await
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, StateError> {
        self.list_docs(self.node_pk(), Entity::Node).await
    }

    async fn save_node(&self, node: &NodeRecord) -> Result<NodeRecord, StateError> {
        let record = NodeRecord {
            version: node.version.next(),
            ..node.clone()
        };
        self.save_versioned(
            Entity::Node,
            self.node_pk(),
            node.id.0.clone(),
            node.version,
            &record,
        )
        .await?;
        Ok(record)
    }

    async fn delete_node(&self, id: &NodeId, expected: Version) -> Result<(), StateError> {
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(self.node_pk(), id.0.clone())))
            .condition_expression("#version = :expected")
            .expression_attribute_names("#version", VERSION)
            .expression_attribute_values(":expected", number(expected.0))
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(()),
            Err(error) => Err(match classify(&error) {
                failure if is_condition_failure(&failure) => StateError::Conflict {
                    entity: Entity::Node,
                    key: id.0.clone(),
                    expected,
                },
                failure => from_failure(failure),
            }),
        }
    }

    async fn get_snapshot(&self, id: &SnapshotId) -> Result<Option<SnapshotRecord>, StateError> {
        self.get_doc(self.snapshot_pk(), id.0.clone(), Entity::Snapshot)
            .await
    }

    async fn list_snapshots(&self) -> Result<Vec<SnapshotRecord>, StateError> {
        self.list_docs(self.snapshot_pk(), Entity::Snapshot).await
    }

    async fn save_snapshot(&self, snapshot: &SnapshotRecord) -> Result<SnapshotRecord, StateError> {
        let record = SnapshotRecord {
            version: snapshot.version.next(),
            ..snapshot.clone()
        };
        self.save_versioned(
            Entity::Snapshot,
            self.snapshot_pk(),
            snapshot.id.0.clone(),
            snapshot.version,
            &record,
        )
        .await?;
        Ok(record)
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Lease, StateError> {
        let acquired = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(self.lease_pk(), name.to_owned())))
            .update_expression(
                "SET #holder = :holder, #acquired = :now, #expires = :expires, \
                 #version = if_not_exists(#version, :zero) + :one",
            )
            .condition_expression(
                "attribute_not_exists(#pk) OR #expires <= :now OR #holder = :holder",
            )
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#holder", HOLDER)
            .expression_attribute_names("#acquired", ACQUIRED_AT)
            .expression_attribute_names("#expires", EXPIRES_AT)
            .expression_attribute_names("#version", VERSION)
            .expression_attribute_values(":holder", AttributeValue::S(holder.to_owned()))
            .expression_attribute_values(":now", millis(now))
            .expression_attribute_values(":expires", millis(now.plus(ttl)))
            .expression_attribute_values(":zero", number(0))
            .expression_attribute_values(":one", number(1))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match acquired {
            Ok(output) => lease_from_item(name, output.attributes.as_ref()),
            Err(error) => {
                let failure = classify(&error);
                if !is_condition_failure(&failure) {
                    return Err(from_failure(failure));
                }
                // DynamoDB hands back the item that failed the condition: it names the holder.
                match old_item(&error).and_then(|item| {
                    Some((string_attr(item, HOLDER)?, number_attr(item, EXPIRES_AT)?))
                }) {
                    Some((current, expires_at)) => Err(StateError::LeaseHeld {
                        name: name.to_owned(),
                        holder: current.to_owned(),
                        expires_at: Timestamp::from_millis(expires_at),
                    }),
                    // No item with the failure: it changed under us; the caller re-reads.
                    None => Err(StateError::Conflict {
                        entity: Entity::Lease,
                        key: name.to_owned(),
                        expected: Version::NEW,
                    }),
                }
            }
        }
    }

    async fn renew_lease(
        &self,
        lease: &Lease,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Lease, StateError> {
        let renewed = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(self.lease_pk(), lease.name.clone())))
            .update_expression("SET #expires = :expires, #version = #version + :one")
            .condition_expression("#holder = :holder AND #version = :version AND #expires > :now")
            .expression_attribute_names("#holder", HOLDER)
            .expression_attribute_names("#expires", EXPIRES_AT)
            .expression_attribute_names("#version", VERSION)
            .expression_attribute_values(":holder", AttributeValue::S(lease.holder.clone()))
            .expression_attribute_values(":version", number(lease.version.0))
            .expression_attribute_values(":now", millis(now))
            .expression_attribute_values(":expires", millis(now.plus(ttl)))
            .expression_attribute_values(":one", number(1))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match renewed {
            Ok(output) => lease_from_item(&lease.name, output.attributes.as_ref()),
            Err(error) => Err(match classify(&error) {
                failure if is_condition_failure(&failure) => StateError::LeaseLost {
                    name: lease.name.clone(),
                    holder: lease.holder.clone(),
                },
                failure => from_failure(failure),
            }),
        }
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), StateError> {
        let released = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(self.lease_pk(), lease.name.clone())))
            .update_expression("REMOVE #holder SET #expires = :zero")
            .condition_expression("#holder = :holder AND #version = :version")
            .expression_attribute_names("#holder", HOLDER)
            .expression_attribute_names("#expires", EXPIRES_AT)
            .expression_attribute_names("#version", VERSION)
            .expression_attribute_values(":holder", AttributeValue::S(lease.holder.clone()))
            .expression_attribute_values(":version", number(lease.version.0))
            .expression_attribute_values(":zero", number(0))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let Err(error) = released else {
            return Ok(());
        };
        let failure = classify(&error);
        if !is_condition_failure(&failure) {
            return Err(from_failure(failure));
        }
        // The condition failed. No item, or an item without a holder: the lease is gone or
        // already released, which is fine. Anyone else holding it: lost.
        match old_item(&error).and_then(|item| string_attr(item, HOLDER)) {
            None => Ok(()),
            Some(_) => Err(StateError::LeaseLost {
                name: lease.name.clone(),
                holder: lease.holder.clone(),
            }),
        }
    }

    async fn get_lease(&self, name: &str, now: Timestamp) -> Result<Option<Lease>, StateError> {
        let Some(item) = self.get_item(self.lease_pk(), name.to_owned()).await? else {
            return Ok(None);
        };
        if string_attr(&item, HOLDER).is_none() {
            return Ok(None); // released
        }
        let lease = lease_from_item(name, Some(&item))?;
        Ok((!lease.is_expired(now)).then_some(lease))
    }

    async fn claim_idempotency_key(
        &self,
        key_name: &str,
        owner: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<IdempotencyRecord, StateError> {
        let record = IdempotencyRecord::claim(key_name, owner, ttl, now);
        let claimed = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(self.idempotency_item(&record)?))
            .condition_expression("attribute_not_exists(#pk) OR #expires <= :now")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#expires", EXPIRES_AT)
            .expression_attribute_values(":now", millis(now))
            .send()
            .await;
        match claimed {
            Ok(_) => Ok(record),
            Err(error) => Err(match classify(&error) {
                failure if is_condition_failure(&failure) => StateError::AlreadyClaimed {
                    key: key_name.to_owned(),
                },
                failure => from_failure(failure),
            }),
        }
    }

    async fn complete_idempotency_key(
        &self,
        key_name: &str,
        owner: &str,
        outcome: &str,
        now: Timestamp,
    ) -> Result<IdempotencyRecord, StateError> {
        let stored = self
            .get_item(self.idempotency_pk(key_name), IDEMPOTENCY_SK.to_owned())
            .await?;
        let live = match &stored {
            Some(item) => {
                let record: IdempotencyRecord = doc(item, Entity::IdempotencyKey, key_name)?;
                (record.expires_at > now).then_some((item, record))
            }
            None => None,
        };
        let Some((item, mut record)) = live else {
            return Err(StateError::NotFound {
                entity: Entity::IdempotencyKey,
                key: key_name.to_owned(),
            });
        };
        if record.owner != owner {
            return Err(StateError::AlreadyClaimed {
                key: key_name.to_owned(),
            });
        }
        let read_doc = string_attr(item, DOC).unwrap_or_default().to_owned();
        record.outcome = Some(outcome.to_owned());
        // Compare-and-swap on the whole document: if the key was reclaimed (or changed in any
        // way) since the read, nothing is written.
        let completed = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(self.idempotency_item(&record)?))
            .condition_expression("#doc = :read AND #expires > :now")
            .expression_attribute_names("#doc", DOC)
            .expression_attribute_names("#expires", EXPIRES_AT)
            .expression_attribute_values(":read", AttributeValue::S(read_doc))
            .expression_attribute_values(":now", millis(now))
            .send()
            .await;
        match completed {
            Ok(_) => Ok(record),
            Err(error) => Err(match classify(&error) {
                failure if is_condition_failure(&failure) => StateError::AlreadyClaimed {
                    key: key_name.to_owned(),
                },
                failure => from_failure(failure),
            }),
        }
    }

    async fn get_idempotency_key(
        &self,
        key_name: &str,
        now: Timestamp,
    ) -> Result<Option<IdempotencyRecord>, StateError> {
        let stored: Option<IdempotencyRecord> = self
            .get_doc(
                self.idempotency_pk(key_name),
                IDEMPOTENCY_SK.to_owned(),
                Entity::IdempotencyKey,
            )
            .await?;
        Ok(stored.filter(|record| record.expires_at > now))
    }

    async fn append_event(&self, event: &AuditEvent) -> Result<(), StateError> {
        let sk = event_sk(event.at, &event.id);
        let mut item = key(self.event_pk(), sk.clone());
        item.insert(
            DOC.to_owned(),
            AttributeValue::S(encode(event, Entity::AuditEvent, &sk)?),
        );
        item.insert(EXPIRES_AT.to_owned(), millis(event.expires_at));
        item.insert(TTL.to_owned(), number(event.expires_at.as_secs_ceil()));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|error| from_sdk(&error))?;
        Ok(())
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
        let items = self
            .query(
                self.event_pk(),
                Some(event_time_prefix(since)),
                Some(now),
                Some(limit),
            )
            .await?;
        items
            .iter()
            .map(|item| {
                doc(
                    item,
                    Entity::AuditEvent,
                    string_attr(item, SK).unwrap_or_default(),
                )
            })
            .collect()
    }
}

/// The sort-key prefix of every event at `at`: 20 digits hold any `u64`, so string order
/// is time order.
fn event_time_prefix(at: Timestamp) -> String {
    format!("{:020}", at.as_millis())
}

fn event_sk(at: Timestamp, id: &str) -> String {
    format!("{}{SEPARATOR}{id}", event_time_prefix(at))
}

fn key(pk: String, sk: String) -> Item {
    HashMap::from([
        (PK.to_owned(), AttributeValue::S(pk)),
        (SK.to_owned(), AttributeValue::S(sk)),
    ])
}

fn number(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn millis(at: Timestamp) -> AttributeValue {
    number(at.as_millis())
}

fn string_attr<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)?.as_s().ok().map(String::as_str)
}

fn number_attr(item: &Item, name: &str) -> Option<u64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

fn encode<T: Serialize>(record: &T, entity: Entity, key: &str) -> Result<String, StateError> {
    serde_json::to_string(record).map_err(|error| StateError::Backend {
        message: format!("cannot encode {entity} {key}: {error}"),
    })
}

/// The record in the item's `doc` attribute.
fn doc<T: DeserializeOwned>(item: &Item, entity: Entity, key: &str) -> Result<T, StateError> {
    let corrupt = |message: String| StateError::Corrupt {
        entity,
        key: key.to_owned(),
        message,
    };
    let text = string_attr(item, DOC).ok_or_else(|| corrupt(format!("no {DOC} attribute")))?;
    serde_json::from_str(text).map_err(|error| corrupt(error.to_string()))
}

fn lease_from_item(name: &str, item: Option<&Item>) -> Result<Lease, StateError> {
    let corrupt = || StateError::Corrupt {
        entity: Entity::Lease,
        key: name.to_owned(),
        message: "a lease item needs holder, acquired_at, expires_at and version".to_owned(),
    };
    let item = item.ok_or_else(corrupt)?;
    Ok(Lease {
        name: name.to_owned(),
        holder: string_attr(item, HOLDER).ok_or_else(corrupt)?.to_owned(),
        acquired_at: Timestamp::from_millis(number_attr(item, ACQUIRED_AT).ok_or_else(corrupt)?),
        expires_at: Timestamp::from_millis(number_attr(item, EXPIRES_AT).ok_or_else(corrupt)?),
        version: Version(number_attr(item, VERSION).ok_or_else(corrupt)?),
    })
}

/// The item DynamoDB returned with a failed update condition (`ALL_OLD`), if any.
fn old_item(error: &SdkError<UpdateItemError, HttpResponse>) -> Option<&Item> {
    match error.as_service_error()? {
        UpdateItemError::ConditionalCheckFailedException(failed) => failed.item(),
        _ => None,
    }
}

fn is_condition_failure(failure: &AwsFailure) -> bool {
    failure.code() == Some(CONDITION_FAILED)
}

/// A classified SDK failure as the port's error (see the error policy).
fn from_failure(failure: AwsFailure) -> StateError {
    match failure {
        AwsFailure::Throttled(message) => StateError::Throttled { message },
        AwsFailure::Unavailable(message) => StateError::Unavailable { message },
        AwsFailure::Service { code, message } => StateError::Backend {
            message: format!("{code}: {message}"),
        },
    }
}

fn from_sdk<E>(error: &SdkError<E, HttpResponse>) -> StateError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    from_failure(classify(error))
}

fn build_error(error: BuildError) -> StateError {
    StateError::Backend {
        message: format!("cannot build a DynamoDB request: {error}"),
    }
}

fn string_attribute(name: &str) -> Result<AttributeDefinition, StateError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(build_error)
}

fn key_element(name: &str, key_type: KeyType) -> Result<KeySchemaElement, StateError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(key_type)
        .build()
        .map_err(build_error)
}
