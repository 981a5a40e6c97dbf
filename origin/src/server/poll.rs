//! `GET /v1/poll`: HTTP long-polling.
//!
//! `?channel=P&channel=P2&filter=CEL&after=ID&timeout=S&limit=N` answers
//! `{"events":[…],"lastEventId":…}` as soon as at least one matching event exists after `after`
//! (history first), or waits for a live one up to `timeout` and then answers with an empty list.
//! Without `after` it waits for events newer than the request. The wait also ends when the
//! server drains.
//!
//! `lastEventId` is the cursor to continue with. It is the shared engine's
//! [`position`](super::subscribe::Subscriber::position): it may move past events the filter
//! rejected (up to the log's newest id when the request began), never past an event the client
//! did not get. Without `after`, even an empty answer carries the log's head as `lastEventId`,
//! so the next poll continues exactly from the first one. A cursor the origin cannot vouch for
//! adds `"reset":{"cause":…,"oldestId":…}` next to the events that follow it (see
//! [`resume_point`](crate::store::resume_point); `lastEventId` then continues from the reset).

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::state::AppState;
use super::subscribe::{End, FILTER_BUDGET_MESSAGE, Item, Start, Subscriber};
use super::subscription::QueryFields;
use crate::channel::PatternSet;
use crate::event::{EventId, ResetCause};
use crate::filter::Filter;
use crate::hub::Frame;
use crate::service::error::ApiError;
use crate::service::openapi::ErrorBody;
use crate::store::LogError;

/// Wait when the request names no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest wait a request may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(120);

/// Events per response when the request names no `limit`.
pub const DEFAULT_LIMIT: usize = 100;

/// Most events one response may carry.
pub const MAX_LIMIT: usize = 1000;

/// A parsed poll request.
#[derive(Debug, Clone)]
pub struct PollParams {
    pub patterns: PatternSet,
    pub filter: Option<Filter>,
    pub after: Option<EventId>,
    pub timeout: Duration,
    pub limit: usize,
}

impl PollParams {
    /// Reads `channel` (repeatable), `filter`, `after`, `timeout` and `limit`; the subscription
    /// parts are checked by the shared parser ([`super::subscription`]).
    ///
    /// # Errors
    /// As [`super::subscription::SubscriptionRequest::new`], plus `invalid_timeout` and
    /// `invalid_limit`.
    pub fn from_query(query: Option<&str>) -> Result<Self, ApiError> {
        let fields = QueryFields::read(query, "after");
        let mut timeout = DEFAULT_TIMEOUT;
        let mut limit = DEFAULT_LIMIT;
        for (k, v) in &fields.other {
            match k.as_str() {
                "timeout" => {
                    let secs: f64 = v.trim().parse().unwrap_or(f64::NAN);
                    if !(0.0..=MAX_TIMEOUT.as_secs_f64()).contains(&secs) {
                        return Err(ApiError::bad_request(
                            "invalid_timeout",
                            format!(
                                "timeout is a number of seconds from 0 to {}",
                                MAX_TIMEOUT.as_secs()
                            ),
                        ));
                    }
                    timeout = Duration::from_secs_f64(secs);
                }
                "limit" => {
                    limit = v
                        .trim()
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            ApiError::bad_request(
                                "invalid_limit",
                                format!("limit is a whole number from 1 to {MAX_LIMIT}"),
                            )
                        })?;
                }
                _ => {}
            }
        }
        let request = fields.request()?;
        Ok(PollParams {
            patterns: request.patterns,
            filter: request.filter,
            after: request.cursor,
            timeout,
            limit,
        })
    }
}

/// The answer to a poll, as [`body`] writes it: `{"events", "lastEventId", "reset"?}`.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PollAnswer {
    /// The matching events after the cursor, in id order (possibly none).
    pub events: Vec<crate::event::Event>,
    /// The cursor to continue with (`after` of the next poll).
    pub last_event_id: String,
    /// Present when the origin could not vouch for `after`.
    #[serde(default)]
    pub reset: Option<PollReset>,
}

/// Why the origin could not vouch for a poll's cursor.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PollReset {
    /// `retention`, `epoch` or `ahead`.
    pub cause: String,
    /// The oldest id still held on the matching channels, if known.
    pub oldest_id: Option<String>,
}

