//! The control API under `/_gateway/`: what a simulated phone or a tester uses, as opposed to
//! the provider endpoints a proxy pushes to. Phones get device tokens and Web Push
//! subscriptions and listen for their pushes; testers read the push record and arm faults.
//!
//! Errors have the origin's shape: `{"error": {"code", "message"}}`. The plain parts live
//! beside this file: [`records`] (the push record, device queues) and [`faults`].

pub mod faults;
pub mod records;

use std::convert::Infallible;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::registry::Subscription;
use super::state::{AppState, now_ms};
use super::{apns, fcm};
use faults::FaultSpec;
use records::{Provider, PushQuery};

/// `POST /_gateway/devices` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegisterDevice {
    /// `apns` or `fcm` (Web Push devices subscribe instead).
    pub platform: Provider,
    /// Register this token instead of generating one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// `POST /_gateway/devices` answer (201).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisteredDevice {
    pub platform: Provider,
    pub token: String,
}

/// `POST /_gateway/webpush/subscriptions` body (an empty body is `{}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscribeRequest {
    /// The VAPID public key (base64url, uncompressed P-256) pushes must be signed with, as in
    /// the browser's `PushManager.subscribe({applicationServerKey})`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_server_key: Option<String>,
}

/// `POST /_gateway/webpush/subscriptions` answer (201): the subscription's id (what its
/// device stream and the push record call it) and the endpoint to push to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebPushEndpoint {
    pub id: String,
    pub endpoint: String,
}

/// `POST /_gateway/faults` answer (201).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultArmed {
    pub id: u64,
}

/// The control routes, to be merged into the gateway's router.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/_gateway/webpush/subscriptions", post(subscribe_webpush))
        .route(
            "/_gateway/webpush/subscriptions/{id}",
            delete(unsubscribe_webpush),
        )
        .route("/_gateway/devices", post(register_device))
        .route("/_gateway/devices/{token}", delete(unregister_device))
        .route("/_gateway/devices/{token}/stream", get(device_stream))
        .route("/_gateway/pushes", get(list_pushes).delete(clear_pushes))
        .route(
            "/_gateway/faults",
            post(add_fault).get(list_faults).delete(clear_faults),
        )
}

/// A control-API error, in the origin's shape: `{"error": {"code", "message"}}`.
pub(crate) fn api_error(status: u16, code: &str, message: &str) -> Response {
    let s = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        s,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

fn device_limit() -> Response {
    api_error(
        503,
        "too_many_devices",
        "the gateway's device limit is reached",
    )
}

/// `POST /_gateway/devices` `{"platform": "apns"|"fcm", "token"?}` → 201 `{"platform", "token"}`:
/// a simulated phone gets a device token and a delivery queue.
async fn register_device(State(st): State<AppState>, body: Bytes) -> Response {
    let req: RegisterDevice = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return api_error(400, "bad_request", &e.to_string()),
    };
    let token = match (req.platform, req.token) {
        (Provider::Webpush, _) => {
            return api_error(
                400,
                "bad_request",
                "Web Push devices subscribe with POST /_gateway/webpush/subscriptions",
            );
        }
        (Provider::Apns, Some(t)) if !apns::is_device_token(&t) => {
            return api_error(
                400,
                "bad_request",
                "an APNs token is hex bytes: an even number of hex digits, at most 200",
            );
        }
        (Provider::Fcm, Some(t)) if !fcm::is_registration_token(&t) => {
            return api_error(400, "bad_request", "not a valid FCM registration token");
        }
        (_, Some(t)) => t,
        (Provider::Apns, None) => {
            let mut b = [0u8; 32];
            rand_core_06::RngCore::fill_bytes(&mut rand_core_06::OsRng, &mut b);
            b.iter().map(|x| format!("{x:02x}")).collect()
        }
        (Provider::Fcm, None) => {
            // The shape of a real registration token: instance id, ':', an opaque blob.
            let mut id = [0u8; 16];
            let mut blob = [0u8; 105];
            rand_core_06::RngCore::fill_bytes(&mut rand_core_06::OsRng, &mut id);
            rand_core_06::RngCore::fill_bytes(&mut rand_core_06::OsRng, &mut blob);
            format!(
                "{}:APA91b{}",
                &URL_SAFE_NO_PAD.encode(id)[..22],
                URL_SAFE_NO_PAD.encode(blob)
            )
        }
    };
    if st.devices.lock().unwrap().get_or_create(&token).is_none() {
        return device_limit();
    }
    let registered = RegisteredDevice {
        platform: req.platform,
        token,
    };
    (StatusCode::CREATED, axum::Json(registered)).into_response()
}

/// `DELETE /_gateway/devices/{token}`: the app was uninstalled. Pushes to the token are
/// refused as the services refuse a dead token (APNs 410 `Unregistered` with the time, FCM 404
/// `UNREGISTERED`); its queue is gone.
async fn unregister_device(State(st): State<AppState>, Path(token): Path<String>) -> Response {
    if st.devices.lock().unwrap().unregister(&token, now_ms()) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        device_limit()
    }
}

