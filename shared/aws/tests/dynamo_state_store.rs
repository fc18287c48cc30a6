//! `DynamoStateStore` against the `StateStore` contract on moto (a fresh table per test),
//! plus what only this adapter promises: lists follow `LastEvaluatedKey` past a page, the
//! item layout in the table is the one the module doc describes (with `ttl` on idempotency
//! keys and audit events), fleets sharing a table do not see each other, `create_table` is
//! idempotent and enables TTL; and, with aws-smithy-mocks, the error paths moto never takes
//! (throttling, 5xx, a failed condition answered with or without the old item, a corrupt
//! document).
//!
//! Known moto gap: moto never deletes items by TTL. Nothing here depends on TTL deletion:
//! the adapter compares `expires_at` with the caller's `now` in every condition and read,
//! which the contract's expiry cases (leases, idempotency keys, events) exercise on moto.
//!
//! moto's server is threaded and takes no lock around a conditional write's check and its
//! write; they run in one short Python call, and the contract's races (50 claims, 20 saves)
//! have never seen a second winner on it (190 repeated runs while this was written). Real
//! DynamoDB makes every condition atomic; the embedded store runs the same races.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Region};
use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::types::{AttributeValue, BillingMode, TimeToLiveStatus};
use aws_smithy_mocks::{Rule, mock};
use nodefleet_aws::DynamoStateStore;
use nodefleet_ports::contract::state_store::{
    T0, sample_config, sample_event, sample_node, sample_snapshot,
};
use nodefleet_ports::{Entity, NodeId, StateError, StateStore, Timestamp, Version};

/// A store for fleet `contract` on a table of its own, created the way tooling creates it.
async fn fresh_store() -> DynamoStateStore {
    let store = DynamoStateStore::new(
        &support::moto_config(),
        support::unique_name("state"),
        "contract",
    )
    .unwrap();
    store.create_table().await.unwrap();
    store
}

nodefleet_ports::state_store_contract!(fresh_store());

fn item_key(item: &BTreeMap<String, AttributeValue>) -> (String, String) {
    (
        item["pk"].as_s().unwrap().clone(),
        item["sk"].as_s().unwrap().clone(),
    )
}

/// Every item of the table, raw, keyed by (pk, sk).
async fn raw_items(
    store: &DynamoStateStore,
) -> BTreeMap<(String, String), BTreeMap<String, AttributeValue>> {
    let mut items = BTreeMap::new();
    let mut start = None;
    loop {
        let page = store
            .client()
            .scan()
            .table_name(store.table_name())
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        for item in page.items.unwrap_or_default() {
            let item: BTreeMap<_, _> = item.into_iter().collect();
            items.insert(item_key(&item), item);
        }
        start = page.last_evaluated_key;
        if start.is_none() {
            return items;
        }
    }
}

#[tokio::test]
async fn lists_follow_last_evaluated_key_past_a_small_page() {
    const PAGE: u32 = 4;
    let store = fresh_store().await.with_page_limit(PAGE);

    let mut nodes = Vec::new();
    for index in 0..25 {
        nodes.push(
            store
                .save_node(&sample_node(&format!("node-{index:02}")))
                .await
                .unwrap(),
        );
    }
    let mut snapshots = Vec::new();
    for index in 0..9 {
        snapshots.push(
            store
                .save_snapshot(&sample_snapshot(&format!("snap-{index}")))
                .await
                .unwrap(),
        );
    }
    // Events alternate between short-lived and kept, so with a filter on expiry most pages
    // hold fewer live events than PAGE: the adapter must keep paging until it has `limit`.
    let mut live = Vec::new();
    for index in 0..12u64 {
        let retention = Duration::from_secs(if index % 2 == 0 { 10 } else { 3600 });
        let event = sample_event(
            T0.plus(Duration::from_secs(index)),
            &format!("e{index:02}"),
            retention,
        );
        store.append_event(&event).await.unwrap();
        if index % 2 == 1 {
            live.push(event);
        }
    }

    // moto honours Limit: one raw page holds PAGE items and points at the next.
    let first_page = store
        .client()
        .query()
        .table_name(store.table_name())
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S("contract#NODE".to_owned()))
        .limit(PAGE as i32)
        .send()
        .await
        .unwrap();
    assert_eq!(first_page.items().len(), PAGE as usize);
    assert!(first_page.last_evaluated_key().is_some());

    assert_eq!(
        store.list_nodes().await.unwrap(),
        nodes,
        "25 nodes over 7 pages"
    );
    assert_eq!(store.list_snapshots().await.unwrap(), snapshots);
    let later = T0.plus(Duration::from_secs(60));
    assert_eq!(store.list_events(T0, later, 100).await.unwrap(), live);
    assert_eq!(
        store.list_events(T0, later, 5).await.unwrap(),
        live[..5].to_vec(),
        "limit counts live events across pages"
    );
}

