//! Ops endpoints every server shares: liveness (`/healthz`), the answers of a readiness probe
//! (`/readyz`), and Prometheus metrics (`/metrics`) from one process-wide recorder.

use std::sync::OnceLock;

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;

/// The process-wide Prometheus recorder. Installed on first use; every server in the process
/// (origin, proxy, gateway in the demo) records into it and renders from it.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            handle
        })
        .clone()
}

/// Liveness: the process answers
///
/// `200 {"status": "ok"}`, always.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "ops",
    operation_id = "get_healthz",
    responses((status = 200, description = "alive", body = super::openapi::Status)),
)]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Prometheus metrics
///
/// The process-wide recorder in the Prometheus text exposition format (version 0.0.4).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    operation_id = "get_metrics",
    responses((status = 200, description = "text exposition format", content_type = "text/plain", body = String)),
)]
pub async fn metrics() -> Response {
    let handle = metrics_handle();
    handle.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}

/// What a readiness probe found; its response is `200 {"status": "ready"}`, or a 503 with
/// `{"status": "draining"}` or `{"status": "store unavailable", "error"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Serving.
    Ready,
    /// Shutting down: load balancers should stop sending new clients.
    Draining,
    /// A store the server needs does not answer; the error says why (no secrets: store URLs
    /// are never part of it).
    StoreUnavailable(String),
}

impl IntoResponse for Readiness {
    fn into_response(self) -> Response {
        match self {
            Readiness::Ready => Json(json!({"status": "ready"})).into_response(),
            Readiness::Draining => (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "draining"})),
            )
                .into_response(),
            Readiness::StoreUnavailable(error) => (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "store unavailable", "error": error})),
            )
                .into_response(),
        }
    }
}
