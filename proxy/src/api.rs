//! The proxy's HTTP API (SPEC §5): create a handoff, read its status, catch up on its events,
//! hand it back; plus `/healthz`, `/readyz`, `/metrics`.
//!
//! Two kinds of credentials, never logged:
//! * creating a handoff takes the app backend's API key or HS256 JWT ([`HandoffAuth`]);
//! * reading or handing back one takes that handoff's own token, returned once at creation, as
//!   `Authorization: Bearer <token>`. An unknown id is a 404, a missing or wrong token a 401.
//!
//! Every bad input is a JSON 4xx from [`ApiError`]; nothing here panics on client input.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use ssepush_origin::EventId;
use ssepush_origin::server::auth::{PublishPolicy, PublisherAuth};
use ssepush_origin::server::error::ApiError;
use ssepush_origin::sse;

use crate::handoff::{HandoffError, Token, new_id};
use crate::live::{LiveHandoff, spawn_driver};
use crate::protocol::{self, Handback, HandoffCreated, HandoffRequest, HandoffStatus, Readiness};
use crate::server::Node;
use crate::store::HandoffRecord;

/// Who may create handoffs (see `settings` for the policy). Reuses the origin's credential
/// checks (constant-time key comparison, JWT validation) with the proxy's own messages.
pub struct HandoffAuth {
    inner: PublisherAuth,
}

impl HandoffAuth {
    pub fn new(
        s: &crate::settings::AuthSettings,
        bound: std::net::SocketAddr,
    ) -> Result<Self, String> {
        let origin = ssepush_origin::settings::AuthSettings {
            publish_tokens: s.api_keys.clone(),
            jwt_hs256_secret: s.jwt_hs256_secret.clone(),
            jwt_es256_public_key: None,
            jwt_issuer: s.jwt_issuer.clone(),
            jwt_audience: s.jwt_audience.clone(),
            allow_anonymous_publish: s.allow_anonymous,
        };
        let inner = PublisherAuth::new(&origin, bound)
            .map_err(|e| e.replace("auth.publish_tokens", "auth.api_keys"))?;
        Ok(HandoffAuth { inner })
    }

    fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let anonymous = match self.inner.policy() {
            PublishPolicy::Open => return Ok(()),
            PublishPolicy::Refused => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "handoffs_disabled",
                    "creating handoffs is disabled: this proxy listens on a non-loopback address \
                     and has no [auth] configured; set auth.api_keys or auth.jwt_hs256_secret, \
                     or auth.allow_anonymous = true",
                ));
            }
            PublishPolicy::Checked { anonymous } => anonymous,
        };
        let denied = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        match headers.get(header::AUTHORIZATION) {
            None if anonymous => Ok(()),
            None => Err(denied(
                "creating a handoff requires 'Authorization: Bearer <api key or JWT>'",
            )),
            Some(v) => {
                let token = bearer(v)
                    .ok_or_else(|| denied("the Authorization header must be 'Bearer <token>'"))?;
                self.inner.verify(token).map_err(|reason| {
                    tracing::debug!(?reason, "handoff creation refused");
                    metrics::counter!("ssepush_proxy_auth_denied_total").increment(1);
                    denied("the API key or JWT is not valid")
                })
            }
        }
    }
}

fn bearer(v: &HeaderValue) -> Option<&str> {
    let v = v.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

pub fn router(node: Arc<Node>) -> Router {
    let limit = node.settings.max_body_bytes;
    let cors = ssepush_origin::server::cors::layer(&node.settings.cors_allow_origins, methods());
    let router = Router::new()
        .route("/v1/handoffs", axum::routing::post(create))
        .route("/v1/handoffs/{id}", get(get_status).delete(handback))
        .route("/v1/handoffs/{id}/events", get(events))
        .route("/healthz", get(ssepush_origin::server::ops::healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(ssepush_origin::server::ops::metrics))
        .route("/v1/openapi.json", get(|| async { axum::Json(openapi()) }))
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(node);
    match cors {
        Some(layer) => router.layer(layer),
        None => router,
    }
}

/// Every method the API document lists for a path: what CORS preflights allow.
fn methods() -> Vec<axum::http::Method> {
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

fn handoff_error(e: HandoffError) -> ApiError {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let details = match &e {
        HandoffError::BadFilter(f) => Some(json!({"line": f.line, "column": f.column})),
        _ => None,
    };
    ApiError {
        status,
        code: e.code(),
        message: e.to_string(),
        details,
    }
}

/// `POST /v1/handoffs`.
async fn create(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    node.auth.check(&headers)?;
    if node.shutdown.is_cancelled() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "this proxy is shutting down; hand off to another node",
        ));
    }
    let body = body.map_err(|e| {
        let status = e.status();
        ApiError::new(
            status,
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                "body_too_large"
            } else {
                "invalid_body"
            },
            e.body_text(),
        )
    })?;
    let req: HandoffRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("invalid handoff request: {e}"))
    })?;
    let spec = crate::handoff::validate(req, &node.settings, &node.allow, |t| {
        node.providers.supports(t)
    })
    .map_err(handoff_error)?;
    let id = new_id();
    let token = Token::generate();
    let h = LiveHandoff::new(id.clone(), token.hash(), spec, &node);
    node.store.insert(h.record()).await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            e.to_string(),
        )
    })?;
    node.live.write().unwrap().insert(id.clone(), h.clone());
    {
        let _e = h.span().enter();
        tracing::info!(cursor = ?h.spec.cursor, ttl_secs = h.spec.ttl_secs, "handoff created");
    }
    node.upstreams
        .join(&h.spec.stream, h.spec.cursor, h.clone());
    spawn_driver(node.clone(), h.clone());
    metrics::counter!("ssepush_proxy_handoffs_created_total").increment(1);
    let body = HandoffCreated {
        id: id.clone(),
        token: token.expose().to_owned(),
        expires_at: wire_time(h.expires_at_ms),
    };
    let mut resp = (StatusCode::CREATED, axum::Json(body)).into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/handoffs/{id}")) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// Finds the handoff and checks its token.
