//! Table tests of the whole request path (`prepare` -> upstream -> `finish`) against a fake
//! node, including every example of the JSON-RPC 2.0 specification.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

use nodefleet_gateway_core::{
    Policy, Reply, UpstreamAnswer, UpstreamFailure, jsonrpc::codes, prepare,
};
use serde_json::{Value, json};

/// A node that implements the specification's example methods and a few Ethereum ones,
/// and records every call it receives.
#[derive(Default)]
struct FakeNode {
    received: Vec<String>,
}

impl FakeNode {
    fn answer(&mut self, body: &str) -> String {
        let request: Value = serde_json::from_str(body).expect("the gateway sends valid JSON");
        let answer_one = |node: &mut FakeNode, call: &Value| -> Option<Value> {
            let method = call["method"].as_str().expect("method").to_owned();
            node.received.push(method.clone());
            let id = call.get("id")?.clone();
            let result = match method.as_str() {
                "subtract" => match &call["params"] {
                    Value::Array(p) => json!(p[0].as_i64()? - p[1].as_i64()?),
                    p => json!(p["minuend"].as_i64()? - p["subtrahend"].as_i64()?),
                },
                "sum" => json!(
                    call["params"]
                        .as_array()?
                        .iter()
                        .filter_map(Value::as_i64)
                        .sum::<i64>()
                ),
                "get_data" => json!(["hello", 5]),
                "eth_blockNumber" => json!("0x10"),
                "eth_chainId" => json!("0x1"),
                "eth_getBalance" => Value::Null,
                _ => {
                    return Some(
                        json!({"jsonrpc":"2.0","id":id,"error":{"code":-32000,"message":"node error"}}),
                    );
                }
            };
            Some(json!({"jsonrpc":"2.0","id":id,"result":result}))
        };
        match request {
            Value::Array(calls) => {
                let answers: Vec<Value> =
                    calls.iter().filter_map(|c| answer_one(self, c)).collect();
                if answers.is_empty() {
                    String::new()
                } else {
                    Value::Array(answers).to_string()
                }
            }
            call => answer_one(self, &call)
                .map(|a| a.to_string())
                .unwrap_or_default(),
        }
    }
}

fn spec_policy() -> Policy {
    Policy::from_toml(
        r#"allow = ["subtract", "sum", "update", "notify_hello", "notify_sum", "get_data"]"#,
    )
    .unwrap()
}

/// Runs `body` through the gateway with `node` as the upstream.
fn run_with(policy: &Policy, body: &str, node: &mut FakeNode) -> Reply {
    let mut exchange = match prepare(body.as_bytes(), policy) {
        Ok(exchange) => exchange,
        Err(reply) => return reply,
    };
    if exchange.needs_head() {
        exchange.resolve_head(Ok(0x10));
    }
    let upstream = exchange.upstream_request().map(|request| {
        let answer = node.answer(&request.body);
        (200u16, answer)
    });
    let upstream = upstream.as_ref().map(|(status, body)| {
        Ok(UpstreamAnswer {
            status: *status,
            body: body.as_bytes(),
        })
    });
    exchange.finish(upstream)
}

fn run(body: &str) -> (u16, Value) {
    let reply = run_with(&spec_policy(), body, &mut FakeNode::default());
    let value = if reply.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&reply.body).unwrap()
    };
    (reply.status, value)
}

