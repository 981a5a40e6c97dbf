//! Simulated APNs: `POST /3/device/{token}` as Apple's provider API (token-based auth) answers
//! it. [`validate`] is the protocol, a plain function over the request's parts; [`send`] is the
//! HTTP shell (faults, recording, forwarding).
//!
//! Apple's reasons are used wherever Apple has one. Where Apple does not say what it answers
//! (invalid JSON, a background push that shows an alert) the gateway answers 400 `BadPayload`,
//! so a proxy bug shows up instead of being silently throttled as on a real phone.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::control::records::BodyEncoding;
use super::control::records::Provider;
use super::jwt::check_apns_provider_token;
use super::state::{AppState, Push, Verdict, now_ms, now_secs};

/// Apple's limit for a regular (non-VoIP) notification payload.
pub const MAX_PAYLOAD: usize = 4096;
pub const MAX_COLLAPSE_ID: usize = 64;

const PUSH_TYPES: &[&str] = &[
    "alert",
    "background",
    "location",
    "voip",
    "complication",
    "fileprovider",
    "mdm",
    "liveactivity",
    "pushtotalk",
    "widgets",
];

/// A refusal: HTTP status and Apple's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    pub status: u16,
    pub reason: &'static str,
}

fn reject(status: u16, reason: &'static str) -> Reject {
    Reject { status, reason }
}

/// A request that APNs would accept.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// The caller's `apns-id`, or a fresh one.
    pub apns_id: Option<String>,
    pub collapse_id: Option<String>,
    /// `apns-expiration`: unix seconds after which Apple stops trying; 0 = deliver once, now.
    pub expiration: Option<u64>,
}

/// Whether `s` is a UUID in the canonical 8-4-4-4-12 form, as `apns-id` must be (the `uuid`
/// crate also reads braced, URN and unhyphenated forms, which Apple does not take).
fn is_uuid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::try_parse(s).is_ok()
}

/// Longest device token the simulated APNs takes, in hex digits. Apple's are 32 bytes today,
/// and Apple says their size is not fixed.
pub const MAX_DEVICE_TOKEN_HEX: usize = 200;

/// Whether `token` looks like a device token: bytes in hex, 64 digits today, of any even length
/// up to [`MAX_DEVICE_TOKEN_HEX`] (Apple: do not hard-code their size).
pub fn is_device_token(token: &str) -> bool {
    (2..=MAX_DEVICE_TOKEN_HEX).contains(&token.len())
        && token.len().is_multiple_of(2)
        && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The protocol: checks one request as APNs does, in roughly Apple's order (authentication,
/// then the headers, then the device token and the payload).
pub fn validate(
    token: &str,
    headers: &HeaderMap,
    body: &[u8],
    creds: &super::credentials::Credentials,
    now: i64,
) -> Result<Accepted, Reject> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    check_apns_provider_token(
        header("authorization"),
        &creds.apns.key_id,
        &creds.apns.team_id,
        &creds.apns_verifying_key(),
        now,
    )
    .map_err(|e| reject(403, e.reason()))?;
    match header("apns-topic") {
        None | Some("") => return Err(reject(400, "MissingTopic")),
        Some(_) => {}
    }
    let push_type = header("apns-push-type").unwrap_or("alert");
    if !PUSH_TYPES.contains(&push_type) {
        return Err(reject(400, "InvalidPushType"));
    }
    let priority = match header("apns-priority") {
        None => 10,
        Some("5") => 5,
        Some("10") => 10,
        Some("1") => 1,
        Some(_) => return Err(reject(400, "BadPriority")),
    };
    // Apple: background notifications must be sent with priority 5.
    if push_type == "background" && priority != 5 {
        return Err(reject(400, "BadPriority"));
    }
    let apns_id = header("apns-id").map(str::to_owned);
    if apns_id.as_deref().is_some_and(|id| !is_uuid(id)) {
        return Err(reject(400, "BadMessageId"));
    }
    let collapse_id = header("apns-collapse-id").map(str::to_owned);
    if collapse_id
        .as_ref()
        .is_some_and(|c| c.len() > MAX_COLLAPSE_ID)
    {
        return Err(reject(400, "BadCollapseId"));
    }
    let expiration = match header("apns-expiration") {
        None => None,
        Some(e) => Some(
            e.parse::<u64>()
                .map_err(|_| reject(400, "BadExpirationDate"))?,
        ),
    };
    if !is_device_token(token) {
        return Err(reject(400, "BadDeviceToken"));
    }
    if body.is_empty() {
        return Err(reject(400, "PayloadEmpty"));
    }
    if body.len() > MAX_PAYLOAD {
        return Err(reject(413, "PayloadTooLarge"));
    }
    let payload: Value = serde_json::from_slice(body).map_err(|_| reject(400, "BadPayload"))?;
    let Some(aps) = payload.get("aps").and_then(Value::as_object) else {
        return Err(reject(400, "BadPayload"));
    };
    if push_type == "background" {
        let silent = aps.get("content-available").and_then(Value::as_i64) == Some(1)
            && !aps.contains_key("alert")
            && !aps.contains_key("sound")
            && !aps.contains_key("badge");
        if !silent {
            return Err(reject(400, "BadPayload"));
        }
    }
    Ok(Accepted {
        apns_id,
        collapse_id,
        expiration,
    })
}

