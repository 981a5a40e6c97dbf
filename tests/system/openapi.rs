//! `/v1/openapi.json` lists every route the router serves, and the router serves every route it
//! lists: the document is generated from the same route list that builds the router
//! (`server::openapi::routes`), and this test probes each documented operation on a real
//! server. The document is one tools can test against: every operation has a unique
//! `operationId`, request and response bodies carry schemas, and auth is the `bearer` security
//! scheme, never an `Authorization` header parameter.

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
    let doc: Value = crate::support::get(format!("{}/v1/openapi.json", origin.url))
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
    let http = crate::support::http();
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

/// Operations that take publisher credentials.
const GUARDED: &[(&str, &str)] = &[
    ("post", "/v1/events"),
    ("put", "/v1/datasets/{name}/{key}"),
    ("delete", "/v1/datasets/{name}/{key}"),
    ("post", "/v1/webhooks"),
    ("get", "/v1/webhooks"),
    ("get", "/v1/webhooks/{id}"),
    ("patch", "/v1/webhooks/{id}"),
    ("delete", "/v1/webhooks/{id}"),
    // Publishing over the socket takes the upgrade request's credentials.
    ("get", "/v1/ws"),
];

/// Follows a local `$ref` (`#/components/schemas/X`) to the schema it names.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r
                .strip_prefix("#/components/schemas/")
                .expect("a local ref");
            let target = &doc["components"]["schemas"][name];
            assert!(target.is_object(), "{r} is not in components.schemas");
            target
        }
        None => schema,
    }
}

#[tokio::test]
async fn the_document_has_ids_schemas_and_a_bearer_scheme() {
    let origin = TestOrigin::start(crate::support::memory_settings()).await;
    let doc: Value = crate::support::get(format!("{}/v1/openapi.json", origin.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    origin.stop().await;

    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(bearer["type"], "http", "{bearer}");
    assert_eq!(bearer["scheme"], "bearer", "{bearer}");
    let error = resolve(&doc, &doc["components"]["schemas"]["Error"]);
    assert!(error["properties"]["error"].is_object(), "{error}");

    let mut ids = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap_or_default();
            assert!(!id.is_empty(), "{method} {path} has no operationId");
            ids.push(id.to_owned());
            for p in op["parameters"].as_array().into_iter().flatten() {
                assert!(
                    !p["name"]
                        .as_str()
                        .unwrap()
                        .eq_ignore_ascii_case("authorization"),
                    "{method} {path} declares auth as a header parameter, not a security scheme"
                );
                assert!(p["schema"].is_object(), "{method} {path}: {p}");
            }
            let guarded = GUARDED.iter().any(|(m, p)| m == method && p == path);
            let schemes: Vec<&str> = op["security"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r.as_object())
                .flat_map(|r| r.keys().map(String::as_str))
                .collect();
            assert_eq!(
                schemes.contains(&"bearer"),
                guarded,
                "{method} {path}: security {}",
                op["security"]
            );
            if ["post", "put", "patch"].contains(&method.as_str()) {
                let schema = &op["requestBody"]["content"]["application/json"]["schema"];
                let schema = resolve(&doc, schema);
                assert!(
                    path.contains("{key}") || schema.as_object().is_some_and(|s| !s.is_empty()),
                    "{method} {path}: the request body has no schema"
                );
            }
            for (status, response) in op["responses"].as_object().unwrap() {
                if !status.starts_with('2') || status == "204" {
                    continue;
                }
                let content = response["content"].as_object();
                let (kind, media) = content
                    .and_then(|c| c.iter().next())
                    .unwrap_or_else(|| panic!("{method} {path} {status} has no content"));
                let schema = resolve(&doc, &media["schema"]);
                if kind == "application/json" && path != "/v1/openapi.json" {
                    assert!(
                        schema["properties"].is_object() || schema["oneOf"].is_array(),
                        "{method} {path} {status}: no response schema: {schema}"
                    );
                }
            }
        }
    }
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "operation ids are unique");
}

/// The validator `cargo xtask test` installs (PyPI's `openapi-spec-validator`, in a virtualenv
/// under the target directory, named by `SSEPUSH_OPENAPI_SPEC_VALIDATOR`), or one on the PATH.
fn openapi_spec_validator() -> std::path::PathBuf {
    std::env::var_os("SSEPUSH_OPENAPI_SPEC_VALIDATOR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "openapi-spec-validator".into())
}

#[tokio::test]
async fn both_documents_pass_openapi_spec_validator() {
    let origin = TestOrigin::start(crate::support::memory_settings()).await;
    let proxy = crate::support::proxy::TestProxy::start(
        crate::support::proxy::proxy_settings(&[]),
        crate::support::proxy::Recorder::new(),
    )
    .await;
    for (name, url) in [("origin", &origin.url), ("proxy", &proxy.url)] {
        let text = crate::support::get(format!("{url}/v1/openapi.json"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let file = std::env::temp_dir().join(format!(
            "ssepush-openapi-{name}-{}.json",
            std::process::id()
        ));
        std::fs::write(&file, &text).unwrap();
        let validator = openapi_spec_validator();
        let out = std::process::Command::new(&validator)
            .arg(&file)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}): `cargo xtask test` installs it (PyPI's \
                     openapi-spec-validator); this test does not skip",
                    validator.display()
                )
            });
        let _ = std::fs::remove_file(&file);
        assert!(
            out.status.success(),
            "the {name}'s document is not valid OpenAPI:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    proxy.stop().await;
    origin.stop().await;
}
