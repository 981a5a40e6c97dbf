//! The proxy's metric families: every one `/metrics` exports, with its `# HELP` text.
//! Registered at zero when the server starts; `docs/operations.md` lists them and a test keeps
//! the two and the exposition in step.

use ssepush_origin::service::ops::{MetricDef, MetricKind};

/// Every family the proxy exports.
pub const METRICS: &[MetricDef] = &[
    MetricDef {
        name: "ssepush_proxy_handoffs_created_total",
        kind: MetricKind::Counter,
        help: "Handoffs accepted (201).",
    },
    MetricDef {
        name: "ssepush_proxy_handoffs",
        kind: MetricKind::Gauge,
        help: "Handoffs held, by state (label state: watching, woken, expired, failed, closed).",
    },
    MetricDef {
        name: "ssepush_proxy_auth_denied_total",
        kind: MetricKind::Counter,
        help: "Requests answered 401: a missing or invalid API key or JWT.",
    },
    MetricDef {
        name: "ssepush_proxy_upstream_connections",
        kind: MetricKind::Gauge,
        help: "Open connections to origins' SSE streams.",
    },
    MetricDef {
        name: "ssepush_proxy_upstream_watchers",
        kind: MetricKind::Gauge,
        help: "Upstream streams watched (handoffs of one stream share one watcher), lingering ones included.",
    },
    MetricDef {
        name: "ssepush_proxy_upstream_idle_watchers",
        kind: MetricKind::Gauge,
        help: "Watchers lingering without a handoff (upstream.idle_linger_secs), their connection open.",
    },
    MetricDef {
        name: "ssepush_proxy_upstream_disconnects_total",
        kind: MetricKind::Counter,
        help: "Upstream stream connections that ended and were retried.",
    },
    MetricDef {
        name: "ssepush_proxy_upstream_catch_ups_total",
        kind: MetricKind::Counter,
        help: "Catch-up reads of an upstream stream for a handoff that joined behind its watcher.",
    },
    MetricDef {
        name: "ssepush_proxy_upstream_replays_total",
        kind: MetricKind::Counter,
        help: "Handoffs (groups of them) that joined behind their watcher and caught up from its replay ring, without a connection.",
    },
    MetricDef {
        name: "ssepush_proxy_upstream_bad_frames_total",
        kind: MetricKind::Counter,
        help: "Upstream SSE frames skipped because they are not ssepush events.",
    },
    MetricDef {
        name: "ssepush_proxy_upstream_oversized_events_total",
        kind: MetricKind::Counter,
        help: "Upstream events skipped for exceeding upstream.max_event_bytes (reported to each handoff as a gap).",
    },
    MetricDef {
        name: "ssepush_proxy_events_buffered_total",
        kind: MetricKind::Counter,
        help: "Events buffered for sleeping handoffs (one per event per handoff).",
    },
    MetricDef {
        name: "ssepush_proxy_buffer_overflows_total",
        kind: MetricKind::Counter,
        help: "Events dropped from a full handoff buffer (buffer_events; reported as a gap).",
    },
    MetricDef {
        name: "ssepush_proxy_wakes_total",
        kind: MetricKind::Counter,
        help: "Wake pushes sent to providers (labels provider: apns, fcm, webpush; outcome).",
    },
    MetricDef {
        name: "ssepush_proxy_wakes_rate_limited_total",
        kind: MetricKind::Counter,
        help: "Wakes delayed by a provider-wide rate limit (label provider).",
    },
    MetricDef {
        name: "ssepush_proxy_wake_latency_seconds",
        kind: MetricKind::Histogram,
        help: "From the first event a wake is owed for to the provider accepting the push (label provider).",
    },
    ssepush_origin::service::body::BODY_TIMEOUTS,
];
