//! One request's way through the gateway, as pure steps around the two I/O points.
//!
//! ```text
//! body ──prepare──► Exchange ──(needs_head? resolve_head(head))──► upstream_request()
//!                      │                                              │  (caller sends it)
//!                      └─ Reply (answered locally: errors, 413, ...)  ▼
//!                                                   finish(upstream answer) ──► Reply
//! ```
//!
//! Each item of a request gets a slot, in request order: answered locally (invalid request,
//! denied method, bad params, `eth_accounts`), silent (a notification), or forwarded. The
//! forwarded items go upstream as one request (a single object when there is one, a batch
//! otherwise) with their ids rewritten to their position in that upstream request; the answers
//! are matched back by that position and written out with the client's id exactly as sent.
//! Rewriting ids means duplicate or exotic client ids (`1.5`, huge numbers) cannot confuse the
//! merge, and a node that mangles ids it does not like never sees them.
//!
//! Invariant 1 lives here: only calls whose verdict is [`Verdict::Allow`] and whose params
//! pass are ever written into the upstream request.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::jsonrpc::{self, Body, BodyError, Call, Item, codes};
use crate::params::{ParamsCheck, check_params};
use crate::policy::{DEFAULT_ALLOW, Policy, Verdict};

/// An HTTP answer: status and JSON body (empty for 204).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    fn ok(body: String) -> Reply {
        Reply { status: 200, body }
    }

    fn no_content() -> Reply {
        Reply {
            status: 204,
            body: String::new(),
        }
    }

    fn error(status: u16, code: i64, message: &str) -> Reply {
        let mut body = String::with_capacity(64 + message.len());
        jsonrpc::write_error(&mut body, jsonrpc::null_id(), code, message);
        Reply { status, body }
    }

    /// HTTP 413 for a body over the cap.
    pub fn body_too_large(cap: usize) -> Reply {
        Reply::error(
            413,
            codes::INVALID_REQUEST,
            &format!("request body exceeds the cap of {cap} bytes"),
        )
    }
}

/// Why the upstream gave no usable answer. Messages name no address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// Connection refused or reset, or no node available.
    Unavailable,
    /// No answer within the timeout.
    TimedOut,
    /// An answer that is not JSON-RPC (with the HTTP status it came with).
    InvalidResponse { status: u16 },
}

impl UpstreamFailure {
    fn code_and_message(self) -> (i64, String) {
        match self {
            UpstreamFailure::Unavailable => (
                codes::UPSTREAM_UNAVAILABLE,
                "upstream unavailable".to_owned(),
            ),
            UpstreamFailure::TimedOut => (codes::UPSTREAM_TIMEOUT, "upstream timed out".to_owned()),
            UpstreamFailure::InvalidResponse { status } => (
                codes::UPSTREAM_INVALID_RESPONSE,
                format!("upstream returned an invalid response (HTTP {status})"),
            ),
        }
    }
}

/// What the caller sends upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamRequest {
    /// The JSON-RPC body.
    pub body: String,
    /// True when every call is a known read, so a failed connection may be retried once.
    /// Writes (`eth_sendRawTransaction`) and operator-added methods are never retried.
    pub retryable: bool,
}

/// What the node answered.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamAnswer<'b> {
    pub status: u16,
    pub body: &'b [u8],
}

/// Counts for the request log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub items: usize,
    pub forwarded: usize,
    pub denied: usize,
    pub invalid: usize,
    pub local: usize,
}

#[derive(Debug)]
enum Slot<'a> {
    /// Answered by the gateway; the text is a complete response object.
    Answered(String),
    /// A notification that is not answered (forwarded or dropped).
    Silent,
    /// To be answered from the upstream's answer.
    Forwarded(Call<'a>),
    /// An `eth_getLogs` whose range check waits for the head block.
    AwaitingHead(Call<'a>),
}

/// A request between parsing and its final answer.
#[derive(Debug)]
pub struct Exchange<'a> {
    single: bool,
    slots: Vec<Slot<'a>>,
    /// Slot indices of forwarded calls with an id (notifications get no answer to place).
    awaiting_answer: Vec<usize>,
    counts: Counts,
    denied_methods: Vec<String>,
    max_get_logs_blocks: u64,
}

