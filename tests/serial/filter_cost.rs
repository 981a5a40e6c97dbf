//! Issue 12 §2: one client filter must not stall a node. A filter that is cheap on its face but
//! costly on an event (every compile limit holds, the event's data makes it 2,000 × 2,000
//! iterations) runs on its own subscriber's task within a budget: that subscription is ended
//! with an `ssepush.error` block and counted; the other subscribers get their events and
//! `/healthz` answers meanwhile. (In `serial`: it reads the process-wide `/metrics`.)

use std::time::Duration;

use futures::StreamExt;
use serde_json::json;

use crate::support::{TestOrigin, exclusive};

const WAIT: Duration = Duration::from_secs(10);

/// Opens `GET /v1/sse` for `channel` with an optional filter; the stream's text as it comes.
async fn open(
    origin: &TestOrigin,
    channel: &str,
    filter: Option<&str>,
) -> impl futures::Stream<Item = String> + Unpin + use<> {
    let mut params = vec![("channel", channel)];
    if let Some(f) = filter {
        params.push(("filter", f));
    }
    let url = reqwest::Url::parse_with_params(&format!("{}/v1/sse", origin.url), &params).unwrap();
    let resp = crate::support::get(url).await.unwrap();
    assert_eq!(resp.status(), 200);
    Box::pin(
        resp.bytes_stream()
            .map(|b| String::from_utf8_lossy(&b.unwrap()).into_owned()),
    )
}

/// Reads until `want` appears in the text (or the stream ends); the text read.
async fn read_until(
    stream: &mut (impl futures::Stream<Item = String> + Unpin),
    want: &str,
) -> String {
    let mut text = String::new();
    let _ = tokio::time::timeout(WAIT, async {
        while !text.contains(want) {
            match stream.next().await {
                Some(chunk) => text.push_str(&chunk),
                None => break,
            }
        }
    })
    .await;
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_costly_filter_ends_only_its_own_subscription_and_the_node_keeps_answering() {
    let _only = exclusive().await;
    let origin = TestOrigin::start(crate::support::memory_settings()).await;
    let before =
        crate::support::metric(&origin.url, "ssepush_origin_filter_over_budget_total").await;
    let costly = "data.a.exists(x, data.a.exists(y, x + y < 0))";
    let mut evil = open(&origin, "a", Some(costly)).await;
    let mut plain = open(&origin, "a", None).await;
    let mut filtered = open(&origin, "a", Some("data.n >= 1")).await;
    // A second costly subscriber on another channel, and a bystander there.
    let mut evil_b = open(&origin, "b", Some(costly)).await;
    let mut plain_b = open(&origin, "b", None).await;

    let big: Vec<i64> = (0..2000).collect();
    let id_a = origin
        .client
        .publish_one("a", None, json!({"n": 1, "a": big}))
        .await
        .unwrap();
    let id_b = origin
        .client
        .publish_one("b", None, json!({"n": 1, "a": big}))
        .await
        .unwrap();

    // The node answers while the costly filters meet the events.
    let health = tokio::time::timeout(
        Duration::from_secs(5),
        crate::support::get(format!("{}/healthz", origin.url)),
    )
    .await
    .expect("/healthz answers while costly filters are subscribed")
    .unwrap();
    assert!(health.status().is_success(), "{}", health.status());

    // Everyone else gets the events.
    for (stream, id) in [
        (&mut plain, id_a),
        (&mut filtered, id_a),
        (&mut plain_b, id_b),
    ] {
        let text = read_until(stream, &format!("id: {id}\n")).await;
        assert!(text.contains(&format!("id: {id}\n")), "{text}");
    }
    // The costly subscriptions end with a clear error, and never deliver the event.
    for stream in [&mut evil, &mut evil_b] {
        let text = read_until(stream, "event: ssepush.error").await;
        assert!(
            text.contains("event: ssepush.error\ndata: {\"code\":\"filter_budget\""),
            "{text}"
        );
        assert!(!text.contains("\"a\":[0,1,2"), "{text}");
        let rest = tokio::time::timeout(WAIT, stream.next()).await.unwrap();
        assert_eq!(rest, None, "the stream ends after the error");
    }
    // Events keep flowing afterwards, to the same subscribers.
    let next = origin
        .client
        .publish_one("a", None, json!({"n": 2, "a": [1]}))
        .await
        .unwrap();
    for stream in [&mut plain, &mut filtered] {
        let text = read_until(stream, &format!("id: {next}\n")).await;
        assert!(text.contains(&format!("id: {next}\n")), "{text}");
    }
    let after =
        crate::support::metric(&origin.url, "ssepush_origin_filter_over_budget_total").await;
    assert_eq!(
        after - before,
        2.0,
        "each costly subscription is counted once"
    );
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_costly_filter_on_poll_and_websocket_is_refused_with_its_reason() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let _only = exclusive().await;
    let origin = TestOrigin::start(crate::support::memory_settings()).await;
    let costly = "data.a.exists(x, data.a.exists(y, x + y < 0))";
    let big: Vec<i64> = (0..2000).collect();
    let id = origin
        .client
        .publish_one("a", None, json!({"a": big}))
        .await
        .unwrap();
    // Long-poll from before the event: 422 with the code.
    let url = reqwest::Url::parse_with_params(
        &format!("{}/v1/poll", origin.url),
        &[("channel", "a"), ("filter", costly), ("after", "0-0")],
    )
    .unwrap();
    let resp = crate::support::get(url).await.unwrap();
    assert_eq!(resp.status(), 422);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "filter_budget", "{body}");
    // WebSocket: the socket closes with 1008 and the reason.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/v1/ws", origin.addr))
        .await
        .unwrap();
    let sub = json!({"type": "subscribe", "id": "s", "channels": ["a"], "filter": costly, "lastEventId": "0-0"});
    ws.send(Message::Text(sub.to_string().into()))
        .await
        .unwrap();
    let close = tokio::time::timeout(WAIT, async {
        while let Some(msg) = ws.next().await {
            if let Ok(Message::Close(frame)) = msg {
                return frame;
            }
        }
        None
    })
    .await
    .unwrap()
    .expect("a close frame");
    assert_eq!(u16::from(close.code), 1008, "{close:?}");
    assert!(close.reason.contains("filter_budget"), "{close:?}");
    let _ = id;
    origin.stop().await;
}
