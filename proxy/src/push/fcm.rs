//! FCM HTTP v1: wakes an Android phone through `POST {base}/v1/projects/{p}/messages:send`.
//!
//! Auth is the OAuth 2.0 service-account flow (RFC 7523): an RS256 assertion signed with the
//! key file's private key is exchanged at **the key file's own `token_uri`** for an access
//! token, cached until shortly before it expires and refreshed once on a 401. Because the
//! token endpoint comes from the key file, the simulated gateway's service account makes the
//! proxy use the gateway's token endpoint with no other setting.
//!
//! [`message`] builds the request body, [`classify`] reads the answer; both are plain functions.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::http::{HttpClient, HttpResponse, Versions, base_url, now_secs, retry_after};
use super::{PushError, PushProvider, PushTarget, Wake};
use crate::protocol::FcmRequest;

pub const DEFAULT_BASE_URL: &str = "https://fcm.googleapis.com";
/// The OAuth scope that allows sending FCM messages.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// How long to wait after a 429 / 503 that gave no `Retry-After` (Google asks for at least a
/// minute of backoff on `QUOTA_EXCEEDED`).
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);
/// An access token is replaced this long before Google says it expires.
const TOKEN_EXPIRY_MARGIN: Duration = Duration::from_secs(5 * 60);

/// `[fcm]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FcmSettings {
    /// The service-account key JSON (`project_id`, `client_email`, `private_key`,
    /// `token_uri`); never the key itself in config.
    pub service_account_path: PathBuf,
    /// Base URL for `/v1/projects/{p}/messages:send`. Default `https://fcm.googleapis.com`.
    pub base_url: Option<String>,
    /// The Firebase project, when it differs from the key file's `project_id`.
    pub project_id: Option<String>,
    /// An extra root CA (PEM) to trust, e.g. the gateway's self-signed certificate.
    pub ca_cert_path: Option<PathBuf>,
    /// Per-request timeout. Default 10 s.
    pub timeout_secs: u64,
}

impl Default for FcmSettings {
    fn default() -> Self {
        FcmSettings {
            service_account_path: PathBuf::new(),
            base_url: None,
            project_id: None,
            ca_cert_path: None,
            timeout_secs: 10,
        }
    }
}

/// The fields of a Google service-account key file that matter here.
#[derive(Clone, Deserialize)]
pub struct ServiceAccountKey {
    pub project_id: String,
    pub client_email: String,
    pub private_key: String,
    #[serde(default)]
    pub private_key_id: Option<String>,
    pub token_uri: String,
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .field("private_key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// The claims of a service-account assertion (RFC 7523 §3, Google's OAuth 2.0 for service
/// accounts): who signs, what for, for whom, when (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AssertionClaims<'a> {
    pub iss: &'a str,
    pub scope: &'a str,
    pub aud: &'a str,
    pub iat: u64,
    pub exp: u64,
}

/// The claims of a service-account assertion issued at `iat`, valid for an hour.
pub fn assertion_claims(key: &ServiceAccountKey, iat: u64) -> AssertionClaims<'_> {
    AssertionClaims {
        iss: &key.client_email,
        scope: SCOPE,
        aud: &key.token_uri,
        iat,
        exp: iat + 3600,
    }
}

/// The token request body: the RFC 7523 JWT-bearer grant, form-encoded. The assertion is
/// base64url and dots, which need no escaping.
pub fn token_request_body(assertion: &str) -> String {
    format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
    )
}

/// The `messages:send` body for a wake ([`FcmRequest`]): a data message (FCM data values are
/// strings, so the `ssepush` object travels as its JSON text), high priority so a dozing phone
/// wakes, the collapse key so a newer wake replaces an undelivered one, and the wake's TTL.
/// Alert mode adds a `notification`.
pub fn message(token: &str, wake: &Wake) -> FcmRequest {
    FcmRequest::new(
        token,
        &wake.payload(),
        wake.mode,
        &wake.collapse_id,
        wake.ttl,
    )
}

/// FCM's error code: the `FcmError` detail's `errorCode` when present, else the Google RPC
/// `status` (`{"error": {"code", "message", "status", "details": [...]}}`).
fn error_code(body: &Value) -> Option<&str> {
    let error = body.get("error")?;
    error
        .get("details")
        .and_then(Value::as_array)
        .and_then(|details| {
            details
                .iter()
                .find_map(|d| d.get("errorCode").and_then(Value::as_str))
        })
        .or_else(|| error.get("status").and_then(Value::as_str))
}

