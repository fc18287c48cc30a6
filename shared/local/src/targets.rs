//! `LocalTargetRegistry`: the `TargetRegistry` port on one machine, targets kept in memory and
//! probed on their health endpoint whenever their health is asked for.
//!
//! A target is an IP address and a port (local nodes: `127.0.0.1:<port>`, which
//! `nodefleet_ports::target_for_task(task, NetworkMode::Bridge, NODE_RPC_PORT)` gives for a
//! task of the `LocalProcessScheduler`). [`TargetRegistry::describe_health`] probes every registered target at
//! once, each within [`PROBE_TIMEOUT`], with the configured [`HealthCheck`]: an HTTP `GET` of
//! a path (the agent's sync-aware `/health`, 200 or 503 with a JSON reason), a JSON-RPC
//! `eth_blockNumber` (any answer passes), or the node's own JSON-RPC judged as the agent's
//! `/health` judges it ([`HealthCheck::SyncedHead`]: not syncing, head recent), which is what
//! the local fleet checks its nodes with, so a node whose head stops moving leaves rotation
//! while its process lives (DESIGN.md, Health).
//!
//! # States, as ELBv2 reports them
//!
//! - `Initial` (reason `Elb.InitialHealthChecking`): registered, no probe passed yet, and
//!   registered less than the initial grace ago (default [`INITIAL_GRACE`]): a node that is
//!   still starting is not called unhealthy. ELB keeps a target `initial` until its first
//!   checks pass or its unhealthy threshold is reached; the grace stands in for that
//!   threshold.
//! - `Healthy`: the last probe passed.
//! - `Unhealthy`: the last probe failed, after a pass or after the grace, with ELB's reason
//!   code (`Target.ResponseCodeMismatch` for an answer other than 200, `Target.Timeout`, or
//!   `Target.FailedHealthChecks` for a refused connection, a garbled answer or a JSON-RPC
//!   error) and the details in the description (`HTTP 503: head is 300 s old`, with the
//!   `reason` of the agent's JSON answer).
//! - `Draining` (reason `Target.DeregistrationInProgress`): deregistered less than the
//!   deregistration delay ago (default zero: gone at once). Draining targets are not probed.
//!
//! The zone of a local target is not known to the registry (`zone` is `None`).
//!
//! # Error policy
//!
//! Registering a registered target and deregistering an unknown one do nothing. A target
//! whose id is not an IP address, or whose port is 0, is `InvalidTarget` and nothing of that
//! call is registered. Probing never fails the call: an unreachable target is `Unhealthy`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use nodefleet_ports::{RegistryError, Target, TargetHealth, TargetRegistry, TargetState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long one probe may take: far above a loopback round trip or a node's health check,
/// short enough that `describe_health` (which waits for its slowest probe) stays quick for
/// the reactor however many nodes hang.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a target that has never passed a probe stays `Initial`: the time a local node is
/// given to start answering ([`crate::node::START_TIMEOUT`]).
pub const INITIAL_GRACE: Duration = crate::node::START_TIMEOUT;
/// How long a deregistered target is reported `Draining`: none by default, since nothing
/// local keeps connections open to a node being removed.
pub const DEFAULT_DEREGISTRATION_DELAY: Duration = Duration::ZERO;
/// The most of a health answer that is read: answers are a few hundred bytes, and a cap keeps
/// a misbehaving target from filling memory.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// The most of a failing answer's body quoted in a description.
const MAX_QUOTED_BODY: usize = 200;

/// ELB's reason while the first checks run.
pub const REASON_INITIAL: &str = "Elb.InitialHealthChecking";
/// ELB's reason for failed checks (refused connection, garbled answer).
pub const REASON_FAILED: &str = "Target.FailedHealthChecks";
/// ELB's reason for a check that timed out.
pub const REASON_TIMEOUT: &str = "Target.Timeout";
/// ELB's reason for an HTTP status other than the healthy one.
pub const REASON_CODE_MISMATCH: &str = "Target.ResponseCodeMismatch";
/// ELB's reason while a target drains.
pub const REASON_DRAINING: &str = "Target.DeregistrationInProgress";
/// Reason of a target registered while a probe round was running (not probed yet).
pub const REASON_REGISTERING: &str = "Elb.RegistrationInProgress";

