//! `/v1/webhooks[/{id}]`: register, list, inspect, change and delete webhooks.
//!
//! A thin shell over [`crate::webhooks`]: requests are parsed and validated here, records are
//! changed through [`WebhookService::update`](crate::webhooks::worker::WebhookService::update)
//! (revision-guarded, so a change never undoes a concurrent cursor advance), and the local
//! worker is poked so changes apply at once.
//!
//! Webhooks are an operator's tool (they make the origin send requests and receive every
//! matching event), so every endpoint takes the publisher credentials (`[auth]`).
//!
//! | call | body | answer |
//! |------|------|--------|
//! | `POST /v1/webhooks` | `{"url", "channels": [..], "filter"?, "from"?: "now" \| "<event id>"}` | 201, the webhook with its `secret` (shown only here) |
//! | `GET /v1/webhooks` | | `{"webhooks": [..]}`, no secrets |
//! | `GET /v1/webhooks/{id}` | | status: state, cursor, pending, failures, last error, times |
//! | `PATCH /v1/webhooks/{id}` | `{"url"?, "channels"?, "filter"?: CEL \| null, "enabled"?: bool}` | 200, the status |
//! | `DELETE /v1/webhooks/{id}` | | 204 |
//!
//! `from` defaults to `"now"`: only events published after registration are delivered. A given
//! event id delivers every retained event after it. A changed `channels`/`filter` applies to
//! the events after the cursor; `{"enabled": true}` resumes a disabled webhook from its cursor.
//! `{"enabled": false}` pauses a webhook (its cursor stays where it is).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::state::AppState;
use crate::clock::{now_ms, rfc3339};
use crate::event::EventId;
use crate::filter::Filter;
use crate::service::error::ApiError;
use crate::service::openapi::ErrorBody;
use crate::webhooks::store::{Insert, Versioned};
use crate::webhooks::{
    self, DeliveryState, InvalidWebhook, Record, Secret, Webhook, check_channels, check_url,
};

/// A webhook to register: where to deliver, which channels, an optional CEL filter, and
/// `from`, an event id to start after (default: the log's head).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    url: String,
    channels: Vec<String>,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    from: Option<String>,
}

/// The fields of a webhook to change; absent fields stay as they are.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchRequest {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    channels: Option<Vec<String>>,
    /// Absent: unchanged; `null`: removed; a string: replaced.
    #[serde(default, deserialize_with = "present")]
    filter: Option<Option<String>>,
    #[serde(default)]
    enabled: Option<bool>,
}

/// Tells a `null` apart from a missing field: a present field is `Some(value)`.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

impl From<InvalidWebhook> for ApiError {
    fn from(e: InvalidWebhook) -> Self {
        match e {
            InvalidWebhook::Url(m) => ApiError::bad_request("invalid_url", m),
            InvalidWebhook::Channels(m) => ApiError::bad_request("invalid_channel", m),
        }
    }
}

fn not_found(id: &str) -> ApiError {
    let shown: String = id.chars().take(64).collect();
    ApiError::new(
        StatusCode::NOT_FOUND,
        "webhook_not_found",
        format!("no webhook {shown:?}"),
    )
}

fn service(st: &AppState) -> Result<&std::sync::Arc<webhooks::worker::WebhookService>, ApiError> {
    st.webhooks.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "webhooks_unavailable",
            "webhooks are not running on this origin",
        )
    })
}

async fn body_json<T: serde::de::DeserializeOwned>(
    st: &AppState,
    body: Body,
) -> Result<T, ApiError> {
    let limit = st.settings.max_body_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body is larger than {limit} bytes"),
        )
    })?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("body is not valid JSON: {e}"))
    })?;
    serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request("invalid_webhook", e.to_string()))
}

fn compile_filter(filter: Option<&str>) -> Result<(), ApiError> {
    if let Some(f) = filter {
        Filter::compile(f)?;
    }
    Ok(())
}

async fn check_target(st: &AppState, url: &str) -> Result<(), ApiError> {
    let allow = st.settings.webhooks.allow_private_targets;
    let parsed = check_url(url, allow)?;
    webhooks::resolve_and_check(&parsed, allow).await?;
    Ok(())
}

