//! The proxy's push providers against the real simulated gateway (the shared harness's, on an
//! ephemeral loopback port): APNs over h2c (and over TLS with the gateway's self-signed
//! certificate) with provider tokens signed from the `.p8` the gateway wrote; FCM HTTP v1 with
//! the gateway's service-account file, so the token comes from the gateway's own `/token`;
//! Web Push to a gateway subscription, decrypted by a simulated phone with its private key.
//! Gateway faults then check the classification the wake policy relies on.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::StreamExt;
use serde_json::{Value, json};
use ssepush::client::webpush::UserAgentKeys;
use ssepush::device::stack::provider_settings;
use ssepush::gateway::client::GatewayClient;
use ssepush::gateway::{FaultSpec, GatewayConfig, Provider, PushQuery, PushRecord};
use ssepush_proxy::push::{
    ApnsProvider, ApnsSettings, EndpointPolicy, FcmProvider, FcmSettings, Providers, PushError,
    PushProvider, PushTarget, Wake, WakeMode, WebPushKeys as SubscriptionKeys, WebPushProvider,
    WebPushSettings, WebPushSubscription,
};

const WAIT: Duration = Duration::from_secs(10);

/// The shared harness's gateway, and the provider settings an operator writes from what it
/// put in its credentials directory (`ssepush proxy --gateway-credentials` reads them the same
/// way).
struct TestGateway {
    gw: crate::support::TestGateway,
    client: GatewayClient,
}

impl TestGateway {
    async fn start(tls: bool) -> TestGateway {
        let gw = crate::support::TestGateway::start_with(GatewayConfig {
            tls,
            ..GatewayConfig::default()
        })
        .await;
        // The client a tool would make from the directory alone.
        let (client, _) = GatewayClient::from_credentials_dir(&gw.dir).unwrap();
        TestGateway { gw, client }
    }

    fn settings(&self) -> (ApnsSettings, FcmSettings, WebPushSettings) {
        provider_settings(&self.gw.dir).unwrap()
    }

    /// `[apns]`, with the gateway's certificate as the extra CA when it serves TLS.
    fn apns_settings(&self) -> ApnsSettings {
        self.settings().0
    }

    /// `[fcm]`: the key file and the base URL; the token endpoint comes from the file.
    fn fcm_settings(&self) -> FcmSettings {
        self.settings().1
    }

    fn webpush_settings(&self) -> WebPushSettings {
        self.settings().2
    }

    async fn record(&self, token: &str) -> Vec<PushRecord> {
        self.client
            .pushes(&PushQuery {
                token: Some(token.into()),
                ..PushQuery::default()
            })
            .await
            .unwrap()
    }

    async fn fault(&self, provider: Provider, token: &str, status: u16, retry_after: Option<u64>) {
        self.client
            .set_fault(&FaultSpec {
                provider: Some(provider),
                token: Some(token.into()),
                status: Some(status),
                retry_after,
                count: Some(1),
                ..FaultSpec::default()
            })
            .await
            .unwrap();
    }
}

fn wake(mode: WakeMode) -> Wake {
    Wake {
        handoff_id: "h-123".into(),
        pending: 3,
        latest_event_id: Some(ssepush_origin::EventId::new(42, 0)),
        mode,
        collapse_id: "handoff-h-123".into(),
        ttl: Duration::from_secs(3600),
        node: None,
        epoch: None,
    }
}

fn ssepush() -> Value {
    json!({"handoff": "h-123", "pending": 3, "latestEventId": "42-0"})
}