#[tokio::test]
async fn items_are_laid_out_as_the_module_doc_says() {
    let store = fresh_store().await;
    let config = store.save_config(&sample_config()).await.unwrap();
    let node = store.save_node(&sample_node("node-a")).await.unwrap();
    let snapshot = store
        .save_snapshot(&sample_snapshot("snap-1"))
        .await
        .unwrap();
    let lease = store
        .acquire_lease("updater", "alpha", Duration::from_secs(30), T0)
        .await
        .unwrap();
    let claim = store
        .claim_idempotency_key("launch/node-a/1", "request-1", Duration::from_secs(90), T0)
        .await
        .unwrap();
    let event = sample_event(
        Timestamp::from_millis(1_234),
        "e1",
        Duration::from_millis(1_500),
    );
    store.append_event(&event).await.unwrap();

    let items = raw_items(&store).await;
    let keys: BTreeSet<(&str, &str)> = items
        .keys()
        .map(|(pk, sk)| (pk.as_str(), sk.as_str()))
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            ("contract#CONFIG", "CONFIG"),
            ("contract#NODE", "node-a"),
            ("contract#SNAPSHOT", "snap-1"),
            ("contract#LEASE", "updater"),
            ("contract#IDEM#launch/node-a/1", "IDEM"),
            ("contract#EVENT", "00000000000000001234#e1"),
        ])
    );
    let item = |pk: &str, sk: &str| &items[&(pk.to_owned(), sk.to_owned())];
    let number = |value: &AttributeValue| value.as_n().unwrap().parse::<u64>().unwrap();
    let document = |value: &AttributeValue| -> serde_json::Value {
        serde_json::from_str(value.as_s().unwrap()).unwrap()
    };

    let config_item = item("contract#CONFIG", "CONFIG");
    assert_eq!(number(&config_item["version"]), 1);
    assert_eq!(
        document(&config_item["doc"]),
        serde_json::to_value(&config).unwrap()
    );
    let node_item = item("contract#NODE", "node-a");
    assert_eq!(
        document(&node_item["doc"]),
        serde_json::to_value(&node).unwrap()
    );
    assert_eq!(number(&node_item["version"]), 1);
    assert!(!node_item.contains_key("ttl"), "nodes never expire");
    let snapshot_item = item("contract#SNAPSHOT", "snap-1");
    assert_eq!(
        document(&snapshot_item["doc"]),
        serde_json::to_value(&snapshot).unwrap()
    );

    let lease_item = item("contract#LEASE", "updater");
    assert_eq!(lease_item["holder"].as_s().unwrap(), "alpha");
    assert_eq!(number(&lease_item["acquired_at"]), T0.as_millis());
    assert_eq!(
        number(&lease_item["expires_at"]),
        lease.expires_at.as_millis()
    );
    assert_eq!(number(&lease_item["version"]), lease.version.0);
    assert!(
        !lease_item.contains_key("ttl"),
        "a lease item outlives expiry"
    );

    let claim_item = item("contract#IDEM#launch/node-a/1", "IDEM");
    assert_eq!(claim_item["owner"].as_s().unwrap(), "request-1");
    assert_eq!(
        number(&claim_item["expires_at"]),
        claim.expires_at.as_millis()
    );
    assert_eq!(number(&claim_item["ttl"]), claim.expires_at.as_secs_ceil());
    assert_eq!(
        document(&claim_item["doc"]),
        serde_json::to_value(&claim).unwrap()
    );

    let event_item = item("contract#EVENT", "00000000000000001234#e1");
    assert_eq!(number(&event_item["expires_at"]), 2_734);
    assert_eq!(number(&event_item["ttl"]), 3, "epoch seconds, rounded up");
    assert_eq!(
        document(&event_item["doc"]),
        serde_json::to_value(&event).unwrap()
    );

    // A release keeps the item (and its version) and drops the holder.
    store.release_lease(&lease).await.unwrap();
    let items = raw_items(&store).await;
    let released = &items[&("contract#LEASE".to_owned(), "updater".to_owned())];
    assert!(!released.contains_key("holder"));
    assert_eq!(number(&released["version"]), lease.version.0);
}