fn error_code(v: &Value) -> i64 {
    v["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("no error code in {v}"))
}

#[test]
fn spec_positional_and_named_params() {
    let (status, v) =
        run(r#"{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}"#);
    assert_eq!(
        (status, v),
        (200, json!({"jsonrpc": "2.0", "result": 19, "id": 1}))
    );
    let (_, v) = run(r#"{"jsonrpc": "2.0", "method": "subtract", "params": [23, 42], "id": 2}"#);
    assert_eq!(v, json!({"jsonrpc": "2.0", "result": -19, "id": 2}));
    let (_, v) = run(
        r#"{"jsonrpc": "2.0", "method": "subtract", "params": {"subtrahend": 23, "minuend": 42}, "id": 3}"#,
    );
    assert_eq!(v, json!({"jsonrpc": "2.0", "result": 19, "id": 3}));
    let (_, v) = run(
        r#"{"jsonrpc": "2.0", "method": "subtract", "params": {"minuend": 42, "subtrahend": 23}, "id": 4}"#,
    );
    assert_eq!(v, json!({"jsonrpc": "2.0", "result": 19, "id": 4}));
}

#[test]
fn spec_notifications_get_no_answer() {
    let mut node = FakeNode::default();
    let reply = run_with(
        &spec_policy(),
        r#"{"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}"#,
        &mut node,
    );
    assert_eq!(
        reply,
        Reply {
            status: 204,
            body: String::new()
        }
    );
    assert_eq!(
        node.received,
        ["update"],
        "allowed notifications are forwarded"
    );
    let reply = run_with(
        &spec_policy(),
        r#"{"jsonrpc": "2.0", "method": "foobar"}"#,
        &mut node,
    );
    assert_eq!(
        reply.status, 204,
        "a denied notification is dropped silently"
    );
    assert_eq!(node.received, ["update"]);
}

#[test]
fn spec_errors() {
    let (_, v) = run(r#"{"jsonrpc": "2.0", "method": "foobar", "id": "1"}"#);
    assert_eq!(error_code(&v), -32601);
    assert_eq!(v["id"], "1");
    assert!(v["error"]["message"].as_str().unwrap().contains("foobar"));

    let (status, v) = run(r#"{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]"#);
    assert_eq!(
        (status, error_code(&v), v["id"].clone()),
        (200, -32700, Value::Null)
    );

    let (_, v) = run(r#"{"jsonrpc": "2.0", "method": 1, "params": "bar"}"#);
    assert_eq!((error_code(&v), v["id"].clone()), (-32600, Value::Null));

    let (_, v) = run(r#"[
  {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
  {"jsonrpc": "2.0", "method"
]"#);
    assert_eq!((error_code(&v), v["id"].clone()), (-32700, Value::Null));

    let (_, v) = run("[]");
    assert!(
        v.is_object(),
        "an empty batch gets one error object, not an array"
    );
    assert_eq!((error_code(&v), v["id"].clone()), (-32600, Value::Null));

    let (_, v) = run("[1]");
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(error_code(&v[0]), -32600);

    let (_, v) = run("[1,2,3]");
    let items = v.as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert!(
        items
            .iter()
            .all(|i| error_code(i) == -32600 && i["id"].is_null())
    );
}

#[test]
fn spec_mixed_batch_is_answered_in_request_order() {
    let mut node = FakeNode::default();
    let reply = run_with(
        &spec_policy(),
        r#"[
        {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]},
        {"jsonrpc": "2.0", "method": "subtract", "params": [42,23], "id": "2"},
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
        {"jsonrpc": "2.0", "method": "get_data", "id": "9"}
    ]"#,
        &mut node,
    );
    let v: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(v[0], json!({"jsonrpc": "2.0", "result": 7, "id": "1"}));
    assert_eq!(v[1], json!({"jsonrpc": "2.0", "result": 19, "id": "2"}));
    assert_eq!(
        (error_code(&v[2]), v[2]["id"].clone()),
        (-32600, Value::Null)
    );
    assert_eq!(
        (error_code(&v[3]), v[3]["id"].clone()),
        (-32601, json!("5"))
    );
    assert_eq!(
        v[4],
        json!({"jsonrpc": "2.0", "result": ["hello", 5], "id": "9"})
    );
    assert_eq!(v.as_array().unwrap().len(), 5);
    assert_eq!(
        node.received,
        ["sum", "notify_hello", "subtract", "get_data"]
    );
}

#[test]
fn spec_batch_of_notifications_gets_no_content() {
    let reply = run_with(
        &spec_policy(),
        r#"[{"jsonrpc": "2.0", "method": "notify_sum", "params": [1,2,4]},
            {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}]"#,
        &mut FakeNode::default(),
    );
    assert_eq!(
        reply,
        Reply {
            status: 204,
            body: String::new()
        }
    );
}

#[test]
fn ids_are_echoed_byte_for_byte() {
    for id in [
        "12345678901234567890",
        "1.5",
        "-0",
        "1e400",
        "0.100",
        r#""abc""#,
        r#""\u00e9""#,
        "null",
        "123456789012345678901234567890",
    ] {
        let body =
            format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"eth_blockNumber","params":[]}}"#);
        let reply = run_with(&Policy::default(), &body, &mut FakeNode::default());
        assert_eq!(
            reply.body,
            format!(r#"{{"jsonrpc":"2.0","id":{id},"result":"0x10"}}"#)
        );
        let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"admin_peers"}}"#);
        let reply = run_with(&Policy::default(), &body, &mut FakeNode::default());
        assert!(
            reply
                .body
                .starts_with(&format!(r#"{{"jsonrpc":"2.0","id":{id},"error""#)),
            "{}",
            reply.body
        );
    }
}

#[test]
fn duplicate_client_ids_in_a_batch_are_answered_separately() {
    let reply = run_with(
        &Policy::default(),
        r#"[{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"},{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}]"#,
        &mut FakeNode::default(),
    );
    let v: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(
        v,
        json!([{"jsonrpc":"2.0","id":1,"result":"0x10"},{"jsonrpc":"2.0","id":1,"result":"0x1"}])
    );
}

#[test]
fn eth_accounts_is_answered_locally() {
    let mut node = FakeNode::default();
    let reply = run_with(
        &Policy::default(),
        r#"{"jsonrpc":"2.0","id":7,"method":"eth_accounts","params":[]}"#,
        &mut node,
    );
    assert_eq!(reply.body, r#"{"jsonrpc":"2.0","id":7,"result":[]}"#);
    assert!(node.received.is_empty());
}

#[test]
fn null_results_and_node_errors_pass_through() {
    let (_, v) = (0, {
        let reply = run_with(
            &Policy::default(),
            r#"[{"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":["0x0","latest"]},{"jsonrpc":"2.0","id":2,"method":"eth_call","params":[{}]}]"#,
            &mut FakeNode::default(),
        );
        serde_json::from_str::<Value>(&reply.body).unwrap()
    });
    assert_eq!(v[0], json!({"jsonrpc":"2.0","id":1,"result":null}));
    assert_eq!(
        v[1],
        json!({"jsonrpc":"2.0","id":2,"error":{"code":-32000,"message":"node error"}})
    );
}

#[test]
fn bad_params_for_checked_methods() {
    let (_, v) = run(
        r#"{"jsonrpc":"2.0","id":1,"method":"eth_getLogs","params":[{"fromBlock":"0x0","toBlock":"0x1388"}]}"#,
    );
    assert_eq!(error_code(&v), -32602);
    assert!(v["error"]["message"].as_str().unwrap().contains("5000"));
    let (_, v) =
        run(r#"{"jsonrpc":"2.0","id":1,"method":"eth_sendRawTransaction","params":["nothex"]}"#);
    assert_eq!(error_code(&v), -32602);
}

#[test]
fn get_logs_tags_are_resolved_against_the_head() {
    let policy = Policy::from_toml("[limits]\nmax_get_logs_blocks = 10").unwrap();
    let body = |from: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"eth_getLogs","params":[{{"fromBlock":"{from}","toBlock":"latest"}}]}}"#
        )
    };
    for (from, head, allowed) in [("0x7", 16, true), ("0x6", 16, false), ("0x6", 15, true)] {
        let text = body(from);
        let mut exchange = prepare(text.as_bytes(), &policy).unwrap();
        assert!(exchange.needs_head());
        exchange.resolve_head(Ok(head));
        assert_eq!(
            exchange.upstream_request().is_some(),
            allowed,
            "from {from} head {head}"
        );
    }
    // Without a head, the call is answered with the upstream failure.
    let text = body("0x7");
    let mut exchange = prepare(text.as_bytes(), &policy).unwrap();
    exchange.resolve_head(Err(UpstreamFailure::TimedOut));
    assert!(exchange.upstream_request().is_none());
    let v: Value = serde_json::from_str(&exchange.finish(None).body).unwrap();
    assert_eq!(error_code(&v), codes::UPSTREAM_TIMEOUT);
}

#[test]
fn caps_answer_413_with_one_error_object() {
    let policy = Policy::from_toml("[limits]\nmax_batch_items = 2\nmax_body_bytes = 300").unwrap();
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}"#;
    let reply = run_with(
        &policy,
        &format!("[{call},{call},{call}]"),
        &mut FakeNode::default(),
    );
    assert_eq!(reply.status, 413);
    let v: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!((error_code(&v), v["id"].clone()), (-32600, Value::Null));
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cap of 2 items")
    );
    let reply = run_with(
        &policy,
        &format!("[{call},{call}]"),
        &mut FakeNode::default(),
    );
    assert_eq!(reply.status, 200);

    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":["{}"]}}"#,
        "a".repeat(300)
    );
    let reply = run_with(&policy, &big, &mut FakeNode::default());
    assert_eq!(reply.status, 413);
    assert!(reply.body.contains("300 bytes"));
}

