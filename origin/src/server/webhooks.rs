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
use serde::Deserialize;
use serde_json::{Value, json};

use super::state::AppState;
use crate::clock::{now_ms, rfc3339};
use crate::event::EventId;
use crate::filter::Filter;
use crate::service::error::ApiError;
use crate::webhooks::store::{Insert, Versioned};
use crate::webhooks::{
    self, DeliveryState, InvalidWebhook, Record, Secret, Webhook, check_channels, check_url,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    url: String,
    channels: Vec<String>,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    from: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchRequest {
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

/// The public view of a webhook: never the secret.
fn view(record: &Record, pending: Option<(u64, bool)>) -> Value {
    let (hook, s): (&Webhook, &DeliveryState) = (&record.hook, &record.state);
    let mut v = json!({
        "id": hook.id,
        "url": hook.url,
        "channels": hook.channels,
        "filter": hook.filter,
        "state": if s.enabled { "active" } else { "disabled" },
        "createdAt": rfc3339(hook.created_at),
        "cursor": s.cursor,
        "delivered": s.delivered,
        "consecutiveFailures": s.consecutive_failures,
        "failingSince": s.failing_since.and_then(rfc3339),
        "lastError": s.last_error,
        "lastAttemptAt": s.last_attempt_at.and_then(rfc3339),
        "lastSuccessAt": s.last_success_at.and_then(rfc3339),
        "disabledAt": s.disabled_at.and_then(rfc3339),
        "lastGap": s.last_gap.map(|g| json!({
            "at": rfc3339(g.at),
            "cursor": g.cursor,
            "oldest": g.oldest,
        })),
    });
    if let (Some((n, capped)), Some(obj)) = (pending, v.as_object_mut()) {
        obj.insert("pending".into(), json!(n));
        obj.insert("pendingIsLowerBound".into(), json!(capped));
    }
    v
}

/// `POST /v1/webhooks`
pub async fn create(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    st.auth.check(&headers)?;
    let svc = service(&st)?;
    let req: CreateRequest = body_json(&st, body).await?;
    check_channels(&req.channels)?;
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
    if let Some(obj) = body.as_object_mut() {
        // Shown once: receivers need it to verify signatures; it is never returned again.
        obj.insert("secret".into(), json!(secret.expose()));
    }
    let location = format!("/v1/webhooks/{}", record.hook.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response())
}

/// `GET /v1/webhooks`
pub async fn list(State(st): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    st.auth.check(&headers)?;
    let svc = service(&st)?;
    let mut all = svc.store().list().await?;
    all.sort_by(|a, b| {
        (a.record.hook.created_at, &a.record.hook.id)
            .cmp(&(b.record.hook.created_at, &b.record.hook.id))
    });
    let hooks: Vec<Value> = all.iter().map(|v| view(&v.record, None)).collect();
    Ok(Json(json!({ "webhooks": hooks })))
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

/// `GET /v1/webhooks/{id}`
pub async fn show(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    st.auth.check(&headers)?;
    let v = found(&st, &id).await?;
    let pending = service(&st)?.pending(&v.record).await?;
    Ok(Json(view(&v.record, Some(pending))))
}

/// `PATCH /v1/webhooks/{id}`
pub async fn update(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    st.auth.check(&headers)?;
    let svc = service(&st)?;
    if !Webhook::is_valid_id(&id) {
        return Err(not_found(&id));
    }
    let req: PatchRequest = body_json(&st, body).await?;
    if let Some(channels) = &req.channels {
        check_channels(channels)?;
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

/// `DELETE /v1/webhooks/{id}`
pub async fn remove(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    st.auth.check(&headers)?;
    let svc = service(&st)?;
    if !Webhook::is_valid_id(&id) || !svc.store().delete(&id).await? {
        return Err(not_found(&id));
    }
    svc.forget(&id);
    tracing::info!(webhook = %id, "webhook deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Opens the webhook store the settings name and starts delivering (called by `run_with_log`).
/// `None` (logged) when that fails: the rest of the origin still serves, and the webhook
/// endpoints answer 503.
pub async fn start(
    settings: &crate::settings::Settings,
    log: &std::sync::Arc<dyn crate::store::EventLog>,
    hub: &std::sync::Arc<crate::hub::Hub>,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Option<(
    std::sync::Arc<webhooks::worker::WebhookService>,
    tokio::task::JoinHandle<()>,
)> {
    let store = match webhooks::store::open(&settings.store, &settings.namespace).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot open the webhook store; webhooks are off");
            return None;
        }
    };
    let svc = match webhooks::worker::WebhookService::new(
        store,
        log.clone(),
        hub.clone(),
        settings.webhooks.clone(),
        shutdown.clone(),
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
        let shown = view(&record, Some((3, false))).to_string();
        assert!(!shown.contains(record.hook.secret.expose()), "{shown}");
        assert!(!shown.contains("whsec_"), "{shown}");
        assert!(shown.contains("\"cursor\":\"5-1\""), "{shown}");
        assert!(shown.contains("\"pending\":3"), "{shown}");
    }
}
