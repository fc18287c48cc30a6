//! Property tests of the gateway's pure request path (`prepare` -> `resolve_head` ->
//! `upstream_request` -> `finish`), for DESIGN.md invariants 1 (a denied method never
//! reaches a node) and 8 (every input gets a well-formed answer, never a panic).
//!
//! - [`any_body_gets_a_well_formed_answer`]: arbitrary bytes, JSON token soup and mangled
//!   requests as the body: HTTP 200/204/413, 204 empty, anything else valid JSON-RPC
//!   response(s); the upstream request is valid JSON with only allowed methods.
//! - [`generated_requests_are_answered_item_by_item`]: JSON-RPC-ish requests (single and
//!   batches of 0..120 items mixing allowed, denied, never-exposed and local methods,
//!   notifications, invalid objects, exotic ids) against a node that answers correctly but in
//!   reverse order: every answer matches a model of the rules, in request order, ids echoed
//!   byte for byte, each forwarded call's result is its own; the node receives exactly the
//!   allowed calls (invariant 1); notification-only requests get 204.
//! - [`upstream_answers_never_break_the_reply`]: arbitrary and near-miss node answers (and
//!   node failures): each forwarded call gets the node's result, the node's error, or a
//!   gateway error in -32050..=-32053; local answers are unaffected.
//! - [`malformed_upstream_error_objects_are_not_passed_through`]: a node's `error` member
//!   that is not a JSON-RPC error object (no integer `code`, no string `message`) must not
//!   reach the client as if it were one.
//! - [`get_logs_ranges_are_capped_for_any_bounds_and_head`]: `eth_getLogs` bounds and head
//!   anywhere in `u64`: no panic, forwarded exactly when the range is within the cap.
//!
//! The checks are independent of the gateway's code: an oracle of the policy and params rules
//! written from DESIGN.md and issue 2, and a response checker that validates JSON grammar
//! without a nesting limit (ids such as `1e400` and deeply nested results are valid JSON that
//! `serde_json::Value` would refuse). Failure persistence is off so a failing run writes no
//! files; a minimal failing input shrunk by proptest belongs in a table test.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

use nodefleet_gateway_core::conformance::{
    ResponseObject, SentCall, TIGHT_POLICY, check_upstream_request, elements, response_items,
};
use nodefleet_gateway_core::policy::{DEFAULT_ALLOW, NEVER_EXPOSED};
use nodefleet_gateway_core::{Policy, Reply, UpstreamAnswer, UpstreamFailure, prepare};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::value::RawValue;

/// Head block the fake node reports for `eth_getLogs` tags.
const HEAD: u64 = 1_000_000;
/// The default `eth_getLogs` cap and batch cap (DESIGN.md / issue 2).
const LOGS_CAP: u64 = 5_000;
const BATCH_CAP: usize = 100;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 384,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The model: generated request items and what the gateway must answer for each.

/// One element of a generated request.
#[derive(Debug, Clone)]
struct GenItem {
    kind: Kind,
    /// Raw JSON text of the `id` member; `None` leaves the member out (a notification).
    id: Option<String>,
    /// Writes the members in another order.
    reorder: bool,
}

#[derive(Debug, Clone)]
enum Kind {
    /// A well-formed call.
    Call {
        method: String,
        /// Writes `_` in the method name as `\u005f` (same name once unescaped).
        escape: bool,
        params: Params,
    },
    /// `jsonrpc` other than `"2.0"` (raw text), or absent.
    BadVersion(Option<String>),
    /// `method` not a string (raw text), or absent.
    BadMethod(Option<String>),
    /// `params` neither array nor object (raw text).
    BadParams(String),
    /// `id` neither string, number nor null (raw text); the item's `id` is not used.
    BadId(String),
    /// Not an object at all (raw text).
    NotObject(String),
}

#[derive(Debug, Clone)]
enum Params {
    Absent,
    /// `[<item index>,<raw>]`: unique per item, so a result can be traced to its call.
    Tagged(String),
    /// Exactly this text.
    Raw(String),
    /// One `eth_getLogs` filter.
    Logs(LogFilter),
}

/// What one item must produce, in request order.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// Answered with this result (raw text).
    Result { id: String, result: String },
    /// Answered with this error code.
    Error { id: String, code: i64 },
    /// Sent to the node; answered from the node's answer when it has an id.
    Forward {
        id: Option<String>,
        method: String,
        params: Option<String>,
    },
    /// No answer and nothing sent.
    Nothing,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Class {
    Allow,
    Accounts,
    Deny,
}

/// The default policy as DESIGN.md states it: deny by default, exact names, `eth_accounts`
/// answered locally.
fn oracle_class(method: &str) -> Class {
    if method == "eth_accounts" {
        Class::Accounts
    } else if DEFAULT_ALLOW.contains(&method) {
        Class::Allow
    } else {
        Class::Deny
    }
}

/// A block bound of an `eth_getLogs` filter.
#[derive(Debug, Clone)]
enum Bound {
    Absent,
    Null,
    Number(u64),
    Tag(&'static str),
}

impl Bound {
    fn resolve(&self, head: u64) -> u64 {
        match self {
            Bound::Absent | Bound::Null => head,
            Bound::Number(n) => *n,
            Bound::Tag("earliest") => 0,
            Bound::Tag(_) => head,
        }
    }