fn finish_with(body: &str, upstream: Result<(u16, &str), UpstreamFailure>) -> Value {
    let exchange = prepare(body.as_bytes(), &Policy::default()).unwrap();
    assert!(exchange.upstream_request().is_some());
    let reply = exchange.finish(Some(upstream.map(|(status, body)| UpstreamAnswer {
        status,
        body: body.as_bytes(),
    })));
    serde_json::from_str(&reply.body).unwrap()
}

const TWO_READS: &str = r#"[{"jsonrpc":"2.0","id":"a","method":"eth_chainId"},{"jsonrpc":"2.0","id":"b","method":"eth_blockNumber"}]"#;

#[test]
fn upstream_failures_become_documented_codes_without_addresses() {
    for (failure, code) in [
        (UpstreamFailure::Unavailable, codes::UPSTREAM_UNAVAILABLE),
        (UpstreamFailure::TimedOut, codes::UPSTREAM_TIMEOUT),
        (
            UpstreamFailure::InvalidResponse { status: 502 },
            codes::UPSTREAM_INVALID_RESPONSE,
        ),
    ] {
        let v = finish_with(TWO_READS, Err(failure));
        assert_eq!((error_code(&v[0]), v[0]["id"].clone()), (code, json!("a")));
        assert_eq!((error_code(&v[1]), v[1]["id"].clone()), (code, json!("b")));
        assert!(!v.to_string().contains("127.0.0.1"));
    }
}

