//! The handoff, end to end: a real origin, the real proxy server, real HTTP, and a push provider
//! that records wakes. A phone streams, hands off with its last id, sleeps; a burst wakes it
//! once; it catches up from the proxy (JSON and SSE) or the origin and gets the same events;
//! the handback returns its cursor. Also: wake filters, an origin restart while watching,
//! upstream 401, allowed origins and redirects, and that tokens never reach the logs.

use std::sync::Arc;
use std::time::Duration;

use crate::support::proxy::{
    Handoff, Recorder, TestProxy, fixed_server, handoff_body, json_ids, proxy_settings, sse_ids,
};
use crate::support::{TestOrigin, eventually, memory_settings, take_items};
use serde_json::{Value, json};
use ssepush::client::origin::{Item, Subscription};
use ssepush_origin::EventId;
use ssepush_proxy::push::PushError;

const WITHIN: Duration = Duration::from_secs(10);

fn stream_url(origin: &TestOrigin, channel: &str) -> String {
    format!("{}/v1/sse?channel={channel}", origin.url)
}

/// A phone that streamed `channel` and saw `n` events: returns their ids.
async fn phone_streamed(origin: &TestOrigin, channel: &str) -> EventId {
    let id = origin
        .client
        .publish_one(&channel.replace('*', "x"), None, json!({"n": 0}))
        .await
        .unwrap();
    let sub = Subscription {
        channels: vec![channel.into()],
        last_event_id: Some(EventId::ZERO),
        ..Default::default()
    };
    let _ = take_items(&origin.client, &sub, 1, WITHIN).await;
    id
}

async fn setup() -> (TestOrigin, TestProxy, Arc<Recorder>) {
    let origin = TestOrigin::start(memory_settings()).await;
    let recorder = Recorder::new();
    let proxy = TestProxy::start(proxy_settings(&[&origin.url]), recorder.clone()).await;
    (origin, proxy, recorder)
}

