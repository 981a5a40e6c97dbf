//! HTTP conventions every answer keeps: errors are JSON with a `Content-Type` even when the
//! HTTP parser (not a route) refused the request; a response carrying a secret says
//! `Cache-Control: no-store`; a capacity 503 says "full" and when to come back.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::proxy::{Recorder, TestProxy, handoff_body, proxy_settings};
use crate::support::webhooks::fast;
use crate::support::{TestOrigin, memory_settings};

/// Sends `request` as raw bytes (clients like curl send some characters unencoded that an HTTP
/// library would encode) and returns the status, the head and the body of the answer.
async fn raw(addr: std::net::SocketAddr, request: &str) -> (u16, String, String) {
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer))
        .await
        .expect("the server neither answered nor closed")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    (status, head.to_ascii_lowercase(), body.to_owned())
}

fn json_error(head: &str, body: &str) -> Value {
    assert!(
        head.contains("content-type: application/json"),
        "no JSON content type: {head}"
    );
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    assert!(v["error"]["code"].is_string(), "{v}");
    assert!(v["error"]["message"].is_string(), "{v}");
    v
}

#[tokio::test]
async fn requests_the_parser_refuses_get_a_json_error() {
    let origin = TestOrigin::start(memory_settings()).await;
    // The README's example as curl sends it: `>` raw in the query.
    for target in [
        "/v1/sse?channel=sensors.>&filter=data.severity%20%3E%3D%203",
        "/v1/sse?channel=a&filter=\"x\"",
        "/v1/poll?channel=<a>",
    ] {
        let (status, head, body) = raw(
            origin.addr,
            &format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n"),
        )
        .await;
        assert_eq!(status, 400, "{target}: {head}");
        let v = json_error(&head, &body);
        assert_eq!(v["error"]["code"], "bad_request", "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("%3E"),
            "the message says how to fix it: {v}"
        );
    }
    // A header the parser refuses.
    let (status, head, body) = raw(
        origin.addr,
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{head}");
    json_error(&head, &body);
    // A head too large to parse.
    let huge = "a".repeat(512 * 1024);
    let (status, head, body) = raw(
        origin.addr,
        &format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {huge}\r\n\r\n"),
    )
    .await;
    assert!(status == 431 || status == 400, "{head}");
    json_error(&head, &body);
    // Route-level errors were JSON already and stay so; a good request is untouched.
    let (status, head, body) = raw(
        origin.addr,
        "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 404);
    json_error(&head, &body);
    let (status, _, body) = raw(
        origin.addr,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "{\"status\":\"ok\"}"));
    origin.stop().await;

    let proxy = TestProxy::start(proxy_settings(&[]), Recorder::new()).await;
    let (status, head, body) = raw(
        proxy.addr,
        "GET /v1/handoffs/a>b HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{head}");
    json_error(&head, &body);
    proxy.stop().await;
}

#[tokio::test]
async fn a_webhooks_secret_is_never_cached() {
    let origin = TestOrigin::start(fast(memory_settings())).await;
    let resp = crate::support::http()
        .post(format!("{}/v1/webhooks", origin.url))
        .json(&json!({"url": "http://127.0.0.1:9/hook", "channels": ["a"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(
        resp.headers()
            .get("cache-control")
            .map(|v| v.to_str().unwrap()),
        Some("no-store")
    );
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["secret"].as_str().unwrap().starts_with("whsec_"),
        "{body}"
    );
    origin.stop().await;
}

#[tokio::test]
async fn a_full_proxy_answers_node_full_with_retry_after() {
    let origin = TestOrigin::start(memory_settings()).await;
    let mut settings = proxy_settings(&[&origin.url]);
    settings.max_handoffs = 1;
    let proxy = TestProxy::start(settings, Recorder::new()).await;
    let stream = format!("{}/v1/sse?channel=a", origin.url);
    let created = proxy
        .http
        .post(format!("{}/v1/handoffs", proxy.url))
        .json(&handoff_body(&stream, None, 1))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    // The handoff token is a secret too.
    assert_eq!(
        created
            .headers()
            .get("cache-control")
            .map(|v| v.to_str().unwrap()),
        Some("no-store")
    );
    let full = proxy
        .http
        .post(format!("{}/v1/handoffs", proxy.url))
        .json(&handoff_body(&stream, None, 2))
        .send()
        .await
        .unwrap();
    assert_eq!(full.status(), 503);
    let retry_after: u64 = full
        .headers()
        .get("retry-after")
        .expect("a capacity 503 says when to come back")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let body: Value = full.json().await.unwrap();
    assert_eq!(body["error"]["code"], "node_full", "{body}");
    proxy.stop().await;
    origin.stop().await;
}