/// `GET /_gateway/devices/{token}/stream`: every push accepted for the device from now on (and
/// any still queued), as SSE events `push` whose data is a [`records::Delivery`] and whose id
/// is the push record's `seq`. One reader per device: two readers share the queue.
async fn device_stream(State(st): State<AppState>, Path(token): Path<String>) -> Response {
    let Some(queue) = st.devices.lock().unwrap().get_or_create(&token) else {
        return device_limit();
    };
    let shutdown = st.shutdown.clone();
    let listening = queue.listen();
    // A first comment, so the reader knows the device is listening once it sees any byte.
    let ready =
        futures::stream::once(async { Ok::<_, Infallible>(Event::default().comment("ready")) });
    let metrics_state = st.clone();
    let state = (queue, shutdown, listening, metrics_state);
    let pushes = futures::stream::unfold(state, |(queue, shutdown, listening, st)| async move {
        loop {
            let (next, expired) = queue.pop(now_ms());
            if expired > 0 {
                st.metrics.record(|| {
                    metrics::counter!("ssepush_gateway_pushes_expired_total")
                        .increment(expired as u64);
                });
            }
            if let Some(d) = next {
                let data = serde_json::to_string(&d).unwrap_or_default();
                let event = Event::default()
                    .event("push")
                    .id(d.seq.to_string())
                    .data(data);
                return Some((Ok(event), (queue, shutdown, listening, st)));
            }
            tokio::select! {
                _ = queue.notify.notified() => {}
                _ = shutdown.cancelled() => return None,
            }
        }
    });
    Sse::new(futures::StreamExt::chain(ready, pushes))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `GET /_gateway/pushes?token&provider&since&limit`: the push record, oldest first.
async fn list_pushes(
    State(st): State<AppState>,
    query: Result<Query<PushQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match query {
        Ok(Query(q)) => axum::Json(st.log.lock().unwrap().query(&q)).into_response(),
        Err(e) => api_error(400, "bad_request", &e.body_text()),
    }
}

/// `DELETE /_gateway/pushes`: forget the record (seq numbers go on).
async fn clear_pushes(State(st): State<AppState>) -> StatusCode {
    st.log.lock().unwrap().clear();
    StatusCode::NO_CONTENT
}

/// `POST /_gateway/faults` with a [`FaultSpec`] → 201 [`FaultArmed`].
async fn add_fault(State(st): State<AppState>, body: Bytes) -> Response {
    let spec: FaultSpec = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return api_error(400, "bad_request", &e.to_string()),
    };
    match st.faults.lock().unwrap().add(spec) {
        Ok(id) => (StatusCode::CREATED, axum::Json(FaultArmed { id })).into_response(),
        Err(message) => api_error(400, "bad_fault", &message),
    }
}

/// `GET /_gateway/faults`: the armed faults ([`faults::ArmedFault`]), first armed first.
async fn list_faults(State(st): State<AppState>) -> Response {
    axum::Json(st.faults.lock().unwrap().list()).into_response()
}

/// `DELETE /_gateway/faults`: disarm every fault.
async fn clear_faults(State(st): State<AppState>) -> StatusCode {
    st.faults.lock().unwrap().clear();
    StatusCode::NO_CONTENT
}

/// `POST /_gateway/webpush/subscriptions` [`SubscribeRequest`] → 201 [`WebPushEndpoint`]: what
/// a browser's push service hands out on `PushManager.subscribe`.
async fn subscribe_webpush(State(st): State<AppState>, body: Bytes) -> Response {
    let req: SubscribeRequest = if body.is_empty() {
        SubscribeRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return api_error(400, "bad_request", &e.to_string()),
        }
    };
    if let Some(k) = &req.application_server_key {
        let valid = URL_SAFE_NO_PAD
            .decode(k.trim_end_matches('='))
            .ok()
            .and_then(|b| p256::PublicKey::from_sec1_bytes(&b).ok())
            .is_some();
        if !valid {
            return api_error(
                400,
                "bad_request",
                "applicationServerKey must be a base64url P-256 public key",
            );
        }
    }
    let mut raw = [0u8; 16];
    rand_core_06::RngCore::fill_bytes(&mut rand_core_06::OsRng, &mut raw);
    let id = URL_SAFE_NO_PAD.encode(raw);
    {
        let mut subs = st.subscriptions.lock().unwrap();
        if subs.len() >= st.max_devices {
            // Forget unsubscribed ones first (their endpoints then answer 404 instead of 410).
            subs.retain(|_, s| !s.gone);
        }
        if subs.len() >= st.max_devices {
            return api_error(
                503,
                "too_many_devices",
                "the gateway's subscription limit is reached",
            );
        }
    }
    if st.devices.lock().unwrap().get_or_create(&id).is_none() {
        return device_limit();
    }
    st.subscriptions.lock().unwrap().insert(
        id.clone(),
        Subscription {
            application_server_key: req.application_server_key,
            gone: false,
        },
    );
    let endpoint = format!("{}/wp/{id}", st.base_url);
    (
        StatusCode::CREATED,
        axum::Json(WebPushEndpoint { id, endpoint }),
    )
        .into_response()
}

/// `DELETE /_gateway/webpush/subscriptions/{id}`: the phone unsubscribes; pushes then get 410.
async fn unsubscribe_webpush(State(st): State<AppState>, Path(id): Path<String>) -> Response {
    match st.subscriptions.lock().unwrap().get_mut(&id) {
        Some(sub) => {
            sub.gone = true;
            st.devices.lock().unwrap().remove(&id);
            StatusCode::NO_CONTENT.into_response()
        }
        None => api_error(404, "not_found", "no such subscription"),
    }
}