fn authorize(node: &Node, id: &str, headers: &HeaderMap) -> Result<Arc<LiveHandoff>, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such handoff");
    let h = node.get_live(id).ok_or_else(not_found)?;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(bearer)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this handoff's token is required: 'Authorization: Bearer <token>'",
            )
        })?;
    if !h.verify_token(token) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the token is not this handoff's",
        ));
    }
    Ok(h)
}

/// Unix milliseconds as a wire time (every time the proxy keeps is far inside chrono's range).
fn wire_time(ms: u64) -> chrono::DateTime<chrono::Utc> {
    protocol::time::from_unix_ms(ms).unwrap_or_default()
}

/// The status view of a record (SPEC §5).
pub fn status(r: &HandoffRecord) -> HandoffStatus {
    HandoffStatus {
        id: r.id.clone(),
        state: r.state,
        cursor: r.cursor,
        newest_id: r.newest_id,
        pending: r.pending,
        wakes_sent: r.wakes_sent,
        last_wake: r.last_wake.clone(),
        last_error: r.last_error.clone(),
        expires_at: wire_time(r.expires_at_ms),
    }
}

/// `GET /v1/handoffs/{id}`.
async fn get_status(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let h = authorize(&node, &id, &headers)?;
    Ok(axum::Json(status(&h.record())).into_response())
}

/// The device's position from `Last-Event-ID` (wins) or `?after=`.
fn position(headers: &HeaderMap, query: Option<&str>) -> Result<Option<EventId>, ApiError> {
    let mut raw: Option<String> = None;
    for pair in query.unwrap_or("").split('&') {
        if let Some(v) = pair.strip_prefix("after=")
            && !v.is_empty()
        {
            raw = Some(v.to_owned());
        }
    }
    if let Some(h) = headers.get("last-event-id") {
        let h = h
            .to_str()
            .map_err(|_| ApiError::bad_request("invalid_event_id", "Last-Event-ID is not ASCII"))?;
        if !h.trim().is_empty() {
            raw = Some(h.trim().to_owned());
        }
    }
    Ok(raw.as_deref().map(str::parse).transpose()?)
}

/// `GET /v1/handoffs/{id}/events`: JSON, or SSE with `Accept: text/event-stream`.
async fn events(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let h = authorize(&node, &id, &headers)?;
    let after = position(&headers, query.as_deref())?;
    let catchup = h.check_in(after);
    {
        let _e = h.span().enter();
        tracing::debug!(
            events = catchup.events.len(),
            gap = catchup.gap.is_some(),
            "check-in"
        );
    }
    node.persist(&h).await;
    let wants_sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if wants_sse {
        let mut body = bytes::BytesMut::new();
        body.extend_from_slice(&sse::encode_retry(1000));
        if let Some(gap) = &catchup.gap {
            // Like the origin's reset, it carries no id: the client's Last-Event-ID stays put.
            let data = serde_json::to_string(gap).unwrap_or_default();
            body.extend_from_slice(&sse::encode_frame(
                None,
                ssepush_origin::event::RESET_TYPE,
                data.as_bytes(),
            ));
        }
        for e in &catchup.events {
            body.extend_from_slice(&sse::encode_event(e));
        }
        return Ok((
            [
                (header::CONTENT_TYPE, "text/event-stream"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body.freeze(),
        )
            .into_response());
    }
    Ok(axum::Json(catchup).into_response())
}

/// `DELETE /v1/handoffs/{id}`: the handback.
async fn handback(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let h = authorize(&node, &id, &headers)?;
    let after = position(&headers, query.as_deref())?;
    let cursor = h.close(after);
    node.upstreams.leave(&h.spec.stream, &h.id);
    node.persist(&h).await;
    {
        let _e = h.span().enter();
        tracing::info!(?cursor, "handed back");
    }
    Ok(axum::Json(Handback {
        cursor,
        state: h.state().wire(),
    })
    .into_response())
}

async fn readyz(State(node): State<Arc<Node>>) -> Response {
    let answer = |status: &str| Readiness {
        status: status.to_owned(),
        handoffs: None,
        watchers: None,
        error: None,
    };
    if node.shutdown.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(answer("draining")),
        )
            .into_response();
    }
    match node.store.count().await {
        Ok(n) => axum::Json(Readiness {
            handoffs: Some(n),
            watchers: Some(node.upstreams.watcher_count()),
            ..answer("ready")
        })
        .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(Readiness {
                error: Some(e.to_string()),
                ..answer("store unavailable")
            }),
        )
            .into_response(),
    }
}

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

    #[test]
    fn bearer_parsing() {
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(bearer(&v("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&v("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(&v("Basic abc")), None);
        assert_eq!(bearer(&v("Bearer ")), None);
    }
}