#[tokio::test]
async fn fleets_sharing_a_table_do_not_see_each_other() {
    let alpha = fresh_store().await;
    let beta = DynamoStateStore::new(&support::moto_config(), alpha.table_name(), "beta").unwrap();

    alpha.save_node(&sample_node("node-a")).await.unwrap();
    beta.save_node(&sample_node("node-a")).await.unwrap();
    beta.save_node(&sample_node("node-b")).await.unwrap();
    assert_eq!(alpha.list_nodes().await.unwrap().len(), 1);
    assert_eq!(beta.list_nodes().await.unwrap().len(), 2);

    alpha
        .claim_idempotency_key("k", "a", Duration::from_secs(60), T0)
        .await
        .unwrap();
    beta.claim_idempotency_key("k", "b", Duration::from_secs(60), T0)
        .await
        .expect("the same key in another fleet is another key");
    assert_eq!(alpha.get_config().await.unwrap(), None);
    beta.save_config(&sample_config()).await.unwrap();
    assert_eq!(alpha.get_config().await.unwrap(), None);
}

#[test]
fn a_fleet_name_must_be_usable_in_keys() {
    let config = offline_config();
    for bad in ["", "a#b"] {
        match DynamoStateStore::new(&config, "table", bad) {
            Err(StateError::Backend { message }) => assert!(message.contains("fleet name")),
            other => panic!("fleet name {bad:?} must be refused, got {other:?}"),
        }
    }
    assert!(DynamoStateStore::new(&config, "table", "main-fleet").is_ok());
}

/// A configuration that needs no server: the constructor only builds a client.
fn offline_config() -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .build()
}

#[tokio::test]
async fn create_table_is_idempotent_and_enables_ttl() {
    let store = fresh_store().await;
    store
        .create_table()
        .await
        .expect("creating an existing table is fine");

    let table = store
        .client()
        .describe_table()
        .table_name(store.table_name())
        .send()
        .await
        .unwrap();
    let table = table.table().unwrap();
    let keys: Vec<(&str, &str)> = table
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name(), k.key_type().as_str()))
        .collect();
    assert_eq!(keys, vec![("pk", "HASH"), ("sk", "RANGE")]);
    assert_eq!(
        table
            .billing_mode_summary()
            .and_then(|summary| summary.billing_mode()),
        Some(&BillingMode::PayPerRequest)
    );

    let ttl = store
        .client()
        .describe_time_to_live()
        .table_name(store.table_name())
        .send()
        .await
        .unwrap();
    let ttl = ttl.time_to_live_description().unwrap();
    assert_eq!(ttl.attribute_name(), Some("ttl"));
    assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));
}

#[tokio::test]
async fn a_missing_table_is_an_operator_problem() {
    let store = DynamoStateStore::new(
        &support::moto_config(),
        support::unique_name("never-created"),
        "contract",
    )
    .unwrap();
    match store.get_config().await {
        Err(error @ StateError::Backend { .. }) => {
            assert!(!error.is_retryable());
            assert!(
                error.to_string().contains("ResourceNotFoundException"),
                "{error}"
            );
        }
        other => panic!("expected Backend, got {other:?}"),
    }
}

// ---- error paths moto cannot produce, with aws-smithy-mocks ----

/// A store whose client answers only from `rules`, without retries (so an error reaches the
/// adapter on the first answer) and without a network.
fn mocked_store(rules: &[&Rule]) -> DynamoStateStore {
    let config = aws_sdk_dynamodb::config::Builder::from(&support::mock_config())
        .interceptor(support::mock_interceptor(rules))
        .build();
    DynamoStateStore::from_client(Client::from_conf(config), "table", "fleet").unwrap()
}

/// A DynamoDB error answer as it comes over the wire (awsJson 1.0).
fn error_body(code: &str, extra: &str) -> String {
    format!(
        r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{code}","message":"mocked {code}"{extra}}}"#
    )
}

#[tokio::test]
async fn throttling_is_retryable_throttled() {
    let put = mock!(Client::put_item)
        .sequence()
        .http_status(
            400,
            Some(error_body("ProvisionedThroughputExceededException", "")),
        )
        .http_status(400, Some(error_body("ThrottlingException", "")))
        .http_status(400, Some(error_body("RequestLimitExceeded", "")))
        .build();
    let store = mocked_store(&[&put]);
    for expected_code in [
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
    ] {
        match store.save_node(&sample_node("n")).await {
            Err(error @ StateError::Throttled { .. }) => {
                assert!(error.is_retryable());
                assert!(!error.is_conflict());
                assert!(error.to_string().contains(expected_code), "{error}");
            }
            other => panic!("{expected_code} must be Throttled, got {other:?}"),
        }
    }
    assert_eq!(put.num_calls(), 3);
}

