//! Sorting AWS SDK errors into the ports' error taxonomies.
//!
//! Every adapter classifies an [`SdkError`] with [`classify`] first, then maps the few
//! service error codes that mean something to its port (a failed condition, a missing key)
//! and hands the rest to the port's generic variants:
//!
//! | SDK error | [`AwsFailure`] | retryable |
//! |---|---|---|
//! | no connection, DNS, I/O, timeout, unreadable response | `Unavailable` | yes |
//! | a 5xx answer, or a throttling code (`ThrottlingException`, `SlowDown`, ...) | `Throttled` / `Unavailable` | yes |
//! | any other service error | `Service { code, message }` | decided by the adapter |
//! | a request the SDK refused to build | `Service { code: "construction" }` | no |

use std::fmt;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// Service error codes that mean "slow down" across DynamoDB, ECS, ELBv2 and S3.
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "LimitExceededException",
    "SlowDown",
    "BandwidthLimitExceeded",
    "TransactionInProgressException",
];

/// An SDK error, sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AwsFailure {
    /// The service said to slow down.
    Throttled(String),
    /// The service could not be reached or failed on its side (5xx).
    Unavailable(String),
    /// The service answered with an error; `code` is its error code (may be empty).
    Service { code: String, message: String },
}

impl AwsFailure {
    pub fn code(&self) -> Option<&str> {
        match self {
            AwsFailure::Service { code, .. } => Some(code),
            _ => None,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            AwsFailure::Throttled(message) | AwsFailure::Unavailable(message) => message,
            AwsFailure::Service { message, .. } => message,
        }
    }
}

impl fmt::Display for AwsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AwsFailure::Throttled(message) => write!(f, "throttled: {message}"),
            AwsFailure::Unavailable(message) => write!(f, "unavailable: {message}"),
            AwsFailure::Service { code, message } => write!(f, "{code}: {message}"),
        }
    }
}

/// Sorts an SDK error (see the module doc).
pub fn classify<E>(error: &SdkError<E, HttpResponse>) -> AwsFailure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match error {
        SdkError::ServiceError(service) => {
            let err = service.err();
            let code = err.code().unwrap_or_default().to_owned();
            let message = err
                .message()
                .map(str::to_owned)
                .unwrap_or_else(|| error_chain(err));
            let status = Some(service.raw().status().as_u16());
            if THROTTLING_CODES.contains(&code.as_str()) || status == Some(429) {
                AwsFailure::Throttled(format!("{code}: {message}"))
            } else if status.is_some_and(|s| s >= 500) {
                AwsFailure::Unavailable(format!("{code} ({status:?}): {message}"))
            } else {
                AwsFailure::Service { code, message }
            }
        }
        SdkError::ConstructionFailure(_) => AwsFailure::Service {
            code: "construction".to_owned(),
            message: error_chain(error),
        },
        // Dispatch failures, timeouts and unreadable responses: the request may not have
        // reached the service, or its answer was lost. Retrying is the caller's call, and
        // the ports' idempotency makes it safe.
        _ => AwsFailure::Unavailable(error_chain(error)),
    }
}

/// The error and all its sources, joined: SDK errors put the useful part in a source.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