#[test]
fn upstream_garbage_and_partial_answers() {
    for garbage in [
        "",
        "<html>bad gateway</html>",
        "{",
        "[1,2]",
        r#"{"jsonrpc":"2.0","id":0}"#,
        "\u{0}",
    ] {
        let v = finish_with(TWO_READS, Ok((502, garbage)));
        assert_eq!(
            error_code(&v[0]),
            codes::UPSTREAM_INVALID_RESPONSE,
            "{garbage:?}"
        );
        assert!(v[0]["error"]["message"].as_str().unwrap().contains("502"));
    }
    // One answer missing from the batch.
    let v = finish_with(
        TWO_READS,
        Ok((200, r#"[{"jsonrpc":"2.0","id":1,"result":"0x10"}]"#)),
    );
    assert_eq!(error_code(&v[0]), codes::UPSTREAM_MISSING_RESPONSE);
    assert_eq!(v[1], json!({"jsonrpc":"2.0","id":"b","result":"0x10"}));
    // Answers in another order are matched by id.
    let v = finish_with(
        TWO_READS,
        Ok((
            200,
            r#"[{"jsonrpc":"2.0","id":1,"result":"0x10"},{"jsonrpc":"2.0","id":0,"result":"0x1"}]"#,
        )),
    );
    assert_eq!(
        v,
        json!([{"jsonrpc":"2.0","id":"a","result":"0x1"},{"jsonrpc":"2.0","id":"b","result":"0x10"}])
    );
    // A node that refuses the whole batch with one error object: every call gets that error.
    let v = finish_with(
        TWO_READS,
        Ok((
            200,
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32005,"message":"batch too large"}}"#,
        )),
    );
    assert_eq!(v[0]["error"]["code"], -32005);
    assert_eq!(v[1]["error"]["code"], -32005);
    assert_eq!(v[1]["id"], "b");
}

