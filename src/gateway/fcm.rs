//! Simulated FCM HTTP v1: the OAuth2 token endpoint (`POST /token`, JWT-bearer grant with the
//! service-account assertion) and `POST /v1/projects/{project}/messages:send`. Validation of
//! the message is a plain function ([`validate_message`]); errors have Google's shape
//! (`{"error": {"code", "message", "status", "details": [FcmError]}}`).

use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::control::faults::FaultSpec;
use super::control::records::BodyEncoding;
use super::control::records::Provider;
use super::jwt::check_service_account_assertion;
use super::registry::TOKEN_LIFETIME_SECS;
use super::state::{AppState, Push, Verdict, now_ms, now_secs};

/// FCM's limit for a data message's payload.
pub const MAX_DATA_BYTES: usize = 4096;
/// FCM's longest TTL: 28 days.
pub const MAX_TTL_SECS: u64 = 28 * 24 * 3600;

const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// A Google API error: `(http status, body)`.
pub fn google_error(code: u16, message: &str, error_code: Option<&str>) -> (u16, Value) {
    let status = match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        500 => "INTERNAL",
        503 => "UNAVAILABLE",
        _ => "UNKNOWN",
    };
    let mut error = json!({"code": code, "message": message, "status": status});
    if let Some(ec) = error_code {
        error["details"] = json!([{
            "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
            "errorCode": ec,
        }]);
    }
    (code, json!({ "error": error }))
}

fn invalid(message: String) -> (u16, Value) {
    google_error(400, &message, Some("INVALID_ARGUMENT"))
}

/// Looks a field up under its proto name or its JSON (lowerCamel) name: Google accepts both.
fn field<'a>(obj: &'a serde_json::Map<String, Value>, snake: &str) -> Option<&'a Value> {
    obj.get(snake).or_else(|| {
        let camel: String = snake
            .split('_')
            .enumerate()
            .map(|(i, w)| {
                if i == 0 {
                    w.to_owned()
                } else {
                    let mut c = w.chars();
                    c.next()
                        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                        .unwrap_or_default()
                }
            })
            .collect();
        obj.get(&camel)
    })
}

fn check_known(
    obj: &serde_json::Map<String, Value>,
    at: &str,
    known: &[&str],
) -> Result<(), (u16, Value)> {
    for key in obj.keys() {
        let snake: String = key
            .chars()
            .flat_map(|c| {
                if c.is_ascii_uppercase() {
                    vec!['_', c.to_ascii_lowercase()]
                } else {
                    vec![c]
                }
            })
            .collect();
        if !known.contains(&snake.as_str()) {
            return Err(invalid(format!(
                "Invalid JSON payload received. Unknown name \"{key}\" at '{at}': Cannot find field."
            )));
        }
    }
    Ok(())
}

/// A valid send request, as far as the simulator cares.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidMessage {
    /// The registration token (None for topic/condition sends, which reach no simulated device).
    pub token: Option<String>,
    pub collapse_key: Option<String>,
    /// `android.ttl` in whole seconds (FCM's default, four weeks, when absent).
    pub ttl_secs: Option<u64>,
    pub validate_only: bool,
}

/// Whether `token` could be an FCM registration token.
pub fn is_registration_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 4096
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b))
}

