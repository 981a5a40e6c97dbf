//! `POST /v1/events`: one event or an array of them, stored in order, ids returned.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;

use super::state::AppState;
use crate::event::{EventId, NewEvent, PublishRequest};
use crate::service::error::ApiError;
use crate::service::openapi::ErrorBody;

/// The answer to a publish: the stored events' ids, in the order they were sent.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Published {
    #[schema(value_type = Vec<String>, example = json!(["1795546555192-0.5f3e9a21"]))]
    pub ids: Vec<EventId>,
}

/// A publish body: one event, or an array of them (all or nothing).
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum PublishBody {
    One(PublishRequest),
    Batch(Vec<PublishRequest>),
}

/// Publish one event or an array of events; returns their ids
///
/// A batch is all or nothing: every event is checked before any is stored, and the ids come
/// back in order. Events on `streams.*` and `datasets.*` are refused (the origin writes those).
/// With an `Idempotency-Key`, a retry of the same body within `idempotency_ttl_secs` answers
/// the first request's ids and stores nothing; the same key with another body is a 422.
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "publish",
    operation_id = "post_v1_events",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "makes a retry safe: the same key and body within idempotency_ttl_secs answer the first request's ids"),
    ),
    request_body(content = PublishBody, description = "one event, or an array of them"),
    responses(
        (status = 200, description = "stored; their ids, in order", body = Published),
        (status = 400, description = "invalid input; the error says what to fix", body = ErrorBody),
        (status = 401, description = "missing or invalid publisher credentials", body = ErrorBody),
        (status = 403, description = "reserved channel, a channel the credential may not publish to, or publishing disabled", body = ErrorBody),
        (status = 408, description = "the body did not arrive within body_read_timeout_secs", body = ErrorBody),
        (status = 413, description = "body too large", body = ErrorBody),
        (status = 422, description = "the Idempotency-Key was used with another body", body = ErrorBody),
        (status = 503, description = "a store is unavailable: nothing was stored; retry later", body = ErrorBody),
        (status = 504, description = "the store did not confirm in time: the outcome is unknown; retry with the same Idempotency-Key", body = ErrorBody),
        (status = 507, description = "the store is full: nothing was stored", body = ErrorBody),
    ),
    security(("bearer" = []), ()),
)]
pub async fn publish(
    State(st): State<AppState>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<Json<Published>, ApiError> {
    // Credentials first: an unauthorised client gets its 401 without the body being read.
    let access = st.auth.publisher(&headers, None)?;
    let limit = st.settings.max_body_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body is larger than {limit} bytes"),
        )
    })?;
    let events = parse_events(&bytes, st.settings.max_batch)?;
    access.check_publish(events.iter().map(|e| e.channel.as_str()))?;
    let ids = match idempotency_key(&headers)? {
        Some(key) => {
            use sha2::Digest;
            let fingerprint = format!("{:x}", sha2::Sha256::digest(&bytes));
            st.publish_once(events, &key, &fingerprint).await?
        }
        None => st.publish(events).await?.iter().map(|e| e.id).collect(),
    };
    Ok(Json(Published { ids }))
}

/// Longest `Idempotency-Key` accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The `Idempotency-Key` header (draft-ietf-httpapi-idempotency-key-header): 1 to
/// [`MAX_IDEMPOTENCY_KEY`] visible ASCII characters, optionally as a quoted string (an RFC 8941
/// sf-string, as the draft writes it).
///
/// # Errors
/// 400 `invalid_idempotency_key`.
pub fn idempotency_key(headers: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = || {
        ApiError::bad_request(
            "invalid_idempotency_key",
            format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters \
                 (e.g. a UUID)"
            ),
        )
    };
    let raw = v.to_str().map_err(|_| bad())?.trim();
    let key = raw
        .strip_prefix('"')
        .and_then(|k| k.strip_suffix('"'))
        .unwrap_or(raw);
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(bad());
    }
    Ok(Some(key.to_owned()))
}

/// Parses and validates the whole body before anything is stored: a batch is all or nothing.
pub fn parse_events(body: &[u8], max_batch: usize) -> Result<Vec<NewEvent>, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("body is not valid JSON: {e}"))
    })?;
    let (items, batch) = match value {
        Value::Array(items) => (items, true),
        obj @ Value::Object(_) => (vec![obj], false),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_event",
                "body must be an event object {\"channel\", \"type\"?, \"data\"} or an array of them",
            ));
        }
    };
    if items.is_empty() {
        return Err(ApiError::bad_request("invalid_event", "the batch is empty"));
    }
    if items.len() > max_batch {
        return Err(ApiError::bad_request(
            "batch_too_large",
            format!("a batch holds at most {max_batch} events"),
        ));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let at = |msg: String| {
                if batch {
                    format!("event {i}: {msg}")
                } else {
                    msg
                }
            };
            let req: PublishRequest = serde_json::from_value(item)
                .map_err(|e| ApiError::bad_request("invalid_event", at(e.to_string())))?;
            NewEvent::from_request(req).map_err(|e| {
                let mut err = ApiError::from(e);
                err.message = at(err.message);
                err
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_events_and_batches_parse() {
        let one = parse_events(br#"{"channel":"a","data":{"x":1}}"#, 10).unwrap();
        assert_eq!(one[0].kind, "message");
        let many = parse_events(
            br#"[{"channel":"a","type":"t","data":1},{"channel":"b"}]"#,
            10,
        )
        .unwrap();
        assert_eq!(many.len(), 2);
        assert_eq!(many[1].data, Value::Null);
    }

    #[test]
    fn the_documented_body_shapes_are_what_parses() {
        for body in [
            r#"{"channel":"a","data":{"x":1}}"#,
            r#"[{"channel":"a","type":"t","data":1},{"channel":"b"}]"#,
        ] {
            assert!(parse_events(body.as_bytes(), 10).is_ok());
            serde_json::from_str::<PublishBody>(body).unwrap();
        }
    }

    #[test]
    fn bad_bodies_name_the_problem() {
        let msg = |b: &[u8]| parse_events(b, 2).unwrap_err();
        assert_eq!(msg(b"{").code, "invalid_json");
        assert_eq!(msg(b"[]").code, "invalid_event");
        assert_eq!(msg(b"3").code, "invalid_event");
        assert_eq!(
            msg(br#"[{"channel":"a"},{"channel":"b"},{"channel":"c"}]"#).code,
            "batch_too_large"
        );
        let e = msg(br#"[{"channel":"a"},{"channel":"b.*"}]"#);
        assert_eq!(e.code, "invalid_channel");
        assert!(e.message.starts_with("event 1:"), "{}", e.message);
        assert_eq!(msg(br#"{"channel":"a","colour":1}"#).code, "invalid_event");
        assert_eq!(
            msg(br#"{"channel":"a","type":"ssepush.x"}"#).code,
            "invalid_event"
        );
    }
}
