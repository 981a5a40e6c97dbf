//! The proxy's upstream watcher against small misbehaving origins (raw bytes over TCP), with the
//! real proxy server and a recording push provider: it follows HTTP and the SSE spec exactly —
//! an id-only block is its cursor from the first byte, only a 200 is a stream, `Retry-After`
//! (seconds or an HTTP-date) on a 503 or 429 is waited out, and an event over its limit ends in
//! a visible, bounded outcome instead of an endless re-download.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::support::eventually;
use crate::support::proxy::{Handoff, Recorder, TestProxy, handoff_body, json_ids, proxy_settings};
use crate::support::raw::{RawServer, empty_answer, sse_head};
use serde_json::Value;
use ssepush_origin::EventId;

const WITHIN: Duration = Duration::from_secs(15);

fn event(id: EventId, n: i64) -> String {
    format!(
        "id: {id}\ndata: {}\n\n",
        serde_json::json!({"channel": "up.a", "data": n, "time": 1})
    )
}

/// A raw origin, a proxy allowed to watch it, and a recorder for its wakes.
async fn setup() -> (RawServer, TestProxy, Arc<Recorder>) {
    let server = RawServer::start().await;
    let recorder = Recorder::new();
    let mut settings = proxy_settings(&[&server.url]);
    settings.wake.coalesce_ms = 0;
    let proxy = TestProxy::start(settings, recorder.clone()).await;
    (server, proxy, recorder)
}

async fn hand_off(
    proxy: &TestProxy,
    server: &RawServer,
    last: Option<EventId>,
    device: u32,
) -> Handoff {
    let url = format!("{}/v1/sse?channel=up.a", server.url);
    let last = last.map(|l| l.to_string());
    proxy
        .create(&handoff_body(&url, last.as_deref(), device))
        .await
}

/// Polls the handoff's status until `ok` holds, failing after [`WITHIN`].
async fn status_until(proxy: &TestProxy, h: &Handoff, what: &str, ok: impl Fn(&Value) -> bool) {
    eventually(WITHIN, what, || async { ok(&proxy.status(h).await) }).await;
}

#[tokio::test]
async fn an_id_only_block_is_the_watchers_cursor_before_any_event() {
    let (mut server, proxy, _recorder) = setup().await;
    // A phone that never saw an event hands off: no cursor.
    let _h = hand_off(&proxy, &server, None, 1).await;
    let mut first = server.next().await;
    assert_eq!(first.request.header("last-event-id"), None);
    let head = EventId::new(1_700_000_000_000, 9);
    first.send_sse_head().await;
    first.send(format!("id: {head}\n\n")).await;
    // Cut before any event: the reconnect must resume from the head, or whatever was published
    // in between is lost.
    first.cut().await;
    let second = server.next().await;
    assert_eq!(
        second.request.header("last-event-id"),
        Some(head.to_string().as_str())
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_202_that_claims_to_be_an_event_stream_fails_the_handoff() {
    let (mut server, proxy, _recorder) = setup().await;
    let h = hand_off(&proxy, &server, Some(EventId::new(1, 0)), 2).await;
    let mut conn = server.next().await;
    conn.send(sse_head(202, &[])).await;
    conn.send(event(EventId::new(2, 0), 1)).await;
    conn.cut().await;
    status_until(&proxy, &h, "the handoff failed on the 202", |s| {
        s["state"] == "failed"
    })
    .await;
    let status = proxy.status(&h).await;
    let error = status["lastError"].as_str().unwrap();
    assert!(error.contains("202"), "{status}");
    assert_eq!(status["pending"], 0, "the 202's body was read: {status}");
    proxy.stop().await;
}

#[tokio::test]
async fn retry_after_on_503_and_429_is_waited_out_in_seconds_and_as_an_http_date() {
    let (mut server, proxy, _recorder) = setup().await;
    let h = hand_off(&proxy, &server, Some(EventId::new(1, 0)), 3).await;

    let mut first = server.next().await;
    let answered = Instant::now();
    first.send(empty_answer(503, &[("retry-after", "2")])).await;
    first.cut().await;
    let mut second = server.next().await;
    let waited = second.request.at - answered;
    assert!(
        waited >= Duration::from_secs(2),
        "retried {waited:?} after a 503 with Retry-After: 2"
    );

    // The same as an HTTP-date 3 s ahead. Dates have whole seconds: the wait is over 2 s.
    let answered = Instant::now();
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3));
    second
        .send(empty_answer(429, &[("retry-after", date.as_str())]))
        .await;
    second.cut().await;
    let mut third = server.next().await;
    let waited = third.request.at - answered;
    assert!(
        waited >= Duration::from_millis(1900),
        "retried {waited:?} after a 429 with Retry-After: {date}"
    );
    // Neither failed the handoff: the stream is read once it is served.
    third.send_sse_head().await;
    third.send(event(EventId::new(2, 0), 1)).await;
    status_until(&proxy, &h, "the event after the waits", |s| {
        s["pending"] == 1
    })
    .await;
    assert_ne!(proxy.status(&h).await["state"], "failed");
    proxy.stop().await;
}

