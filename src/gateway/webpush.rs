//! Simulated Web Push service (RFC 8030 delivery, RFC 8292 VAPID, RFC 8291 bodies passed
//! through untouched). Subscriptions are made by the simulated phone through
//! `POST /_gateway/webpush/subscriptions`; pushes arrive at `POST /wp/{id}`.
//! [`validate`] is the protocol as a plain function; the handlers are the shell.
//!
//! Error bodies follow Mozilla autopush: `{"code", "errno", "error", "message"}`.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use super::control::faults::FaultSpec;
use super::control::records::BodyEncoding;
use super::control::records::Provider;
use super::jwt::check_vapid;
use super::registry::Subscription;
use super::state::{AppState, Push, Verdict, now_secs};

/// RFC 8291 §4: push services must accept at least 4096 bytes; this one accepts no more.
pub const MAX_BODY: usize = 4096;
pub const MAX_TOPIC: usize = 32;

/// A refusal: status, autopush errno, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub status: u16,
    pub errno: u16,
    pub message: &'static str,
}

fn reject(status: u16, errno: u16, message: &'static str) -> Reject {
    Reject {
        status,
        errno,
        message,
    }
}

/// A push the service accepts.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub ttl: u64,
    pub topic: Option<String>,
}

/// Checks one push to subscription `sub` (None = unknown id) of a service at `origin`.
pub fn validate(
    sub: Option<&Subscription>,
    headers: &HeaderMap,
    body: &[u8],
    origin: &str,
    now: i64,
) -> Result<Accepted, Reject> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let sub = sub.ok_or(reject(404, 102, "No such subscription"))?;
    if sub.gone {
        return Err(reject(410, 103, "Subscription is no longer valid"));
    }
    check_vapid(
        header("authorization"),
        origin,
        sub.application_server_key.as_deref(),
        now,
    )
    .map_err(|e| reject(e.status, 109, e.message))?;
    let ttl = header("ttl")
        .ok_or(reject(400, 111, "Missing TTL header"))?
        .trim()
        .parse::<u64>()
        .map_err(|_| reject(400, 112, "Invalid TTL header"))?;
    if body.len() > MAX_BODY {
        return Err(reject(413, 104, "Body is too large"));
    }
    if !body.is_empty() {
        if !header("content-encoding").is_some_and(|e| e.eq_ignore_ascii_case("aes128gcm")) {
            return Err(reject(
                400,
                110,
                "Content-Encoding must be aes128gcm (RFC 8291)",
            ));
        }
        // The aes128gcm header: salt(16) rs(4) idlen(1) keyid(idlen, the sender's P-256 key).
        let well_formed = body.len() > 21
            && body[20] == 65
            && body.len() >= 21 + 65 + 17
            && u32::from_be_bytes([body[16], body[17], body[18], body[19]]) >= 18;
        if !well_formed {
            return Err(reject(
                400,
                110,
                "Body is not an RFC 8291 aes128gcm message",
            ));
        }
    }
    if let Some(u) = header("urgency")
        && !matches!(u, "very-low" | "low" | "normal" | "high")
    {
        return Err(reject(
            400,
            110,
            "Urgency must be very-low, low, normal or high",
        ));
    }
    let topic = header("topic").map(str::to_owned);
    if let Some(t) = &topic
        && (t.is_empty()
            || t.len() > MAX_TOPIC
            || !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    {
        return Err(reject(
            400,
            110,
            "Topic must be at most 32 base64url characters",
        ));
    }
    Ok(Accepted { ttl, topic })
}

fn error_response(status: u16, errno: u16, message: &str, retry_after: Option<String>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (
        code,
        axum::Json(json!({
            "code": status,
            "errno": errno,
            "error": code.canonical_reason().unwrap_or("Error"),
            "message": message,
        })),
    )
        .into_response();
    if let Some(v) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
        resp.headers_mut().insert("retry-after", v);
    }
    resp
}

fn recorded_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    [
        "ttl",
        "urgency",
        "topic",
        "content-encoding",
        "content-type",
    ]
    .iter()
    .filter_map(|n| Some(((*n).to_owned(), headers.get(*n)?.to_str().ok()?.to_owned())))
    .collect()
}

