//! The whole wake path with nothing faked: a real origin, the real proxy with its real APNs and
//! FCM providers built from settings (`[apns]`, `[fcm]`), and the simulated gateway checking
//! provider tokens and OAuth bearer tokens. A burst wakes each phone once with the documented
//! headers and `ssepush` payload; a 410 from APNs ends the handoff as failed.

use std::time::Duration;

use crate::support::proxy::{TestProxy, json_ids, proxy_settings};
use crate::support::{TestOrigin, eventually, memory_settings};
use serde_json::{Value, json};
use ssepush::client::webpush::UserAgentKeys;
use ssepush::gateway::PushQuery;
use ssepush::gateway::{FaultSpec, Provider};
use ssepush_proxy::settings::{ApnsSettings, FcmSettings};

const WITHIN: Duration = Duration::from_secs(15);

/// The simulated gateway, from the shared harness.
type Gateway = crate::support::TestGateway;

async fn start_gateway() -> Gateway {
    Gateway::start().await
}

/// The proxy's `[apns]` and `[fcm]` sections, from the files the gateway wrote (as
/// `ssepush proxy --gateway-credentials` reads them).
fn provider_settings(gw: &Gateway) -> (ApnsSettings, FcmSettings) {
    let (apns, fcm, _) = ssepush::device::stack::provider_settings(&gw.dir).unwrap();
    (apns, fcm)
}

