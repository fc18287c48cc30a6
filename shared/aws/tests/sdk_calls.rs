//! Each adapter's `SDK_CALLS` table against what its code really sends, on moto: every port
//! method is called (with arguments that make it do its real work) through the ports'
//! counting wrapper, on a client whose [`OperationLog`] records every request. For each call
//! the operations sent must be listed in the table's entry for the method the wrapper
//! counted; after all calls, the table must name exactly the port's methods, and every
//! operation it lists must have been seen (so the IAM policies built from it claim nothing
//! the code never calls). The provisioning helpers are checked against `PROVISIONING` the
//! same way.
//!
//! moto answers every path these calls take (its gaps, listed in the adapters' own test
//! files, are about answers it never gives, like placement failures or a 409 on a
//! conditional write, and those send the same operations), so nothing here needs mocks.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use nodefleet_aws::ecs::{EcsNetwork, EcsSchedulerConfig};
use nodefleet_aws::{
    AwsOperation, DynamoStateStore, EcsScheduler, ElbTargetRegistry, OperationLog, S3ObjectStore,
    SdkCalls,
};
use nodefleet_ports::contract::state_store::{
    T0, sample_config, sample_event, sample_node, sample_snapshot,
};
use nodefleet_ports::faults::{
    Faults, FaultyObjectStore, FaultyScheduler, FaultyStateStore, FaultyTargetRegistry,
    OBJECT_STORE_OPERATIONS, SCHEDULER_OPERATIONS, STATE_STORE_OPERATIONS,
    TARGET_REGISTRY_OPERATIONS,
};
use nodefleet_ports::objects::MIN_PART_SIZE;
use nodefleet_ports::{
    ByteRange, ControlState, NetworkMode, ObjectError, ObjectStore, Role, Scheduler, StateStore,
    StoreUrl, Target, TargetRegistry, Version, Zone,
};
use nodefleet_testkit::moto::{default_vpc, ecs_cluster, keep_ecs_tasks_where_they_are};

const CONTAINER: &str = "node";
const ZONE: &str = "us-east-1a";

/// Checks one adapter's calls against its table, call by call.
struct Recorder {
    adapter: &'static str,
    table: SdkCalls,
    port_methods: &'static [&'static str],
    log: OperationLog,
    faults: Faults,
    /// `(port method, operation)` pairs sent so far.
    seen: BTreeSet<(&'static str, AwsOperation)>,
    called: BTreeSet<&'static str>,
}

impl Recorder {
    fn new(
        adapter: &'static str,
        table: SdkCalls,
        port_methods: &'static [&'static str],
        log: OperationLog,
        faults: Faults,
    ) -> Recorder {
        Recorder {
            adapter,
            table,
            port_methods,
            log,
            faults,
            seen: BTreeSet::new(),
            called: BTreeSet::new(),
        }
    }

    /// Awaits `call`, which must be one call of a port method through the counting wrapper,
    /// and checks every operation it sent against the table's entry for that method.
    async fn call<T>(&mut self, call: impl Future<Output = T>) -> T {
        let adapter = self.adapter;
        self.log.take();
        let before = self.faults.called();
        let answer = call.await;
        let sent = self.log.take();
        let counted: Vec<String> = self
            .faults
            .called()
            .into_iter()
            .filter(|(operation, calls)| before.get(operation) != Some(calls))
            .map(|(operation, _)| operation)
            .collect();
        let [method] = counted.as_slice() else {
            panic!("a checked call is one port method call, but {counted:?} were counted");
        };
        let (method, listed) = self
            .table
            .iter()
            .find(|(name, _)| name == method)
            .copied()
            .unwrap_or_else(|| panic!("{adapter}::SDK_CALLS has no entry for {method}"));
        for operation in sent {
            let Some(known) = listed.iter().find(|known| operation.is(known)) else {
                panic!(
                    "{adapter} {method} sent {operation}, which {adapter}::SDK_CALLS does not \
                     list for it (it lists {})",
                    names(listed)
                );
            };
            self.seen.insert((method, *known));
        }
        self.called.insert(method);
        answer
    }

    /// After all calls: the table names the port's methods, each was called, and each
    /// operation the table lists was sent by its method at least once.
    fn finish(self) {
        let adapter = self.adapter;
        let port: BTreeSet<&str> = self.port_methods.iter().copied().collect();
        let table: BTreeSet<&str> = self.table.iter().map(|(method, _)| *method).collect();
        assert_eq!(
            table, port,
            "{adapter}::SDK_CALLS must have one entry per port method"
        );
        assert_eq!(
            self.called, port,
            "the test must call every port method of {adapter}"
        );
        for (method, listed) in self.table {
            for operation in *listed {
                assert!(
                    self.seen.contains(&(*method, *operation)),
                    "{adapter}::SDK_CALLS lists {operation} for {method}, but no call of \
                     {method} sent it"
                );
            }
        }
    }
}

