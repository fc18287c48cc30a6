//! `LocalTargetRegistry`: the target registry contract, and the health states its probes
//! give for healthy, failing (503 with the agent's JSON reason), refused, silent and garbled
//! endpoints, served by small scripted servers in this file.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nodefleet_local::targets::{
    HealthCheck, LocalTargetRegistry, LocalTargetRegistryConfig, REASON_CODE_MISMATCH,
    REASON_DRAINING, REASON_FAILED, REASON_INITIAL, REASON_TIMEOUT,
};
use nodefleet_ports::contract::target_registry::{TargetRegistryFixture, TargetSource};
use nodefleet_ports::{RegistryError, Target, TargetHealth, TargetRegistry, TargetState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a scripted server answers, given the request it read.
type Script = fn(&str) -> Vec<u8>;

/// A server on a fresh loopback port that answers every connection with `script`, then
/// closes it. It runs until the test's runtime ends (or the handle is aborted).
async fn serve(script: Script) -> (Target, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(answer(stream, script));
        }
    });
    (target(addr), handle)
}

async fn answer(mut stream: TcpStream, script: Script) {
    let mut request = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        let Ok(read) = stream.read(&mut buffer).await else {
            return;
        };
        if read == 0 {
            return;
        }
        request.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&request);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= length {
                break;
            }
        }
    }
    let reply = script(&String::from_utf8_lossy(&request));
    let _ = stream.write_all(&reply).await;
    let _ = stream.shutdown().await;
}

/// A server that accepts connections and never answers.
async fn silent() -> Target {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    target(addr)
}

/// A loopback port nothing listens on.
fn refused() -> Target {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    target(listener.local_addr().unwrap())
}

fn target(addr: SocketAddr) -> Target {
    Target {
        id: addr.ip().to_string(),
        port: addr.port(),
    }
}

fn response(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The agent's `/health` when synced: 200 on `GET /health` only.
fn healthy_agent(request: &str) -> Vec<u8> {
    if request.starts_with("GET /health HTTP/1.1\r\n") {
        response("200 OK", r#"{"healthy":true}"#)
    } else {
        response("404 Not Found", "")
    }
}

fn lagging_agent(_: &str) -> Vec<u8> {
    response(
        "503 Service Unavailable",
        r#"{"healthy":false,"reason":"head is 300 s old"}"#,
    )
}

fn plain_500(_: &str) -> Vec<u8> {
    "HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nboom\r\n0\r\n\r\n"
        .into()
}

fn garbage(_: &str) -> Vec<u8> {
    b"this is not HTTP\r\n\r\n".to_vec()
}

/// A JSON-RPC node: a block number for a POSTed `eth_blockNumber`, 405 otherwise.
fn json_rpc_node(request: &str) -> Vec<u8> {
    if request.starts_with("POST / HTTP/1.1\r\n")
        && request.contains(r#""method":"eth_blockNumber""#)
    {
        response("200 OK", r#"{"jsonrpc":"2.0","id":1,"result":"0x2a"}"#)
    } else {
        response("405 Method Not Allowed", "")
    }
}

fn json_rpc_error(_: &str) -> Vec<u8> {
    response(
        "200 OK",
        r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"header not found"}}"#,
    )
}

/// A registry with a short probe timeout and no initial grace, so failures show at once.
fn quick_registry(check: HealthCheck) -> LocalTargetRegistry {
    let mut config = LocalTargetRegistryConfig::new(check);
    config.probe_timeout = Duration::from_millis(300);
    config.initial_grace = Duration::ZERO;
    LocalTargetRegistry::new(config)
}

fn health_of<'a>(health: &'a [TargetHealth], target: &Target) -> &'a TargetHealth {
    let mut matching = health.iter().filter(|h| &h.target == target);
    let found = matching
        .next()
        .unwrap_or_else(|| panic!("{target} not listed: {health:?}"));
    assert!(
        matching.next().is_none(),
        "{target} listed twice: {health:?}"
    );
    found
}

mod contract {
    use super::*;

    /// Each target is a fresh server answering 200, like a healthy agent.
    #[derive(Debug)]
    struct HealthyServers;

    #[async_trait]
    impl TargetSource for HealthyServers {
        async fn make_target(&mut self) -> Target {
            serve(healthy_agent).await.0
        }
    }

    async fn fixture() -> TargetRegistryFixture<LocalTargetRegistry> {
        let mut config = LocalTargetRegistryConfig::new(HealthCheck::agent());
        config.probe_timeout = Duration::from_millis(500);
        TargetRegistryFixture::new(LocalTargetRegistry::new(config), HealthyServers)
    }

    /// Targets nothing listens on: registered ones are `Initial` within the grace.
    async fn fixture_of_refused_targets() -> TargetRegistryFixture<LocalTargetRegistry> {
        let registry = LocalTargetRegistry::with_check(HealthCheck::agent());
        TargetRegistryFixture::new(
            registry,
            nodefleet_ports::contract::target_registry::targets_from_fn(refused),
        )
    }

