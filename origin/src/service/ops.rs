//! Ops endpoints every server shares: liveness (`/healthz`), the answers of a readiness probe
//! (`/readyz`), and Prometheus metrics (`/metrics`) from one process-wide recorder.
//!
//! Metrics follow Prometheus' own rules (what `promtool check metrics` lints): every family
//! is declared up front with its `# HELP` ([`MetricDef`], [`register_metrics`]) and exists at
//! zero from start-up, so a dashboard or an alert never sees a family appear only once
//! something happened; latencies are histograms with fixed buckets ([`LATENCY_BUCKETS`]),
//! which add up across nodes, not summaries, which do not.

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
            let recorder = prometheus_builder().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            handle
        })
        .clone()
}

/// Bucket bounds, in seconds, of every latency histogram: 1 ms to 10 s, roughly ×2.5 apart
/// (the latencies here span a loopback delivery to a push provider's retry).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A recorder builder that renders every histogram with [`LATENCY_BUCKETS`] (a Prometheus
/// histogram, not a summary). Every recorder of the product is built from it.
pub fn prometheus_builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)
        .expect("the latency buckets are not empty")
}

/// Prometheus' metric types, as the product uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up (name ends in `_total`).
    Counter,
    /// Goes up and down: a current count.
    Gauge,
    /// Observations in [`LATENCY_BUCKETS`] (name ends in the unit, `_seconds`).
    Histogram,
}

/// One metric family: its name, type and the `# HELP` text `/metrics` shows. Each server has
/// a catalogue of these (`METRICS`), which `docs/operations.md` lists and a test checks.
#[derive(Debug, Clone, Copy)]
pub struct MetricDef {
    /// The family name, `ssepush_<server>_…`.
    pub name: &'static str,
    /// Its Prometheus type.
    pub kind: MetricKind,
    /// What it counts or measures, and its labels.
    pub help: &'static str,
}

/// Describes every family of `defs` to the current recorder (its `# HELP` line) and creates it
/// at zero, unlabelled, so it is exported from start-up. Call it where the recorder is the one
/// `/metrics` renders: after [`metrics_handle`] for the process-wide one, or inside
/// `metrics::with_local_recorder` for a server with its own.
pub fn register_metrics(defs: &[MetricDef]) {
    for def in defs {
        match def.kind {
            MetricKind::Counter => {
                metrics::describe_counter!(def.name, def.help);
                metrics::counter!(def.name).increment(0);
            }
            MetricKind::Gauge => {
                metrics::describe_gauge!(def.name, def.help);
                metrics::gauge!(def.name).increment(0.0);
            }
            MetricKind::Histogram => {
                metrics::describe_histogram!(def.name, metrics::Unit::Seconds, def.help);
                // Registering it is enough: an empty histogram renders its buckets at zero.
                let _ = metrics::histogram!(def.name);
            }
        }
    }
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