/// FCM's answer as a [`PushError`]. 401 is [`PushError::Config`] here: the provider refreshes
/// its token and retries once before giving this answer.
pub fn classify(status: u16, body: &[u8], retry_after: Option<Duration>) -> Result<(), PushError> {
    if status == 200 {
        return Ok(());
    }
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let code = error_code(&body);
    let message = body
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("");
    let describe = || format!("FCM answered {status} {}: {message}", code.unwrap_or("-"));
    match (status, code) {
        (404, _) | (_, Some("UNREGISTERED")) => Err(PushError::Permanent(
            code.unwrap_or("UNREGISTERED").to_owned(),
        )),
        // The token belongs to another Firebase project: it will never work with ours.
        (_, Some("SENDER_ID_MISMATCH")) => Err(PushError::Permanent("SENDER_ID_MISMATCH".into())),
        // INVALID_ARGUMENT is the phone's fault only when it is about the registration token;
        // otherwise our message is malformed.
        (400, Some("INVALID_ARGUMENT")) if message.to_ascii_lowercase().contains("token") => {
            Err(PushError::Permanent(format!("INVALID_ARGUMENT: {message}")))
        }
        (429, _) | (_, Some("QUOTA_EXCEEDED")) => Err(PushError::RetryAfter(
            retry_after.unwrap_or(DEFAULT_RETRY_AFTER),
        )),
        (500..=599, _) | (_, Some("UNAVAILABLE" | "INTERNAL")) => match retry_after {
            Some(d) => Err(PushError::RetryAfter(d)),
            None => Err(PushError::Transient(describe())),
        },
        _ => Err(PushError::Config(describe())),
    }
}

/// A cached OAuth access token.
struct AccessToken {
    token: String,
    refresh_at: Instant,
}

/// The FCM [`PushProvider`].
pub struct FcmProvider {
    key: ServiceAccountKey,
    signing_key: jsonwebtoken::EncodingKey,
    send_url: String,
    http: HttpClient,
    /// A tokio mutex: one token request at a time, the others wait for its result.
    token: tokio::sync::Mutex<Option<AccessToken>>,
}

impl std::fmt::Debug for FcmProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FcmProvider")
            .field("key", &self.key)
            .field("send_url", &self.send_url)
            .finish_non_exhaustive()
    }
}

impl FcmProvider {
    pub fn new(settings: &FcmSettings) -> Result<FcmProvider, PushError> {
        let path = &settings.service_account_path;
        let text = std::fs::read(path)
            .map_err(|e| PushError::Config(format!("service account {}: {e}", path.display())))?;
        let key: ServiceAccountKey = serde_json::from_slice(&text)
            .map_err(|e| PushError::Config(format!("service account {}: {e}", path.display())))?;
        let signing_key = jsonwebtoken::EncodingKey::from_rsa_pem(key.private_key.as_bytes())
            .map_err(|e| {
                PushError::Config(format!(
                    "service account {}: private_key: {e}",
                    path.display()
                ))
            })?;
        base_url(&key.token_uri, "service account token_uri")?;
        let project = settings
            .project_id
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or(&key.project_id);
        if project.is_empty()
            || !project
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(PushError::Config(format!(
                "FCM project id {project:?} is empty or not a project id"
            )));
        }
        let base = base_url(
            settings.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL),
            "[fcm] base_url",
        )?;
        let send_url = format!("{base}/v1/projects/{project}/messages:send");
        let http = HttpClient::new(
            settings.ca_cert_path.as_deref(),
            Versions::Any,
            Duration::from_secs(settings.timeout_secs.max(1)),
        )?;
        Ok(FcmProvider {
            key,
            signing_key,
            send_url,
            http,
            token: tokio::sync::Mutex::new(None),
        })
    }

    /// A valid access token: the cached one, or a fresh one from the token endpoint.
    async fn access_token(&self, stale: Option<&str>) -> Result<String, PushError> {
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref()
            && Instant::now() < t.refresh_at
            && Some(t.token.as_str()) != stale
        {
            return Ok(t.token.clone());
        }
        let fresh = self.fetch_token().await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    async fn fetch_token(&self) -> Result<AccessToken, PushError> {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = self.key.private_key_id.clone();
        let assertion = jsonwebtoken::encode(
            &header,
            &assertion_claims(&self.key, now_secs()),
            &self.signing_key,
        )
        .map_err(|e| PushError::Config(format!("signing the service-account assertion: {e}")))?;
        let request = http::Request::post(&self.key.token_uri)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(Bytes::from(token_request_body(&assertion)))
            .map_err(|e| PushError::Config(format!("token request: {e}")))?;
        let requested = Instant::now();
        let response = self.http.send(request).await?;
        parse_token_response(&response, requested)
    }

    async fn post(&self, body: &Bytes, access_token: &str) -> Result<HttpResponse, PushError> {
        let request = http::Request::post(&self.send_url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {access_token}"),
            )
            .body(body.clone())
            .map_err(|e| PushError::Config(format!("FCM request: {e}")))?;
        self.http.send(request).await
    }
}

