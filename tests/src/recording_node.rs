//! A JSON-RPC node double that records what reaches it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::http_server;

/// How the node answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeBehaviour {
    /// Like a node: `eth_blockNumber` is `0x10`, `eth_chainId` is `0x1`, anything else `null`.
    Normal,
    /// Answers `status` with `body` whatever was asked.
    Fixed { status: u16, body: String },
    /// Answers normally after `delay`.
    Slow { delay: Duration },
}

/// A loopback node that records every method name it receives, in order.
#[derive(Debug)]
pub struct RecordingNode {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<String>>>,
    requests: Arc<Mutex<usize>>,
    behaviour: Arc<Mutex<NodeBehaviour>>,
    task: JoinHandle<()>,
}

impl Drop for RecordingNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RecordingNode {
    pub async fn start() -> RecordingNode {
        let received = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(0));
        let behaviour = Arc::new(Mutex::new(NodeBehaviour::Normal));
        let (r, q, b) = (received.clone(), requests.clone(), behaviour.clone());
        let (addr, task) = http_server::serve(move |_parts, body| {
            let (received, requests, behaviour) = (r.clone(), q.clone(), b.clone());
            async move {
                *requests.lock().unwrap() += 1;
                let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let calls: Vec<&Value> = match &request {
                    Value::Array(calls) => calls.iter().collect(),
                    call => vec![call],
                };
                received.lock().unwrap().extend(
                    calls
                        .iter()
                        .filter_map(|c| c.get("method")?.as_str().map(str::to_owned)),
                );
                let behaviour = behaviour.lock().unwrap().clone();
                match behaviour {
                    NodeBehaviour::Fixed { status, body } => {
                        let mut response = Response::new(Full::new(Bytes::from(body)));
                        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        return response;
                    }
                    NodeBehaviour::Slow { delay } => tokio::time::sleep(delay).await,
                    NodeBehaviour::Normal => {}
                }
                let answers: Vec<Value> = calls.iter().filter_map(|c| answer(c)).collect();
                let body = match (&request, answers.len()) {
                    (Value::Array(_), 0) | (_, 0) => String::new(),
                    (Value::Array(_), _) => Value::Array(answers).to_string(),
                    _ => answers[0].to_string(),
                };
                Response::new(Full::new(Bytes::from(body)))
            }
        })
        .await;
        RecordingNode {
            addr,
            received,
            requests,
            behaviour,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every method received so far, in order.
    pub fn methods(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }

    /// How many HTTP requests arrived.
    pub fn requests(&self) -> usize {
        *self.requests.lock().unwrap()
    }

    pub fn set_behaviour(&self, behaviour: NodeBehaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }
}

fn answer(call: &Value) -> Option<Value> {
    let id = call.get("id")?.clone();
    let result = match call.get("method")?.as_str()? {
        "eth_blockNumber" => json!("0x10"),
        "eth_chainId" => json!("0x1"),
        _ => Value::Null,
    };
    Some(json!({"jsonrpc": "2.0", "id": id, "result": result}))
}
