//! The gateway as a plain HTTP/1.1 server (`nodefleet gateway`, `nodefleet up`).
//!
//! Reads each body up to the policy's cap (a larger `Content-Length` is refused before any
//! byte is read), calls [`Gateway::handle`], and stops accepting when `shutdown` resolves,
//! letting requests in flight finish.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use nodefleet_gateway_core::Reply;
use tokio::net::TcpListener;

use crate::handler::{Gateway, json_response};
use crate::upstream::Upstream;

/// Why the listener could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "{addr} is already in use (another nodefleet or node running?); choose another address"
    )]
    InUse { addr: SocketAddr },
    #[error("cannot listen on {addr}: {source}")]
    Other {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Opens a listener, turning "address in use" into a clear error.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AddrInUse => BindError::InUse { addr },
            _ => BindError::Other { addr, source },
        })
}

/// Serves `gateway` on `listener` until `shutdown` resolves, then waits for open requests.
pub async fn serve<U: Upstream>(
    listener: TcpListener,
    gateway: Arc<Gateway<U>>,
    shutdown: impl Future<Output = ()>,
) {
    serve_http(
        listener,
        move |request| {
            let gateway = gateway.clone();
            async move { answer(&gateway, request).await }
        },
        shutdown,
    )
    .await;
}

/// Serves HTTP/1.1 on `listener`, each request answered by `handle`, until `shutdown`
/// resolves, then waits for open requests. A failed accept (out of file descriptors and the
/// like) is logged and the server keeps serving. The gateway and the local fleet's console
/// (`nodefleet_local::console`) both run on this.
pub async fn serve_http<H, F>(listener: TcpListener, handle: H, shutdown: impl Future<Output = ()>)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let handle = handle.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let answered = handle(request);
            async move { Ok::<_, Infallible>(answered.await) }
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

async fn answer<U: Upstream>(
    gateway: &Gateway<U>,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let cap = gateway.policy().limits().max_body_bytes;
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || json_response(Reply::body_too_large(cap)).map(Full::new);
    if declared.is_some_and(|len| len > cap as u64) {
        return too_large();
    }
    let body = match Limited::new(body, cap).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => return too_large(),
        Err(_) => Bytes::new(), // the client went away mid-body; the answer goes nowhere
    };
    gateway.handle(&parts.method, &body).await.map(Full::new)
}
