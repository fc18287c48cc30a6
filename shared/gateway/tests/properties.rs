//! Property tests of the async handler, `Gateway::handle`, over an in-memory recording fake
//! upstream: DESIGN.md invariants 1 (a denied JSON-RPC method never reaches a node, alone or
//! in a batch) and 8 (every input gets a well-formed answer, never a panic), end to end
//! through the head cache and the upstream call.
//!
//! - [`any_http_request_gets_a_well_formed_answer`]: arbitrary HTTP methods and bodies
//!   (random bytes, JSON token soup, generated JSON-RPC batches mixing allowed, denied and
//!   never-exposed methods, escaped method names, notifications and `eth_getLogs` tags), with
//!   a node that answers correctly, answers garbage, or fails: POST gets 200/204/413 with valid
//!   JSON-RPC response(s) (empty for 204, `application/json` otherwise), OPTIONS a CORS 204,
//!   anything else 405; every body the node receives is valid JSON holding only allowed
//!   methods, and none of the denied names in the request.
//! - [`denied_methods_never_reach_the_node`]: batches made only of denied and never-exposed
//!   calls (and notifications of them) reach the node not at all.
//!
//! The response checks duplicate the ones in `nodefleet-gateway-core`'s tests on purpose (test
//! crates share no code here).

#![allow(clippy::unwrap_used)] // a test fails loudly by design

use std::sync::Mutex;

use bytes::Bytes;
use http::{Method, Response, StatusCode, header};
use nodefleet_gateway::{Gateway, Upstream, UpstreamCall, UpstreamError, UpstreamResponse};
use nodefleet_gateway_core::conformance::{
    SentCall, check_upstream_request, elements, response_items,
};
use nodefleet_gateway_core::policy::{DEFAULT_ALLOW, NEVER_EXPOSED};
use nodefleet_gateway_core::{Policy, Reply};
use proptest::prelude::*;
use proptest::sample::select;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 384,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The recording fake node.

/// How the fake node answers.
#[derive(Clone)]
enum Behaviour {
    /// Every call with an id gets a result (`eth_blockNumber` a head block number).
    Correct,
    /// These bytes with this HTTP status.
    Bytes(u16, Vec<u8>),
    /// No answer.
    Fail(UpstreamError),
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Behaviour::Correct => f.write_str("Correct"),
            Behaviour::Bytes(status, bytes) => {
                write!(f, "Bytes({status}, {:?})", String::from_utf8_lossy(bytes))
            }
            Behaviour::Fail(error) => write!(f, "Fail({error:?})"),
        }
    }
}

/// An in-memory node that records every body it receives.
struct RecordingNode {
    behaviour: Behaviour,
    received: Mutex<Vec<Bytes>>,
}

impl RecordingNode {
    fn new(behaviour: Behaviour) -> RecordingNode {
        RecordingNode {
            behaviour,
            received: Mutex::new(Vec::new()),
        }
    }
}

impl Upstream for RecordingNode {
    async fn send(&self, call: UpstreamCall) -> Result<UpstreamResponse, UpstreamError> {
        self.received.lock().unwrap().push(call.body.clone());
        match &self.behaviour {
            Behaviour::Correct => Ok(UpstreamResponse {
                status: 200,
                body: Bytes::from(correct_answer(&call.body)),
            }),
            Behaviour::Bytes(status, bytes) => Ok(UpstreamResponse {
                status: *status,
                body: Bytes::from(bytes.clone()),
            }),
            Behaviour::Fail(error) => Err(error.clone()),
        }
    }
}

/// A correct node's answer: `"0x1"` for every call with an id, a head for `eth_blockNumber`.
fn correct_answer(body: &[u8]) -> String {
    let Ok(text) = std::str::from_utf8(body) else {
        return String::new();
    };
    let Ok((batch, raws)) = elements(text) else {
        return String::new();
    };
    let answers: Vec<String> = raws
        .iter()
        .filter_map(|raw| {
            let call: SentCall<'_> = serde_json::from_str(raw.get()).ok()?;
            let result = if call.method.get() == r#""eth_blockNumber""# {
                r#""0xf4240""#
            } else {
                r#""0x1""#
            };
            Some(format!(
                r#"{{"jsonrpc":"2.0","id":{},"result":{result}}}"#,
                call.id?.get()
            ))
        })
        .collect();
    match (batch, answers.as_slice()) {
        (_, []) => String::new(),
        (false, [one]) => one.clone(),
        _ => format!("[{}]", answers.join(",")),
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies.

/// Names that must never reach a node under the default policy.
fn denied_names() -> Vec<String> {
    let mut names: Vec<String> = NEVER_EXPOSED.iter().map(|p| p.replace('*', "x")).collect();
    names.extend(
        [
            "admin_addPeer",
            "debug_traceTransaction",
            "debug_setHead",
            "personal_unlockAccount",
            "miner_setEtherbase",
            "engine_forkchoiceUpdatedV3",
            "txpool_content",
            "eth_sign",
            "eth_signTypedData_v4",
            "eth_sendTransaction",
            "eth_newFilter",
            "eth_subscribe",
            "trace_block",
            "ETH_CALL",
            "eth_call ",
            " eth_chainId",
            "",
            "subtract",
        ]
        .map(str::to_owned),
    );
    names
}

fn http_method() -> impl Strategy<Value = Method> {
    prop_oneof![
        6 => Just(Method::POST),
        1 => select(vec![
            Method::GET,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
            Method::HEAD,
            Method::PATCH,
            Method::TRACE,
            Method::CONNECT,
            Method::from_bytes(b"POSTX").unwrap(),
            Method::from_bytes(b"post").unwrap(),
        ]),
    ]
}

fn id() -> impl Strategy<Value = Option<String>> {
    prop::option::weighted(
        0.8,
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            select(vec![
                "null",
                "12345678901234567890",
                "1.5",
                "1e400",
                "-0",
                r#""a\"b\\c\u00e9""#,
                r#""""#,
            ])
            .prop_map(str::to_owned),
        ],
    )
}