#[tokio::test]
async fn real_providers_wake_phones_through_the_gateway() {
    let gw = start_gateway().await;
    let origin = TestOrigin::start(memory_settings()).await;
    let mut settings = proxy_settings(&[&origin.url]);
    gw.configure_proxy(&mut settings).unwrap();
    let providers = ssepush_proxy::server::providers_from_settings(&settings).unwrap();
    let vapid = providers.vapid_public_key.clone().expect("a VAPID key");
    let proxy = TestProxy::start_with(settings, providers).await;

    let last = origin
        .client
        .publish_one("gw.a", None, json!(0))
        .await
        .unwrap();
    let url = format!("{}/v1/sse?channel=gw.*", origin.url);
    let ios_token = gw.client.register_device(Provider::Apns).await.unwrap();
    let android_token = gw.client.register_device(Provider::Fcm).await.unwrap();
    let dead_token = gw.client.register_device(Provider::Apns).await.unwrap();
    // A browser subscribes with the proxy's VAPID key, and makes its own keys.
    let sub = gw.client.subscribe_webpush(Some(&vapid)).await.unwrap();
    let keys = UserAgentKeys::generate();
    let browser = proxy
        .create(&json!({
            "stream": {"url": url, "lastEventId": last.to_string()},
            "push": {"platform": "webpush", "subscription": {
                "endpoint": sub.endpoint, "expirationTime": null,
                "keys": {"p256dh": keys.p256dh, "auth": keys.auth}}},
        }))
        .await;
    let ios = proxy
        .create(&json!({
            "stream": {"url": url, "lastEventId": last.to_string()},
            "push": {"platform": "apns", "token": ios_token},
        }))
        .await;
    let android = proxy
        .create(&json!({
            "stream": {"url": url, "lastEventId": last.to_string()},
            "push": {"platform": "fcm", "token": android_token},
        }))
        .await;
    gw.client
        .set_fault(&FaultSpec {
            token: Some(dead_token.clone()),
            status: Some(410),
            reason: Some("Unregistered".into()),
            ..FaultSpec::default()
        })
        .await
        .unwrap();
    let dead = proxy
        .create(&json!({
            "stream": {"url": url, "lastEventId": last.to_string()},
            "push": {"platform": "apns", "token": dead_token},
        }))
        .await;

    let ids = origin
        .client
        .publish(&json!([
            {"channel": "gw.a", "data": 1},
            {"channel": "gw.b", "data": 2},
            {"channel": "gw.a", "data": 3},
        ]))
        .await
        .unwrap();
    let pushes_for = |token: String| {
        let client = gw.client.clone();
        async move {
            client
                .pushes(&PushQuery {
                    token: Some(token),
                    ..PushQuery::default()
                })
                .await
                .unwrap()
        }
    };
    eventually(WITHIN, "both phones woken", || async {
        !pushes_for(ios_token.clone()).await.is_empty()
            && !pushes_for(android_token.clone()).await.is_empty()
            && !pushes_for(sub.id.clone()).await.is_empty()
    })
    .await;
    crate::support::nothing_happens_for(Duration::from_millis(800)).await;

    let apns_pushes = pushes_for(ios_token.clone()).await;
    assert_eq!(apns_pushes.len(), 1, "{apns_pushes:?}");
    let p = &apns_pushes[0];
    assert_eq!(p.status, 200, "{p:?}");
    assert_eq!(
        p.headers.get("apns-push-type").map(String::as_str),
        Some("background")
    );
    assert_eq!(
        p.headers.get("apns-priority").map(String::as_str),
        Some("5")
    );
    assert!(p.headers.contains_key("apns-topic"), "{p:?}");
    let body: Value = serde_json::from_str(&p.body).unwrap();
    assert_eq!(body["aps"]["content-available"], 1);
    assert_eq!(body["ssepush"]["handoff"], ios.id);
    // Leading edge: sent at the burst's first event, the wake counts what had arrived by then.
    let pending = body["ssepush"]["pending"].as_u64().unwrap();
    assert!((1..=3).contains(&pending), "{body}");
    assert_eq!(
        body["ssepush"]["latestEventId"],
        ids[pending as usize - 1].to_string()
    );

    let fcm_pushes = pushes_for(android_token.clone()).await;
    assert_eq!(fcm_pushes.len(), 1, "{fcm_pushes:?}");
    assert_eq!(fcm_pushes[0].status, 200, "{:?}", fcm_pushes[0]);
    assert!(
        fcm_pushes[0].body.contains(&android.id),
        "{:?}",
        fcm_pushes[0]
    );

    // The browser decrypts its wake (RFC 8291) and finds the same `ssepush` object.
    let wp = pushes_for(sub.id.clone()).await;
    assert_eq!(wp.len(), 1, "{wp:?}");
    assert!((200..300).contains(&wp[0].status), "{:?}", wp[0]);
    let cipher = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        wp[0].body.trim_end_matches('='),
    )
    .unwrap();
    let plain: Value = serde_json::from_slice(&keys.decrypt(&cipher).unwrap()).unwrap();
    assert_eq!(plain["ssepush"]["handoff"], browser.id, "{plain}");
    assert!(
        (1..=3).contains(&plain["ssepush"]["pending"].as_u64().unwrap()),
        "{plain}"
    );

    // The phones catch up from the proxy: exactly the three events.
    let want: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    assert_eq!(json_ids(&proxy.events(&ios, None).await), want);
    assert_eq!(json_ids(&proxy.events(&android, None).await), want);
    assert_eq!(json_ids(&proxy.events(&browser, None).await), want);

    // The unregistered device: failed, with the reason, and pushed to exactly once.
    eventually(WITHIN, "dead token failed", || async {
        proxy.status(&dead).await["state"] == "failed"
    })
    .await;
    let status = proxy.status(&dead).await;
    assert!(
        status["lastError"]
            .as_str()
            .unwrap()
            .contains("Unregistered"),
        "{status}"
    );
    origin
        .client
        .publish_one("gw.a", None, json!(4))
        .await
        .unwrap();
    crate::support::nothing_happens_for(Duration::from_millis(600)).await;
    assert_eq!(pushes_for(dead_token.clone()).await.len(), 1);

    proxy.stop().await;
    origin.stop().await;
    gw.stop().await;
}

