//! The proxy's HTTP API (`docs/protocol.md`, "The handoff API"): create a handoff, read its
//! status, catch up on its events, hand it back; plus `/healthz`, `/readyz`, `/metrics`.
//!
//! Two kinds of credentials, never logged:
//! * creating a handoff takes the app backend's API key or HS256 JWT
//!   ([`crate::auth::HandoffAuth`]);
//! * reading or handing back one takes that handoff's own token, returned once at creation, as
//!   `Authorization: Bearer <token>`. An unknown id is a 404, a missing or wrong token a 401.
//!
//! Every bad input is a JSON 4xx from [`ApiError`]; nothing here panics on client input.

use std::sync::Arc;

use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use ssepush_origin::EventId;
use ssepush_origin::service::auth::bearer_token;
use ssepush_origin::service::error::ApiError;
use ssepush_origin::service::ops;
use ssepush_origin::sse;

use crate::handoff::HandoffError;
use crate::live::LiveHandoff;
use crate::node::Node;
use crate::openapi::ApiDoc;
use crate::protocol::schema::{ErrorBody, Health};
use crate::protocol::{
    self, CatchUp, Handback, HandoffCreated, HandoffRequest, HandoffStatus, PushTarget, Readiness,
};
use crate::store::{HandoffRecord, StoreError};
use crate::token::{Token, new_id};

/// `Retry-After` of a 503 `node_full`: handoffs expire and hand back all the time, so room
/// comes back soon; a fleet's load balancer may send the retry to another node.
const NODE_FULL_RETRY_AFTER_SECS: u16 = 5;

/// The route list: every operation with its handler. The router and the API document are
/// both built from it, so the document lists exactly what is served.
pub fn routes() -> OpenApiRouter<Arc<Node>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(create))
        .routes(routes!(get_status, handback))
        .routes(routes!(events))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
}

/// The API document served at `/v1/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}

/// The proxy's router: [`routes`], JSON 404/405s, the body limit, CORS.
pub fn router(node: Arc<Node>) -> Router {
    let limit = node.settings.max_body_bytes;
    let (router, doc) = routes().split_for_parts();
    let cors = ssepush_origin::service::cors::layer(
        &node.settings.cors_allow_origins,
        crate::openapi::methods(&doc),
    );
    let doc = Arc::new(doc);
    let mut router = router;
    if node.settings.admin_listen.is_some() {
        // `/metrics` and this document live on the admin listener only.
        router = router.layer(axum::middleware::from_fn(
            ssepush_origin::service::admin::hide_admin_paths,
        ));
    }
    let router = router
        .layer(axum::Extension(doc))
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            ssepush_origin::service::body::BodyLimits {
                deadline: std::time::Duration::from_secs(node.settings.body_read_timeout_secs),
                max_bytes: limit,
            },
            ssepush_origin::service::body::read_body,
        ))
        .with_state(node);
    match cors {
        Some(layer) => router.layer(layer),
        None => router,
    }
}

fn handoff_error(e: HandoffError) -> ApiError {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let details = match &e {
        HandoffError::BadFilter(f) => Some(json!({"line": f.line, "column": f.column})),
        _ => None,
    };
    ApiError {
        details,
        ..ApiError::new(status, e.code(), e.to_string())
    }
}