#[test]
fn only_known_reads_are_retryable() {
    let retryable = |body: &str| {
        prepare(body.as_bytes(), &Policy::default())
            .unwrap()
            .upstream_request()
            .unwrap()
            .retryable
    };
    assert!(retryable(TWO_READS));
    assert!(!retryable(
        r#"{"jsonrpc":"2.0","id":1,"method":"eth_sendRawTransaction","params":["0x02"]}"#
    ));
    let policy = Policy::from_toml(r#"allow = ["trace_block"]"#).unwrap();
    let request = prepare(
        br#"{"jsonrpc":"2.0","id":1,"method":"trace_block","params":["latest"]}"#,
        &policy,
    )
    .unwrap()
    .upstream_request()
    .unwrap();
    assert!(
        !request.retryable,
        "operator-added methods have unknown semantics"
    );
}

#[test]
fn upstream_request_rewrites_ids_and_keeps_params_as_written() {
    let body = r#"[{"jsonrpc":"2.0","id":"x","method":"eth_call","params":[{"data":"0x00"},"latest"]},{"jsonrpc":"2.0","method":"eth_chainId"},{"jsonrpc":"2.0","id":1.5,"method":"eth_chainId"}]"#;
    let request = prepare(body.as_bytes(), &Policy::default())
        .unwrap()
        .upstream_request()
        .unwrap();
    assert_eq!(
        request.body,
        r#"[{"jsonrpc":"2.0","id":0,"method":"eth_call","params":[{"data":"0x00"},"latest"]},{"jsonrpc":"2.0","method":"eth_chainId"},{"jsonrpc":"2.0","id":2,"method":"eth_chainId"}]"#
    );
    let single = r#"{"jsonrpc":"2.0","id":"x","method":"eth_chainId"}"#;
    let request = prepare(single.as_bytes(), &Policy::default())
        .unwrap()
        .upstream_request()
        .unwrap();
    assert_eq!(
        request.body,
        r#"{"jsonrpc":"2.0","id":0,"method":"eth_chainId"}"#
    );
}

#[test]
fn log_names_are_distinct_bounded_and_cut() {
    let long = "x".repeat(500);
    let body = format!(
        r#"[{{"jsonrpc":"2.0","id":1,"method":"admin_peers"}},{{"jsonrpc":"2.0","id":2,"method":"admin_peers"}},{{"jsonrpc":"2.0","id":3,"method":"{long}"}},{{"jsonrpc":"2.0","id":4,"method":"eth_chainId"}},{{"jsonrpc":"2.0","id":5,"method":"eth_chainId"}}]"#
    );
    let exchange = prepare(body.as_bytes(), &Policy::default()).unwrap();
    assert_eq!(
        exchange.denied_methods(),
        ["admin_peers".to_owned(), "x".repeat(64)]
    );
    assert_eq!(exchange.methods(16), ["eth_chainId"]);
    let many: Vec<String> = (0..40)
        .map(|i| format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"m{i}"}}"#))
        .collect();
    let body = format!("[{}]", many.join(","));
    assert_eq!(
        prepare(body.as_bytes(), &Policy::default())
            .unwrap()
            .denied_methods()
            .len(),
        16
    );
}
