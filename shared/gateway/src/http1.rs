//! A small HTTP/1.1 client for JSON-RPC upstreams: POST a body, read the answer, keep the
//! connection for the next call.
//!
//! Why not a general client: the gateway's hot path is one small POST and one small answer
//! per call. A general pooled client (hyper-util's) drives each connection from its own task
//! and hands requests and answers across tasks through channels; here the request's own task
//! writes the request and reads the answer on a connection it took from the idle list, which
//! halves the gateway's CPU per proxied call on loopback (BENCHMARKS.md). What it supports is
//! what JSON-RPC servers send: `Content-Length` or chunked bodies, or a body ended by close;
//! 1xx interim answers are skipped; `Connection: close` and HTTP/1.0 answers are not reused.
//!
//! A connection taken from the idle list is first checked for readiness without a system
//! call: an idle connection the server has closed (or sent stray bytes on) is dropped, not
//! used, so a stale keep-alive connection costs no failed call.

use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::upstream::UpstreamError;

/// Most idle connections kept: more than the concurrent calls a gateway process makes to
/// one upstream in practice; beyond it, connections are closed after use.
const MAX_IDLE: usize = 256;
/// Largest header block accepted from an upstream; JSON-RPC servers send a few hundred bytes.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Most headers parsed in one answer.
const MAX_HEADERS: usize = 64;

/// Where to connect and what to put in the request line.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port` to connect to (resolved at each new connection).
    pub authority: String,
    /// The `Host` header.
    pub host_header: String,
    /// Path and query of the request line.
    pub path: String,
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

#[derive(Debug)]
struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
    idle_since: Instant,
}

/// Idle keep-alive connections to one target.
#[derive(Debug)]
pub struct ConnectionPool {
    target: Target,
    idle: Mutex<Vec<Connection>>,
    idle_timeout: Duration,
    max_body_bytes: usize,
}

impl ConnectionPool {
    pub fn new(target: Target, idle_timeout: Duration, max_body_bytes: usize) -> ConnectionPool {
        ConnectionPool {
            target,
            idle: Mutex::new(Vec::new()),
            idle_timeout,
            max_body_bytes,
        }
    }

    /// Sends one POST and reads the answer. `ConnectFailed` means the request never left.
    pub async fn post(&self, body: &[u8]) -> Result<Answer, UpstreamError> {
        let mut connection = match self.take_idle() {
            Some(connection) => connection,
            None => self.connect().await?,
        };
        let answer = self.exchange(&mut connection, body).await?;
        if answer.1 {
            connection.idle_since = Instant::now();
            self.put_idle(connection);
        }
        Ok(answer.0)
    }

    async fn connect(&self) -> Result<Connection, UpstreamError> {
        let stream = TcpStream::connect(self.target.authority.as_str())
            .await
            .map_err(|_| UpstreamError::ConnectFailed)?;
        let _ = stream.set_nodelay(true);
        Ok(Connection {
            stream,
            buffer: Vec::with_capacity(4096),
            idle_since: Instant::now(),
        })
    }

    /// The most recently used idle connection that is still open and quiet.
    fn take_idle(&self) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(connection) = idle.pop() {
            if connection.idle_since.elapsed() < self.idle_timeout && is_quiet(&connection.stream) {
                return Some(connection);
            }
        }
        None
    }

    fn put_idle(&self, connection: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(connection);
        }
    }

    /// Writes the request and reads the answer; the flag says whether the connection may be
    /// used again.
    async fn exchange(
        &self,
        connection: &mut Connection,
        body: &[u8],
    ) -> Result<(Answer, bool), UpstreamError> {
        let buffer = &mut connection.buffer;
        buffer.clear();
        buffer.extend_from_slice(b"POST ");
        buffer.extend_from_slice(self.target.path.as_bytes());
        buffer.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        buffer.extend_from_slice(self.target.host_header.as_bytes());
        buffer.extend_from_slice(b"\r\nContent-Type: application/json\r\nContent-Length: ");
        buffer.extend_from_slice(body.len().to_string().as_bytes());
        buffer.extend_from_slice(b"\r\n\r\n");
        buffer.extend_from_slice(body);
        connection
            .stream
            .write_all(buffer)
            .await
            .map_err(|_| UpstreamError::ConnectionLost)?;
        buffer.clear();
        read_answer(&mut connection.stream, buffer, self.max_body_bytes).await
    }
}

/// True when nothing is waiting on the socket: no bytes, no close. Uses the readiness the
/// runtime already tracks, so it costs no system call.
fn is_quiet(stream: &TcpStream) -> bool {
    let mut context = Context::from_waker(Waker::noop());
    matches!(stream.poll_read_ready(&mut context), Poll::Pending)
}

