//! The local fleet's console: the live status page and the control API of a running
//! `nodefleet up`, on a listener of its own (`--console`, default [`DEFAULT_CONSOLE_ADDR`]).
//!
//! The public JSON-RPC port stays what it is in production (the gateway, nothing else); the
//! operator's surface is apart, on loopback by default:
//!
//! | request | answer |
//! |---|---|
//! | `GET /` | the status page: one self-contained HTML file (no CDN: [`PAGE`]) |
//! | `GET /api/status` | the fleet status, the document `nodefleet status --json` prints |
//! | `GET /api/status?after=MS` | the same, once the loop has published one newer than `MS` (its `updated_at`), or after [`LONG_POLL_WAIT`] |
//! | `GET /api/events?limit=N` | `{"events": [...]}`, the audit trail, newest first |
//! | `POST /api/chaos/fail-zone/{zone}` | fail a zone: its nodes are lost, launches in it fail |
//! | `POST /api/chaos/restore-zone/{zone}` | end that |
//! | `POST /api/replace/{node}` | replace one node, as the reactor would |
//! | `POST /api/snapshot/round` | start a snapshot round now |
//!
//! The page asks `/api/status?after=<the updated_at it shows>` again as soon as it has an
//! answer (a long poll): it gets every status the loop publishes (one per reconcile, five a
//! second while the fleet acts), so a node that is down for a fifth of a second between a
//! kill and its replacement is drawn down, which a one-second poll misses half the time.
//! The CLI's `--dir` commands find
//! the console's URL in the status file (`console`) and call the same API, so the commands
//! and the page see and do the same things.
//!
//! A `POST` must carry the header [`CONTROL_HEADER`]: a web page of another origin cannot set
//! a custom header without a CORS preflight, which this server never grants, so a page the
//! operator happens to browse cannot fail a zone of the fleet on their machine.
//!
//! What the API does is the [`ConsoleBackend`]'s: [`route`] is a pure function from method
//! and path to a [`ConsoleRoute`], and [`serve`] only moves bytes, on the gateway's own
//! accept loop (`nodefleet_gateway::server::serve_http`).
//!
//! # Error policy
//!
//! Every request gets an answer: JSON `{"error": "..."}` with 400 (a bad request), 403 (no
//! control header), 404 (no such route, zone or node), 405 (wrong method), 409 (the fleet
//! cannot do it now) or 500 (the fleet's state could not be read or written). A backend
//! error never stops the server; a failed accept is logged and the server keeps serving.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use nodefleet_ports::{NodeId, Zone};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::status::{EventStatus, FleetStatus};

/// Where the console listens unless told: loopback (the control API has no login: it is the
/// operator's own machine), next to the gateway's 8545.
pub const DEFAULT_CONSOLE_ADDR: &str = "127.0.0.1:8550";
/// The header every control request must carry (see the module doc).
pub const CONTROL_HEADER: &str = "x-nodefleet-control";
/// The status page.
pub const PAGE: &str = include_str!("console/page.html");
/// The longest a `GET /api/status?after=` waits for a newer status: the loop publishes one
/// at least every second, so this is only reached when it is stuck; below the page's own
/// five-second request timeout.
pub const LONG_POLL_WAIT: Duration = Duration::from_secs(3);
/// Events `GET /api/events` returns when no `limit` is given, and the most it returns.
pub const DEFAULT_EVENTS: usize = 100;
pub const MAX_EVENTS: usize = 10_000;

/// An action on the running fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlRequest {
    FailZone(Zone),
    RestoreZone(Zone),
    Replace(NodeId),
    SnapshotRound,
}

/// Why the fleet did not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Failed(String),
}