    fn is_given(&self) -> bool {
        !matches!(self, Bound::Absent | Bound::Null)
    }

    fn member(&self, name: &str) -> Option<String> {
        match self {
            Bound::Absent => None,
            Bound::Null => Some(format!(r#""{name}":null"#)),
            Bound::Number(n) => Some(format!(r#""{name}":"0x{n:x}""#)),
            Bound::Tag(tag) => Some(format!(r#""{name}":"{tag}""#)),
        }
    }
}

#[derive(Debug, Clone)]
struct LogFilter {
    from: Bound,
    to: Bound,
    block_hash: bool,
}

impl LogFilter {
    fn params(&self) -> String {
        let mut members: Vec<String> = [self.from.member("fromBlock"), self.to.member("toBlock")]
            .into_iter()
            .flatten()
            .collect();
        if self.block_hash {
            members.push(
                r#""blockHash":"0x88e96d4537bea4d9c05d12549907b32561d3bf31f45aae734cdc119f13406cb6""#
                    .to_owned(),
            );
        }
        members.push(r#""address":"0x0000000000000000000000000000000000000000""#.to_owned());
        format!("[{{{}}}]", members.join(","))
    }

    /// The rule of issue 2: a block hash alone passes; otherwise the range, with tags at the
    /// head, is at most `cap` blocks (computed without overflow).
    fn passes(&self, head: u64, cap: u64) -> bool {
        if self.block_hash {
            return !self.from.is_given() && !self.to.is_given();
        }
        let (from, to) = (
            u128::from(self.from.resolve(head)),
            u128::from(self.to.resolve(head)),
        );
        let blocks = if to >= from { to - from + 1 } else { 0 };
        blocks <= u128::from(cap)
    }
}

impl GenItem {
    fn method_text(method: &str, escape: bool) -> String {
        let text = serde_json::to_string(method).unwrap();
        if escape {
            text.replace('_', r"\u005f")
        } else {
            text
        }
    }

    fn params_text(params: &Params, index: usize) -> Option<String> {
        match params {
            Params::Absent => None,
            Params::Tagged(raw) => Some(format!("[{index},{raw}]")),
            Params::Raw(raw) => Some(raw.clone()),
            Params::Logs(filter) => Some(filter.params()),
        }
    }

    /// The item as JSON text; `index` is its position in the request.
    fn render(&self, index: usize) -> String {
        let mut members: Vec<String> = Vec::new();
        let version = r#""jsonrpc":"2.0""#.to_owned();
        match &self.kind {
            Kind::NotObject(raw) => return raw.clone(),
            Kind::Call {
                method,
                escape,
                params,
            } => {
                members.push(version);
                members.push(format!(
                    r#""method":{}"#,
                    Self::method_text(method, *escape)
                ));
                if let Some(params) = Self::params_text(params, index) {
                    members.push(format!(r#""params":{params}"#));
                }
            }
            Kind::BadVersion(raw) => {
                if let Some(raw) = raw {
                    members.push(format!(r#""jsonrpc":{raw}"#));
                }
                members.push(r#""method":"eth_chainId""#.to_owned());
            }
            Kind::BadMethod(raw) => {
                members.push(version);
                if let Some(raw) = raw {
                    members.push(format!(r#""method":{raw}"#));
                }
            }
            Kind::BadParams(raw) => {
                members.push(version);
                members.push(r#""method":"eth_chainId""#.to_owned());
                members.push(format!(r#""params":{raw}"#));
            }
            Kind::BadId(raw) => {
                members.push(version);
                members.push(r#""method":"eth_chainId""#.to_owned());
                members.push(format!(r#""id":{raw}"#));
            }
        }
        if let (Some(id), false) = (&self.id, matches!(self.kind, Kind::BadId(_))) {
            members.insert(1, format!(r#""id":{id}"#));
        }
        if self.reorder {
            members.reverse();
        }
        format!("{{{}}}", members.join(","))
    }

    /// What the gateway must do with this item (head known, default policy).
    fn expect(&self, index: usize, head: u64) -> Expect {
        let id_or_null = || self.id.clone().unwrap_or_else(|| "null".to_owned());
        let invalid = |id: String| Expect::Error { id, code: -32600 };
        let (method, escape, params) = match &self.kind {
            Kind::NotObject(_) | Kind::BadId(_) => return invalid("null".to_owned()),
            Kind::BadVersion(_) | Kind::BadMethod(_) | Kind::BadParams(_) => {
                return invalid(id_or_null());
            }
            Kind::Call {
                method,
                escape,
                params,
            } => (method, *escape, params),
        };
        let params_text = Self::params_text(params, index);
        let answer_or_nothing = |expect: Expect| match &self.id {
            Some(_) => expect,
            None => Expect::Nothing,
        };
        let error = |code| {
            answer_or_nothing(Expect::Error {
                id: id_or_null(),
                code,
            })
        };
        match oracle_class(method) {
            Class::Deny => error(-32601),
            Class::Accounts => match params_text.as_deref() {
                None => answer_or_nothing(Expect::Result {
                    id: id_or_null(),
                    result: "[]".to_owned(),
                }),
                Some(p)
                    if serde_json::from_str::<Vec<&RawValue>>(p).is_ok_and(|v| v.is_empty()) =>
                {
                    answer_or_nothing(Expect::Result {
                        id: id_or_null(),
                        result: "[]".to_owned(),
                    })
                }
                Some(_) => error(-32602),
            },
            Class::Allow => {
                let passes = match (method.as_str(), params) {
                    ("eth_getLogs", Params::Logs(filter)) => filter.passes(head, LOGS_CAP),
                    ("eth_getLogs", _) => false,
                    ("eth_sendRawTransaction", Params::Raw(raw)) => is_one_hex_string(raw),
                    ("eth_sendRawTransaction", _) => false,
                    _ => true,
                };
                if passes {
                    Expect::Forward {
                        id: self.id.clone(),
                        method: Self::method_text(method, escape),
                        params: params_text,
                    }
                } else {
                    error(-32602)
                }
            }
        }
    }
}

fn is_one_hex_string(raw: &str) -> bool {
    serde_json::from_str::<Vec<String>>(raw).is_ok_and(|items| {
        items.len() == 1
            && items[0]
                .strip_prefix("0x")
                .is_some_and(|hex| hex.len() >= 2 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
    })
}

/// A generated request: its items, and whether it is a batch (`false` needs one item).
#[derive(Debug, Clone)]
struct GenRequest {
    items: Vec<GenItem>,
    batch: bool,
    /// Separator between batch items (whitespace must not matter).
    separator: &'static str,
}

impl GenRequest {
    fn body(&self) -> String {
        if !self.batch {
            return self.items[0].render(0);
        }
        let items: Vec<String> = self
            .items
            .iter()
            .enumerate()
            .map(|(i, item)| item.render(i))
            .collect();
        format!("[{}]", items.join(self.separator))
    }

    fn expectations(&self, head: u64) -> Vec<Expect> {
        self.items
            .iter()
            .enumerate()
            .map(|(i, item)| item.expect(i, head))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies.

fn id_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("null".to_owned()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        (0u8..4).prop_map(|n| n.to_string()),
        select(vec![
            "12345678901234567890",
            "123456789012345678901234567890123456789",
            "-0",
            "1.5",
            "1.50",
            "1e400",
            "1E+2",
            "-1.0e-5",
            "0.000001",
            r#""""#,
            r#""1""#,
            r#""a\"b\\c\u00e9\n\t""#,
            r#""\ud83d\ude00""#,
            "\"ü日本\"",
        ])
        .prop_map(str::to_owned),
        "[ -~é😀]{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap()),
    ]
}

fn json_value_strategy() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        select(vec!["1.5", "1e400", "-0", "12345678901234567890123"]).prop_map(str::to_owned),
        "[ -~é]{0,8}".prop_map(|s| serde_json::to_string(&s).unwrap()),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec(("[a-z]{1,4}", inner), 0..4).prop_map(|v| {
                let members: Vec<String> = v
                    .into_iter()
                    .map(|(k, v)| format!(r#""{k}":{v}"#))
                    .collect();
                format!("{{{}}}", members.join(","))
            }),
        ]
    })
}

/// Method names that must be denied: never-exposed ones, near misses of allowed ones, and
/// names nobody allowed.
fn denied_method_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec![
            "admin_addPeer",
            "admin_nodeInfo",
            "debug_traceTransaction",
            "debug_setHead",
            "personal_unlockAccount",
            "personal_sign",
            "miner_start",
            "engine_forkchoiceUpdatedV3",
            "txpool_content",
            "clique_propose",
            "db_putString",
            "les_serverInfo",
            "shh_post",
            "testing_buildBlockV1",
            "rpc_modules",
            "eth_sign",
            "eth_signTransaction",
            "eth_signTypedData_v4",
            "eth_sendTransaction",
            "eth_newFilter",
            "eth_getFilterChanges",
            "eth_subscribe",
            "trace_block",
            "ETH_CALL",
            "eth_Call",
            "eth_call ",
            " eth_chainId",
            "eth_chainId\n",
            "eth_blockNumberX",
            "",
            "eth_",
            "eth_accountsX",
        ])
        .prop_map(str::to_owned),
        "[a-z]{1,8}_[a-zA-Z]{1,14}",
        select(NEVER_EXPOSED.to_vec()).prop_map(|p| p.replace('*', "x")),
    ]
}

fn filter_strategy(number: BoxedStrategy<u64>) -> impl Strategy<Value = LogFilter> {
    let bound = prop_oneof![
        1 => Just(Bound::Absent),
        1 => Just(Bound::Null),
        4 => number.prop_map(Bound::Number),
        2 => select(vec!["latest", "safe", "finalized", "pending", "earliest"])
            .prop_map(Bound::Tag),
    ];
    (bound.clone(), bound, prop::bool::weighted(0.15)).prop_map(|(from, to, block_hash)| {
        LogFilter {
            from,
            to,
            block_hash,
        }
    })
}

/// Block numbers around the head and the cap (never near `u64::MAX`, see the last property).
fn modest_block() -> BoxedStrategy<u64> {
    prop_oneof![
        0..2 * HEAD,
        (HEAD - 2 * LOGS_CAP)..=HEAD + 10,
        select(vec![
            0,
            1,
            LOGS_CAP - 1,
            LOGS_CAP,
            LOGS_CAP + 1,
            HEAD - LOGS_CAP,
            HEAD - LOGS_CAP + 1
        ]),
    ]
    .boxed()
}

fn call_strategy() -> impl Strategy<Value = Kind> {
    let plain_allowed: Vec<&str> = DEFAULT_ALLOW
        .iter()
        .copied()
        .filter(|m| !matches!(*m, "eth_getLogs" | "eth_sendRawTransaction"))
        .collect();
    let params = prop_oneof![
        1 => Just(Params::Absent),
        4 => json_value_strategy().prop_map(Params::Tagged),
    ];
    let call = |method: String, escape: bool, params: Params| Kind::Call {
        method,
        escape,
        params,
    };
    prop_oneof![
        6 => (select(plain_allowed), any::<bool>(), params.clone())
            .prop_map(move |(m, e, p)| call(m.to_owned(), e, p)),
        4 => (denied_method_strategy(), any::<bool>(), params)
            .prop_map(move |(m, e, p)| call(m, e, p)),
        2 => (filter_strategy(modest_block()), any::<bool>())
            .prop_map(move |(f, e)| call("eth_getLogs".to_owned(), e, Params::Logs(f))),
        1 => (
            prop_oneof![
                "0x[0-9a-f]{2,40}".prop_map(|h| format!(r#"["{h}"]"#)),
                select(vec![r#"[]"#, r#"["0x"]"#, r#"["02f8"]"#, r#"["0xzz"]"#, r#"[1]"#,
                            r#"["0x02","0x03"]"#, r#"{}"#]).prop_map(str::to_owned),
            ],
            any::<bool>()
        )
            .prop_map(move |(p, e)| call("eth_sendRawTransaction".to_owned(), e, Params::Raw(p))),
        1 => select(vec![None, Some("[]"), Some("[ ]"), Some("[1]"), Some("{}")])
            .prop_map(move |p| call(
                "eth_accounts".to_owned(),
                false,
                p.map_or(Params::Absent, |p| Params::Raw(p.to_owned())),
            )),
    ]
}

fn kind_strategy() -> impl Strategy<Value = Kind> {
    prop_oneof![
        12 => call_strategy(),
        1 => select(vec![None, Some(r#""1.0""#), Some(r#""2.0 ""#), Some("2.0"), Some("null"),
                         Some(r#""2""#)])
            .prop_map(|v| Kind::BadVersion(v.map(str::to_owned))),
        1 => select(vec![None, Some("1"), Some("null"), Some(r#"["eth_chainId"]"#),
                         Some(r#"{"name":"eth_chainId"}"#), Some("true")])
            .prop_map(|v| Kind::BadMethod(v.map(str::to_owned))),
        1 => select(vec![r#""bar""#, "1", "null", "true"])
            .prop_map(|v| Kind::BadParams(v.to_owned())),
        1 => select(vec!["{}", "[1]", "true", "false", r#"{"id":1}"#])
            .prop_map(|v| Kind::BadId(v.to_owned())),
        1 => select(vec!["1", r#""x""#, "null", "[]", "[1]", "true", "-0.5"])
            .prop_map(|v| Kind::NotObject(v.to_owned())),
    ]
}

fn item_strategy() -> impl Strategy<Value = GenItem> {
    (
        kind_strategy(),
        prop::option::weighted(0.8, id_strategy()),
        any::<bool>(),
    )
        .prop_map(|(kind, id, reorder)| GenItem { kind, id, reorder })
}

fn request_strategy(max_items: usize) -> impl Strategy<Value = GenRequest> {
    let separator = select(vec![",", ", ", ",\n  "]);
    prop_oneof![
        // A body that is not an object is a body-level error, covered by the table tests.
        (
            item_strategy().prop_filter("a single request is an object", |item| {
                !matches!(item.kind, Kind::NotObject(_))
            }),
            separator.clone()
        )
            .prop_map(|(item, separator)| GenRequest {
                items: vec![item],
                batch: false,
                separator,
            }),
        (
            prop::collection::vec(item_strategy(), 0..=max_items),
            separator
        )
            .prop_map(|(items, separator)| GenRequest {
                items,
                batch: true,
                separator,
            }),
    ]
}

/// Bytes that often look like JSON-RPC: tokens glued at random.
fn token_soup() -> impl Strategy<Value = Vec<u8>> {
    let token = select(vec![
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        " ",
        "\"",
        "\\",
        r#""jsonrpc""#,
        r#""2.0""#,
        r#""method""#,
        r#""params""#,
        r#""id""#,
        r#""eth_chainId""#,
        r#""eth_getLogs""#,
        r#""admin_addPeer""#,
        r#""eth_accounts""#,
        r#""fromBlock""#,
        r#""toBlock""#,
        r#""latest""#,
        r#""0x0""#,
        r#""0xffffffffffffffff""#,
        "null",
        "true",
        "1",
        "-0",
        "1e400",
        "1.5",
        r"\u005f",
        "\u{0}",
        "\u{7f}",
        "é",
    ]);
    prop::collection::vec(token, 0..80).prop_map(|tokens| tokens.concat().into_bytes())
}

/// A generated request, then cut short, extended or with one byte replaced.
fn mangled_request() -> impl Strategy<Value = Vec<u8>> {
    (
        request_strategy(8),
        any::<prop::sample::Index>(),
        any::<u8>(),
        0u8..3,
    )
        .prop_map(|(request, at, byte, how)| {
            let mut body = request.body().into_bytes();
            if body.is_empty() {
                return body;
            }
            let at = at.index(body.len());
            match how {
                0 => body.truncate(at),
                1 => body[at] = byte,
                _ => body.insert(at, byte),
            }
            body
        })
}

// ---------------------------------------------------------------------------------------------
// Running the request path.

/// What the fake node does with the upstream request.
#[derive(Clone)]
enum Node {
    /// Answers every call with an id with `[<method as sent>,<params as sent or null>]`, in
    /// reverse order (a batch answer's order is not guaranteed).
    Echo,
    /// Answers with these bytes (HTTP 200).
    Bytes(Vec<u8>),
    /// Gives no answer.
    Fail(UpstreamFailure),
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Node::Echo => f.write_str("Echo"),
            Node::Bytes(bytes) => write!(f, "Bytes({:?})", String::from_utf8_lossy(bytes)),
            Node::Fail(failure) => write!(f, "Fail({failure:?})"),
        }
    }
}

/// The outcome of one request.
struct Run {
    reply: Reply,
    /// The upstream request's body, when one was sent.
    upstream: Option<String>,
    /// The node's answer, when it gave one.
    answer: Option<Vec<u8>>,
}

fn run(body: &[u8], policy: &Policy, head: u64, node: &Node) -> Run {
    let mut exchange = match prepare(body, policy) {
        Ok(exchange) => exchange,
        Err(reply) => {
            return Run {
                reply,
                upstream: None,
                answer: None,
            };
        }
    };
    if exchange.needs_head() {
        exchange.resolve_head(Ok(head));
    }
    assert!(!exchange.needs_head(), "the head was resolved");
    let Some(request) = exchange.upstream_request() else {
        return Run {
            reply: exchange.finish(None),
            upstream: None,
            answer: None,
        };
    };
    let (answer, reply) = match node {
        Node::Echo => {
            let answer = echo_answer(&request.body).into_bytes();
            let reply = exchange.finish(Some(Ok(UpstreamAnswer {
                status: 200,
                body: &answer,
            })));
            (Some(answer), reply)
        }
        Node::Bytes(bytes) => {
            let reply = exchange.finish(Some(Ok(UpstreamAnswer {
                status: 200,
                body: bytes,
            })));
            (Some(bytes.clone()), reply)
        }
        Node::Fail(failure) => (None, exchange.finish(Some(Err(*failure)))),
    };
    Run {
        reply,
        upstream: Some(request.body),
        answer,
    }
}

/// The echoing node's answer to an upstream request (empty when nothing has an id).
fn echo_answer(request: &str) -> String {
    let (batch, raws) = elements(request).unwrap();
    let mut answers: Vec<String> = raws
        .iter()
        .filter_map(|raw| {
            let call: SentCall<'_> = serde_json::from_str(raw.get()).ok()?;
            let params = call.params.map_or("null", RawValue::get);
            Some(format!(
                r#"{{"jsonrpc":"2.0","id":{},"result":[{},{params}]}}"#,
                call.id?.get(),
                call.method.get()
            ))
        })
        .collect();
    answers.reverse();
    match (batch, answers.as_slice()) {
        (_, []) => String::new(),
        (false, [one]) => one.clone(),
        _ => format!("[{}]", answers.join(",")),
    }
}

/// Checks the answer and the upstream request for any input; returns the response objects.
fn check_well_formed<'r>(run: &'r Run, policy: &Policy) -> Result<Vec<ResponseObject<'r>>, String> {
    let items = response_items(&run.reply)?;
    if let Some(upstream) = &run.upstream {
        check_upstream_request(upstream, policy)?;
    }
    Ok(items)
}

/// Compares a reply with the model, item by item. `forwarded` says how a forwarded call's
/// answer must look.
fn check_against_model(
    request: &GenRequest,
    run: &Run,
    items: &[ResponseObject<'_>],
    forwarded: &dyn Fn(&Expect, &ResponseObject<'_>) -> Result<(), String>,
) -> Result<(), String> {
    let reply = &run.reply;
    if request.batch && request.items.is_empty() {
        let ok = reply.status == 200
            && !reply.body.starts_with('[')
            && items.len() == 1
            && items[0].id.get() == "null"
            && items[0].error_code() == Some(-32600);
        return ok
            .then_some(())
            .ok_or_else(|| format!("[] needs one -32600 error object: {reply:?}"));
    }
    if request.items.len() > BATCH_CAP {
        return (reply.status == 413 && run.upstream.is_none())
            .then_some(())
            .ok_or_else(|| format!("a batch over the cap needs 413: {reply:?}"));
    }
    let expected = request.expectations(HEAD);
    let answered: Vec<&Expect> = expected
        .iter()
        .filter(|e| match e {
            Expect::Nothing => false,
            Expect::Forward { id, .. } => id.is_some(),
            _ => true,
        })
        .collect();
    if answered.is_empty() {
        return (reply.status == 204)
            .then_some(())
            .ok_or_else(|| format!("nothing to answer needs 204: {reply:?}"));
    }
    if reply.status != 200 {
        return Err(format!("expected 200: {reply:?}"));
    }
    if request.batch != reply.body.starts_with('[') {
        return Err(format!(
            "batch {} answered as {}",
            request.batch, reply.body
        ));
    }
    if answered.len() != items.len() {
        return Err(format!(
            "expected {} answers, got {}: {}",
            answered.len(),
            items.len(),
            reply.body
        ));
    }
    for (position, (expect, item)) in answered.into_iter().zip(items).enumerate() {
        let context = || format!("answer {position}: expected {expect:?}, got {}", raw(item));
        let want_id = match expect {
            Expect::Result { id, .. } | Expect::Error { id, .. } => id.as_str(),
            Expect::Forward { id, .. } => id.as_deref().unwrap_or("null"),
            Expect::Nothing => unreachable!("filtered out"),
        };
        if item.id.get() != want_id {
            return Err(format!("id not echoed byte for byte: {}", context()));
        }
        match expect {
            Expect::Result { result, .. } => {
                if item.result.map(RawValue::get) != Some(result.as_str()) {
                    return Err(context());
                }
            }
            Expect::Error { code, .. } => {
                if item.error_code() != Some(*code) {
                    return Err(context());
                }
            }
            Expect::Forward { .. } => {
                forwarded(expect, item).map_err(|e| format!("{e}; {}", context()))?
            }
            Expect::Nothing => {}
        }
    }
    Ok(())
}

fn raw(item: &ResponseObject<'_>) -> String {
    format!(
        "id {} result {:?} error {:?}",
        item.id.get(),
        item.result.map(RawValue::get),
        item.error.map(RawValue::get)
    )
}

/// The calls the model says reach the node, in order: `(method as written, params, has id)`.
fn expected_upstream(request: &GenRequest) -> Vec<(String, Option<String>, bool)> {
    if request.items.is_empty() || request.items.len() > BATCH_CAP {
        return Vec::new();
    }
    request
        .expectations(HEAD)
        .into_iter()
        .filter_map(|e| match e {
            Expect::Forward { id, method, params } => Some((method, params, id.is_some())),
            _ => None,
        })
        .collect()
}

fn sent_calls(upstream: Option<&str>) -> Vec<(String, Option<String>, bool)> {
    let Some(upstream) = upstream else {
        return Vec::new();
    };
    let (_, raws) = elements(upstream).unwrap();
    raws.iter()
        .map(|raw| {
            let call: SentCall<'_> = serde_json::from_str(raw.get()).unwrap();
            (
                call.method.get().to_owned(),
                call.params.map(|p| p.get().to_owned()),
                call.id.is_some(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Properties.

proptest! {
    #![proptest_config(config())]

    /// (a) Any byte string as a body gets a well-formed answer and never a panic.
    #[test]
    fn any_body_gets_a_well_formed_answer(
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..600),
            token_soup(),
            mangled_request(),
        ],
        tight in any::<bool>(),
    ) {
        let policy = if tight { tight_policy() } else { Policy::default() };
        let run = run(&body, &policy, HEAD, &Node::Echo);
        let items = check_well_formed(&run, &policy);
        prop_assert!(items.is_ok(), "{}\nbody: {:?}", items.err().unwrap_or_default(),
            String::from_utf8_lossy(&body));
        let items = items.unwrap_or_default();
        // The echoing node answers everything: no item carries an upstream error.
        for item in &items {
            let code = item.error_code().unwrap_or(0);
            prop_assert!(!(-32053..=-32050).contains(&code), "{}", run.reply.body);
        }
    }

    /// (b) Generated requests against a correct node are answered item by item, as the model
    /// says, and only the allowed calls reach the node.
    #[test]
    fn generated_requests_are_answered_item_by_item(request in request_strategy(120)) {
        let policy = Policy::default();
        let body = request.body();
        let run = run(body.as_bytes(), &policy, HEAD, &Node::Echo);
        let items = check_well_formed(&run, &policy);
        prop_assert!(items.is_ok(), "{}\nbody: {body}", items.err().unwrap_or_default());
        let items = items.unwrap_or_default();
        let same_result = |expect: &Expect, item: &ResponseObject<'_>| {
            let Expect::Forward { method, params, .. } = expect else { unreachable!() };
            let want = format!("[{method},{}]", params.as_deref().unwrap_or("null"));
            (item.result.map(RawValue::get) == Some(want.as_str()))
                .then_some(())
                .ok_or_else(|| "the forwarded call did not get its own result".to_owned())
        };
        let checked = check_against_model(&request, &run, &items, &same_result);
        prop_assert!(checked.is_ok(), "{}\nbody: {body}", checked.err().unwrap_or_default());
        // Invariant 1, and nothing allowed is lost: the node sees exactly the allowed calls.
        let sent = sent_calls(run.upstream.as_deref());
        prop_assert_eq!(sent, expected_upstream(&request), "body: {}", body);
    }

    /// (c) Whatever the node answers (or if it fails), every forwarded call gets the node's
    /// result, the node's error, or a gateway error in -32050..=-32053; the rest is unchanged.
    #[test]
    fn upstream_answers_never_break_the_reply(
        request in request_strategy(12),
        node in node_strategy(false),
    ) {
        check_upstream_answer(&request, &node)?;
    }

    /// (c') A node's `error` member that is not a JSON-RPC error object (missing or non-integer
    /// `code`, missing or non-string `message`) must not reach the client as one.
    #[test]
    fn malformed_upstream_error_objects_are_not_passed_through(
        request in request_strategy(12),
        node in node_strategy(true),
    ) {
        check_upstream_answer(&request, &node)?;
    }

}

proptest! {
    // Single-call cases are cheap; more of them make the rare edge pairs (a range of exactly
    // 2^64 blocks) show up on every run.
    #![proptest_config(ProptestConfig { cases: 2048, ..config() })]

    /// (d) `eth_getLogs` with bounds and a head anywhere in `u64`: never a panic; forwarded
    /// exactly when the range is within the cap, else -32602.
    #[test]
    fn get_logs_ranges_are_capped_for_any_bounds_and_head(
        filter in filter_strategy(extreme_block()),
        head in extreme_block(),
    ) {
        let policy = Policy::default();
        let params = filter.params();
        let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"eth_getLogs","params":{params}}}"#);
        let run = run(body.as_bytes(), &policy, head, &Node::Echo);
        let items = check_well_formed(&run, &policy);
        prop_assert!(items.is_ok(), "{}\nbody: {body}", items.err().unwrap_or_default());
        let items = items.unwrap_or_default();
        prop_assert_eq!(items.len(), 1);
        if filter.passes(head, LOGS_CAP) {
            prop_assert!(run.upstream.is_some(), "within the cap but not forwarded: {}", body);
        } else {
            prop_assert!(run.upstream.is_none(),
                "over the cap (head {}) but forwarded: {}", head, body);
            prop_assert_eq!(items[0].error_code(), Some(-32602));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Minimal failing inputs the properties found, kept as plain tests so they fail on every run
// (proptest's failure persistence is off). Each stays failing until the gateway is fixed.

/// Found by [`get_logs_ranges_are_capped_for_any_bounds_and_head`]: a range of 2^64 blocks
/// overflows `to - from + 1` in `params::check_get_logs`: a panic with overflow checks (debug,
/// tests), and in release builds the count wraps to 0, so the range passes the cap and goes
/// to the node. The head comes from the node, so a node reporting head `0xffffffffffffffff`
/// does the same to `{"fromBlock":"earliest"}` (to = latest).
#[test]
fn regression_get_logs_range_of_2_pow_64_blocks_is_over_the_cap() {
    let cases = [
        (
            r#"[{"fromBlock":"0x0","toBlock":"0xffffffffffffffff"}]"#,
            HEAD,
        ),
        (
            r#"[{"fromBlock":"earliest","toBlock":"0xffffffffffffffff"}]"#,
            HEAD,
        ),
        (r#"[{"fromBlock":"earliest"}]"#, u64::MAX),
        (r#"[{"fromBlock":"0x0","toBlock":"latest"}]"#, u64::MAX),
    ];
    let policy = Policy::default();
    for (params, head) in cases {
        let body =
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"eth_getLogs","params":{params}}}"#);
        let outcome = std::panic::catch_unwind(|| run(body.as_bytes(), &policy, head, &Node::Echo));
        let Ok(run) = outcome else {
            panic!("panicked on {body} with head {head}");
        };
        assert!(
            run.upstream.is_none(),
            "forwarded over the cap: {body} (head {head})"
        );
        let items = response_items(&run.reply).unwrap();
        assert_eq!(items[0].error_code(), Some(-32602), "{}", run.reply.body);
    }
}

/// Found by [`malformed_upstream_error_objects_are_not_passed_through`]: an upstream answer
/// whose `error` member is an object but not a JSON-RPC error object is copied verbatim into
/// the client's answer (`exchange.rs`, `place_upstream_answers`, which only checks that the
/// error starts with `{`), so the client gets a malformed response.
#[test]
fn regression_a_malformed_error_object_from_the_node_is_not_passed_through() {
    let policy = Policy::default();
    let body = br#"{"jsonrpc":"2.0","id":7,"method":"eth_chainId"}"#;
    for answer in [
        r#"{"jsonrpc":"2.0","id":0,"error":{}}"#,
        r#"{"jsonrpc":"2.0","id":0,"error":{"code":"x","message":"m"}}"#,
        r#"{"jsonrpc":"2.0","id":0,"error":{"code":-32000}}"#,
    ] {
        let run = run(
            body,
            &policy,
            HEAD,
            &Node::Bytes(answer.as_bytes().to_vec()),
        );
        let checked = response_items(&run.reply).map(|items| items.len());
        assert_eq!(checked, Ok(1), "node answer {answer}");
    }
}

fn tight_policy() -> Policy {
    Policy::from_toml(TIGHT_POLICY).unwrap()
}

/// Block numbers anywhere in `u64`, biased to the edges.
fn extreme_block() -> BoxedStrategy<u64> {
    prop_oneof![
        1 => any::<u64>(),
        4 => select(vec![0, 1, LOGS_CAP - 1, LOGS_CAP, LOGS_CAP + 1, u64::MAX - LOGS_CAP,
                         u64::MAX - 1, u64::MAX]),
        1 => (u64::MAX - 2 * LOGS_CAP)..=u64::MAX,
        1 => 0..3 * LOGS_CAP,
    ]
    .boxed()
}

/// Node answers: garbage bytes, near-miss JSON-RPC answers, and failures. With
/// `bad_errors`, `error` members may be malformed error objects.
fn node_strategy(bad_errors: bool) -> impl Strategy<Value = Node> {
    let id = prop_oneof![
        6 => (0u8..6).prop_map(|n| Some(n.to_string())),
        1 => select(vec![r#""0""#, "null", "-1", "1.5", "0.0", "00", "1e0", "18446744073709551616",
                         r#"{"a":0}"#]).prop_map(|s| Some(s.to_owned())),
        1 => Just(None),
    ];
    let good_error = select(vec![
        r#"{"code":-32000,"message":"execution reverted","data":"0x08c379a0"}"#,
        r#"{"code":3,"message":"execution reverted: no"}"#,
        r#"{"code":-32601,"message":"the method does not exist"}"#,
    ])
    .prop_map(str::to_owned);
    let error = if bad_errors {
        prop_oneof![
            good_error,
            select(vec![
                "{}",
                r#"{"code":"x","message":"m"}"#,
                r#"{"code":1.5,"message":"m"}"#,
                r#"{"message":"m"}"#,
                r#"{"code":-32000}"#,
                r#"{"code":-32000,"message":7}"#,
            ])
            .prop_map(str::to_owned),
        ]
        .boxed()
    } else {
        prop_oneof![
            good_error,
            select(vec![r#""oops""#, "5", "null", "[]"]).prop_map(str::to_owned),
        ]
        .boxed()
    };
    let content = prop_oneof![
        3 => json_value_strategy().prop_map(|v| format!(r#""result":{v}"#)),
        2 => error.clone().prop_map(|e| format!(r#""error":{e}"#)),
        1 => (json_value_strategy(), error).prop_map(|(v, e)| format!(r#""result":{v},"error":{e}"#)),
        1 => Just(String::new()),
    ];
    let entry = (id, content, any::<bool>()).prop_map(|(id, content, version)| {
        let mut members = Vec::new();
        if version {
            members.push(r#""jsonrpc":"2.0""#.to_owned());
        }
        if let Some(id) = id {
            members.push(format!(r#""id":{id}"#));
        }
        if !content.is_empty() {
            members.push(content);
        }
        format!("{{{}}}", members.join(","))
    });
    let answer = prop_oneof![
        entry.clone(),
        prop::collection::vec(entry, 0..10).prop_map(|v| format!("[{}]", v.join(","))),
    ];
    prop_oneof![
        4 => answer.clone().prop_map(|a| Node::Bytes(a.into_bytes())),
        1 => (answer, any::<prop::sample::Index>()).prop_map(|(a, at)| {
            let mut bytes = a.into_bytes();
            bytes.truncate(at.index(bytes.len() + 1));
            Node::Bytes(bytes)
        }),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Node::Bytes),
        1 => select(vec!["", "<html>502 Bad Gateway</html>", "null", "[]", "{}", "[1,2]",
                         "\u{feff}{\"id\":0,\"result\":1}"])
            .prop_map(|s| Node::Bytes(s.as_bytes().to_vec())),
        1 => select(vec![
            UpstreamFailure::Unavailable,
            UpstreamFailure::TimedOut,
            UpstreamFailure::InvalidResponse { status: 502 },
        ])
        .prop_map(Node::Fail),
    ]
}

fn check_upstream_answer(request: &GenRequest, node: &Node) -> Result<(), TestCaseError> {
    let policy = Policy::default();
    let body = request.body();
    let run = run(body.as_bytes(), &policy, HEAD, node);
    let answer_text = run
        .answer
        .as_deref()
        .map(String::from_utf8_lossy)
        .unwrap_or_default()
        .into_owned();
    let items = check_well_formed(&run, &policy);
    prop_assert!(
        items.is_ok(),
        "{}\nbody: {body}\nnode: {node:?}",
        items.err().unwrap_or_default()
    );
    let items = items.unwrap_or_default();
    let failure_code = match node {
        Node::Fail(UpstreamFailure::Unavailable) => Some(-32050),
        Node::Fail(UpstreamFailure::TimedOut) => Some(-32051),
        Node::Fail(UpstreamFailure::InvalidResponse { .. }) => Some(-32052),
        _ => None,
    };
    let from_node_or_gateway = |_: &Expect, item: &ResponseObject<'_>| -> Result<(), String> {
        if let Some(result) = item.result {
            return answer_text
                .contains(result.get())
                .then_some(())
                .ok_or_else(|| "a result the node never sent".to_owned());
        }
        let code = item.error_code().unwrap_or(0);
        match failure_code {
            Some(want) if code == want => Ok(()),
            Some(want) => Err(format!("node failure needs {want}")),
            None if (-32053..=-32050).contains(&code) => Ok(()),
            None if item.error.is_some_and(|e| answer_text.contains(e.get())) => Ok(()),
            None => Err("an error neither from the node nor in -32050..=-32053".to_owned()),
        }
    };
    let checked = check_against_model(request, &run, &items, &from_node_or_gateway);
    prop_assert!(
        checked.is_ok(),
        "{}\nbody: {body}\nnode: {node:?}",
        checked.err().unwrap_or_default()
    );
    prop_assert_eq!(
        sent_calls(run.upstream.as_deref()),
        expected_upstream(request)
    );
    Ok(())
}
