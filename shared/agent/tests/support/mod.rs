//! Shared by the agent's tests: a scripted fake node, temporary folders, free ports,
//! finding processes by their command line, and polling until something holds.

#![allow(dead_code)] // each test file uses a part

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A folder under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "nodefleet-agent-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A listener on a loopback port of its own, and its address.
pub async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// Ids of live (not zombie) processes whose command line has an argument containing
/// `needle`.
pub fn processes_with_arg(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let matches = cmdline
            .split(|&b| b == 0)
            .any(|arg| String::from_utf8_lossy(arg).contains(needle));
        if matches && pid != std::process::id() {
            found.push(pid);
        }
    }
    found
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET url`: status and JSON body.
pub async fn get_json(url: &str) -> (u16, Value) {
    let answer = nodefleet_testkit::client::request(http::Method::GET, url, Bytes::new()).await;
    (answer.status, answer.json())
}

/// `POST url` with `body`: status and JSON body.
pub async fn post_json(url: &str, body: &str) -> (u16, Value) {
    let answer = nodefleet_testkit::client::request(http::Method::POST, url, body.to_owned()).await;
    (answer.status, answer.json())
}

/// `POST url` with `body` and, when given, `Authorization: Bearer <token>`.
pub async fn post_with_token(url: &str, body: &str, token: Option<&str>) -> (u16, Value) {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut request = http::Request::post(url).header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

/// One JSON-RPC call to a node; the whole answer.
pub async fn rpc(addr: SocketAddr, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    nodefleet_testkit::client::post(&format!("http://{addr}"), body.to_string())
        .await
        .json()
}

/// What the fake node answers.
#[derive(Debug, Clone)]
pub struct Script {
    /// `eth_syncing`'s result.
    pub syncing: Value,
    pub head_number: u64,
    /// The head's timestamp is this many seconds before the moment of the answer.
    pub head_age_secs: u64,
    /// `net_peerCount`; `None` answers "Method not found" (as anvil does).
    pub peers: Option<u64>,
    /// Answer every call with HTTP 502 and a text body instead.
    pub broken: bool,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            syncing: json!(false),
            head_number: 100,
            head_age_secs: 2,
            peers: Some(25),
            broken: false,
            delay: Duration::ZERO,
        }
    }
}

/// A JSON-RPC node on loopback that answers from a [`Script`] and counts requests.
#[derive(Debug)]
pub struct FakeNode {
    pub addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    requests: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeNode {
    pub async fn start(script: Script) -> FakeNode {
        let (listener, addr) = listener().await;
        let script = Arc::new(Mutex::new(script));
        let requests = Arc::new(AtomicUsize::new(0));
        let (s, r) = (script.clone(), requests.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (script, requests) = (s.clone(), r.clone());
                let service = service_fn(move |request: hyper::Request<Incoming>| {
                    let (script, requests) = (script.clone(), requests.clone());
                    async move {
                        requests.fetch_add(1, Ordering::SeqCst);
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        let script = script.lock().unwrap().clone();
                        tokio::time::sleep(script.delay).await;
                        Ok::<_, Infallible>(answer(&script, &body))
                    }
                });
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
            }
        });
        FakeNode {
            addr,
            script,
            requests,
            task,
        }
    }

    pub fn set(&self, change: impl FnOnce(&mut Script)) {
        change(&mut self.script.lock().unwrap());
    }

    /// HTTP requests received so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn answer(script: &Script, body: &[u8]) -> hyper::Response<Full<Bytes>> {
    if script.broken {
        let mut response = hyper::Response::new(Full::new(Bytes::from_static(b"bad gateway")));
        *response.status_mut() = http::StatusCode::BAD_GATEWAY;
        return response;
    }
    let call: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let id = call.get("id").cloned().unwrap_or(Value::Null);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let result = match call.get("method").and_then(Value::as_str) {
        Some("eth_syncing") => Ok(script.syncing.clone()),
        Some("eth_getBlockByNumber") => Ok(json!({
            "number": format!("{:#x}", script.head_number),
            "timestamp": format!("{:#x}", now - script.head_age_secs),
            "hash": format!("0x{:064x}", script.head_number),
        })),
        Some("net_peerCount") => match script.peers {
            Some(peers) => Ok(json!(format!("{peers:#x}"))),
            None => Err(json!({"code": -32601, "message": "Method not found"})),
        },
        Some("web3_clientVersion") => Ok(json!("fake/v1")),
        Some("eth_chainId") => Ok(json!("0x1")),
        _ => Err(json!({"code": -32601, "message": "Method not found"})),
    };
    let answer = match result {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(error) => json!({"jsonrpc": "2.0", "id": id, "error": error}),
    };
    let mut response = hyper::Response::new(Full::new(Bytes::from(answer.to_string())));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