#[tokio::test]
async fn an_event_over_the_limit_wakes_the_phone_with_a_gap_and_is_not_read_again() {
    let logs = crate::support::logs::capture("ssepush_proxy=debug,warn");
    let (mut server, proxy, recorder) = setup().await;
    let (cursor, big, after) = (EventId::new(1, 0), EventId::new(2, 0), EventId::new(3, 0));
    let h = hand_off(&proxy, &server, Some(cursor), 4).await;
    let mut conn = server.next().await;
    conn.send_sse_head().await;
    // 1.2 MB: over the default `upstream.max_event_bytes` (1 MiB).
    conn.send(format!(
        "id: {big}\ndata: {{\"channel\":\"up.a\",\"data\":\"{}\",\"time\":1}}\n\n",
        "x".repeat(1_200_000)
    ))
    .await;
    conn.send(event(after, 1)).await;

    // The phone is woken, and told why.
    eventually(WITHIN, "a wake for the skipped event", || async {
        !recorder.wakes_for(&h.id).is_empty()
    })
    .await;
    status_until(&proxy, &h, "lastError names the limit", |s| {
        s["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("max_event_bytes") && e.contains(&big.to_string()))
            && s["newestId"] == after.to_string()
    })
    .await;
    assert_ne!(proxy.status(&h).await["state"], "failed");
    // Its catch-up shows a gap through the skipped event (so it resumes at the origin), and
    // what came after.
    let got = proxy.events(&h, Some(&cursor.to_string())).await;
    assert_eq!(got["gap"]["throughId"], big.to_string(), "{got}");
    assert_eq!(json_ids(&got), vec![after.to_string()]);
    assert!(
        logs.text()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("max_event_bytes")),
        "no warning logged"
    );
    // A reconnect resumes past it: the big event is never downloaded again.
    conn.cut().await;
    let again = server.next().await;
    assert_eq!(
        again.request.header("last-event-id"),
        Some(after.to_string().as_str())
    );
    proxy.stop().await;
}

#[tokio::test]
async fn an_event_over_the_limit_without_an_id_fails_the_handoff_with_the_reason() {
    let (mut server, proxy, _recorder) = setup().await;
    let h = hand_off(&proxy, &server, Some(EventId::new(1, 0)), 5).await;
    let mut conn = server.next().await;
    conn.send_sse_head().await;
    conn.send(format!("data: {}\n\n", "x".repeat(1_200_000)))
        .await;
    status_until(&proxy, &h, "the handoff failed", |s| s["state"] == "failed").await;
    let status = proxy.status(&h).await;
    let error = status["lastError"].as_str().unwrap();
    assert!(
        error.contains("max_event_bytes") && error.contains("no id"),
        "{status}"
    );
    proxy.stop().await;
}