impl ControlError {
    fn status(&self) -> StatusCode {
        match self {
            ControlError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ControlError::NotFound(_) => StatusCode::NOT_FOUND,
            ControlError::Conflict(_) => StatusCode::CONFLICT,
            ControlError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// What the console shows and does: the running fleet.
#[async_trait]
pub trait ConsoleBackend: Send + Sync + 'static {
    /// The fleet status now (as `nodefleet status --json` prints it); with `after`, the first
    /// one published after that `updated_at`, waiting up to `wait` for it (then the latest).
    async fn status(&self, after: Option<u64>, wait: Duration)
    -> Result<FleetStatus, ControlError>;
    /// The newest `limit` audit events, newest first.
    async fn events(&self, limit: usize) -> Result<Vec<EventStatus>, ControlError>;
    /// Does `request`; the answer's JSON says what happened.
    async fn control(&self, request: ControlRequest) -> Result<Value, ControlError>;
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleRoute {
    Page,
    /// With the `updated_at` the caller has (`?after=`), if any.
    Status {
        after: Option<u64>,
    },
    Events {
        limit: usize,
    },
    Control(ControlRequest),
    /// A control path without the control header.
    Forbidden,
    MethodNotAllowed,
    BadRequest(String),
    NotFound,
}

/// Decides what `method` on `path` (with its query, if any) asks for.
pub fn route(method: &Method, path_and_query: &str, has_control_header: bool) -> ConsoleRoute {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let read = |route: ConsoleRoute| {
        if *method == Method::GET || *method == Method::HEAD {
            route
        } else {
            ConsoleRoute::MethodNotAllowed
        }
    };
    let control = |request: ConsoleRoute| {
        if *method != Method::POST {
            ConsoleRoute::MethodNotAllowed
        } else if !has_control_header {
            ConsoleRoute::Forbidden
        } else {
            request
        }
    };
    match segments.as_slice() {
        [""] | ["index.html"] => read(ConsoleRoute::Page),
        ["api", "status"] => read(match query_value(query, "after") {
            None => ConsoleRoute::Status { after: None },
            Some(value) => match value.parse::<u64>() {
                Ok(after) => ConsoleRoute::Status { after: Some(after) },
                Err(_) => ConsoleRoute::BadRequest(format!(
                    "after must be a time in milliseconds, not {value:?}"
                )),
            },
        }),
        ["api", "events"] => read(match events_limit(query) {
            Ok(limit) => ConsoleRoute::Events { limit },
            Err(message) => ConsoleRoute::BadRequest(message),
        }),
        ["api", "chaos", "fail-zone", zone] => control(ConsoleRoute::Control(
            ControlRequest::FailZone(Zone::new(*zone)),
        )),
        ["api", "chaos", "restore-zone", zone] => control(ConsoleRoute::Control(
            ControlRequest::RestoreZone(Zone::new(*zone)),
        )),
        ["api", "replace", node] => control(ConsoleRoute::Control(ControlRequest::Replace(
            NodeId::new(*node),
        ))),
        ["api", "snapshot", "round"] => {
            control(ConsoleRoute::Control(ControlRequest::SnapshotRound))
        }
        _ => ConsoleRoute::NotFound,
    }
}

/// The `limit` of an events query: [`DEFAULT_EVENTS`] when absent, 1 to [`MAX_EVENTS`].
fn events_limit(query: &str) -> Result<usize, String> {
    let Some(value) = query_value(query, "limit") else {
        return Ok(DEFAULT_EVENTS);
    };
    match value.parse::<usize>() {
        Ok(limit) if (1..=MAX_EVENTS).contains(&limit) => Ok(limit),
        _ => Err(format!(
            "limit must be a number from 1 to {MAX_EVENTS}, not {value:?}"
        )),
    }
}

/// The value of `name` in a query string (`a=1&b=2`), if it is there.
fn query_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        pair.split_once('=')
            .and_then(|(key, value)| (key == name).then_some(value))
    })
}

