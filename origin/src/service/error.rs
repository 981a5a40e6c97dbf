//! API errors for every server of the product: every failure leaves as
//! `{"error": {"code", "message", …}}` with a fitting status. Client mistakes are 4xx with a
//! message that says what to fix; only a store's failures are 5xx. The protocol's own errors
//! (bad channel, filter, event id, event, store failure) convert into it here, once.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::channel::ChannelError;
use crate::event::{BadEventId, PublishError};
use crate::filter::FilterError;
use crate::store::LogError;

/// One API error: the HTTP status, a stable machine-readable `code` (snake case, e.g.
/// `invalid_filter`) and a `message` for the person reading it. A 401 also carries
/// `WWW-Authenticate: Bearer realm="ssepush"` (RFC 6750 §3).
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable, snake case; clients branch on it.
    pub code: &'static str,
    /// A sentence that says what went wrong and what to fix.
    pub message: String,
    /// Extra fields for the error object (e.g. a filter error's position).
    pub details: Option<serde_json::Value>,
    /// `Retry-After`, in seconds, when waiting is the remedy. Every 503 carries one (1 s
    /// unless set): a client or load balancer should come back, not hammer.
    pub retry_after_secs: Option<u16>,
}

impl ApiError {
    /// An error with no extra fields.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after_secs: None,
        }
    }

    /// The same error with `Retry-After: secs`.
    pub fn retry_after(mut self, secs: u16) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// A 400.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// The router's 404 for a path it does not serve.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such route")
    }

    /// The router's 405 for a method a path does not take.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not take that method",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let (Some(serde_json::Value::Object(extra)), Some(obj)) =
            (self.details, error.as_object_mut())
        {
            obj.extend(extra);
        }
        let mut resp = (self.status, axum::Json(json!({ "error": error }))).into_response();
        let retry_after = self
            .retry_after_secs
            .or((self.status == StatusCode::SERVICE_UNAVAILABLE).then_some(1));
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        // RFC 6750 §3: a 401 names the scheme the client should authenticate with.
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"ssepush\""),
            );
        }
        resp
    }
}

impl From<ChannelError> for ApiError {
    fn from(e: ChannelError) -> Self {
        ApiError::bad_request("invalid_channel", e.to_string())
    }
}

impl From<FilterError> for ApiError {
    fn from(e: FilterError) -> Self {
        ApiError {
            details: Some(json!({"line": e.line, "column": e.column})),
            ..ApiError::bad_request("invalid_filter", e.to_string())
        }
    }
}

impl From<BadEventId> for ApiError {
    fn from(e: BadEventId) -> Self {
        ApiError::bad_request("invalid_event_id", e.to_string())
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Channel(c) => c.into(),
            other => ApiError::bad_request("invalid_event", other.to_string()),
        }
    }
}

impl From<LogError> for ApiError {
    /// A store failure as the client should read it: 504 `outcome_unknown` when a write may or
    /// may not have been applied (retry only with the same `Idempotency-Key`), 507 `store_full`
    /// when the store refused it for space, else 503 `store_unavailable` (nothing was done;
    /// retry later).
    fn from(e: LogError) -> Self {
        tracing::error!(error = %e, "store error");
        match e {
            LogError::OutcomeUnknown(_) => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "outcome_unknown",
                "the event store did not confirm the write in time: it may or may not have been \
                 stored. Retry with the same Idempotency-Key to be safe; without one a retry may \
                 store it twice",
            ),
            LogError::TooLarge(why) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "event_too_large", why)
            }
            LogError::Full(why) => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "store_full",
                format!("the store is full, nothing was stored: {why}"),
            ),
            _ => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the event store is unavailable: nothing was stored; retry later",
            ),
        }
    }
}