#[tokio::test]
async fn a_burst_wakes_once_and_the_phone_catches_up_exactly() {
    let (origin, proxy, recorder) = setup().await;
    let last = phone_streamed(&origin, "chat.*").await;
    let h = proxy
        .create(&handoff_body(
            &stream_url(&origin, "chat.*"),
            Some(&last.to_string()),
            1,
        ))
        .await;
    assert_eq!(proxy.status(&h).await["state"], "watching");

    // Three events in one burst, and one on a channel the stream does not carry.
    let ids = origin
        .client
        .publish(&json!([
            {"channel": "chat.a", "data": {"n": 1}},
            {"channel": "other.x", "data": {"n": 99}},
            {"channel": "chat.b", "data": {"n": 2}},
            {"channel": "chat.a", "data": {"n": 3}},
        ]))
        .await
        .unwrap();
    let expected: Vec<String> = [ids[0], ids[2], ids[3]]
        .iter()
        .map(|i| i.to_string())
        .collect();

    eventually(WITHIN, "a wake", || async {
        !recorder.wakes_for(&h.id).is_empty()
    })
    .await;
    // Well past the coalescing window: still exactly one wake.
    crate::support::nothing_happens_for(Duration::from_millis(800)).await;
    let wakes = recorder.wakes_for(&h.id);
    assert_eq!(wakes.len(), 1, "{wakes:?}");
    // Leading edge: the wake goes out at the burst's first event, so it counts what had
    // arrived by then (1 to 3) and names the newest of those; the phone catches up to all.
    assert!((1..=3).contains(&wakes[0].wake.pending), "{wakes:?}");
    let named = wakes[0].wake.latest_event_id.map(|id| id.to_string());
    assert_eq!(
        named,
        Some(expected[wakes[0].wake.pending as usize - 1].clone()),
        "{wakes:?}"
    );
    assert_eq!(wakes[0].wake.collapse_id, h.id);

    let status = proxy.status(&h).await;
    assert_eq!(status["state"], "woken", "{status}");
    assert_eq!(status["wakesSent"], 1);
    assert_eq!(status["pending"], 3);
    assert_eq!(status["newestId"], expected[2]);
    assert_eq!(status["cursor"], last.to_string());
    assert!(status["lastWake"]["at"].as_str().unwrap().ends_with('Z'));
    assert!(status["expiresAt"].as_str().unwrap().starts_with("20"));

    // The woken phone catches up from the proxy: exactly those three, as JSON and as SSE.
    let got = proxy.events(&h, Some(&last.to_string())).await;
    assert_eq!(json_ids(&got), expected, "{got}");
    assert!(got["gap"].is_null());
    assert_eq!(got["events"][0]["channel"], "chat.a");
    assert_eq!(got["events"][0]["data"]["n"], 1);
    let sse = proxy.events_sse(&h, Some(&last.to_string())).await;
    assert_eq!(sse_ids(&sse), expected, "{sse}");
    assert!(
        sse.contains("event: message\ndata: {\"channel\":\"chat.b\""),
        "{sse}"
    );
    // Checking in re-arms the wake.
    assert_eq!(proxy.status(&h).await["state"], "watching");

    // Handback: the final cursor is the newest event the phone was given.
    let back = proxy.handback(&h).await;
    assert_eq!(back["cursor"], expected[2]);
    assert_eq!(proxy.status(&h).await["state"], "closed");

    // A phone resuming at the origin with its handoff cursor gets the very same three.
    let sub = Subscription {
        channels: vec!["chat.*".into()],
        last_event_id: Some(last),
        ..Default::default()
    };
    let items = take_items(&origin.client, &sub, 3, WITHIN).await;
    let from_origin: Vec<String> = items
        .iter()
        .map(|i| match i {
            Item::Event(e) => e.id.to_string(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(from_origin, expected);

    // After the handback, nothing wakes the phone any more.
    origin
        .client
        .publish_one("chat.a", None, json!(4))
        .await
        .unwrap();
    crate::support::nothing_happens_for(Duration::from_millis(600)).await;
    assert_eq!(recorder.wakes_for(&h.id).len(), 1);
    proxy.stop().await;
    origin.stop().await;
}

#[tokio::test]
async fn events_failing_the_wake_filter_are_buffered_but_do_not_wake() {
    let (origin, proxy, recorder) = setup().await;
    let last = phone_streamed(&origin, "news.*").await;
    let mut body = handoff_body(&stream_url(&origin, "news.*"), Some(&last.to_string()), 2);
    body["wake"] = json!({"filter": "data.urgent == true", "coalesceMs": 50});
    let h = proxy.create(&body).await;
    let quiet = origin
        .client
        .publish(&json!([{"channel": "news.a", "data": {"urgent": false}}, {"channel": "news.b", "data": {}}]))
        .await
        .unwrap();
    eventually(WITHIN, "both buffered", || async {
        proxy.status(&h).await["pending"] == 2
    })
    .await;
    let loud = origin
        .client
        .publish_one("news.a", None, json!({"urgent": true}))
        .await
        .unwrap();
    eventually(WITHIN, "a wake", || async {
        !recorder.wakes_for(&h.id).is_empty()
    })
    .await;
    // The quiet events woke nothing: had they, that wake (pending 1 or 2) would have come
    // first and, outstanding, held back the loud event's. The one wake is the loud event's.
    let wakes = recorder.wakes_for(&h.id);
    assert_eq!(wakes.len(), 1, "{wakes:?}");
    assert_eq!(wakes[0].wake.pending, 3, "{wakes:?}");
    let got = proxy.events(&h, None).await;
    let want: Vec<String> = [quiet[0], quiet[1], loud]
        .iter()
        .map(|i| i.to_string())
        .collect();
    assert_eq!(json_ids(&got), want);
    proxy.stop().await;
    origin.stop().await;
}

/// Issue 12 §2: a 7-level wake filter delayed another handoff on the same stream by 7.7 s. Its
/// cost is now refused at creation, with the position of the first macro past the limit.
#[tokio::test]
async fn the_issue_s_costly_wake_filter_is_a_400_with_its_position() {
    let (origin, proxy, _recorder) = setup().await;
    let list = "[0,1,2,3,4,5,6,7,8,9]";
    let mut filter = "true".to_owned();
    for v in 0..7 {
        filter = format!("{list}.all(v{v}, {filter})");
    }
    let mut body = handoff_body(&stream_url(&origin, "a"), None, 3);
    body["wake"] = json!({ "filter": filter });
    let (status, err) = proxy.create_raw(&body).await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["code"], "invalid_filter");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nests macros"),
        "{err}"
    );
    assert_eq!(err["error"]["line"], 1, "{err}");
    assert!(err["error"]["column"].as_u64().unwrap() > 1, "{err}");
    proxy.stop().await;
    origin.stop().await;
}

#[tokio::test]
async fn a_bad_wake_filter_is_a_400_with_its_position() {
    let (origin, proxy, _recorder) = setup().await;
    let mut body = handoff_body(&stream_url(&origin, "a"), None, 3);
    body["wake"] = json!({"filter": "data.x >"});
    let (status, err) = proxy.create_raw(&body).await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["code"], "invalid_filter");
    assert!(err["error"]["column"].as_u64().unwrap() >= 8, "{err}");
    // And a few more bad inputs: each a JSON 4xx.
    for (patch, code) in [
        (
            json!({"push": {"platform": "apns", "token": "xyz"}}),
            "invalid_push_target",
        ),
        (
            json!({"stream": {"url": stream_url(&origin, "a"), "lastEventId": "nope"}}),
            "invalid_event_id",
        ),
        (json!({"ttlSec": 0}), "invalid_ttl"),
        (
            json!({"stream": {"url": stream_url(&origin, "a"), "headers": {"Transfer-Encoding": "x"}}}),
            "invalid_headers",
        ),
    ] {
        let mut body = handoff_body(&stream_url(&origin, "a"), None, 3);
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, err) = proxy.create_raw(&body).await;
        assert_eq!(status, 400, "{err}");
        assert_eq!(err["error"]["code"], code, "{err}");
    }
    let resp = proxy
        .http
        .post(format!("{}/v1/handoffs", proxy.url))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // Reading a handoff needs its token.
    let h = proxy
        .create(&handoff_body(&stream_url(&origin, "a"), None, 3))
        .await;
    let wrong = Handoff {
        id: h.id.clone(),
        token: "0".repeat(64),
    };
    let resp = proxy
        .http
        .get(format!("{}/v1/handoffs/{}", proxy.url, wrong.id))
        .bearer_auth(&wrong.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = proxy
        .http
        .get(format!("{}/v1/handoffs/{}/events", proxy.url, h.id))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = proxy
        .http
        .get(format!("{}/v1/handoffs/h_nope", proxy.url))
        .bearer_auth(&h.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    proxy.stop().await;
    origin.stop().await;
}

#[tokio::test]
async fn an_origin_restart_while_watching_loses_nothing() {
    let (origin, proxy, recorder) = setup().await;
    let addr = origin.addr;
    let last = phone_streamed(&origin, "live.*").await;
    let mut body = handoff_body(&stream_url(&origin, "live.*"), Some(&last.to_string()), 4);
    body["wake"] = json!({"coalesceMs": 0});
    let h = proxy.create(&body).await;
    let before = origin
        .client
        .publish_one("live.a", None, json!(1))
        .await
        .unwrap();
    eventually(WITHIN, "first event seen", || async {
        proxy.status(&h).await["newestId"] == before.to_string()
    })
    .await;
    origin.stop().await;
    let origin = TestOrigin::start_on(addr, memory_settings()).await;
    let after = origin
        .client
        .publish(&json!([{"channel": "live.a", "data": 2}, {"channel": "live.b", "data": 3}]))
        .await
        .unwrap();
    eventually(WITHIN, "events after the restart", || async {
        proxy.status(&h).await["newestId"] == after[1].to_string()
    })
    .await;
    let got = proxy.events(&h, Some(&last.to_string())).await;
    let want: Vec<String> = [before, after[0], after[1]]
        .iter()
        .map(|i| i.to_string())
        .collect();
    assert_eq!(json_ids(&got), want);
    assert!(!recorder.wakes_for(&h.id).is_empty());
    proxy.stop().await;
    origin.stop().await;
}

#[tokio::test]
async fn an_upstream_401_fails_the_handoff_with_the_reason() {
    let upstream = fixed_server(401, None).await;
    let recorder = Recorder::new();
    let proxy = TestProxy::start(proxy_settings(&[&upstream.url]), recorder.clone()).await;
    let h = proxy
        .create(&handoff_body(
            &format!("{}/v1/sse?channel=a", upstream.url),
            None,
            5,
        ))
        .await;
    eventually(WITHIN, "failed", || async {
        proxy.status(&h).await["state"] == "failed"
    })
    .await;
    let status = proxy.status(&h).await;
    assert_eq!(status["lastError"], "upstream answered 401", "{status}");
    // It stopped: no retry storm against the origin that said no.
    let hits = upstream.hits.load(std::sync::atomic::Ordering::SeqCst);
    crate::support::nothing_happens_for(Duration::from_millis(500)).await;
    assert_eq!(
        upstream.hits.load(std::sync::atomic::Ordering::SeqCst),
        hits
    );
    assert!(recorder.sent().is_empty());
    proxy.stop().await;
}

#[tokio::test]
async fn streams_outside_allowed_origins_are_refused_before_any_connection() {
    let elsewhere = fixed_server(200, None).await;
    let (origin, proxy, _recorder) = setup().await;
    // Directly: a 403, and the other host never sees a request.
    let (status, err) = proxy
        .create_raw(&handoff_body(
            &format!("{}/v1/sse?channel=a", elsewhere.url),
            None,
            6,
        ))
        .await;
    assert_eq!(status, 403, "{err}");
    assert_eq!(err["error"]["code"], "origin_not_allowed");
    // Through a redirect from an allowed origin: the handoff fails, still no request there.
    let redirector = fixed_server(302, Some(format!("{}/v1/sse?channel=a", elsewhere.url))).await;
    let recorder = Recorder::new();
    let proxy2 = TestProxy::start(proxy_settings(&[&redirector.url]), recorder).await;
    let h = proxy2
        .create(&handoff_body(
            &format!("{}/v1/sse?channel=a", redirector.url),
            None,
            7,
        ))
        .await;
    eventually(WITHIN, "failed", || async {
        proxy2.status(&h).await["state"] == "failed"
    })
    .await;
    let status = proxy2.status(&h).await;
    let reason = status["lastError"].as_str().unwrap();
    assert!(reason.contains("outside allowed_origins"), "{status}");
    assert!(reason.contains(&elsewhere.url), "{status}");
    assert!(redirector.hits.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    assert_eq!(elsewhere.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    proxy2.stop().await;
    proxy.stop().await;
    origin.stop().await;
}

#[tokio::test]
async fn a_dead_push_token_fails_the_handoff_and_retry_after_is_honoured() {
    let (origin, proxy, recorder) = setup().await;
    let last = phone_streamed(&origin, "r.*").await;
    let mut body = handoff_body(&stream_url(&origin, "r.*"), Some(&last.to_string()), 8);
    body["wake"] = json!({"coalesceMs": 0});
    recorder.script(vec![Err(PushError::RetryAfter(Duration::from_secs(1)))]);
    let h = proxy.create(&body).await;
    origin
        .client
        .publish_one("r.a", None, json!(1))
        .await
        .unwrap();
    eventually(WITHIN, "a wake accepted after the 429", || async {
        recorder.wakes_for(&h.id).len() == 1
    })
    .await;
    let sent = recorder.sent();
    let mine: Vec<_> = sent.iter().filter(|s| s.wake.handoff_id == h.id).collect();
    assert_eq!(mine.len(), 2);
    let gap = mine[1].at - mine[0].at;
    assert!(gap >= Duration::from_secs(1), "retried after {gap:?}");

    // A dead token: the next wake is refused permanently and the handoff fails.
    proxy.events(&h, None).await;
    recorder.script(vec![Err(PushError::Permanent("410 Unregistered".into()))]);
    origin
        .client
        .publish_one("r.a", None, json!(2))
        .await
        .unwrap();
    eventually(WITHIN, "failed", || async {
        proxy.status(&h).await["state"] == "failed"
    })
    .await;
    let status = proxy.status(&h).await;
    assert!(
        status["lastError"]
            .as_str()
            .unwrap()
            .contains("410 Unregistered"),
        "{status}"
    );
    let n = recorder.sent().len();
    origin
        .client
        .publish_one("r.a", None, json!(3))
        .await
        .unwrap();
    crate::support::nothing_happens_for(Duration::from_millis(500)).await;
    assert_eq!(recorder.sent().len(), n, "pushed to a dead token");
    proxy.stop().await;
    origin.stop().await;
}

#[tokio::test]
async fn tokens_and_credentials_never_reach_the_logs() {
    let logs = crate::support::logs::capture("ssepush_proxy=trace,ssepush_origin=debug,info");
    let (origin, proxy, recorder) = setup().await;
    let last = phone_streamed(&origin, "s.*").await;
    let push_token = "5ec7e7".repeat(10) + "abcd";
    let body = json!({
        "stream": {
            "url": stream_url(&origin, "s.*"),
            "headers": {"Authorization": "Bearer upstream-credential-1234"},
            "lastEventId": last.to_string(),
        },
        "push": {"platform": "apns", "token": push_token},
        "wake": {"coalesceMs": 0},
    });
    let h = proxy.create(&body).await;
    origin
        .client
        .publish_one("s.a", None, json!(1))
        .await
        .unwrap();
    eventually(WITHIN, "a wake", || async {
        recorder.wakes_for(&h.id).len() == 1
    })
    .await;
    proxy.status(&h).await;
    proxy.events(&h, None).await;
    proxy.handback(&h).await;
    // Stopped, the servers have logged everything they will.
    proxy.stop().await;
    origin.stop().await;
    let text = logs.text();
    // The capture works: the handoff's id is in its span on every line.
    assert!(text.contains(&h.id), "no log line names the handoff");
    for secret in [
        h.token.as_str(),
        "upstream-credential-1234",
        push_token.as_str(),
    ] {
        assert!(!text.contains(secret), "a secret reached the logs");
    }
}

#[tokio::test]
async fn a_handoff_without_a_provider_for_its_platform_is_refused() {
    let origin = TestOrigin::start(memory_settings()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let s = proxy_settings(&[&origin.url]);
    let task = tokio::spawn({
        let stop = stop.clone();
        async move {
            ssepush_proxy::server::run(listener, s, Default::default(), stop.cancelled_owned())
                .await
                .unwrap()
        }
    });
    let resp = crate::support::http()
        .post(format!("{url}/v1/handoffs"))
        .json(&handoff_body(&stream_url(&origin, "a"), None, 9))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "no_provider");
    assert!(err["error"]["message"].as_str().unwrap().contains("apns"));
    stop.cancel();
    task.await.unwrap();
    origin.stop().await;
}

#[tokio::test]
async fn a_handoff_past_its_ttl_expires_and_stops_watching() {
    let origin = TestOrigin::start(memory_settings()).await;
    let recorder = Recorder::new();
    let mut settings = proxy_settings(&[&origin.url]);
    // Its watcher closes with it (by default it would linger, see `proxy_watchers`).
    settings.upstream.idle_linger_secs = 0;
    let proxy = TestProxy::start(settings, recorder.clone()).await;
    let mut body = handoff_body(&stream_url(&origin, "ttl.*"), None, 10);
    body["ttlSec"] = json!(1);
    let h = proxy.create(&body).await;
    let ready = |url: String| async move {
        crate::support::get(format!("{url}/readyz"))
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    eventually(WITHIN, "watching", || async {
        ready(proxy.url.clone()).await["watchers"] == 1
    })
    .await;
    eventually(WITHIN, "expired", || async {
        proxy.status(&h).await["state"] == "expired"
    })
    .await;
    eventually(WITHIN, "watcher closed", || async {
        ready(proxy.url.clone()).await["watchers"] == 0
    })
    .await;
    origin
        .client
        .publish_one("ttl.a", None, json!(1))
        .await
        .unwrap();
    crate::support::nothing_happens_for(Duration::from_millis(400)).await;
    assert!(recorder.wakes_for(&h.id).is_empty());
    proxy.stop().await;
    origin.stop().await;
}

#[tokio::test]
async fn creating_a_handoff_takes_the_apps_api_key() {
    let (origin, spare_proxy, _r) = setup().await;
    let mut settings = proxy_settings(&[&origin.url]);
    settings.auth.api_keys = vec!["app-backend-key".into()];
    let proxy = TestProxy::start(settings, Recorder::new()).await;
    let body = handoff_body(&stream_url(&origin, "k"), None, 11);
    let post = |key: Option<&'static str>| {
        let mut req = proxy
            .http
            .post(format!("{}/v1/handoffs", proxy.url))
            .json(&body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(post(None).await, 401);
    assert_eq!(post(Some("wrong")).await, 401);
    assert_eq!(post(Some("app-backend-key")).await, 201);
    proxy.stop().await;

    // Reachable from a network with no auth configured: creation is refused outright.
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = tokio_util::sync::CancellationToken::new();
    let s = proxy_settings(&[&origin.url]);
    let task = tokio::spawn({
        let stop = stop.clone();
        let providers = ssepush_proxy::server::providers_all(Recorder::new());
        async move {
            ssepush_proxy::server::run(listener, s, providers, stop.cancelled_owned())
                .await
                .unwrap()
        }
    });
    let resp = crate::support::http()
        .post(format!("http://127.0.0.1:{port}/v1/handoffs"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "handoffs_disabled");
    stop.cancel();
    task.await.unwrap();
    spare_proxy.stop().await;
    origin.stop().await;
}

/// Issue 12 §1 through the proxy: the phone's reader credential (a header of `stream.headers`,
/// or the stream URL's `access_token`) goes upstream unchanged; an origin's 401 or 403 fails
/// the handoff with the reason; the token in a URL never reaches the logs.
#[tokio::test]
async fn the_phones_reader_credential_goes_upstream_and_a_refusal_fails_the_handoff() {
    let logs = crate::support::logs::capture("ssepush_proxy=trace,ssepush_origin=trace,info");
    const SECRET: &str = "a-reader-secret-of-at-least-32-bytes!!";
    let jwt = |grants: Value| {
        let claims = json!({"exp": 4_000_000_000u64, "ssepush": grants});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let mut settings = memory_settings();
    settings.auth.subscribe = ssepush_origin::settings::ReadAccess::Required;
    settings.auth.jwt_hs256_secret = Some(SECRET.into());
    let origin = TestOrigin::start(settings).await;
    let recorder = Recorder::new();
    let proxy = TestProxy::start(proxy_settings(&[&origin.url]), recorder.clone()).await;
    let reader = jwt(json!({"subscribe": ["s.*"]}));
    let elsewhere = jwt(json!({"subscribe": ["other.*"]}));
    let publisher = jwt(json!({"publish": [">"]}));

    let hand_off = |url: String, auth: Option<&str>, device: u32| {
        let mut body = handoff_body(&url, None, device);
        body["wake"] = json!({"coalesceMs": 0});
        if let Some(a) = auth {
            body["stream"]["headers"] = json!({"Authorization": format!("Bearer {a}")});
        }
        let proxy = &proxy;
        async move { proxy.create(&body).await }
    };
    let in_header = hand_off(stream_url(&origin, "s.*"), Some(&reader), 1).await;
    let in_query = hand_off(
        format!("{}&access_token={reader}", stream_url(&origin, "s.*")),
        None,
        2,
    )
    .await;
    let forbidden = hand_off(stream_url(&origin, "s.*"), Some(&elsewhere), 3).await;
    let missing = hand_off(stream_url(&origin, "s.*"), None, 4).await;

    for (h, status) in [(&forbidden, "403"), (&missing, "401")] {
        eventually(WITHIN, "the refused handoff failed", || async {
            proxy.status(h).await["state"] == "failed"
        })
        .await;
        let s = proxy.status(h).await;
        let error = s["lastError"].as_str().unwrap_or_default().to_owned();
        assert!(error.contains(status), "lastError names the {status}: {s}");
    }
    // Both watchers with a good credential are live: an event wakes both phones.
    eventually(WITHIN, "both watchers connected", || async {
        proxy.status(&in_header).await["state"] == "watching"
            && proxy.status(&in_query).await["state"] == "watching"
    })
    .await;
    let resp = crate::support::http()
        .post(format!("{}/v1/events", origin.url))
        .bearer_auth(&publisher)
        .json(&json!({"channel": "s.a", "data": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    eventually(WITHIN, "a wake for each good handoff", || async {
        recorder.wakes_for(&in_header.id).len() == 1 && recorder.wakes_for(&in_query.id).len() == 1
    })
    .await;
    proxy.stop().await;
    origin.stop().await;
    let text = logs.text();
    // The capture works (the servers' own lines are in it), so the check below is not vacuous.
    assert!(
        text.contains(&in_query.id) || text.contains("listening"),
        "the capture works"
    );
    assert!(!text.contains(&reader), "a reader token reached the logs");
}

/// Handed-back handoffs do not count towards `max_handoffs` (a node under churn filled with
/// ended handoffs for `keep_finished_secs` and answered `503 node_full`), and the status and a
/// repeated hand-back of the last `max_handoffs` of them still answer from their final records.
#[tokio::test]
async fn churn_past_max_handoffs_never_fills_the_node() {
    let origin = TestOrigin::start(memory_settings()).await;
    let mut settings = proxy_settings(&[&origin.url]);
    settings.max_handoffs = 3;
    let proxy = TestProxy::start(settings, Recorder::new()).await;
    let cursor = origin
        .client
        .publish_one("churn.a", None, json!({"n": 0}))
        .await
        .unwrap()
        .to_string();
    let url = format!("{}/v1/sse?channel=churn.a", origin.url);
    let mut ended = Vec::new();
    for device in 0..12 {
        let h = proxy
            .create(&handoff_body(&url, Some(&cursor), 500 + device))
            .await;
        let back = proxy.handback(&h).await;
        assert_eq!(back["state"], "closed", "{back}");
        assert_eq!(back["cursor"], cursor.as_str(), "{back}");
        ended.push(h);
    }
    // Three live ones still fit beside the twelve ended.
    let mut live = Vec::new();
    for device in 600..603 {
        live.push(
            proxy
                .create(&handoff_body(&url, Some(&cursor), device))
                .await,
        );
    }
    let (status, body) = proxy
        .create_raw(&handoff_body(&url, Some(&cursor), 700))
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "node_full", "{body}");
    // The newest ended ones answer from their final records: status, and a hand-back again;
    // beyond `max_handoffs` of them, the ones ended longest ago were forgotten first.
    for h in &ended[9..] {
        let status = proxy.status(h).await;
        assert_eq!(status["state"], "closed", "{status}");
    }
    let forgotten = proxy.status(&ended[0]).await;
    assert_eq!(forgotten["error"]["code"], "not_found", "{forgotten}");
    let again = proxy.handback(&ended[11]).await;
    assert_eq!(again["state"], "closed", "{again}");
    assert_eq!(again["cursor"], cursor.as_str(), "{again}");
    for h in &live {
        assert_eq!(proxy.status(h).await["state"], "watching");
    }
    proxy.stop().await;
    origin.stop().await;
}

/// Expired handoffs stay readable (status, `/events`) until forgotten, but no longer hold a
/// place of `max_handoffs`: with short ttls a node filled with expired handoffs and answered
/// `503 node_full` for `keep_finished_secs` (found by a tester from outside).
#[tokio::test]
async fn expired_handoffs_free_their_place_and_stay_readable() {
    let origin = TestOrigin::start(memory_settings()).await;
    let mut settings = proxy_settings(&[&origin.url]);
    settings.max_handoffs = 2;
    let proxy = TestProxy::start(settings, Recorder::new()).await;
    let url = format!("{}/v1/sse?channel=ttl.a", origin.url);
    let mut expiring = Vec::new();
    for device in 800..802 {
        let mut body = handoff_body(&url, None, device);
        body["ttlSec"] = json!(1);
        expiring.push(proxy.create(&body).await);
    }
    let (status, body) = proxy.create_raw(&handoff_body(&url, None, 810)).await;
    assert_eq!(status, 503, "{body}");
    for h in &expiring {
        eventually(WITHIN, "expired", || async {
            proxy.status(h).await["state"] == "expired"
        })
        .await;
    }
    // The sweeper's next pass counts them as ended: creation goes through again.
    eventually(WITHIN, "a place freed by the expired handoffs", || async {
        proxy.create_raw(&handoff_body(&url, None, 811)).await.0 == 201
    })
    .await;
    // The sweeper counts once a second: it may have counted one of the two when 811 came.
    eventually(WITHIN, "a second place", || async {
        proxy.create_raw(&handoff_body(&url, None, 812)).await.0 == 201
    })
    .await;
    // Two live, unended handoffs: the node is full again.
    let (status, body) = proxy.create_raw(&handoff_body(&url, None, 813)).await;
    assert_eq!(status, 503, "{body}");
    // The expired ones still answer, from the node.
    let events = proxy.events(&expiring[0], None).await;
    assert!(events["events"].as_array().is_some(), "{events}");
    assert_eq!(proxy.status(&expiring[1]).await["state"], "expired");
    proxy.stop().await;
    origin.stop().await;
}