/// 410 → Permanent, 429 with `Retry-After: 2` → RetryAfter(2 s), 429 with `Retry-After` as an
/// HTTP-date 30 s ahead → RetryAfter(about 30 s, never a provider default), 500 → Transient.
async fn check_faults(
    gw: &TestGateway,
    provider: &dyn PushProvider,
    kind: Provider,
    target: &PushTarget,
    token: &str,
) {
    let w = wake(WakeMode::Background);
    gw.fault(kind, token, 410, None).await;
    let e = provider.send(target, &w).await.unwrap_err();
    assert!(e.is_permanent(), "{kind:?} 410: {e:?}");
    gw.fault(kind, token, 429, Some(2)).await;
    assert_eq!(
        provider.send(target, &w).await,
        Err(PushError::RetryAfter(Duration::from_secs(2))),
        "{kind:?} 429"
    );
    // RFC 9110 §10.2.3: an HTTP-date is as valid as delta-seconds. The date has whole seconds,
    // so the wait is in (29 s, 30 s] as seen when the gateway answered, a little less now.
    gw.client
        .set_fault(&FaultSpec {
            provider: Some(kind),
            token: Some(token.into()),
            status: Some(429),
            retry_after: Some(30),
            retry_after_date: true,
            count: Some(1),
            ..FaultSpec::default()
        })
        .await
        .unwrap();
    match provider.send(target, &w).await {
        Err(PushError::RetryAfter(d)) => assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{kind:?} 429 with an HTTP-date 30 s ahead: wait {d:?}"
        ),
        other => panic!("{kind:?} 429 with an HTTP-date: {other:?}"),
    }
    gw.fault(kind, token, 500, None).await;
    let e = provider.send(target, &w).await.unwrap_err();
    assert!(matches!(e, PushError::Transient(_)), "{kind:?} 500: {e:?}");
    // Faults were one-shot: the next wake goes through again.
    provider.send(target, &w).await.unwrap();
}

#[tokio::test]
async fn apns_over_h2c_sends_the_wake_the_spec_describes() {
    let gw = TestGateway::start(false).await;
    let provider = ApnsProvider::new(&gw.apns_settings()).unwrap();
    let token = gw.client.register_device(Provider::Apns).await.unwrap();
    let target = PushTarget::Apns {
        token: token.clone(),
        topic: None,
        environment: None,
    };
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    provider
        .send(&target, &wake(WakeMode::Background))
        .await
        .unwrap();

    let record = gw.record(&token).await;
    assert_eq!(record.len(), 1);
    let push = &record[0];
    assert_eq!(push.status, 200, "{:?}", push.reason);
    let h = |name: &str| push.headers.get(name).map(String::as_str);
    assert_eq!(h("apns-push-type"), Some("background"));
    assert_eq!(h("apns-priority"), Some("5"));
    assert_eq!(h("apns-topic"), Some("com.example.ssepush"));
    assert_eq!(h("apns-collapse-id"), Some("handoff-h-123"));
    let expiration: u64 = h("apns-expiration").unwrap().parse().unwrap();
    assert!((before + 3600..=before + 3602).contains(&expiration));
    assert!(!push.headers.contains_key("authorization"));
    let body: Value = serde_json::from_str(&push.body).unwrap();
    assert_eq!(
        body,
        json!({"aps": {"content-available": 1}, "ssepush": ssepush()})
    );

    // Alert mode passes the gateway's checks too (priority 10, an alert).
    provider
        .send(&target, &wake(WakeMode::Alert))
        .await
        .unwrap();
    let record = gw.record(&token).await;
    assert_eq!(record.len(), 2);
    assert_eq!(record[1].headers["apns-push-type"], "alert");
    assert_eq!(record[1].headers["apns-priority"], "10");

    check_faults(&gw, &provider, Provider::Apns, &target, &token).await;

    // A handoff's own topic wins over the configured one.
    let own_topic = PushTarget::Apns {
        token: token.clone(),
        topic: Some("com.example.other".into()),
        environment: None,
    };
    provider
        .send(&own_topic, &wake(WakeMode::Background))
        .await
        .unwrap();
    let last = gw.record(&token).await.pop().unwrap();
    assert_eq!(last.headers["apns-topic"], "com.example.other");
}

