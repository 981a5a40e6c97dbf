//! The origin's HTTP server: [`app`] builds the router, [`run`] serves it until shutdown.
//!
//! `run(listener, settings, shutdown)` is exactly what `ssepush origin` executes and what the
//! tests drive on port 0. Background tasks (the hub's feed, the retention sweeper) and every
//! stream watch one shutdown token; on shutdown, streams end with a `retry:` hint and connections
//! get `shutdown_grace_secs` to finish.

pub mod auth;
pub mod console;
pub mod datasets;
pub mod error;
pub mod listener;
pub mod ops;
pub mod publish;
pub mod sse;
pub mod webhooks;
pub mod subscribe;
pub mod ws;
pub mod poll;
pub mod latest;

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
    /// The operator's static filter streams, compiled once (see [`crate::streams`]).
    pub streams: Arc<crate::streams::StaticStreams>,
    /// Publisher credentials; every publishing transport calls [`auth::authorize_publisher`].
    pub auth: Arc<auth::PublisherAuth>,
    /// Webhook delivery (see [`crate::webhooks`]); `None` if it could not start.
    pub webhooks: Option<Arc<crate::webhooks::worker::WebhookService>>,
    /// Data sync: the versioned key/value datasets (see [`crate::datasets`]).
    pub datasets: Arc<dyn crate::datasets::DatasetStore>,
}

impl AppState {
    /// The one ingest path: every transport that publishes (HTTP, WebSocket, data sync) stores
    /// events through here, so ingest-time work (static filter streams, metrics) happens once.
    pub async fn publish(
        &self,
        events: Vec<crate::event::NewEvent>,
    ) -> Result<Vec<crate::event::SharedEvent>, ApiError> {
        // `streams.…` is written only by derivation: a client event there would pose as the
        // operator's curated stream.
        if let Some(e) = events
            .iter()
            .find(|e| crate::streams::is_reserved(e.channel.as_str()))
        {
            return Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "reserved_channel",
                format!(
                    "channel {:?} is reserved: 'streams.<name>' channels are computed by the origin \
                     from its configured static filters; subscribe to them, publish to their \
                     source channels",
                    e.channel.as_str()
                ),
            ));
        }
        // Derived events go in the same batch, right after their originals: one atomic append,
        // and each stream's copy gets the id right after its source event.
        let batch = self.streams.derive(events);
        let stored = self.log.append(batch.events).await?;
        metrics::counter!("ssepush_origin_events_published_total").increment(stored.len() as u64);
        Ok(stored
            .into_iter()
            .zip(batch.original)
            .filter_map(|(e, original)| original.then_some(e))
            .collect())
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
        .route("/v1/ws", get(ws::ws))
        .route("/v1/poll", get(poll::poll))
        .route("/v1/channels/{channel}/latest", get(latest::latest))
        .route("/v1/datasets/{name}", get(datasets::get_dataset))
        .route(
            "/v1/datasets/{name}/{key}",
            axum::routing::put(datasets::put_entry).delete(datasets::delete_entry),
        )
        .route("/", get(console::console))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/v1/webhooks", post(webhooks::create).get(webhooks::list))
        .route(
            "/v1/webhooks/{id}",
            get(webhooks::show)
                .patch(webhooks::update)
                .delete(webhooks::remove),
        )
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
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS])
            .allow_headers([
                axum::http::header::CONTENT_TYPE,
                axum::http::header::AUTHORIZATION,
                HeaderName::from_static("last-event-id"),
                axum::http::header::IF_MATCH,
                axum::http::header::IF_NONE_MATCH,
            ])
            // Dataset versions travel in ETag; browsers hide it from scripts unless exposed.
            .expose_headers([axum::http::header::ETAG]),
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
    // Datasets live in the same store and namespace as the events.
    let datasets = crate::datasets::open(
        &settings.store,
        &settings.namespace,
        settings.datasets.limits(),
    )
    .await?;
    run_with_stores(listener, settings, log, datasets, shutdown).await;
    Ok(())
}

/// [`run`] on an already opened event log, with datasets in memory (they do not outlive the
/// process, whatever the log is). Use [`run_with_stores`] to give both.
pub async fn run_with_log(
    listener: TcpListener,
    settings: Settings,
    log: Arc<dyn EventLog>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let datasets = Arc::new(crate::datasets::memory::MemoryDatasets::new(
        settings.datasets.limits(),
    ));
    run_with_stores(listener, settings, log, datasets, shutdown).await;
}

/// [`run`] on an already opened event log and dataset store.
pub async fn run_with_stores(
    listener: TcpListener,
    settings: Settings,
    log: Arc<dyn EventLog>,
    datasets: Arc<dyn crate::datasets::DatasetStore>,
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
    // Both were checked by `settings.validate()`; a failure here means a caller skipped it, and
    // the server must not start with streams silently dropped or publishing open by mistake.
    let streams = match settings.static_streams() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "invalid [[streams]]; origin not started");
            return;
        }
    };
    let bound = listener.local_addr().unwrap_or(settings.listen);
    let auth = match auth::PublisherAuth::new(&settings.auth, bound) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "invalid [auth]; origin not started");
            return;
        }
    };
    match auth.policy() {
        auth::PublishPolicy::Refused => tracing::warn!(
            %bound,
            "publishing is disabled: non-loopback listen address and no [auth] configured"
        ),
        auth::PublishPolicy::Open if !bound.ip().is_loopback() => {
            tracing::warn!(%bound, "publishing is open to anyone (auth.allow_anonymous_publish)")
        }
        _ => {}
    }
    let hub = Hub::new();
    let feed = tokio::spawn(hub::run_feed(log.clone(), hub.clone(), token.clone()));
    let sweeper = tokio::spawn(sweep_retention(log.clone(), token.clone()));
    let hooks = webhooks::start(&settings, &log, &hub, &token).await;
    let state = AppState {
        settings: Arc::new(settings.clone()),
        log,
        hub,
        shutdown: token.clone(),
        streams: Arc::new(streams),
        auth: Arc::new(auth),
        webhooks: hooks.as_ref().map(|(svc, _)| svc.clone()),
        datasets,
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
    // Workers stop and release their leases; an attempt in flight is retried by the next holder.
    if let Some((_, task)) = hooks {
        let _ = task.await;
    }
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
