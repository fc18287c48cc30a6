//! The gateway's promises as executable checks: every answer is well-formed JSON-RPC
//! (invariant 8) and only allowed methods reach a node (invariant 1).
//!
//! Shared by the cargo-fuzz target (`fuzz/`), the seed-corpus replay and the property tests,
//! so the three check exactly the same thing. Nothing here runs on the request path.
//!
//! [`check_request_path`] runs one fuzz input through [`prepare`] -> `resolve_head` ->
//! `upstream_request` -> `finish`. Input format (the seed corpus in
//! `fuzz/corpus/request_path/` follows it):
//!
//! - everything before the first NUL byte is the HTTP request body (NUL never occurs in JSON
//!   text, so every JSON body is also a whole input);
//! - without a NUL, the fake node answers every forwarded call correctly (`"result":"0x1"`),
//!   the head block is 20,000,000, and the default policy applies;
//! - after the NUL, one control byte, then the upstream answer's bytes (HTTP 200):
//!   - bits 0-1: 0 = the node answers with those bytes (a correct answer when there are
//!     none), 1 = unavailable, 2 = timed out, 3 = invalid response (HTTP 502);
//!   - bit 2: the head block cannot be learnt (upstream timed out);
//!   - bit 3: a tight operator policy (batch cap 5, body cap 2 KiB, `eth_getLogs` cap 100,
//!     extra allows, denies and an `unsafe_allow`) instead of the default one;
//!   - bits 4-7: which head block number (see [`HEADS`]).
//!
//! Checked for every input:
//! - the HTTP status is 200, 204 or 413; 204 has an empty body, anything else is a JSON-RPC
//!   response object or a non-empty array of them (exactly `jsonrpc`, `id` and one of
//!   `result`/`error`; error objects with an integer `code` and a string `message`); a 413
//!   is one error object with id null and code -32600 ([`response_items`]);
//! - the upstream request, when there is one, is JSON: one call object, or an array of at
//!   least two, with ids equal to their positions, and only methods the policy allows
//!   ([`check_upstream_request`]);
//! - a batch is answered with an array, a single request with an object, never with more
//!   items than the request had;
//! - when the node answers correctly, no item carries one of the gateway's upstream error
//!   codes (-32050..=-32053).

use std::sync::LazyLock;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{Policy, Reply, UpstreamAnswer, UpstreamFailure, Verdict, prepare};

/// Head block numbers the control byte chooses from: around the default and the tight
/// `eth_getLogs` caps, and the extremes.
pub const HEADS: [u64; 8] = [0, 1, 0x10, 99, 100, 5_000, 20_000_000, u64::MAX];

/// A small operator policy with every kind of rule and low limits, so limits are reached.
pub const TIGHT_POLICY: &str = r#"
allow = ["trace_*", "custom_echo"]
deny = ["eth_sendRawTransaction", "eth_getUncle*"]
unsafe_allow = ["debug_traceTransaction"]

[limits]
max_body_bytes = 2048
max_batch_items = 5
max_get_logs_blocks = 100
"#;

static DEFAULT: LazyLock<Policy> = LazyLock::new(Policy::default);
static TIGHT: LazyLock<Policy> = LazyLock::new(|| match Policy::from_toml(TIGHT_POLICY) {
    Ok(policy) => policy,
    Err(e) => panic!("the tight fuzz policy is valid: {e}"),
});
/// What the node does with the upstream request.
enum Node<'i> {
    /// Answers every call with an id with `"result":"0x1"`.
    Correct,
    /// Answers with these bytes.
    Answer(&'i [u8]),
    /// Gives no answer.
    Fail(UpstreamFailure),
}

struct Scenario<'i> {
    body: &'i [u8],
    policy: &'static Policy,
    head: Result<u64, UpstreamFailure>,
    node: Node<'i>,
}

fn scenario(input: &[u8]) -> Scenario<'_> {
    let Some(nul) = input.iter().position(|&b| b == 0) else {
        return Scenario {
            body: input,
            policy: &DEFAULT,
            head: Ok(20_000_000),
            node: Node::Correct,
        };
    };
    let control = input.get(nul + 1).copied().unwrap_or(0);
    let answer = input.get(nul + 2..).unwrap_or(&[]);
    Scenario {
        body: &input[..nul],
        policy: if control & 0b1000 != 0 {
            &TIGHT
        } else {
            &DEFAULT
        },
        head: if control & 0b100 != 0 {
            Err(UpstreamFailure::TimedOut)
        } else {
            Ok(HEADS[usize::from(control >> 4) % HEADS.len()])
        },
        node: match control & 0b11 {
            0 if answer.is_empty() => Node::Correct,
            0 => Node::Answer(answer),
            1 => Node::Fail(UpstreamFailure::Unavailable),
            2 => Node::Fail(UpstreamFailure::TimedOut),
            _ => Node::Fail(UpstreamFailure::InvalidResponse { status: 502 }),
        },
    }
}