#[tokio::test]
async fn apns_with_a_foreign_key_is_a_config_error() {
    let gw = TestGateway::start(false).await;
    let mut settings = gw.apns_settings();
    // Same key id and team, another key: the gateway refuses the signature.
    let other = gw.gw.dir.join("AuthKey_OTHER.p8");
    {
        use p256::pkcs8::{EncodePrivateKey, LineEnding};
        let key = p256::ecdsa::SigningKey::random(&mut rand_core_06::OsRng);
        std::fs::write(&other, key.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes()).unwrap();
    }
    settings.key_path = other;
    let provider = ApnsProvider::new(&settings).unwrap();
    let token = gw.client.register_device(Provider::Apns).await.unwrap();
    let target = PushTarget::Apns {
        token,
        topic: None,
        environment: None,
    };
    let e = provider
        .send(&target, &wake(WakeMode::Background))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, PushError::Config(m) if m.contains("InvalidProviderToken")),
        "{e:?}"
    );
}

#[tokio::test]
async fn apns_over_tls_with_the_gateways_certificate() {
    let gw = TestGateway::start(true).await;
    let settings = gw.apns_settings();
    assert!(
        settings.ca_cert_path.is_some(),
        "the TLS gateway writes its certificate"
    );
    assert!(
        settings
            .endpoint
            .as_deref()
            .unwrap()
            .starts_with("https://")
    );
    let provider = ApnsProvider::new(&settings).unwrap();
    // The device token comes from the control API, also behind TLS now: register one the
    // gateway accepts by shape (64 hex) instead.
    let token = "ab".repeat(32);
    let target = PushTarget::Apns {
        token,
        topic: None,
        environment: None,
    };
    provider
        .send(&target, &wake(WakeMode::Background))
        .await
        .unwrap();

    // Without the certificate, TLS verification fails: a transient network error.
    let untrusting = ApnsProvider::new(&ApnsSettings {
        ca_cert_path: None,
        ..settings
    })
    .unwrap();
    let e = untrusting
        .send(&target, &wake(WakeMode::Background))
        .await
        .unwrap_err();
    assert!(matches!(e, PushError::Transient(_)), "{e:?}");
}

#[tokio::test]
async fn fcm_gets_a_token_from_the_key_files_endpoint_and_sends() {
    let gw = TestGateway::start(false).await;
    let provider = FcmProvider::new(&gw.fcm_settings()).unwrap();
    let token = gw.client.register_device(Provider::Fcm).await.unwrap();
    let target = PushTarget::Fcm {
        token: token.clone(),
    };
    provider
        .send(&target, &wake(WakeMode::Background))
        .await
        .unwrap();
    // The cached access token serves the next send.
    provider
        .send(&target, &wake(WakeMode::Alert))
        .await
        .unwrap();

    let record = gw.record(&token).await;
    assert_eq!(record.len(), 2);
    assert_eq!(record[0].status, 200, "{:?}", record[0].reason);
    let body: Value = serde_json::from_str(&record[0].body).unwrap();
    let message = body.get("message").unwrap_or(&body);
    assert_eq!(message["token"], token.as_str());
    assert_eq!(message["android"]["priority"], "HIGH");
    assert_eq!(message["android"]["collapse_key"], "handoff-h-123");
    assert_eq!(message["android"]["ttl"], "3600s");
    let data: Value = serde_json::from_str(message["data"]["ssepush"].as_str().unwrap()).unwrap();
    assert_eq!(data, ssepush());
    let alert: Value = serde_json::from_str(&record[1].body).unwrap();
    let alert = alert.get("message").unwrap_or(&alert);
    assert_eq!(alert["notification"]["body"], "3 new events");

    check_faults(&gw, &provider, Provider::Fcm, &target, &token).await;

    // A 401 (token revoked early): one fresh token from /token, one retry, accepted.
    let before = gw.record(&token).await.len();
    gw.fault(Provider::Fcm, &token, 401, None).await;
    provider
        .send(&target, &wake(WakeMode::Background))
        .await
        .unwrap();
    let statuses: Vec<u16> = gw.record(&token).await[before..]
        .iter()
        .map(|p| p.status)
        .collect();
    assert_eq!(statuses, [401, 200]);
    // 401 again after the refresh: our credentials, not the phone.
    for _ in 0..2 {
        gw.fault(Provider::Fcm, &token, 401, None).await;
    }
    let e = provider
        .send(&target, &wake(WakeMode::Background))
        .await
        .unwrap_err();
    assert!(matches!(e, PushError::Config(_)), "{e:?}");
}