/// `POST /v1/handoffs`.
#[utoipa::path(
    post,
    path = "/v1/handoffs",
    operation_id = "createHandoff",
    tag = "handoffs",
    summary = "Hand a stream off",
    description = "The proxy watches the stream from `stream.lastEventId` and wakes the phone \
                   through `push` when an event passes `wake.filter`. Needs the app backend's \
                   API key or JWT unless creation is open (a loopback proxy without `[auth]`).",
    request_body = HandoffRequest,
    security((), ("apiKey" = [])),
    responses(
        (status = 201, description = "Watching; the token is shown only here", body = HandoffCreated,
         headers(("Location" = String, description = "`/v1/handoffs/{id}`"))),
        (status = 400, description = "Invalid request (a filter error carries `line` and `column`; a Web Push endpoint the proxy may not reach is `push_endpoint_not_allowed`)", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key / JWT", body = ErrorBody),
        (status = 403, description = "Stream URL outside allowed_origins, or creation disabled", body = ErrorBody),
        (status = 413, description = "Body larger than max_body_bytes", body = ErrorBody),
        (status = 422, description = "No push provider configured for the platform", body = ErrorBody),
        (status = 429, description = "This API key or JWT subject creates handoffs too fast (`Retry-After`)", body = ErrorBody),
        (status = 503, description = "Node full or draining", body = ErrorBody),
    )
)]
async fn create(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if let Err(e) = node.auth.check_create(&headers) {
        if e.status != StatusCode::TOO_MANY_REQUESTS {
            return Err(e);
        }
        let secs = e
            .details
            .as_ref()
            .and_then(|d| d["retryAfterSecs"].as_u64())
            .unwrap_or(1);
        let mut resp = e.into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return Ok(resp);
    }
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
    let (mut spec, cursor) = crate::handoff::validate(req, &node.settings, &node.allow, |t| {
        node.providers.supports(t)
    })
    .map_err(handoff_error)?;
    spec.stream = node.streams.share(spec.stream);
    // Where a Web Push wake may go needs a lookup: outside `validate`, which touches no network.
    if let PushTarget::Webpush { subscription } = &spec.push.0 {
        node.push_policy
            .check(&subscription.endpoint)
            .await
            .map_err(|e| handoff_error(HandoffError::PushEndpointNotAllowed(e)))?;
    }
    // This node is at max_handoffs: another node, or this one later, has room.
    let node_full = |e: StoreError| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "node_full",
            format!("{e}; hand off to another node or retry later"),
        )
        .retry_after(NODE_FULL_RETRY_AFTER_SECS)
    };
    if node.unfinished_count() >= node.settings.max_handoffs {
        return Err(node_full(StoreError::Full(node.settings.max_handoffs)));
    }
    let id = new_id();
    let token = Token::generate();
    let fence = node.creation_fence();
    let h = LiveHandoff::new(
        id.as_str().into(),
        token.hash(),
        spec,
        cursor,
        &node.settings,
        fence,
        &node.handoffs,
    );
    // A single node's memory store gets the record when the handoff ends (`crate::node`).
    if node.shared {
        node.store
            .insert(h.record(), &h.fence.node)
            .await
            .map_err(|e| match e {
                StoreError::Full(_) => node_full(e),
                _ => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    e.to_string(),
                ),
            })?;
    }
    node.add_live(h.clone());
    tracing::info!(parent: &h.span(), ?cursor, ttl_secs = h.spec.ttl_secs, "handoff created");
    replace_older(&node, &h).await;
    node.upstreams.join(&h.spec.stream, h.clone());
    crate::scheduler::start(&h);
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

/// The budget and the outstanding wake belong to the push target: a new handoff for a target
/// ends its oldest ones beyond `wake.max_handoffs_per_target` (here at once when this node owns
/// them; on another node, its next write or wake finds it replaced) and inherits the hourly
/// budget of the newest one it replaced. A store that does not answer leaves both handoffs be.
async fn replace_older(node: &Node, h: &Arc<LiveHandoff>) {
    let target = crate::store::target_digest(&h.spec.push.0);
    let cap = node.settings.wake.max_handoffs_per_target;
    let evicted = match node.store.claim_target(&target, &h.id, cap).await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(parent: &h.span(), error = %e, "cannot record the handoff's push target");
            return;
        }
    };
    for old in &evicted {
        if let Some(o) = node.get_live(old) {
            o.replaced();
            node.teardown(&o).await;
        }
        metrics::counter!("ssepush_proxy_handoffs_replaced_total").increment(1);
    }
    if let Some(newest) = evicted.last()
        && let Ok(Some(o)) = node.store.get(newest).await
    {
        h.inherit_budget(&o.rec.wake_times_ms);
    }
}

/// Where a handoff's call is answered.
enum Found {
    /// This node owns it.
    Local(Arc<LiveHandoff>),
    /// It has ended and no node drives it: the stored record answers.
    Stored(Box<HandoffRecord>),
    /// Another node owns it: its answer, forwarded.
    Forwarded(Response),
}

/// The header a forwarded call carries (the forwarding node's id): the owner answers it
/// itself or refuses, never forwards again.
const FORWARDED: &str = "ssepush-forwarded";

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such handoff")
}

fn moving(message: &str) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "handoff_moving", message)
}