/// Method names in logs are cut to this many bytes.
const LOGGED_NAME_BYTES: usize = 64;
/// At most this many distinct denied names are kept per request for its log line.
const LOGGED_DENIED_METHODS: usize = 16;

/// Parses and checks a body. `Err` is a final answer that involves no node.
pub fn prepare<'a>(body: &'a [u8], policy: &Policy) -> Result<Exchange<'a>, Reply> {
    let limits = policy.limits();
    if body.len() > limits.max_body_bytes {
        return Err(Reply::body_too_large(limits.max_body_bytes));
    }
    let (single, items) = match jsonrpc::parse_body(body, limits.max_batch_items) {
        Ok(Body::Single(item)) => (true, vec![item]),
        Ok(Body::Batch(items)) => (false, items),
        Err(BodyError::Parse) => {
            return Err(Reply::error(
                200,
                codes::PARSE_ERROR,
                "parse error: body is not valid JSON",
            ));
        }
        Err(BodyError::NotARequest) => {
            return Err(Reply::error(
                200,
                codes::INVALID_REQUEST,
                "invalid request: expected a request object or a non-empty array of them",
            ));
        }
        Err(BodyError::BatchTooLarge { items, cap }) => {
            return Err(Reply::error(
                413,
                codes::INVALID_REQUEST,
                &format!("batch of {items} items exceeds the cap of {cap} items"),
            ));
        }
    };
    let mut exchange = Exchange {
        single,
        slots: Vec::with_capacity(items.len()),
        awaiting_answer: Vec::new(),
        counts: Counts {
            items: items.len(),
            ..Counts::default()
        },
        denied_methods: Vec::new(),
        max_get_logs_blocks: limits.max_get_logs_blocks,
    };
    for item in items {
        let slot = exchange.decide(item, policy);
        exchange.push(slot);
    }
    Ok(exchange)
}

