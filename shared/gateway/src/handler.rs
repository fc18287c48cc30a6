//! The gateway handler: HTTP method and body in, HTTP response out.
//!
//! Both front doors call [`Gateway::handle`]: the Lambda adapter (`lambda`) for API Gateway
//! events and the plain HTTP server (`server`) for `nodefleet gateway` and `nodefleet up`.
//! The decisions are `nodefleet_gateway_core`'s; this module adds the two I/O steps (the
//! head block for `eth_getLogs` tags, the upstream call), CORS, and one JSON log line per
//! request with counts, methods, decision, upstream status and latency, never params or bodies.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};
use nodefleet_gateway_core::{Policy, Reply, UpstreamAnswer, prepare};
use tokio::time::Instant;

use crate::head::HeadCache;
use crate::traffic::TrafficRecorder;
use crate::upstream::{Upstream, UpstreamCall};

/// At most this many distinct method names go into one log line.
const LOGGED_METHODS: usize = 16;
/// Browsers may cache a CORS preflight answer this long (seconds).
const CORS_MAX_AGE: &str = "86400";

/// The JSON-RPC gateway over an upstream `U`.
#[derive(Debug)]
pub struct Gateway<U> {
    policy: Arc<Policy>,
    upstream: U,
    head: HeadCache,
    /// Where every answered request is counted, when someone charts them.
    traffic: Option<Arc<TrafficRecorder>>,
}

impl<U: Upstream> Gateway<U> {
    pub fn new(policy: Policy, upstream: U) -> Gateway<U> {
        Gateway {
            policy: Arc::new(policy),
            upstream,
            head: HeadCache::default(),
            traffic: None,
        }
    }

    /// Counts every answered JSON-RPC request, with its latency and whether it failed, in
    /// `traffic` (the local fleet's status page charts it).
    pub fn with_traffic(mut self, traffic: Arc<TrafficRecorder>) -> Gateway<U> {
        self.traffic = Some(traffic);
        self
    }

    /// The policy in force (its limits tell the HTTP front doors the body cap).
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The upstream calls go to.
    pub fn upstream(&self) -> &U {
        &self.upstream
    }

    /// Answers one HTTP request. Never panics on any input (see the property tests).
    pub async fn handle(&self, method: &Method, body: &[u8]) -> Response<Bytes> {
        match *method {
            Method::POST => {}
            Method::OPTIONS => return preflight(),
            _ => return method_not_allowed(),
        }
        let started = Instant::now();
        let mut exchange = match prepare(body, &self.policy) {
            Ok(exchange) => exchange,
            Err(reply) => {
                tracing::info!(
                    target: "nodefleet::rpc",
                    decision = "rejected",
                    http_status = reply.status,
                    body_bytes = body.len(),
                    latency_us = started.elapsed().as_micros() as u64,
                );
                self.count(started, reply.status >= 500);
                return json_response(reply);
            }
        };
        if exchange.needs_head() {
            exchange.resolve_head(self.head.head(&self.upstream).await);
        }
        let counts = exchange.counts();
        let request = exchange.upstream_request();
        let answer = match request {
            None => None,
            Some(request) => {
                let call = UpstreamCall {
                    body: Bytes::from(request.body),
                    retryable: request.retryable,
                };
                Some(self.upstream.send(call).await)
            }
        };
        let methods = exchange.methods(LOGGED_METHODS).join(",");
        let denied_methods = exchange.denied_methods().join(",");
        let reply = exchange.finish(answer.as_ref().map(|result| match result {
            Ok(response) => Ok(UpstreamAnswer {
                status: response.status,
                body: &response.body,
            }),
            Err(e) => Err(e.failure()),
        }));
        let (upstream_status, upstream_error) = match &answer {
            None => (None, None),
            Some(Ok(response)) => (Some(response.status), None),
            Some(Err(error)) => (None, Some(error.to_string())),
        };
        tracing::info!(
            target: "nodefleet::rpc",
            decision = if answer.is_some() { "forwarded" } else { "local" },
            methods,
            denied_methods,
            items = counts.items,
            forwarded = counts.forwarded,
            denied = counts.denied,
            invalid = counts.invalid,
            local = counts.local,
            upstream_status,
            upstream_error,
            http_status = reply.status,
            latency_us = started.elapsed().as_micros() as u64,
        );
        let upstream_failed =
            upstream_error.is_some() || upstream_status.is_some_and(|s| !(200..300).contains(&s));
        self.count(started, upstream_failed || reply.status >= 500);
        json_response(reply)
    }

    /// Counts a request that took since `started` in the traffic recorder, if there is one.
    fn count(&self, started: Instant, failed: bool) {
        if let Some(traffic) = &self.traffic {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            traffic.record(now_ms, started.elapsed(), failed);
        }
    }
}

/// The HTTP response for a reply: JSON content type (unless 204) and the CORS origin header.
/// Every answer of the gateway goes through here, whichever front door sends it.
pub fn json_response(reply: Reply) -> Response<Bytes> {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(Bytes::from(reply.body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if status != StatusCode::NO_CONTENT {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

fn preflight() -> Response<Bytes> {
    let mut response = json_response(Reply {
        status: 204,
        body: String::new(),
    });
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(CORS_MAX_AGE),
    );
    response
}

fn method_not_allowed() -> Response<Bytes> {
    let mut body = String::new();
    nodefleet_gateway_core::jsonrpc::write_error(
        &mut body,
        nodefleet_gateway_core::jsonrpc::null_id(),
        nodefleet_gateway_core::jsonrpc::codes::INVALID_REQUEST,
        "JSON-RPC requests must use HTTP POST",
    );
    let mut response = json_response(Reply { status: 405, body });
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
    response
}
