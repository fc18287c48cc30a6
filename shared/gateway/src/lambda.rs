//! The gateway behind API Gateway: REST API (payload v1) and HTTP API (payload v2) proxy
//! events, both decoded by `lambda_http` into one `http::Request`.

use std::convert::Infallible;
use std::sync::Arc;

use lambda_http::{Body, Request, Response, service_fn};

use crate::handler::Gateway;
use crate::upstream::Upstream;

/// Answers one API Gateway event.
pub async fn respond<U: Upstream>(gateway: &Gateway<U>, request: Request) -> Response<Body> {
    let response = gateway
        .handle(request.method(), request.body().as_ref())
        .await;
    response.map(|bytes| {
        if bytes.is_empty() {
            Body::Empty
        } else {
            // The gateway writes its bodies from Rust strings and upstream JSON it has
            // validated as UTF-8, so this is text; fall back to binary rather than lose it.
            match String::from_utf8(bytes.to_vec()) {
                Ok(text) => Body::Text(text),
                Err(e) => Body::Binary(e.into_bytes()),
            }
        }
    })
}

/// Runs the Lambda runtime loop until the environment shuts the process down.
pub async fn run<U: Upstream>(gateway: Arc<Gateway<U>>) -> Result<(), lambda_http::Error> {
    lambda_http::run(service_fn(move |request: Request| {
        let gateway = gateway.clone();
        async move { Ok::<_, Infallible>(respond(&gateway, request).await) }
    }))
    .await
}
