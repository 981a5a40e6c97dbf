//! The origin's HTTP server: [`app`] builds the router, [`run`] serves it until shutdown.
//!
//! `run(listener, settings, shutdown)` is exactly what `ssepush origin` executes and what the
//! tests drive on port 0. Background tasks (the hub's feed, the retention sweeper) and every
//! stream watch one shutdown token; on shutdown, streams end with a `retry:` hint and connections
//! get `shutdown_grace_secs` to finish.

pub mod error;
pub mod listener;
pub mod ops;
pub mod publish;
pub mod sse;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::hub::{self, Hub};
use crate::settings::Settings;
use crate::store::{self, EventLog, LogError};
use error::ApiError;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub log: Arc<dyn EventLog>,
    pub hub: Arc<Hub>,
    /// Cancelled when the server begins to drain.
    pub shutdown: CancellationToken,
}

impl AppState {
    /// The one ingest path: every transport that publishes (HTTP, WebSocket, data sync) stores
    /// events through here, so ingest-time work (static filter streams, metrics) happens once.
    pub async fn publish(
        &self,
        events: Vec<crate::event::NewEvent>,
    ) -> Result<Vec<crate::event::SharedEvent>, ApiError> {
        let stored = self.log.append(events).await?;
        metrics::counter!("ssepush_origin_events_published_total").increment(stored.len() as u64);
        Ok(stored)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid settings: {0}")]
    Settings(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Store(#[from] LogError),
}

/// The router, apart from any listener, so tests and other binaries can mount it.
pub fn app(state: AppState) -> Router {
    let cors = cors_layer(&state.settings.cors_allow_origins);
    let router = Router::new()
        .route("/v1/events", post(publish::publish))
        .route("/v1/sse", get(sse::sse))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .with_state(state);
    match cors {
        Some(layer) => router.layer(layer),
        None => router,
    }
}

fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([
                axum::http::header::CONTENT_TYPE,
                axum::http::header::AUTHORIZATION,
                HeaderName::from_static("last-event-id"),
            ]),
    )
}

/// Opens the store the settings name and serves until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    settings.validate()?;
    let log = store::open(&settings.store, &settings.namespace, settings.retention()?).await?;
    run_with_log(listener, settings, log, shutdown).await;
    Ok(())
}

/// [`run`] on an already opened event log.
pub async fn run_with_log(
    listener: TcpListener,
    settings: Settings,
    log: Arc<dyn EventLog>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    ops::metrics_handle();
    let token = CancellationToken::new();
    {
        let token = token.clone();
        tokio::spawn(async move {
            shutdown.await;
            token.cancel();
        });
    }
    let hub = Hub::new();
    let feed = tokio::spawn(hub::run_feed(log.clone(), hub.clone(), token.clone()));
    let sweeper = tokio::spawn(sweep_retention(log.clone(), token.clone()));
    let state = AppState {
        settings: Arc::new(settings.clone()),
        log,
        hub,
        shutdown: token.clone(),
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, store = %redact_url(&settings.store), "origin listening");
    }
    listener::serve(
        listener,
        app(state),
        settings.max_connections,
        token.clone(),
        settings.shutdown_grace(),
    )
    .await;
    token.cancel();
    let _ = feed.await;
    let _ = sweeper.await;
    tracing::info!("origin stopped");
}

async fn sweep_retention(log: Arc<dyn EventLog>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = log.trim_expired().await {
                    tracing::warn!(error = %e, "retention sweep failed");
                }
            }
        }
    }
}

/// A store URL fit for logs: any password is replaced.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => format!("{}***{}", &url[..scheme + 3], &url[at..]),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn store_urls_lose_their_passwords_in_logs() {
        assert_eq!(super::redact_url("redis://:s3cret@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(super::redact_url("redis://u:p@h"), "redis://u:***@h");
        assert_eq!(super::redact_url("redis://h:6379"), "redis://h:6379");
        assert_eq!(super::redact_url("memory"), "memory");
    }
}
