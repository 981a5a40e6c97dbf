//! Who may read (issue 12 §1): every read transport of the origin — SSE, WebSocket, long-poll,
//! latest, dataset reads and webhook registration — asks for a credential where the origin
//! needs one (`auth.subscribe`), takes it from the `Authorization` header, the `access_token`
//! query field or the configured cookie, and refuses (403) a subscription whose patterns the
//! token's read patterns do not cover. Publishing is held to the token's publish patterns.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use ssepush_origin::settings::{AuthSettings, ReadAccess, Settings};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::TestOrigin;

const SECRET: &str = "a-reader-secret-of-at-least-32-bytes!!";
const STATIC_READER: &str = "static-reader-token-1";

fn jwt(claims: Value) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let mut claims = claims;
    claims["exp"] = json!(exp);
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// An origin on loopback that requires readers' credentials.
fn guarded() -> Settings {
    Settings {
        auth: AuthSettings {
            subscribe: ReadAccess::Required,
            subscribe_tokens: vec![STATIC_READER.into()],
            jwt_hs256_secret: Some(SECRET.into()),
            ..AuthSettings::default()
        },
        ..crate::support::memory_settings()
    }
}

/// A GET's status and (JSON) body; `auth` is a bearer token, `cookie` a `Cookie` header.
async fn get(url: &str, auth: Option<&str>, cookie: Option<&str>) -> (u16, Value) {
    let mut req = crate::support::http().get(url);
    if let Some(t) = auth {
        req = req.bearer_auth(t);
    }
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let json = resp
        .headers()
        .get("content-type")
        .is_some_and(|c| c.to_str().unwrap().starts_with("application/json"));
    // An SSE answer stays open: read its status only.
    let body = if json {
        resp.json().await.unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    (status, body)
}

async fn publish(url: &str, auth: Option<&str>, channel: &str) -> (u16, Value) {
    let mut req = crate::support::http()
        .post(format!("{url}/v1/events"))
        .json(&json!({"channel": channel, "data": {"x": 1}}));
    if let Some(t) = auth {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn every_read_transport_asks_for_a_covering_credential() {
    let origin = TestOrigin::start(guarded()).await;
    let url = origin.url.clone();
    let reader =
        jwt(json!({"sub": "u1", "ssepush": {"subscribe": ["chat.*"], "publish": ["chat.a"]}}));
    let nothing = jwt(json!({"sub": "u2"}));

    // Publishing follows the token's publish patterns (loopback publishing is otherwise open,
    // but a JWT key is configured, so publishers need one).
    assert_eq!(publish(&url, Some(&reader), "chat.a").await.0, 200);
    let (status, body) = publish(&url, Some(&reader), "chat.b").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden_channel")),
        "{body}"
    );
    let (status, body) = publish(&url, Some(&nothing), "chat.a").await;
    assert_eq!(
        status, 403,
        "a JWT without the ssepush claim publishes nothing: {body}"
    );

    // SSE: no credential → 401; covered patterns → 200 from the header, the query field or the
    // cookie; an uncovered pattern → 403.
    let sse = |q: &str| format!("{url}/v1/sse?{q}");
    let (status, body) = get(&sse("channel=chat.*"), None, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "{body}"
    );
    assert_eq!(
        get(&sse("channel=chat.*"), Some(&reader), None).await.0,
        200
    );
    assert_eq!(
        get(&sse("channel=chat.a"), Some(&reader), None).await.0,
        200
    );
    assert_eq!(
        get(
            &sse(&format!("channel=chat.*&access_token={reader}")),
            None,
            None
        )
        .await
        .0,
        200
    );
    let cookie = format!("other=1; ssepush_token={reader}");
    assert_eq!(
        get(&sse("channel=chat.*"), None, Some(&cookie)).await.0,
        200
    );
    for uncovered in ["chat.>", "news.a", "*.a", "chat.a.b"] {
        let (status, body) = get(
            &sse(&format!("channel=chat.a&channel={uncovered}")),
            Some(&reader),
            None,
        )
        .await;
        assert_eq!(status, 403, "{uncovered}: {body}");
        assert_eq!(body["error"]["code"], "forbidden_channel");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(uncovered)
        );
    }
    assert_eq!(
        get(&sse("channel=chat.a"), Some(&nothing), None).await.0,
        403
    );
    assert_eq!(
        get(&sse("channel=x"), Some("not-a-token"), None).await.0,
        401
    );
    // A static reader token reads everything.
    assert_eq!(
        get(&sse("channel=>"), Some(STATIC_READER), None).await.0,
        200
    );

    // Long-poll and latest: the same rule, and the reader gets the event.
    let (status, body) = get(
        &format!("{url}/v1/poll?channel=chat.*&after=0-0&timeout=0"),
        Some(&reader),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(
        get(
            &format!("{url}/v1/poll?channel=chat.>&timeout=0"),
            Some(&reader),
            None
        )
        .await
        .0,
        403
    );
    assert_eq!(
        get(
            &format!("{url}/v1/poll?channel=chat.*&timeout=0"),
            None,
            None
        )
        .await
        .0,
        401
    );
    let (status, body) = get(
        &format!("{url}/v1/channels/chat.a/latest"),
        Some(&reader),
        None,
    )
    .await;
    assert_eq!(
        (status, body["events"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{body}"
    );
    assert_eq!(
        get(
            &format!("{url}/v1/channels/news.a/latest"),
            Some(&reader),
            None
        )
        .await
        .0,
        403
    );
    assert_eq!(
        get(&format!("{url}/v1/channels/chat.a/latest"), None, None)
            .await
            .0,
        401
    );

    // Datasets are read as their change channel `datasets.<name>`.
    let ds_reader = jwt(json!({"ssepush": {"subscribe": ["datasets.prefs"]}}));
    assert_eq!(
        get(&format!("{url}/v1/datasets/prefs"), Some(&ds_reader), None)
            .await
            .0,
        200
    );
    assert_eq!(
        get(&format!("{url}/v1/datasets/other"), Some(&ds_reader), None)
            .await
            .0,
        403
    );
    assert_eq!(
        get(&format!("{url}/v1/datasets/prefs"), None, None).await.0,
        401
    );

    // A webhook reads its channels on its owner's behalf.
    let hook = |channels: Value| {
        crate::support::http()
            .post(format!("{url}/v1/webhooks"))
            .bearer_auth(&reader)
            .json(&json!({"url": "http://127.0.0.1:9/hook", "channels": channels}))
            .send()
    };
    let resp = hook(json!(["chat.>"])).await.unwrap();
    assert_eq!(resp.status(), 403);

    // WebSocket: the upgrade needs a credential; each subscribe is checked against it.
    let ws_url = url.replacen("http", "ws", 1);
    let err = tokio_tungstenite::connect_async(format!("{ws_url}/v1/ws"))
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 401),
        other => panic!("expected a 401, got {other:?}"),
    }
    let req = format!("{ws_url}/v1/ws?access_token={reader}")
        .into_client_request()
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Message::text(
        json!({"type": "subscribe", "id": "bad", "channels": ["chat.>"]}).to_string(),
    ))
    .await
    .unwrap();
    ws.send(Message::text(
        json!({"type": "subscribe", "id": "good", "channels": ["chat.*"], "lastEventId": "0-0"})
            .to_string(),
    ))
    .await
    .unwrap();
    let mut frames = Vec::new();
    while frames.len() < 3 {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg {
            frames.push(serde_json::from_str::<Value>(&t).unwrap());
        }
    }
    assert_eq!(frames[0]["type"], "error", "{frames:?}");
    assert_eq!(frames[0]["code"], "forbidden_channel");
    assert_eq!(frames[0]["ref"], "bad");
    assert_eq!(
        (frames[1]["type"].as_str(), frames[1]["ref"].as_str()),
        (Some("ok"), Some("good"))
    );
    assert_eq!(frames[2]["type"], "event", "{frames:?}");
    assert_eq!(frames[2]["event"]["channel"], "chat.a");
    origin.stop().await;
}

/// Binds all interfaces (a non-loopback listener) but talks to it over loopback only.
async fn start_unspecified(settings: Settings) -> (TestOrigin, String) {
    let origin = TestOrigin::start_on("0.0.0.0:0".parse().unwrap(), settings).await;
    let url = format!("http://127.0.0.1:{}", origin.addr.port());
    (origin, url)
}

#[tokio::test]
async fn reading_is_open_on_loopback_and_guarded_elsewhere_unless_public() {
    // Loopback, nothing configured: open, as a development origin should be.
    let origin = TestOrigin::start(crate::support::memory_settings()).await;
    assert_eq!(
        get(&format!("{}/v1/sse?channel=a", origin.url), None, None)
            .await
            .0,
        200
    );
    origin.stop().await;

    // On a network with nothing configured: reads are refused, and the answer says what to set.
    let (origin, url) = start_unspecified(crate::support::memory_settings()).await;
    let (status, body) = get(&format!("{url}/v1/sse?channel=a"), None, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("subscribe_disabled")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("auth.subscribe")
    );
    assert_eq!(
        get(&format!("{url}/v1/poll?channel=a&timeout=0"), None, None)
            .await
            .0,
        403
    );
    assert_eq!(get(&format!("{url}/healthz"), None, None).await.0, 200);
    origin.stop().await;

    // On a network with credentials: a reader needs one.
    let mut with_tokens = crate::support::memory_settings();
    with_tokens.auth.subscribe_tokens = vec![STATIC_READER.into()];
    let (origin, url) = start_unspecified(with_tokens).await;
    assert_eq!(
        get(&format!("{url}/v1/sse?channel=a"), None, None).await.0,
        401
    );
    assert_eq!(
        get(
            &format!("{url}/v1/sse?channel=a"),
            Some(STATIC_READER),
            None
        )
        .await
        .0,
        200
    );
    origin.stop().await;

    // Declared public: anyone reads.
    let mut public = crate::support::memory_settings();
    public.auth.subscribe = ReadAccess::Public;
    let (origin, url) = start_unspecified(public).await;
    assert_eq!(
        get(&format!("{url}/v1/sse?channel=a"), None, None).await.0,
        200
    );
    origin.stop().await;
}