fn params() -> impl Strategy<Value = Option<String>> {
    prop::option::weighted(
        0.7,
        select(vec![
            "[]",
            r#"["latest",false]"#,
            r#"[{"to":"0x0000000000000000000000000000000000000000","data":"0x"},"latest"]"#,
            r#"[{"fromBlock":"0x0","toBlock":"latest"}]"#,
            r#"[{"fromBlock":"0xf3e58","toBlock":"latest"}]"#,
            r#"[{"fromBlock":"safe","toBlock":"finalized"}]"#,
            r#"[{"fromBlock":"0x1","toBlock":"0x1388"}]"#,
            r#"[{}]"#,
            r#"["0x02f86c"]"#,
            r#"{"a":[1,2,{"b":null}]}"#,
        ])
        .prop_map(str::to_owned),
    )
}

/// A call as JSON text; `allowed_only` draws only default-allowed methods.
fn call(allowed_only: bool) -> impl Strategy<Value = String> {
    let allowed = select(DEFAULT_ALLOW.to_vec()).prop_map(str::to_owned);
    let method = if allowed_only {
        allowed.boxed()
    } else {
        prop_oneof![
            allowed,
            select(denied_names()),
            Just("eth_accounts".to_owned()),
        ]
        .boxed()
    };
    (method, any::<bool>(), id(), params()).prop_map(|(method, escape, id, params)| {
        let mut text = serde_json::to_string(&method).unwrap();
        if escape {
            text = text.replace('_', r"\u005f");
        }
        let mut members = vec![
            r#""jsonrpc":"2.0""#.to_owned(),
            format!(r#""method":{text}"#),
        ];
        if let Some(id) = id {
            members.push(format!(r#""id":{id}"#));
        }
        if let Some(params) = params {
            members.push(format!(r#""params":{params}"#));
        }
        format!("{{{}}}", members.join(","))
    })
}

fn batch_of(item: BoxedStrategy<String>, max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        item.clone(),
        prop::collection::vec(item, 0..=max).prop_map(|items| format!("[{}]", items.join(","))),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let token = select(vec![
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        " ",
        "\"",
        r#""jsonrpc""#,
        r#""2.0""#,
        r#""method""#,
        r#""params""#,
        r#""id""#,
        r#""eth_chainId""#,
        r#""admin_addPeer""#,
        r#""eth_getLogs""#,
        "null",
        "1",
        "1e400",
        "\u{0}",
        "é",
    ]);
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..400),
        2 => prop::collection::vec(token, 0..60).prop_map(|t| t.concat().into_bytes()),
        5 => batch_of(call(false).boxed(), 110).prop_map(String::into_bytes),
    ]
}

fn behaviour() -> impl Strategy<Value = Behaviour> {
    prop_oneof![
        4 => Just(Behaviour::Correct),
        1 => (
            select(vec![200u16, 400, 500, 502, 503]),
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..64),
                select(vec![
                    "",
                    "<html>502</html>",
                    r#"{"jsonrpc":"2.0","id":0,"result":"0x10"}"#,
                    r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"no"}}"#,
                    r#"[{"jsonrpc":"2.0","id":1,"result":"0x1"},{"jsonrpc":"2.0","id":9,"result":1}]"#,
                ])
                .prop_map(|s| s.as_bytes().to_vec()),
            ]
        )
            .prop_map(|(status, bytes)| Behaviour::Bytes(status, bytes)),
        1 => select(vec![
            UpstreamError::ConnectFailed,
            UpstreamError::ConnectionLost,
            UpstreamError::TimedOut,
            UpstreamError::ResponseTooLarge,
            UpstreamError::NoNodeAvailable,
        ])
        .prop_map(Behaviour::Fail),
    ]
}

// ---------------------------------------------------------------------------------------------
// Running the handler.

