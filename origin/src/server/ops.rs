//! Ops endpoints: liveness, readiness (the store answers), Prometheus metrics.

use std::sync::OnceLock;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;

use super::AppState;

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

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(st): State<AppState>) -> Response {
    let ping = async {
        st.log.ping().await?;
        st.datasets
            .ping()
            .await
            .map_err(|e| crate::store::LogError::Unavailable(e.to_string()))
    };
    match ping.await {
        Ok(()) if !st.shutdown.is_cancelled() => Json(json!({"status": "ready"})).into_response(),
        Ok(()) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining"})),
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "store unavailable", "error": e.to_string()})),
        )
            .into_response(),
    }
}

pub async fn metrics() -> Response {
    let handle = metrics_handle();
    handle.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}
