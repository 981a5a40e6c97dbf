//! The proxy's API document, served at `/v1/openapi.json` (OpenAPI 3.1), and the methods CORS
//! preflights allow, taken from it.

use serde_json::json;

/// The API description served at `/v1/openapi.json` (OpenAPI 3.1).
pub fn openapi() -> serde_json::Value {
    let error = json!({"$ref": "#/components/schemas/Error"});
    let err =
        |d: &str| json!({"description": d, "content": {"application/json": {"schema": error}}});
    let id_param =
        json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}});
    let device = json!([{"handoffToken": []}]);
    json!({
        "openapi": "3.1.0",
        "info": {"title": "ssepush proxy", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Hand an SSE stream over to the proxy before sleeping; get woken by a push when an event arrives; catch up and hand it back."},
        "paths": {
            "/v1/handoffs": {"post": {
                "summary": "Hand a stream off",
                "security": [{"apiKey": []}, {}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HandoffRequest"}}}},
                "responses": {
                    "201": {"description": "Watching", "content": {"application/json": {"schema": {"type": "object", "required": ["id", "token", "expiresAt"], "properties": {
                        "id": {"type": "string"}, "token": {"type": "string", "description": "The device's secret for the calls below; shown once"},
                        "expiresAt": {"type": "string", "format": "date-time"}}}}}},
                    "400": err("Invalid request (filter errors carry line and column)"),
                    "401": err("Missing or invalid API key / JWT"),
                    "403": err("Stream URL outside allowed_origins, or creation disabled"),
                    "422": err("No push provider configured for the platform"),
                    "503": err("Node full or draining")}}},
            "/v1/handoffs/{id}": {
                "get": {"summary": "Status", "parameters": [id_param], "security": device,
                        "responses": {"200": {"description": "Status", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}}},
                                      "401": err("Missing or wrong handoff token"), "404": err("No such handoff")}},
                "delete": {"summary": "Hand the stream back; returns the final cursor", "parameters": [id_param], "security": device,
                           "responses": {"200": {"description": "Closed", "content": {"application/json": {"schema": {"type": "object", "properties": {"cursor": {"type": ["string", "null"]}, "state": {"type": "string"}}}}}},
                                         "401": err("Missing or wrong handoff token"), "404": err("No such handoff")}}},
            "/v1/handoffs/{id}/events": {"get": {
                "summary": "Buffered events after the cursor (a check-in). `Last-Event-ID` or `?after=` acknowledges up to that id.",
                "parameters": [id_param, {"name": "after", "in": "query", "schema": {"type": "string"}}, {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}}],
                "security": device,
                "responses": {"200": {"description": "Events; a gap first when the buffer cannot vouch for completeness (SSE: an `ssepush.reset` frame without id)",
                    "content": {"application/json": {"schema": {"type": "object", "properties": {
                        "gap": {"type": ["object", "null"]}, "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}, "cursor": {"type": ["string", "null"]}}}},
                        "text/event-stream": {"schema": {"type": "string"}}}},
                    "401": err("Missing or wrong handoff token"), "404": err("No such handoff")}}},
            "/healthz": {"get": {"responses": {"200": {"description": "Alive"}}}},
            "/readyz": {"get": {"responses": {"200": {"description": "Ready"}, "503": {"description": "Draining or store unavailable"}}}},
            "/metrics": {"get": {"responses": {"200": {"description": "Prometheus text"}}}}
        },
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "auth.api_keys or an HS256 JWT"},
                "handoffToken": {"type": "http", "scheme": "bearer", "description": "The token returned by POST /v1/handoffs"}},
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
                "Event": {"type": "object", "properties": {"id": {"type": "string"}, "channel": {"type": "string"}, "type": {"type": "string"}, "data": {}, "time": {"type": "integer"}}},
                "HandoffRequest": {"type": "object", "required": ["stream", "push"], "properties": {
                    "stream": {"type": "object", "required": ["url"], "properties": {"url": {"type": "string"}, "headers": {"type": "object", "additionalProperties": {"type": "string"}}, "lastEventId": {"type": ["string", "null"]}}},
                    "push": {"oneOf": [
                        {"type": "object", "required": ["platform", "token"], "properties": {"platform": {"const": "apns"}, "token": {"type": "string", "pattern": crate::push::apns::device_token_pattern()}, "topic": {"type": "string"}, "environment": {"enum": ["production", "sandbox", "development"]}}},
                        {"type": "object", "required": ["platform", "token"], "properties": {"platform": {"const": "fcm"}, "token": {"type": "string"}}},
                        {"type": "object", "required": ["platform", "subscription"], "properties": {"platform": {"const": "webpush"}, "subscription": {"type": "object", "description": "A W3C PushSubscription"}}}]},
                    "wake": {"type": "object", "properties": {"filter": {"type": "string", "description": "CEL over channel, type, id, data"}, "coalesceMs": {"type": "integer"}, "maxPerHour": {"type": "integer"}, "mode": {"enum": ["background", "alert"]}}},
                    "ttlSec": {"type": "integer"}}},
                "Status": {"type": "object", "properties": {
                    "id": {"type": "string"}, "state": {"enum": ["watching", "woken", "expired", "failed", "closed"]},
                    "cursor": {"type": ["string", "null"]}, "newestId": {"type": ["string", "null"]}, "pending": {"type": "integer"},
                    "wakesSent": {"type": "integer"}, "lastWake": {"type": ["object", "null"]}, "lastError": {"type": ["string", "null"]},
                    "expiresAt": {"type": "string", "format": "date-time"}}}
            }
        }
    })
}