/// Runs one input (format above) and checks every promise; `Err` names the one broken.
pub fn check_request_path(input: &[u8]) -> Result<(), String> {
    let Scenario {
        body,
        policy,
        head,
        node,
    } = scenario(input);
    let mut exchange = match prepare(body, policy) {
        Ok(exchange) => exchange,
        Err(reply) => {
            let items = response_items(&reply)?;
            return if items.len() == 1 && !reply.body.starts_with('[') {
                Ok(())
            } else {
                Err(format!("a rejected body needs one error object: {reply:?}"))
            };
        }
    };
    if exchange.needs_head() {
        exchange.resolve_head(head);
    }
    if exchange.needs_head() {
        return Err("the exchange still needs the head after resolve_head".into());
    }
    let request_items = exchange.counts().items;
    let request = exchange.upstream_request();
    let sent = match &request {
        Some(request) => check_upstream_request(&request.body, policy)?,
        None => Vec::new(),
    };
    let correct = match &request {
        Some(request) => correct_answer(&request.body, &sent),
        None => String::new(),
    };
    let answer = match (&request, &node) {
        (None, _) => None,
        (Some(_), Node::Correct) => Some(Ok(UpstreamAnswer {
            status: 200,
            body: correct.as_bytes(),
        })),
        (Some(_), Node::Answer(bytes)) => Some(Ok(UpstreamAnswer {
            status: 200,
            body: bytes,
        })),
        (Some(_), Node::Fail(failure)) => Some(Err(*failure)),
    };
    let reply = exchange.finish(answer);
    let items = response_items(&reply)?;
    if reply.status == 413 {
        return Err(format!("a parsed request must not get 413: {reply:?}"));
    }
    if items.len() > request_items {
        return Err(format!("{} answers to {request_items} items", items.len()));
    }
    let batch = body.trim_ascii_start().starts_with(b"[");
    if reply.status == 200 && batch != reply.body.starts_with('[') {
        return Err(format!(
            "batch {batch} answered with the wrong shape: {}",
            reply.body
        ));
    }
    if matches!(node, Node::Correct) && head.is_ok() {
        for item in &items {
            if let Some(code) = item.error_code()
                && (-32053..=-32050).contains(&code)
            {
                return Err(format!(
                    "a correct node still gave error {code}: {}",
                    reply.body
                ));
            }
        }
    }
    Ok(())
}

/// The fake node's correct answer: `"result":"0x1"` for every call with an id.
fn correct_answer(request: &str, sent: &[SentCall<'_>]) -> String {
    let answers: Vec<String> = sent
        .iter()
        .filter_map(|call| call.id)
        .map(|id| format!(r#"{{"jsonrpc":"2.0","id":{},"result":"0x1"}}"#, id.get()))
        .collect();
    match (request.starts_with('['), answers.as_slice()) {
        (_, []) => String::new(),
        (false, [one]) => one.clone(),
        _ => format!("[{}]", answers.join(",")),
    }
}

// ---- checks of answers and upstream requests ----

/// A response object as the gateway must write it: exactly these members, each once.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseObject<'a> {
    #[serde(borrow)]
    pub jsonrpc: &'a RawValue,
    #[serde(borrow)]
    pub id: &'a RawValue,
    #[serde(borrow, default, deserialize_with = "present")]
    pub result: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub error: Option<&'a RawValue>,
}

impl ResponseObject<'_> {
    /// The error's code, when this is an error response.
    pub fn error_code(&self) -> Option<i64> {
        let error: ErrorObject<'_> = serde_json::from_str(self.error?.get()).ok()?;
        error.code.get().parse().ok()
    }
}

/// A JSON-RPC error object: `code` and `message` required, `data` (or anything else) free.
#[derive(Debug, Deserialize)]
struct ErrorObject<'a> {
    #[serde(borrow)]
    code: &'a RawValue,
    #[serde(borrow)]
    message: &'a RawValue,
}

/// One call of the upstream request: only the members the gateway writes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentCall<'a> {
    #[serde(borrow)]
    pub jsonrpc: &'a RawValue,
    #[serde(borrow, default, deserialize_with = "present")]
    pub id: Option<&'a RawValue>,
    #[serde(borrow)]
    pub method: &'a RawValue,
    #[serde(borrow, default, deserialize_with = "present")]
    pub params: Option<&'a RawValue>,
}

