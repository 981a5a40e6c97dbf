//! HTTP glue for conditional requests ([`crate::conditional`]): reads `If-Match` and
//! `If-None-Match` off a request (a malformed field is a 400 `invalid_precondition`), and answers
//! a read whose preconditions do not hold with 304 or 412, each carrying the current `ETag`.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::conditional::{EntityTag, Evaluation, MalformedField, Preconditions};
use crate::service::error::ApiError;

impl From<MalformedField> for ApiError {
    fn from(e: MalformedField) -> Self {
        ApiError::bad_request("invalid_precondition", e.to_string())
    }
}

/// The request's `If-Match` / `If-None-Match`, every field line of each.
pub fn preconditions(headers: &HeaderMap) -> Result<Preconditions, ApiError> {
    let lines = |name| headers.get_all(name).into_iter().map(HeaderValue::as_bytes);
    Ok(Preconditions::parse(
        lines(header::IF_MATCH),
        lines(header::IF_NONE_MATCH),
    )?)
}

/// Sets `ETag`.
pub fn set_etag(resp: &mut Response, tag: &EntityTag) {
    if let Ok(v) = HeaderValue::from_str(&tag.to_string()) {
        resp.headers_mut().insert(header::ETAG, v);
    }
}

/// A GET of a representation tagged `current`: `None` to send it, or the 304 / 412 answer.
pub fn check_read(pre: &Preconditions, current: &EntityTag) -> Option<Response> {
    let mut resp = match pre.evaluate(Some(current), true) {
        Evaluation::Proceed => return None,
        Evaluation::NotModified => StatusCode::NOT_MODIFIED.into_response(),
        Evaluation::Failed => ApiError {
            details: Some(json!({"etag": current.to_string()})),
            ..ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                format!("If-Match names no current representation; its ETag is now {current}"),
            )
        }
        .into_response(),
    };
    set_etag(&mut resp, current);
    Some(resp)
}
