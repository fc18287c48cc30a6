//! The Lambda Runtime API on loopback.
//!
//! A real Lambda binary started with [`FakeRuntimeApi::env`] polls
//! `GET /2018-06-01/runtime/invocation/next`; the fake hands it the events queued with
//! [`FakeRuntimeApi::invoke`] and collects what the binary posts back. The moment of the
//! first poll is the binary's "ready" time, which the init-time benchmark reads.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::http_server;

const PREFIX: &str = "/2018-06-01/runtime";

/// What the function answered for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub request_id: String,
    /// `Ok(response payload)` or `Err(error payload)`.
    pub outcome: Result<String, String>,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<(String, String)>,
    done: Vec<Invocation>,
    init_error: Option<String>,
    first_poll: Option<Instant>,
    next_id: u64,
}

/// A fake Lambda Runtime API.
#[derive(Debug)]
pub struct FakeRuntimeApi {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Drop for FakeRuntimeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeRuntimeApi {
    pub async fn start() -> FakeRuntimeApi {
        let state = Arc::new(Mutex::new(State::default()));
        let changed = Arc::new(Notify::new());
        let (s, c) = (state.clone(), changed.clone());
        let (addr, task) = http_server::serve(move |parts, body| {
            let (state, changed) = (s.clone(), c.clone());
            async move { route(&state, &changed, parts.method, parts.uri.path(), body).await }
        })
        .await;
        FakeRuntimeApi {
            addr,
            state,
            changed,
            task,
        }
    }

    /// The environment a Lambda process needs to talk to this API.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_LAMBDA_RUNTIME_API", self.addr.to_string()),
            ("AWS_LAMBDA_FUNCTION_NAME", "rpc-gateway".to_owned()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".to_owned()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
            (
                "AWS_LAMBDA_LOG_GROUP_NAME",
                "/aws/lambda/rpc-gateway".to_owned(),
            ),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "test".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Queues an event and returns its request id.
    pub fn invoke(&self, payload: impl Into<String>) -> String {
        let mut state = self.state.lock().unwrap();
        state.next_id += 1;
        let id = format!("req-{}", state.next_id);
        state.queue.push_back((id.clone(), payload.into()));
        drop(state);
        self.changed.notify_waiters();
        id
    }

    /// Waits for the function's answer to `request_id`.
    pub async fn outcome(&self, request_id: &str, timeout: Duration) -> Option<Invocation> {
        self.wait_for(timeout, |s| {
            s.done.iter().find(|i| i.request_id == request_id).cloned()
        })
        .await
    }

    /// Waits for the function's first poll for an event: the moment it is ready.
    pub async fn first_poll(&self, timeout: Duration) -> Option<Instant> {
        self.wait_for(timeout, |s| s.first_poll).await
    }

    /// An init error the function reported, if any.
    pub fn init_error(&self) -> Option<String> {
        self.state.lock().unwrap().init_error.clone()
    }

    async fn wait_for<T>(
        &self,
        timeout: Duration,
        probe: impl Fn(&State) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if let Some(found) = probe(&self.state.lock().unwrap()) {
                return Some(found);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return probe(&self.state.lock().unwrap());
            }
        }
    }
}

async fn route(
    state: &Mutex<State>,
    changed: &Notify,
    method: Method,
    path: &str,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return status(StatusCode::NOT_FOUND);
    };
    match (method, rest) {
        (Method::GET, "/invocation/next") => {
            state
                .lock()
                .unwrap()
                .first_poll
                .get_or_insert_with(Instant::now);
            changed.notify_waiters();
            loop {
                let notified = changed.notified();
                if let Some((id, payload)) = state.lock().unwrap().queue.pop_front() {
                    let deadline = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_millis()
                        + 30_000;
                    return Response::builder()
                        .header("lambda-runtime-aws-request-id", id)
                        .header("lambda-runtime-deadline-ms", deadline.to_string())
                        .header(
                            "lambda-runtime-invoked-function-arn",
                            "arn:aws:lambda:us-east-1:123456789012:function:rpc-gateway",
                        )
                        .header(
                            "lambda-runtime-trace-id",
                            "Root=1-5759e988-bd862e3fe1be46a994272793",
                        )
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(payload)))
                        .unwrap();
                }
                notified.await;
            }
        }
        (Method::POST, "/init/error") => {
            state.lock().unwrap().init_error = Some(String::from_utf8_lossy(&body).into_owned());
            changed.notify_waiters();
            status(StatusCode::ACCEPTED)
        }
        (Method::POST, rest) => {
            let Some(rest) = rest.strip_prefix("/invocation/") else {
                return status(StatusCode::NOT_FOUND);
            };
            let text = String::from_utf8_lossy(&body).into_owned();
            let invocation = match rest.rsplit_once('/') {
                Some((id, "response")) => Invocation {
                    request_id: id.to_owned(),
                    outcome: Ok(text),
                },
                Some((id, "error")) => Invocation {
                    request_id: id.to_owned(),
                    outcome: Err(text),
                },
                _ => return status(StatusCode::NOT_FOUND),
            };
            state.lock().unwrap().done.push(invocation);
            changed.notify_waiters();
            status(StatusCode::ACCEPTED)
        }
        _ => status(StatusCode::NOT_FOUND),
    }
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = code;
    response
}