/// `POST /wp/{id}`.
pub async fn deliver(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut push = Push {
        provider: Provider::Webpush,
        token: id.clone(),
        headers: recorded_headers(&headers),
        body: URL_SAFE_NO_PAD.encode(&body),
        body_encoding: BodyEncoding::Base64url,
        collapse_key: None,
        ttl_ms: None,
    };
    let sub = st.subscriptions.lock().unwrap().get(&id).cloned();
    let accepted = match validate(sub.as_ref(), &headers, &body, &st.base_url, now_secs()) {
        Ok(a) => a,
        Err(r) => {
            st.record(push, r.status, Some(r.message.into()), false);
            return error_response(r.status, r.errno, r.message, None);
        }
    };
    push.collapse_key = accepted.topic;
    push.ttl_ms = Some(accepted.ttl.saturating_mul(1000));
    match st.apply_faults(Provider::Webpush, &id).await {
        Verdict::Fail(fault) => {
            let retry_after = fault.retry_after_value(std::time::SystemTime::now());
            let FaultSpec { status, reason, .. } = fault;
            let status = status.unwrap_or(500);
            let errno = match status {
                404 => 102,
                410 => 103,
                413 => 104,
                429 => 201,
                _ => 999,
            };
            let message = reason.unwrap_or_else(|| {
                StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("Error")
                    .into()
            });
            st.record(push, status, Some(message.clone()), false);
            error_response(status, errno, &message, retry_after)
        }
        verdict => {
            let seq = st.record(push, 201, None, verdict == Verdict::Deliver);
            let mut resp = StatusCode::CREATED.into_response();
            let location = format!("{}/_gateway/webpush/messages/{seq}", st.base_url);
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert("location", v);
            }
            resp.headers_mut().insert("ttl", accepted.ttl.into());
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::webpush::{UserAgentKeys, encrypt};
    use crate::gateway::jwt::sign_es256;

    const NOW: i64 = 1_800_000_000;
    const ORIGIN: &str = "http://127.0.0.1:8070";

    fn vapid(key: &p256::ecdsa::SigningKey, aud: &str) -> String {
        let k = URL_SAFE_NO_PAD.encode(key.verifying_key().to_encoded_point(false).as_bytes());
        let t = sign_es256(
            json!({"typ": "JWT"}),
            &json!({"aud": aud, "exp": NOW + 3600, "sub": "mailto:ops@example.com"}),
            key,
        );
        format!("vapid t={t}, k={k}")
    }

    fn headers(auth: &str, pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", auth.parse().unwrap());
        h.insert("ttl", "60".parse().unwrap());
        h.insert("content-encoding", "aes128gcm".parse().unwrap());
        for (k, v) in pairs {
            if v.is_empty() {
                h.remove(*k);
            } else {
                h.insert(*k, v.parse().unwrap());
            }
        }
        h
    }

    #[test]
    fn validates_like_a_push_service() {
        let key = p256::ecdsa::SigningKey::random(&mut rand_core_06::OsRng);
        let phone = UserAgentKeys::generate();
        let body = encrypt(b"{}", &phone.p256dh, &phone.auth).unwrap();
        let sub = Subscription {
            application_server_key: None,
            gone: false,
        };
        let auth = vapid(&key, ORIGIN);
        let ok = validate(
            Some(&sub),
            &headers(&auth, &[("topic", "handoff-1")]),
            &body,
            ORIGIN,
            NOW,
        )
        .unwrap();
        assert_eq!((ok.ttl, ok.topic.as_deref()), (60, Some("handoff-1")));
        let status = |sub: Option<&Subscription>, h: HeaderMap, body: &[u8]| {
            validate(sub, &h, body, ORIGIN, NOW).unwrap_err().status
        };
        assert_eq!(status(None, headers(&auth, &[]), &body), 404);
        let gone = Subscription {
            gone: true,
            ..sub.clone()
        };
        assert_eq!(status(Some(&gone), headers(&auth, &[]), &body), 410);
        assert_eq!(
            status(
                Some(&sub),
                headers(&vapid(&key, "http://other:1"), &[]),
                &body
            ),
            401
        );
        assert_eq!(
            status(Some(&sub), headers(&auth, &[("authorization", "")]), &body),
            401
        );
        let pinned = Subscription {
            application_server_key: Some(
                URL_SAFE_NO_PAD.encode(
                    p256::ecdsa::SigningKey::random(&mut rand_core_06::OsRng)
                        .verifying_key()
                        .to_encoded_point(false)
                        .as_bytes(),
                ),
            ),
            gone: false,
        };
        assert_eq!(status(Some(&pinned), headers(&auth, &[]), &body), 403);
        assert_eq!(
            status(Some(&sub), headers(&auth, &[("ttl", "")]), &body),
            400
        );
        assert_eq!(
            status(Some(&sub), headers(&auth, &[("ttl", "-1")]), &body),
            400
        );
        assert_eq!(
            status(
                Some(&sub),
                headers(&auth, &[("content-encoding", "aesgcm")]),
                &body
            ),
            400
        );
        assert_eq!(status(Some(&sub), headers(&auth, &[]), b"plaintext"), 400);
        assert_eq!(
            status(Some(&sub), headers(&auth, &[]), &vec![0u8; 5000]),
            413
        );
        assert_eq!(
            status(Some(&sub), headers(&auth, &[("urgency", "asap")]), &body),
            400
        );
        assert_eq!(
            status(
                Some(&sub),
                headers(&auth, &[("topic", &"a".repeat(33))]),
                &body
            ),
            400
        );
        assert_eq!(
            status(Some(&sub), headers(&auth, &[("topic", "a/b")]), &body),
            400
        );
        // A push without a payload needs no Content-Encoding.
        assert!(
            validate(
                Some(&sub),
                &headers(&auth, &[("content-encoding", "")]),
                b"",
                ORIGIN,
                NOW
            )
            .is_ok()
        );
    }
}