/// Serves the console for `backend` on `listener` until `shutdown` resolves, then waits for
/// open requests.
pub async fn serve<B: ConsoleBackend>(
    listener: TcpListener,
    backend: Arc<B>,
    shutdown: impl Future<Output = ()>,
) {
    let handle = move |request: Request<Incoming>| {
        let backend = backend.clone();
        async move { answer(backend.as_ref(), &request).await }
    };
    nodefleet_gateway::server::serve_http(listener, handle, shutdown).await;
}

/// The answer to one request (its body is not read: no route takes one).
pub async fn answer<B: ConsoleBackend + ?Sized, T>(
    backend: &B,
    request: &Request<T>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let has_header = request.headers().contains_key(CONTROL_HEADER);
    match route(request.method(), path, has_header) {
        ConsoleRoute::Page => respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            Bytes::from_static(PAGE.as_bytes()),
        ),
        ConsoleRoute::Status { after } => json_result(
            backend
                .status(after, LONG_POLL_WAIT)
                .await
                .map(|status| json!(status)),
        ),
        ConsoleRoute::Events { limit } => json_result(
            backend
                .events(limit)
                .await
                .map(|events| json!({ "events": events })),
        ),
        ConsoleRoute::Control(request) => json_result(backend.control(request).await),
        ConsoleRoute::Forbidden => error(
            StatusCode::FORBIDDEN,
            &format!("a control request needs the {CONTROL_HEADER} header"),
        ),
        ConsoleRoute::MethodNotAllowed => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
        }
        ConsoleRoute::BadRequest(message) => error(StatusCode::BAD_REQUEST, &message),
        ConsoleRoute::NotFound => error(StatusCode::NOT_FOUND, &format!("no such page: {path}")),
    }
}

fn json_result(result: Result<Value, ControlError>) -> Response<Full<Bytes>> {
    match result {
        Ok(value) => respond(
            StatusCode::OK,
            "application/json",
            Bytes::from(value.to_string()),
        ),
        Err(e) => error(e.status(), &e.to_string()),
    }
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    respond(
        status,
        "application/json",
        Bytes::from(json!({ "error": message }).to_string()),
    )
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The page and its data change every second; nothing is worth caching.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// How long a console call may take: a control action runs in the fleet's loop process and
/// answers within a reconcile (a zone failure waits for its nodes' SIGKILL, a replacement
/// for its launch), far below this on a loaded machine.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The most of a console answer that is read: a status with 300 seconds of traffic and 30
/// events is about 60 KB; the full audit trail at [`MAX_EVENTS`] a few MB.
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Why a console call gave no answer the caller can use.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cannot reach the console at {url} (is nodefleet up still running?): {detail}")]
    Unreachable { url: String, detail: String },
    #[error("the console at {url} did not answer within {} s", CALL_TIMEOUT.as_secs())]
    Timeout { url: String },
    #[error("{message}")]
    Refused { status: u16, message: String },
    #[error("the console at {url} answered something that is not JSON: {detail}")]
    Malformed { url: String, detail: String },
}

/// Calls the console at `console` (`http://127.0.0.1:8550`): `GET` or `POST` (with the
/// [`CONTROL_HEADER`]) of `path`, and returns the answer's JSON; an answer other than 200 is
/// [`CallError::Refused`] with the server's message.
pub async fn call(console: &str, method: Method, path: &str) -> Result<Value, CallError> {
    let url = format!("{}{path}", console.trim_end_matches('/'));
    let uri: http::Uri =
        url.parse()
            .map_err(|e: http::uri::InvalidUri| CallError::Unreachable {
                url: url.clone(),
                detail: e.to_string(),
            })?;
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(CALL_TIMEOUT));
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let mut request = Request::builder().method(method.clone()).uri(uri);
    if method == Method::POST {
        request = request.header(CONTROL_HEADER, "1");
    }
    let request = request
        .body(Full::new(Bytes::new()))
        .map_err(|e| CallError::Unreachable {
            url: url.clone(),
            detail: e.to_string(),
        })?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| CallError::Unreachable {
                url: url.clone(),
                detail: error_chain(&e),
            })?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| CallError::Unreachable {
                url: url.clone(),
                detail: e.to_string(),
            })?
            .to_bytes();
        Ok::<_, CallError>((status, body))
    };
    let (status, body) = tokio::time::timeout(CALL_TIMEOUT, exchange)
        .await
        .map_err(|_| CallError::Timeout { url: url.clone() })??;
    let value: Value = serde_json::from_slice(&body).map_err(|e| CallError::Malformed {
        url: url.clone(),
        detail: e.to_string(),
    })?;
    if status != StatusCode::OK {
        let message = value
            .get("error")
            .and_then(Value::as_str)
            .map_or_else(|| format!("HTTP {status}"), str::to_owned);
        return Err(CallError::Refused {
            status: status.as_u16(),
            message,
        });
    }
    Ok(value)
}

