//! Slow and large requests (issue 12 §6): a body sent one byte at a time gets a 408 within
//! `body_read_timeout_secs` on both servers, so slow senders cannot hold every connection slot;
//! byte budgets bound what the origin keeps (per channel, in all, per dataset) and refuse what
//! cannot fit with 413/507 and a message naming the setting.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::TestOrigin;
use crate::support::proxy::{Recorder, TestProxy, proxy_settings};

/// A request that declares a 100-byte body and sends one byte of it; returns the connection.
async fn slow_post(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

/// Reads the answer on a connection until the server closes it.
async fn answer(mut s: TcpStream) -> String {
    let mut buf = Vec::new();
    // The bound only turns a hang into a failure; it is not a timing assertion.
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf))
        .await
        .expect("the server answered the slow body and closed")
        .unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

/// Fills every connection slot of a server with slow bodies: each gets a 408 JSON error, and
/// a normal request is then served.
async fn slow_bodies_are_cut(addr: std::net::SocketAddr, path: &str, slots: usize) {
    let mut held = Vec::new();
    for _ in 0..slots {
        held.push(slow_post(addr, path).await);
    }
    for s in held {
        let text = answer(s).await;
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
        let err: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{body}"));
        assert_eq!(err["error"]["code"], "body_timeout", "{err}");
    }
}

#[tokio::test]
async fn slow_bodies_get_408_and_free_their_slots_on_both_servers() {
    let mut settings = crate::support::memory_settings();
    settings.max_connections = 4;
    settings.body_read_timeout_secs = 1;
    let origin = TestOrigin::start(settings).await;
    slow_bodies_are_cut(origin.addr, "/v1/events", 4).await;
    // Every slot was held; now they are free again.
    origin
        .client
        .publish_one("a", None, json!(1))
        .await
        .unwrap();

    let mut s = proxy_settings(&[&origin.url]);
    s.max_connections = 4;
    s.body_read_timeout_secs = 1;
    let proxy = TestProxy::start(s, Recorder::new()).await;
    slow_bodies_are_cut(proxy.addr, "/v1/handoffs", 4).await;
    let health = proxy
        .http
        .get(format!("{}/healthz", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    proxy.stop().await;
    origin.stop().await;
}

async fn post(url: &str, body: &Value) -> (u16, Value) {
    let resp = crate::support::http()
        .post(url)
        .json(body)
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn byte_budgets_bound_what_the_origin_keeps() {
    let mut settings = crate::support::memory_settings();
    settings.retention.max_channel_bytes = 64 * 1024;
    settings.retention.max_total_bytes = 256 * 1024;
    settings.datasets.max_dataset_bytes = 32 * 1024;
    let origin = TestOrigin::start(settings).await;
    let url = &origin.url;
    let ten_k = "x".repeat(10 * 1024);
    // 100 events of 10 KiB on one channel: all accepted, at most 64 KiB of them kept.
    for i in 0..100 {
        let (status, body) = post(
            &format!("{url}/v1/events"),
            &json!({"channel": "big", "data": {"i": i, "s": ten_k}}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let latest: Value = crate::support::get(format!("{url}/v1/channels/big/latest?n=100"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kept = latest["events"].as_array().unwrap();
    assert!(!kept.is_empty() && kept.len() <= 6, "kept {}", kept.len());
    assert_eq!(kept.last().unwrap()["data"]["i"], 99, "the newest are kept");
    // Many channels: the log as a whole keeps at most 256 KiB; the oldest channels lose theirs.
    for c in 0..40 {
        let (status, _) = post(
            &format!("{url}/v1/events"),
            &json!({"channel": format!("c{c}"), "data": ten_k}),
        )
        .await;
        assert_eq!(status, 200);
    }
    let mut held = 0;
    for c in (0..40).map(|c| format!("c{c}")).chain(["big".to_owned()]) {
        let v: Value = crate::support::get(format!("{url}/v1/channels/{c}/latest?n=100"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        held += v["events"].as_array().unwrap().len();
    }
    assert!(
        held <= 25,
        "held {held} events of 10 KiB under a 256 KiB budget"
    );
    // One event larger than its channel's budget: 413, naming the setting.
    let (status, body) = post(
        &format!("{url}/v1/events"),
        &json!({"channel": "big", "data": "y".repeat(70 * 1024)}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("event_too_large")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_channel_bytes")
    );

    // A dataset holds at most its budget: the write that would pass it is a 507.
    let put = |key: &str, value: Value| {
        crate::support::http()
            .put(format!("{url}/v1/datasets/d/{key}"))
            .json(&value)
            .send()
    };
    for k in ["a", "b", "c"] {
        assert_eq!(put(k, json!(ten_k)).await.unwrap().status(), 201);
    }
    let resp = put("d", json!(ten_k)).await.unwrap();
    assert_eq!(resp.status(), 507);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "dataset_over_budget", "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_dataset_bytes")
    );
    let resp = put("e", json!("z".repeat(40 * 1024))).await.unwrap();
    assert_eq!(resp.status(), 413);
    origin.stop().await;
}