/// Checks a `messages:send` body as FCM does: unknown fields, exactly one target, string data
/// values, reserved data keys, Android priority and TTL format, payload size.
pub fn validate_message(body: &[u8]) -> Result<ValidMessage, (u16, Value)> {
    let req: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("Invalid JSON payload received. {e}")))?;
    let req = req
        .as_object()
        .ok_or_else(|| invalid("Invalid JSON payload received. Expected an object.".into()))?;
    check_known(req, "", &["message", "validate_only"])?;
    let validate_only = field(req, "validate_only")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let message = req
        .get("message")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            invalid("Request contains an invalid argument: message is required.".into())
        })?;
    check_known(
        message,
        "message",
        &[
            "name",
            "data",
            "notification",
            "android",
            "webpush",
            "apns",
            "fcm_options",
            "token",
            "topic",
            "condition",
        ],
    )?;
    let targets = ["token", "topic", "condition"]
        .iter()
        .filter(|t| message.contains_key(**t))
        .count();
    if targets != 1 {
        return Err(invalid(
            "Request contains an invalid argument: exactly one of token, topic or condition is required.".into(),
        ));
    }
    let token = match message.get("token") {
        Some(Value::String(t)) if is_registration_token(t) => Some(t.clone()),
        Some(_) => {
            return Err(invalid(
                "The registration token is not a valid FCM registration token".into(),
            ));
        }
        None => None,
    };
    let mut data_bytes = 0;
    if let Some(data) = message.get("data") {
        let data = data
            .as_object()
            .ok_or_else(|| invalid("Invalid value at 'message.data' (type.googleapis.com/google.protobuf.Struct): expected a map".into()))?;
        for (i, (k, v)) in data.iter().enumerate() {
            let Some(s) = v.as_str() else {
                return Err(invalid(format!(
                    "Invalid value at 'message.data[{i}].value' (TYPE_STRING), {v}"
                )));
            };
            let reserved = ["from", "notification", "message_type"].contains(&k.as_str())
                || k.starts_with("google.")
                || k.starts_with("gcm.");
            if reserved {
                return Err(invalid(format!("Invalid data payload key: {k}")));
            }
            data_bytes += k.len() + s.len();
        }
    }
    if data_bytes > MAX_DATA_BYTES {
        return Err(invalid("Android message is too big".into()));
    }
    let mut collapse_key = None;
    let mut ttl_secs = None;
    if let Some(android) = message.get("android") {
        let android = android.as_object().ok_or_else(|| {
            invalid("Invalid value at 'message.android': expected an object".into())
        })?;
        check_known(
            android,
            "message.android",
            &[
                "collapse_key",
                "priority",
                "ttl",
                "restricted_package_name",
                "data",
                "notification",
                "fcm_options",
                "direct_boot_ok",
                "bandwidth_constrained_ok",
                "restricted_satellite_ok",
            ],
        )?;
        if let Some(p) = field(android, "priority") {
            let ok = p
                .as_str()
                .is_some_and(|p| matches!(p, "HIGH" | "NORMAL" | "high" | "normal"));
            if !ok {
                return Err(invalid(format!(
                    "Invalid value at 'message.android.priority' (type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority), {p}"
                )));
            }
        }
        if let Some(ttl) = field(android, "ttl") {
            let secs = ttl.as_str().and_then(parse_duration);
            match secs {
                Some(s) if s <= MAX_TTL_SECS => ttl_secs = Some(s),
                _ => {
                    return Err(invalid(format!(
                        "Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration), {ttl}"
                    )));
                }
            }
        }
        if let Some(c) = field(android, "collapse_key") {
            collapse_key = Some(
                c.as_str()
                    .ok_or_else(|| {
                        invalid(
                            "Invalid value at 'message.android.collapse_key' (TYPE_STRING)".into(),
                        )
                    })?
                    .to_owned(),
            );
        }
    }
    Ok(ValidMessage {
        token,
        collapse_key,
        ttl_secs,
        validate_only,
    })
}

/// A protobuf JSON `Duration`: `"3600s"`, `"1.5s"`; whole seconds returned.
fn parse_duration(s: &str) -> Option<u64> {
    let n = s.strip_suffix('s')?;
    let (whole, frac) = n.split_once('.').unwrap_or((n, ""));
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 9
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    whole.parse().ok()
}

fn respond(status: u16, body: Value) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, axum::Json(body)).into_response()
}

/// `POST /token`: the OAuth2 JWT-bearer grant (RFC 7523).
pub async fn token(State(st): State<AppState>, body: Bytes) -> Response {
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let oauth_error = |error: &str, description: &str| {
        respond(
            400,
            json!({"error": error, "error_description": description}),
        )
    };
    match form.get("grant_type").map(String::as_str) {
        Some(GRANT_TYPE) => {}
        Some(other) => {
            return oauth_error(
                "unsupported_grant_type",
                &format!("Invalid grant_type: {other}"),
            );
        }
        None => return oauth_error("invalid_request", "Missing required parameter: grant_type"),
    }
    let Some(assertion) = form.get("assertion") else {
        return oauth_error("invalid_request", "Missing required parameter: assertion");
    };
    let sa = &st.creds.service_account;
    let now = now_secs();
    let public = st.sa_public.clone();
    if let Err((scope, description)) =
        check_service_account_assertion(assertion, &sa.client_email, &sa.token_uri, &public, now)
    {
        metrics::counter!("ssepush_gateway_oauth_tokens_total", "outcome" => "rejected")
            .increment(1);
        let error = if scope {
            "invalid_scope"
        } else {
            "invalid_grant"
        };
        return oauth_error(error, description);
    }
    metrics::counter!("ssepush_gateway_oauth_tokens_total", "outcome" => "issued").increment(1);
    let access = st.access_tokens.lock().unwrap().mint(now);
    respond(
        200,
        json!({"access_token": access, "expires_in": TOKEN_LIFETIME_SECS, "token_type": "Bearer"}),
    )
}

