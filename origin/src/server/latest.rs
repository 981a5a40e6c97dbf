//! `GET /v1/channels/{channel}/latest?n=N`: simple messaging, the newest events of one channel.
//!
//! The answer is `{"events":[…]}`, newest last, with `ETag: "<newest id>"`. Ids are totally
//! ordered and never reused, so the newest id identifies the channel's state: a client that
//! sends it back in `If-None-Match` gets a bodiless 304 after a one-event read
//! (`EventLog::latest(channel, 1)`), which is what makes polling this endpoint nearly free.
//! A channel with no retained events (unknown, or emptied by retention) answers an empty list
//! with the fixed tag `"0-0"` (no real event has that id), so polling it is just as cheap.
//! Preconditions follow RFC 9110 §13 ([`crate::conditional`]): `If-None-Match` compares weakly
//! and `*` matches (the endpoint always has a representation, the empty list included), so it
//! is a 304; `If-Match` compares strongly and a mismatch is a 412.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::conditional::{check_read, preconditions, set_etag};
use super::state::AppState;
use crate::channel::Channel;
use crate::conditional::EntityTag;
use crate::event::{Event, EventId, SharedEvent};
use crate::service::error::ApiError;
use crate::service::openapi::ErrorBody;

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

/// The answer of `/latest`: the newest events, oldest first.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct LatestAnswer {
    #[schema(value_type = Vec<Event>)]
    pub events: Vec<SharedEvent>,
}

/// The entity tag of a channel whose newest event is `newest`.
pub fn etag(newest: Option<EventId>) -> EntityTag {
    EntityTag::strong(newest.unwrap_or(EventId::ZERO).to_string())
}

fn with_tag(mut resp: Response, tag: &EntityTag) -> Response {
    set_etag(&mut resp, tag);
    // Caches may keep the answer but must ask again each time; the 304 makes that cheap.
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// Newest events of a channel; ETag is the newest id, If-None-Match gives 304
#[utoipa::path(
    get,
    path = "/v1/channels/{channel}/latest",
    tag = "subscribe",
    operation_id = "get_v1_channels_channel_latest",
    params(
        ("channel" = String, Path, description = "a channel (no wildcards)"),
        ("n" = Option<usize>, Query, description = "how many (default 1, max 1000)"),
        ("If-None-Match" = Option<String>, Header, description = "ETags of previous answers (weak comparison), or *"),
        ("If-Match" = Option<String>, Header, description = "ETags (strong comparison), or *"),
    ),
    responses(
        (status = 200, description = "the newest events, oldest first", body = LatestAnswer),
        (status = 304, description = "nothing new"),
        (status = 400, description = "invalid input; the error says what to fix", body = ErrorBody),
        (status = 412, description = "If-Match names no current ETag", body = ErrorBody),
        (status = 503, description = "a store is unavailable; retry later", body = ErrorBody),
    ),
)]
pub async fn latest(
    State(st): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let Path(channel) =
        path.map_err(|e| ApiError::bad_request("invalid_channel", e.body_text()))?;
    let channel = Channel::parse(&channel)?;
    st.auth
        .reader(&headers, query.as_deref())?
        .check_read_channel(channel.as_str())?;
    let n = parse_n(query.as_deref())?;
    let pre = preconditions(&headers)?;
    let mut events: Option<Vec<SharedEvent>> = None;
    if !pre.is_empty() {
        // Only the newest id is needed to evaluate the preconditions.
        let newest = st.log.latest(channel.as_str(), 1).await?;
        let tag = etag(newest.last().map(|e| e.id));
        if let Some(answer) = check_read(&pre, &tag) {
            return Ok(with_tag(answer, &tag));
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
    Ok(with_tag(
        axum::Json(LatestAnswer { events }).into_response(),
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
    fn the_tag_is_the_newest_id_or_zero() {
        assert_eq!(etag(Some(EventId::new(17, 3))).to_string(), "\"17-3\"");
        assert_eq!(etag(None).to_string(), "\"0-0\"");
    }
}
