//! The simulated push gateway end to end: the production `gateway::run` on an ephemeral
//! loopback port, driven by real HTTP/2 (prior knowledge) and HTTP/1.1 clients that sign
//! their tokens with the credentials the gateway wrote to disk, as a proxy would.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::{Stream, StreamExt};
use serde_json::{Value, json};
use ssepush::client::webpush::{UserAgentKeys, encrypt};
use ssepush::gateway::client::GatewayClient;
use ssepush::gateway::{BodyEncoding, Delivery, PushQuery};
use ssepush::gateway::{Credentials, GatewayConfig, jwt};
use ssepush::gateway::{FaultSpec, Provider};

const WAIT: Duration = Duration::from_secs(10);

/// The shared harness's gateway, with the credentials a proxy would load from the directory it
/// wrote, and the two kinds of client senders use.
struct TestGateway {
    gw: crate::support::TestGateway,
    url: String,
    client: GatewayClient,
    /// Loaded from the credentials directory, as a proxy loads them.
    creds: Credentials,
    /// HTTP/2 prior knowledge, as APNs providers speak.
    h2: reqwest::Client,
    /// HTTP/1.1, as most FCM and Web Push senders speak.
    h1: reqwest::Client,
}

impl TestGateway {
    async fn start() -> TestGateway {
        let gw = crate::support::TestGateway::start().await;
        let (client, creds) = GatewayClient::from_credentials_dir(&gw.dir).unwrap();
        // What a proxy loads from disk is what the gateway checks against.
        assert_eq!(client.base(), gw.url);
        assert_eq!(creds.apns.key_id, gw.credentials.apns.key_id);
        TestGateway {
            url: gw.url.clone(),
            client,
            creds,
            gw,
            h2: crate::support::http_builder()
                .http2_prior_knowledge()
                .build()
                .unwrap(),
            h1: crate::support::http_builder().http1_only().build().unwrap(),
        }
    }

    async fn stop(self) {
        self.gw.stop().await;
    }

    fn provider_token(&self) -> String {
        format!("bearer {}", self.creds.apns_provider_token(now()))
    }

