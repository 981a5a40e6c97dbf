//! Publisher auth on `POST /v1/events`: static bearer tokens, HS256 and ES256 JWTs (expiry and
//! audience checked), 401 with `WWW-Authenticate: Bearer` for anything else; with nothing
//! configured, publishing is open on a loopback listener and refused on a non-loopback one.

use std::time::Duration;

use crate::support::TestOrigin;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use serde_json::{Value, json};
use ssepush::client::origin::{Item, Subscription};
use ssepush_origin::EventId;
use ssepush_origin::settings::{AuthSettings, Settings};

const STATIC_TOKEN: &str = "static-publisher-token-1";
const HS_SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!";
const AUDIENCE: &str = "ssepush-test";

struct Keys {
    es_private_pem: String,
    es_public_pem: String,
    other_private_pem: String,
}

fn es256_pair() -> (String, String) {
    let secret = p256::SecretKey::random(&mut rand_core_06::OsRng);
    let private = secret.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
    let public = secret
        .public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    (private, public)
}

fn keys() -> Keys {
    let (es_private_pem, es_public_pem) = es256_pair();
    let (other_private_pem, _) = es256_pair();
    Keys {
        es_private_pem,
        es_public_pem,
        other_private_pem,
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn es256(private_pem: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        &claims,
        &EncodingKey::from_ec_pem(private_pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// POSTs one event with an optional raw `Authorization` value; returns status, header, body.
async fn post(url: &str, auth: Option<&str>, n: i64) -> (u16, Option<String>, Value) {
    let mut req = crate::support::http()
        .post(format!("{url}/v1/events"))
        .json(&json!({"channel": "auth.t", "data": {"n": n}}));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let www = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, www, body)
}

#[tokio::test]
async fn tokens_and_jwts_are_checked() {
    let k = keys();
    let settings = Settings {
        auth: AuthSettings {
            publish_tokens: vec!["another-token".into(), STATIC_TOKEN.into()],
            jwt_hs256_secret: Some(HS_SECRET.into()),
            jwt_es256_public_key: Some(k.es_public_pem.clone()),
            jwt_audience: Some(AUDIENCE.into()),
            ..AuthSettings::default()
        },
        ..crate::support::memory_settings()
    };
    // The settings' debug form (what a log line would print) holds no secret.
    let debug = format!("{settings:?}");
    assert!(
        !debug.contains(STATIC_TOKEN) && !debug.contains(HS_SECRET),
        "{debug}"
    );

    let origin = TestOrigin::start(settings).await;
    let url = origin.url.clone();
    let exp = now() + 600;
    let good =
        json!({"exp": exp, "aud": AUDIENCE, "sub": "backend", "ssepush": {"publish": ["auth.>"]}});
    let expired = json!({"exp": now() - 3600, "aud": AUDIENCE});
    let wrong_aud = json!({"exp": exp, "aud": "someone-else"});

    let refused: Vec<(&str, String)> = vec![
        ("no header", String::new()),
        ("empty bearer", "Bearer ".into()),
        ("wrong scheme", format!("Basic {STATIC_TOKEN}")),
        ("bad static token", "Bearer static-publisher-token-2".into()),
        ("token prefix", "Bearer static-publisher".into()),
        (
            "expired HS256",
            format!("Bearer {}", hs256(HS_SECRET, expired.clone())),
        ),
        (
            "HS256 with another secret",
            format!(
                "Bearer {}",
                hs256("a-different-secret-of-32-bytes-or-more", good.clone())
            ),
        ),
        (
            "HS256 wrong audience",
            format!("Bearer {}", hs256(HS_SECRET, wrong_aud.clone())),
        ),
        (
            "HS256 without exp",
            format!("Bearer {}", hs256(HS_SECRET, json!({"aud": AUDIENCE}))),
        ),
        (
            "expired ES256",
            format!("Bearer {}", es256(&k.es_private_pem, expired)),
        ),
        (
            "ES256 by another key",
            format!("Bearer {}", es256(&k.other_private_pem, good.clone())),
        ),
        (
            "ES256 wrong audience",
            format!("Bearer {}", es256(&k.es_private_pem, wrong_aud)),
        ),
        // alg=none with the claims of a good token.
        ("unsigned JWT", {
            let parts: Vec<String> = hs256(HS_SECRET, good.clone())
                .split('.')
                .map(String::from)
                .collect();
            format!("Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", parts[1])
        }),
    ];
    for (what, auth) in &refused {
        let auth = (!auth.is_empty()).then_some(auth.as_str());
        let (status, www, body) = post(&url, auth, -1).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert!(
            www.as_deref().is_some_and(|w| w.starts_with("Bearer")),
            "{what}: WWW-Authenticate {www:?}"
        );
        assert_eq!(body["error"]["code"], "unauthorized", "{what}: {body}");
    }
    let (_, _, body) = post(&url, None, -1).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Bearer")
    );
    let (_, _, body) = post(&url, Some(&refused[5].1), -1).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );

    let accepted = [
        format!("Bearer {STATIC_TOKEN}"),
        "bearer another-token".to_string(),
        format!("Bearer {}", hs256(HS_SECRET, good.clone())),
        format!("Bearer {}", es256(&k.es_private_pem, good.clone())),
    ];
    let mut ids = Vec::new();
    for (n, auth) in accepted.iter().enumerate() {
        let (status, _, body) = post(&url, Some(auth), n as i64).await;
        assert_eq!(status, 200, "accepted #{n}: {body}");
        ids.push(body["ids"][0].as_str().unwrap().parse::<EventId>().unwrap());
    }

    // Only the accepted events were stored, in order.
    let items = crate::support::take_items(
        &origin.client,
        &Subscription {
            channels: vec!["auth.t".into()],
            last_event_id: Some(EventId::ZERO),
            ..Default::default()
        },
        accepted.len(),
        Duration::from_secs(5),
    )
    .await;
    let got: Vec<(EventId, i64)> = items
        .iter()
        .map(|i| match i {
            Item::Event(e) => (e.id, e.data["n"].as_i64().unwrap()),
            other => panic!("{other:?}"),
        })
        .collect();
    let want: Vec<(EventId, i64)> = ids.into_iter().zip(0..).collect();
    assert_eq!(got, want);
    origin.stop().await;
}

#[tokio::test]
async fn loopback_without_auth_is_open() {
    let origin = TestOrigin::start(crate::support::memory_settings()).await;
    let (status, _, body) = post(&origin.url, None, 1).await;
    assert_eq!(status, 200, "{body}");
    // A token is not needed, and one sent anyway does no harm.
    let (status, _, _) = post(&origin.url, Some("Bearer whatever"), 2).await;
    assert_eq!(status, 200);
    origin.stop().await;
}

/// Binds all interfaces (a non-loopback listener) but talks to it over loopback only.
async fn start_unspecified(settings: Settings) -> (TestOrigin, String) {
    let origin = TestOrigin::start_on("0.0.0.0:0".parse().unwrap(), settings).await;
    let url = format!("http://127.0.0.1:{}", origin.addr.port());
    (origin, url)
}

#[tokio::test]
async fn non_loopback_without_auth_refuses_publishing() {
    let (origin, url) = start_unspecified(crate::support::memory_settings()).await;
    let (status, _, body) = post(&url, None, 1).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "publish_disabled");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("[auth]")
    );
    // Reading is not publishing: subscribers are unaffected.
    let health = crate::support::get(format!("{url}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    origin.stop().await;

    // The operator can open it on purpose…
    let mut open = crate::support::memory_settings();
    open.auth.allow_anonymous_publish = true;
    let (origin, url) = start_unspecified(open).await;
    assert_eq!(post(&url, None, 1).await.0, 200);
    origin.stop().await;

    // …or configure credentials, which then work on any address.
    let mut tokens = crate::support::memory_settings();
    tokens.auth.publish_tokens = vec![STATIC_TOKEN.into()];
    let (origin, url) = start_unspecified(tokens).await;
    assert_eq!(post(&url, None, 1).await.0, 401);
    let bearer = format!("Bearer {STATIC_TOKEN}");
    assert_eq!(post(&url, Some(&bearer), 1).await.0, 200);
    origin.stop().await;
}

#[tokio::test]
async fn bad_auth_settings_stop_startup() {
    let mut short = crate::support::memory_settings();
    short.auth.jwt_hs256_secret = Some("too-short".into());
    let err = short.validate().unwrap_err().to_string();
    assert!(
        err.contains("jwt_hs256_secret") && !err.contains("too-short"),
        "{err}"
    );

    let mut pem = crate::support::memory_settings();
    pem.auth.jwt_es256_public_key = Some("-----BEGIN PUBLIC KEY-----\nnope\n".into());
    assert!(pem.validate().is_err());
}

/// JWTs by the book (issue 12 §5), on both servers that take them: with an audience and an
/// issuer configured, a token without `aud` or `iss` is refused; a future `nbf` is refused; a
/// `crit` header is refused; the leeway is a setting.
#[tokio::test]
async fn jwts_are_checked_by_the_book_on_the_origin_and_the_proxy() {
    let exp = now() + 600;
    let grants = json!({"publish": [">"]});
    let complete = json!({"exp": exp, "aud": AUDIENCE, "iss": "backend", "ssepush": grants});
    let without = |claim: &str| {
        let mut c = complete.clone();
        c.as_object_mut().unwrap().remove(claim);
        c
    };
    let mut future_nbf = complete.clone();
    future_nbf["nbf"] = json!(now() + 300);
    let mut just_expired = complete.clone();
    just_expired["exp"] = json!(now() - 5);
    let crit = {
        let mut h = Header::new(Algorithm::HS256);
        h.crit = Some(vec!["x-ext".into()]);
        h
    };
    let sign = |header: &Header, claims: &Value| {
        jsonwebtoken::encode(
            header,
            claims,
            &EncodingKey::from_secret(HS_SECRET.as_bytes()),
        )
        .unwrap()
    };
    let plain = Header::new(Algorithm::HS256);
    let refused = [
        ("no aud", sign(&plain, &without("aud"))),
        ("no iss", sign(&plain, &without("iss"))),
        ("nbf in the future", sign(&plain, &future_nbf)),
        ("crit header", sign(&crit, &complete)),
        ("expired, no leeway", sign(&plain, &just_expired)),
    ];
    let good = sign(&plain, &complete);

    let settings = Settings {
        auth: AuthSettings {
            jwt_hs256_secret: Some(HS_SECRET.into()),
            jwt_audience: Some(AUDIENCE.into()),
            jwt_issuer: Some("backend".into()),
            jwt_leeway_secs: 0,
            ..AuthSettings::default()
        },
        ..crate::support::memory_settings()
    };
    let origin = TestOrigin::start(settings).await;
    for (what, token) in &refused {
        let (status, _, body) = post(&origin.url, Some(&format!("Bearer {token}")), 0).await;
        assert_eq!(status, 401, "origin, {what}: {body}");
    }
    let (status, _, body) = post(&origin.url, Some(&format!("Bearer {good}")), 0).await;
    assert_eq!(status, 200, "{body}");

    // The proxy takes HS256 JWTs from the app's backend for handoff creation: same rules.
    let mut proxy_settings = crate::support::proxy::proxy_settings(&[&origin.url]);
    proxy_settings.auth.jwt_hs256_secret = Some(HS_SECRET.into());
    proxy_settings.auth.jwt_audience = Some(AUDIENCE.into());
    proxy_settings.auth.jwt_issuer = Some("backend".into());
    proxy_settings.auth.jwt_leeway_secs = 0;
    let proxy = crate::support::proxy::TestProxy::start(
        proxy_settings,
        crate::support::proxy::Recorder::new(),
    )
    .await;
    let body = crate::support::proxy::handoff_body(
        &format!("{}/v1/sse?channel=auth.t", origin.url),
        None,
        7,
    );
    let create = |token: String| {
        let req = proxy
            .http
            .post(format!("{}/v1/handoffs", proxy.url))
            .bearer_auth(token)
            .json(&body);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    for (what, token) in &refused {
        assert_eq!(create(token.clone()).await, 401, "proxy, {what}");
    }
    assert_eq!(create(good).await, 201);
    proxy.stop().await;
    origin.stop().await;
}
