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
pub mod openapi;
pub mod ops;
pub mod poll;
pub mod publish;
pub mod sse;
pub mod state;
pub mod subscribe;
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
use crate::service::{cors, listener};
use crate::settings::Settings;
use crate::store::{self, EventLog, LogError};
use openapi::{ApiRouter, Param};
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
    let api = routes();
    // Preflights allow exactly the methods the routes have.
    let cors = cors::layer(
        &state.settings.cors_allow_origins,
        api.operations().iter().map(|op| op.method.clone()),
    );
    let router = api
        .finish(
            "ssepush origin",
            "The origin streaming API: publish, SSE, WebSocket, long-poll, latest, data sync, webhooks.",
        )
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .with_state(state);
    match cors {
        Some(layer) => router.layer(layer),
        None => router,
    }
}

/// Every route of the origin, with its documentation: the router and `/v1/openapi.json` are both
/// built from this one list.
pub fn routes() -> ApiRouter<AppState> {
    use openapi::{Doc, header, query};
    const ERR: (u16, &str) = (400, "invalid input; the error says what to fix");
    const AUTH: (u16, &str) = (401, "missing or invalid publisher credentials");
    ApiRouter::new()
        .post("/v1/events", publish::publish, Doc {
            tag: "publish",
            summary: "Publish one event or an array of events (all or nothing); returns their ids",
            params: const { &[header("Authorization", "Bearer token or JWT when publisher auth is on")] },
            body: Some("{\"channel\", \"type\"?, \"data\"} or an array of them"),
            responses: &[(200, "{\"ids\": [...]}"), ERR, AUTH, (403, "reserved channel or publishing disabled"), (413, "body too large")],
        })
        .get("/v1/sse", sse::sse, Doc {
            tag: "subscribe",
            summary: "Server-Sent Events stream of the matching channels, resumable with Last-Event-ID",
            params: const { &[
                Param { required: true, ..query("channel", "channel pattern (* one token, > the rest); repeatable") },
                query("filter", "CEL filter over channel, type, id, data"),
                query("lastEventId", "resume after this id (the Last-Event-ID header wins)"),
                header("Last-Event-ID", "resume after this id"),
            ] },
            body: None,
            responses: &[(200, "text/event-stream"), ERR],
        })
        .get("/v1/ws", ws::ws, Doc {
            tag: "subscribe",
            summary: "WebSocket: JSON frames subscribe/unsubscribe/filter/publish/ping; server sends event/ok/error/reset/pong",
            params: &[],
            body: None,
            responses: &[(101, "switching protocols"), (400, "not a WebSocket upgrade")],
        })
        .get("/v1/poll", poll::poll, Doc {
            tag: "subscribe",
            summary: "Long-poll: returns as soon as a matching event exists after `after`, or an empty list at the timeout",
            params: const { &[
                Param { required: true, ..query("channel", "channel pattern; repeatable") },
                query("filter", "CEL filter"),
                query("after", "cursor: the lastEventId of the previous response"),
                query("timeout", "seconds to wait (default 30, max 120)"),
                query("limit", "most events returned (default 100, max 1000)"),
            ] },
            body: None,
            responses: &[(200, "{\"events\", \"lastEventId\", \"reset\"?}"), ERR],
        })
        .get("/v1/channels/{channel}/latest", latest::latest, Doc {
            tag: "subscribe",
            summary: "Newest events of a channel; ETag is the newest id, If-None-Match gives 304",
            params: const { &[query("n", "how many (default 1, max 1000)"), header("If-None-Match", "ETags of previous answers (weak comparison), or *"), header("If-Match", "ETags (strong comparison), or *")] },
            body: None,
            responses: &[(200, "{\"events\": [...]}"), (304, "nothing new"), ERR, (412, "If-Match names no current ETag")],
        })
        .get("/v1/datasets/{name}", datasets::get_dataset, Doc {
            tag: "datasets",
            summary: "Full snapshot of a dataset, or the delta since version `since`",
            params: const { &[query("since", "a version from an earlier snapshot or delta"), header("If-None-Match", "dataset version ETags (weak comparison), or *"), header("If-Match", "dataset version ETags (strong comparison), or *")] },
            body: None,
            responses: &[(200, "snapshot or delta"), (304, "unchanged"), ERR, (410, "since is older than the changelog: fetch a snapshot"), (412, "If-Match names no current version")],
        })
        .put("/v1/datasets/{name}/{key}", datasets::put_entry, Doc {
            tag: "datasets",
            summary: "Write an entry; If-Match / If-None-Match preconditions",
            params: const { &[header("If-Match", "entry versions you based this on, as strong ETags (\"3\", \"5\"), or *"), header("If-None-Match", "* to create only, or entry versions to refuse (weak comparison)")] },
            body: Some("the entry's JSON value"),
            responses: &[(200, "updated"), (201, "created"), ERR, AUTH, (409, "dataset full, or the entry kept changing under concurrent writers"), (412, "precondition failed; the body has the current value"), (428, "this dataset needs If-Match")],
        })
        .delete("/v1/datasets/{name}/{key}", datasets::delete_entry, Doc {
            tag: "datasets",
            summary: "Delete an entry",
            params: const { &[header("If-Match", "entry versions as strong ETags, or *"), header("If-None-Match", "entry versions to refuse (weak comparison), or *")] },
            body: None,
            responses: &[(200, "deleted"), ERR, AUTH, (404, "no such entry"), (409, "the entry kept changing under concurrent writers"), (412, "precondition failed; the body has the current value"), (428, "this dataset needs If-Match")],
        })
        .post("/v1/webhooks", webhooks::create, Doc {
            tag: "webhooks",
            summary: "Register a webhook; the response carries its signing secret, once",
            params: &[],
            body: Some("{\"url\", \"channels\", \"filter\"?, \"from\"?}"),
            responses: &[(201, "the webhook with its secret"), ERR, AUTH],
        })
        .get("/v1/webhooks", webhooks::list, Doc {
            tag: "webhooks",
            summary: "List webhooks (no secrets)",
            params: &[],
            body: None,
            responses: &[(200, "the webhooks"), AUTH],
        })
        .get("/v1/webhooks/{id}", webhooks::show, Doc {
            tag: "webhooks",
            summary: "A webhook's status: cursor, pending, failures, last error",
            params: &[],
            body: None,
            responses: &[(200, "the status"), AUTH, (404, "no such webhook")],
        })
        .patch("/v1/webhooks/{id}", webhooks::update, Doc {
            tag: "webhooks",
            summary: "Change url, channels or filter; {\"enabled\": true} resumes a disabled webhook from its cursor",
            params: &[],
            body: Some("the fields to change"),
            responses: &[(200, "the webhook"), ERR, AUTH, (404, "no such webhook")],
        })
        .delete("/v1/webhooks/{id}", webhooks::remove, Doc {
            tag: "webhooks",
            summary: "Delete a webhook",
            params: &[],
            body: None,
            responses: &[(204, "deleted"), AUTH, (404, "no such webhook")],
        })
        .get("/", console::console, Doc {
            tag: "console",
            summary: "The console: a page that subscribes with the browser's EventSource",
            params: &[],
            body: None,
            responses: &[(200, "text/html")],
        })
        .get("/healthz", crate::service::ops::healthz, Doc {
            tag: "ops",
            summary: "Liveness",
            params: &[],
            body: None,
            responses: &[(200, "alive")],
        })
        .get("/readyz", ops::readyz, Doc {
            tag: "ops",
            summary: "Readiness: the stores answer and the server is not draining",
            params: &[],
            body: None,
            responses: &[(200, "ready"), (503, "not ready")],
        })
        .get("/metrics", crate::service::ops::metrics, Doc {
            tag: "ops",
            summary: "Prometheus metrics",
            params: &[],
            body: None,
            responses: &[(200, "text/plain exposition format")],
        })
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
    crate::service::ops::metrics_handle();
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
        crate::service::auth::Policy::Refused => tracing::warn!(
            %bound,
            "publishing is disabled: non-loopback listen address and no [auth] configured"
        ),
        crate::service::auth::Policy::Open if !bound.ip().is_loopback() => {
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
        tracing::info!(%addr, store = %crate::service::redact::redact_url(&settings.store), "origin listening");
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