    /// An APNs wake exactly as the proxy sends it.
    async fn apns(
        &self,
        token: &str,
        auth: &str,
        extra: &[(&str, &str)],
        body: &str,
    ) -> reqwest::Response {
        // Extras replace the defaults (a header given twice is not what a proxy sends).
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in [
            ("authorization", auth),
            ("apns-topic", "com.example.ssepush"),
            ("apns-push-type", "background"),
            ("apns-priority", "5"),
        ]
        .iter()
        .chain(extra)
        {
            headers.insert(
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let req = self
            .h2
            .post(format!("{}/3/device/{token}", self.url))
            .headers(headers);
        let resp = req.body(body.to_owned()).send().await.unwrap();
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
        resp
    }

    async fn fcm_access_token(&self) -> String {
        let resp = self
            .h1
            .post(&self.creds.service_account.token_uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={}",
                self.creds.service_account_assertion(now())
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["token_type"], "Bearer");
        assert!(body["expires_in"].as_i64().unwrap() > 3000);
        body["access_token"].as_str().unwrap().to_owned()
    }

    async fn fcm_send(&self, bearer: &str, token: &str) -> reqwest::Response {
        let project = &self.creds.service_account.project_id;
        self.h1
            .post(format!("{}/v1/projects/{project}/messages:send", self.url))
            .bearer_auth(bearer)
            .json(&json!({"message": {
                "token": token,
                "data": {"ssepush": "{\"handoff\":\"h1\",\"pending\":1}"},
                "android": {"priority": "HIGH", "collapse_key": "h1", "ttl": "3600s"},
            }}))
            .send()
            .await
            .unwrap()
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

const WAKE: &str = r#"{"aps":{"content-available":1},"ssepush":{"handoff":"h1","pending":2,"latestEventId":"42"}}"#;

async fn next(
    stream: &mut (
             impl Stream<Item = Result<Delivery, ssepush::gateway::client::GatewayClientError>> + Unpin
         ),
) -> Delivery {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("no push reached the device")
        .expect("device stream ended")
        .unwrap()
}

async fn reason(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn apns_push_with_a_valid_provider_token_reaches_the_device() {
    let gw = TestGateway::start().await;
    let token = gw.client.register_device(Provider::Apns).await.unwrap();
    assert_eq!(token.len(), 64);
    let mut stream = Box::pin(gw.client.device_stream(&token).await.unwrap());

    let resp = gw
        .apns(
            &token,
            &gw.provider_token(),
            &[("apns-collapse-id", "h1"), ("apns-expiration", "0")],
            WAKE,
        )
        .await;
    assert_eq!(resp.status(), 200);
    let apns_id = resp.headers()["apns-id"].to_str().unwrap().to_owned();
    assert_eq!(apns_id.len(), 36);

    let d = next(&mut stream).await;
    assert_eq!(d.provider, Provider::Apns);
    assert_eq!(d.token, token);
    assert_eq!(d.body, WAKE);
    assert_eq!(d.headers["apns-push-type"], "background");
    assert_eq!(d.headers["apns-collapse-id"], "h1");
    assert!(!d.headers.contains_key("authorization"));

    let records = gw
        .client
        .pushes(&PushQuery {
            token: Some(token.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].status, records[0].forwarded), (200, true));

    // APNs is HTTP/2 only.
    let resp = gw
        .h1
        .post(format!("{}/3/device/{token}", gw.url))
        .header("authorization", gw.provider_token())
        .header("apns-topic", "t")
        .body(WAKE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 505);
    gw.stop().await;
}

#[tokio::test]
async fn apns_answers_apple_reasons() {
    let gw = TestGateway::start().await;
    let token = gw.client.register_device(Provider::Apns).await.unwrap();
    let good = gw.provider_token();

    // Right kid and team, wrong key.
    let stranger = p256::ecdsa::SigningKey::random(&mut rand_core_06::OsRng);
    let forged = jwt::sign_es256(
        json!({"kid": gw.creds.apns.key_id}),
        &json!({"iss": gw.creds.apns.team_id, "iat": now()}),
        &stranger,
    );
    let (s, b) = reason(
        gw.apns(&token, &format!("bearer {forged}"), &[], WAKE)
            .await,
    )
    .await;
    assert_eq!(
        (s, b["reason"].as_str()),
        (403, Some("InvalidProviderToken"))
    );

    let stale = format!("bearer {}", gw.creds.apns_provider_token(now() - 3700));
    let (s, b) = reason(gw.apns(&token, &stale, &[], WAKE).await).await;
    assert_eq!(
        (s, b["reason"].as_str()),
        (403, Some("ExpiredProviderToken"))
    );

    let resp = gw
        .h2
        .post(format!("{}/3/device/{token}", gw.url))
        .header("authorization", &good)
        .header("apns-push-type", "background")
        .header("apns-priority", "5")
        .body(WAKE)
        .send()
        .await
        .unwrap();
    let (s, b) = reason(resp).await;
    assert_eq!((s, b["reason"].as_str()), (400, Some("MissingTopic")));

    let (s, b) = reason(
        gw.apns(&token, &good, &[("apns-priority", "10")], WAKE)
            .await,
    )
    .await;
    assert_eq!((s, b["reason"].as_str()), (400, Some("BadPriority")));

    let long = "c".repeat(65);
    let (s, b) = reason(
        gw.apns(&token, &good, &[("apns-collapse-id", &long)], WAKE)
            .await,
    )
    .await;
    assert_eq!((s, b["reason"].as_str()), (400, Some("BadCollapseId")));

    let (s, b) = reason(gw.apns("not-a-token", &good, &[], WAKE).await).await;
    assert_eq!((s, b["reason"].as_str()), (400, Some("BadDeviceToken")));

    let big = format!(
        r#"{{"aps":{{"content-available":1}},"pad":"{}"}}"#,
        "x".repeat(4096)
    );
    let (s, b) = reason(gw.apns(&token, &good, &[], &big).await).await;
    assert_eq!((s, b["reason"].as_str()), (413, Some("PayloadTooLarge")));

    // Wrong path or method, as Apple answers them (not pushes: not recorded).
    let resp = gw
        .h2
        .post(format!("{}/3/device/", gw.url))
        .send()
        .await
        .unwrap();
    let (s, b) = reason(resp).await;
    assert_eq!((s, b["reason"].as_str()), (404, Some("BadPath")));
    let resp = gw
        .h2
        .get(format!("{}/3/device/{token}", gw.url))
        .send()
        .await
        .unwrap();
    let (s, b) = reason(resp).await;
    assert_eq!((s, b["reason"].as_str()), (405, Some("MethodNotAllowed")));

    // Every refusal is in the record, none was forwarded.
    let records = gw
        .client
        .pushes(&PushQuery {
            provider: Some(Provider::Apns),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(records.len(), 7);
    assert!(records.iter().all(|r| r.status >= 400 && !r.forwarded));
    gw.stop().await;
}

#[tokio::test]
async fn fcm_v1_with_oauth_tokens() {
    let gw = TestGateway::start().await;
    let device = gw.client.register_device(Provider::Fcm).await.unwrap();
    let mut stream = Box::pin(gw.client.device_stream(&device).await.unwrap());
    let access = gw.fcm_access_token().await;

    let resp = gw.fcm_send(&access, &device).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let project = &gw.creds.service_account.project_id;
    assert!(
        body["name"]
            .as_str()
            .unwrap()
            .starts_with(&format!("projects/{project}/messages/"))
    );
    let d = next(&mut stream).await;
    assert_eq!(d.provider, Provider::Fcm);
    let sent: Value = serde_json::from_str(&d.body).unwrap();
    assert_eq!(sent["message"]["android"]["collapse_key"], "h1");

    // A bearer the gateway never minted.
    let (s, b) = reason(gw.fcm_send("ya29.forged", &device).await).await;
    assert_eq!(
        (s, b["error"]["status"].as_str()),
        (401, Some("UNAUTHENTICATED"))
    );

    // An assertion for the wrong audience is refused at the token endpoint.
    let sa = &gw.creds.service_account;
    let wrong_aud = jwt::sign_rs256(
        json!({"typ": "JWT"}),
        &json!({"iss": sa.client_email, "aud": "https://oauth2.googleapis.com/token",
                "scope": jwt::FCM_SCOPE, "iat": now(), "exp": now() + 3600}),
        &gw.creds.sa_key,
    );
    let resp = gw
        .h1
        .post(&sa.token_uri)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={wrong_aud}"
        ))
        .send()
        .await
        .unwrap();
    let (s, b) = reason(resp).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_grant")));

    // Data values must be strings.
    let resp = gw
        .h1
        .post(format!("{}/v1/projects/{project}/messages:send", gw.url))
        .bearer_auth(&access)
        .json(&json!({"message": {"token": device, "data": {"pending": 3}}}))
        .send()
        .await
        .unwrap();
    let (s, b) = reason(resp).await;
    assert_eq!(
        (s, b["error"]["status"].as_str()),
        (400, Some("INVALID_ARGUMENT"))
    );

    // UNREGISTERED, on request.
    gw.client
        .set_fault(&FaultSpec {
            provider: Some(Provider::Fcm),
            token: Some(device.clone()),
            status: Some(404),
            count: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let (s, b) = reason(gw.fcm_send(&access, &device).await).await;
    assert_eq!(s, 404);
    assert_eq!(b["error"]["status"], "NOT_FOUND");
    assert_eq!(
        b["error"]["details"][0]["@type"],
        "type.googleapis.com/google.firebase.fcm.v1.FcmError"
    );
    assert_eq!(b["error"]["details"][0]["errorCode"], "UNREGISTERED");

    // QUOTA_EXCEEDED with Retry-After.
    gw.client
        .set_fault(&FaultSpec {
            provider: Some(Provider::Fcm),
            status: Some(429),
            retry_after: Some(9),
            count: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let resp = gw.fcm_send(&access, &device).await;
    assert_eq!(resp.headers()["retry-after"], "9");
    let (s, b) = reason(resp).await;
    assert_eq!(
        (s, b["error"]["details"][0]["errorCode"].as_str()),
        (429, Some("QUOTA_EXCEEDED"))
    );

    // Faults spent: back to normal.
    assert_eq!(gw.fcm_send(&access, &device).await.status(), 200);
    assert_eq!(next(&mut stream).await.provider, Provider::Fcm);

    // The app is uninstalled: UNREGISTERED without any fault.
    gw.client.unregister_device(&device).await.unwrap();
    let (s, b) = reason(gw.fcm_send(&access, &device).await).await;
    assert_eq!(
        (s, b["error"]["details"][0]["errorCode"].as_str()),
        (404, Some("UNREGISTERED"))
    );
    gw.stop().await;
}

fn vapid_header(key: &p256::ecdsa::SigningKey, aud: &str) -> String {
    let k = URL_SAFE_NO_PAD.encode(key.verifying_key().to_encoded_point(false).as_bytes());
    let t = jwt::sign_es256(
        json!({"typ": "JWT"}),
        &json!({"aud": aud, "exp": now() + 12 * 3600, "sub": "mailto:ops@example.com"}),
        key,
    );
    format!("vapid t={t}, k={k}")
}

#[tokio::test]
async fn webpush_passes_the_ciphertext_through() {
    let gw = TestGateway::start().await;
    let vapid = p256::ecdsa::SigningKey::random(&mut rand_core_06::OsRng);
    let vapid_public =
        URL_SAFE_NO_PAD.encode(vapid.verifying_key().to_encoded_point(false).as_bytes());
    let phone = UserAgentKeys::generate();
    let sub = gw
        .client
        .subscribe_webpush(Some(&vapid_public))
        .await
        .unwrap();
    assert_eq!(sub.endpoint, format!("{}/wp/{}", gw.url, sub.id));

    let send = |auth: String, topic: &'static str, plaintext: &'static [u8]| {
        let body = encrypt(plaintext, &phone.p256dh, &phone.auth).unwrap();
        let req = gw
            .h1
            .post(&sub.endpoint)
            .header("authorization", auth)
            .header("ttl", "3600")
            .header("urgency", "high")
            .header("topic", topic)
            .header("content-encoding", "aes128gcm")
            .body(body.clone());
        async move { (req.send().await.unwrap(), body) }
    };

    // Two wakes with the same Topic before the phone listens: the newer replaces the older.
    let (r1, _) = send(vapid_header(&vapid, &gw.url), "h1", b"first").await;
    assert_eq!(r1.status(), 201);
    let (r2, body2) = send(vapid_header(&vapid, &gw.url), "h1", b"second").await;
    assert_eq!(r2.status(), 201);
    assert!(
        r2.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with(&gw.url)
    );
    let mut stream = Box::pin(gw.client.device_stream(&sub.id).await.unwrap());
    let d = next(&mut stream).await;
    assert_eq!(d.body_encoding, BodyEncoding::Base64url);
    assert_eq!(d.headers["topic"], "h1");
    let received = URL_SAFE_NO_PAD.decode(&d.body).unwrap();
    assert_eq!(received, body2, "the ciphertext must arrive untouched");
    assert_eq!(phone.decrypt(&received).unwrap(), b"second");

    // VAPID for another origin, or by another key than the subscription's.
    let (r, _) = send(vapid_header(&vapid, "http://127.0.0.1:1"), "h1", b"x").await;
    assert_eq!(r.status(), 401);
    let stranger = p256::ecdsa::SigningKey::random(&mut rand_core_06::OsRng);
    let (r, _) = send(vapid_header(&stranger, &gw.url), "h1", b"x").await;
    assert_eq!(r.status(), 403);

    // Missing TTL.
    let resp = gw
        .h1
        .post(&sub.endpoint)
        .header("authorization", vapid_header(&vapid, &gw.url))
        .header("content-encoding", "aes128gcm")
        .body(body2.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // TTL 0 is "now or never": lost while the phone is not listening, delivered while it is.
    let sub0 = gw.client.subscribe_webpush(None).await.unwrap();
    let ttl0 = |body: Vec<u8>| {
        gw.h1
            .post(&sub0.endpoint)
            .header("authorization", vapid_header(&vapid, &gw.url))
            .header("ttl", "0")
            .header("content-encoding", "aes128gcm")
            .body(body)
            .send()
    };
    let lost = encrypt(b"lost", &phone.p256dh, &phone.auth).unwrap();
    assert_eq!(ttl0(lost).await.unwrap().status(), 201);
    let mut stream0 = Box::pin(gw.client.device_stream(&sub0.id).await.unwrap());
    let live = encrypt(b"live", &phone.p256dh, &phone.auth).unwrap();
    assert_eq!(ttl0(live).await.unwrap().status(), 201);
    let d = next(&mut stream0).await;
    assert_eq!(
        phone
            .decrypt(&URL_SAFE_NO_PAD.decode(&d.body).unwrap())
            .unwrap(),
        b"live"
    );
    let records = gw
        .client
        .pushes(&PushQuery {
            token: Some(sub0.id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        records.iter().map(|r| r.forwarded).collect::<Vec<_>>(),
        [false, true]
    );

    // Unknown and unsubscribed endpoints.
    let resp = gw
        .h1
        .post(format!("{}/wp/nosuchsubscription", gw.url))
        .header("authorization", vapid_header(&vapid, &gw.url))
        .header("ttl", "60")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    gw.client.unsubscribe_webpush(&sub.id).await.unwrap();
    let (r, _) = send(vapid_header(&vapid, &gw.url), "h1", b"x").await;
    assert_eq!(r.status(), 410);
    gw.stop().await;
}

#[tokio::test]
async fn faults_answer_provider_errors_and_expire() {
    let gw = TestGateway::start().await;
    let token = gw.client.register_device(Provider::Apns).await.unwrap();
    let mut stream = Box::pin(gw.client.device_stream(&token).await.unwrap());
    let auth = gw.provider_token();
    let fault = |status: u16, count: u32| FaultSpec {
        provider: Some(Provider::Apns),
        token: Some(token.clone()),
        status: Some(status),
        count: Some(count),
        ..Default::default()
    };

    // 410 Unregistered with its timestamp, twice, then normal again.
    gw.client.set_fault(&fault(410, 2)).await.unwrap();
    for _ in 0..2 {
        let (s, b) = reason(gw.apns(&token, &auth, &[], WAKE).await).await;
        assert_eq!((s, b["reason"].as_str()), (410, Some("Unregistered")));
        assert!(b["timestamp"].as_u64().unwrap() > 1_700_000_000_000);
    }
    assert_eq!(gw.apns(&token, &auth, &[], WAKE).await.status(), 200);
    let first = next(&mut stream).await;

    // 429 with Retry-After; 500.
    gw.client
        .set_fault(&FaultSpec {
            retry_after: Some(7),
            ..fault(429, 1)
        })
        .await
        .unwrap();
    let resp = gw.apns(&token, &auth, &[], WAKE).await;
    assert_eq!(resp.headers()["retry-after"], "7");
    let (s, b) = reason(resp).await;
    assert_eq!((s, b["reason"].as_str()), (429, Some("TooManyRequests")));
    gw.client.set_fault(&fault(500, 1)).await.unwrap();
    let (s, b) = reason(gw.apns(&token, &auth, &[], WAKE).await).await;
    assert_eq!(
        (s, b["reason"].as_str()),
        (500, Some("InternalServerError"))
    );

    // Latency.
    gw.client
        .set_fault(&FaultSpec {
            latency_ms: Some(400),
            count: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let started = Instant::now();
    assert_eq!(gw.apns(&token, &auth, &[], WAKE).await.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(400));
    let delayed = next(&mut stream).await;
    assert!(delayed.seq > first.seq);

    // Drop: accepted, recorded, never forwarded — a lost wake.
    gw.client
        .set_fault(&FaultSpec {
            drop: true,
            count: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        gw.apns(&token, &auth, &[("apns-collapse-id", "dropped")], WAKE)
            .await
            .status(),
        200
    );
    assert_eq!(
        gw.apns(&token, &auth, &[("apns-collapse-id", "kept")], WAKE)
            .await
            .status(),
        200
    );
    let after = next(&mut stream).await;
    assert_eq!(after.headers["apns-collapse-id"], "kept");
    let dropped = gw
        .client
        .pushes(&PushQuery {
            since: Some(delayed.seq),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(dropped.len(), 2);
    assert_eq!((dropped[0].status, dropped[0].forwarded), (200, false));
    assert!(dropped[1].forwarded);

    // An until-cleared fault stays until DELETE.
    gw.client
        .set_fault(&FaultSpec {
            provider: Some(Provider::Apns),
            status: Some(503),
            ..Default::default()
        })
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(gw.apns(&token, &auth, &[], WAKE).await.status(), 503);
    }
    assert_eq!(gw.client.faults().await.unwrap().len(), 1);
    gw.client.clear_faults().await.unwrap();
    assert_eq!(gw.apns(&token, &auth, &[], WAKE).await.status(), 200);

    // The app is uninstalled: 410 with the time it happened, for every later push.
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // The 204 comes once the token is dead: the next push sees it.
    gw.client.unregister_device(&token).await.unwrap();
    for _ in 0..2 {
        let (s, b) = reason(gw.apns(&token, &auth, &[], WAKE).await).await;
        assert_eq!((s, b["reason"].as_str()), (410, Some("Unregistered")));
        let at = b["timestamp"].as_u64().unwrap();
        assert!(at >= before && at < before + 1000, "{at} vs {before}");
    }

    // A fault that would do nothing is refused.
    let err = gw
        .client
        .set_fault(&FaultSpec::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("400"), "{err}");

    // Metrics count pushes by provider and status; the record clears.
    let metrics = gw
        .h1
        .get(format!("{}/metrics", gw.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("ssepush_gateway_pushes_total{provider=\"apns\",status=\"410\"}"),
        "{metrics}"
    );
    gw.client.clear_pushes().await.unwrap();
    assert!(
        gw.client
            .pushes(&PushQuery::default())
            .await
            .unwrap()
            .is_empty()
    );
    gw.stop().await;
}

#[tokio::test]
async fn credentials_survive_a_restart() {
    // A directory of the test's own (the harness removes only the ones it made).
    let dir = std::env::temp_dir().join(crate::support::namespace("gw-restart"));
    let config = || GatewayConfig {
        credentials_dir: Some(dir.clone()),
        ..Default::default()
    };
    let first = crate::support::TestGateway::start_with(config()).await;
    let key_id = first.credentials.apns.key_id.clone();
    first.stop().await;

    // A new gateway on another port over the same directory keeps the keys, updates addresses.
    let second = crate::support::TestGateway::start_with(config()).await;
    assert_eq!(second.credentials.apns.key_id, key_id);
    let creds = Credentials::load(&dir).unwrap();
    assert_eq!(
        creds.service_account.token_uri,
        format!("{}/token", second.url)
    );
    assert_eq!(creds.apns.key_id, key_id);
    second.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn apns_over_tls_negotiates_h2() {
    use std::sync::Arc;
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

    let gw = crate::support::TestGateway::start_with(GatewayConfig {
        tls: true,
        ..Default::default()
    })
    .await;
    let (dir, addr, creds) = (gw.dir.clone(), gw.addr, gw.credentials.clone());
    let base = gw.url.clone();
    assert_eq!(base, format!("https://{addr}"));

    // Trust exactly the certificate the gateway wrote, and ask for h2 as APNs providers do.
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(dir.join("gateway-cert.pem")).unwrap();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls_config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(tls_config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);

    let token = "ab".repeat(32);
    let req = hyper::Request::post(format!("{base}/3/device/{token}"))
        .header(
            "authorization",
            format!("bearer {}", creds.apns_provider_token(now())),
        )
        .header("apns-topic", "com.example.ssepush")
        .header("apns-push-type", "background")
        .header("apns-priority", "5")
        .body(axum::body::Body::from(WAKE))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("apns-id"));

    let req = hyper::Request::get(format!("{base}/_gateway/pushes?token={token}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let body = axum::body::to_bytes(axum::body::Body::new(resp.into_body()), 1 << 20)
        .await
        .unwrap();
    let records: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(records[0]["status"], 200);
    assert_eq!(records[0]["body"], WAKE);

    gw.stop().await;
}

/// Each gateway's `/metrics` counts its own pushes: two gateways in one process (as in the
/// demo and in this test binary) do not see each other's.
#[tokio::test]
async fn metrics_are_each_gateways_own() {
    let (busy, idle) = (TestGateway::start().await, TestGateway::start().await);
    let token = busy.client.register_device(Provider::Apns).await.unwrap();
    let auth = busy.provider_token();
    for _ in 0..3 {
        assert_eq!(busy.apns(&token, &auth, &[], WAKE).await.status(), 200);
    }
    let metrics = |gw: &TestGateway| {
        let (h1, url) = (gw.h1.clone(), gw.url.clone());
        async move {
            h1.get(format!("{url}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let counted = "ssepush_gateway_pushes_total{provider=\"apns\",status=\"200\"} 3";
    let text = metrics(&busy).await;
    assert!(text.contains(counted), "{text}");
    // The idle one has the family (at zero from start-up) and none of the busy one's series.
    let text = metrics(&idle).await;
    assert!(text.contains("ssepush_gateway_pushes_total 0"), "{text}");
    assert!(!text.contains("ssepush_gateway_pushes_total{"), "{text}");
    busy.stop().await;
    idle.stop().await;
}
