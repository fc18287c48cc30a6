//! Hydration and invariant 3 (a node is never started on data that failed verification),
//! with real snapshots made by the engine's `create` in an in-memory store and a shell
//! script standing in for the client (it records every start in a file outside the data
//! dir): an empty store starts the client on the dir as it is; a corrupt or missing chunk,
//! a snapshot id that does not exist, or an unreachable store keeps the client from
//! starting; a failed restore over a dir that held an earlier snapshot leaves it
//! unstartable, run after run, until a good snapshot is restored.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nodefleet_agent::client::{ClientKind, ClientLog};
use nodefleet_agent::hydrate::{HydrateError, Hydration, hydrate, marker, require_marker};
use nodefleet_agent::{AgentConfig, AgentError, RunReport, Shutdown, run_with_listener};
use nodefleet_ports::ObjectStore;
use nodefleet_ports::fakes::MemoryObjectStore;
use nodefleet_ports::faults::{Faults, FaultyObjectStore};
use nodefleet_snapshot::catalog::Selector;
use nodefleet_snapshot::create::{CreateOptions, create};
use nodefleet_snapshot::format::{ChainPoint, PACKS_PREFIX};
use nodefleet_snapshot::profile;
use nodefleet_snapshot::progress::NoProgress;
use nodefleet_snapshot::restore::{RESTORE_MARKER, RestoreOptions};
use support::{TempDir, eventually, free_port, listener};

/// Pseudo-random bytes (xorshift), so chunks do not compress and every file differs.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A small anvil-like data dir in `dir`.
fn write_data(dir: &Path, seed: u64) {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("state.json"), noise(seed, 3 << 20)).unwrap();
    std::fs::write(dir.join("sub/other.bin"), noise(seed + 1, 100_000)).unwrap();
}

/// Snapshots `dir` into `store` and publishes it; its id.
async fn snapshot(store: &Arc<dyn ObjectStore>, dir: &Path, now_ms: u64) -> String {
    let options = CreateOptions {
        profile: &profile::ANVIL,
        chain: ChainPoint {
            client: "anvil".into(),
            ..ChainPoint::default()
        },
        concurrency: 2,
        now_ms,
        publish: true,
    };
    create(store.clone(), dir, &options, Arc::new(NoProgress))
        .await
        .unwrap()
        .snapshot
}

/// Flips one byte in the middle of every pack in `keys`.
async fn corrupt(memory: &MemoryObjectStore, keys: &[String]) {
    for key in keys {
        let mut body = memory.object(key).unwrap().to_vec();
        let middle = body.len() / 2;
        body[middle] ^= 0xff;
        memory.put(key, Bytes::from(body)).await.unwrap();
    }
}

fn packs(memory: &MemoryObjectStore) -> Vec<String> {
    memory
        .keys()
        .into_iter()
        .filter(|k| k.starts_with(PACKS_PREFIX))
        .collect()
}

