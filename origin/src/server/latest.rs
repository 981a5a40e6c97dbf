//! `GET /v1/channels/{channel}/latest?n=N`: simple messaging, the newest events of one channel.
//!
//! The answer is `{"events":[…]}`, newest last, with `ETag: "<newest id>"`. Ids are totally
//! ordered and never reused, so the newest id identifies the channel's state: a client that
//! sends it back in `If-None-Match` gets a bodiless 304 after a one-event read
//! (`EventLog::latest(channel, 1)`), which is what makes polling this endpoint nearly free.
//! A channel with no retained events (unknown, or emptied by retention) answers an empty list
//! with the fixed tag `"0-0"` (no real event has that id), so polling it is just as cheap.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use crate::channel::Channel;
use crate::event::{Event, EventId, SharedEvent};

/// Most events one request may ask for.
pub const MAX_N: usize = 1000;

/// Reads `n` (default 1) from the query string.
pub fn parse_n(query: Option<&str>) -> Result<usize, ApiError> {
    let mut n = 1;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if k == "n" {
            n = v
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_N).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_n",
                        format!("n is a whole number from 1 to {MAX_N}"),
                    )
                })?;
        }
    }
    Ok(n)
}

/// The entity tag of a channel whose newest event is `newest`.
pub fn etag(newest: Option<EventId>) -> String {
    format!("\"{}\"", newest.unwrap_or(EventId::ZERO))
}

/// `If-None-Match` (RFC 9110 §13.1.2): a list of tags, weak comparison, or `*`.
pub fn none_match(header: &str, tag: &str, exists: bool) -> bool {
    header
        .split(',')
        .map(str::trim)
        .any(|t| (t == "*" && exists) || t.strip_prefix("W/").unwrap_or(t) == tag)
}

fn with_tag(mut resp: Response, tag: &str) -> Response {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(tag) {
        h.insert(header::ETAG, v);
    }
    // Caches may keep the answer but must ask again each time; the 304 makes that cheap.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

pub async fn latest(
    State(st): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let Path(channel) =
        path.map_err(|e| ApiError::bad_request("invalid_channel", e.body_text()))?;
    let channel = Channel::parse(&channel)?;
    let n = parse_n(query.as_deref())?;
    let mut events: Option<Vec<SharedEvent>> = None;
    if let Some(inm) = headers.get(header::IF_NONE_MATCH) {
        let inm = inm
            .to_str()
            .map_err(|_| ApiError::bad_request("invalid_header", "If-None-Match is not ASCII"))?;
        // Only the newest id is needed to know whether the client is current.
        let newest = st.log.latest(channel.as_str(), 1).await?;
        let newest_id = newest.last().map(|e| e.id);
        let tag = etag(newest_id);
        if none_match(inm, &tag, newest_id.is_some()) {
            return Ok(with_tag(StatusCode::NOT_MODIFIED.into_response(), &tag));
        }
        if n == 1 {
            events = Some(newest);
        }
    }
    let events = match events {
        Some(e) => e,
        None => st.log.latest(channel.as_str(), n).await?,
    };
    let tag = etag(events.last().map(|e| e.id));
    let body: Vec<&Event> = events.iter().map(|e| &**e).collect();
    Ok(with_tag(
        axum::Json(serde_json::json!({ "events": body })).into_response(),
        &tag,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n_defaults_to_one_and_is_bounded() {
        assert_eq!(parse_n(None).unwrap(), 1);
        assert_eq!(parse_n(Some("n=1000")).unwrap(), 1000);
        for bad in ["n=0", "n=1001", "n=x", "n=-1", "n="] {
            assert_eq!(parse_n(Some(bad)).unwrap_err().code, "invalid_n", "{bad}");
        }
    }

    #[test]
    fn if_none_match_follows_rfc_9110() {
        let tag = etag(Some(EventId::new(17, 3)));
        assert_eq!(tag, "\"17-3\"");
        assert!(none_match("\"17-3\"", &tag, true));
        assert!(none_match("\"1-0\", W/\"17-3\"", &tag, true));
        assert!(!none_match("\"17-2\"", &tag, true));
        assert!(!none_match("17-3", &tag, true), "tags are quoted");
        assert!(none_match("*", &tag, true));
        assert!(!none_match("*", &etag(None), false));
        assert!(
            none_match("\"0-0\"", &etag(None), false),
            "an empty channel has a fixed tag"
        );
    }
}
