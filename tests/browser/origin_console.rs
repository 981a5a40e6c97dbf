//! The console at `GET /` in a real headless Chromium: it subscribes with the browser's own
//! `EventSource`, shows events live, and — when the origin restarts on the same address —
//! reconnects with `Last-Event-ID` and shows the events published while it was away, every event
//! exactly once and in order.
//!
//! The browser is driven over the Chrome DevTools Protocol by `support/browser.rs`. Needs
//! `chromium` (Debian package; `CHROMIUM` overrides the path). The test fails, never skips,
//! without it.

use std::time::Duration;

use crate::support::TestOrigin;
use crate::support::browser::Browser;
use serde_json::{Value, json};
use ssepush_origin::{EventId, NewEvent};

async fn state(b: &mut Browser) -> String {
    let v = b
        .eval("(document.getElementById('state') || {dataset: {}}).dataset.state || ''")
        .await;
    v.as_str().unwrap_or_default().to_owned()
}

/// The events the page shows: (id, channel, type, data) in DOM order.
async fn events(b: &mut Browser) -> Vec<(String, String, String, Value)> {
    let v = b
        .eval(
            "JSON.stringify(Array.from(document.querySelectorAll('#events li.event')).map(li => \
             [li.dataset.id, li.dataset.channel, li.dataset.type, \
             li.querySelector('.data').textContent]))",
        )
        .await;
    let rows: Vec<(String, String, String, String)> =
        serde_json::from_str(v.as_str().unwrap()).unwrap();
    rows.into_iter()
        .map(|(id, c, t, d)| (id, c, t, serde_json::from_str(&d).unwrap()))
        .collect()
}

async fn wait_for(
    b: &mut Browser,
    what: &str,
    mut cond: impl FnMut(&mut Vec<(String, String, String, Value)>, &str) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut shown = events(b).await;
        let st = state(b).await;
        if cond(&mut shown, &st) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: state {st:?}, events {shown:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn console_shows_events_live_and_resumes_after_an_origin_restart() {
    // Redis keeps the events and the id counter across the restart.
    let ns = crate::support::namespace("console");
    let settings = crate::support::redis_settings(&ns);
    let origin = TestOrigin::start(settings.clone()).await;
    let addr = origin.addr;

    let mut browser = Browser::launch().await;
    browser
        .open(&format!(
            "{}/?channel=console.room&types=alert&connect=1",
            origin.url
        ))
        .await;
    wait_for(&mut browser, "the page to connect", |_, s| s == "open").await;

    let mut expected: Vec<(EventId, &str, Value)> = Vec::new();
    for (n, kind) in [(1, None), (2, Some("alert")), (3, None)] {
        let id = origin
            .client
            .publish_one(
                "console.room",
                kind,
                json!({"n": n, "text": "<b>not html</b>"}),
            )
            .await
            .unwrap();
        expected.push((
            id,
            kind.unwrap_or("message"),
            json!({"n": n, "text": "<b>not html</b>"}),
        ));
        // Another channel: not shown.
        origin
            .client
            .publish_one("console.other", None, json!({"n": -n}))
            .await
            .unwrap();
    }
    wait_for(&mut browser, "the first three events", |e, _| e.len() >= 3).await;
    let shown = events(&mut browser).await;
    assert_eq!(shown.len(), 3, "{shown:?}");
    for ((id, channel, kind, data), (want_id, want_kind, want_data)) in shown.iter().zip(&expected)
    {
        assert_eq!(id, &want_id.to_string());
        assert_eq!(channel, "console.room");
        assert_eq!(kind, want_kind);
        assert_eq!(data, want_data);
    }
    // Event data is text, never markup.
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#events b').length")
            .await,
        json!(0)
    );

    // The origin goes away; the page notices and keeps trying.
    origin.stop().await;
    wait_for(&mut browser, "the page to see the disconnect", |_, s| {
        s != "open"
    })
    .await;

    // Events published while the browser is disconnected (straight into the shared log, since
    // no origin is running to take them).
    let log = ssepush_origin::stores::open(
        &settings.store,
        &ns,
        settings.retention().unwrap(),
        settings.datasets.limits(),
    )
    .await
    .unwrap()
    .log;
    for n in 4..=6 {
        let stored = log
            .append(vec![
                NewEvent::new("console.room", None, json!({"n": n})).unwrap(),
                NewEvent::new("console.other", None, json!({"n": -n})).unwrap(),
            ])
            .await
            .unwrap();
        expected.push((stored[0].id, "message", json!({"n": n})));
    }
    drop(log);
    assert_ne!(state(&mut browser).await, "open");

    // A new origin on the same address: the page reconnects with the last id it saw and gets
    // what it missed, then live events again.
    let origin = TestOrigin::start_on(addr, settings).await;
    wait_for(&mut browser, "the page to reconnect", |_, s| s == "open").await;
    for n in 7..=8 {
        let id = origin
            .client
            .publish_one("console.room", Some("alert"), json!({"n": n}))
            .await
            .unwrap();
        expected.push((id, "alert", json!({"n": n})));
    }
    wait_for(&mut browser, "all eight events", |e, _| {
        e.len() >= expected.len()
    })
    .await;
    // One more event closes the run: one stream delivers in order, so anything sent twice
    // would show before it. Once it shows, the page holds all it ever will of the rest.
    let last = origin
        .client
        .publish_one("console.room", None, json!({"n": "last"}))
        .await
        .unwrap();
    expected.push((last, "message", json!({"n": "last"})));
    let last_id = last.to_string();
    wait_for(&mut browser, "the closing event", |e, _| {
        e.iter().any(|(id, ..)| *id == last_id)
    })
    .await;
    let shown = events(&mut browser).await;
    let shown: Vec<(String, String, Value)> = shown
        .into_iter()
        .map(|(id, _, kind, data)| (id, kind, data))
        .collect();
    let want: Vec<(String, String, Value)> = expected
        .iter()
        .map(|(id, kind, data)| (id.to_string(), kind.to_string(), data.clone()))
        .collect();
    assert_eq!(shown, want, "every event exactly once, in order");
    origin.stop().await;
}

#[tokio::test]
async fn console_page_is_served_self_contained() {
    let origin = TestOrigin::start(crate::support::memory_settings()).await;
    let resp = crate::support::get(format!("{}/", origin.url))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/html"), "{ct}");
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let body = resp.text().await.unwrap();
    assert!(body.contains("EventSource"));
    origin.stop().await;
}
