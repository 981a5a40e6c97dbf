//! `GET /v1/sse`: a subscription as a Server-Sent-Events stream.
//!
//! The subscription itself (hub registration, history with the watermark rule, live frames) is
//! the shared engine in [`super::subscribe`] and the request is read by the shared parser
//! ([`super::subscription`]); this module writes the
//! SSE wire format: `retry:` first; on a fresh stream (no `Last-Event-ID`) the log's head as an
//! id-only block, so the client holds a cursor from the first byte; a reset before history
//! (followed by an id-only block when the stream continues from a new position); keep-alive
//! comments once live; `retry:` again on shutdown; a kick ends the stream.

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::state::AppState;
use super::subscribe::{End, FILTER_BUDGET_MESSAGE, Item, Start, Subscriber};
use super::subscription::{QueryFields, SubscriptionRequest};
use crate::service::error::ApiError;
use crate::service::listener::ConnHandle;
use crate::service::openapi::ErrorBody;
use crate::sse;

/// Reads an SSE subscription: `channel` (repeatable), `filter` and `lastEventId` from the query
/// string; a non-empty `Last-Event-ID` header wins over the query, as the SSE spec has browsers
/// send it. The checks are the shared ones of [`SubscriptionRequest`].
///
/// # Errors
/// As [`SubscriptionRequest::new`]; `invalid_event_id` for a header that is not ASCII.
pub fn request(query: Option<&str>, headers: &HeaderMap) -> Result<SubscriptionRequest, ApiError> {
    let mut fields = QueryFields::read(query, "lastEventId");
    if let Some(h) = headers.get("last-event-id") {
        let h = h.to_str().map_err(|_| {
            ApiError::bad_request("invalid_event_id", "Last-Event-ID header is not ASCII")
        })?;
        if !h.trim().is_empty() {
            fields.cursor = Some(h.trim().to_owned());
        }
    }
    fields.request()
}

struct StreamGauge;

impl StreamGauge {
    fn new() -> Self {
        metrics::gauge!("ssepush_origin_sse_streams").increment(1.0);
        StreamGauge
    }
}

impl Drop for StreamGauge {
    fn drop(&mut self) {
        metrics::gauge!("ssepush_origin_sse_streams").decrement(1.0);
    }
}

/// Server-Sent Events stream of the matching channels, resumable with Last-Event-ID
///
/// `retry:` first; without a cursor the log's head as an id-only block; `id:` on every event;
/// keep-alive comments; `ssepush.reset` first when the origin cannot vouch for the cursor.
#[utoipa::path(
    get,
    path = "/v1/sse",
    tag = "subscribe",
    operation_id = "get_v1_sse",
    params(
        ("channel" = Vec<String>, Query, description = "channel pattern (`*` one token, `>` the rest); repeatable"),
        ("filter" = Option<String>, Query, description = "CEL filter over channel, type, id, data"),
        ("lastEventId" = Option<String>, Query, description = "resume after this id (the Last-Event-ID header wins)"),
        ("Last-Event-ID" = Option<String>, Header, description = "resume after this id"),
    ),
    responses(
        (status = 200, description = "the event stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "invalid input; the error says what to fix", body = ErrorBody),
        (status = 503, description = "a store is unavailable; retry later", body = ErrorBody),
    ),
)]
pub async fn sse(
    State(st): State<AppState>,
    headers: HeaderMap,
    conn: Option<axum::Extension<ConnHandle>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let access = st.auth.reader(&headers, query.as_deref())?;
    let params = request(query.as_deref(), &headers)?;
    access.check_read(&params.patterns)?;
    let kick = conn.map_or_else(CancellationToken::new, |c| c.kick.clone());
    let retry_ms = st.settings.retry_ms;
    let start = params.cursor.map_or(Start::Now, Start::After);
    // Opening reads the first history batch before the response starts, so a store failure is
    // a 503 the client can see rather than a stream that ends for no visible reason.
    let mut sub =
        Subscriber::open(&st, params.patterns.clone(), params.filter, start, kick).await?;
    // Keep-alive comments come from the hub's one clock, through the subscription.
    sub.keep_alive();
    tracing::debug!(subscriber = sub.id(), patterns = ?params.patterns, resume = ?params.cursor, "sse stream opened");

    // A fresh stream starts at the head: tell the client, so a reconnect before the first event
    // resumes from here instead of from "now".
    let head = (start == Start::Now).then(|| sse::encode_id(sub.position()));
    let body = async_stream::stream! {
        let _gauge = StreamGauge::new();
        yield Ok::<Bytes, std::convert::Infallible>(sse::encode_retry(retry_ms));
        if let Some(head) = head {
            yield Ok(head);
        }
        // A keep-alive comment only goes out while live with nothing else to send: never in
        // the middle of a history replay that is flowing (the subscription gives it, from the
        // hub's one clock: no timer per stream).
        loop {
            match sub.next().await {
                Ok(Item::Reset { requested, oldest, cause, resume_from }) => {
                    let reset = sse::encode_reset(requested, oldest, cause);
                    match resume_from {
                        Some(id) => yield Ok([reset, sse::encode_id(id)].concat().into()),
                        None => yield Ok(reset),
                    }
                }
                Ok(Item::Event(frame)) => yield Ok(frame.sse().clone()),
                Ok(Item::KeepAlive) => yield Ok(Bytes::from_static(b": keep-alive\n\n")),
                Err(End::Shutdown) => {
                    yield Ok(sse::encode_retry(retry_ms));
                    yield Ok(sse::encode_comment("server shutting down; reconnect with Last-Event-ID"));
                    break;
                }
                Err(End::Kicked) | Err(End::Closed) => break,
                Err(End::Store(e)) => {
                    tracing::warn!(error = %e, "history read failed mid-stream; client will resume");
                    yield Ok(sse::encode_retry(retry_ms));
                    break;
                }
                Err(End::FilterBudget) => {
                    yield Ok(sse::encode_error("filter_budget", FILTER_BUDGET_MESSAGE));
                    break;
                }
            }
        }
        tracing::debug!(subscriber = sub.id(), "sse stream closed");
    };
    let mut resp = Body::from_stream(body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tell nginx-style reverse proxies not to buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}