/// What one poll found.
#[derive(Debug, Default)]
pub struct PollResult {
    pub events: Vec<Frame>,
    /// The filter went over its evaluation budget on the event after the last one here.
    pub filter_over_budget: bool,
    /// Set when the origin could not vouch for the cursor: why, and the oldest id still held
    /// (if known).
    pub reset: Option<(ResetCause, Option<EventId>)>,
    /// The cursor to continue with.
    pub last_event_id: EventId,
}

/// Takes up to `limit` items from an opened subscription: waits (until `deadline`) only while
/// it has nothing to answer with, then takes whatever else is ready without waiting.
pub async fn collect(
    sub: &mut Subscriber,
    limit: usize,
    deadline: Instant,
) -> Result<PollResult, LogError> {
    let mut out = PollResult::default();
    while out.events.len() < limit {
        let waiting = out.events.is_empty() && out.reset.is_none();
        let next = if waiting {
            tokio::time::timeout_at(deadline, sub.next()).await.ok()
        } else {
            // `next` is cancel-safe: a history read that is not ready yet is simply dropped.
            sub.next().now_or_never()
        };
        match next {
            None => break,
            Some(Ok(Item::Event(frame))) => out.events.push(frame),
            Some(Ok(Item::Reset { oldest, cause, .. })) => out.reset = Some((cause, oldest)),
            // Not asked for by long-poll; nothing to answer.
            Some(Ok(Item::KeepAlive)) => {}
            Some(Err(End::Store(e))) if out.events.is_empty() => return Err(e),
            Some(Err(End::FilterBudget)) => {
                out.filter_over_budget = true;
                break;
            }
            // Shutdown, a kick, or a store error after some events: answer with what we have;
            // the cursor says where to continue.
            Some(Err(_)) => break,
        }
    }
    out.last_event_id = sub.position();
    Ok(out)
}