/// An agent config whose "client" is a script that appends a line to `<dir>/starts`.
fn scripted_config(dir: &TempDir) -> AgentConfig {
    let script = dir.join("client.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho started >> {}\ntrap 'exit 0' TERM\nwhile true; do sleep 0.1; done\n",
            dir.join("starts").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut config = AgentConfig::new(ClientKind::Anvil, dir.join("data"));
    config.launch.binary = script;
    config.launch.rpc_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    config.launch.log = ClientLog::File(dir.join("client.log"));
    config
}

fn starts(dir: &TempDir) -> usize {
    std::fs::read_to_string(dir.join("starts"))
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

/// Runs the agent until the client has started, then shuts it down.
async fn run_until_started(
    config: AgentConfig,
    store: Arc<dyn ObjectStore>,
    dir: &TempDir,
) -> RunReport {
    let before = starts(dir);
    let (listener, _) = listener().await;
    let (trigger, shutdown) = Shutdown::new();
    let run = tokio::spawn(run_with_listener(config, listener, store, shutdown));
    let started = eventually(Duration::from_secs(30), "the client to start", || async {
        if starts(dir) > before {
            Some(true)
        } else {
            run.is_finished().then_some(false)
        }
    })
    .await;
    trigger.fire();
    let report = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .unwrap()
        .unwrap();
    assert!(
        started,
        "the agent ended before starting the client: {report:?}"
    );
    report.unwrap()
}

/// Runs the agent, which must fail before starting anything; its error.
async fn run_refused(
    config: AgentConfig,
    store: Arc<dyn ObjectStore>,
    dir: &TempDir,
) -> AgentError {
    let before = starts(dir);
    let (listener, _) = listener().await;
    let (_trigger, shutdown) = Shutdown::new();
    let ended = tokio::time::timeout(
        Duration::from_secs(30),
        run_with_listener(config, listener, store, shutdown),
    )
    .await
    .unwrap();
    let error = ended.unwrap_err();
    assert_eq!(starts(dir), before, "the client was started: {error}");
    assert_eq!(error.exit_code(), 1);
    error
}

#[tokio::test]
async fn an_empty_store_starts_the_client_on_the_dir_as_it_is() {
    let dir = TempDir::new("empty");
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryObjectStore::new());
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("data/own.db"), b"synced by the node itself").unwrap();

    let hydration = hydrate(
        store.clone(),
        &dir.join("data"),
        &Selector::Latest,
        &RestoreOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!(hydration, Hydration::EmptyStore);
    assert_eq!(
        std::fs::read(dir.join("data/own.db")).unwrap(),
        b"synced by the node itself"
    );
    assert_eq!(marker(&dir.join("data")).unwrap(), None);

    let report = run_until_started(scripted_config(&dir), store, &dir).await;
    assert_eq!(report.hydration, Some(Hydration::EmptyStore));
    assert!(report.client_exit.unwrap().is_clean());
    assert_eq!(starts(&dir), 1);
}

#[tokio::test]
async fn a_good_snapshot_is_restored_then_started_on() {
    let dir = TempDir::new("good");
    let memory = MemoryObjectStore::new();
    let store: Arc<dyn ObjectStore> = Arc::new(memory.clone());
    write_data(&dir.join("source"), 1);
    let id = snapshot(&store, &dir.join("source"), 1_000).await;

    let report = run_until_started(scripted_config(&dir), store, &dir).await;
    match report.hydration.unwrap() {
        Hydration::Restored(summary) => assert_eq!(summary.snapshot, id),
        other => panic!("expected a restore, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(dir.join("data/state.json")).unwrap(),
        std::fs::read(dir.join("source/state.json")).unwrap()
    );
    assert_eq!(marker(&dir.join("data")).unwrap(), Some(id.clone()));
    require_marker(&dir.join("data"), &id).unwrap();
    assert!(require_marker(&dir.join("data"), "another").is_err());
}

#[tokio::test]
async fn a_corrupt_chunk_keeps_the_client_from_starting() {
    let dir = TempDir::new("corrupt");
    let memory = MemoryObjectStore::new();
    let store: Arc<dyn ObjectStore> = Arc::new(memory.clone());
    write_data(&dir.join("source"), 2);
    let id = snapshot(&store, &dir.join("source"), 1_000).await;
    corrupt(&memory, &packs(&memory)).await;

    let error = run_refused(scripted_config(&dir), store, &dir).await;
    let AgentError::Hydrate(HydrateError::Restore { snapshot, .. }) = &error else {
        panic!("expected a failed restore, got {error}");
    };
    assert_eq!(snapshot, &id);
    let text = error.to_string();
    assert!(text.contains("so the client is not started"), "{text}");
    assert!(text.contains("at offset"), "names the place: {text}");
    assert_eq!(marker(&dir.join("data")).unwrap(), None);
}

#[tokio::test]
async fn a_missing_pack_keeps_the_client_from_starting() {
    let dir = TempDir::new("missing");
    let memory = MemoryObjectStore::new();
    let store: Arc<dyn ObjectStore> = Arc::new(memory.clone());
    write_data(&dir.join("source"), 3);
    snapshot(&store, &dir.join("source"), 1_000).await;
    for key in packs(&memory) {
        memory.delete(&key).await.unwrap();
    }

    let error = run_refused(scripted_config(&dir), store, &dir).await;
    assert!(
        matches!(error, AgentError::Hydrate(HydrateError::Restore { .. })),
        "{error}"
    );
    assert_eq!(marker(&dir.join("data")).unwrap(), None);
}

#[tokio::test]
async fn a_failed_restore_over_a_restored_dir_leaves_it_unstartable() {
    let dir = TempDir::new("over");
    let memory = MemoryObjectStore::new();
    let store: Arc<dyn ObjectStore> = Arc::new(memory.clone());
    write_data(&dir.join("source"), 4);
    let first = snapshot(&store, &dir.join("source"), 1_000).await;
    run_until_started(scripted_config(&dir), store.clone(), &dir).await;
    assert_eq!(marker(&dir.join("data")).unwrap(), Some(first));
    assert_eq!(starts(&dir), 1);

    // A newer snapshot whose new chunks are corrupt becomes latest.
    let before = packs(&memory);
    write_data(&dir.join("source"), 5);
    snapshot(&store, &dir.join("source"), 2_000).await;
    let new_packs: Vec<String> = packs(&memory)
        .into_iter()
        .filter(|k| !before.contains(k))
        .collect();
    assert!(!new_packs.is_empty());
    corrupt(&memory, &new_packs).await;

    // The restore over the good dir fails: the marker is gone and nothing starts, now and
    // on every later run.
    for _ in 0..2 {
        let error = run_refused(scripted_config(&dir), store.clone(), &dir).await;
        assert!(
            matches!(error, AgentError::Hydrate(HydrateError::Restore { .. })),
            "{error}"
        );
        assert_eq!(marker(&dir.join("data")).unwrap(), None);
        assert!(!dir.join("data").join(RESTORE_MARKER).exists());
    }
    assert_eq!(starts(&dir), 1);

    // A good snapshot published after it heals the node.
    write_data(&dir.join("source"), 6);
    let healed = snapshot(&store, &dir.join("source"), 3_000).await;
    let report = run_until_started(scripted_config(&dir), store, &dir).await;
    assert_eq!(report.hydration.unwrap().snapshot(), Some(healed.as_str()));
    assert_eq!(starts(&dir), 2);
}

#[tokio::test]
async fn a_snapshot_asked_for_by_id_must_exist() {
    let dir = TempDir::new("by-id");
    let memory = MemoryObjectStore::new();
    let store: Arc<dyn ObjectStore> = Arc::new(memory.clone());
    write_data(&dir.join("source"), 7);
    snapshot(&store, &dir.join("source"), 1_000).await;
    let mut config = scripted_config(&dir);
    config.snapshot = Selector::Id("0000000000001-0123456789abcdef".into());

    let error = run_refused(config, store, &dir).await;
    assert!(
        matches!(
            error,
            AgentError::Hydrate(HydrateError::Restore { .. } | HydrateError::Resolve { .. })
        ),
        "{error}"
    );
    assert!(
        error.to_string().contains("0000000000001-0123456789abcdef"),
        "{error}"
    );
}

#[tokio::test]
async fn an_unreachable_store_is_fatal_and_retryable() {
    let dir = TempDir::new("unreachable");
    let faults = Faults::new();
    faults.fail_always("list");
    let store: Arc<dyn ObjectStore> =
        Arc::new(FaultyObjectStore::new(MemoryObjectStore::new(), faults));

    let error = run_refused(scripted_config(&dir), store, &dir).await;
    let AgentError::Hydrate(hydrate_error) = &error else {
        panic!("expected a hydration error, got {error}");
    };
    assert!(
        matches!(hydrate_error, HydrateError::Resolve { .. }),
        "{error}"
    );
    assert!(hydrate_error.is_retryable(), "{error}");
}

#[tokio::test]
async fn the_client_never_starts_without_hydration_and_a_matching_marker() {
    use nodefleet_agent::health::Thresholds;
    use nodefleet_agent::node::{Node, StartFailure};
    use nodefleet_agent::probe::RpcClient;

    let dir = TempDir::new("gate");
    let config = scripted_config(&dir);
    let data = config.launch.data_dir.clone();
    let node = Arc::new(Node::new(
        config.launch.clone(),
        RpcClient::new(config.probe_addr(), Duration::from_millis(200)),
        Thresholds::default(),
        None,
    ));
    // Before hydration said anything, nothing starts.
    let error = node.start().await.unwrap_err();
    assert!(matches!(error, StartFailure::NotHydrated), "{error}");

    node.set_required_snapshot(Some("0000000001000-aaaaaaaaaaaaaaaa".into()));
    // No marker, or a marker naming another snapshot: nothing starts.
    let error = node.start().await.unwrap_err();
    assert!(matches!(error, StartFailure::Unverified(_)), "{error}");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join(RESTORE_MARKER), "0000000002000-bbbbbbbbbbbbbbbb").unwrap();
    let error = node.start().await.unwrap_err();
    assert!(
        error.to_string().contains("0000000002000-bbbbbbbbbbbbbbbb"),
        "{error}"
    );
    assert_eq!(starts(&dir), 0);

    // The marker names the snapshot: the client starts.
    std::fs::write(data.join(RESTORE_MARKER), "0000000001000-aaaaaaaaaaaaaaaa").unwrap();
    node.start().await.unwrap();
    eventually(Duration::from_secs(10), "the client to start", || async {
        (starts(&dir) == 1).then_some(())
    })
    .await;
    assert!(node.stop().await.unwrap().is_clean());
}