fn subscription(endpoint: &str, keys: &UserAgentKeys) -> PushTarget {
    PushTarget::Webpush {
        subscription: WebPushSubscription {
            endpoint: endpoint.into(),
            expiration_time: None,
            keys: SubscriptionKeys {
                p256dh: keys.p256dh.clone(),
                auth: keys.auth.clone(),
            },
        },
    }
}

#[tokio::test]
async fn webpush_delivers_ciphertext_the_phone_decrypts() {
    let gw = TestGateway::start(false).await;
    let provider =
        WebPushProvider::new(&gw.webpush_settings(), EndpointPolicy::permissive()).unwrap();
    // The phone subscribes with our VAPID key, as PushManager.subscribe would.
    let sub = gw
        .client
        .subscribe_webpush(Some(provider.public_key()))
        .await
        .unwrap();
    let keys = UserAgentKeys::generate();
    let target = subscription(&sub.endpoint, &keys);
    let mut stream = Box::pin(gw.client.device_stream(&sub.id).await.unwrap());

    provider
        .send(&target, &wake(WakeMode::Background))
        .await
        .unwrap();
    let delivery = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("the phone receives the push")
        .unwrap()
        .unwrap();
    assert_eq!(
        delivery.headers.get("topic").map(String::as_str),
        Some("handoff-h-123")
    );
    assert_eq!(
        delivery.headers.get("urgency").map(String::as_str),
        Some("high")
    );
    assert_eq!(
        delivery.headers.get("ttl").map(String::as_str),
        Some("3600")
    );
    let ciphertext = URL_SAFE_NO_PAD.decode(&delivery.body).unwrap();
    let plain: Value = serde_json::from_slice(&keys.decrypt(&ciphertext).unwrap()).unwrap();
    assert_eq!(plain, json!({"ssepush": ssepush()}));

    check_faults(&gw, &provider, Provider::Webpush, &target, &sub.id).await;

    // A subscription made for another application server key refuses our VAPID: our side.
    let foreign = gw
        .client
        .subscribe_webpush(Some(&UserAgentKeys::generate().p256dh))
        .await
        .unwrap();
    let e = provider
        .send(
            &subscription(&foreign.endpoint, &keys),
            &wake(WakeMode::Background),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, PushError::Config(_)), "{e:?}");

    // The phone unsubscribes: the push service answers 410, the handoff is over.
    gw.client.unsubscribe_webpush(&sub.id).await.unwrap();
    let e = provider
        .send(&target, &wake(WakeMode::Background))
        .await
        .unwrap_err();
    assert_eq!(e, PushError::Permanent("subscription expired".into()));
}

#[tokio::test]
async fn providers_from_settings_dispatch_by_platform() {
    let gw = TestGateway::start(false).await;
    let providers = Providers::from_settings(
        Some(&gw.apns_settings()),
        Some(&gw.fcm_settings()),
        None,
        &EndpointPolicy::permissive(),
    )
    .unwrap();
    assert!(providers.vapid_public_key.is_none());
    let apns = gw.client.register_device(Provider::Apns).await.unwrap();
    let fcm = gw.client.register_device(Provider::Fcm).await.unwrap();
    let w = wake(WakeMode::Background);
    providers
        .send(
            &PushTarget::Apns {
                token: apns.clone(),
                topic: None,
                environment: None,
            },
            &w,
        )
        .await
        .unwrap();
    providers
        .send(&PushTarget::Fcm { token: fcm.clone() }, &w)
        .await
        .unwrap();
    assert_eq!(gw.record(&apns).await.len(), 1);
    assert_eq!(gw.record(&fcm).await.len(), 1);
    let webpush = subscription("http://127.0.0.1:1/wp/x", &UserAgentKeys::generate());
    assert!(!providers.supports(&webpush));
    assert!(matches!(
        providers.send(&webpush, &w).await,
        Err(PushError::Config(_))
    ));
    assert!(format!("{providers:?}").contains("webpush: false"));
}
