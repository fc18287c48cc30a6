//! API Gateway events (REST API payload v1, HTTP API payload v2) run through the real
//! handler: in process through `lambda_http`'s own event decoding, and through the built
//! `rpc-gateway` binary talking to a fake Lambda Runtime API.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

use std::process::Stdio;
use std::time::Duration;

use nodefleet_gateway::{Gateway, HttpUpstream, HttpUpstreamConfig, lambda};
use nodefleet_gateway_core::Policy;
use nodefleet_testkit::{FakeRuntimeApi, RecordingNode};
use serde_json::{Value, json};

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// What each fixture must produce: HTTP status and, when there is a body, its JSON.
fn expectations() -> Vec<(&'static str, u16, Option<Value>)> {
    vec![
        (
            "rest-v1-post.json",
            200,
            Some(json!([
                {"jsonrpc": "2.0", "id": 1, "result": "0x10"},
                {"jsonrpc": "2.0", "id": "two", "error": {"code": -32601, "message": "method \"admin_peers\" is not available"}},
                {"jsonrpc": "2.0", "id": 12345678901234567890u64, "result": []}
            ])),
        ),
        (
            "http-v2-post.json",
            200,
            Some(json!({"jsonrpc": "2.0", "id": 1.5, "result": "0x1"})),
        ),
        (
            "http-v2-post-base64.json",
            200,
            Some(json!({"jsonrpc": "2.0", "id": "b64", "result": "0x10"})),
        ),
        ("rest-v1-notification.json", 204, None),
        ("rest-v1-options.json", 204, None),
        ("http-v2-get.json", 405, None),
    ]
}

#[tokio::test]
async fn fixtures_through_the_handler_in_process() {
    let node = RecordingNode::start().await;
    let upstream = HttpUpstream::new(&node.url(), HttpUpstreamConfig::default()).unwrap();
    let gateway = Gateway::new(Policy::default(), upstream);
    for (name, status, body) in expectations() {
        let request = lambda_http::request::from_str(&fixture(name)).unwrap();
        let response = lambda::respond(&gateway, request).await;
        assert_eq!(response.status().as_u16(), status, "{name}");
        if let Some(want) = body {
            let got: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
            assert_eq!(got, want, "{name}");
        }
    }
    // The 1.5 id is echoed as written, not as a re-encoded float.
    let request = lambda_http::request::from_str(&fixture("http-v2-post.json")).unwrap();
    let response = lambda::respond(&gateway, request).await;
    assert!(
        std::str::from_utf8(response.body().as_ref())
            .unwrap()
            .contains(r#""id":1.5"#)
    );
    // Only allowed methods reached the node.
    assert!(
        node.methods()
            .iter()
            .all(|m| m == "eth_blockNumber" || m == "eth_chainId"),
        "{:?}",
        node.methods()
    );
}

#[tokio::test]
async fn fixtures_through_the_built_binary_and_the_runtime_api() {
    let node = RecordingNode::start().await;
    let runtime = FakeRuntimeApi::start().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rpc-gateway"))
        .envs(runtime.env())
        .env("UPSTREAM_URL", node.url())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    assert!(
        runtime.first_poll(Duration::from_secs(30)).await.is_some(),
        "the function never became ready"
    );
    for (name, status, body) in expectations() {
        let id = runtime.invoke(fixture(name));
        let invocation = runtime
            .outcome(&id, Duration::from_secs(30))
            .await
            .expect(name);
        let payload: Value =
            serde_json::from_str(invocation.outcome.as_ref().expect(name)).unwrap();
        assert_eq!(payload["statusCode"], status, "{name}: {payload}");
        if let Some(want) = body {
            assert_eq!(payload["isBase64Encoded"], false, "{name}");
            let got: Value = serde_json::from_str(payload["body"].as_str().unwrap()).unwrap();
            assert_eq!(got, want, "{name}");
        }
        if status == 204 && name.contains("options") {
            let headers = if payload["multiValueHeaders"].is_object() {
                payload["multiValueHeaders"]["access-control-allow-methods"][0].clone()
            } else {
                payload["headers"]["access-control-allow-methods"].clone()
            };
            assert_eq!(headers, "POST, OPTIONS", "{name}: {payload}");
        }
    }
    child.kill().await.unwrap();
}

#[tokio::test]
async fn a_bad_configuration_fails_at_init_with_a_clear_message() {
    let runtime = FakeRuntimeApi::start().await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_rpc-gateway"))
        .envs(runtime.env())
        .env("UPSTREAM_URL", "https://nlb.internal:8545")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("must start with http://"), "{stderr}");
}
