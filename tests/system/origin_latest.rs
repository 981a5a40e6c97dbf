//! `GET /v1/channels/{channel}/latest` from the outside, on memory and on Redis: the newest
//! events newest last, `ETag` = newest id, `If-None-Match` → 304 without a body, the fixed tag of
//! an empty channel, and 400s for a bad channel or `n`.

use crate::support::TestOrigin;
use serde_json::{Value, json};
use ssepush_origin::settings::Settings;

async fn get(origin: &TestOrigin, path: &str, if_none_match: Option<&str>) -> reqwest::Response {
    let mut req = crate::support::http().get(format!("{}{path}", origin.url));
    if let Some(tag) = if_none_match {
        req = req.header("if-none-match", tag);
    }
    req.send().await.unwrap()
}

fn etag(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_owned())
}

macro_rules! on_both_stores {
    ($name:ident, $scenario:ident) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                $scenario(crate::support::memory_settings()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                $scenario(crate::support::redis_settings(&crate::support::namespace(
                    stringify!($name),
                )))
                .await;
            }
        }
    };
}

async fn newest_events_with_etags(settings: Settings) {
    let origin = TestOrigin::start(settings).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            origin
                .client
                .publish_one("news.x", Some("headline"), json!({"n": n}))
                .await
                .unwrap(),
        );
        origin
            .client
            .publish_one("news.y", None, json!({"other": n}))
            .await
            .unwrap();
    }
    let resp = get(&origin, "/v1/channels/news.x/latest", None).await;
    assert_eq!(resp.status(), 200);
    let tag = etag(&resp).expect("an ETag");
    assert_eq!(tag, format!("\"{}\"", ids[4]));
    assert_eq!(resp.headers()["cache-control"], "no-cache");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v,
        json!({"events": [{"id": ids[4].to_string(), "channel": "news.x", "type": "headline", "data": {"n": 4}, "time": ids[4].ms}]})
    );

    // n: the newest n, newest last; more than exist gives all of them.
    let v: Value = get(&origin, "/v1/channels/news.x/latest?n=3", None)
        .await
        .json()
        .await
        .unwrap();
    let got: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    let want: Vec<String> = ids[2..].iter().map(ToString::to_string).collect();
    assert_eq!(got, want);
    let v: Value = get(&origin, "/v1/channels/news.x/latest?n=1000", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["events"].as_array().unwrap().len(), 5);

    // The client is current: 304, no body, the same tag (for any n).
    for path in [
        "/v1/channels/news.x/latest",
        "/v1/channels/news.x/latest?n=3",
    ] {
        let resp = get(&origin, path, Some(&tag)).await;
        assert_eq!(resp.status(), 304, "{path}");
        assert_eq!(etag(&resp).as_deref(), Some(tag.as_str()));
        assert!(resp.bytes().await.unwrap().is_empty(), "a 304 has no body");
    }
    // A list and a weak tag match too; a stale tag does not.
    let resp = get(
        &origin,
        "/v1/channels/news.x/latest",
        Some(&format!("\"1-0\", W/{tag}")),
    )
    .await;
    assert_eq!(resp.status(), 304);
    let resp = get(
        &origin,
        "/v1/channels/news.x/latest",
        Some(&format!("\"{}\"", ids[3])),
    )
    .await;
    assert_eq!(resp.status(), 200);

    // A new event changes the tag.
    let newer = origin
        .client
        .publish_one("news.x", None, json!({"n": 5}))
        .await
        .unwrap();
    let resp = get(&origin, "/v1/channels/news.x/latest", Some(&tag)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(etag(&resp), Some(format!("\"{newer}\"")));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["events"][0]["id"], newer.to_string());
    origin.stop().await;
}
on_both_stores!(newest_events_on, newest_events_with_etags);

async fn empty_channels_and_bad_requests(settings: Settings) {
    let origin = TestOrigin::start(settings).await;
    // An unknown channel: an empty list with the fixed empty tag, which revalidates to 304.
    let resp = get(&origin, "/v1/channels/nobody.here/latest", None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(etag(&resp).as_deref(), Some("\"0-0\""));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v, json!({"events": []}));
    let resp = get(&origin, "/v1/channels/nobody.here/latest", Some("\"0-0\"")).await;
    assert_eq!(resp.status(), 304);
    // `*` means "any current representation", and the empty list is one (RFC 9110 §13.1.2).
    let resp = get(&origin, "/v1/channels/nobody.here/latest", Some("*")).await;
    assert_eq!(resp.status(), 304);

    for (path, code) in [
        ("/v1/channels/a.*/latest", "invalid_channel"),
        ("/v1/channels/a..b/latest", "invalid_channel"),
        ("/v1/channels/a%20b/latest", "invalid_channel"),
        ("/v1/channels/a/latest?n=0", "invalid_n"),
        ("/v1/channels/a/latest?n=1001", "invalid_n"),
        ("/v1/channels/a/latest?n=many", "invalid_n"),
    ] {
        let resp = get(&origin, path, None).await;
        assert_eq!(resp.status(), 400, "{path}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{path}: {v}");
    }
    origin.stop().await;
}
on_both_stores!(empty_and_bad_on, empty_channels_and_bad_requests);
