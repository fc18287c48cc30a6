//! The upstream port (where allowed calls go) and its HTTP adapter.
//!
//! [`Upstream`] is the capability "send this JSON-RPC body to a node and bring back its
//! answer". [`HttpUpstream`] sends it to one URL (in AWS, the internal NLB) over a pooled
//! keep-alive HTTP/1.1 client built once per process; `LocalBalancer` (in `balancer`)
//! spreads it over local nodes. Tests use in-memory fakes behind the same trait.
//!
//! # Error policy
//!
//! | error | meaning | retried? |
//! |---|---|---|
//! | [`UpstreamError::ConnectFailed`] | no connection could be made | once, for reads |
//! | [`UpstreamError::ConnectionLost`] | the connection broke before an answer (stale keep-alive) | once, for reads |
//! | [`UpstreamError::TimedOut`] | no answer within the timeout | never: the call may still run |
//! | [`UpstreamError::ResponseTooLarge`] | the answer exceeds the response cap | never |
//!
//! Writes (`eth_sendRawTransaction`) and operator-added methods are never retried
//! ([`UpstreamCall::retryable`] is false): a duplicate submission is worse than an error.
//! Errors carry no address; the client-facing messages come from
//! [`nodefleet_gateway_core::UpstreamFailure`].

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use nodefleet_gateway_core::UpstreamFailure;

use crate::http1::{ConnectionPool, Target};

/// Default upstream timeout: below API Gateway's 29 s integration timeout, so the client
/// gets the gateway's -32051 rather than API Gateway's bare 504.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
/// The most a timeout may be: API Gateway gives up at 29 s.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(28);
/// Cap on an upstream answer. Lambda cannot return more than 6 MB anyway; the plain server
/// allows more for large `eth_getLogs` answers, but never unbounded memory per request.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Idle keep-alive connections are closed after this long; the NLB's idle timeout is 350 s.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// One JSON-RPC body to send.
#[derive(Debug, Clone)]
pub struct UpstreamCall {
    pub body: Bytes,
    /// May be sent again after a connection failure.
    pub retryable: bool,
}

/// The node's answer.
#[derive(Debug, Clone)]
pub struct UpstreamResponse {
    pub status: u16,
    pub body: Bytes,
}

/// Why no answer came back.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum UpstreamError {
    #[error("could not connect to the upstream")]
    ConnectFailed,
    #[error("the upstream connection broke before an answer")]
    ConnectionLost,
    #[error("the upstream did not answer in time")]
    TimedOut,
    #[error("the upstream answer exceeds the response cap")]
    ResponseTooLarge,
    #[error("no upstream node is available")]
    NoNodeAvailable,
}

impl UpstreamError {
    /// Whether sending the same read again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            UpstreamError::ConnectFailed | UpstreamError::ConnectionLost
        )
    }

    /// The client-facing failure.
    pub fn failure(&self) -> UpstreamFailure {
        match self {
            UpstreamError::ConnectFailed
            | UpstreamError::ConnectionLost
            | UpstreamError::NoNodeAvailable => UpstreamFailure::Unavailable,
            UpstreamError::TimedOut => UpstreamFailure::TimedOut,
            UpstreamError::ResponseTooLarge => UpstreamFailure::InvalidResponse { status: 200 },
        }
    }
}

/// Sends JSON-RPC bodies to a node.
pub trait Upstream: Send + Sync + 'static {
    fn send(
        &self,
        call: UpstreamCall,
    ) -> impl Future<Output = Result<UpstreamResponse, UpstreamError>> + Send;
}

/// Settings of an [`HttpUpstream`].
#[derive(Debug, Clone)]
pub struct HttpUpstreamConfig {
    pub timeout: Duration,
    pub max_response_bytes: usize,
}

