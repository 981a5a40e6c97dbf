//! `/v1/openapi.json` lists every route the router serves, and the router serves every route it
//! lists: the document is generated from the same route list that builds the router
//! (`server::routes`), and this test probes each documented operation on a real server.

use crate::support::TestOrigin;
use serde_json::Value;

/// Every route of the origin's API (README, "The origin API").
const REQUIRED: &[(&str, &str)] = &[
    ("post", "/v1/events"),
    ("get", "/v1/sse"),
    ("get", "/v1/ws"),
    ("get", "/v1/poll"),
    ("get", "/v1/channels/{channel}/latest"),
    ("get", "/v1/datasets/{name}"),
    ("put", "/v1/datasets/{name}/{key}"),
    ("delete", "/v1/datasets/{name}/{key}"),
    ("post", "/v1/webhooks"),
    ("get", "/v1/webhooks"),
    ("get", "/v1/webhooks/{id}"),
    ("patch", "/v1/webhooks/{id}"),
    ("delete", "/v1/webhooks/{id}"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/v1/openapi.json"),
    ("get", "/"),
];

#[tokio::test]
async fn the_document_and_the_router_agree() {
    let origin = TestOrigin::start(crate::support::memory_settings()).await;
    let doc: Value = reqwest::get(format!("{}/v1/openapi.json", origin.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    let mut documented = Vec::new();
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{method} {path} has no summary"
            );
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path} has no responses"
            );
            documented.push((method.clone(), path.clone()));
        }
    }
    for (method, path) in REQUIRED {
        assert!(
            documented.iter().any(|(m, p)| m == method && p == path),
            "{method} {path} is not documented"
        );
    }

    // Each documented operation is served: neither the router's 404 fallback nor its 405.
    let http = reqwest::Client::new();
    for (method, path) in &documented {
        let concrete = path
            .replace("{channel}", "chat.a")
            .replace("{name}", "doc")
            .replace("{key}", "k1")
            .replace("{id}", "no-such-id");
        let url = format!("{}{concrete}", origin.url);
        let req = match method.as_str() {
            "get" => http.get(&url),
            "post" => http.post(&url).body("{}"),
            "put" => http.put(&url).body("1"),
            "patch" => http.patch(&url).body("{}"),
            "delete" => http.delete(&url),
            other => panic!("unexpected method {other}"),
        };
        let resp = tokio::time::timeout(std::time::Duration::from_secs(5), req.send())
            .await
            .expect("no answer")
            .unwrap();
        let status = resp.status().as_u16();
        assert_ne!(
            status, 405,
            "{method} {path}: the router does not take this method"
        );
        if status == 404 {
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            assert_ne!(
                body["error"]["code"], "not_found",
                "{method} {path}: documented but not routed"
            );
        }
    }
    origin.stop().await;
}
