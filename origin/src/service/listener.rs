//! The accept loop: hyper HTTP/1.1 connections with a connection cap, per-connection kick
//! tokens, and a graceful drain.
//!
//! Why not `axum::serve`: the hub must be able to cut a slow consumer's connection even while
//! hyper is blocked writing to it (a stalled reader never lets hyper poll the body again), so
//! every connection gets a [`ConnHandle`] in its requests' extensions and its task closes the
//! socket the moment that token is cancelled.
//!
//! **The lean path for long-lived streams** ([`serve_with`]'s `lean` paths, the origin's
//! `/v1/sse`). hyper's HTTP/1.1 connection keeps an 8 KiB read buffer and an 8 KiB header
//! write buffer for the connection's whole life; on an idle SSE stream those two, one touched
//! page each, were most of its resident memory (issue 11: 14.3 KiB per idle connection). So
//! the accept loop reads the first request head itself (a temporary buffer, freed at once):
//! a complete `GET` of a lean path, without a body or an upgrade, goes through the same router
//! (every layer, the same handler), and the loop writes the response itself — the head, then
//! the body's frames straight from their shared `Bytes` to the socket, several ready frames per
//! `writev` — with `Connection: close` (the body ends when the connection does; RFC 9112 §6.3).
//! Anything else (another path, a partial head, a body, a WebSocket upgrade) is handed to
//! hyper together with the bytes already read, and is served exactly as before.
//!
//! Once the handler answered, the stream is handed to a task of its own (`lean_stream`):
//! what an idle stream costs is that task's state (the socket, the body, the kick token, the
//! permit, and the wait), not the accept task's (the first read and its deadline, the request,
//! the router) — 1,664 bytes per connection before (issue 11).

use std::convert::Infallible;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::HttpBody as _;
use bytes::{Buf, Bytes};
use futures::FutureExt;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;
use tracing::Instrument;

use super::parse_errors::JsonParseErrors;

/// Per-connection handle, found in every request's extensions.
#[derive(Clone, Debug)]
pub struct ConnHandle {
    /// Cancel to close this connection at once.
    pub kick: CancellationToken,
}

/// Serves `router` on `listener` until `shutdown`, then lets open connections finish for up to
/// `grace` (long-lived responses watch `shutdown` themselves and end promptly). A client gets
/// `header_read_timeout` to send each request's headers (hyper's `header_read_timeout`), after
/// which its connection is closed; bodies have their own deadline ([`super::body`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    max_connections: usize,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
    grace: Duration,
) {
    serve_with(
        listener,
        router,
        max_connections,
        header_read_timeout,
        shutdown,
        grace,
        &[],
    )
    .await
}

/// [`serve`], with `GET` requests for the paths in `lean` (exact paths, any query) served on the
/// lean path of the module docs: for long-lived streaming responses.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    max_connections: usize,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
    grace: Duration,
    lean: &'static [&'static str],
) {
    let limit = Arc::new(Semaphore::new(max_connections));
    let tracker = TaskTracker::new();
    let mut next_conn = 0u64;
    loop {
        // Take a permit before accepting: at the cap, clients wait in the backlog instead of
        // being accepted and starved.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        next_conn += 1;
        let kick = CancellationToken::new();
        let handle = ConnHandle { kick: kick.clone() };
        let router = router.clone();
        let shutdown = shutdown.clone();
        let span = tracing::debug_span!("conn", id = next_conn, %peer);
        let streams = tracker.clone();
        tracker.spawn(
            async move {
                let mut prefix = Bytes::new();
                if !lean.is_empty() {
                    // The first bytes, within the header deadline (hyper's own deadline runs
                    // again for whatever it is handed: a client that sends nothing is closed
                    // here, one that trickles its head is closed by hyper).
                    let first = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        r = tokio::time::timeout(header_read_timeout, first_read(&stream)) => r,
                    };
                    prefix = match first {
                        Ok(Ok(bytes)) if !bytes.is_empty() => bytes,
                        _ => return,
                    };
                    if let Some(req) = lean_request(&prefix, lean) {
                        drop(std::mem::take(&mut prefix));
                        let kick = handle.kick.clone();
                        // Boxed, so the handler's state is freed once it answers.
                        let (head, body) = Box::pin(lean_response(req, router, handle)).await;
                        // The stream is a task of its own, whose state is only what streaming
                        // needs (a few hundred bytes), not this one's: the request, the router,
                        // the first read, the header deadline (issue 11: RSS per idle stream).
                        streams.spawn(
                            lean_stream(stream, head, body, kick, permit)
                                .instrument(tracing::Span::current()),
                        );
                        return;
                    }
                }
                // Boxed: the task's own allocation stays the size of the lean path's state,
                // not of hyper's connection (most connections of a streaming server are lean).
                Box::pin(serve_hyper(
                    Rewind {
                        prefix,
                        inner: stream,
                    },
                    router,
                    handle,
                    header_read_timeout,
                    shutdown,
                ))
                .await;
                drop(permit);
            }
            .instrument(span),
        );
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            open = tracker.len(),
            "grace period over; closing the remaining connections"
        );
    }
}