impl<'a> Exchange<'a> {
    fn decide(&mut self, item: Item<'a>, policy: &Policy) -> Slot<'a> {
        let call = match item {
            Item::Call(call) => call,
            Item::Invalid { id, reason } => {
                self.counts.invalid += 1;
                return answered_error(
                    id,
                    codes::INVALID_REQUEST,
                    &format!("invalid request: {reason}"),
                );
            }
        };
        match policy.verdict(&call.method) {
            Verdict::Deny(_) => {
                self.counts.denied += 1;
                let name = truncate(&call.method, LOGGED_NAME_BYTES);
                if self.denied_methods.len() < LOGGED_DENIED_METHODS
                    && !self.denied_methods.iter().any(|m| m == name)
                {
                    self.denied_methods.push(name.to_owned());
                }
                match call.id {
                    None => Slot::Silent,
                    Some(id) => answered_error(
                        id,
                        codes::METHOD_NOT_FOUND,
                        &format!("method {} is not available", call.raw_method.get()),
                    ),
                }
            }
            Verdict::AnswerAccounts => {
                self.counts.local += 1;
                match (call.id, check_params(&call.method, call.params, 0, None)) {
                    (None, _) => Slot::Silent,
                    (Some(id), ParamsCheck::Invalid(message)) => {
                        answered_error(id, codes::INVALID_PARAMS, &message)
                    }
                    (Some(id), _) => {
                        let mut text = String::with_capacity(48);
                        jsonrpc::write_result(&mut text, id, "[]");
                        Slot::Answered(text)
                    }
                }
            }
            Verdict::Allow => self.check(call, None),
        }
    }

    /// Applies the params check to an allowed call.
    fn check(&mut self, call: Call<'a>, head: Option<u64>) -> Slot<'a> {
        match check_params(&call.method, call.params, self.max_get_logs_blocks, head) {
            ParamsCheck::Ok => {
                self.counts.forwarded += 1;
                Slot::Forwarded(call)
            }
            ParamsCheck::NeedsHead => Slot::AwaitingHead(call),
            ParamsCheck::Invalid(message) => {
                self.counts.invalid += 1;
                match call.id {
                    None => Slot::Silent,
                    Some(id) => answered_error(id, codes::INVALID_PARAMS, &message),
                }
            }
        }
    }

    fn push(&mut self, slot: Slot<'a>) {
        let index = self.slots.len();
        self.slots.push(slot);
        self.index_forwarded(index);
    }

    fn index_forwarded(&mut self, index: usize) {
        if let Slot::Forwarded(call) = &self.slots[index]
            && !call.is_notification()
        {
            self.awaiting_answer.push(index);
        }
    }

    /// True when some `eth_getLogs` range uses a tag and the head block is needed.
    pub fn needs_head(&self) -> bool {
        self.slots
            .iter()
            .any(|s| matches!(s, Slot::AwaitingHead(_)))
    }

    /// Finishes the checks that waited for the head block. Without a head, those calls are
    /// answered with the upstream failure that prevented learning it.
    pub fn resolve_head(&mut self, head: Result<u64, UpstreamFailure>) {
        for index in 0..self.slots.len() {
            if !matches!(self.slots[index], Slot::AwaitingHead(_)) {
                continue;
            }
            let Slot::AwaitingHead(call) = std::mem::replace(&mut self.slots[index], Slot::Silent)
            else {
                unreachable!("checked above")
            };
            self.slots[index] = match head {
                Ok(head) => self.check(call, Some(head)),
                Err(failure) => match call.id {
                    None => Slot::Silent,
                    Some(id) => {
                        let (code, message) = failure.code_and_message();
                        answered_error(id, code, &message)
                    }
                },
            };
        }
        self.awaiting_answer.clear();
        for index in 0..self.slots.len() {
            self.index_forwarded(index);
        }
    }

    /// Counts for logging.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// The distinct denied method names, for logging (at most 16, each cut to 64 bytes so a
    /// hostile name cannot bloat the log).
    pub fn denied_methods(&self) -> &[String] {
        &self.denied_methods
    }

    /// The distinct method names sent upstream, for logging (at most `max`, each cut to 64
    /// bytes).
    pub fn methods(&self, max: usize) -> Vec<&str> {
        let mut methods: Vec<&str> = Vec::new();
        for slot in &self.slots {
            let (Slot::Forwarded(call) | Slot::AwaitingHead(call)) = slot else {
                continue;
            };
            let name = truncate(&call.method, LOGGED_NAME_BYTES);
            if methods.len() < max && !methods.contains(&name) {
                methods.push(name);
            }
        }
        methods
    }

    /// The request to send upstream, if any call is forwarded. Call after the head is resolved.
    pub fn upstream_request(&self) -> Option<UpstreamRequest> {
        let forwarded = self.forwarded_in_order();
        if forwarded.is_empty() {
            return None;
        }
        let batch = forwarded.len() > 1;
        let mut body = String::with_capacity(128 * forwarded.len());
        let mut retryable = true;
        if batch {
            body.push('[');
        }
        for (position, call) in forwarded.iter().enumerate() {
            if position > 0 {
                body.push(',');
            }
            retryable &= is_known_read(&call.method);
            body.push_str(r#"{"jsonrpc":"2.0","#);
            if call.id.is_some() {
                body.push_str(r#""id":"#);
                body.push_str(&position.to_string());
                body.push(',');
            }
            body.push_str(r#""method":"#);
            body.push_str(call.raw_method.get());
            if let Some(params) = call.params {
                body.push_str(r#","params":"#);
                body.push_str(params.get());
            }
            body.push('}');
        }
        if batch {
            body.push(']');
        }
        Some(UpstreamRequest { body, retryable })
    }

    /// Forwarded calls in request order; a call's position here is its upstream id.
    fn forwarded_in_order(&self) -> Vec<&Call<'a>> {
        self.slots
            .iter()
            .filter_map(|s| match s {
                Slot::Forwarded(call) => Some(call),
                _ => None,
            })
            .collect()
    }

    /// Builds the final answer from the upstream's answer (or `None` when nothing was sent).
    pub fn finish(self, upstream: Option<Result<UpstreamAnswer<'_>, UpstreamFailure>>) -> Reply {
        let mut answers: Vec<Option<String>> = vec![None; self.slots.len()];
        if let Some(upstream) = upstream {
            self.place_upstream_answers(upstream, &mut answers);
        }
        let mut out = String::new();
        let mut written = 0usize;
        if !self.single {
            out.push('[');
        }
        for (slot, answer) in self.slots.into_iter().zip(answers) {
            let text = match slot {
                Slot::Answered(text) => text,
                Slot::Silent => continue,
                Slot::Forwarded(call) => match (call.id, answer) {
                    (None, _) => continue,
                    (Some(_), Some(text)) => text,
                    (Some(id), None) => {
                        let mut text = String::new();
                        jsonrpc::write_error(
                            &mut text,
                            id,
                            codes::UPSTREAM_MISSING_RESPONSE,
                            "upstream returned no answer for this call",
                        );
                        text
                    }
                },
                // Only reachable if the caller skipped resolve_head: answer, never panic.
                Slot::AwaitingHead(Call { id: None, .. }) => continue,
                Slot::AwaitingHead(Call { id: Some(id), .. }) => {
                    let mut text = String::new();
                    let (code, message) = UpstreamFailure::Unavailable.code_and_message();
                    jsonrpc::write_error(&mut text, id, code, &message);
                    text
                }
            };
            if written > 0 {
                out.push(',');
            }
            out.push_str(&text);
            written += 1;
        }
        if written == 0 {
            return Reply::no_content();
        }
        if !self.single {
            out.push(']');
        }
        Reply::ok(out)
    }

    /// Fills `answers[slot]` for every forwarded call with an id.
    fn place_upstream_answers(
        &self,
        upstream: Result<UpstreamAnswer<'_>, UpstreamFailure>,
        answers: &mut [Option<String>],
    ) {
        let forwarded_ids: Vec<usize> = self.forwarded_position_to_slot();
        let fail_all = |failure: UpstreamFailure, answers: &mut [Option<String>]| {
            let (code, message) = failure.code_and_message();
            for &slot in &self.awaiting_answer {
                answers[slot] = Some(self.error_for(slot, code, &message));
            }
        };
        let answer = match upstream {
            Ok(answer) => answer,
            Err(failure) => return fail_all(failure, answers),
        };
        if self.awaiting_answer.is_empty() {
            return; // only notifications went up: nothing to place
        }
        let invalid = UpstreamFailure::InvalidResponse {
            status: answer.status,
        };
        let Ok(text) = std::str::from_utf8(answer.body) else {
            return fail_all(invalid, answers);
        };
        // One pass in the common case; element by element (skipping the ones that are not
        // response objects) when the array holds something else.
        let responses: Vec<UpstreamResponse<'_>> = match text.trim_start().as_bytes().first() {
            Some(b'[') => match serde_json::from_str(text) {
                Ok(list) => list,
                Err(_) => match serde_json::from_str::<Vec<&RawValue>>(text) {
                    Ok(raws) => raws
                        .iter()
                        .filter_map(|r| serde_json::from_str(r.get()).ok())
                        .collect(),
                    Err(_) => return fail_all(invalid, answers),
                },
            },
            Some(b'{') => match serde_json::from_str(text) {
                Ok(one) => vec![one],
                Err(_) => return fail_all(invalid, answers),
            },
            _ => return fail_all(invalid, answers),
        };
        let sent_single = forwarded_ids.len() == 1;
        for response in responses {
            let content = match (response.result, response.error) {
                (Some(result), _) => Content::Result(result),
                (None, Some(error)) if is_error_object(error) => Content::Error(error),
                // A response to a call, but with neither a result nor a well-formed error:
                // never pass it on (every answer must be well-formed, invariant 8).
                _ => Content::Malformed,
            };
            let position = response.id.and_then(|id| id.get().parse::<usize>().ok());
            let targets: Vec<usize> = match position {
                Some(p) => forwarded_ids
                    .get(p)
                    .copied()
                    .filter(|&s| s != usize::MAX)
                    .into_iter()
                    .collect(),
                // An answer without a usable id: the node rejected the request as a whole
                // (a single request it could not parse, a batch it refused). It stands for
                // every call still unanswered.
                None if matches!(content, Content::Error(_)) || sent_single => self
                    .awaiting_answer
                    .iter()
                    .copied()
                    .filter(|&s| answers[s].is_none())
                    .collect(),
                None => Vec::new(),
            };
            for slot in targets {
                let Slot::Forwarded(Call { id: Some(id), .. }) = &self.slots[slot] else {
                    continue;
                };
                let mut text = String::with_capacity(40 + content.len());
                match content {
                    Content::Result(result) => jsonrpc::write_result(&mut text, id, result.get()),
                    Content::Error(error) => jsonrpc::write_raw_error(&mut text, id, error.get()),
                    Content::Malformed => {
                        let (code, message) = invalid.code_and_message();
                        jsonrpc::write_error(&mut text, id, code, &message);
                    }
                }
                answers[slot] = Some(text);
            }
        }
        if answers.iter().all(Option::is_none) {
            // Nothing in the answer was a JSON-RPC response to what we sent.
            fail_all(invalid, answers);
        }
    }

    /// `result[position]` = the slot of the forwarded call at that upstream position, for
    /// calls with an id; notifications hold `usize::MAX` (they have no answer).
    fn forwarded_position_to_slot(&self) -> Vec<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(index, slot)| match slot {
                Slot::Forwarded(call) if call.is_notification() => Some(usize::MAX),
                Slot::Forwarded(_) => Some(index),
                _ => None,
            })
            .collect()
    }

    fn error_for(&self, slot: usize, code: i64, message: &str) -> String {
        let id = match &self.slots[slot] {
            Slot::Forwarded(Call { id: Some(id), .. }) => *id,
            _ => jsonrpc::null_id(),
        };
        let mut text = String::new();
        jsonrpc::write_error(&mut text, id, code, message);
        text
    }
}

#[derive(Clone, Copy)]
enum Content<'r> {
    Result(&'r RawValue),
    Error(&'r RawValue),
    Malformed,
}

impl Content<'_> {
    /// Bytes of raw JSON it carries.
    fn len(&self) -> usize {
        match self {
            Content::Result(raw) | Content::Error(raw) => raw.get().len(),
            Content::Malformed => 64,
        }
    }
}

/// The shape the specification requires of an error: an integer `code` and a string
/// `message` (`data` and anything else may follow).
#[derive(Deserialize)]
struct ErrorObject<'r> {
    // Read only to check their types.
    #[serde(rename = "code")]
    _code: i64,
    #[serde(rename = "message", borrow)]
    _message: std::borrow::Cow<'r, str>,
}

fn is_error_object(raw: &RawValue) -> bool {
    serde_json::from_str::<ErrorObject<'_>>(raw.get()).is_ok()
}

#[derive(Deserialize)]
struct UpstreamResponse<'r> {
    #[serde(borrow, default)]
    id: Option<&'r RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    result: Option<&'r RawValue>,
    #[serde(borrow, default)]
    error: Option<&'r RawValue>,
}

/// A member present as `null` is still present: `"result": null` is a valid answer.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

fn answered_error(id: &RawValue, code: i64, message: &str) -> Slot<'static> {
    let mut text = String::with_capacity(64 + message.len());
    jsonrpc::write_error(&mut text, id, code, message);
    Slot::Answered(text)
}

/// Default-allowed methods other than `eth_sendRawTransaction` only read, so sending them
/// twice is harmless.
fn is_known_read(method: &str) -> bool {
    method != "eth_sendRawTransaction" && DEFAULT_ALLOW.contains(&method)
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
