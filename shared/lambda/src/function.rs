//! What every function of the control plane shares around its handler: why it could not
//! start ([`InitError`]), what one event produced ([`Handled`]), how its EMF metrics reach
//! CloudWatch ([`write_metrics`]), how an invocation ends ([`answer`]) and the runtime loop
//! ([`serve`]).

use std::future::Future;
use std::io::Write;

use lambda_runtime::{LambdaEvent, service_fn};

use nodefleet_aws::s3::S3StoreError;
use serde_json::Value;

use crate::env::EnvError;

/// Why a function could not start.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error("state store: {0}")]
    State(#[from] nodefleet_ports::StateError),
    #[error("scheduler: {0}")]
    Scheduler(#[from] nodefleet_ports::SchedulerError),
    #[error("object store: {0}")]
    Store(#[from] S3StoreError),
}

/// What one event produced: the answer to return and the EMF documents to write.
#[derive(Debug, Clone, PartialEq)]
pub struct Handled {
    pub answer: Value,
    pub metrics: Vec<Value>,
}

/// Writes each EMF document as one line on stdout, where CloudWatch Logs picks it up.
pub fn write_metrics(documents: &[Value]) {
    let mut out = std::io::stdout().lock();
    for document in documents {
        // A lost metric line must not fail the invocation.
        let _ = writeln!(out, "{document}");
    }
    let _ = out.flush();
}

/// How an invocation that `handled` ends: its metrics written and its answer returned, or
/// its error logged (with whether the next try may succeed, `retryable`) and returned, so
/// that the runtime reports a failed invocation and EventBridge retries it.
pub fn answer<E: std::fmt::Display>(
    handled: Result<Handled, E>,
    failed: &str,
    retryable: impl Fn(&E) -> bool,
) -> Result<Value, E> {
    match handled {
        Ok(handled) => {
            write_metrics(&handled.metrics);
            Ok(handled.answer)
        }
        Err(error) => {
            tracing::error!(%error, retryable = retryable(&error), "{failed}");
            Err(error)
        }
    }
}

/// Serves events with `invoke(payload, request id)` until the runtime shuts the sandbox
/// down.
pub async fn serve<F, Fut, E>(invoke: F) -> Result<(), lambda_runtime::Error>
where
    F: Fn(Value, String) -> Fut,
    Fut: Future<Output = Result<Value, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let invoke = &invoke;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        invoke(event.payload, event.context.request_id)
            .await
            .map_err(lambda_runtime::Error::from)
    }))
    .await
}
