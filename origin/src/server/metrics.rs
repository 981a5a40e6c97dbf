//! The origin's metric families: every one `/metrics` exports, with its `# HELP` text.
//! Registered at zero when the server starts ([`crate::service::ops::register_metrics`]);
//! `docs/operations.md` lists them and a test keeps the two and the exposition in step.

use crate::service::ops::{MetricDef, MetricKind};

/// Request-body deadline hits, shared by the origin and the proxy (`service::body`).
pub const BODY_TIMEOUTS: MetricDef = MetricDef {
    name: "ssepush_request_body_timeouts_total",
    kind: MetricKind::Counter,
    help: "Requests answered 408 because their body did not arrive within body_read_timeout_secs.",
};

/// Every family the origin exports.
pub const METRICS: &[MetricDef] = &[
    MetricDef {
        name: "ssepush_origin_events_published_total",
        kind: MetricKind::Counter,
        help: "Events stored by publishes (HTTP, WebSocket, dataset changes, static streams).",
    },
    MetricDef {
        name: "ssepush_origin_publish_replayed_total",
        kind: MetricKind::Counter,
        help: "Publishes answered from an earlier one with the same Idempotency-Key (nothing stored twice).",
    },
    MetricDef {
        name: "ssepush_origin_deliveries_total",
        kind: MetricKind::Counter,
        help: "Live events queued to subscribers (one per event per matching subscriber).",
    },
    MetricDef {
        name: "ssepush_origin_delivery_latency_seconds",
        kind: MetricKind::Histogram,
        help: "Publish to delivery: from an event's publish time to its hand-off to every matching subscriber's queue, per event delivered live.",
    },
    MetricDef {
        name: "ssepush_origin_subscribers",
        kind: MetricKind::Gauge,
        help: "Live subscriptions on the fan-out hub (SSE streams, WebSocket subscriptions, long polls).",
    },
    MetricDef {
        name: "ssepush_origin_sse_streams",
        kind: MetricKind::Gauge,
        help: "Open SSE responses.",
    },
    MetricDef {
        name: "ssepush_origin_ws_sockets",
        kind: MetricKind::Gauge,
        help: "Open WebSocket connections.",
    },
    MetricDef {
        name: "ssepush_origin_polls_total",
        kind: MetricKind::Counter,
        help: "Long-poll requests served.",
    },
    MetricDef {
        name: "ssepush_origin_slow_consumers_total",
        kind: MetricKind::Counter,
        help: "Subscribers disconnected because their bounded queue (subscriber_queue) filled up.",
    },
    MetricDef {
        name: "ssepush_origin_feed_gaps_total",
        kind: MetricKind::Counter,
        help: "Times the hub's live feed fell behind the store's retention and every subscriber was told to resume.",
    },
    MetricDef {
        name: "ssepush_origin_forbidden_total",
        kind: MetricKind::Counter,
        help: "Requests answered 403 forbidden_channel: a valid credential that does not cover the channels asked for.",
    },
    MetricDef {
        name: "ssepush_origin_subscribe_denied_total",
        kind: MetricKind::Counter,
        help: "Read requests answered 401: a missing or invalid reader credential.",
    },
    MetricDef {
        name: "ssepush_origin_publish_denied_total",
        kind: MetricKind::Counter,
        help: "Publishes answered 401: a missing or invalid publisher credential.",
    },
    MetricDef {
        name: "ssepush_origin_dataset_writes_total",
        kind: MetricKind::Counter,
        help: "Dataset writes by outcome (label outcome: applied, conflict, not_found, precondition_failed, precondition_required, over_budget, full).",
    },
    MetricDef {
        name: "ssepush_origin_dataset_events_failed_total",
        kind: MetricKind::Counter,
        help: "Committed dataset changes whose change event could not be published.",
    },
    MetricDef {
        name: "ssepush_origin_webhooks",
        kind: MetricKind::Gauge,
        help: "Registered webhooks (label state: active, disabled).",
    },
    MetricDef {
        name: "ssepush_origin_webhook_deliveries_total",
        kind: MetricKind::Counter,
        help: "Webhook delivery attempts (label outcome: success, failure).",
    },
    MetricDef {
        name: "ssepush_origin_webhooks_disabled_total",
        kind: MetricKind::Counter,
        help: "Webhooks disabled after repeated delivery failures.",
    },
    MetricDef {
        name: "ssepush_origin_webhook_lease_claims_total",
        kind: MetricKind::Counter,
        help: "Webhook delivery leases this node took over (Redis: one node delivers each webhook).",
    },
    BODY_TIMEOUTS,
];