/// Finds the handoff and checks its token. On a fleet, a handoff another node owns is
/// answered by that node: the call is forwarded to the address it registered (`method`,
/// `path_and_query` and the caller's headers that matter), once.
async fn authorize(
    node: &Node,
    id: &str,
    headers: &HeaderMap,
    method: reqwest::Method,
    path_and_query: &str,
) -> Result<Found, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(bearer_token)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this handoff's token is required: 'Authorization: Bearer <token>'",
            )
        })?;
    let wrong_token = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the token is not this handoff's",
        )
    };
    if let Some(h) = node.get_live(id) {
        if !h.verify_token(token) {
            return Err(wrong_token());
        }
        return Ok(Found::Local(h));
    }
    // Not live here: a handoff of another node (a fleet), or one that ended and left the live
    // map with its final record in the store (any store).
    let stored = node
        .store
        .get(id)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                e.to_string(),
            )
        })?
        .ok_or_else(not_found)?;
    let verified = crate::token::TokenHash::from_hex(&stored.rec.token_sha256)
        .is_some_and(|hash| hash.verify(token));
    if !verified {
        return Err(wrong_token());
    }
    if stored.rec.state.is_terminal() {
        return Ok(Found::Stored(Box::new(stored.rec)));
    }
    if !node.shared {
        return Err(not_found());
    }
    if headers.contains_key(FORWARDED) {
        return Err(moving("the handoff is changing nodes; retry"));
    }
    let Some(owner) = stored.owner else {
        return Err(moving("the handoff is changing nodes; retry"));
    };
    let fleet = node.store.fleet().await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            e.to_string(),
        )
    })?;
    let Some(peer) = fleet
        .nodes
        .into_iter()
        .find(|n| n.node == owner && n.expires_in_ms >= 0)
    else {
        return Err(moving(
            "the handoff's node is gone; another takes it over shortly, retry",
        ));
    };
    let mut req = node
        .peers
        .request(method, format!("{}{path_and_query}", peer.addr))
        .header(FORWARDED, &*node.node_id());
    for name in [header::AUTHORIZATION, header::ACCEPT] {
        if let Some(v) = headers.get(&name) {
            req = req.header(name, v);
        }
    }
    if let Some(v) = headers.get("last-event-id") {
        req = req.header("last-event-id", v);
    }
    let resp = req.send().await.map_err(|_| {
        moving("the handoff's node does not answer; retry (another takes it over if it is gone)")
    })?;
    let status = resp.status();
    let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
    let body = resp
        .bytes()
        .await
        .map_err(|_| moving("the handoff's node broke off its answer; retry"))?;
    let mut out = (status, body).into_response();
    if let Some(ct) = content_type {
        out.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    out.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(Found::Forwarded(out))
}

fn path_and_query(path: String, query: Option<&str>) -> String {
    match query {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path,
    }
}

/// Unix milliseconds as a wire time (every time the proxy keeps is far inside chrono's range).
fn wire_time(ms: u64) -> chrono::DateTime<chrono::Utc> {
    protocol::time::from_unix_ms(ms).unwrap_or_default()
}

