//! A small HTTP client for tests.

use bytes::Bytes;
use http::{HeaderMap, Method};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A response: status, headers, body as text.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    /// The body as JSON (panics when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// Sends `body` with `method` to `url`.
pub async fn request(method: Method, url: &str, body: impl Into<Bytes>) -> Answer {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let request = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// POSTs a JSON-RPC body.
pub async fn post(url: &str, body: impl Into<Bytes>) -> Answer {
    request(Method::POST, url, body).await
}

/// A client that keeps its connections between requests.
pub type KeepAliveClient = Client<HttpConnector, Full<Bytes>>;

/// A [`KeepAliveClient`], for a stream of requests.
pub fn client() -> KeepAliveClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// POSTs a JSON-RPC body with `client`; a failure to get an answer is an `Err` (with the
/// reason), not a panic, so a load generator can count it.
pub async fn try_post(
    client: &KeepAliveClient,
    url: &str,
    body: impl Into<Bytes>,
) -> Result<Answer, String> {
    let request = http::Request::builder()
        .method(Method::POST)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .map_err(|e| e.to_string())?;
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