/// How a target is probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheck {
    /// `GET path`: 200 is healthy, anything else is not (the agent's `/health`).
    Http { path: String },
    /// `POST /` with `eth_blockNumber`: an answer with a `result` is healthy (bare anvil).
    /// Blind to lag: a node that stopped producing blocks still answers.
    JsonRpc,
    /// `POST /` with the batch `eth_syncing`, `eth_getBlockByNumber("latest", false)`:
    /// healthy when the node is not syncing and its head block's timestamp is at most
    /// `max_head_age` old, the rules of the agent's `/health` (anvil has no peers to count).
    /// A head stamped in the future counts as age zero.
    SyncedHead { max_head_age: Duration },
}

impl HealthCheck {
    /// The agent's sync-aware health endpoint.
    pub fn agent() -> HealthCheck {
        HealthCheck::Http {
            path: "/health".into(),
        }
    }
}

/// How a [`LocalTargetRegistry`] probes and how long it keeps deregistered targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalTargetRegistryConfig {
    pub check: HealthCheck,
    pub probe_timeout: Duration,
    /// How long a target that never passed stays `Initial`.
    pub initial_grace: Duration,
    /// How long a deregistered target stays `Draining`.
    pub deregistration_delay: Duration,
}

impl LocalTargetRegistryConfig {
    /// `check` with the default timeout, grace and deregistration delay.
    pub fn new(check: HealthCheck) -> Self {
        LocalTargetRegistryConfig {
            check,
            probe_timeout: PROBE_TIMEOUT,
            initial_grace: INITIAL_GRACE,
            deregistration_delay: DEFAULT_DEREGISTRATION_DELAY,
        }
    }
}

/// Targets in memory, probed on demand. See the module doc.
#[derive(Debug)]
pub struct LocalTargetRegistry {
    config: LocalTargetRegistryConfig,
    targets: Mutex<Targets>,
}

impl LocalTargetRegistry {
    pub fn new(config: LocalTargetRegistryConfig) -> Self {
        LocalTargetRegistry {
            config,
            targets: Mutex::new(Targets::default()),
        }
    }

    /// A registry with `check` and the defaults.
    pub fn with_check(check: HealthCheck) -> Self {
        LocalTargetRegistry::new(LocalTargetRegistryConfig::new(check))
    }

    pub fn config(&self) -> &LocalTargetRegistryConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, Targets> {
        self.targets.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug, Default)]
struct Targets {
    registered: BTreeMap<Target, Registration>,
    /// Deregistered targets and when they stop draining.
    draining: BTreeMap<Target, Instant>,
    /// Numbers registrations, so a probe result never lands on a later registration.
    next_generation: u64,
}

#[derive(Debug)]
struct Registration {
    since: Instant,
    generation: u64,
    passed_once: bool,
    /// The state from the last probe; `None` until the first probe comes back.
    last: Option<(TargetState, Option<String>, Option<String>)>,
}

impl Targets {
    fn drop_drained(&mut self, now: Instant) {
        self.draining.retain(|_, until| *until > now);
    }
}

#[async_trait]
impl TargetRegistry for LocalTargetRegistry {
    async fn register(&self, targets: &[Target]) -> Result<(), RegistryError> {
        for target in targets {
            validate(target)?;
        }
        let now = Instant::now();
        let mut state = self.lock();
        for target in targets {
            state.draining.remove(target);
            if state.registered.contains_key(target) {
                continue;
            }
            let generation = state.next_generation;
            state.next_generation += 1;
            state.registered.insert(
                target.clone(),
                Registration {
                    since: now,
                    generation,
                    passed_once: false,
                    last: None,
                },
            );
        }
        Ok(())
    }