/// A member present as `null` is `Some`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// The elements of a JSON array, or the one value; grammar-checked without a depth limit.
pub fn elements(text: &str) -> Result<(bool, Vec<&RawValue>), String> {
    let raw: &RawValue =
        serde_json::from_str(text).map_err(|e| format!("not JSON ({e}): {text:?}"))?;
    if raw.get().trim_start().starts_with('[') {
        let items: Vec<&RawValue> =
            serde_json::from_str(raw.get()).map_err(|e| format!("bad array ({e}): {text:?}"))?;
        Ok((true, items))
    } else {
        Ok((false, vec![raw]))
    }
}

/// Checks the HTTP status and body of a reply and returns its response objects.
pub fn response_items(reply: &Reply) -> Result<Vec<ResponseObject<'_>>, String> {
    match reply.status {
        204 if reply.body.is_empty() => return Ok(Vec::new()),
        204 => return Err(format!("204 with a body: {:?}", reply.body)),
        200 | 413 => {}
        status => return Err(format!("unexpected HTTP status {status}: {:?}", reply.body)),
    }
    let (batch, raws) = elements(&reply.body)?;
    if batch && raws.is_empty() {
        return Err("an empty array is not an answer".into());
    }
    let mut items = Vec::with_capacity(raws.len());
    for raw in raws {
        let item: ResponseObject<'_> = serde_json::from_str(raw.get())
            .map_err(|e| format!("not a response object ({e}): {}", raw.get()))?;
        if item.jsonrpc.get() != r#""2.0""# {
            return Err(format!("jsonrpc is not \"2.0\": {}", raw.get()));
        }
        let id = item.id.get();
        if !(id == "null"
            || id.starts_with(['"', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']))
        {
            return Err(format!("id is not a string, number or null: {}", raw.get()));
        }
        match (item.result, item.error) {
            (Some(_), None) => {}
            (None, Some(error)) => {
                let object: ErrorObject<'_> = serde_json::from_str(error.get())
                    .map_err(|e| format!("malformed error object ({e}): {}", raw.get()))?;
                if object.code.get().parse::<i64>().is_err() {
                    return Err(format!("error code is not an integer: {}", raw.get()));
                }
                if !object.message.get().starts_with('"') {
                    return Err(format!("error message is not a string: {}", raw.get()));
                }
            }
            _ => {
                return Err(format!(
                    "need exactly one of result and error: {}",
                    raw.get()
                ));
            }
        }
        items.push(item);
    }
    if reply.status == 413
        && (batch
            || items.len() != 1
            || items[0].id.get() != "null"
            || items[0].error_code() != Some(-32600))
    {
        return Err(format!(
            "413 needs one -32600 error with id null: {}",
            reply.body
        ));
    }
    Ok(items)
}

/// Checks the upstream request: valid JSON, call objects with positional ids, and only
/// methods the policy allows (invariant 1).
pub fn check_upstream_request<'b>(
    body: &'b str,
    policy: &Policy,
) -> Result<Vec<SentCall<'b>>, String> {
    let (batch, raws) = elements(body)?;
    if batch && raws.len() < 2 {
        return Err(format!(
            "a batch upstream request of {} calls: {body}",
            raws.len()
        ));
    }
    let mut calls = Vec::with_capacity(raws.len());
    for (position, raw) in raws.into_iter().enumerate() {
        let call: SentCall<'_> = serde_json::from_str(raw.get())
            .map_err(|e| format!("upstream call is not a call object ({e}): {}", raw.get()))?;
        if call.jsonrpc.get() != r#""2.0""# {
            return Err(format!("upstream call without jsonrpc 2.0: {}", raw.get()));
        }
        if let Some(id) = call.id
            && id.get() != position.to_string()
        {
            return Err(format!("upstream id {} at position {position}", id.get()));
        }
        let method: String = serde_json::from_str(call.method.get())
            .map_err(|e| format!("upstream method is not a string ({e}): {}", raw.get()))?;
        if policy.verdict(&method) != Verdict::Allow {
            return Err(format!("invariant 1: {method:?} reached the node: {body}"));
        }
        if let Some(params) = call.params
            && !params.get().starts_with(['[', '{'])
        {
            return Err(format!(
                "upstream params neither array nor object: {}",
                raw.get()
            ));
        }
        calls.push(call);
    }
    Ok(calls)
}