/// Serves a connection with hyper (every request that is not the lean path's).
async fn serve_hyper(
    io: Rewind,
    router: Router,
    handle: ConnHandle,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
) {
    let kick = handle.kick.clone();
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(handle.clone());
        let mut router = router.clone();
        async move {
            let resp: Result<_, Infallible> = router.call(req).await;
            resp
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .serve_connection(TokioIo::new(JsonParseErrors::new(io)), svc)
        .with_upgrades();
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with error");
                }
                break;
            }
            _ = shutdown.cancelled(), if !draining => {
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
            _ = kick.cancelled() => {
                tracing::debug!("connection cut");
                break;
            }
        }
    }
}

/// Largest request head the lean path reads at once; a longer one goes to hyper.
const FIRST_READ: usize = 4096;
/// Most ready body frames written with one `writev`.
const WRITE_BATCH: usize = 64;

/// Reads whatever the client sent first (at most [`FIRST_READ`] bytes); empty at EOF.
async fn first_read(stream: &TcpStream) -> std::io::Result<Bytes> {
    loop {
        stream.readable().await?;
        let mut buf = Vec::with_capacity(FIRST_READ);
        match stream.try_read_buf(&mut buf) {
            Ok(_) => return Ok(Bytes::from(buf)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The request in `head` when the lean path takes it: one complete `GET` head (nothing after
/// it: no body, no pipelined request) for a path in `lean`, not an upgrade.
fn lean_request(head: &[u8], lean: &[&str]) -> Option<axum::http::Request<axum::body::Body>> {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut req = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = req.parse(head).ok()? else {
        return None;
    };
    if len != head.len() || req.method? != "GET" || req.version? != 1 {
        return None;
    }
    let target = req.path?;
    let path = target.split('?').next().unwrap_or(target);
    if !lean.contains(&path) {
        return None;
    }
    let mut builder = axum::http::Request::builder()
        .method(axum::http::Method::GET)
        .uri(target)
        .version(axum::http::Version::HTTP_11);
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("upgrade")
            || name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
        {
            return None;
        }
        builder = builder.header(name, h.value);
    }
    builder.body(axum::body::Body::empty()).ok()
}

/// The lean path's answer to `req`: the router's response head, written out with
/// `Connection: close`, and its body.
async fn lean_response(
    mut req: axum::http::Request<axum::body::Body>,
    mut router: Router,
    handle: ConnHandle,
) -> (Bytes, axum::body::Body) {
    req.extensions_mut().insert(handle);
    let Ok(resp) = router.call(req).await;
    let (parts, body) = resp.into_parts();
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(parts.status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == axum::http::header::CONNECTION || name == axum::http::header::CONTENT_LENGTH {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if let Some(n) = axum::body::HttpBody::size_hint(&body).exact() {
        head.extend_from_slice(format!("content-length: {n}\r\n").as_bytes());
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    (Bytes::from(head), body)
}

/// What [`lean_stream`] waits for between writes.
enum Wake {
    Frame(Option<Result<hyper::body::Frame<Bytes>, axum::Error>>),
    Readable(std::io::Result<()>),
}

/// Writes a lean response — `head`, then the body's frames, several ready ones per `writev` —
/// until the body ends, the client leaves or `kick` is cancelled (at once, even mid-write);
/// then the connection closes and `permit` is returned.
///
/// Not an `async fn`: an async block uses its captures in place, where an `async fn` would
/// keep its arguments twice in its state (rust-lang/rust#62958), and this state is what an idle
/// stream costs.
#[allow(clippy::manual_async_fn)] // on purpose: see above
fn lean_stream(
    mut stream: TcpStream,
    head: Bytes,
    mut body: axum::body::Body,
    kick: CancellationToken,
    permit: OwnedSemaphorePermit,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        // What to write next: the first frame, then any others that were ready with it. `more`
        // is only allocated for a burst and given back after it, so an idle stream holds none.
        let mut first = Some(head);
        let mut more: Vec<Bytes> = Vec::new();
        'stream: loop {
            // Each step is polled once before the kick is watched: when it is ready at once (a
            // writable socket, a queued frame) no waiter is registered on the kick token and
            // removed again, two locks per step. A kick wakes the steps that wait.
            let written = {
                let write = write_frames(&mut stream, &mut first, &mut more);
                tokio::pin!(write);
                match futures::poll!(write.as_mut()) {
                    Poll::Ready(r) => r.is_ok(),
                    Poll::Pending => tokio::select! {
                        biased;
                        _ = kick.cancelled() => false,
                        r = write => r.is_ok(),
                    },
                }
            };
            if !written || kick.is_cancelled() {
                break;
            }
            if more.capacity() > 0 {
                more = Vec::new();
            }
            // Wait for the next frame, then take every other one that is ready: one wake-up and
            // one `writev` for a burst. The client leaving must end the stream now, not at the
            // next keep-alive write (up to `keep_alive_secs` later): until then its
            // subscription and buffers stay. Readiness is polled, not awaited through a
            // future, so waiting keeps no waiter entry in the connection's state.
            let wake = {
                let wait = std::future::poll_fn(|cx| {
                    if let Poll::Ready(f) = Pin::new(&mut body).poll_frame(cx) {
                        return Poll::Ready(Wake::Frame(f));
                    }
                    stream.poll_read_ready(cx).map(Wake::Readable)
                });
                tokio::pin!(wait);
                match futures::poll!(wait.as_mut()) {
                    Poll::Ready(w) => Some(w),
                    Poll::Pending => tokio::select! {
                        biased;
                        _ = kick.cancelled() => None,
                        w = wait => Some(w),
                    },
                }
            };
            let Some(wake) = wake else {
                break;
            };
            let frame = match wake {
                Wake::Readable(r) => {
                    if r.is_err() || client_left(&stream) {
                        break;
                    }
                    continue;
                }
                Wake::Frame(Some(Ok(frame))) => frame,
                Wake::Frame(_) => {
                    let _ = stream.shutdown().await;
                    break;
                }
            };
            first = frame.into_data().ok();
            while more.len() + 1 < WRITE_BATCH {
                match body.frame().now_or_never() {
                    Some(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            more.push(data);
                        }
                    }
                    // Not ready, or the end: write what we have; the loop sees the end next.
                    _ => continue 'stream,
                }
            }
        }
        drop(permit);
    }
}

/// Reads (and drops) what a streaming client sent after its request; true at EOF or an error,
/// i.e. when the client has gone.
fn client_left(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 64];
    match stream.try_read(&mut probe) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// Writes `first`, then every buffer in `more`, several per `writev`; both are empty after.
/// The slices for each `writev` live on the stack of one poll, not in the connection's state.
async fn write_frames(
    stream: &mut TcpStream,
    first: &mut Option<Bytes>,
    more: &mut Vec<Bytes>,
) -> std::io::Result<()> {
    let mut done = 0;
    std::future::poll_fn(|cx| {
        loop {
            if first.as_ref().is_some_and(Bytes::is_empty) {
                *first = None;
            }
            while done < more.len() && more[done].is_empty() {
                done += 1;
            }
            if first.is_none() && done == more.len() {
                more.clear();
                return Poll::Ready(Ok(()));
            }
            let mut slices = [IoSlice::new(&[]); WRITE_BATCH];
            let mut n = 0;
            for b in first.iter().chain(&more[done..]).take(WRITE_BATCH) {
                slices[n] = IoSlice::new(b);
                n += 1;
            }
            let mut left = match Pin::new(&mut *stream).poll_write_vectored(cx, &slices[..n]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            for b in first.iter_mut().chain(more[done..].iter_mut()) {
                if left == 0 {
                    break;
                }
                let take = left.min(b.len());
                b.advance(take);
                left -= take;
            }
        }
    })
    .await
}

/// The connection's stream with the bytes already read from it put back in front.
struct Rewind {
    prefix: Bytes,
    inner: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                // Release the first read's buffer.
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