    async fn deregister(&self, targets: &[Target]) -> Result<(), RegistryError> {
        let until = Instant::now() + self.config.deregistration_delay;
        let mut state = self.lock();
        for target in targets {
            if state.registered.remove(target).is_some()
                && !self.config.deregistration_delay.is_zero()
            {
                state.draining.insert(target.clone(), until);
            }
        }
        Ok(())
    }

    async fn describe_health(&self) -> Result<Vec<TargetHealth>, RegistryError> {
        let to_probe: Vec<(Target, u64)> = {
            let mut state = self.lock();
            state.drop_drained(Instant::now());
            state
                .registered
                .iter()
                .map(|(target, registration)| (target.clone(), registration.generation))
                .collect()
        };
        let probes = to_probe.iter().map(|(target, _)| async {
            match target_addr(target) {
                Some(addr) => probe(addr, &self.config.check, self.config.probe_timeout).await,
                None => ProbeOutcome::Fail {
                    reason: REASON_FAILED,
                    description: format!("{} is not an IP address", target.id),
                },
            }
        });
        let outcomes = futures_util::future::join_all(probes).await;

        let now = Instant::now();
        let mut state = self.lock();
        state.drop_drained(now);
        for ((target, generation), outcome) in to_probe.into_iter().zip(outcomes) {
            let Some(registration) = state.registered.get_mut(&target) else {
                continue;
            };
            if registration.generation != generation {
                continue;
            }
            registration.last = Some(match outcome {
                ProbeOutcome::Pass => {
                    registration.passed_once = true;
                    (TargetState::Healthy, None, None)
                }
                ProbeOutcome::Fail {
                    reason,
                    description,
                } => {
                    if registration.passed_once
                        || now.duration_since(registration.since) >= self.config.initial_grace
                    {
                        (
                            TargetState::Unhealthy,
                            Some(reason.to_owned()),
                            Some(description),
                        )
                    } else {
                        (
                            TargetState::Initial,
                            Some(REASON_INITIAL.to_owned()),
                            Some(format!("no check passed yet; last: {description}")),
                        )
                    }
                }
            });
        }

        let mut answer: Vec<TargetHealth> = state
            .registered
            .iter()
            .map(|(target, registration)| {
                let (state, reason, description) = registration.last.clone().unwrap_or((
                    TargetState::Initial,
                    Some(REASON_REGISTERING.to_owned()),
                    None,
                ));
                TargetHealth {
                    target: target.clone(),
                    zone: None,
                    state,
                    reason,
                    description,
                }
            })
            .collect();
        answer.extend(state.draining.keys().map(|target| TargetHealth {
            target: target.clone(),
            zone: None,
            state: TargetState::Draining,
            reason: Some(REASON_DRAINING.to_owned()),
            description: Some("target deregistration is in progress".to_owned()),
        }));
        answer.sort_by(|a, b| a.target.cmp(&b.target));
        Ok(answer)
    }
}

fn validate(target: &Target) -> Result<(), RegistryError> {
    if target_addr(target).is_none() {
        return Err(RegistryError::InvalidTarget {
            message: format!("{target}: a local target is an IP address and a port"),
        });
    }
    if target.port == 0 {
        return Err(RegistryError::InvalidTarget {
            message: format!("{target}: port 0 cannot be probed"),
        });
    }
    Ok(())
}

