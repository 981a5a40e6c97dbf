//! OpenAPI schemas (feature `openapi`) for shapes the proxy sends but other crates define, so
//! the proxy's document can describe them: the origin's event, the service layer's JSON error
//! and its liveness answer. Each is checked against the real type's serialisation in the tests, so a change there
//! fails here instead of leaving the document wrong.

use serde::Serialize;
use utoipa::ToSchema;

/// An event as the origin sends it in JSON (`ssepush_origin::Event`).
#[derive(Serialize, ToSchema)]
pub struct Event {
    /// The event's id: opaque, totally ordered within the origin's log (`<ms>-<seq>.<epoch>`).
    pub id: String,
    /// The channel it was published on (dot-separated tokens).
    pub channel: String,
    /// The event type (`message` unless the publisher set one).
    #[serde(rename = "type")]
    pub kind: String,
    /// What the publisher sent.
    pub data: serde_json::Value,
    /// Publish time, Unix milliseconds.
    pub time: u64,
}

/// Every 4xx/5xx answer: `{"error": {"code", "message", …}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The error itself; some codes carry more fields (a filter error its `line` and `column`).
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable, stable (`invalid_filter`, `not_found`, `unauthorized`, …).
    pub code: String,
    /// For people.
    pub message: String,
}

/// `GET /healthz`: `{"status": "ok"}`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use ssepush_origin::EventId;

    use super::*;

    fn keys(v: &serde_json::Value) -> BTreeSet<String> {
        v.as_object().unwrap().keys().cloned().collect()
    }

    #[test]
    fn the_event_schema_has_the_fields_an_event_serialises() {
        let real = serde_json::to_value(ssepush_origin::Event {
            id: EventId::new(1, 0),
            channel: "a".into(),
            kind: "message".into(),
            data: serde_json::Value::Null,
            time: 1,
        })
        .unwrap();
        let mirror = serde_json::to_value(Event {
            id: "1-0".into(),
            channel: "a".into(),
            kind: "message".into(),
            data: serde_json::Value::Null,
            time: 1,
        })
        .unwrap();
        assert_eq!(real, mirror);
        assert_eq!(keys(&real), keys(&mirror));
    }
}