/// An error and its sources on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn routes_reads_controls_and_refusals() {
        let get = |path| route(&Method::GET, path, false);
        let post = |path| route(&Method::POST, path, true);
        assert_eq!(get("/"), ConsoleRoute::Page);
        assert_eq!(get("/api/status"), ConsoleRoute::Status { after: None });
        assert_eq!(get("/api/status?x=1"), ConsoleRoute::Status { after: None });
        assert_eq!(
            get("/api/status?after=1764620000000"),
            ConsoleRoute::Status {
                after: Some(1_764_620_000_000)
            }
        );
        assert!(matches!(
            get("/api/status?after=soon"),
            ConsoleRoute::BadRequest(_)
        ));
        assert_eq!(
            get("/api/events"),
            ConsoleRoute::Events {
                limit: DEFAULT_EVENTS
            }
        );
        assert_eq!(
            get("/api/events?limit=5"),
            ConsoleRoute::Events { limit: 5 }
        );
        assert!(matches!(
            get("/api/events?limit=0"),
            ConsoleRoute::BadRequest(_)
        ));
        assert!(matches!(
            get("/api/events?limit=many"),
            ConsoleRoute::BadRequest(_)
        ));
        assert_eq!(
            post("/api/chaos/fail-zone/local-b"),
            ConsoleRoute::Control(ControlRequest::FailZone(Zone::new("local-b")))
        );
        assert_eq!(
            post("/api/chaos/restore-zone/local-b"),
            ConsoleRoute::Control(ControlRequest::RestoreZone(Zone::new("local-b")))
        );
        assert_eq!(
            post("/api/replace/local-a-1"),
            ConsoleRoute::Control(ControlRequest::Replace(NodeId::new("local-a-1")))
        );
        assert_eq!(
            post("/api/snapshot/round"),
            ConsoleRoute::Control(ControlRequest::SnapshotRound)
        );
        assert_eq!(get("/api/snapshot/round"), ConsoleRoute::MethodNotAllowed);
        assert_eq!(post("/api/status"), ConsoleRoute::MethodNotAllowed);
        assert_eq!(
            route(&Method::POST, "/api/snapshot/round", false),
            ConsoleRoute::Forbidden
        );
        assert_eq!(get("/api/replace"), ConsoleRoute::NotFound);
        assert_eq!(get("/nothing/here"), ConsoleRoute::NotFound);
        assert_eq!(post("/api/chaos/fail-zone/a/b"), ConsoleRoute::NotFound);
    }

    #[test]
    fn the_page_is_self_contained() {
        assert!(
            PAGE.contains("/api/status"),
            "the page reads the status API"
        );
        for external in ["http://", "https://", "//cdn"] {
            let outside: Vec<&str> = PAGE
                .lines()
                .filter(|line| line.contains(external))
                .filter(|line| !line.contains("www.w3.org/2000/svg"))
                .collect();
            assert!(
                outside.is_empty(),
                "the page fetches {external}: {outside:?}"
            );
        }
    }
}