    /// Deregistered targets drain for a while instead of vanishing.
    async fn fixture_with_draining() -> TargetRegistryFixture<LocalTargetRegistry> {
        let mut config = LocalTargetRegistryConfig::new(HealthCheck::agent());
        config.deregistration_delay = Duration::from_secs(60);
        TargetRegistryFixture::new(LocalTargetRegistry::new(config), HealthyServers)
    }

    mod healthy {
        use super::*;
        nodefleet_ports::target_registry_contract!(fixture());
    }

    mod starting {
        use super::*;
        nodefleet_ports::target_registry_contract!(fixture_of_refused_targets());
    }

    mod draining {
        use super::*;
        nodefleet_ports::target_registry_contract!(fixture_with_draining());
    }
}

#[tokio::test]
async fn probes_give_elb_states_with_reasons_and_run_concurrently() {
    let (healthy, _h1) = serve(healthy_agent).await;
    let (lagging, _h2) = serve(lagging_agent).await;
    let (failing, _h3) = serve(plain_500).await;
    let (garbled, _h4) = serve(garbage).await;
    let refused = refused();
    let silent = [
        silent().await,
        silent().await,
        silent().await,
        silent().await,
    ];
    let mut config = LocalTargetRegistryConfig::new(HealthCheck::agent());
    config.probe_timeout = Duration::from_millis(400);
    config.initial_grace = Duration::ZERO;
    let registry = LocalTargetRegistry::new(config);
    let mut all = vec![
        healthy.clone(),
        lagging.clone(),
        failing.clone(),
        garbled.clone(),
        refused.clone(),
    ];
    all.extend(silent.iter().cloned());
    registry.register(&all).await.unwrap();

    let started = Instant::now();
    let health = registry.describe_health().await.unwrap();
    let took = started.elapsed();
    assert_eq!(health.len(), all.len(), "{health:?}");
    // One after the other, the four silent targets alone would take 1.6 s.
    assert!(
        took < Duration::from_millis(1_200),
        "probes ran one after the other: {took:?}"
    );

    let h = health_of(&health, &healthy);
    assert_eq!(
        (h.state, h.reason.as_deref()),
        (TargetState::Healthy, None),
        "{h:?}"
    );
    let h = health_of(&health, &lagging);
    assert_eq!(h.state, TargetState::Unhealthy, "{h:?}");
    assert_eq!(h.reason.as_deref(), Some(REASON_CODE_MISMATCH));
    assert_eq!(
        h.description.as_deref(),
        Some("HTTP 503: head is 300 s old")
    );
    let h = health_of(&health, &failing);
    assert_eq!(
        (h.state, h.reason.as_deref()),
        (TargetState::Unhealthy, Some(REASON_CODE_MISMATCH))
    );
    assert_eq!(h.description.as_deref(), Some("HTTP 500: boom"));
    let h = health_of(&health, &garbled);
    assert_eq!(
        (h.state, h.reason.as_deref()),
        (TargetState::Unhealthy, Some(REASON_FAILED))
    );
    assert!(
        h.description
            .as_deref()
            .unwrap()
            .contains("invalid HTTP answer"),
        "{h:?}"
    );
    let h = health_of(&health, &refused);
    assert_eq!(
        (h.state, h.reason.as_deref()),
        (TargetState::Unhealthy, Some(REASON_FAILED))
    );
    assert!(
        h.description.as_deref().unwrap().contains("cannot connect"),
        "{h:?}"
    );
    for silent in &silent {
        let h = health_of(&health, silent);
        assert_eq!(
            (h.state, h.reason.as_deref()),
            (TargetState::Unhealthy, Some(REASON_TIMEOUT)),
            "{h:?}"
        );
    }
    assert!(health.iter().all(|h| h.zone.is_none()));
    let mut sorted = health.clone();
    sorted.sort_by(|a, b| a.target.cmp(&b.target));
    assert_eq!(health, sorted, "answers come in target order");

    // The path is the configured one: the healthy agent answers 404 anywhere else.
    let elsewhere = quick_registry(HealthCheck::Http { path: "/".into() });
    elsewhere
        .register(std::slice::from_ref(&healthy))
        .await
        .unwrap();
    let h = elsewhere.describe_health().await.unwrap();
    assert_eq!(h[0].state, TargetState::Unhealthy, "{h:?}");
    assert_eq!(h[0].description.as_deref(), Some("HTTP 404"));
}

#[tokio::test]
async fn json_rpc_checks_pass_on_a_result() {
    let (node, _h1) = serve(json_rpc_node).await;
    let (erring, _h2) = serve(json_rpc_error).await;
    let (agent, _h3) = serve(healthy_agent).await;
    let registry = quick_registry(HealthCheck::JsonRpc);
    registry
        .register(&[node.clone(), erring.clone(), agent.clone()])
        .await
        .unwrap();
    let health = registry.describe_health().await.unwrap();
    assert_eq!(
        health_of(&health, &node).state,
        TargetState::Healthy,
        "{health:?}"
    );
    let h = health_of(&health, &erring);
    assert_eq!(
        (h.state, h.reason.as_deref()),
        (TargetState::Unhealthy, Some(REASON_FAILED))
    );
    assert_eq!(
        h.description.as_deref(),
        Some("JSON-RPC error: header not found")
    );
    let h = health_of(&health, &agent);
    assert_eq!(
        (h.state, h.reason.as_deref()),
        (TargetState::Unhealthy, Some(REASON_CODE_MISMATCH)),
        "a GET-only server: {h:?}"
    );
}