fn target_addr(target: &Target) -> Option<SocketAddr> {
    let ip: IpAddr = target.id.parse().ok()?;
    Some(SocketAddr::new(ip, target.port))
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ProbeOutcome {
    Pass,
    Fail {
        reason: &'static str,
        description: String,
    },
}

/// Probes `addr` with `check` within `timeout`.
async fn probe(addr: SocketAddr, check: &HealthCheck, timeout: Duration) -> ProbeOutcome {
    let request = match check {
        HealthCheck::Http { path } => format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
        ),
        HealthCheck::JsonRpc => json_rpc_request(
            addr,
            r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#,
        ),
        HealthCheck::SyncedHead { .. } => json_rpc_request(addr, SYNCED_HEAD_BATCH),
    };
    let response = match tokio::time::timeout(timeout, exchange(addr, request.as_bytes())).await {
        Err(_) => {
            return ProbeOutcome::Fail {
                reason: REASON_TIMEOUT,
                description: format!("no answer within {timeout:?}"),
            };
        }
        Ok(Err(error)) => {
            return ProbeOutcome::Fail {
                reason: REASON_FAILED,
                description: error.to_string(),
            };
        }
        Ok(Ok(response)) => response,
    };
    match check {
        HealthCheck::Http { .. } => judge_http(&response),
        HealthCheck::JsonRpc => judge_json_rpc(&response),
        HealthCheck::SyncedHead { max_head_age } => {
            judge_synced_head(&response, *max_head_age, SystemTime::now())
        }
    }
}

/// What [`HealthCheck::SyncedHead`] sends: `eth_syncing` (id 1) and the latest block without
/// its transactions (id 2), in one request.
const SYNCED_HEAD_BATCH: &str = r#"[{"jsonrpc":"2.0","id":1,"method":"eth_syncing","params":[]},{"jsonrpc":"2.0","id":2,"method":"eth_getBlockByNumber","params":["latest",false]}]"#;