/// A webhook as the API shows it: never the secret, except in the answer that creates it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    pub channels: Vec<String>,
    pub filter: Option<String>,
    /// `active` or `disabled`.
    pub state: &'static str,
    /// RFC 3339.
    pub created_at: Option<String>,
    /// The last event delivered (or skipped by the filter); delivery continues after it.
    #[schema(value_type = String)]
    pub cursor: EventId,
    /// Events delivered so far.
    pub delivered: u64,
    pub consecutive_failures: u32,
    /// RFC 3339, while failing.
    pub failing_since: Option<String>,
    pub last_error: Option<String>,
    pub last_attempt_at: Option<String>,
    pub last_success_at: Option<String>,
    pub disabled_at: Option<String>,
    /// The last time retention dropped events the webhook had not delivered.
    pub last_gap: Option<GapView>,
    /// Matching events waiting after the cursor (status reads only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<u64>,
    /// `pending` stopped counting at its cap: there are at least that many.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_is_lower_bound: Option<bool>,
    /// The signing secret (`whsec_…`), in the answer to `POST /v1/webhooks` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// A retention gap a webhook went through.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GapView {
    /// RFC 3339.
    pub at: Option<String>,
    #[schema(value_type = String)]
    pub cursor: EventId,
    #[schema(value_type = Option<String>)]
    pub oldest: Option<EventId>,
}

/// `GET /v1/webhooks`: every webhook, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookView>,
}

/// The public view of a webhook: never the secret.
fn view(record: &Record, pending: Option<(u64, bool)>) -> WebhookView {
    let (hook, s): (&Webhook, &DeliveryState) = (&record.hook, &record.state);
    WebhookView {
        id: hook.id.clone(),
        url: hook.url.clone(),
        channels: hook.channels.clone(),
        filter: hook.filter.clone(),
        state: if s.enabled { "active" } else { "disabled" },
        created_at: rfc3339(hook.created_at),
        cursor: s.cursor,
        delivered: s.delivered,
        consecutive_failures: s.consecutive_failures,
        failing_since: s.failing_since.and_then(rfc3339),
        last_error: s.last_error.clone(),
        last_attempt_at: s.last_attempt_at.and_then(rfc3339),
        last_success_at: s.last_success_at.and_then(rfc3339),
        disabled_at: s.disabled_at.and_then(rfc3339),
        last_gap: s.last_gap.map(|g| GapView {
            at: rfc3339(g.at),
            cursor: g.cursor,
            oldest: g.oldest,
        }),
        pending: pending.map(|(n, _)| n),
        pending_is_lower_bound: pending.map(|(_, capped)| capped),
        secret: None,
    }
}

/// Register a webhook; the response carries its signing secret, once
#[utoipa::path(
    post,
    path = "/v1/webhooks",
    tag = "webhooks",
    operation_id = "post_v1_webhooks",
    request_body(content = CreateRequest),
    responses(
        (status = 201, description = "the webhook with its secret", body = WebhookView),
        (status = 400, description = "invalid input; the error says what to fix", body = ErrorBody),
        (status = 401, description = "missing or invalid publisher credentials", body = ErrorBody),
        (status = 409, description = "too many webhooks", body = ErrorBody),
        (status = 503, description = "a store is unavailable; retry later", body = ErrorBody),
    ),
    security(("bearer" = []), ()),
)]
pub async fn create(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    st.auth.publisher(&headers, None)?;
    let svc = service(&st)?;
    let req: CreateRequest = body_json(&st, body).await?;
    let patterns = check_channels(&req.channels)?;
    // A webhook reads its channels on its owner's behalf: the owner must be allowed to.
    st.auth.reader(&headers, None)?.check_read(&patterns)?;
    compile_filter(req.filter.as_deref())?;
    check_target(&st, &req.url).await?;
    let newest = st.log.last_id().await?;
    let cursor = match req.from.as_deref() {
        None | Some("now") => newest,
        Some(id) => {
            let id: EventId = id.parse()?;
            match crate::store::resume_point(id, newest) {
                crate::store::Resume::From(from) => from,
                crate::store::Resume::Reset {
                    cause: crate::event::ResetCause::Ahead,
                    ..
                } => {
                    return Err(ApiError::bad_request(
                        "invalid_event_id",
                        format!("from {id} is newer than the newest event ({newest})"),
                    ));
                }
                crate::store::Resume::Reset { .. } => {
                    return Err(ApiError::bad_request(
                        "invalid_event_id",
                        format!(
                            "from {id} names another epoch of the log (its history was lost); \
                             use an id from this origin, \"0-0\" or \"now\""
                        ),
                    ));
                }
            }
        }
    };
    let secret = Secret::generate();
    let record = Record {
        hook: Webhook {
            id: Webhook::new_id(),
            url: req.url,
            channels: req.channels,
            filter: req.filter,
            secret: secret.clone(),
            created_at: now_ms(),
            version: 1,
        },
        state: DeliveryState::new(cursor),
    };
    match svc.register(&record).await? {
        Insert::Done => {}
        Insert::Full => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "too_many_webhooks",
                format!(
                    "this origin already holds {} webhooks (webhooks.max_webhooks)",
                    st.settings.webhooks.max_webhooks
                ),
            ));
        }
    }
    tracing::info!(webhook = %record.hook.id, channels = ?record.hook.channels, "webhook registered");
    let mut body = view(&record, None);
    // Shown once: receivers need it to verify signatures; it is never returned again.
    body.secret = Some(secret.expose().to_owned());
    let location = format!("/v1/webhooks/{}", record.hook.id);
    // It carries a secret: no cache (browser, proxy, CDN) may keep a copy.
    Ok((
        StatusCode::CREATED,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        Json(body),
    )
        .into_response())
}

