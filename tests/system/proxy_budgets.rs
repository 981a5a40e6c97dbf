//! Budgets per device, not per handoff (issue 12 §4), against a real origin and the real proxy
//! server: 40 handoffs for one APNs token on one stream make one push, not 40 (a newer handoff
//! replaces the older ones of its push target, and takes over their hourly budget); 5,000
//! creations from one API key are limited (429 with `Retry-After`) while another key still
//! creates.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;

use crate::support::proxy::{Recorder, TestProxy, handoff_body, proxy_settings};
use crate::support::{TestOrigin, eventually, memory_settings, nothing_happens_for};

const WITHIN: Duration = Duration::from_secs(10);

#[tokio::test]
async fn forty_handoffs_for_one_apns_token_send_one_push() {
    let origin = TestOrigin::start(memory_settings()).await;
    let recorder = Recorder::new();
    let proxy = TestProxy::start(proxy_settings(&[&origin.url]), recorder.clone()).await;
    let cursor = origin
        .client
        .publish_one("dev.a", None, json!({"n": 0}))
        .await
        .unwrap()
        .to_string();
    let url = format!("{}/v1/sse?channel=dev.a", origin.url);
    let mut handoffs = Vec::new();
    for _ in 0..40 {
        // The same device (APNs token 0…07) each time.
        handoffs.push(proxy.create(&handoff_body(&url, Some(&cursor), 7)).await);
    }
    origin
        .client
        .publish_one("dev.a", None, json!({"n": 1}))
        .await
        .unwrap();
    eventually(WITHIN, "a wake", || async { !recorder.sent().is_empty() }).await;
    nothing_happens_for(Duration::from_millis(1500)).await;
    let sent = recorder.sent();
    assert_eq!(
        sent.len(),
        1,
        "{:?}",
        sent.iter().map(|s| &s.wake.handoff_id).collect::<Vec<_>>()
    );
    let newest = handoffs.last().unwrap();
    assert_eq!(sent[0].wake.handoff_id, newest.id);
    for h in &handoffs[..39] {
        let status = proxy.status(h).await;
        assert_eq!(status["state"], "closed", "{status}");
        assert_eq!(
            status["lastError"],
            "replaced by a newer handoff for the same push target"
        );
    }
    assert_eq!(proxy.status(newest).await["state"], "woken");
    proxy.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_creations_from_one_api_key_are_limited() {
    let origin = TestOrigin::start(memory_settings()).await;
    let mut settings = proxy_settings(&[&origin.url]);
    settings.auth.api_keys = vec!["key-a-0123456789".into(), "key-b-0123456789".into()];
    let (rate, burst) = (
        settings.auth.create_rate_per_sec,
        settings.auth.create_burst,
    );
    let proxy = TestProxy::start(settings, Recorder::new()).await;
    let url = format!("{}/v1/sse?channel=dev.b", origin.url);
    let started = Instant::now();
    let answers: Vec<(u16, Option<String>, serde_json::Value)> = futures::stream::iter(0..5000u32)
        .map(|i| {
            let (http, base, body) = (
                proxy.http.clone(),
                proxy.url.clone(),
                handoff_body(&url, None, 1000 + i),
            );
            async move {
                let r = http
                    .post(format!("{base}/v1/handoffs"))
                    .bearer_auth("key-a-0123456789")
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let retry = r
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_owned());
                (
                    r.status().as_u16(),
                    retry,
                    r.json().await.unwrap_or_default(),
                )
            }
        })
        .buffer_unordered(50)
        .collect()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let created = answers.iter().filter(|a| a.0 == 201).count();
    let limited: Vec<_> = answers.iter().filter(|a| a.0 == 429).collect();
    assert_eq!(created + limited.len(), 5000, "other answers");
    let allowed = burst as f64 + rate * elapsed + 1.0;
    assert!(
        created >= burst as usize && created as f64 <= allowed,
        "{created} created in {elapsed:.1} s (allowed {allowed:.0})"
    );
    for (_, retry, body) in &limited {
        assert_eq!(body["error"]["code"], "rate_limited", "{body}");
        let secs: u64 = retry.as_deref().expect("Retry-After").parse().unwrap();
        assert!(secs >= 1);
    }
    // Another key is not held back by the first one's limit.
    let r = proxy
        .http
        .post(format!("{}/v1/handoffs", proxy.url))
        .bearer_auth("key-b-0123456789")
        .json(&handoff_body(&url, None, 99))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    eprintln!(
        "{created} of 5000 created in {elapsed:.1} s; {} limited",
        limited.len()
    );
    proxy.stop().await;
    origin.stop().await;
}