/// A `POST /` of `body` on a connection closed after the answer.
fn json_rpc_request(addr: SocketAddr, body: &str) -> String {
    format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Judges the answer to [`SYNCED_HEAD_BATCH`] at `now` (see [`HealthCheck::SyncedHead`]):
/// every failure is named, as the agent's `/health` names them.
fn judge_synced_head(
    response: &HttpResponse,
    max_head_age: Duration,
    now: SystemTime,
) -> ProbeOutcome {
    if response.status != 200 {
        return status_mismatch(response);
    }
    let fail = |description: String| ProbeOutcome::Fail {
        reason: REASON_FAILED,
        description,
    };
    let Ok(serde_json::Value::Array(answers)) =
        serde_json::from_slice::<serde_json::Value>(&response.body)
    else {
        return fail(format!(
            "not a JSON-RPC batch answer: {}",
            quote(&response.body)
        ));
    };
    let result_of = |id: u64, method: &str| -> Result<&serde_json::Value, String> {
        let answer = answers
            .iter()
            .find(|a| a.get("id").and_then(serde_json::Value::as_u64) == Some(id))
            .ok_or_else(|| format!("{method}: no answer in the batch"))?;
        if let Some(error) = answer.get("error") {
            let message = error
                .get("message")
                .and_then(serde_json::Value::as_str)
                .map_or_else(|| error.to_string(), str::to_owned);
            return Err(format!("{method}: JSON-RPC error: {message}"));
        }
        answer
            .get("result")
            .ok_or_else(|| format!("{method}: no result"))
    };
    let syncing = match result_of(1, "eth_syncing") {
        Ok(result) => result.as_bool() != Some(false),
        Err(description) => return fail(description),
    };
    let timestamp = match result_of(2, "eth_getBlockByNumber") {
        Ok(block) => block
            .get("timestamp")
            .and_then(serde_json::Value::as_str)
            .and_then(|t| t.strip_prefix("0x"))
            .and_then(|hex| u64::from_str_radix(hex, 16).ok()),
        Err(description) => return fail(description),
    };
    let Some(timestamp) = timestamp else {
        return fail("eth_getBlockByNumber: no latest block with a timestamp".to_owned());
    };
    let now_secs = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let age = now_secs.saturating_sub(timestamp);
    let mut failures = Vec::new();
    if syncing {
        failures.push("syncing".to_owned());
    }
    if Duration::from_secs(age) > max_head_age {
        failures.push(format!(
            "head is {age} s old (max {} s)",
            max_head_age.as_secs()
        ));
    }
    if failures.is_empty() {
        ProbeOutcome::Pass
    } else {
        fail(failures.join("; "))
    }
}

fn judge_http(response: &HttpResponse) -> ProbeOutcome {
    if response.status == 200 {
        ProbeOutcome::Pass
    } else {
        status_mismatch(response)
    }
}

fn judge_json_rpc(response: &HttpResponse) -> ProbeOutcome {
    if response.status != 200 {
        return status_mismatch(response);
    }
    let Ok(answer) = serde_json::from_slice::<serde_json::Value>(&response.body) else {
        return ProbeOutcome::Fail {
            reason: REASON_FAILED,
            description: format!("not a JSON-RPC answer: {}", quote(&response.body)),
        };
    };
    if answer.get("result").is_some_and(|r| !r.is_null()) {
        return ProbeOutcome::Pass;
    }
    let description = match answer.get("error") {
        Some(error) => format!(
            "JSON-RPC error: {}",
            error
                .get("message")
                .and_then(serde_json::Value::as_str)
                .map_or_else(|| error.to_string(), str::to_owned)
        ),
        None => format!("not a JSON-RPC answer: {}", quote(&response.body)),
    };
    ProbeOutcome::Fail {
        reason: REASON_FAILED,
        description,
    }
}

/// `HTTP 503: <the JSON answer's reason, or the body>`.
fn status_mismatch(response: &HttpResponse) -> ProbeOutcome {
    let said = serde_json::from_slice::<serde_json::Value>(&response.body)
        .ok()
        .and_then(|v| {
            v.get("reason")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| quote(&response.body));
    ProbeOutcome::Fail {
        reason: REASON_CODE_MISMATCH,
        description: if said.is_empty() {
            format!("HTTP {}", response.status)
        } else {
            format!("HTTP {}: {said}", response.status)
        },
    }
}

/// The body as trimmed text, cut to [`MAX_QUOTED_BODY`] characters.
fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(MAX_QUOTED_BODY) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// A parsed HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpResponse {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

/// Why an exchange gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExchangeError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("connection failed: {0}")]
    Io(std::io::Error),
    #[error("invalid HTTP answer: {0}")]
    Malformed(&'static str),
    #[error("answer larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
}

/// One request on a fresh connection (`Connection: close`), the answer read to its end.
pub(crate) async fn exchange(
    addr: SocketAddr,
    request: &[u8],
) -> Result<HttpResponse, ExchangeError> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(ExchangeError::Connect)?;
    stream.write_all(request).await.map_err(ExchangeError::Io)?;
    let mut raw = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        if let Some(response) = parse_response(&raw)? {
            return Ok(response);
        }
        let read = stream.read(&mut buffer).await.map_err(ExchangeError::Io)?;
        if read == 0 {
            return parse_response_at_eof(&raw);
        }
        if raw.len() + read > MAX_RESPONSE_BYTES {
            return Err(ExchangeError::TooLarge);
        }
        raw.extend_from_slice(&buffer[..read]);
    }
}

/// How the body of an answer ends.
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// The head of an answer: status, framing, and where the body starts.
struct Head {
    status: u16,
    framing: Framing,
    body_start: usize,
}

