//! The agent's HTTP endpoint: `GET /health` for the load balancer, and `POST /snapshot` for
//! the snapshot updater on an updater node.
//!
//! # `GET /health`
//!
//! 200 `{"healthy":true,"block":..,"head_age_secs":..,"syncing":false,..}` or 503
//! `{"healthy":false,"reason":"head is 75 s old (max 60 s)",..}` ([`crate::health`]). The
//! node is probed on request, not on a timer, so the answer is as fresh as the check; but
//! the verdict is cached for [`HEALTH_CACHE_TTL`] and concurrent checks wait for the one
//! probe in flight, so a flood of checks (every NLB node checks every target, and operators
//! curl) costs the node at most three calls a second. While there is no client to probe
//! (hydrating, stopped for a snapshot, stopping) the answer is 503 with that reason.
//!
//! # `POST /snapshot` (updater role only)
//!
//! Stops the client, makes a snapshot, starts the client again ([`Node::snapshot`]: the
//! same quiesce, upload and resume steps the updater channel, [`crate::updater`], runs one
//! command at a time; one operation runs at a time whichever way it came) and answers 200 with the engine's `CreateSummary` as JSON. The body is optional:
//! `{"publish": false}` uploads and verifies without publishing `latest` (default: publish).
//! Answers: 409 while another snapshot (or channel command) runs, 503 when the node is not healthy or the agent
//! is stopping, 500 when the client did not stop cleanly, `create` failed or the client did
//! not start again; errors are `{"error": "...", "retryable": bool}`. The snapshot runs in a
//! task of its own, so a caller that hangs up does not abandon a stopped client.
//!
//! **Exposure.** The endpoint exists only with the updater role (404 otherwise), on the
//! same port as `/health`, so an operator (or a tool in the VPC) can reach it, which a
//! loopback-only listener would not allow; the snapshot updater itself needs no route to the
//! node, it talks to the agent through the store. What protects it: the updater task is never
//! registered with the RPC load balancer (clients cannot reach its port), the task's
//! security group admits the agent port from the control plane only, it can do nothing but
//! snapshot what the node already has (no input reaches the file system or a command line),
//! one at a time, and an optional bearer token (`control_token`) is checked when set.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;

use crate::health::{Health, Thresholds, judge};
use crate::node::{Node, Phase, SnapshotFailure};
use crate::probe::RpcClient;
use crate::shutdown::Shutdown;

/// How long a verdict is reused: NLB checks every 10 or 30 s per load balancer node, so a
/// second of staleness changes nothing for them, while it caps the probes a flood of checks
/// can cause at one a second.
pub const HEALTH_CACHE_TTL: Duration = Duration::from_secs(1);
/// The largest `POST /snapshot` body read: it is a tiny JSON object.
const MAX_CONTROL_BODY: usize = 4 * 1024;

/// Why the listener could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("{addr} is already in use; choose another health port")]
    InUse { addr: SocketAddr },
    #[error("cannot listen on {addr}: {source}")]
    Other {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Opens the agent's listener, turning "address in use" into a clear error.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AddrInUse => BindError::InUse { addr },
            _ => BindError::Other { addr, source },
        })
}

/// Probes the node and judges it, with the cache described in the module doc.
#[derive(Debug)]
pub struct HealthEndpoint {
    rpc: RpcClient,
    thresholds: Thresholds,
    ttl: Duration,
    cache: Mutex<Option<(Instant, Health)>>,
}

impl HealthEndpoint {
    pub fn new(rpc: RpcClient, thresholds: Thresholds) -> HealthEndpoint {
        HealthEndpoint {
            rpc,
            thresholds,
            ttl: HEALTH_CACHE_TTL,
            cache: Mutex::new(None),
        }
    }

    /// Reuses a verdict for `ttl` instead of [`HEALTH_CACHE_TTL`] (zero: probe every time).
    pub fn with_cache_ttl(mut self, ttl: Duration) -> HealthEndpoint {
        self.ttl = ttl;
        self
    }

    /// The node's health now (or at most the cache's age ago).
    pub async fn health(&self) -> Health {
        let mut cache = self.cache.lock().await;
        if let Some((at, health)) = cache.as_ref()
            && at.elapsed() < self.ttl
        {
            return health.clone();
        }
        let observation = self.rpc.observe().await;
        let health = judge(&observation, &self.thresholds, SystemTime::now());
        *cache = Some((Instant::now(), health.clone()));
        health
    }

    /// The node's health in `phase`: unhealthy without a probe when there is no client to
    /// probe (hydrating, stopped for a snapshot, stopping), else [`HealthEndpoint::health`].
    /// What `/health` answers and what the updater channel reports.
    pub async fn health_in(&self, phase: &Phase) -> Health {
        match phase.unhealthy_reason() {
            Some(reason) => Health::unhealthy(reason),
            None => self.health().await,
        }
    }
}

