//! `admin_listen` (issue 12 §8): with it set, `/metrics` and `/v1/openapi.json` are served on
//! the admin address and answer 404 on the main listener, for the origin and the proxy alike;
//! the API stays on the main listener and is not on the admin one.

use std::net::SocketAddr;

use crate::support::proxy::{Recorder, TestProxy, proxy_settings};
use crate::support::{TestOrigin, memory_settings};

/// A loopback address nothing listens on right now (the servers bind it themselves).
fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

async fn status(http: &reqwest::Client, url: String) -> (u16, String) {
    let r = http.get(&url).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The admin split, seen from both listeners of one server.
async fn check_split(http: &reqwest::Client, main: &str, admin: &str, api_path: &str) {
    for path in ["/metrics", "/v1/openapi.json"] {
        let (code, body) = status(http, format!("{main}{path}")).await;
        assert_eq!(code, 404, "{path} on the main listener: {body}");
        assert!(body.contains("not_found"), "{body}");
    }
    let metrics = http.get(format!("{admin}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let kind = metrics.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        kind.starts_with("text/plain"),
        "Prometheus text, not {kind}"
    );
    let (code, doc) = status(http, format!("{admin}/v1/openapi.json")).await;
    assert_eq!(code, 200);
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert!(
        doc["paths"][api_path].is_object(),
        "the document lists {api_path}"
    );
    // The API is on the main listener only.
    assert_eq!(status(http, format!("{main}/healthz")).await.0, 200);
    assert_eq!(status(http, format!("{admin}{api_path}")).await.0, 404);
}

#[tokio::test]
async fn origin_serves_metrics_and_openapi_on_the_admin_listener_only() {
    let admin = free_addr();
    let origin = TestOrigin::start(ssepush_origin::settings::Settings {
        admin_listen: Some(admin),
        ..memory_settings()
    })
    .await;
    let http = crate::support::http();
    check_split(&http, &origin.url, &format!("http://{admin}"), "/v1/events").await;
}

#[tokio::test]
async fn proxy_serves_metrics_and_openapi_on_the_admin_listener_only() {
    let admin = free_addr();
    let mut settings = proxy_settings(&[]);
    settings.admin_listen = Some(admin);
    let proxy = TestProxy::start(settings, Recorder::new()).await;
    check_split(
        &proxy.http,
        &proxy.url,
        &format!("http://{admin}"),
        "/v1/handoffs",
    )
    .await;
}

#[tokio::test]
async fn without_admin_listen_both_stay_on_the_main_listener() {
    let origin = TestOrigin::start(memory_settings()).await;
    let http = crate::support::http();
    for path in ["/metrics", "/v1/openapi.json"] {
        assert_eq!(
            status(&http, format!("{}{path}", origin.url)).await.0,
            200,
            "{path}"
        );
    }
}