fn parse_head(raw: &[u8]) -> Result<Option<Head>, ExchangeError> {
    let Some(end) = find(raw, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&raw[..end])
        .map_err(|_| ExchangeError::Malformed("head is not text"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(ExchangeError::Malformed("no HTTP/1.x status line"));
    }
    let status: u16 = parts
        .next()
        .and_then(|code| code.parse().ok())
        .filter(|code| (100..1000).contains(code))
        .ok_or(ExchangeError::Malformed("no status code"))?;
    let mut framing = Framing::UntilClose;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(ExchangeError::Malformed("header line without a colon"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
            framing = Framing::Chunked;
        } else if name.eq_ignore_ascii_case("content-length")
            && !matches!(framing, Framing::Chunked)
        {
            let length = value
                .parse()
                .map_err(|_| ExchangeError::Malformed("bad content-length"))?;
            framing = Framing::Length(length);
        }
    }
    Ok(Some(Head {
        status,
        framing,
        body_start: end + 4,
    }))
}

/// The answer, if `raw` holds all of it (interim 1xx answers are skipped).
fn parse_response(raw: &[u8]) -> Result<Option<HttpResponse>, ExchangeError> {
    let Some(head) = parse_head(raw)? else {
        return Ok(None);
    };
    let rest = &raw[head.body_start..];
    if (100..200).contains(&head.status) {
        return parse_response(rest);
    }
    let body = match head.framing {
        Framing::Length(length) if rest.len() >= length => rest[..length].to_vec(),
        Framing::Chunked => match dechunk(rest)? {
            Some(body) => body,
            None => return Ok(None),
        },
        Framing::Length(_) | Framing::UntilClose => return Ok(None),
    };
    Ok(Some(HttpResponse {
        status: head.status,
        body,
    }))
}

/// The answer once the peer has closed: a close-delimited body ends here.
fn parse_response_at_eof(raw: &[u8]) -> Result<HttpResponse, ExchangeError> {
    if raw.is_empty() {
        return Err(ExchangeError::Malformed(
            "connection closed without an answer",
        ));
    }
    if let Some(response) = parse_response(raw)? {
        return Ok(response);
    }
    let mut raw = raw;
    loop {
        let head = parse_head(raw)?.ok_or(ExchangeError::Malformed("truncated head"))?;
        let rest = &raw[head.body_start..];
        if (100..200).contains(&head.status) {
            raw = rest;
            continue;
        }
        return match head.framing {
            Framing::UntilClose => Ok(HttpResponse {
                status: head.status,
                body: rest.to_vec(),
            }),
            Framing::Length(_) | Framing::Chunked => {
                Err(ExchangeError::Malformed("truncated body"))
            }
        };
    }
}

/// Decodes a chunked body; `None` while it is incomplete.
fn dechunk(mut raw: &[u8]) -> Result<Option<Vec<u8>>, ExchangeError> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(raw, b"\r\n") else {
            return Ok(None);
        };
        let size_text = std::str::from_utf8(&raw[..line_end])
            .map_err(|_| ExchangeError::Malformed("chunk size is not text"))?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| ExchangeError::Malformed("bad chunk size"))?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            // Trailers, if any, end with an empty line; the body is complete either way.
            return Ok(Some(body));
        }
        if raw.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(raw: &str) -> HttpResponse {
        match parse_response(raw.as_bytes()) {
            Ok(Some(response)) => response,
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    #[test]
    fn answers_are_framed_by_length_chunks_or_close() {
        let by_length = parsed("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        assert_eq!(
            by_length,
            HttpResponse {
                status: 200,
                body: b"ok".to_vec()
            }
        );
        let chunked = parsed(
            "HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        );
        assert_eq!(
            chunked,
            HttpResponse {
                status: 503,
                body: b"abcde".to_vec()
            }
        );
        let interim =
            parsed("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(interim.status, 200);
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab"),
            Ok(None)
        ));
        let closed = parse_response_at_eof(b"HTTP/1.0 200 OK\r\n\r\nuntil close");
        assert_eq!(closed.unwrap().body, b"until close".to_vec());
        assert!(parse_response_at_eof(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab").is_err());
        assert!(parse_response_at_eof(b"").is_err());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 abc OK\r\n\r\n").is_err());
    }

    #[test]
    fn a_synced_head_is_not_syncing_and_recent() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let max = Duration::from_secs(10);
        let answer = |syncing: &str, block: &str| {
            HttpResponse {
            status: 200,
            body: format!(
                r#"[{{"jsonrpc":"2.0","id":2,"result":{block}}},{{"jsonrpc":"2.0","id":1,"result":{syncing}}}]"#
            )
            .into_bytes(),
        }
        };
        let block_at = |secs: u64| format!(r#"{{"number":"0x10","timestamp":"{secs:#x}"}}"#);
        let judged = |response: &HttpResponse| judge_synced_head(response, max, now);
        // At most the max age (any order in the batch; a head in the future is age zero).
        for timestamp in [1_000_000 - 10, 1_000_000 - 1, 1_000_000, 1_000_005] {
            assert_eq!(
                judged(&answer("false", &block_at(timestamp))),
                ProbeOutcome::Pass
            );
        }
        let fail = |description: &str| ProbeOutcome::Fail {
            reason: REASON_FAILED,
            description: description.into(),
        };
        assert_eq!(
            judged(&answer("false", &block_at(1_000_000 - 11))),
            fail("head is 11 s old (max 10 s)")
        );
        assert_eq!(
            judged(&answer(
                r#"{"currentBlock":"0x1","highestBlock":"0x9"}"#,
                &block_at(1_000_000 - 30)
            )),
            fail("syncing; head is 30 s old (max 10 s)")
        );
        assert_eq!(
            judged(&answer("false", "null")),
            fail("eth_getBlockByNumber: no latest block with a timestamp")
        );
        let error = HttpResponse {
            status: 200,
            body: br#"[{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"nope"}},{"jsonrpc":"2.0","id":2,"result":null}]"#.to_vec(),
        };
        assert_eq!(judged(&error), fail("eth_syncing: JSON-RPC error: nope"));
        let single = HttpResponse {
            status: 200,
            body: br#"{"jsonrpc":"2.0","id":1,"result":"0x1"}"#.to_vec(),
        };
        assert!(matches!(judged(&single), ProbeOutcome::Fail { .. }));
        let missing = HttpResponse {
            status: 200,
            body: br#"[{"jsonrpc":"2.0","id":1,"result":false}]"#.to_vec(),
        };
        assert_eq!(
            judged(&missing),
            fail("eth_getBlockByNumber: no answer in the batch")
        );
        let refused = HttpResponse {
            status: 503,
            body: b"busy".to_vec(),
        };
        assert_eq!(
            judged(&refused),
            ProbeOutcome::Fail {
                reason: REASON_CODE_MISMATCH,
                description: "HTTP 503: busy".into()
            }
        );
    }

    #[test]
    fn failing_answers_quote_the_agents_reason() {
        let unhealthy = HttpResponse {
            status: 503,
            body: br#"{"healthy":false,"reason":"head is 300 s old"}"#.to_vec(),
        };
        assert_eq!(
            judge_http(&unhealthy),
            ProbeOutcome::Fail {
                reason: REASON_CODE_MISMATCH,
                description: "HTTP 503: head is 300 s old".into()
            }
        );
        let long = HttpResponse {
            status: 500,
            body: vec![b'x'; 1000],
        };
        let ProbeOutcome::Fail { description, .. } = judge_http(&long) else {
            panic!("a 500 passed");
        };
        assert!(description.len() < 220, "{description}");
        let rpc_error = HttpResponse {
            status: 200,
            body: br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"syncing"}}"#
                .to_vec(),
        };
        assert_eq!(
            judge_json_rpc(&rpc_error),
            ProbeOutcome::Fail {
                reason: REASON_FAILED,
                description: "JSON-RPC error: syncing".into()
            }
        );
        let block = HttpResponse {
            status: 200,
            body: br#"{"jsonrpc":"2.0","id":1,"result":"0x2a"}"#.to_vec(),
        };
        assert_eq!(judge_json_rpc(&block), ProbeOutcome::Pass);
    }
}
