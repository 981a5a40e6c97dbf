//! The one subscription-request parser: what SSE, WebSocket and long-poll all ask for —
//! channel patterns, an optional CEL filter, an optional cursor — checked the same way with the
//! same errors whichever transport carried it.
//!
//! The transports differ only in where the parts come from: a query string (`channel`
//! repeatable, `filter`, and `lastEventId` for SSE or `after` for poll; [`QueryFields`]) or a
//! WebSocket `subscribe` message (`channels`, `filter`, `lastEventId`). An empty filter or
//! cursor means none. The checks run in one order: channels present, at most
//! [`MAX_PATTERNS`], each a valid pattern, the filter compiles, the cursor is an event id.

use crate::channel::PatternSet;
use crate::event::EventId;
use crate::filter::Filter;
use crate::service::error::ApiError;

/// Most patterns in one subscription.
pub const MAX_PATTERNS: usize = 64;

/// How the request was written, so the missing-channel error shows the right syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// A query string: `?channel=chat.*`.
    Query,
    /// A JSON message: `"channels": ["chat.*"]`.
    Json,
}

/// A checked subscription request.
#[derive(Debug, Clone)]
pub struct SubscriptionRequest {
    pub patterns: PatternSet,
    pub filter: Option<Filter>,
    /// Resume after this id; `None` starts at the log's head.
    pub cursor: Option<EventId>,
}

impl SubscriptionRequest {
    /// Checks the parts of a request.
    ///
    /// # Errors
    /// 400 with code `missing_channel`, `too_many_channels`, `invalid_channel` (a bad pattern),
    /// `invalid_filter` (with `line` and `column`) or `invalid_event_id`.
    pub fn new(
        channels: &[String],
        filter: Option<&str>,
        cursor: Option<&str>,
        form: Form,
    ) -> Result<Self, ApiError> {
        if channels.is_empty() {
            return Err(ApiError::bad_request(
                "missing_channel",
                match form {
                    Form::Query => "give at least one channel pattern: ?channel=chat.*",
                    Form::Json => "give at least one channel pattern: \"channels\": [\"chat.*\"]",
                },
            ));
        }
        if channels.len() > MAX_PATTERNS {
            return Err(ApiError::bad_request(
                "too_many_channels",
                format!("a subscription takes at most {MAX_PATTERNS} channel patterns"),
            ));
        }
        Ok(SubscriptionRequest {
            patterns: PatternSet::parse_all(channels.iter().map(String::as_str))?,
            filter: compile_filter(filter)?,
            cursor: cursor
                .filter(|c| !c.is_empty())
                .map(str::parse)
                .transpose()?,
        })
    }
}

/// A filter's text compiled; empty or blank text means no filter.
///
/// # Errors
/// 400 `invalid_filter` with the error's `line` and `column`.
pub fn compile_filter(text: Option<&str>) -> Result<Option<Filter>, ApiError> {
    Ok(text
        .filter(|f| !f.trim().is_empty())
        .map(Filter::compile)
        .transpose()?)
}

/// The subscription parts of a query string, and the rest of its fields.
#[derive(Debug, Clone, Default)]
pub struct QueryFields {
    /// Every `channel` value, in order.
    pub channels: Vec<String>,
    /// The last non-blank `filter`.
    pub filter: Option<String>,
    /// The last non-empty value of the cursor field.
    pub cursor: Option<String>,
    /// Every other field, in order, for the transport's own options.
    pub other: Vec<(String, String)>,
}

impl QueryFields {
    /// Reads `query` (`application/x-www-form-urlencoded`); `cursor_key` names the cursor
    /// field (`lastEventId` for SSE, `after` for poll).
    pub fn read(query: Option<&str>, cursor_key: &str) -> QueryFields {
        let mut out = QueryFields::default();
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match &*k {
                "channel" => out.channels.push(v.into_owned()),
                "filter" => {
                    if !v.trim().is_empty() {
                        out.filter = Some(v.into_owned());
                    }
                }
                k if k == cursor_key => {
                    if !v.is_empty() {
                        out.cursor = Some(v.into_owned());
                    }
                }
                _ => out.other.push((k.into_owned(), v.into_owned())),
            }
        }
        out
    }

    /// The checked request.
    ///
    /// # Errors
    /// As [`SubscriptionRequest::new`].
    pub fn request(&self) -> Result<SubscriptionRequest, ApiError> {
        SubscriptionRequest::new(
            &self.channels,
            self.filter.as_deref(),
            self.cursor.as_deref(),
            Form::Query,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(r: Result<SubscriptionRequest, ApiError>) -> &'static str {
        r.map(|_| "ok").unwrap_or_else(|e| e.code)
    }

    #[test]
    fn the_checks_and_their_codes() {
        let ch = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ok = SubscriptionRequest::new(&ch(&["a.*"]), Some(" "), Some(""), Form::Json).unwrap();
        assert!(ok.filter.is_none() && ok.cursor.is_none());
        assert_eq!(
            code(SubscriptionRequest::new(&[], None, None, Form::Query)),
            "missing_channel"
        );
        let many = ch(&["a"; MAX_PATTERNS + 1]);
        assert_eq!(
            code(SubscriptionRequest::new(&many, None, None, Form::Json)),
            "too_many_channels"
        );
        assert_eq!(
            code(SubscriptionRequest::new(
                &ch(&["a.>.b"]),
                None,
                None,
                Form::Json
            )),
            "invalid_channel"
        );
        assert_eq!(
            code(SubscriptionRequest::new(
                &ch(&["a"]),
                Some("data."),
                None,
                Form::Json
            )),
            "invalid_filter"
        );
        assert_eq!(
            code(SubscriptionRequest::new(
                &ch(&["a"]),
                None,
                Some("x"),
                Form::Json
            )),
            "invalid_event_id"
        );
        // A bad pattern is reported before a bad filter or cursor, whatever the transport.
        assert_eq!(
            code(SubscriptionRequest::new(
                &ch(&["a.>.b"]),
                Some("("),
                Some("x"),
                Form::Query
            )),
            "invalid_channel"
        );
    }

    #[test]
    fn query_fields_take_the_last_non_empty_value() {
        let q = QueryFields::read(
            Some(
                "channel=a&channel=b.*&filter=data.x%20%3E%201&filter=%20&after=1-0&after=&timeout=5",
            ),
            "after",
        );
        assert_eq!(q.channels, ["a", "b.*"]);
        assert_eq!(q.filter.as_deref(), Some("data.x > 1"));
        assert_eq!(q.cursor.as_deref(), Some("1-0"));
        assert_eq!(q.other, [("timeout".to_owned(), "5".to_owned())]);
        let r = q.request().unwrap();
        assert_eq!(r.cursor, Some(EventId::new(1, 0)));
    }
}