/// Apple's reason for a faulted status when the tester named none.
fn default_reason(status: u16) -> &'static str {
    match status {
        400 => "BadDeviceToken",
        403 => "InvalidProviderToken",
        404 => "BadPath",
        405 => "MethodNotAllowed",
        410 => "Unregistered",
        413 => "PayloadTooLarge",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        _ => "InternalServerError",
    }
}

/// An APNs error response: `{"reason"}`, plus `timestamp` (ms) for 410, and the `apns-id`.
/// `unregistered_at` (unix ms) is the 410 timestamp: when the token stopped being valid (now,
/// when a fault says so).
fn error_response(
    status: u16,
    reason: &str,
    apns_id: &str,
    retry_after: Option<String>,
    unregistered_at: Option<u64>,
) -> Response {
    let mut body = json!({ "reason": reason });
    if status == 410 {
        body["timestamp"] = unregistered_at.unwrap_or_else(now_ms).into();
    }
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (code, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(apns_id) {
        resp.headers_mut().insert("apns-id", v);
    }
    if let Some(v) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
        resp.headers_mut().insert("retry-after", v);
    }
    resp
}

/// A bare APNs error (`BadPath`, `MethodNotAllowed`) with a fresh `apns-id`.
pub fn reason_response(status: u16, reason: &str) -> Response {
    error_response(status, reason, &super::state::new_uuid(), None, None)
}

/// The headers worth recording (never `authorization`).
fn recorded_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("apns-") || *name == "content-type")
        .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect()
}