/// `POST /v1/projects/{project}/messages:send`.
pub async fn send(
    State(st): State<AppState>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = now_secs();
    let mut push = Push {
        provider: Provider::Fcm,
        token: String::new(),
        headers: BTreeMap::new(),
        body: String::from_utf8_lossy(&body).into_owned(),
        body_encoding: BodyEncoding::Text,
        collapse_key: None,
        ttl_ms: None,
    };
    let fail = |push: Push, (status, body): (u16, Value)| {
        let reason = body["error"]["details"][0]["errorCode"]
            .as_str()
            .or(body["error"]["status"].as_str())
            .map(str::to_owned);
        st.record(push, status, reason, false);
        respond(status, body)
    };
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    let authed = bearer.is_some_and(|t| st.access_tokens.lock().unwrap().is_valid(t.trim(), now));
    if !authed {
        return fail(
            push,
            google_error(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
                None,
            ),
        );
    }
    if project != st.creds.service_account.project_id {
        return fail(
            push,
            google_error(
                403,
                &format!(
                    "Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager.googleapis.com/projects/{project}' (or it may not exist)."
                ),
                Some("SENDER_ID_MISMATCH"),
            ),
        );
    }
    let message = match validate_message(&body) {
        Ok(m) => m,
        Err(e) => return fail(push, e),
    };
    push.token = message.token.clone().unwrap_or_default();
    push.collapse_key = message.collapse_key.clone();
    push.ttl_ms = message.ttl_secs.map(|s| s.saturating_mul(1000));
    if st
        .devices
        .lock()
        .unwrap()
        .unregistered_at(&push.token)
        .is_some()
    {
        return fail(
            push,
            google_error(404, "Requested entity was not found.", Some("UNREGISTERED")),
        );
    }
    if message.validate_only {
        return respond(
            200,
            json!({"name": format!("projects/{project}/messages/fake_message_id")}),
        );
    }
    match st.apply_faults(Provider::Fcm, &push.token).await {
        Verdict::Fail(fault) => {
            let retry_after = fault.retry_after_value(std::time::SystemTime::now());
            let FaultSpec { status, reason, .. } = fault;
            // FCM has no 410: a dead token is 404 UNREGISTERED.
            let status = match status.unwrap_or(500) {
                410 => 404,
                s => s,
            };
            let code = reason.unwrap_or_else(|| {
                match status {
                    400 => "INVALID_ARGUMENT",
                    401 => "THIRD_PARTY_AUTH_ERROR",
                    403 => "SENDER_ID_MISMATCH",
                    404 => "UNREGISTERED",
                    429 => "QUOTA_EXCEEDED",
                    503 => "UNAVAILABLE",
                    _ => "INTERNAL",
                }
                .into()
            });
            let message = match code.as_str() {
                "UNREGISTERED" => "Requested entity was not found.",
                "QUOTA_EXCEEDED" => {
                    "Quota exceeded for quota metric 'Send requests' of service 'fcm.googleapis.com'."
                }
                "UNAVAILABLE" => "The service is currently unavailable.",
                _ => "Internal error encountered.",
            };
            let (status, body) = google_error(status, message, Some(&code));
            st.record(push, status, Some(code), false);
            let mut resp = respond(status, body);
            if let Some(v) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
                resp.headers_mut().insert("retry-after", v);
            }
            resp
        }
        verdict => {
            let seq = st.record(push, 200, None, verdict == Verdict::Deliver);
            respond(
                200,
                json!({"name": format!("projects/{project}/messages/0:{}%{seq:016x}", now_ms())}),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: Value) -> Result<ValidMessage, String> {
        validate_message(body.to_string().as_bytes())
            .map_err(|(s, b)| format!("{s} {}", b["error"]["message"].as_str().unwrap()))
    }

    #[test]
    fn accepts_the_proxy_wake() {
        let m = check(json!({"message": {
            "token": "abc:APA91bXYZ",
            "data": {"ssepush": "{\"handoff\":\"h\"}"},
            "android": {"priority": "HIGH", "collapse_key": "h", "ttl": "3600s"},
        }}))
        .unwrap();
        assert_eq!(m.token.as_deref(), Some("abc:APA91bXYZ"));
        assert_eq!(m.collapse_key.as_deref(), Some("h"));
        // JSON (camelCase) names work too.
        let m = check(
            json!({"message": {"token": "t", "android": {"collapseKey": "k", "priority": "high"}}}),
        )
        .unwrap();
        assert_eq!(m.collapse_key.as_deref(), Some("k"));
        assert!(
            check(json!({"message": {"topic": "news"}}))
                .unwrap()
                .token
                .is_none()
        );
    }

    #[test]
    fn rejects_what_fcm_rejects() {
        for bad in [
            json!({"message": {"token": "t", "data": {"n": 1}}}),
            json!({"message": {"token": "t", "data": {"google.x": "y"}}}),
            json!({"message": {"token": "t", "data": {"from": "y"}}}),
            json!({"message": {"token": "t", "android": {"priority": "URGENT"}}}),
            json!({"message": {"token": "t", "android": {"ttl": 3600}}}),
            json!({"message": {"token": "t", "android": {"ttl": "1h"}}}),
            json!({"message": {"token": "t", "android": {"ttl": "99999999s"}}}),
            json!({"message": {"token": "t", "bogus": 1}}),
            json!({"message": {"token": "t", "topic": "x"}}),
            json!({"message": {"data": {}}}),
            json!({"message": {"token": "has space"}}),
            json!({"message": {"token": "t", "data": {"big": "x".repeat(5000)}}}),
            json!({"msg": {}}),
            json!([1]),
        ] {
            let e = check(bad.clone()).unwrap_err();
            assert!(e.starts_with("400 "), "{bad}: {e}");
        }
        assert!(validate_message(b"{nope").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3600s"), Some(3600));
        assert_eq!(parse_duration("3.5s"), Some(3));
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("-1s"), None);
    }
}