/// List webhooks (no secrets)
#[utoipa::path(
    get,
    path = "/v1/webhooks",
    tag = "webhooks",
    operation_id = "get_v1_webhooks",
    responses(
        (status = 200, description = "the webhooks, oldest first", body = WebhookList),
        (status = 401, description = "missing or invalid publisher credentials", body = ErrorBody),
        (status = 503, description = "a store is unavailable; retry later", body = ErrorBody),
    ),
    security(("bearer" = []), ()),
)]
pub async fn list(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<WebhookList>, ApiError> {
    st.auth.publisher(&headers, None)?;
    let svc = service(&st)?;
    let mut all = svc.store().list().await?;
    all.sort_by(|a, b| {
        (a.record.hook.created_at, &a.record.hook.id)
            .cmp(&(b.record.hook.created_at, &b.record.hook.id))
    });
    let webhooks = all.iter().map(|v| view(&v.record, None)).collect();
    Ok(Json(WebhookList { webhooks }))
}

async fn found(st: &AppState, id: &str) -> Result<Versioned, ApiError> {
    if !Webhook::is_valid_id(id) {
        return Err(not_found(id));
    }
    service(st)?
        .store()
        .get(id)
        .await?
        .ok_or_else(|| not_found(id))
}

/// A webhook's status: cursor, pending, failures, last error
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    operation_id = "get_v1_webhooks_id",
    params(("id" = String, Path, description = "the webhook id")),
    responses(
        (status = 200, description = "the status", body = WebhookView),
        (status = 401, description = "missing or invalid publisher credentials", body = ErrorBody),
        (status = 404, description = "no such webhook", body = ErrorBody),
        (status = 503, description = "a store is unavailable; retry later", body = ErrorBody),
    ),
    security(("bearer" = []), ()),
)]
pub async fn show(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<WebhookView>, ApiError> {
    st.auth.publisher(&headers, None)?;
    let v = found(&st, &id).await?;
    let pending = service(&st)?.pending(&v.record).await?;
    Ok(Json(view(&v.record, Some(pending))))
}

/// Change url, channels or filter; {"enabled": true} resumes a disabled webhook from its cursor
#[utoipa::path(
    patch,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    operation_id = "patch_v1_webhooks_id",
    params(("id" = String, Path, description = "the webhook id")),
    request_body(content = PatchRequest, description = "the fields to change"),
    responses(
        (status = 200, description = "the webhook", body = WebhookView),
        (status = 400, description = "invalid input; the error says what to fix", body = ErrorBody),
        (status = 401, description = "missing or invalid publisher credentials", body = ErrorBody),
        (status = 404, description = "no such webhook", body = ErrorBody),
        (status = 503, description = "a store is unavailable; retry later", body = ErrorBody),
    ),
    security(("bearer" = []), ()),
)]
pub async fn update(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<WebhookView>, ApiError> {
    st.auth.publisher(&headers, None)?;
    let svc = service(&st)?;
    if !Webhook::is_valid_id(&id) {
        return Err(not_found(&id));
    }
    let req: PatchRequest = body_json(&st, body).await?;
    if let Some(channels) = &req.channels {
        let patterns = check_channels(channels)?;
        st.auth.reader(&headers, None)?.check_read(&patterns)?;
    }
    if let Some(filter) = &req.filter {
        compile_filter(filter.as_deref())?;
    }
    if let Some(url) = &req.url {
        check_target(&st, url).await?;
    }
    let now = now_ms();
    let changed = svc
        .update(&id, false, |r| {
            let before = (
                r.hook.url.clone(),
                r.hook.channels.clone(),
                r.hook.filter.clone(),
            );
            if let Some(url) = &req.url {
                r.hook.url = url.clone();
            }
            if let Some(channels) = &req.channels {
                r.hook.channels = channels.clone();
            }
            if let Some(filter) = &req.filter {
                r.hook.filter = filter.clone();
            }
            if (&r.hook.url, &r.hook.channels, &r.hook.filter) != (&before.0, &before.1, &before.2)
            {
                r.hook.version += 1;
            }
            match req.enabled {
                Some(true) if !r.state.enabled => r.state.enable(),
                Some(false) => r.state.disable(now),
                _ => {}
            }
        })
        .await?;
    let Some((v, ())) = changed else {
        return Err(not_found(&id));
    };
    svc.poke(&id);
    tracing::info!(webhook = %id, state = if v.record.state.enabled { "active" } else { "disabled" }, "webhook changed");
    let pending = svc.pending(&v.record).await?;
    Ok(Json(view(&v.record, Some(pending))))
}

/// Delete a webhook
#[utoipa::path(
    delete,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    operation_id = "delete_v1_webhooks_id",
    params(("id" = String, Path, description = "the webhook id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 401, description = "missing or invalid publisher credentials", body = ErrorBody),
        (status = 404, description = "no such webhook", body = ErrorBody),
        (status = 503, description = "a store is unavailable; retry later", body = ErrorBody),
    ),
    security(("bearer" = []), ()),
)]
pub async fn remove(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    st.auth.publisher(&headers, None)?;
    let svc = service(&st)?;
    if !Webhook::is_valid_id(&id) || !svc.store().delete(&id).await? {
        return Err(not_found(&id));
    }
    svc.forget(&id);
    tracing::info!(webhook = %id, "webhook deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Starts delivering from `store` (called by `run_with_stores`). `None` (logged) when the
/// webhook settings are unusable: the rest of the origin still serves, and the webhook
/// endpoints answer 503.
pub fn start(
    settings: &crate::settings::Settings,
    store: std::sync::Arc<dyn webhooks::store::WebhookStore>,
    log: &std::sync::Arc<dyn crate::store::EventLog>,
    hub: &std::sync::Arc<crate::hub::Hub>,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Option<(
    std::sync::Arc<webhooks::worker::WebhookService>,
    tokio::task::JoinHandle<()>,
)> {
    let svc = match webhooks::worker::WebhookService::new(
        store,
        log.clone(),
        hub.clone(),
        settings.webhooks.clone(),
        shutdown.clone(),
        settings.tls.extra_ca_path.as_deref(),
    ) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "webhooks are off");
            return None;
        }
    };
    let task = svc.start();
    Some((svc, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_tells_null_from_missing() {
        let p: PatchRequest = serde_json::from_str(r#"{"filter": null}"#).unwrap();
        assert_eq!(p.filter, Some(None));
        let p: PatchRequest = serde_json::from_str(r#"{"enabled": true}"#).unwrap();
        assert_eq!(p.filter, None);
        let p: PatchRequest = serde_json::from_str(r#"{"filter": "type == 'a'"}"#).unwrap();
        assert_eq!(p.filter, Some(Some("type == 'a'".into())));
        assert!(serde_json::from_str::<PatchRequest>(r#"{"colour": 1}"#).is_err());
    }

    #[test]
    fn views_never_show_the_secret() {
        let record = Record {
            hook: Webhook {
                id: Webhook::new_id(),
                url: "https://example.com/hook".into(),
                channels: vec!["a.>".into()],
                filter: None,
                secret: Secret::generate(),
                created_at: 0,
                version: 1,
            },
            state: DeliveryState::new(EventId::new(5, 1)),
        };
        let shown = serde_json::to_string(&view(&record, Some((3, false)))).unwrap();
        assert!(!shown.contains(record.hook.secret.expose()), "{shown}");
        assert!(!shown.contains("whsec_"), "{shown}");
        assert!(shown.contains("\"cursor\":\"5-1\""), "{shown}");
        assert!(shown.contains("\"pending\":3"), "{shown}");
    }
}