/// Answers one request with a fresh gateway; returns the response and what the node received.
fn handle(method: &Method, body: &[u8], behaviour: Behaviour) -> (Response<Bytes>, Vec<Bytes>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let gateway = Gateway::new(Policy::default(), RecordingNode::new(behaviour));
    let response = runtime.block_on(gateway.handle(method, body));
    let received = gateway.upstream().received.lock().unwrap().clone();
    (response, received)
}

/// Checks one handled request; `Err` describes the broken property.
fn check(
    method: &Method,
    behaviour: &Behaviour,
    response: &Response<Bytes>,
    received: &[Bytes],
) -> Result<(), String> {
    let policy = Policy::default();
    let status = response.status();
    let text = std::str::from_utf8(response.body())
        .map_err(|_| "the answer body is not UTF-8".to_owned())?;
    let content_type = response.headers().get(header::CONTENT_TYPE);
    match *method {
        Method::OPTIONS => {
            return (status == StatusCode::NO_CONTENT
                && text.is_empty()
                && response
                    .headers()
                    .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
                    .is_some()
                && received.is_empty())
            .then_some(())
            .ok_or_else(|| format!("OPTIONS needs a CORS 204: {response:?}"));
        }
        Method::POST => {}
        _ => {
            let reply = Reply {
                status: 200,
                body: text.to_owned(),
            };
            let items = response_items(&reply)?;
            let ok = status == StatusCode::METHOD_NOT_ALLOWED
                && response.headers().get(header::ALLOW).is_some()
                && items.len() == 1
                && !text.starts_with('[')
                && items[0].id.get() == "null"
                && items[0].error_code() == Some(-32600)
                && received.is_empty();
            return ok
                .then_some(())
                .ok_or_else(|| format!("{method} needs 405 and nothing sent: {response:?}"));
        }
    }
    let reply = Reply {
        status: status.as_u16(),
        body: text.to_owned(),
    };
    let items = response_items(&reply)?;
    let json = content_type.is_some_and(|v| v == "application/json");
    if (status == StatusCode::NO_CONTENT) == json {
        return Err(format!("content-type {content_type:?} with HTTP {status}"));
    }
    if received.len() > 2 {
        return Err(format!("{} upstream calls for one request", received.len()));
    }
    let denied = denied_names();
    for sent in received {
        let sent = std::str::from_utf8(sent)
            .map_err(|_| "the node received a body that is not UTF-8".to_owned())?;
        for call in check_upstream_request(sent, &policy)? {
            let method: String = serde_json::from_str(call.method.get()).unwrap();
            if denied.contains(&method) {
                return Err(format!(
                    "invariant 1: denied {method:?} reached the node: {sent}"
                ));
            }
        }
    }
    if matches!(behaviour, Behaviour::Correct) {
        for item in &items {
            let code = item.error_code().unwrap_or(0);
            if (-32053..=-32050).contains(&code) {
                return Err(format!("a correct node, yet error {code}: {text}"));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_http_request_gets_a_well_formed_answer(
        method in http_method(),
        body in body(),
        behaviour in behaviour(),
    ) {
        let (response, received) = handle(&method, &body, behaviour.clone());
        let checked = check(&method, &behaviour, &response, &received);
        prop_assert!(
            checked.is_ok(),
            "{}\nmethod {method}, node {behaviour:?}\nbody: {:?}",
            checked.err().unwrap_or_default(),
            String::from_utf8_lossy(&body)
        );
    }

    #[test]
    fn denied_methods_never_reach_the_node(
        calls in prop::collection::vec(
            (select(denied_names()), any::<bool>(), id(), params()),
            1..=100,
        ),
        allowed in prop::collection::vec(call(true), 0..3),
    ) {
        let mut items: Vec<String> = calls
            .into_iter()
            .map(|(method, escape, id, params)| {
                let mut text = serde_json::to_string(&method).unwrap();
                if escape {
                    text = text.replace('_', r"\u005f");
                }
                let id = id.map(|id| format!(r#","id":{id}"#)).unwrap_or_default();
                let params = params.map(|p| format!(r#","params":{p}"#)).unwrap_or_default();
                format!(r#"{{"jsonrpc":"2.0","method":{text}{id}{params}}}"#)
            })
            .collect();
        let only_denied = allowed.is_empty();
        // A few allowed calls in the mix must not drag denied ones along.
        items.truncate(100 - allowed.len());
        items.extend(allowed);
        let body = format!("[{}]", items.join(","));
        let (response, received) = handle(&Method::POST, body.as_bytes(), Behaviour::Correct);
        let checked = check(&Method::POST, &Behaviour::Correct, &response, &received);
        prop_assert!(checked.is_ok(), "{}\nbody: {body}", checked.err().unwrap_or_default());
        if only_denied {
            prop_assert!(received.is_empty(), "denied calls reached the node: {:?}", received);
        }
    }
}