/// `S3:HeadObject, S3:GetObject`: operations for a message.
fn names(operations: &[AwsOperation]) -> String {
    operations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks the operations a provisioning helper sent against its `PROVISIONING` list, both
/// ways (every call below provisions from scratch, so it takes every step).
fn check_provisioning(log: &OperationLog, what: &str, listed: &[AwsOperation]) {
    let sent = log.take();
    for operation in &sent {
        assert!(
            listed.iter().any(|known| operation.is(known)),
            "{what} sent {operation}, which its PROVISIONING does not list ({})",
            names(listed)
        );
    }
    for known in listed {
        assert!(
            sent.iter().any(|operation| operation.is(known)),
            "{what}'s PROVISIONING lists {known}, which it did not send (it sent {})",
            sent.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

#[tokio::test]
async fn dynamo_state_store_calls_what_its_table_says() {
    let log = OperationLog::new();
    let config = aws_sdk_dynamodb::config::Builder::from(&support::moto_config())
        .interceptor(log.clone())
        .build();
    let store = DynamoStateStore::from_client(
        aws_sdk_dynamodb::Client::from_conf(config),
        support::unique_name("sdk-calls"),
        "calls",
    )
    .unwrap();
    store.create_table().await.unwrap();
    check_provisioning(
        &log,
        "DynamoStateStore::create_table",
        DynamoStateStore::PROVISIONING,
    );

    let faults = Faults::new();
    let state = FaultyStateStore::new(store, faults.clone());
    let mut r = Recorder::new(
        "DynamoStateStore",
        DynamoStateStore::SDK_CALLS,
        STATE_STORE_OPERATIONS,
        log,
        faults,
    );
    let later = |secs| T0.plus(Duration::from_secs(secs));

    r.call(state.save_config(&sample_config())).await.unwrap();
    assert!(r.call(state.get_config()).await.unwrap().is_some());

    let control = ControlState {
        name: "reactor".to_owned(),
        body: "{}".to_owned(),
        updated_at: T0,
        version: Version::NEW,
    };
    r.call(state.save_control_state(&control)).await.unwrap();
    assert!(
        r.call(state.get_control_state("reactor"))
            .await
            .unwrap()
            .is_some()
    );

    let node = r
        .call(state.save_node(&sample_node("node-1")))
        .await
        .unwrap();
    assert!(r.call(state.get_node(&node.id)).await.unwrap().is_some());
    assert_eq!(r.call(state.list_nodes()).await.unwrap().len(), 1);
    r.call(state.delete_node(&node.id, node.version))
        .await
        .unwrap();

    let snapshot = r
        .call(state.save_snapshot(&sample_snapshot("snap-1")))
        .await
        .unwrap();
    assert!(
        r.call(state.get_snapshot(&snapshot.id))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(r.call(state.list_snapshots()).await.unwrap().len(), 1);

    let ttl = Duration::from_secs(60);
    let lease = r
        .call(state.acquire_lease("updater", "me", ttl, T0))
        .await
        .unwrap();
    let lease = r
        .call(state.renew_lease(&lease, ttl, later(1)))
        .await
        .unwrap();
    assert!(
        r.call(state.get_lease("updater", later(2)))
            .await
            .unwrap()
            .is_some()
    );
    r.call(state.release_lease(&lease)).await.unwrap();

    r.call(state.claim_idempotency_key("launch-1", "me", ttl, T0))
        .await
        .unwrap();
    r.call(state.complete_idempotency_key("launch-1", "me", "task-1", later(1)))
        .await
        .unwrap();
    assert!(
        r.call(state.get_idempotency_key("launch-1", later(2)))
            .await
            .unwrap()
            .is_some()
    );

    let event = sample_event(T0, "event-1", Duration::from_secs(86_400));
    r.call(state.append_event(&event)).await.unwrap();
    assert_eq!(
        r.call(state.list_events(T0, later(1), 10))
            .await
            .unwrap()
            .len(),
        1
    );
    r.finish();
}

/// `zone=subnet,...` (what `moto::ecs_cluster` returns) as the scheduler's subnets.
fn subnets_by_zone(spec: &str) -> BTreeMap<Zone, Vec<String>> {
    spec.split(',')
        .map(|pair| {
            let (zone, subnet) = pair.split_once('=').unwrap();
            (Zone::new(zone), vec![subnet.to_owned()])
        })
        .collect()
}

#[tokio::test]
async fn ecs_scheduler_calls_what_its_table_says() {
    keep_ecs_tasks_where_they_are().await;
    let sdk = support::moto_config();
    let cluster = ecs_cluster(&sdk, &[ZONE], 1, CONTAINER).await;
    let mut config = EcsSchedulerConfig::new(
        &cluster.cluster,
        &cluster.task_definition,
        CONTAINER,
        support::unique_name("fleet"),
    );
    config.network = EcsNetwork::Awsvpc {
        subnets_by_zone: subnets_by_zone(&cluster.subnets_by_zone),
        security_groups: Vec::new(),
    };
    let log = OperationLog::new();
    let client = aws_sdk_ecs::Client::from_conf(
        aws_sdk_ecs::config::Builder::from(&sdk)
            .interceptor(log.clone())
            .build(),
    );
    let faults = Faults::new();
    let scheduler =
        FaultyScheduler::new(EcsScheduler::new(client, config).unwrap(), faults.clone());
    let mut r = Recorder::new(
        "EcsScheduler",
        EcsScheduler::SDK_CALLS,
        SCHEDULER_OPERATIONS,
        log,
        faults,
    );

    let request = nodefleet_ports::contract::scheduler::request(
        &Zone::new(ZONE),
        Role::Serving,
        Some("snap-1"),
        1,
    );
    let report = r.call(scheduler.launch(&request)).await.unwrap();
    let task = report.started[0].id.clone();
    assert_eq!(r.call(scheduler.list_tasks()).await.unwrap().len(), 1);
    assert_eq!(
        r.call(scheduler.describe_tasks(std::slice::from_ref(&task)))
            .await
            .unwrap()
            .len(),
        1
    );
    r.call(scheduler.stop(&task, "sdk-calls test"))
        .await
        .unwrap();
    r.finish();
}

#[tokio::test]
async fn elb_target_registry_calls_what_its_table_says() {
    let sdk = support::moto_config();
    let group = aws_sdk_elasticloadbalancingv2::Client::new(&sdk)
        .create_target_group()
        .name(support::unique_name("nf-tg"))
        .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Tcp)
        .port(8545)
        .vpc_id(default_vpc().await)
        .target_type(aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum::Ip)
        .send()
        .await
        .unwrap();
    let arn = group.target_groups()[0].target_group_arn().unwrap();
    let log = OperationLog::new();
    let client = aws_sdk_elasticloadbalancingv2::Client::from_conf(
        aws_sdk_elasticloadbalancingv2::config::Builder::from(&sdk)
            .interceptor(log.clone())
            .build(),
    );
    let faults = Faults::new();
    let registry = FaultyTargetRegistry::new(
        ElbTargetRegistry::new(client, arn, NetworkMode::Awsvpc),
        faults.clone(),
    );
    let mut r = Recorder::new(
        "ElbTargetRegistry",
        ElbTargetRegistry::SDK_CALLS,
        TARGET_REGISTRY_OPERATIONS,
        log,
        faults,
    );

    let target = |last: u8| Target {
        id: format!("172.31.254.{last}"),
        port: 8545,
    };
    r.call(registry.register(&[target(1)])).await.unwrap();
    assert_eq!(r.call(registry.describe_health()).await.unwrap().len(), 1);
    // One registered target and one that never was: moto rejects the batch, and the
    // adapter retries target by target (the same operation).
    r.call(registry.deregister(&[target(1), target(2)]))
        .await
        .unwrap();
    r.finish();
}

#[tokio::test]
async fn s3_object_store_calls_what_its_table_says() {
    let log = OperationLog::new();
    let config = aws_sdk_s3::config::Builder::from(&support::moto_config())
        .force_path_style(true)
        .interceptor(log.clone())
        .build();
    let url = StoreUrl::parse(&format!(
        "s3://{}/fleet/",
        support::unique_name("sdk-calls")
    ))
    .unwrap();
    let store = S3ObjectStore::from_client(aws_sdk_s3::Client::from_conf(config), &url).unwrap();
    store.create_bucket().await.unwrap();
    check_provisioning(
        &log,
        "S3ObjectStore::create_bucket",
        S3ObjectStore::PROVISIONING,
    );

    let faults = Faults::new();
    let objects = FaultyObjectStore::new(store, faults.clone());
    let mut r = Recorder::new(
        "S3ObjectStore",
        S3ObjectStore::SDK_CALLS,
        OBJECT_STORE_OPERATIONS,
        log,
        faults,
    );

    r.call(objects.put("refs/a", Bytes::from_static(b"hello")))
        .await
        .unwrap();
    r.call(objects.put_if_absent("refs/b", Bytes::from_static(b"first")))
        .await
        .unwrap();
    assert!(matches!(
        r.call(objects.put_if_absent("refs/b", Bytes::from_static(b"second")))
            .await,
        Err(ObjectError::AlreadyExists { .. })
    ));
    assert_eq!(
        r.call(objects.get("refs/a", None)).await.unwrap(),
        Bytes::from_static(b"hello")
    );
    assert_eq!(
        r.call(objects.get("refs/a", Some(ByteRange { start: 1, end: 3 })))
            .await
            .unwrap(),
        Bytes::from_static(b"el")
    );
    assert!(r.call(objects.head("refs/a")).await.unwrap().is_some());
    assert!(r.call(objects.head("refs/none")).await.unwrap().is_none());
    assert_eq!(
        r.call(objects.list("refs/", None, 1000))
            .await
            .unwrap()
            .objects
            .len(),
        2
    );
    r.call(objects.delete("refs/a")).await.unwrap();

    let upload = r.call(objects.create_multipart("packs/big")).await.unwrap();
    let part = r
        .call(objects.upload_part(&upload, 1, Bytes::from(vec![7u8; MIN_PART_SIZE as usize])))
        .await
        .unwrap();
    let meta = r
        .call(objects.complete_multipart(&upload, &[part]))
        .await
        .unwrap();
    assert_eq!(meta.size, MIN_PART_SIZE);
    let abandoned = r
        .call(objects.create_multipart("packs/abandoned"))
        .await
        .unwrap();
    r.call(objects.abort_multipart(&abandoned)).await.unwrap();
    r.finish();
}
