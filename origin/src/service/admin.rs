//! The optional admin listener (`admin_listen`, both servers): `/metrics` and
//! `/v1/openapi.json` on an address of their own, so a server facing a network can keep its
//! internals (request counts, the full API surface) on a private interface that only
//! monitoring reaches. When it is set, the main listener answers those two paths with 404.
//! When it is not, both are served on the main listener as before.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::error::ApiError;

/// The paths the admin listener serves, and the main listener then hides.
pub const ADMIN_PATHS: [&str; 2] = ["/metrics", "/v1/openapi.json"];

/// Connections the admin listener accepts at once: a few scrapers, not the public.
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// The admin router: `/metrics` (Prometheus text) and `doc` at `/v1/openapi.json`; anything
/// else is the usual JSON 404.
pub fn router(doc: Arc<serde_json::Value>) -> Router {
    Router::new()
        .route("/metrics", get(super::ops::metrics))
        .route(
            "/v1/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc.as_ref().clone()).into_response() }
            }),
        )
        .fallback(|| async { ApiError::not_found() })
}

/// Middleware for the main router when an admin listener is configured: [`ADMIN_PATHS`]
/// answer 404 there, exactly as a path that does not exist.
pub async fn hide_admin_paths(req: Request, next: Next) -> Response {
    if ADMIN_PATHS.contains(&req.uri().path()) {
        return ApiError::not_found().into_response();
    }
    next.run(req).await
}

/// Binds `addr` and serves [`router`] there until `shutdown` (then for up to `grace`).
///
/// # Errors
/// The address cannot be bound.
pub async fn spawn(
    addr: std::net::SocketAddr,
    doc: Arc<serde_json::Value>,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tracing::info!(addr = %bound, "admin listener: /metrics and /v1/openapi.json");
    Ok(tokio::spawn(super::listener::serve(
        listener,
        router(doc),
        ADMIN_MAX_CONNECTIONS,
        Duration::from_secs(30),
        shutdown,
        grace,
    )))
}