/// How the body of an answer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// Reads one answer from `stream`, using `buffer` as scratch space.
async fn read_answer(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    max_body_bytes: usize,
) -> Result<(Answer, bool), UpstreamError> {
    loop {
        let (status, header_len, framing, keep_alive) = loop {
            if let Some(head) = parse_head(buffer)? {
                break head;
            }
            if buffer.len() > MAX_HEADER_BYTES {
                return Err(UpstreamError::ConnectionLost);
            }
            read_more(stream, buffer).await?;
        };
        if (100..200).contains(&status) {
            buffer.drain(..header_len);
            continue; // an interim answer: the real one follows
        }
        let (body, reusable) = match framing {
            Framing::Length(length) => {
                if length > max_body_bytes {
                    return Err(UpstreamError::ResponseTooLarge);
                }
                while buffer.len() < header_len + length {
                    read_more(stream, buffer).await?;
                }
                let end = header_len + length;
                (
                    Bytes::copy_from_slice(&buffer[header_len..end]),
                    buffer.len() == end,
                )
            }
            Framing::Chunked => {
                let body = read_chunked(stream, buffer, header_len, max_body_bytes).await?;
                (body, true)
            }
            Framing::UntilClose => {
                loop {
                    if buffer.len() - header_len > max_body_bytes {
                        return Err(UpstreamError::ResponseTooLarge);
                    }
                    let n = stream
                        .read_buf(buffer)
                        .await
                        .map_err(|_| UpstreamError::ConnectionLost)?;
                    if n == 0 {
                        break;
                    }
                }
                (Bytes::copy_from_slice(&buffer[header_len..]), false)
            }
        };
        return Ok((Answer { status, body }, keep_alive && reusable));
    }
}

/// Reads more bytes; the peer closing here is a lost connection.
async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<(), UpstreamError> {
    buffer.reserve(4096);
    match stream.read_buf(buffer).await {
        Ok(0) | Err(_) => Err(UpstreamError::ConnectionLost),
        Ok(_) => Ok(()),
    }
}

/// Parses the status line and headers when complete: (status, header bytes, framing,
/// keep-alive).
fn parse_head(buffer: &[u8]) -> Result<Option<(u16, usize, Framing, bool)>, UpstreamError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let header_len = match response.parse(buffer) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(UpstreamError::ConnectionLost),
    };
    let status = response.code.unwrap_or(0);
    let mut keep_alive = response.version == Some(1);
    let mut framing = Framing::UntilClose;
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let length = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or(UpstreamError::ConnectionLost)?;
            if framing != Framing::Chunked {
                framing = Framing::Length(length);
            }
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            if header.value.eq_ignore_ascii_case(b"chunked")
                || header.value.to_ascii_lowercase().ends_with(b"chunked")
            {
                framing = Framing::Chunked;
            }
        } else if header.name.eq_ignore_ascii_case("connection") {
            let value = header.value.to_ascii_lowercase();
            if value.windows(5).any(|w| w == b"close") {
                keep_alive = false;
            } else if value.windows(10).any(|w| w == b"keep-alive") {
                keep_alive = true;
            }
        }
    }
    // 204 and 304 carry no body, whatever the headers say.
    if status == 204 || status == 304 {
        framing = Framing::Length(0);
    }
    Ok(Some((status, header_len, framing, keep_alive)))
}

/// Decodes a chunked body that starts at `start` in `buffer`.
async fn read_chunked(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    start: usize,
    max_body_bytes: usize,
) -> Result<Bytes, UpstreamError> {
    let mut body = Vec::new();
    let mut at = start;
    loop {
        // The chunk-size line.
        let line_end = loop {
            if let Some(end) = find_crlf(&buffer[at..]) {
                break at + end;
            }
            read_more(stream, buffer).await?;
        };
        let size_text = std::str::from_utf8(&buffer[at..line_end])
            .map_err(|_| UpstreamError::ConnectionLost)?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size =
            usize::from_str_radix(size_text, 16).map_err(|_| UpstreamError::ConnectionLost)?;
        at = line_end + 2;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let end = loop {
                    if let Some(end) = find_crlf(&buffer[at..]) {
                        break at + end;
                    }
                    read_more(stream, buffer).await?;
                };
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Ok(Bytes::from(body));
                }
            }
        }
        if body.len() + size > max_body_bytes {
            return Err(UpstreamError::ResponseTooLarge);
        }
        while buffer.len() < at + size + 2 {
            read_more(stream, buffer).await?;
        }
        body.extend_from_slice(&buffer[at..at + size]);
        at += size + 2;
    }
}

fn find_crlf(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_parsed_with_their_framing() {
        let head = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(head, (200, 38, Framing::Length(5), true));
        let head = parse_head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.2, Framing::Chunked);
        let head = parse_head(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((head.2, head.3), (Framing::UntilClose, false));
        let head = parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!head.3, "HTTP/1.0 is not kept alive");
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap(), None);
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
    }
}
