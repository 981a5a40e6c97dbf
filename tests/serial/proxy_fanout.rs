//! Shared upstream connections: 1,000 handoffs of one stream hold a few upstream connections
//! (read from the proxy's own `/metrics`, while no other server runs in this process), and every phone still gets exactly its own wakes and its own events — half of
//! them hand off with an older cursor and catch up before joining the shared connection.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::proxy::{Recorder, TestProxy, json_ids, proxy_settings};
use crate::support::{TestOrigin, eventually, exclusive, memory_settings, metric};
use serde_json::json;
use ssepush_proxy::push::PushTarget;

const PHONES: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_handoffs_share_one_upstream_and_each_gets_its_own() {
    let _only = exclusive().await;
    let origin = TestOrigin::start(memory_settings()).await;
    let recorder = Recorder::new();
    let mut settings = proxy_settings(&[&origin.url]);
    settings.wake.coalesce_ms = 100;
    let proxy = TestProxy::start(settings, recorder.clone()).await;
    let url = format!("{}/v1/sse?channel=fan.*", origin.url);

    let older = origin
        .client
        .publish_one("fan.x", None, json!({"to": -1}))
        .await
        .unwrap();
    let newer = origin
        .client
        .publish_one("fan.x", None, json!({"to": -1}))
        .await
        .unwrap();

    // Phone i wakes only for events addressed to it.
    let mut phones = Vec::with_capacity(PHONES);
    for i in 0..PHONES {
        let cursor = if i % 2 == 0 { newer } else { older };
        let body = json!({
            "stream": {"url": url, "lastEventId": cursor.to_string()},
            "push": {"platform": "apns", "token": format!("{i:064x}")},
            "wake": {"filter": format!("data.to == {i}"), "coalesceMs": 100},
        });
        phones.push(proxy.create(&body).await);
    }
    // Catch-ups end; one shared connection (allow a couple of stragglers at the moment).
    eventually(Duration::from_secs(20), "catch-ups done", || async {
        metric(&proxy.url, "ssepush_proxy_upstream_connections").await <= 1.0
    })
    .await;

    // The phones with the older cursor each read their gap privately before joining.
    let catch_ups = metric(&proxy.url, "ssepush_proxy_upstream_catch_ups_total").await;
    assert_eq!(catch_ups, (PHONES / 2) as f64);

    let targets: Vec<usize> = (0..PHONES).step_by(97).collect();
    let batch: Vec<_> = targets
        .iter()
        .map(|t| json!({"channel": "fan.x", "data": {"to": t}}))
        .collect();
    let ids = origin.client.publish(&json!(batch)).await.unwrap();

    eventually(
        Duration::from_secs(20),
        "every addressed phone woken",
        || async {
            targets
                .iter()
                .all(|t| !recorder.wakes_for(&phones[*t].id).is_empty())
        },
    )
    .await;
    crate::support::nothing_happens_for(Duration::from_millis(500)).await;
    let conns = metric(&proxy.url, "ssepush_proxy_upstream_connections").await;
    assert!(conns <= 2.0, "{conns} upstream connections for one stream");

    // Exactly one wake per addressed phone, to its own token; none for the others.
    let mut per_handoff: HashMap<String, usize> = HashMap::new();
    for s in recorder.sent() {
        *per_handoff.entry(s.wake.handoff_id.clone()).or_default() += 1;
    }
    for (i, phone) in phones.iter().enumerate() {
        let wakes = recorder.wakes_for(&phone.id);
        if targets.contains(&i) {
            assert_eq!(wakes.len(), 1, "phone {i}: {wakes:?}");
            match &wakes[0].target {
                PushTarget::Apns { token, .. } => assert_eq!(token, &format!("{i:064x}")),
                other => panic!("{other:?}"),
            }
        } else {
            assert!(wakes.is_empty(), "phone {i} woken for someone else's event");
        }
    }
    assert_eq!(per_handoff.len(), targets.len());

    // Events: each phone gets exactly what follows its own cursor.
    let all: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    for i in (0..PHONES).step_by(41) {
        let got = json_ids(&proxy.events(&phones[i], None).await);
        let mut want = Vec::new();
        if i % 2 == 1 {
            want.push(newer.to_string());
        }
        want.extend(all.iter().cloned());
        assert_eq!(got, want, "phone {i}");
    }
    proxy.stop().await;
    origin.stop().await;
}
