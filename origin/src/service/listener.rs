//! The accept loop: hyper HTTP/1.1 connections with a connection cap, per-connection kick
//! tokens, and a graceful drain.
//!
//! Why not `axum::serve`: the hub must be able to cut a slow consumer's connection even while
//! hyper is blocked writing to it (a stalled reader never lets hyper poll the body again), so
//! every connection gets a [`ConnHandle`] in its requests' extensions and its task closes the
//! socket the moment that token is cancelled.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
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
        let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(handle.clone());
            let mut router = router.clone();
            async move {
                let resp: Result<_, Infallible> = router.call(req).await;
                resp
            }
        });
        let shutdown = shutdown.clone();
        let span = tracing::debug_span!("conn", id = next_conn, %peer);
        tracker.spawn(
            async move {
                let _permit = permit;
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(header_read_timeout)
                    .serve_connection(TokioIo::new(JsonParseErrors::new(stream)), svc)
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