/// The token endpoint's answer: `{"access_token", "expires_in", "token_type"}` or an OAuth
/// error (`invalid_grant` is our key's fault; 5xx is worth retrying).
fn parse_token_response(
    response: &HttpResponse,
    requested: Instant,
) -> Result<AccessToken, PushError> {
    #[derive(Deserialize)]
    struct TokenResponse {
        access_token: String,
        #[serde(default)]
        expires_in: Option<u64>,
    }
    match response.status {
        200 => {
            let t: TokenResponse = serde_json::from_slice(&response.body)
                .map_err(|e| PushError::Transient(format!("unreadable token response: {e}")))?;
            let lifetime = Duration::from_secs(t.expires_in.unwrap_or(3600));
            Ok(AccessToken {
                token: t.access_token,
                refresh_at: requested + lifetime.saturating_sub(TOKEN_EXPIRY_MARGIN),
            })
        }
        429 | 500..=599 => match retry_after(&response.headers) {
            Some(d) => Err(PushError::RetryAfter(d)),
            None => Err(PushError::Transient(format!(
                "token endpoint answered {}",
                response.status
            ))),
        },
        status => {
            let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
            Err(PushError::Config(format!(
                "token endpoint refused the service account ({status} {}: {})",
                body["error"].as_str().unwrap_or("-"),
                body["error_description"].as_str().unwrap_or("")
            )))
        }
    }
}