#[tokio::test]
async fn a_server_error_is_retryable_unavailable() {
    let get = mock!(Client::get_item).then_http_response(|| {
        aws_smithy_runtime_api::http::Response::new(
            aws_smithy_runtime_api::http::StatusCode::try_from(500).unwrap(),
            aws_smithy_types::body::SdkBody::from(error_body("InternalServerError", "")),
        )
    });
    let store = mocked_store(&[&get]);
    match store.get_node(&NodeId::from("n")).await {
        Err(error @ StateError::Unavailable { .. }) => assert!(error.is_retryable()),
        other => panic!("a 500 must be Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_failed_condition_is_a_typed_conflict() {
    let failed = || Some(error_body("ConditionalCheckFailedException", ""));
    let put = mock!(Client::put_item)
        .sequence()
        .http_status(400, failed())
        .times(3)
        .build();
    let delete = mock!(Client::delete_item)
        .sequence()
        .http_status(400, failed())
        .build();
    let update = mock!(Client::update_item)
        .sequence()
        .http_status(400, failed())
        .build();
    let store = mocked_store(&[&put, &delete, &update]);

    match store.save_node(&sample_node("n")).await {
        Err(StateError::Conflict {
            entity: Entity::Node,
            key,
            expected,
        }) => {
            assert_eq!(key, "n");
            assert_eq!(expected, Version::NEW);
        }
        other => panic!("expected a node Conflict, got {other:?}"),
    }
    match store
        .claim_idempotency_key("k", "me", Duration::from_secs(1), T0)
        .await
    {
        Err(StateError::AlreadyClaimed { key }) => assert_eq!(key, "k"),
        other => panic!("expected AlreadyClaimed, got {other:?}"),
    }
    let conflict = store.save_config(&sample_config()).await.unwrap_err();
    assert!(conflict.is_conflict() && !conflict.is_retryable());
    assert!(matches!(
        store.delete_node(&NodeId::from("n"), Version(4)).await,
        Err(StateError::Conflict {
            expected: Version(4),
            ..
        })
    ));
    // A lease condition failure without the old item (DynamoDB always sends it when asked;
    // this is the defensive path): a lease Conflict, so the caller re-reads.
    assert!(matches!(
        store
            .acquire_lease("l", "me", Duration::from_secs(1), T0)
            .await,
        Err(StateError::Conflict {
            entity: Entity::Lease,
            ..
        })
    ));
}

#[tokio::test]
async fn a_refused_lease_names_its_holder_from_the_returned_item() {
    let update = mock!(Client::update_item)
        .match_requests(|request| {
            request.return_values_on_condition_check_failure().map(|v| v.as_str()) == Some("ALL_OLD")
        })
        .then_http_response(|| {
            aws_smithy_runtime_api::http::Response::new(
                aws_smithy_runtime_api::http::StatusCode::try_from(400).unwrap(),
                aws_smithy_types::body::SdkBody::from(error_body(
                    "ConditionalCheckFailedException",
                    r#","Item":{"holder":{"S":"other"},"expires_at":{"N":"4102444830000"},"version":{"N":"7"}}"#,
                )),
            )
        });
    let store = mocked_store(&[&update]);
    match store
        .acquire_lease("l", "me", Duration::from_secs(30), T0)
        .await
    {
        Err(StateError::LeaseHeld {
            name,
            holder,
            expires_at,
        }) => {
            assert_eq!(name, "l");
            assert_eq!(holder, "other");
            assert_eq!(expires_at, T0.plus(Duration::from_secs(30)));
        }
        other => panic!("expected LeaseHeld, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unreadable_document_is_corrupt() {
    let get = mock!(Client::get_item).then_output(|| {
        GetItemOutput::builder()
            .item("pk", AttributeValue::S("fleet#NODE".to_owned()))
            .item("sk", AttributeValue::S("n".to_owned()))
            .item("doc", AttributeValue::S("{not json".to_owned()))
            .build()
    });
    let store = mocked_store(&[&get]);
    match store.get_node(&NodeId::from("n")).await {
        Err(error @ StateError::Corrupt { .. }) => assert!(!error.is_retryable()),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}
