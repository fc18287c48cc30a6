//! What every function of the control plane shares around its handler: why it could not
//! start ([`InitError`]), what one event produced ([`Handled`]), and how its EMF metrics
//! reach CloudWatch ([`write_metrics`]).

use std::io::Write;

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