#[async_trait]
impl PushProvider for FcmProvider {
    async fn send(&self, target: &PushTarget, wake: &Wake) -> Result<(), PushError> {
        let PushTarget::Fcm { token } = target else {
            return Err(PushError::Config("not an FCM target".into()));
        };
        if token.is_empty() {
            return Err(PushError::Permanent("empty FCM registration token".into()));
        }
        let body = serde_json::to_vec(&message(token, wake))
            .map_err(|e| PushError::Config(format!("FCM message: {e}")))?;
        let body = Bytes::from(body);
        let access = self.access_token(None).await?;
        let mut response = self.post(&body, &access).await?;
        if response.status == 401 {
            // Revoked or expired early: one fresh token, one more try.
            let access = self.access_token(Some(&access)).await?;
            response = self.post(&body, &access).await?;
        }
        classify(
            response.status,
            &response.body,
            retry_after(&response.headers),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::WakeMode;
    use serde_json::json;
    use ssepush_origin::EventId;

    fn wake(mode: WakeMode) -> Wake {
        Wake {
            handoff_id: "h1".into(),
            pending: 2,
            latest_event_id: Some(EventId::new(9, 0)),
            mode,
            collapse_id: "handoff-h1".into(),
            ttl: Duration::from_secs(900),
            node: None,
            epoch: None,
        }
    }

    #[test]
    fn data_message_for_a_background_wake() {
        let mut m =
            serde_json::to_value(message("fcm-token", &wake(WakeMode::Background))).unwrap();
        // Data values are strings: the ssepush object travels as JSON text.
        let ssepush: Value =
            serde_json::from_str(m["message"]["data"]["ssepush"].as_str().unwrap()).unwrap();
        assert_eq!(
            ssepush,
            json!({"handoff": "h1", "pending": 2, "latestEventId": "9-0"})
        );
        m["message"]["data"]["ssepush"] = "…".into();
        assert_eq!(
            m,
            json!({"message": {
                "token": "fcm-token",
                "data": {"ssepush": "…"},
                "android": {"priority": "HIGH", "collapse_key": "handoff-h1", "ttl": "900s"},
            }})
        );
        assert!(m["message"].get("notification").is_none());
    }

    #[test]
    fn alert_wake_adds_a_notification() {
        let m = serde_json::to_value(message("t", &wake(WakeMode::Alert))).unwrap();
        assert_eq!(
            m["message"]["notification"],
            json!({"title": "New activity", "body": "2 new events"})
        );
        assert_eq!(m["message"]["android"]["priority"], "HIGH");
    }

    fn err(status: u16, code: &str, message: &str) -> Vec<u8> {
        json!({"error": {
            "code": status, "message": message, "status": "NOT_FOUND",
            "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}],
        }})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn classification() {
        assert_eq!(
            classify(200, br#"{"name": "projects/p/messages/1"}"#, None),
            Ok(())
        );
        assert_eq!(
            classify(
                404,
                &err(404, "UNREGISTERED", "Requested entity was not found."),
                None
            ),
            Err(PushError::Permanent("UNREGISTERED".into()))
        );
        assert_eq!(
            classify(404, b"", None),
            Err(PushError::Permanent("UNREGISTERED".into()))
        );
        assert!(
            classify(
                400,
                &err(
                    400,
                    "INVALID_ARGUMENT",
                    "The registration token is not a valid FCM registration token"
                ),
                None
            )
            .unwrap_err()
            .is_permanent()
        );
        // INVALID_ARGUMENT about our own message is our bug.
        assert!(matches!(
            classify(
                400,
                &err(
                    400,
                    "INVALID_ARGUMENT",
                    "Invalid value at 'message.android.ttl'"
                ),
                None
            ),
            Err(PushError::Config(_))
        ));
        assert!(
            classify(403, &err(403, "SENDER_ID_MISMATCH", "x"), None)
                .unwrap_err()
                .is_permanent()
        );
        assert_eq!(
            classify(
                429,
                &err(429, "QUOTA_EXCEEDED", "x"),
                Some(Duration::from_secs(2))
            ),
            Err(PushError::RetryAfter(Duration::from_secs(2)))
        );
        assert_eq!(
            classify(429, b"", None),
            Err(PushError::RetryAfter(DEFAULT_RETRY_AFTER))
        );
        assert!(matches!(
            classify(500, &err(500, "INTERNAL", "x"), None),
            Err(PushError::Transient(_))
        ));
        assert!(matches!(
            classify(503, &err(503, "UNAVAILABLE", "x"), None),
            Err(PushError::Transient(_))
        ));
        assert_eq!(
            classify(503, b"", Some(Duration::from_secs(7))),
            Err(PushError::RetryAfter(Duration::from_secs(7)))
        );
        assert!(matches!(
            classify(401, b"", None),
            Err(PushError::Config(_))
        ));
        assert!(matches!(
            classify(403, &err(403, "THIRD_PARTY_AUTH_ERROR", "x"), None),
            Err(PushError::Config(_))
        ));
    }

    #[test]
    fn assertion_and_token_request() {
        let key = ServiceAccountKey {
            project_id: "p".into(),
            client_email: "sa@p.iam.gserviceaccount.com".into(),
            private_key: "secret".into(),
            private_key_id: None,
            token_uri: "http://127.0.0.1:1/token".into(),
        };
        assert_eq!(
            serde_json::to_value(assertion_claims(&key, 100)).unwrap(),
            json!({"iss": "sa@p.iam.gserviceaccount.com", "scope": SCOPE,
                   "aud": "http://127.0.0.1:1/token", "iat": 100, "exp": 3700})
        );
        assert!(!format!("{key:?}").contains("secret"));
        assert_eq!(
            token_request_body("a.b.c"),
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=a.b.c"
        );
    }

    #[test]
    fn token_responses() {
        let resp = |status: u16, body: &str| HttpResponse {
            status,
            headers: http::HeaderMap::new(),
            body: Bytes::from(body.to_owned()),
        };
        let now = Instant::now();
        let t = parse_token_response(
            &resp(
                200,
                r#"{"access_token":"ya29.x","expires_in":3599,"token_type":"Bearer"}"#,
            ),
            now,
        )
        .unwrap();
        assert_eq!(t.token, "ya29.x");
        assert_eq!(t.refresh_at, now + Duration::from_secs(3599 - 300));
        assert!(matches!(
            parse_token_response(&resp(400, r#"{"error":"invalid_grant"}"#), now),
            Err(PushError::Config(_))
        ));
        assert!(matches!(
            parse_token_response(&resp(503, ""), now),
            Err(PushError::Transient(_))
        ));
    }

    #[test]
    fn settings_errors_are_config() {
        let missing = FcmSettings {
            service_account_path: "/nonexistent/sa.json".into(),
            ..FcmSettings::default()
        };
        assert!(matches!(
            FcmProvider::new(&missing),
            Err(PushError::Config(_))
        ));
        let s: FcmSettings =
            serde_json::from_value(json!({"service_account_path": "sa.json"})).unwrap();
        assert_eq!(s.timeout_secs, 10);
        assert_eq!(s.base_url, None);
    }
}
