//! Small misbehaving servers: a TCP listener on port 0 that hands each connection to the test,
//! with the request it read, and lets the test write exactly the bytes it wants — status line,
//! headers, SSE bytes split wherever it likes — then wait for the reader's reaction, then cut.
//!
//! Test files use it with `#[path = "support/raw.rs"] mod raw;`.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// How long a test waits for a client to connect before it fails.
pub const CONNECT_WITHIN: Duration = Duration::from_secs(20);

/// A request as the raw server read it.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET /v1/sse?channel=a HTTP/1.1`
    pub line: String,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// When its head was read.
    pub at: Instant,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One accepted connection: write to it, then drop it (or call [`Conn::cut`]) to close.
pub struct Conn {
    pub request: Request,
    stream: TcpStream,
}

impl Conn {
    /// Writes `bytes` now, as one TCP segment (Nagle is off), and flushes.
    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        // A client that already went away is part of what tests provoke.
        let _ = self.stream.write_all(bytes.as_ref()).await;
        let _ = self.stream.flush().await;
    }

    /// The head of an SSE answer: 200, `text/event-stream`, body delimited by the close.
    pub async fn send_sse_head(&mut self) {
        self.send(sse_head(200, &[])).await;
    }

    /// Whether the client closed the connection within `within` (what it sends meanwhile is
    /// read and dropped).
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let mut buf = [0u8; 1024];
        let eof = async {
            loop {
                match self.stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(within, eof).await.is_ok()
    }

    /// Closes the connection (the client sees the end of the stream).
    pub async fn cut(mut self) {
        let _ = self.stream.shutdown().await;
    }
}

/// A response head: `status`, `text/event-stream`, `connection: close`, plus `extra` headers.
pub fn sse_head(status: u16, extra: &[(&str, &str)]) -> String {
    let mut head = format!(
        "HTTP/1.1 {status} Whatever\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n"
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// A complete answer without a body: `status` and `extra` headers, `content-length: 0`.
pub fn empty_answer(status: u16, extra: &[(&str, &str)]) -> String {
    let mut head =
        format!("HTTP/1.1 {status} Whatever\r\ncontent-length: 0\r\nconnection: close\r\n");
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// The listener; connections arrive in order through [`RawServer::next`].
pub struct RawServer {
    pub url: String,
    conns: mpsc::UnboundedReceiver<Conn>,
}

impl RawServer {
    pub async fn start() -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, conns) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let _ = stream.set_nodelay(true);
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Some(conn) = read_head(stream).await {
                        let _ = tx.send(conn);
                    }
                });
            }
        });
        RawServer { url, conns }
    }

    /// The next connection whose request head arrived; fails the test after
    /// [`CONNECT_WITHIN`].
    pub async fn next(&mut self) -> Conn {
        tokio::time::timeout(CONNECT_WITHIN, self.conns.recv())
            .await
            .expect("no client connected in time")
            .expect("the raw server stopped")
    }

    /// A connection that is already waiting, if any (never waits).
    pub fn try_next(&mut self) -> Option<Conn> {
        self.conns.try_recv().ok()
    }
}

/// Reads a request head (up to the blank line); `None` if the client left first.
async fn read_head(mut stream: TcpStream) -> Option<Conn> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 64 * 1024 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let at = Instant::now();
    let text = String::from_utf8_lossy(&buf);
    let mut lines = text.split("\r\n");
    let line = lines.next()?.to_owned();
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some(Conn {
        request: Request { line, headers, at },
        stream,
    })
}