/// The status view of a record (`docs/protocol.md`, `GET /v1/handoffs/{id}`).
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
#[utoipa::path(
    get,
    path = "/v1/handoffs/{id}",
    operation_id = "getHandoff",
    tag = "handoffs",
    summary = "A handoff's status",
    params(("id" = String, Path, description = "The handoff's id")),
    security(("handoffToken" = [])),
    responses(
        (status = 200, description = "Its state, cursor, newest id, pending events and wakes", body = HandoffStatus),
        (status = 401, description = "Missing or wrong handoff token", body = ErrorBody),
        (status = 404, description = "No such handoff", body = ErrorBody),
    )
)]
async fn get_status(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let path = format!("/v1/handoffs/{id}");
    let rec = match authorize(&node, &id, &headers, reqwest::Method::GET, &path).await? {
        Found::Local(h) => h.record(),
        Found::Stored(rec) => *rec,
        Found::Forwarded(resp) => return Ok(resp),
    };
    Ok(axum::Json(status(&rec)).into_response())
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
#[utoipa::path(
    get,
    path = "/v1/handoffs/{id}/events",
    operation_id = "catchUpHandoff",
    tag = "handoffs",
    summary = "Catch up: the buffered events after the cursor (a check-in)",
    description = "`Last-Event-ID` (wins) or `?after=` acknowledges everything up to that id. \
                   A gap comes first when the buffer cannot vouch for completeness (SSE: an \
                   `ssepush.reset` frame without id).",
    params(
        ("id" = String, Path, description = "The handoff's id"),
        ("after" = Option<String>, Query, description = "The phone's last event id"),
        ("Last-Event-ID" = Option<String>, Header, description = "The phone's last event id (wins over `after`)"),
    ),
    security(("handoffToken" = [])),
    responses(
        (status = 200, description = "The events, after a gap marker when there is one",
         content((CatchUp = "application/json"), (String = "text/event-stream"))),
        (status = 400, description = "The position is not an event id", body = ErrorBody),
        (status = 401, description = "Missing or wrong handoff token", body = ErrorBody),
        (status = 404, description = "No such handoff", body = ErrorBody),
    )
)]
async fn events(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let after = position(&headers, query.as_deref())?;
    let path = path_and_query(format!("/v1/handoffs/{id}/events"), query.as_deref());
    let h = match authorize(&node, &id, &headers, reqwest::Method::GET, &path).await? {
        Found::Local(h) => h,
        Found::Forwarded(resp) => return Ok(resp),
        Found::Stored(_) => {
            return Err(ApiError::new(
                StatusCode::GONE,
                "handoff_ended",
                "the handoff has ended; resume at the origin from your cursor",
            ));
        }
    };
    let catchup = h.check_in(after);
    tracing::debug!(
        parent: &h.span(),
        events = catchup.events.len(),
        gap = catchup.gap.is_some(),
        "check-in"
    );
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
#[utoipa::path(
    delete,
    path = "/v1/handoffs/{id}",
    operation_id = "handBack",
    tag = "handoffs",
    summary = "Hand the stream back; returns the final cursor",
    params(
        ("id" = String, Path, description = "The handoff's id"),
        ("after" = Option<String>, Query, description = "The phone's last event id"),
        ("Last-Event-ID" = Option<String>, Header, description = "The phone's last event id (wins over `after`)"),
    ),
    security(("handoffToken" = [])),
    responses(
        (status = 200, description = "Closed; resume at the origin from `cursor`", body = Handback),
        (status = 400, description = "The position is not an event id", body = ErrorBody),
        (status = 401, description = "Missing or wrong handoff token", body = ErrorBody),
        (status = 404, description = "No such handoff", body = ErrorBody),
    )
)]
async fn handback(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let after = position(&headers, query.as_deref())?;
    let path = path_and_query(format!("/v1/handoffs/{id}"), query.as_deref());
    let h = match authorize(&node, &id, &headers, reqwest::Method::DELETE, &path).await? {
        Found::Local(h) => h,
        Found::Forwarded(resp) => return Ok(resp),
        Found::Stored(rec) => {
            return Ok(axum::Json(Handback {
                cursor: rec.cursor,
                state: rec.state,
            })
            .into_response());
        }
    };
    let cursor = h.close(after);
    // At once rather than when the scheduler gets to it: the connection closes before the
    // answer.
    node.teardown(&h).await;
    tracing::info!(parent: &h.span(), ?cursor, "handed back");
    Ok(axum::Json(Handback {
        cursor,
        state: h.state().wire(),
    })
    .into_response())
}

/// `GET /readyz`.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "ops",
    summary = "Readiness: takes handoffs",
    responses(
        (status = 200, description = "Ready, with the handoffs held and the watchers open", body = Readiness),
        (status = 503, description = "Draining, or the handoff store is unavailable", body = Readiness),
    )
)]
async fn readyz(State(node): State<Arc<Node>>) -> Response {
    if node.shutdown.is_cancelled() {
        return ops::Readiness::Draining.into_response();
    }
    // A single node's memory store holds only finished handoffs (`crate::node`): its live
    // ones are counted where they are.
    let held = if node.shared {
        node.store.count().await
    } else {
        Ok(node.live_count())
    };
    match held {
        Ok(n) => axum::Json(Readiness {
            status: "ready".to_owned(),
            handoffs: Some(n),
            watchers: Some(node.upstreams.watcher_count()),
            error: None,
        })
        .into_response(),
        Err(e) => ops::Readiness::StoreUnavailable(e.to_string()).into_response(),
    }
}

/// `GET /healthz`: the service layer's liveness answer.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "ops",
    summary = "Liveness: the process answers",
    responses((status = 200, description = "Alive", body = Health))
)]
async fn healthz() -> impl IntoResponse {
    ops::healthz().await
}

/// `GET /metrics`: the service layer's Prometheus exposition.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "ops",
    summary = "Prometheus metrics",
    responses((status = 200, description = "The Prometheus text format (0.0.4)", body = String, content_type = "text/plain"))
)]
async fn metrics() -> Response {
    ops::metrics().await
}

/// `GET /v1/openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    operation_id = "openapi",
    tag = "ops",
    summary = "This API description (OpenAPI 3.1)",
    responses((status = 200, description = "The document", body = Object))
)]
async fn openapi_json(
    axum::Extension(doc): axum::Extension<Arc<utoipa::openapi::OpenApi>>,
) -> Response {
    axum::Json(doc.as_ref().clone()).into_response()
}