#[tokio::test]
async fn a_target_is_initial_until_it_passes_or_the_grace_ends() {
    let mut config = LocalTargetRegistryConfig::new(HealthCheck::agent());
    config.probe_timeout = Duration::from_millis(300);
    config.initial_grace = Duration::from_millis(500);
    let registry = LocalTargetRegistry::new(config);
    let starting = refused();
    let (up, server) = serve(healthy_agent).await;
    registry
        .register(&[starting.clone(), up.clone()])
        .await
        .unwrap();

    let health = registry.describe_health().await.unwrap();
    let h = health_of(&health, &starting);
    assert_eq!(
        (h.state, h.reason.as_deref()),
        (TargetState::Initial, Some(REASON_INITIAL)),
        "{h:?}"
    );
    assert!(
        h.description.as_deref().unwrap().contains("cannot connect"),
        "{h:?}"
    );
    assert_eq!(health_of(&health, &up).state, TargetState::Healthy);

    // Once it has passed, a failure is unhealthy at once, grace or not.
    server.abort();
    let _ = server.await;
    let health = registry.describe_health().await.unwrap();
    let h = health_of(&health, &up);
    assert_eq!(
        (h.state, h.reason.as_deref()),
        (TargetState::Unhealthy, Some(REASON_FAILED)),
        "{h:?}"
    );

    tokio::time::sleep(Duration::from_millis(500)).await;
    let health = registry.describe_health().await.unwrap();
    let h = health_of(&health, &starting);
    assert_eq!(
        (h.state, h.reason.as_deref()),
        (TargetState::Unhealthy, Some(REASON_FAILED)),
        "{h:?}"
    );
}

#[tokio::test]
async fn deregistered_targets_drain_for_the_delay_then_vanish() {
    let mut config = LocalTargetRegistryConfig::new(HealthCheck::agent());
    config.deregistration_delay = Duration::from_millis(400);
    let registry = LocalTargetRegistry::new(config);
    let (kept, _h1) = serve(healthy_agent).await;
    let (leaving, _h2) = serve(healthy_agent).await;
    let (returning, _h3) = serve(healthy_agent).await;
    registry
        .register(&[kept.clone(), leaving.clone(), returning.clone()])
        .await
        .unwrap();
    registry
        .deregister(&[leaving.clone(), returning.clone(), refused()])
        .await
        .unwrap();

    let health = registry.describe_health().await.unwrap();
    assert_eq!(
        health.len(),
        3,
        "the unknown target is not listed: {health:?}"
    );
    let h = health_of(&health, &leaving);
    assert_eq!(
        (h.state, h.reason.as_deref()),
        (TargetState::Draining, Some(REASON_DRAINING))
    );
    assert_eq!(health_of(&health, &kept).state, TargetState::Healthy);

    // Registered again while draining: back in, checked like any new target.
    registry
        .register(std::slice::from_ref(&returning))
        .await
        .unwrap();
    let health = registry.describe_health().await.unwrap();
    assert_eq!(
        health_of(&health, &returning).state,
        TargetState::Healthy,
        "{health:?}"
    );

    tokio::time::sleep(Duration::from_millis(450)).await;
    let health = registry.describe_health().await.unwrap();
    let listed: Vec<&Target> = health.iter().map(|h| &h.target).collect();
    assert_eq!(listed.len(), 2, "{health:?}");
    assert!(!listed.contains(&&leaving), "{health:?}");

    // With no delay (the default), a deregistered target is gone at once.
    let immediate = LocalTargetRegistry::with_check(HealthCheck::agent());
    immediate
        .register(std::slice::from_ref(&kept))
        .await
        .unwrap();
    immediate
        .deregister(std::slice::from_ref(&kept))
        .await
        .unwrap();
    assert!(immediate.describe_health().await.unwrap().is_empty());
}

#[tokio::test]
async fn targets_that_are_not_an_ip_and_port_are_refused_whole() {
    let registry = quick_registry(HealthCheck::agent());
    let good = refused();
    for bad in [
        Target {
            id: "localhost".into(),
            port: 8545,
        },
        Target {
            id: "i-0abc".into(),
            port: 8545,
        },
        Target {
            id: "127.0.0.1".into(),
            port: 0,
        },
    ] {
        let result = registry.register(&[good.clone(), bad.clone()]).await;
        assert!(
            matches!(result, Err(RegistryError::InvalidTarget { .. })),
            "{bad}: {result:?}"
        );
        assert!(!result.unwrap_err().is_retryable());
    }
    assert!(
        registry.describe_health().await.unwrap().is_empty(),
        "nothing of a refused call is registered"
    );
}
