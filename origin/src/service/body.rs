//! A deadline for request bodies, for every server of the product.
//!
//! Headers have hyper's `header_read_timeout` (see [`super::listener`]); a body has no such
//! bound in hyper, so a client sending a declared body one byte a second would hold its
//! connection slot for as long as it likes, and twenty such clients hold twenty slots. This
//! middleware reads every request body (of a method that carries one) in full before the
//! handler runs, within a deadline and a byte limit: too slow is a 408, too large a 413, both as
//! the JSON error, and the connection is closed (its unread remainder is not worth waiting for).
//! Bodies here are small (JSON of at most `max_body_bytes`), so reading them up front costs
//! nothing a handler would not have spent anyway.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::ops::{MetricDef, MetricKind};

/// Request-body deadline hits, shared by the origin and the proxy: each server lists it in its
/// metric catalogue so it exists at zero from start-up.
pub const BODY_TIMEOUTS: MetricDef = MetricDef {
    name: "ssepush_request_body_timeouts_total",
    kind: MetricKind::Counter,
    help: "Requests answered 408 because their body did not arrive within body_read_timeout_secs.",
};

/// The bounds [`read_body`] applies.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// How long the whole body may take to arrive.
    pub deadline: Duration,
    /// Largest body accepted, in bytes.
    pub max_bytes: usize,
}

fn closing(err: ApiError) -> Response {
    let mut resp = err.into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// Middleware (`axum::middleware::from_fn_with_state`): reads the body of a `POST`, `PUT`,
/// `PATCH` or `DELETE` within `limits`, then hands the request on with the body in memory.
///
/// 408 `body_timeout` when the body did not arrive within the deadline, 413 `body_too_large`
/// over the byte limit, 400 `body_unreadable` when the client broke off.
pub async fn read_body(State(limits): State<BodyLimits>, req: Request, next: Next) -> Response {
    if !matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let read = axum::body::to_bytes(body, limits.max_bytes);
    let bytes = match tokio::time::timeout(limits.deadline, read).await {
        Ok(Ok(bytes)) => bytes,
        Err(_) => {
            metrics::counter!(BODY_TIMEOUTS.name).increment(1);
            return closing(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the request body did not arrive within {} s; send it at once",
                    limits.deadline.as_secs_f64()
                ),
            ));
        }
        Ok(Err(e)) => {
            // `to_bytes` fails for a body over the limit or one the client broke off.
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            return closing(if too_large {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("request body is larger than {} bytes", limits.max_bytes),
                )
            } else {
                ApiError::bad_request("body_unreadable", "the request body could not be read")
            });
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}