/// The updater's control: the node to snapshot, the optional token, the agent's shutdown.
#[derive(Debug)]
pub(crate) struct Control {
    pub node: Arc<Node>,
    pub token: Option<String>,
    pub shutdown: Shutdown,
}

/// What the endpoint serves.
#[derive(Debug)]
pub struct Server {
    health: Arc<HealthEndpoint>,
    phase: Option<watch::Receiver<Phase>>,
    control: Option<Control>,
}

impl Server {
    /// `/health` only, always probing (no lifecycle around it).
    pub fn health_only(health: HealthEndpoint) -> Server {
        Server {
            health: Arc::new(health),
            phase: None,
            control: None,
        }
    }

    /// `/health` that follows the node's phase, plus `/snapshot` when `control` is given.
    pub(crate) fn for_node(
        health: Arc<HealthEndpoint>,
        phase: watch::Receiver<Phase>,
        control: Option<Control>,
    ) -> Server {
        Server {
            health,
            phase: Some(phase),
            control,
        }
    }

    async fn current_health(&self) -> Health {
        match &self.phase {
            Some(phase) => {
                let phase = phase.borrow().clone();
                self.health.health_in(&phase).await
            }
            None => self.health.health().await,
        }
    }
}

/// Serves `server` on `listener` until `shutdown` resolves, then lets open requests finish.
pub async fn serve(listener: TcpListener, server: Arc<Server>, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: log, pause, keep serving.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let server = server.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let server = server.clone();
            async move { Ok::<_, Infallible>(answer(&server, request).await) }
        });
        let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    graceful.shutdown().await;
}

async fn answer(server: &Server, request: Request<Incoming>) -> Response<Full<Bytes>> {
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/health") => {
            let health = server.current_health().await;
            let status = if health.healthy {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json(status, &health)
        }
        (_, "/health") => error(StatusCode::METHOD_NOT_ALLOWED, "use GET /health", false),
        (method, "/snapshot") => match &server.control {
            None => error(StatusCode::NOT_FOUND, "not found", false),
            Some(_) if method != Method::POST => {
                error(StatusCode::METHOD_NOT_ALLOWED, "use POST /snapshot", false)
            }
            Some(control) => snapshot(control, request).await,
        },
        _ => error(StatusCode::NOT_FOUND, "not found", false),
    }
}

/// The body of `POST /snapshot`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotRequest {
    #[serde(default = "publish_by_default")]
    publish: bool,
}

fn publish_by_default() -> bool {
    true
}

async fn snapshot(control: &Control, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if let Some(token) = &control.token {
        let given = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|given| same_secret(given.as_bytes(), token.as_bytes())) {
            return error(
                StatusCode::UNAUTHORIZED,
                "a valid bearer token is required",
                false,
            );
        }
    }
    let body = match Limited::new(request.into_body(), MAX_CONTROL_BODY)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("the body must be a JSON object of at most {MAX_CONTROL_BODY} bytes"),
                false,
            );
        }
    };
    let wanted = if body.iter().all(u8::is_ascii_whitespace) {
        SnapshotRequest { publish: true }
    } else {
        match serde_json::from_slice::<SnapshotRequest>(&body) {
            Ok(wanted) => wanted,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("the body must be {{\"publish\": true|false}}: {e}"),
                    false,
                );
            }
        }
    };
    let node = control.node.clone();
    let shutdown = control.shutdown.clone();
    let running = tokio::spawn(async move { node.snapshot(wanted.publish, shutdown).await });
    match running.await {
        Ok(Ok(summary)) => json(StatusCode::OK, &summary),
        Ok(Err(failure)) => {
            let status = match &failure {
                SnapshotFailure::Busy => StatusCode::CONFLICT,
                SnapshotFailure::ShuttingDown
                | SnapshotFailure::Hydrating
                | SnapshotFailure::NotHealthy(_)
                | SnapshotFailure::ChainPoint(_) => StatusCode::SERVICE_UNAVAILABLE,
                SnapshotFailure::NotUpdater => StatusCode::NOT_FOUND,
                SnapshotFailure::NotClean(_)
                | SnapshotFailure::ClientRunning
                | SnapshotFailure::Create(_)
                | SnapshotFailure::Restart(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let retryable = failure.is_retryable();
            error(status, &failure.to_string(), retryable)
        }
        Err(join) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("the snapshot task failed: {join}"),
            false,
        ),
    }
}

/// Compares two secrets in time that depends only on their lengths.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    retryable: bool,
}

fn error(status: StatusCode, message: &str, retryable: bool) -> Response<Full<Bytes>> {
    json(
        status,
        &ErrorBody {
            error: message,
            retryable,
        },
    )
}

fn json(status: StatusCode, body: &impl Serialize) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    response
}
