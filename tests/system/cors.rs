//! CORS against the real origin and proxy servers, with the requests browsers send: preflights
//! (`OPTIONS` with `Origin`, `Access-Control-Request-Method` and `-Headers`) for an SSE
//! subscription with the headers EventSource polyfills add (`Cache-Control`, `Last-Event-ID`),
//! for every method of every route (`PATCH /v1/webhooks/{id}` included), echoing the requested
//! headers when any origin is allowed, and the response headers scripts need to read.

use crate::support::TestOrigin;
use crate::support::proxy::{Recorder, TestProxy, proxy_settings};
use reqwest::{Method, Response};
use serde_json::Value;
use ssepush_origin::settings::Settings;

const APP: &str = "https://app.example";

fn origin_settings(cors: &[&str]) -> Settings {
    Settings {
        cors_allow_origins: cors.iter().map(|s| s.to_string()).collect(),
        ..crate::support::memory_settings()
    }
}

/// A browser's preflight for `method url` from page origin `from`, asking for `headers`.
async fn preflight(url: &str, from: &str, method: &str, headers: &str) -> Response {
    let mut req = crate::support::http()
        .request(Method::OPTIONS, url)
        .header("origin", from)
        .header("access-control-request-method", method);
    if !headers.is_empty() {
        req = req.header("access-control-request-headers", headers);
    }
    req.send().await.unwrap()
}

fn header(resp: &Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// The comma-separated list in `name`, lower-cased.
fn list(resp: &Response, name: &str) -> Vec<String> {
    header(resp, name)
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// What the browser checks before sending the real request: the origin is allowed, and so are
/// the method (unless CORS-safelisted) and every requested header.
fn assert_allows(resp: &Response, from: &str, method: &str, headers: &[&str]) {
    assert!(resp.status().is_success(), "preflight: {}", resp.status());
    assert_eq!(header(resp, "access-control-allow-origin"), from);
    if !["GET", "HEAD", "POST"].contains(&method) {
        assert!(
            list(resp, "access-control-allow-methods").contains(&method.to_ascii_lowercase()),
            "{method} not in {:?}",
            header(resp, "access-control-allow-methods")
        );
    }
    let allowed = list(resp, "access-control-allow-headers");
    for h in headers {
        assert!(
            allowed.contains(&h.to_ascii_lowercase()),
            "{h} not in {allowed:?}"
        );
    }
}

#[tokio::test]
async fn origin_preflights_allow_what_sse_polyfills_send() {
    let origin = TestOrigin::start(origin_settings(&[APP])).await;
    let url = format!("{}/v1/sse?channel=chat.a", origin.url);
    let resp = preflight(&url, APP, "GET", "cache-control,last-event-id").await;
    assert_allows(&resp, APP, "GET", &["cache-control", "last-event-id"]);
    // Writes with their preconditions and an idempotency key, with credentials.
    let url = format!("{}/v1/datasets/prefs/theme", origin.url);
    let asked = "authorization,content-type,if-match,if-none-match,idempotency-key";
    let resp = preflight(&url, APP, "PUT", asked).await;
    assert_allows(&resp, APP, "PUT", &asked.split(',').collect::<Vec<_>>());
    // Another page origin is not allowed.
    let resp = preflight(&url, "https://evil.example", "PUT", "content-type").await;
    assert_eq!(header(&resp, "access-control-allow-origin"), "");
    origin.stop().await;
}

#[tokio::test]
async fn origin_preflights_allow_every_method_of_every_route() {
    let origin = TestOrigin::start(origin_settings(&[APP])).await;
    let doc: Value = crate::support::get(format!("{}/v1/openapi.json", origin.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let url = format!("{}{}", origin.url, path.replace(['{', '}'], ""));
        for method in ops.as_object().unwrap().keys() {
            let method = method.to_ascii_uppercase();
            let resp = preflight(&url, APP, &method, "authorization").await;
            assert_allows(&resp, APP, &method, &["authorization"]);
            checked += 1;
        }
    }
    assert!(checked > 15, "only {checked} operations in the document");
    // The one the issue found refused.
    let url = format!("{}/v1/webhooks/wh_1", origin.url);
    let resp = preflight(&url, APP, "PATCH", "content-type,authorization").await;
    assert_allows(&resp, APP, "PATCH", &["content-type", "authorization"]);
    origin.stop().await;
}

#[tokio::test]
async fn any_origin_echoes_the_requested_headers() {
    let origin = TestOrigin::start(origin_settings(&["*"])).await;
    let url = format!("{}/v1/sse?channel=chat.a", origin.url);
    let asked = [
        "cache-control",
        "last-event-id",
        "x-app-build",
        "traceparent",
    ];
    let resp = preflight(&url, "https://any.example", "GET", &asked.join(",")).await;
    assert_eq!(header(&resp, "access-control-allow-origin"), "*");
    assert_eq!(list(&resp, "access-control-allow-headers"), asked);
    origin.stop().await;
}

#[tokio::test]
async fn scripts_may_read_etag_and_retry_after() {
    let origin = TestOrigin::start(origin_settings(&[APP])).await;
    let resp = crate::support::http()
        .get(format!("{}/v1/channels/chat.a/latest", origin.url))
        .header("origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "access-control-allow-origin"), APP);
    let exposed = list(&resp, "access-control-expose-headers");
    for h in ["etag", "retry-after", "location", "www-authenticate"] {
        assert!(exposed.contains(&h.to_owned()), "{h} not in {exposed:?}");
    }
    origin.stop().await;
}

#[tokio::test]
async fn proxy_preflights_allow_its_routes_and_echo_headers() {
    let mut settings = proxy_settings(&[]);
    settings.cors_allow_origins = vec![APP.to_owned()];
    let proxy = TestProxy::start(settings, Recorder::new()).await;
    let create = format!("{}/v1/handoffs", proxy.url);
    let resp = preflight(&create, APP, "POST", "authorization,content-type").await;
    assert_allows(&resp, APP, "POST", &["authorization", "content-type"]);
    let one = format!("{}/v1/handoffs/h_1", proxy.url);
    let resp = preflight(&one, APP, "DELETE", "authorization").await;
    assert_allows(&resp, APP, "DELETE", &["authorization"]);
    // Catching up over SSE from a web page, as a polyfill does it.
    let events = format!("{}/v1/handoffs/h_1/events", proxy.url);
    let resp = preflight(
        &events,
        APP,
        "GET",
        "authorization,cache-control,last-event-id",
    )
    .await;
    assert_allows(
        &resp,
        APP,
        "GET",
        &["authorization", "cache-control", "last-event-id"],
    );
    let resp = preflight(&one, "https://evil.example", "DELETE", "authorization").await;
    assert_eq!(header(&resp, "access-control-allow-origin"), "");
    proxy.stop().await;

    let mut settings = proxy_settings(&[]);
    settings.cors_allow_origins = vec!["*".to_owned()];
    let proxy = TestProxy::start(settings, Recorder::new()).await;
    let create = format!("{}/v1/handoffs", proxy.url);
    let asked = ["authorization", "content-type", "x-app-build"];
    let resp = preflight(&create, "https://any.example", "POST", &asked.join(",")).await;
    assert_eq!(header(&resp, "access-control-allow-origin"), "*");
    assert_eq!(list(&resp, "access-control-allow-headers"), asked);
    let resp = crate::support::http()
        .get(format!("{}/healthz", proxy.url))
        .header("origin", "https://any.example")
        .send()
        .await
        .unwrap();
    assert!(list(&resp, "access-control-expose-headers").contains(&"retry-after".to_owned()));
    proxy.stop().await;
}