pub async fn send(
    State(st): State<AppState>,
    Path(token): Path<String>,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut push = Push {
        provider: Provider::Apns,
        token: token.clone(),
        headers: recorded_headers(&headers),
        body: String::from_utf8_lossy(&body).into_owned(),
        body_encoding: BodyEncoding::Text,
        collapse_key: None,
        ttl_ms: None,
    };
    let fresh_id = super::state::new_uuid();
    // APNs speaks HTTP/2 only; a provider on HTTP/1.1 would never reach Apple.
    if version != Version::HTTP_2 {
        st.record(push, 505, Some("HTTP/2 required".into()), false);
        return (
            StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            axum::Json(json!({"reason": "HTTP/2 required: APNs only speaks HTTP/2"})),
        )
            .into_response();
    }
    let accepted = match validate(&token, &headers, &body, &st.creds, now_secs()) {
        Ok(a) => a,
        Err(r) => {
            let id = headers
                .get("apns-id")
                .and_then(|v| v.to_str().ok())
                .filter(|id| is_uuid(id))
                .map_or(fresh_id, str::to_owned);
            st.record(push, r.status, Some(r.reason.into()), false);
            return error_response(r.status, r.reason, &id, None, None);
        }
    };
    let apns_id = accepted.apns_id.unwrap_or(fresh_id);
    push.collapse_key = accepted.collapse_id;
    // An expiration already past means "now or never", like 0.
    push.ttl_ms = accepted
        .expiration
        .map(|e| e.saturating_mul(1000).saturating_sub(now_ms()));
    if let Some(at) = st.devices.lock().unwrap().unregistered_at(&token) {
        st.record(push, 410, Some("Unregistered".into()), false);
        return error_response(410, "Unregistered", &apns_id, None, Some(at));
    }
    match st.apply_faults(Provider::Apns, &token).await {
        Verdict::Fail(fault) => {
            let retry_after = fault.retry_after_value(std::time::SystemTime::now());
            let status = fault.status.unwrap_or(500);
            let reason = fault
                .reason
                .unwrap_or_else(|| default_reason(status).into());
            st.record(push, status, Some(reason.clone()), false);
            error_response(status, &reason, &apns_id, retry_after, None)
        }
        verdict => {
            st.record(push, 200, None, verdict == Verdict::Deliver);
            let mut resp = StatusCode::OK.into_response();
            if let Ok(v) = HeaderValue::from_str(&apns_id) {
                resp.headers_mut().insert("apns-id", v);
            }
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;
    const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn creds() -> &'static crate::gateway::Credentials {
        crate::gateway::state::tests::test_credentials()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        let auth = format!("bearer {}", creds().apns_provider_token(NOW - 5));
        h.insert("authorization", auth.parse().unwrap());
        h.insert("apns-topic", "com.example.app".parse().unwrap());
        h.insert("apns-push-type", "background".parse().unwrap());
        h.insert("apns-priority", "5".parse().unwrap());
        for (k, v) in pairs {
            if v.is_empty() {
                h.remove(*k);
            } else {
                h.insert(*k, v.parse().unwrap());
            }
        }
        h
    }

    const SILENT: &[u8] = br#"{"aps":{"content-available":1},"ssepush":{"handoff":"h"}}"#;

    fn check(
        pairs: &[(&'static str, &str)],
        token: &str,
        body: &[u8],
    ) -> Result<Accepted, &'static str> {
        validate(token, &headers(pairs), body, creds(), NOW).map_err(|r| r.reason)
    }

    #[test]
    fn accepts_a_silent_background_push() {
        let a = check(&[("apns-collapse-id", "handoff-1")], TOKEN, SILENT).unwrap();
        assert_eq!(a.collapse_id.as_deref(), Some("handoff-1"));
        let alert = br#"{"aps":{"alert":{"title":"hi"}}}"#;
        assert!(
            check(
                &[("apns-push-type", "alert"), ("apns-priority", "10")],
                TOKEN,
                alert
            )
            .is_ok()
        );
        // No push type: alert, priority 10 by default.
        assert!(
            check(
                &[("apns-push-type", ""), ("apns-priority", "")],
                TOKEN,
                alert
            )
            .is_ok()
        );
    }

    #[test]
    fn apple_reasons() {
        let stale = format!("bearer {}", creds().apns_provider_token(NOW - 4000));
        assert_eq!(
            check(&[("authorization", &stale)], TOKEN, SILENT).unwrap_err(),
            "ExpiredProviderToken"
        );
        assert_eq!(
            check(&[("authorization", "")], TOKEN, SILENT).unwrap_err(),
            "MissingProviderToken"
        );
        assert_eq!(
            check(&[("authorization", "bearer x.y.z")], TOKEN, SILENT).unwrap_err(),
            "InvalidProviderToken"
        );
        assert_eq!(
            check(&[("apns-topic", "")], TOKEN, SILENT).unwrap_err(),
            "MissingTopic"
        );
        assert_eq!(
            check(&[("apns-priority", "10")], TOKEN, SILENT).unwrap_err(),
            "BadPriority"
        );
        assert_eq!(
            check(&[("apns-priority", "")], TOKEN, SILENT).unwrap_err(),
            "BadPriority"
        );
        assert_eq!(
            check(&[("apns-push-type", "loud")], TOKEN, SILENT).unwrap_err(),
            "InvalidPushType"
        );
        let long = "x".repeat(65);
        assert_eq!(
            check(&[("apns-collapse-id", &long)], TOKEN, SILENT).unwrap_err(),
            "BadCollapseId"
        );
        assert_eq!(
            check(&[("apns-expiration", "soon")], TOKEN, SILENT).unwrap_err(),
            "BadExpirationDate"
        );
        assert_eq!(
            check(&[("apns-id", "not-a-uuid")], TOKEN, SILENT).unwrap_err(),
            "BadMessageId"
        );
        assert_eq!(check(&[], "abc", SILENT).unwrap_err(), "BadDeviceToken");
        assert_eq!(
            check(&[], &"g".repeat(64), SILENT).unwrap_err(),
            "BadDeviceToken"
        );
        assert_eq!(check(&[], TOKEN, b"").unwrap_err(), "PayloadEmpty");
        let big = format!(
            r#"{{"aps":{{"content-available":1}},"x":"{}"}}"#,
            "a".repeat(4100)
        );
        let r = validate(TOKEN, &headers(&[]), big.as_bytes(), creds(), NOW).unwrap_err();
        assert_eq!((r.status, r.reason), (413, "PayloadTooLarge"));
        assert_eq!(check(&[], TOKEN, b"{not json").unwrap_err(), "BadPayload");
        assert_eq!(
            check(&[], TOKEN, br#"{"aps":{"alert":"hi"}}"#).unwrap_err(),
            "BadPayload"
        );
        assert_eq!(
            check(
                &[],
                TOKEN,
                br#"{"aps":{"content-available":1,"alert":"x"}}"#
            )
            .unwrap_err(),
            "BadPayload"
        );
    }

    #[test]
    fn uuids() {
        assert!(is_uuid("EABEAE54-14A8-11E5-B60B-1697F925EC7B"));
        assert!(is_uuid(&super::super::state::new_uuid()));
        assert!(!is_uuid("EABEAE5414A811E5B60B1697F925EC7B"));
    }
}