/// The response body; events are written from their shared JSON encoding.
pub fn body(result: &PollResult) -> String {
    let mut s = String::from(r#"{"events":["#);
    for (i, frame) in result.events.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&String::from_utf8_lossy(frame.json()));
    }
    s.push_str(r#"],"lastEventId":""#);
    s.push_str(&result.last_event_id.to_string());
    s.push('"');
    if let Some((cause, oldest)) = result.reset {
        let reset = serde_json::json!({ "cause": cause.as_str(), "oldestId": oldest });
        s.push_str(r#","reset":"#);
        s.push_str(&reset.to_string());
    }
    s.push('}');
    s
}

/// Long-poll: matching events after `after`, as soon as one exists, or none at the timeout
///
/// Continue with the returned `lastEventId`; without `after`, the head at the request.
#[utoipa::path(
    get,
    path = "/v1/poll",
    tag = "subscribe",
    operation_id = "get_v1_poll",
    params(
        ("channel" = Vec<String>, Query, description = "channel pattern; repeatable"),
        ("filter" = Option<String>, Query, description = "CEL filter"),
        ("after" = Option<String>, Query, description = "cursor: the lastEventId of the previous response"),
        ("timeout" = Option<f64>, Query, description = "seconds to wait (default 30, max 120)"),
        ("limit" = Option<usize>, Query, description = "most events returned (default 100, max 1000)"),
    ),
    responses(
        (status = 200, description = "the events (possibly none) and the cursor to continue with", body = PollAnswer),
        (status = 400, description = "invalid input; the error says what to fix", body = ErrorBody),
        (status = 422, description = "the filter went over its evaluation budget on the next event (`filter_budget`)", body = ErrorBody),
        (status = 503, description = "a store is unavailable; retry later", body = ErrorBody),
    ),
)]
pub async fn poll(
    State(st): State<AppState>,
    headers: axum::http::HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let access = st.auth.reader(&headers, query.as_deref())?;
    let params = PollParams::from_query(query.as_deref())?;
    access.check_read(&params.patterns)?;
    let deadline = Instant::now() + params.timeout;
    let start = params.after.map_or(Start::Now, Start::After);
    let mut sub = Subscriber::open(
        &st,
        params.patterns,
        params.filter,
        start,
        CancellationToken::new(),
    )
    .await?;
    metrics::counter!("ssepush_origin_polls_total").increment(1);
    let result = collect(&mut sub, params.limit, deadline).await?;
    drop(sub);
    // Events before the costly one are answered; the next poll, from their cursor, gets the 422.
    if result.filter_over_budget && result.events.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "filter_budget",
            FILTER_BUDGET_MESSAGE,
        ));
    }
    let mut resp = body(&result).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::NewEvent;
    use crate::hub::Hub;
    use crate::store::memory::MemoryLog;
    use crate::store::{EventLog, Retention};
    use std::sync::Arc;

    #[test]
    fn the_body_is_the_documented_answer() {
        let event = Arc::new(crate::event::Event {
            id: EventId::new(7, 1).in_epoch(3),
            channel: "a.b".into(),
            kind: "message".into(),
            data: serde_json::json!({"x": 1}),
            time: 7,
        });
        let result = PollResult {
            events: vec![Frame::new(event.clone())],
            reset: Some((ResetCause::Retention, Some(EventId::new(5, 0).in_epoch(3)))),
            filter_over_budget: false,
            last_event_id: event.id,
        };
        let answer: PollAnswer = serde_json::from_str(&body(&result)).unwrap();
        assert_eq!(answer.events, [(*event).clone()]);
        assert_eq!(answer.last_event_id, event.id.to_string());
        let reset = answer.reset.unwrap();
        assert_eq!(reset.cause, "retention");
        assert_eq!(reset.oldest_id.as_deref(), Some("5-0.00000003"));
        let empty: PollAnswer = serde_json::from_str(&body(&PollResult::default())).unwrap();
        assert!(empty.events.is_empty() && empty.reset.is_none());
    }

    #[test]
    fn params_parse_with_defaults_and_bounds() {
        let p = PollParams::from_query(Some(
            "channel=a.*&channel=b&after=5-0&timeout=1.5&limit=7&filter=data.n%20%3E%201",
        ))
        .unwrap();
        assert!(p.patterns.matches("a.x") && p.patterns.matches("b"));
        assert_eq!(p.after, Some(EventId::new(5, 0)));
        assert_eq!(p.timeout, Duration::from_millis(1500));
        assert_eq!(p.limit, 7);
        assert_eq!(p.filter.unwrap().source(), "data.n > 1");
        let p = PollParams::from_query(Some("channel=a&after=")).unwrap();
        assert_eq!(
            (p.after, p.timeout, p.limit),
            (None, DEFAULT_TIMEOUT, DEFAULT_LIMIT)
        );
        let code = |q: &str| PollParams::from_query(Some(q)).unwrap_err().code;
        assert_eq!(code(""), "missing_channel");
        assert_eq!(code("channel=a.>.b"), "invalid_channel");
        assert_eq!(code("channel=a&timeout=121"), "invalid_timeout");
        assert_eq!(code("channel=a&timeout=-1"), "invalid_timeout");
        assert_eq!(code("channel=a&timeout=soon"), "invalid_timeout");
        assert_eq!(code("channel=a&limit=0"), "invalid_limit");
        assert_eq!(code("channel=a&limit=1001"), "invalid_limit");
        assert_eq!(code("channel=a&after=yesterday"), "invalid_event_id");
        assert_eq!(code("channel=a&filter=data.x%20%3E"), "invalid_filter");
    }

    async fn setup(n: i64) -> (Arc<MemoryLog>, Arc<Hub>, Vec<EventId>) {
        let log = Arc::new(MemoryLog::new(Retention::default()));
        let events = (0..n)
            .map(|i| {
                NewEvent::new(
                    if i % 3 == 2 { "b" } else { "a" },
                    None,
                    serde_json::json!({ "n": i }),
                )
                .unwrap()
            })
            .collect();
        let ids = log
            .append(events)
            .await
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        (log, Hub::new(), ids)
    }

    async fn open(
        log: &Arc<MemoryLog>,
        hub: &Arc<Hub>,
        filter: Option<&str>,
        start: Start,
    ) -> Subscriber {
        Subscriber::open_with(
            log.clone(),
            hub,
            CancellationToken::new(),
            64,
            PatternSet::parse_all(["a"]).unwrap(),
            filter.map(|f| Filter::compile(f).unwrap()),
            start,
            CancellationToken::new(),
        )
        .await
        .unwrap()
    }

    fn ns(r: &PollResult) -> Vec<i64> {
        r.events
            .iter()
            .map(|f| f.event().data["n"].as_i64().unwrap())
            .collect()
    }

    #[tokio::test]
    async fn the_cursor_passes_filtered_events_but_never_an_undelivered_one() {
        let (log, hub, ids) = setup(12).await;
        let soon = Instant::now() + Duration::from_millis(50);
        // n = 0..12 on "a" except 2, 5, 8, 11; the filter keeps n >= 6.
        let mut s = open(&log, &hub, Some("data.n >= 6"), Start::After(ids[0])).await;
        let r = collect(&mut s, 2, soon).await.unwrap();
        assert_eq!(ns(&r), vec![6, 7]);
        assert_eq!(
            r.last_event_id, ids[7],
            "the limit stops the cursor at the last event sent"
        );
        let mut s = open(
            &log,
            &hub,
            Some("data.n >= 6"),
            Start::After(r.last_event_id),
        )
        .await;
        let r = collect(&mut s, 10, soon).await.unwrap();
        assert_eq!(ns(&r), vec![9, 10]);
        assert_eq!(
            r.last_event_id, ids[11],
            "all history scanned: the cursor is the watermark"
        );
        // Nothing new: the wait ends empty at the deadline, the cursor stays.
        let mut s = open(&log, &hub, None, Start::After(r.last_event_id)).await;
        let r = collect(&mut s, 10, Instant::now() + Duration::from_millis(50))
            .await
            .unwrap();
        assert!(r.events.is_empty() && r.reset.is_none());
        assert_eq!(r.last_event_id, ids[11]);
        assert_eq!(
            body(&r),
            format!(r#"{{"events":[],"lastEventId":"{}"}}"#, ids[11])
        );
    }

    #[tokio::test]
    async fn without_a_cursor_it_waits_for_the_next_live_event() {
        let (log, hub, ids) = setup(3).await;
        let mut s = open(&log, &hub, None, Start::Now).await;
        let publisher = {
            let (log, hub) = (log.clone(), hub.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                let stored = log
                    .append(vec![
                        NewEvent::new("a", None, serde_json::json!({"n": 99})).unwrap(),
                    ])
                    .await
                    .unwrap();
                hub.dispatch(&stored);
                stored[0].id
            })
        };
        let r = collect(&mut s, 10, Instant::now() + Duration::from_secs(10))
            .await
            .unwrap();
        let id = publisher.await.unwrap();
        assert!(id > ids[2]);
        assert_eq!(ns(&r), vec![99]);
        assert_eq!(r.last_event_id, id);
        let v: serde_json::Value = serde_json::from_str(&body(&r)).unwrap();
        assert_eq!(v["events"][0]["data"]["n"], 99);
        assert_eq!(v["events"][0]["id"], id.to_string());
    }

    #[tokio::test]
    async fn a_stale_cursor_reports_a_reset_with_the_retained_events() {
        let log = Arc::new(MemoryLog::new(Retention {
            default: crate::store::Limits {
                max_events: 3,
                max_age: None,
                max_bytes: u64::MAX,
            },
            overrides: vec![],
            max_total_bytes: u64::MAX,
        }));
        let hub = Hub::new();
        let mut ids = vec![];
        for i in 0..6 {
            let e = log
                .append(vec![
                    NewEvent::new("a", None, serde_json::json!({"n": i})).unwrap(),
                ])
                .await
                .unwrap();
            ids.push(e[0].id);
        }
        let mut s = open(&log, &hub, None, Start::After(ids[0])).await;
        let r = collect(&mut s, 10, Instant::now()).await.unwrap();
        assert_eq!(r.reset, Some((ResetCause::Retention, Some(ids[3]))));
        assert_eq!(ns(&r), vec![3, 4, 5]);
        assert_eq!(r.last_event_id, ids[5]);
        let v: serde_json::Value = serde_json::from_str(&body(&r)).unwrap();
        assert_eq!(v["reset"]["oldestId"], ids[3].to_string());
        assert_eq!(v["reset"]["cause"], "retention");
    }
}
