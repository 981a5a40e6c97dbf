//! The origin's HTTP server: [`app`] builds the router, [`run`] serves it until shutdown.
//!
//! `run(listener, settings, shutdown)` is exactly what `ssepush origin` executes and what the
//! tests drive on port 0. Background tasks (the hub's feed, the retention sweeper) and every
//! stream watch one shutdown token; on shutdown, streams end with a `retry:` hint and connections
//! get `shutdown_grace_secs` to finish.

pub mod auth;
pub mod conditional;
pub mod console;
pub mod datasets;
pub mod latest;
pub mod metrics;
pub mod openapi;
pub mod openapi_rules;
pub mod ops;
pub mod poll;
pub mod publish;
pub mod sse;
pub mod state;
pub mod subscribe;
pub mod subscription;
pub mod webhooks;
pub mod ws;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::hub::{self, Hub};
use crate::service::error::ApiError;
use crate::service::{body, cors, listener};
use crate::settings::Settings;
use crate::store::{EventLog, LogError};
use crate::stores::Stores;
use state::AppState;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid settings: {0}")]
    Settings(#[from] crate::service::config::ConfigError),
    #[error(transparent)]
    Store(#[from] LogError),
}

/// The router, apart from any listener, so tests and other binaries can mount it.
pub fn app(state: AppState) -> Router {
    let (api, doc) = openapi::routes().split_for_parts();
    // Preflights allow exactly the methods the routes have.
    let cors = cors::layer(
        &state.settings.cors_allow_origins,
        crate::service::openapi::methods(&doc),
    );
    let limits = body::BodyLimits {
        deadline: Duration::from_secs(state.settings.body_read_timeout_secs),
        max_bytes: state.settings.max_body_bytes,
    };
    let mut api = api;
    if state.settings.admin_listen.is_some() {
        // `/metrics` and this document live on the admin listener only.
        api = api.layer(axum::middleware::from_fn(
            crate::service::admin::hide_admin_paths,
        ));
    }
    let router = api
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(axum::middleware::from_fn_with_state(
            limits,
            body::read_body,
        ))
        .with_state(state);
    match cors {
        Some(layer) => router.layer(layer),
        None => router,
    }
}

/// Opens the stores the settings name ([`crate::stores::open`]) and serves until `shutdown`
/// completes.
///
/// # Errors
/// Invalid settings, or stores that cannot be opened.
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    settings.validate()?;
    // Datasets and webhooks live in the same store and namespace as the events.
    let stores = crate::stores::open(
        &settings.store,
        &settings.namespace,
        settings.retention()?,
        settings.datasets.limits(),
    )
    .await?;
    run_with_stores(listener, settings, stores, shutdown).await;
    Ok(())
}

/// [`run`] on already opened stores.
pub async fn run_with_stores(
    listener: TcpListener,
    settings: Settings,
    stores: Stores,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let Stores {
        log,
        datasets,
        webhooks: webhook_store,
    } = stores;
    crate::service::ops::metrics_handle();
    crate::service::ops::register_metrics(metrics::METRICS);
    // Any reqwest client built later in the process gets ring (see service::tls).
    crate::service::tls::install_default_provider();
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
    let auth = match auth::OriginAuth::new(&settings.auth, bound) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "invalid [auth]; origin not started");
            return;
        }
    };
    match auth.policy() {
        crate::service::auth::Policy::Refused => tracing::warn!(
            %bound,
            "publishing is disabled: non-loopback listen address and no [auth] configured"
        ),
        crate::service::auth::Policy::Open if !bound.ip().is_loopback() => {
            tracing::warn!(%bound, "publishing is open to anyone (auth.allow_anonymous_publish)")
        }
        _ => {}
    }
    match auth.read_policy() {
        crate::service::auth::Policy::Refused => tracing::warn!(
            %bound,
            "reading is disabled: non-loopback listen address and no [auth] credentials \
             (set auth.subscribe_tokens or a JWT key, or auth.subscribe = \"public\")"
        ),
        crate::service::auth::Policy::Open if !bound.ip().is_loopback() => {
            tracing::info!(%bound, "reading is open to anyone (auth.subscribe = \"public\")")
        }
        _ => {}
    }
    let admin = match settings.admin_listen {
        None => None,
        Some(addr) => {
            let doc = Arc::new(openapi::document_json().clone());
            match crate::service::admin::spawn(addr, doc, token.clone(), settings.shutdown_grace())
                .await
            {
                Ok(task) => Some(task),
                Err(e) => {
                    tracing::error!(%addr, error = %e, "cannot listen on admin_listen; origin not started");
                    return;
                }
            }
        }
    };
    let hub = Hub::new();
    {
        // Live subscribers learn of the drain from their queues (see `Hub::shutdown`).
        let (hub, token) = (hub.clone(), token.clone());
        tokio::spawn(async move {
            token.cancelled().await;
            hub.shutdown();
        });
    }
    let feed = tokio::spawn(hub::run_feed(log.clone(), hub.clone(), token.clone()));
    tokio::spawn(hub::run_keep_alive(
        hub.clone(),
        settings.keep_alive(),
        token.clone(),
    ));
    let sweeper = tokio::spawn(sweep_retention(log.clone(), token.clone()));
    let hooks = webhooks::start(&settings, webhook_store, &log, &hub, &token);
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
        tracing::info!(%addr, store = %crate::service::redact::redact_url(&settings.store), "origin listening");
    }
    // SSE streams are long-lived: the accept loop writes them itself, without hyper's two
    // per-connection 8 KiB buffers (see `listener`'s lean path).
    listener::serve_with(
        listener,
        app(state),
        settings.max_connections,
        Duration::from_secs(settings.header_read_timeout_secs),
        token.clone(),
        settings.shutdown_grace(),
        &["/v1/sse"],
    )
    .await;
    token.cancel();
    let _ = feed.await;
    let _ = sweeper.await;
    if let Some(task) = admin {
        let _ = task.await;
    }
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
