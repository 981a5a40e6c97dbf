//! Webhooks end to end: a real origin delivers to a real HTTP receiver on a loopback port
//! (`crate::support::webhooks`, which verifies every request with the Standard Webhooks reference
//! crate). Delivery is at-least-once, so a retried id may repeat; the *deduplicated* sequence
//! must equal the published one exactly. The delivery counters are checked in the `metrics`
//! binary.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::webhooks::{Rx, api, fast, publish, register, status, wait_for_ids};
use crate::support::{TestOrigin, eventually, memory_settings, namespace, redis_settings};

#[tokio::test]
async fn every_event_arrives_signed_and_in_order_through_failures() {
    let origin = TestOrigin::start(fast(memory_settings())).await;
    let rx = Rx::start().await;
    // The first attempts fail: delivery must retry the same event, not skip ahead.
    rx.state.fail_next.store(5, Ordering::SeqCst);
    let id = register(
        &origin,
        &rx,
        json!({"url": rx.url, "channels": ["orders.>"]}),
    )
    .await;
    let mut want = Vec::new();
    for i in 0..30 {
        let channel = if i % 2 == 0 {
            "orders.eu"
        } else {
            "orders.us.west"
        };
        want.push(publish(&origin, channel, json!({"n": i})).await);
        publish(&origin, "chat.noise", json!({"n": i})).await;
    }
    wait_for_ids(&rx, &want, Duration::from_secs(20)).await;
    assert!(
        rx.refused() >= 5,
        "the receiver refused {} requests",
        rx.refused()
    );

    // The body is the documented envelope around the event.
    let first = &rx.bodies()[0];
    assert_eq!(first["type"], "message");
    assert_eq!(first["data"]["id"], want[0].as_str());
    assert_eq!(first["data"]["channel"], "orders.eu");
    assert_eq!(first["data"]["data"], json!({"n": 0}));
    assert!(
        first["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{first}"
    );

    let last = want.last().unwrap().clone();
    eventually(
        Duration::from_secs(5),
        "the cursor reaches the last event",
        || async { status(&origin, &id).await["cursor"] == last.as_str() },
    )
    .await;
    let s = status(&origin, &id).await;
    assert_eq!(s["state"], "active");
    assert_eq!(s["pending"], 0);
    assert_eq!(s["consecutiveFailures"], 0);
    assert!(
        s["lastError"].as_str().is_some_and(|e| e.contains("500")),
        "{s}"
    );
    assert!(s["lastSuccessAt"].is_string(), "{s}");
    assert!(
        s.get("secret").is_none(),
        "status must not show the secret: {s}"
    );
    origin.stop().await;
}

#[tokio::test]
async fn status_counts_pending_events_while_the_receiver_is_down() {
    let origin = TestOrigin::start(fast(memory_settings())).await;
    let rx = Rx::start().await;
    rx.state.failing.store(true, Ordering::SeqCst);
    let id = register(&origin, &rx, json!({"url": rx.url, "channels": ["jobs"]})).await;
    let mut want = Vec::new();
    for i in 0..4 {
        want.push(publish(&origin, "jobs", json!(i)).await);
    }
    eventually(Duration::from_secs(10), "failures recorded", || async {
        status(&origin, &id).await["consecutiveFailures"].as_u64() >= Some(2)
    })
    .await;
    let s = status(&origin, &id).await;
    assert_eq!(s["pending"], 4, "{s}");
    assert_eq!(s["pendingIsLowerBound"], false, "{s}");
    assert!(s["lastError"].as_str().unwrap().contains("500"), "{s}");
    assert!(s["lastAttemptAt"].is_string(), "{s}");
    assert!(s["failingSince"].is_string(), "{s}");
    rx.state.failing.store(false, Ordering::SeqCst);
    wait_for_ids(&rx, &want, Duration::from_secs(10)).await;
    origin.stop().await;
}

#[tokio::test]
async fn repeated_failures_disable_and_enabling_resumes_from_the_cursor() {
    let mut settings = fast(memory_settings());
    settings.webhooks.max_failures = 3;
    let origin = TestOrigin::start(settings).await;
    let rx = Rx::start().await;
    let id = register(
        &origin,
        &rx,
        json!({"url": rx.url, "channels": ["billing"]}),
    )
    .await;
    let first = publish(&origin, "billing", json!("a")).await;
    wait_for_ids(&rx, std::slice::from_ref(&first), Duration::from_secs(10)).await;

    rx.state.failing.store(true, Ordering::SeqCst);
    let mut want = vec![first.clone()];
    for i in 0..3 {
        want.push(publish(&origin, "billing", json!(i)).await);
    }
    eventually(
        Duration::from_secs(10),
        "the webhook is disabled",
        || async { status(&origin, &id).await["state"] == "disabled" },
    )
    .await;
    let s = status(&origin, &id).await;
    assert_eq!(s["consecutiveFailures"], 3, "{s}");
    assert_eq!(
        s["cursor"],
        first.as_str(),
        "the cursor stays at the last 2xx: {s}"
    );
    assert!(s["lastError"].as_str().unwrap().contains("500"), "{s}");
    assert!(s["disabledAt"].is_string(), "{s}");
    assert_eq!(s["pending"], 3, "{s}");

    // Disabled means no attempts, even once the receiver would accept them.
    rx.state.failing.store(false, Ordering::SeqCst);
    let refused = rx.refused();
    crate::support::nothing_happens_for(Duration::from_millis(500)).await;
    assert_eq!(rx.refused(), refused);
    assert_eq!(rx.unique_ids(), vec![first.clone()]);

    let (code, s) = api(
        reqwest::Method::PATCH,
        format!("{}/v1/webhooks/{id}", origin.url),
        Some(json!({"enabled": true})),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{s}");
    assert_eq!(s["state"], "active");
    assert_eq!(s["consecutiveFailures"], 0);
    wait_for_ids(&rx, &want, Duration::from_secs(10)).await;
    origin.stop().await;
}

#[tokio::test]
async fn filters_and_channel_patterns_select_the_events() {
    let origin = TestOrigin::start(fast(memory_settings())).await;
    let rx = Rx::start().await;
    let id = register(
        &origin,
        &rx,
        json!({"url": rx.url, "channels": ["sensors.*.temp"], "filter": "data.value > 10"}),
    )
    .await;
    let mut want = Vec::new();
    for (channel, value) in [
        ("sensors.eu.temp", 20),
        ("sensors.eu.temp", 5),
        ("sensors.us.temp", 11),
        ("sensors.eu.hum", 50),
        ("sensors.eu.x.temp", 50),
        ("sensors.us.temp", 10),
        ("sensors.eu.temp", 99),
    ] {
        let eid = publish(&origin, channel, json!({"value": value})).await;
        if value > 10
            && channel.starts_with("sensors.")
            && channel.ends_with(".temp")
            && channel.matches('.').count() == 2
        {
            want.push(eid);
        }
    }
    wait_for_ids(&rx, &want, Duration::from_secs(10)).await;

    // Dropping the filter applies to the events after the cursor.
    let (code, s) = api(
        reqwest::Method::PATCH,
        format!("{}/v1/webhooks/{id}", origin.url),
        Some(json!({"filter": null, "channels": ["sensors.>"]})),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{s}");
    assert_eq!(s["filter"], Value::Null);
    want.push(publish(&origin, "sensors.eu.hum", json!({"value": 1})).await);
    want.push(publish(&origin, "sensors.eu.temp", json!({"value": 2})).await);
    wait_for_ids(&rx, &want, Duration::from_secs(10)).await;

    // The list shows the webhook, never its secret; deleting it stops deliveries.
    let (code, list) = api(
        reqwest::Method::GET,
        format!("{}/v1/webhooks", origin.url),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(list["webhooks"][0]["id"], id.as_str());
    assert!(!list.to_string().contains("whsec_"), "{list}");
    let (code, _) = api(
        reqwest::Method::DELETE,
        format!("{}/v1/webhooks/{id}", origin.url),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::NO_CONTENT);
    let (code, _) = api(
        reqwest::Method::GET,
        format!("{}/v1/webhooks/{id}", origin.url),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    publish(&origin, "sensors.eu.temp", json!({"value": 3})).await;
    crate::support::nothing_happens_for(Duration::from_millis(500)).await;
    assert_eq!(rx.unique_ids(), want);
    origin.stop().await;
}

#[tokio::test]
async fn bad_registrations_are_clear_400s() {
    // Default settings: private targets are refused.
    let origin = TestOrigin::start(memory_settings()).await;
    let url = format!("{}/v1/webhooks", origin.url);
    let post = |body: Value| api(reqwest::Method::POST, url.clone(), Some(body));
    for target in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://[::1]:9/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "ftp://example.com/hook",
        "not a url",
    ] {
        let (code, e) = post(json!({"url": target, "channels": ["a"]})).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{target}: {e}");
        assert_eq!(e["error"]["code"], "invalid_url", "{target}: {e}");
    }
    let ok_url = "http://93.184.216.34/hook";
    let (code, e) = post(json!({"url": ok_url, "channels": ["a"], "filter": "data.x >"})).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["error"]["code"], "invalid_filter");
    assert!(e["error"]["column"].is_number(), "{e}");
    let (code, e) = post(json!({"url": ok_url, "channels": ["a.>.b"]})).await;
    assert_eq!(
        (code, e["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_channel")),
        "{e}"
    );
    let (code, e) = post(json!({"url": ok_url, "channels": []})).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{e}");
    let (code, e) = post(json!({"url": ok_url, "channels": ["a"], "from": "yesterday"})).await;
    assert_eq!(
        (code, e["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_event_id")),
        "{e}"
    );
    let (code, e) = post(json!({"url": ok_url, "channels": ["a"], "colour": "red"})).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{e}");
    let resp = crate::support::http()
        .post(&url)
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);

    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let (code, e) = api(method, format!("{url}/wh_nope"), None).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{e}");
        assert_eq!(e["error"]["code"], "webhook_not_found");
    }
    let (code, _) = api(
        reqwest::Method::PATCH,
        format!("{url}/wh_aaaaaaaaaaaaaaaaaaaaaaaaaa"),
        Some(json!({"enabled": true})),
    )
    .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    origin.stop().await;
}

#[tokio::test]
async fn on_redis_a_restarted_origin_resumes_from_the_cursor() {
    let ns = namespace("webhooks-restart");
    let origin = TestOrigin::start(fast(redis_settings(&ns))).await;
    let rx = Rx::start().await;
    // Acknowledge 10, then refuse: the origin is stopped with events still pending.
    rx.state.fail_after_acks.store(10, Ordering::SeqCst);
    let id = register(&origin, &rx, json!({"url": rx.url, "channels": ["ledger"]})).await;
    let mut want = Vec::new();
    for i in 0..20 {
        want.push(publish(&origin, "ledger", json!(i)).await);
    }
    eventually(
        Duration::from_secs(10),
        "ten acknowledged, then failures",
        || async { rx.acked() >= 10 && rx.refused() >= 1 },
    )
    .await;
    let cursor = status(&origin, &id).await["cursor"].clone();
    assert_eq!(cursor, want[9].as_str());
    origin.stop().await;

    // Published while no origin delivers: must arrive after the restart, too.
    rx.state.fail_after_acks.store(0, Ordering::SeqCst);
    let origin = TestOrigin::start(fast(redis_settings(&ns))).await;
    for i in 20..25 {
        want.push(publish(&origin, "ledger", json!(i)).await);
    }
    wait_for_ids(&rx, &want, Duration::from_secs(20)).await;
    let s = status(&origin, &id).await;
    assert_eq!(s["state"], "active");
    origin.stop().await;
}

#[tokio::test]
async fn on_redis_exactly_one_of_two_origins_delivers() {
    let ns = namespace("webhooks-two-nodes");
    let a = TestOrigin::start(fast(redis_settings(&ns))).await;
    let b = TestOrigin::start(fast(redis_settings(&ns))).await;
    let rx = Rx::start().await;
    register(&a, &rx, json!({"url": rx.url, "channels": ["shared"]})).await;
    let mut want = Vec::new();
    for i in 0..20 {
        let node = if i % 2 == 0 { &a } else { &b };
        want.push(publish(node, "shared", json!(i)).await);
    }
    wait_for_ids(&rx, &want, Duration::from_secs(20)).await;
    crate::support::nothing_happens_for(Duration::from_millis(500)).await;
    // No failures happened, so a second deliverer would show up as duplicates.
    assert_eq!(rx.acked(), want.len(), "every event delivered exactly once");

    // The holder leaves; the other node takes over from the stored cursor.
    a.stop().await;
    for i in 20..25 {
        want.push(publish(&b, "shared", json!(i)).await);
    }
    wait_for_ids(&rx, &want, Duration::from_secs(20)).await;
    b.stop().await;
}

#[tokio::test]
async fn a_cursor_behind_retention_records_the_gap_and_continues_with_the_oldest_retained() {
    let mut settings = fast(memory_settings());
    settings.retention.max_events = 3;
    let origin = TestOrigin::start(settings).await;
    let rx = Rx::start().await;
    rx.state.failing.store(true, Ordering::SeqCst);
    let id = register(
        &origin,
        &rx,
        json!({"url": rx.url, "channels": ["metrics"]}),
    )
    .await;
    let mut published = Vec::new();
    for i in 0..10 {
        published.push(publish(&origin, "metrics", json!(i)).await);
    }
    eventually(Duration::from_secs(10), "the gap is recorded", || async {
        // While publishing, an earlier gap (older `oldest`) may be seen first.
        status(&origin, &id).await["lastGap"]["oldest"] == published[7].as_str()
    })
    .await;
    let s = status(&origin, &id).await;
    let cursor: ssepush_origin::EventId = s["cursor"].as_str().unwrap().parse().unwrap();
    assert!(cursor.is_start(), "nothing was delivered yet: {s}");
    rx.state.failing.store(false, Ordering::SeqCst);
    // Only the retained events can be delivered; they arrive in order, nothing after them lost.
    wait_for_ids(&rx, &published[7..], Duration::from_secs(10)).await;
    origin.stop().await;
}

/// The store contract both backends keep: revision-guarded writes, lease-fenced worker writes,
/// exclusive and expiring leases.
async fn store_contract(store: &dyn ssepush_origin::webhooks::store::WebhookStore) {
    use ssepush_origin::EventId;
    use ssepush_origin::webhooks::store::{Insert, Put};
    use ssepush_origin::webhooks::{DeliveryState, Record, Secret, Webhook};

    let record = |id: String| Record {
        hook: Webhook {
            id,
            url: "http://127.0.0.1:1/".into(),
            channels: vec!["a".into()],
            filter: Some("type == 'x'".into()),
            secret: Secret::generate(),
            created_at: 1,
            version: 1,
        },
        state: DeliveryState::new(EventId::new(7, 1)),
    };
    let (id, other) = (Webhook::new_id(), Webhook::new_id());
    assert_eq!(
        store.insert(&record(id.clone()), 1).await.unwrap(),
        Insert::Done
    );
    assert_eq!(store.insert(&record(other), 1).await.unwrap(), Insert::Full);
    let v = store.get(&id).await.unwrap().expect("stored");
    assert_eq!(v.record.state.cursor, EventId::new(7, 1));
    assert_eq!(store.list().await.unwrap().len(), 1);

    let ttl = Duration::from_millis(300);
    assert_eq!(
        store.put(&v.record, v.rev, Some("n1")).await.unwrap(),
        Put::NotHolder
    );
    assert!(store.lease(&id, "n1", ttl).await.unwrap());
    assert!(
        !store.lease(&id, "n2", ttl).await.unwrap(),
        "leases are exclusive"
    );
    assert!(
        store.lease(&id, "n1", ttl).await.unwrap(),
        "the holder renews"
    );
    let mut next = v.record.clone();
    next.state.record_success(EventId::new(8, 0), 2);
    let Put::Done(rev) = store.put(&next, v.rev, Some("n1")).await.unwrap() else {
        panic!("the holder's write must land");
    };
    assert_eq!(store.put(&next, v.rev, None).await.unwrap(), Put::Conflict);
    assert_eq!(
        store.get(&id).await.unwrap().unwrap().record.state.cursor,
        EventId::new(8, 0)
    );

    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    assert!(
        store.lease(&id, "n2", ttl).await.unwrap(),
        "an expired lease is taken over"
    );
    assert_eq!(
        store.put(&next, rev, Some("n1")).await.unwrap(),
        Put::NotHolder
    );
    store.release(&id, "n1").await.unwrap();
    assert!(
        !store.lease(&id, "n1", ttl).await.unwrap(),
        "releasing another's lease does nothing"
    );
    store.release(&id, "n2").await.unwrap();
    assert!(
        store.lease(&id, "n1", ttl).await.unwrap(),
        "a released lease is free at once"
    );

    assert!(store.delete(&id).await.unwrap());
    assert!(!store.delete(&id).await.unwrap());
    assert!(store.get(&id).await.unwrap().is_none());
    assert_eq!(store.put(&next, rev, None).await.unwrap(), Put::Gone);
}

#[tokio::test]
async fn webhook_stores_keep_the_contract() {
    let open = |url: String, ns: String| async move {
        ssepush_origin::stores::open(&url, &ns, Default::default(), Default::default())
            .await
            .map(|stores| stores.webhooks)
    };
    let memory = open("memory".into(), "unused".into()).await.unwrap();
    store_contract(memory.as_ref()).await;
    let ns = namespace("webhook-store");
    let redis = open(crate::support::redis_url(), ns)
        .await
        .expect("Redis must be running for this test");
    store_contract(redis.as_ref()).await;
}

#[tokio::test]
async fn a_backlog_from_an_old_cursor_is_delivered_from_the_log_in_order() {
    let origin = TestOrigin::start(fast(memory_settings())).await;
    // Published before the webhook exists, so only the log can deliver them: more than one read
    // batch, most of it noise the channel pattern or the filter skips.
    let batch: Vec<Value> = (0..600)
        .map(|i| match i % 3 {
            0 => json!({"channel": "backlog", "data": {"keep": true, "n": i}}),
            1 => json!({"channel": "backlog", "data": {"keep": false, "n": i}}),
            _ => json!({"channel": "elsewhere", "data": {"keep": true, "n": i}}),
        })
        .collect();
    let ids = origin.client.publish(&Value::Array(batch)).await.unwrap();
    let want: Vec<String> = ids.iter().step_by(3).map(|id| id.to_string()).collect();
    assert_eq!(want.len(), 200);
    let rx = Rx::start().await;
    register(
        &origin,
        &rx,
        json!({"url": rx.url, "channels": ["backlog"], "filter": "data.keep", "from": "0-0"}),
    )
    .await;
    wait_for_ids(&rx, &want, Duration::from_secs(30)).await;
    origin.stop().await;
}
