//! `GET /v1/sse`: a subscription as a Server-Sent-Events stream.
//!
//! Resume is exact because the live queue is registered **before** the history snapshot is
//! taken: history covers `(cursor, upto]` where `upto` is the log's newest id read after
//! registering, and the live queue covers everything the hub dispatches after registering, which
//! is everything after some id `≤ upto`. Live frames with ids `≤ upto` are skipped as already
//! covered. Nothing falls in between; nothing is sent twice.

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use super::listener::ConnHandle;
use super::AppState;
use crate::channel::PatternSet;
use crate::event::EventId;
use crate::filter::Filter;
use crate::sse;
use crate::store::ReadResult;

/// Events read from the log per history step while catching up.
const HISTORY_BATCH: usize = 500;
/// Most patterns in one subscription.
pub const MAX_PATTERNS: usize = 64;

/// A parsed subscription request, shared by the streaming transports.
#[derive(Debug, Clone)]
pub struct SubscribeParams {
    pub patterns: PatternSet,
    pub filter: Option<Filter>,
    pub last_event_id: Option<EventId>,
}

impl SubscribeParams {
    /// Reads `channel` (repeatable), `filter` and `lastEventId` from a query string; a non-empty
    /// `Last-Event-ID` header wins over the query, as the SSE spec has browsers send it.
    pub fn from_query(query: Option<&str>, headers: &HeaderMap) -> Result<Self, ApiError> {
        let mut channels = Vec::new();
        let mut filter = None;
        let mut last = None;
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match &*k {
                "channel" => channels.push(v.into_owned()),
                "filter" if !v.trim().is_empty() => filter = Some(v.into_owned()),
                "lastEventId" if !v.is_empty() => last = Some(v.into_owned()),
                _ => {}
            }
        }
        if let Some(h) = headers.get("last-event-id") {
            let h = h.to_str().map_err(|_| {
                ApiError::bad_request("invalid_event_id", "Last-Event-ID header is not ASCII")
            })?;
            if !h.trim().is_empty() {
                last = Some(h.trim().to_owned());
            }
        }
        if channels.is_empty() {
            return Err(ApiError::bad_request(
                "missing_channel",
                "give at least one channel pattern: ?channel=chat.*",
            ));
        }
        if channels.len() > MAX_PATTERNS {
            return Err(ApiError::bad_request(
                "too_many_channels",
                format!("a subscription takes at most {MAX_PATTERNS} channel patterns"),
            ));
        }
        Ok(SubscribeParams {
            patterns: PatternSet::parse_all(channels.iter().map(String::as_str))?,
            filter: filter.as_deref().map(Filter::compile).transpose()?,
            last_event_id: last.as_deref().map(str::parse).transpose()?,
        })
    }
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

pub async fn sse(
    State(st): State<AppState>,
    headers: HeaderMap,
    conn: Option<axum::Extension<ConnHandle>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = SubscribeParams::from_query(query.as_deref(), &headers)?;
    let kick = conn.map_or_else(CancellationToken::new, |c| c.kick.clone());
    let settings = st.settings.clone();
    let mut sub = st.hub.subscribe(
        params.patterns.clone(),
        params.filter.clone(),
        settings.subscriber_queue,
        kick,
    );
    // The first history read happens before the response starts, so a store failure is a 503
    // the client can see rather than a stream that ends for no visible reason.
    let mut watermark = EventId::ZERO;
    let mut first: Option<(EventId, ReadResult)> = None;
    if let Some(cursor) = params.last_event_id {
        watermark = st.log.last_id().await?;
        let batch = st
            .log
            .read(&params.patterns, cursor, watermark, HISTORY_BATCH)
            .await?;
        first = Some((cursor, batch));
    }
    tracing::debug!(subscriber = sub.id(), patterns = ?params.patterns, resume = ?params.last_event_id, "sse stream opened");

    let log = st.log.clone();
    let shutdown = st.shutdown.clone();
    let body = async_stream::stream! {
        let _gauge = StreamGauge::new();
        let retry = sse::encode_retry(settings.retry_ms);
        yield Ok::<Bytes, std::convert::Infallible>(retry.clone());
        if let Some((mut cursor, mut batch)) = first {
            if let Some(reset) = batch.reset {
                yield Ok(sse::encode_reset(cursor, reset.oldest));
            }
            loop {
                let full = batch.events.len() >= HISTORY_BATCH;
                for event in &batch.events {
                    if params.filter.as_ref().is_none_or(|f| f.matches_event(event)) {
                        yield Ok(sse::encode_event(event));
                    }
                    cursor = event.id;
                }
                if !full {
                    break;
                }
                batch = match log.read(&params.patterns, cursor, watermark, HISTORY_BATCH).await {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(error = %e, "history read failed mid-stream; client will resume");
                        yield Ok(retry.clone());
                        return;
                    }
                };
            }
        }
        let period = settings.keep_alive();
        let kicked = sub.kicked().clone();
        let mut keep_alive = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    yield Ok(retry.clone());
                    yield Ok(sse::encode_comment("server shutting down; reconnect with Last-Event-ID"));
                    break;
                }
                _ = kicked.cancelled() => break,
                frame = sub.rx.recv() => match frame {
                    Some(f) if f.id() > watermark => yield Ok(f.sse().clone()),
                    Some(_) => {}
                    None => break,
                },
                _ = keep_alive.tick() => yield Ok(sse::encode_comment("keep-alive")),
            }
        }
        tracing::debug!(subscriber = sub.id(), "sse stream closed");
    };
    let mut resp = Body::from_stream(body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tell nginx-style reverse proxies not to buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}
