//! `GET /v1/ws`: subscriptions (and optionally publishing) over one WebSocket, as JSON text
//! frames.
//!
//! Client → server:
//! * `{"type":"subscribe","id":"s1","channels":[…],"filter"?:"CEL","lastEventId"?:"…"}`
//! * `{"type":"unsubscribe","id":"s1"}`
//! * `{"type":"filter","id":"s1","filter":"CEL"|null}`: changes a live subscription's filter;
//!   the `ok` names `appliesAfter`, the id after which the new filter judges events
//! * `{"type":"publish","channel":"…","eventType"?:"…","data":…,"ref"?:…}` when the origin
//!   allows it (`ws_publish`, plus the publisher credentials of the upgrade request: its
//!   `Authorization` header or `access_token` query field, never a cookie). The event
//!   type is `eventType` because `type` already names the message.
//!
//! Who may read is decided at the upgrade ([`super::auth`]): a reader credential (header,
//! `access_token` query field or cookie) where the origin needs one, else a 401/403 before the
//! upgrade; then every `subscribe` is checked against what it grants (an `error` frame
//! `forbidden_channel` for a pattern it does not cover), and every `publish` against the
//! publish grants.
//! * `{"type":"ping"}`
//!
//! Server → client: `event` (`{"type":"event","sub","event":{id,channel,type,data,time}}`),
//! `reset` (`{"type":"reset","sub","cause","requestedId","oldestId","lastEventId"?}`, before that
//! subscription's history; `lastEventId` is the cursor to continue from when it is not the one
//! given), `ok` (`{"type":"ok","op","ref"}`, plus `ids` for a publish and `lastEventId` for a
//! subscribe: the subscription's cursor from its first moment, the log's head for a fresh one),
//! `error`
//! (`{"type":"error","ref"?,"code","message"}`, plus `line`/`column` for a filter; the socket stays
//! open), `pong`.
//!
//! Each subscription is the shared engine of [`super::subscribe`] (so it resumes exactly like
//! SSE) driven by its own small task; all of them feed **one bounded queue per socket**, drained
//! by a writer task. A socket whose queue fills up is closed with 1013 and counted in
//! `ssepush_origin_slow_consumers_total`; it resumes with `lastEventId`. On shutdown every socket
//! is closed with 1001.
//!
//! The files: [`message`] (client messages parsed and checked, server frames built: plain
//! values, unit-tested), `session` (one socket: its subscriptions, its bounded queue, the
//! writer, the close), and the upgrade handler here.

pub mod message;
mod session;

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::state::AppState;
use crate::service::error::ApiError;
use crate::service::openapi::ErrorBody;

/// WebSocket: JSON frames subscribe/unsubscribe/filter/publish/ping; server sends event/ok/error/reset/pong
///
/// Upgrades to a WebSocket (a 400 JSON error when the request is not an upgrade) and serves it
/// until either side closes or the server drains. Publishing needs `ws_publish` and the upgrade
/// request's publisher credentials.
#[utoipa::path(
    get,
    path = "/v1/ws",
    tag = "subscribe",
    operation_id = "get_v1_ws",
    responses(
        (status = 101, description = "switching protocols"),
        (status = 400, description = "not a WebSocket upgrade", body = ErrorBody),
        (status = 401, description = "missing or invalid reader credentials", body = ErrorBody),
        (status = 403, description = "reading is disabled on this listener", body = ErrorBody),
    ),
    security(("bearer" = []), ()),
)]
pub async fn ws(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(e) => {
            return ApiError::new(
                e.status(),
                "websocket_required",
                format!("GET /v1/ws is a WebSocket endpoint: {}", e.body_text()),
            )
            .into_response();
        }
    };
    let read = match st.auth.reader(&headers, query.as_deref()) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    // Publishing is decided once, from the upgrade request's credentials: browsers cannot set
    // headers on a WebSocket, so a browser socket publishes with an `access_token`, or where
    // publishing is open.
    let publish = if !st.settings.ws_publish {
        Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "publish_disabled",
            "publishing over WebSocket is disabled on this origin (ws_publish = false); use POST /v1/events",
        ))
    } else {
        st.auth.publisher(&headers, query.as_deref())
    };
    let max = st.settings.ws_max_message_bytes;
    upgrade
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| {
            static NEXT: AtomicU64 = AtomicU64::new(1);
            let span = tracing::info_span!("ws", id = NEXT.fetch_add(1, Ordering::Relaxed));
            session::serve(st, socket, read, publish).instrument(span)
        })
}