/// Every method the API document lists for a path: what CORS preflights allow.
pub fn methods() -> Vec<axum::http::Method> {
    use axum::http::Method;
    // The operation keys of an OpenAPI path item; its other keys (`parameters`, …) are not methods.
    let known = [
        Method::GET,
        Method::PUT,
        Method::POST,
        Method::DELETE,
        Method::OPTIONS,
        Method::HEAD,
        Method::PATCH,
        Method::TRACE,
    ];
    let doc = openapi();
    let paths = doc["paths"]
        .as_object()
        .into_iter()
        .flat_map(|p| p.values());
    paths
        .filter_map(|item| item.as_object())
        .flat_map(|item| item.keys())
        .filter_map(|key| {
            known
                .iter()
                .find(|m| m.as_str().eq_ignore_ascii_case(key))
                .cloned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_names_every_route() {
        let doc = openapi();
        for path in [
            "/v1/handoffs",
            "/v1/handoffs/{id}",
            "/v1/handoffs/{id}/events",
            "/readyz",
        ] {
            assert!(doc["paths"][path].is_object(), "{path}");
        }
        assert_eq!(doc["openapi"], "3.1.0");
    }

    #[test]
    fn cors_methods_are_the_documented_ones() {
        use axum::http::Method;
        let m = methods();
        for want in [Method::GET, Method::POST, Method::DELETE] {
            assert!(m.contains(&want), "{want}");
        }
        assert!(!m.contains(&Method::PATCH));
    }

    #[test]
    fn the_apns_token_pattern_is_the_senders_rule() {
        let doc = openapi();
        let apns = &doc["components"]["schemas"]["HandoffRequest"]["properties"]["push"]["oneOf"]
            [0]["properties"]["token"]["pattern"];
        let pattern = regex::Regex::new(apns.as_str().expect("a pattern")).unwrap();
        let mut samples: Vec<String> = (0..=204).map(|n| "a".repeat(n)).collect();
        samples.extend([
            "0123456789abcdefABCDEF".into(),
            "zz".repeat(32),
            "ab cd".into(),
        ]);
        for token in &samples {
            assert_eq!(
                pattern.is_match(token),
                crate::push::apns::is_device_token(token),
                "{} characters: {token:?}",
                token.len()
            );
        }
        assert!(pattern.is_match(&"a1".repeat(80)));
    }
}