/// The gateway's own answers drive the retries: a 429 with `Retry-After: 2` is retried no
/// sooner than 2 s later, a 500 is retried (with backoff) until it goes through, and neither
/// fails the handoff.
#[tokio::test]
async fn gateway_429_and_500_are_retried_as_the_gateway_says() {
    let gw = start_gateway().await;
    let origin = TestOrigin::start(memory_settings()).await;
    let mut settings = proxy_settings(&[&origin.url]);
    let (apns, _fcm) = provider_settings(&gw);
    settings.apns = Some(apns);
    settings.wake.retry_base_ms = 200;
    let providers = ssepush_proxy::server::providers_from_settings(&settings).unwrap();
    let proxy = TestProxy::start_with(settings, providers).await;

    let last = origin
        .client
        .publish_one("rt.a", None, json!(0))
        .await
        .unwrap();
    let url = format!("{}/v1/sse?channel=rt.*", origin.url);
    let limited = gw.client.register_device(Provider::Apns).await.unwrap();
    let flaky = gw.client.register_device(Provider::Apns).await.unwrap();
    for (token, status, retry_after, count) in [(&limited, 429, Some(2), 1), (&flaky, 500, None, 2)]
    {
        gw.client
            .set_fault(&FaultSpec {
                token: Some(token.clone()),
                status: Some(status),
                retry_after,
                count: Some(count),
                ..FaultSpec::default()
            })
            .await
            .unwrap();
    }
    let mut handoffs = Vec::new();
    for token in [&limited, &flaky] {
        handoffs.push(
            proxy
                .create(&json!({
                    "stream": {"url": url, "lastEventId": last.to_string()},
                    "push": {"platform": "apns", "token": token},
                    "wake": {"coalesceMs": 0},
                }))
                .await,
        );
    }
    origin
        .client
        .publish_one("rt.a", None, json!(1))
        .await
        .unwrap();

    let pushes_for = |token: String| {
        let client = gw.client.clone();
        async move {
            client
                .pushes(&PushQuery {
                    token: Some(token),
                    ..PushQuery::default()
                })
                .await
                .unwrap()
        }
    };
    eventually(
        WITHIN,
        "both wakes delivered after their faults",
        || async {
            pushes_for(limited.clone())
                .await
                .iter()
                .any(|p| p.status == 200)
                && pushes_for(flaky.clone())
                    .await
                    .iter()
                    .any(|p| p.status == 200)
        },
    )
    .await;

    let l = pushes_for(limited.clone()).await;
    let statuses: Vec<u16> = l.iter().map(|p| p.status).collect();
    assert_eq!(statuses, vec![429, 200], "{l:?}");
    let waited = l[1].time_ms - l[0].time_ms;
    assert!(waited >= 2000, "retried {waited} ms after a Retry-After: 2");

    let f = pushes_for(flaky.clone()).await;
    let statuses: Vec<u16> = f.iter().map(|p| p.status).collect();
    assert_eq!(statuses, vec![500, 500, 200], "{f:?}");
    assert!(f[1].time_ms > f[0].time_ms && f[2].time_ms > f[1].time_ms);
    for h in &handoffs {
        let status = proxy.status(h).await;
        assert_eq!(status["wakesSent"], 1, "{status}");
        assert_ne!(status["state"], "failed", "{status}");
    }
    proxy.stop().await;
    origin.stop().await;
    gw.stop().await;
}

/// Apple: device tokens are of variable length. A 160-hex-digit token is accepted by the
/// handoff check and woken through the real APNs provider and the simulated APNs.
#[tokio::test]
async fn apns_device_tokens_of_another_length_are_handed_off_and_woken() {
    let gw = start_gateway().await;
    let origin = TestOrigin::start(memory_settings()).await;
    let mut settings = proxy_settings(&[&origin.url]);
    settings.apns = Some(provider_settings(&gw).0);
    let providers = ssepush_proxy::server::providers_from_settings(&settings).unwrap();
    let proxy = TestProxy::start_with(settings, providers).await;

    let last = origin
        .client
        .publish_one("long.a", None, json!(0))
        .await
        .unwrap();
    let token = gw
        .client
        .register_device_token(Provider::Apns, &"a1".repeat(80))
        .await
        .unwrap();
    assert_eq!(token.len(), 160);
    let (status, body) = proxy
        .create_raw(&json!({
            "stream": {"url": format!("{}/v1/sse?channel=long.*", origin.url),
                       "lastEventId": last.to_string()},
            "push": {"platform": "apns", "token": token},
            "wake": {"coalesceMs": 0},
        }))
        .await;
    assert_eq!(status, 201, "{body}");
    origin
        .client
        .publish_one("long.a", None, json!(1))
        .await
        .unwrap();
    eventually(WITHIN, "the wake delivered to the long token", || async {
        gw.client
            .pushes(&PushQuery {
                token: Some(token.clone()),
                ..PushQuery::default()
            })
            .await
            .unwrap()
            .iter()
            .any(|p| p.status == 200)
    })
    .await;
    // Still bounded: past the sender's limit, the handoff check refuses it.
    let (status, body) = proxy
        .create_raw(&json!({
            "stream": {"url": format!("{}/v1/sse?channel=long.*", origin.url)},
            "push": {"platform": "apns", "token": "ab".repeat(101)},
        }))
        .await;
    assert_eq!(status, 400, "{body}");
    proxy.stop().await;
    origin.stop().await;
    gw.stop().await;
}