impl Default for HttpUpstreamConfig {
    fn default() -> Self {
        HttpUpstreamConfig {
            timeout: DEFAULT_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

/// An `http://` upstream (the internal NLB speaks plain HTTP) with keep-alive connections.
#[derive(Debug)]
pub struct HttpUpstream {
    uri: http::Uri,
    pool: ConnectionPool,
    config: HttpUpstreamConfig,
}

/// A mistake in an upstream URL.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UpstreamUrlError {
    #[error("upstream URL {0:?} is not a valid URL")]
    Invalid(String),
    #[error(
        "upstream URL {0:?} must start with http:// (the internal load balancer speaks plain HTTP)"
    )]
    NotHttp(String),
}

impl HttpUpstream {
    /// Builds the client once; it is reused for every call (and, in Lambda, every invocation).
    pub fn new(url: &str, config: HttpUpstreamConfig) -> Result<HttpUpstream, UpstreamUrlError> {
        let uri: http::Uri = url
            .parse()
            .map_err(|_| UpstreamUrlError::Invalid(url.to_owned()))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(UpstreamUrlError::NotHttp(url.to_owned()));
        }
        let host = uri.host().unwrap_or_default();
        let port = uri.port_u16().unwrap_or(80);
        let target = Target {
            authority: format!("{host}:{port}"),
            host_header: uri
                .authority()
                .map_or_else(|| host.to_owned(), |a| a.to_string()),
            path: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.to_string()),
        };
        let pool = ConnectionPool::new(target, POOL_IDLE_TIMEOUT, config.max_response_bytes);
        Ok(HttpUpstream { uri, pool, config })
    }

    /// The URL calls go to.
    pub fn uri(&self) -> &http::Uri {
        &self.uri
    }

    /// One attempt, no retry (the balancer moves to another node instead).
    pub(crate) async fn send_once(&self, body: Bytes) -> Result<UpstreamResponse, UpstreamError> {
        let answer = tokio::time::timeout(self.config.timeout, self.pool.post(&body))
            .await
            .unwrap_or(Err(UpstreamError::TimedOut))?;
        Ok(UpstreamResponse {
            status: answer.status,
            body: answer.body,
        })
    }
}

impl Upstream for HttpUpstream {
    async fn send(&self, call: UpstreamCall) -> Result<UpstreamResponse, UpstreamError> {
        match self.send_once(call.body.clone()).await {
            Err(e) if call.retryable && e.is_retryable() => self.send_once(call.body).await,
            other => other,
        }
    }
}

impl<U: Upstream> Upstream for std::sync::Arc<U> {
    fn send(
        &self,
        call: UpstreamCall,
    ) -> impl Future<Output = Result<UpstreamResponse, UpstreamError>> + Send {
        (**self).send(call)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_are_accepted() {
        let config = HttpUpstreamConfig::default;
        assert!(HttpUpstream::new("http://10.0.0.1:8545", config()).is_ok());
        assert!(HttpUpstream::new("http://internal-nlb.elb.amazonaws.com:8545/", config()).is_ok());
        assert!(matches!(
            HttpUpstream::new("https://x:8545", config()),
            Err(UpstreamUrlError::NotHttp(_))
        ));
        assert!(matches!(
            HttpUpstream::new("x:8545", config()),
            Err(UpstreamUrlError::NotHttp(_))
        ));
        assert!(matches!(
            HttpUpstream::new("http://", config()),
            Err(UpstreamUrlError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn a_refused_connection_is_connect_failed() {
        // Bind and drop to find a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let upstream = HttpUpstream::new(
            &format!("http://127.0.0.1:{port}"),
            HttpUpstreamConfig::default(),
        )
        .unwrap();
        let err = upstream
            .send(UpstreamCall {
                body: Bytes::from_static(b"{}"),
                retryable: true,
            })
            .await
            .unwrap_err();
        assert_eq!(err, UpstreamError::ConnectFailed);
        assert_eq!(err.failure(), UpstreamFailure::Unavailable);
    }
}
