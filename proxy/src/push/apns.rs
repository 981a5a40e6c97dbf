//! APNs: wakes an iPhone through Apple's provider API.
//!
//! Two transports, one request model. [`ApnsMessage::payload`] pairs the body (the protocol's
//! [`ApnsPayload`]: `aps` and our `ssepush` object) with the a2 [`NotificationOptions`] that
//! become the `apns-*` headers, as an [`ApnsNotification`] that a2 sends as it is; nothing else
//! decides what is sent:
//!
//! * **Apple** — the `a2` crate, for `api.push.apple.com` / the sandbox (token `.p8` auth or a
//!   client certificate). a2 can only reach Apple's hosts.
//! * **Raw** — for any other endpoint (the simulated gateway): [`raw_request`] renders the same
//!   notification as the HTTP/2 request a2 would make, signed with our own cached ES256 provider
//!   token, over h2c (`http://`) or TLS with an optional extra root CA.
//!
//! [`classify`] maps Apple's status and `reason` to a [`PushError`] for both transports.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use a2::request::notification::{CollapseId, NotificationOptions, Priority, PushType};
use a2::request::payload::PayloadLike;
use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::http::{HttpClient, Versions, base_url, now_secs, retry_after};
use super::{PushError, PushProvider, PushTarget, Wake, WakeMode};
use crate::protocol::ApnsPayload;

/// Apple's limit on `apns-collapse-id`, in bytes.
pub const MAX_COLLAPSE_ID: usize = 64;
/// A provider token is reused this long. Apple rejects tokens older than an hour
/// (`ExpiredProviderToken`) and refreshed more often than every 20 minutes
/// (`TooManyProviderTokenUpdates`).
pub const PROVIDER_TOKEN_REFRESH: Duration = Duration::from_secs(50 * 60);
const PROVIDER_TOKEN_MIN_AGE: Duration = Duration::from_secs(20 * 60);
/// APNs rarely sends `Retry-After` with a 429; this is how long we back off then.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// `[apns]`. Token auth (`key_path` + `key_id` + `team_id`) or, for Apple's hosts only,
/// certificate auth (`certificate_path` + `certificate_key_path`, PEM; a `.p12` must be split
/// first, e.g. `openssl pkcs12 -in cert.p12 -nodes`, as a2 reads PKCS#12 only with OpenSSL).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApnsSettings {
    /// The `.p8` signing key file (`AuthKey_<KEYID>.p8`); never the key itself in config.
    pub key_path: PathBuf,
    pub key_id: String,
    /// The Apple developer team id: the provider token's `iss`.
    pub team_id: String,
    /// Default `apns-topic` (the app's bundle id) when the handoff names none.
    pub topic: String,
    /// `production` (default) or `sandbox`/`development`, when the handoff says nothing.
    pub environment: Option<String>,
    /// Base URL of another APNs endpoint (e.g. the simulated gateway `http://127.0.0.1:8070`);
    /// sent with the raw HTTP/2 transport and token auth. Absent: Apple's hosts via a2.
    pub endpoint: Option<String>,
    /// An extra root CA (PEM) trusted by the raw transport, e.g. the gateway's self-signed cert.
    pub ca_cert_path: Option<PathBuf>,
    /// Client certificate (PEM) for certificate auth to Apple's hosts.
    pub certificate_path: Option<PathBuf>,
    /// Its private key (PKCS#8 PEM).
    pub certificate_key_path: Option<PathBuf>,
    /// Per-request timeout. Default 10 s.
    pub timeout_secs: u64,
}

impl Default for ApnsSettings {
    fn default() -> Self {
        ApnsSettings {
            key_path: PathBuf::new(),
            key_id: String::new(),
            team_id: String::new(),
            topic: String::new(),
            environment: None,
            endpoint: None,
            ca_cert_path: None,
            certificate_path: None,
            certificate_key_path: None,
            timeout_secs: 10,
        }
    }
}

/// Which APNs environment a device token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApnsEnvironment {
    #[default]
    Production,
    Sandbox,
}

impl ApnsEnvironment {
    /// `production`, or `sandbox` / `development` (what apps report from their entitlements).
    pub fn parse(s: &str) -> Option<ApnsEnvironment> {
        match s.to_ascii_lowercase().as_str() {
            "production" => Some(ApnsEnvironment::Production),
            "sandbox" | "development" => Some(ApnsEnvironment::Sandbox),
            _ => None,
        }
    }
}

/// Longest APNs device token accepted, in hex digits: Apple's are 64 today (32 bytes) and Apple
/// says not to hard-code their size; 100 bytes leaves room to grow and still bounds the path.
pub const MAX_DEVICE_TOKEN_HEX: usize = 200;

/// Whether `token` can be an APNs device token: bytes in hex, so an even number of hex digits,
/// up to [`MAX_DEVICE_TOKEN_HEX`] (the length is not promised). Anything else must not reach a
/// URL path. The handoff check uses exactly this rule, and the OpenAPI document's `pattern` for
/// the token (on `protocol::PushTarget`) is tested against it.
pub fn is_device_token(token: &str) -> bool {
    (2..=MAX_DEVICE_TOKEN_HEX).contains(&token.len())
        && token.len().is_multiple_of(2)
        && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The `apns-collapse-id` for a wake's collapse id: as is when it fits Apple's 64 bytes, else
/// its SHA-256 in hex (64 characters), so distinct long ids stay distinct.
pub fn collapse_id(id: &str) -> String {
    if id.len() <= MAX_COLLAPSE_ID {
        id.to_owned()
    } else {
        sha2::Sha256::digest(id.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// One notification for one wake, owning everything the a2 options borrow.
#[derive(Clone, PartialEq)]
pub struct ApnsMessage {
    device_token: String,
    topic: String,
    collapse_id: String,
    /// Unix seconds after which APNs stops trying (`apns-expiration`).
    expiration: u64,
    mode: WakeMode,
    body: ApnsPayload,
}

impl std::fmt::Debug for ApnsMessage {
    // The device token is a secret: never in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsMessage")
            .field("topic", &self.topic)
            .field("collapse_id", &self.collapse_id)
            .field("expiration", &self.expiration)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl ApnsMessage {
    /// The notification for `wake` to `device_token` under `topic`, at unix time `now`.
    pub fn new(
        device_token: &str,
        topic: &str,
        wake: &Wake,
        now: u64,
    ) -> Result<ApnsMessage, PushError> {
        if !is_device_token(device_token) {
            // Apple's reason for the same token; the handoff can never be woken.
            return Err(PushError::Permanent(
                "BadDeviceToken (not a hex APNs token)".into(),
            ));
        }
        if topic.is_empty() {
            return Err(PushError::Config(
                "no apns-topic: set [apns] topic or give one in the handoff".into(),
            ));
        }
        Ok(ApnsMessage {
            device_token: device_token.to_owned(),
            topic: topic.to_owned(),
            collapse_id: collapse_id(&wake.collapse_id),
            expiration: now.saturating_add(wake.ttl.as_secs()),
            mode: wake.mode,
            body: ApnsPayload::new(wake.payload(), wake.mode),
        })
    }

    /// The body and the options: the one definition of what APNs receives.
    ///
    /// Background: `apns-push-type: background`, priority 5 (Apple refuses 10 for background
    /// pushes), body `{"aps": {"content-available": 1}, "ssepush": {…}}`. Alert: push type
    /// `alert`, priority 10, an `aps.alert`, and still `content-available` so the app also
    /// gets time to catch up.
    pub fn payload(&self) -> ApnsNotification<'_> {
        let (push_type, priority) = match self.mode {
            WakeMode::Background => (PushType::Background, Priority::Normal),
            WakeMode::Alert => (PushType::Alert, Priority::High),
        };
        let options = NotificationOptions {
            apns_id: None,
            apns_push_type: Some(push_type),
            apns_expiration: Some(self.expiration),
            apns_priority: Some(priority),
            apns_topic: Some(&self.topic),
            // Length checked by `collapse_id()`; CollapseId::new would only repeat that check.
            apns_collapse_id: Some(CollapseId {
                value: &self.collapse_id,
            }),
        };
        ApnsNotification {
            body: &self.body,
            options,
            device_token: &self.device_token,
        }
    }
}

/// What a2 sends: the protocol's body, serialised as it is, with the options a2 turns into
/// `apns-*` headers and the device token it puts in the path.
#[derive(Clone)]
pub struct ApnsNotification<'a> {
    pub body: &'a ApnsPayload,
    pub options: NotificationOptions<'a>,
    pub device_token: &'a str,
}

impl serde::Serialize for ApnsNotification<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.body.serialize(s)
    }
}

impl std::fmt::Debug for ApnsNotification<'_> {
    // a2 requires `Debug`; the device token stays out of it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsNotification")
            .field("body", self.body)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl PayloadLike for ApnsNotification<'_> {
    fn get_device_token(&self) -> &str {
        self.device_token
    }

    fn get_options(&self) -> &NotificationOptions<'_> {
        &self.options
    }
}

/// The raw transport's request for a notification: `POST {base}/3/device/{token}` with exactly
/// the headers a2 derives from the same options, and `authorization: bearer <provider token>`.
pub fn raw_request(
    base: &str,
    payload: &ApnsNotification<'_>,
    provider_token: &str,
) -> Result<http::Request<Bytes>, PushError> {
    let options = payload.get_options();
    let mut builder =
        http::Request::post(format!("{base}/3/device/{}", payload.get_device_token()))
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::AUTHORIZATION,
                format!("bearer {provider_token}"),
            );
    if let Some(priority) = &options.apns_priority {
        builder = builder.header("apns-priority", priority.to_string());
    }
    if let Some(id) = options.apns_id {
        builder = builder.header("apns-id", id);
    }
    if let Some(push_type) = &options.apns_push_type {
        builder = builder.header("apns-push-type", push_type.to_string());
    }
    if let Some(expiration) = options.apns_expiration {
        builder = builder.header("apns-expiration", expiration.to_string());
    }
    if let Some(collapse) = &options.apns_collapse_id {
        builder = builder.header("apns-collapse-id", collapse.value);
    }
    if let Some(topic) = options.apns_topic {
        builder = builder.header("apns-topic", topic);
    }
    let body = payload
        .clone()
        .to_json_string()
        .map_err(|e| PushError::Config(format!("APNs payload: {e}")))?;
    builder
        .body(Bytes::from(body))
        .map_err(|e| PushError::Config(format!("APNs request: {e}")))
}

/// Apple's answer as a [`PushError`]: `status`, the body's `reason`, and `Retry-After` if any.
pub fn classify(
    status: u16,
    reason: Option<&str>,
    retry_after: Option<Duration>,
) -> Result<(), PushError> {
    let reason_or = |default: &str| reason.unwrap_or(default).to_owned();
    match (status, reason) {
        (200, _) => Ok(()),
        // The token is dead or belongs to another app: no wake will ever get through.
        (410, _) => Err(PushError::Permanent(reason_or("Unregistered"))),
        (_, Some(r @ ("BadDeviceToken" | "Unregistered" | "DeviceTokenNotForTopic"))) => {
            Err(PushError::Permanent(r.to_owned()))
        }
        (429, _) => Err(PushError::RetryAfter(
            retry_after.unwrap_or(DEFAULT_RETRY_AFTER),
        )),
        (500..=599, _) => match retry_after {
            Some(d) => Err(PushError::RetryAfter(d)),
            None => Err(PushError::Transient(reason_or("InternalServerError"))),
        },
        // 400 (bad topic, collapse id, payload…), 403 (provider token or certificate), 404,
        // 405, 413: our request or credentials are wrong, not the phone.
        _ => Err(PushError::Config(format!(
            "APNs answered {status} {}",
            reason.unwrap_or("without a reason")
        ))),
    }
}

/// a2's result as a [`PushError`]: Apple's answers through [`classify`]; connection trouble is
/// transient; everything else (key, TLS, payload) is our configuration.
pub fn classify_a2(result: Result<a2::Response, a2::Error>) -> Result<(), PushError> {
    match result {
        Ok(_) => Ok(()),
        Err(a2::Error::ResponseError(response)) => {
            // a2's reason enum variants are spelled exactly as Apple's reason strings.
            let reason = response.error.map(|e| format!("{:?}", e.reason));
            classify(response.code, reason.as_deref(), None)
        }
        Err(e @ (a2::Error::ConnectionError(_) | a2::Error::ClientError(_))) => {
            Err(PushError::Transient(e.to_string()))
        }
        Err(e @ a2::Error::RequestTimeout(_)) => Err(PushError::Transient(e.to_string())),
        Err(e) => Err(PushError::Config(format!("APNs client: {e}"))),
    }
}

/// A signed ES256 provider token (`kid` = key id, `iss` = team id, `iat`).
pub fn sign_provider_token(
    key: &jsonwebtoken::EncodingKey,
    key_id: &str,
    team_id: &str,
    iat: u64,
) -> Result<String, PushError> {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(key_id.to_owned());
    /// Apple's provider-token claims: the team id and the issue time (Unix seconds).
    #[derive(Serialize)]
    struct Claims<'a> {
        iss: &'a str,
        iat: u64,
    }
    let claims = Claims { iss: team_id, iat };
    jsonwebtoken::encode(&header, &claims, key)
        .map_err(|e| PushError::Config(format!("signing the APNs provider token: {e}")))
}

/// The raw transport's provider token, signed once and reused for
/// [`PROVIDER_TOKEN_REFRESH`].
struct ProviderToken {
    key: jsonwebtoken::EncodingKey,
    key_id: String,
    team_id: String,
    /// `(iat, token)`.
    cached: Mutex<Option<(u64, String)>>,
}

impl ProviderToken {
    fn load(settings: &ApnsSettings) -> Result<ProviderToken, PushError> {
        let pem = read_file(&settings.key_path, "APNs key")?;
        let key = jsonwebtoken::EncodingKey::from_ec_pem(&pem).map_err(|e| {
            PushError::Config(format!(
                "APNs key {}: {e} (expected a PKCS#8 P-256 .p8)",
                settings.key_path.display()
            ))
        })?;
        let token = ProviderToken {
            key,
            key_id: settings.key_id.clone(),
            team_id: settings.team_id.clone(),
            cached: Mutex::new(None),
        };
        // Sign once now so a bad key fails at startup, not at the first wake.
        token.bearer(now_secs())?;
        Ok(token)
    }

    fn bearer(&self, now: u64) -> Result<String, PushError> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((iat, token)) = cached.as_ref()
            && *iat <= now
            && now - iat < PROVIDER_TOKEN_REFRESH.as_secs()
        {
            return Ok(token.clone());
        }
        let token = sign_provider_token(&self.key, &self.key_id, &self.team_id, now)?;
        *cached = Some((now, token.clone()));
        Ok(token)
    }

    /// Forgets the token after Apple called it expired, unless it is too young to replace
    /// (Apple throttles refreshes more often than every 20 minutes).
    fn expired(&self, now: u64) {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if cached
            .as_ref()
            .is_some_and(|(iat, _)| now.saturating_sub(*iat) >= PROVIDER_TOKEN_MIN_AGE.as_secs())
        {
            *cached = None;
        }
    }
}

// One per proxy: the variants' size difference costs nothing.
#[allow(clippy::large_enum_variant)]
enum Transport {
    Apple {
        production: a2::Client,
        sandbox: a2::Client,
    },
    Raw {
        base: String,
        http: HttpClient,
        token: ProviderToken,
    },
}

/// The APNs [`PushProvider`].
pub struct ApnsProvider {
    topic: String,
    environment: ApnsEnvironment,
    transport: Transport,
}

impl std::fmt::Debug for ApnsProvider {
    // Keys and tokens stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let transport = match &self.transport {
            Transport::Apple { .. } => "a2 (Apple)".to_owned(),
            Transport::Raw { base, .. } => format!("raw HTTP/2 to {base}"),
        };
        f.debug_struct("ApnsProvider")
            .field("topic", &self.topic)
            .field("environment", &self.environment)
            .field("transport", &transport)
            .finish()
    }
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, PushError> {
    std::fs::read(path).map_err(|e| PushError::Config(format!("{what} {}: {e}", path.display())))
}

impl ApnsProvider {
    pub fn new(settings: &ApnsSettings) -> Result<ApnsProvider, PushError> {
        let environment = match settings.environment.as_deref() {
            None | Some("") => ApnsEnvironment::Production,
            Some(e) => ApnsEnvironment::parse(e).ok_or_else(|| {
                PushError::Config(format!(
                    "[apns] environment {e:?}: expected production or sandbox"
                ))
            })?,
        };
        let timeout = Duration::from_secs(settings.timeout_secs.max(1));
        let token_auth = || {
            if settings.key_id.is_empty() || settings.team_id.is_empty() {
                return Err(PushError::Config(
                    "[apns] token auth needs key_path, key_id and team_id".into(),
                ));
            }
            Ok(())
        };
        let transport = match &settings.endpoint {
            Some(endpoint) if !endpoint.is_empty() => {
                if settings.certificate_path.is_some() {
                    return Err(PushError::Config(
                        "[apns] certificate auth only works with Apple's hosts; use token auth \
                         with an endpoint"
                            .into(),
                    ));
                }
                token_auth()?;
                Transport::Raw {
                    base: base_url(endpoint, "[apns] endpoint")?,
                    http: HttpClient::new(
                        settings.ca_cert_path.as_deref(),
                        Versions::Http2,
                        timeout,
                    )?,
                    token: ProviderToken::load(settings)?,
                }
            }
            _ => {
                let client = |endpoint: a2::Endpoint| -> Result<a2::Client, PushError> {
                    let mut config = a2::ClientConfig::new(endpoint);
                    config.request_timeout_secs = Some(timeout.as_secs());
                    let client = match (&settings.certificate_path, &settings.certificate_key_path)
                    {
                        (Some(cert), Some(key)) => a2::Client::certificate_parts(
                            &read_file(cert, "APNs certificate")?,
                            &read_file(key, "APNs certificate key")?,
                            config,
                        ),
                        (Some(_), None) | (None, Some(_)) => {
                            return Err(PushError::Config(
                                "[apns] certificate auth needs both certificate_path and \
                                 certificate_key_path"
                                    .into(),
                            ));
                        }
                        (None, None) => {
                            token_auth()?;
                            let pem = read_file(&settings.key_path, "APNs key")?;
                            a2::Client::token(
                                pem.as_slice(),
                                &settings.key_id,
                                &settings.team_id,
                                config,
                            )
                        }
                    };
                    client.map_err(|e| PushError::Config(format!("APNs client: {e}")))
                };
                Transport::Apple {
                    production: client(a2::Endpoint::Production)?,
                    sandbox: client(a2::Endpoint::Sandbox)?,
                }
            }
        };
        Ok(ApnsProvider {
            topic: settings.topic.clone(),
            environment,
            transport,
        })
    }
}

#[async_trait]
impl PushProvider for ApnsProvider {
    async fn send(&self, target: &PushTarget, wake: &Wake) -> Result<(), PushError> {
        let PushTarget::Apns {
            token,
            topic,
            environment,
        } = target
        else {
            return Err(PushError::Config("not an APNs target".into()));
        };
        let topic = topic
            .as_deref()
            .filter(|t| !t.is_empty())
            .unwrap_or(&self.topic);
        let now = now_secs();
        let message = ApnsMessage::new(token, topic, wake, now)?;
        let payload = message.payload();
        match &self.transport {
            Transport::Apple {
                production,
                sandbox,
            } => {
                let environment = match environment.as_deref() {
                    None | Some("") => self.environment,
                    Some(e) => ApnsEnvironment::parse(e).ok_or_else(|| {
                        PushError::Permanent(format!("unknown APNs environment {e:?}"))
                    })?,
                };
                let client = match environment {
                    ApnsEnvironment::Production => production,
                    ApnsEnvironment::Sandbox => sandbox,
                };
                classify_a2(client.send(payload).await)
            }
            Transport::Raw { base, http, token } => {
                let request = raw_request(base, &payload, &token.bearer(now)?)?;
                let response = http.send(request).await?;
                let reason = serde_json::from_slice::<serde_json::Value>(&response.body)
                    .ok()
                    .and_then(|v| v.get("reason")?.as_str().map(str::to_owned));
                if response.status == 403 && reason.as_deref() == Some("ExpiredProviderToken") {
                    token.expired(now);
                }
                classify(
                    response.status,
                    reason.as_deref(),
                    retry_after(&response.headers),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use ssepush_origin::EventId;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_800_000_000;

    fn wake(mode: WakeMode) -> Wake {
        Wake {
            handoff_id: "h1".into(),
            pending: 3,
            latest_event_id: Some(EventId::new(42, 0)),
            mode,
            collapse_id: "handoff-h1".into(),
            ttl: Duration::from_secs(3600),
            node: None,
            epoch: None,
        }
    }

    fn body(payload: &ApnsNotification<'_>) -> serde_json::Value {
        serde_json::from_str(&payload.clone().to_json_string().unwrap()).unwrap()
    }

    #[test]
    fn background_wake_payload_and_options() {
        let message =
            ApnsMessage::new(TOKEN, "com.example.app", &wake(WakeMode::Background), NOW).unwrap();
        let payload = message.payload();
        assert_eq!(
            body(&payload),
            json!({
                "aps": {"content-available": 1},
                "ssepush": {"handoff": "h1", "pending": 3, "latestEventId": "42-0"},
            })
        );
        assert_eq!(payload.device_token, TOKEN);
        let o = &payload.options;
        assert_eq!(o.apns_push_type, Some(PushType::Background));
        assert_eq!(
            o.apns_priority.as_ref().map(ToString::to_string).as_deref(),
            Some("5")
        );
        assert!(matches!(o.apns_priority, Some(Priority::Normal)));
        assert_eq!(o.apns_topic, Some("com.example.app"));
        assert_eq!(
            o.apns_collapse_id.as_ref().map(|c| c.value),
            Some("handoff-h1")
        );
        assert_eq!(o.apns_expiration, Some(NOW + 3600));
        assert_eq!(o.apns_id, None);
    }

    #[test]
    fn alert_wake_payload_and_options() {
        let mut w = wake(WakeMode::Alert);
        w.latest_event_id = None;
        w.pending = 1;
        let message = ApnsMessage::new(TOKEN, "com.example.app", &w, NOW).unwrap();
        let payload = message.payload();
        assert_eq!(
            body(&payload),
            json!({
                "aps": {
                    "alert": {"title": "New activity", "body": "1 new event"},
                    "content-available": 1,
                },
                "ssepush": {"handoff": "h1", "pending": 1, "latestEventId": null},
            })
        );
        assert_eq!(payload.options.apns_push_type, Some(PushType::Alert));
        assert!(matches!(
            payload.options.apns_priority,
            Some(Priority::High)
        ));
    }

    #[test]
    fn raw_request_is_the_a2_request() {
        let message =
            ApnsMessage::new(TOKEN, "com.example.app", &wake(WakeMode::Background), NOW).unwrap();
        let payload = message.payload();
        let req = raw_request("http://127.0.0.1:8070", &payload, "jwt.jwt.jwt").unwrap();
        assert_eq!(req.method(), http::Method::POST);
        assert_eq!(
            req.uri().to_string(),
            format!("http://127.0.0.1:8070/3/device/{TOKEN}")
        );
        let h = |name: &str| {
            req.headers()
                .get(name)
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(h("apns-push-type"), "background");
        assert_eq!(h("apns-priority"), "5");
        assert_eq!(h("apns-topic"), "com.example.app");
        assert_eq!(h("apns-collapse-id"), "handoff-h1");
        assert_eq!(h("apns-expiration"), (NOW + 3600).to_string());
        assert_eq!(h("authorization"), "bearer jwt.jwt.jwt");
        assert_eq!(h("content-type"), "application/json");
        assert!(req.headers().get("apns-id").is_none());
        let sent: serde_json::Value = serde_json::from_slice(req.body()).unwrap();
        assert_eq!(sent, body(&payload));
    }

    #[test]
    fn refuses_tokens_and_topics_it_cannot_send() {
        let w = wake(WakeMode::Background);
        assert!(
            ApnsMessage::new("../../etc", "t", &w, NOW)
                .unwrap_err()
                .is_permanent()
        );
        assert!(
            ApnsMessage::new("", "t", &w, NOW)
                .unwrap_err()
                .is_permanent()
        );
        assert!(matches!(
            ApnsMessage::new(TOKEN, "", &w, NOW),
            Err(PushError::Config(_))
        ));
        // The Debug of a message never shows the device token.
        let m = ApnsMessage::new(TOKEN, "t", &w, NOW).unwrap();
        assert!(!format!("{m:?}").contains(TOKEN));
    }

    #[test]
    fn long_collapse_ids_are_hashed_to_64() {
        assert_eq!(collapse_id("short"), "short");
        let long = "x".repeat(100);
        let c = collapse_id(&long);
        assert_eq!(c.len(), 64);
        assert_ne!(c, collapse_id(&"y".repeat(100)));
        let mut w = wake(WakeMode::Background);
        w.collapse_id = long;
        let m = ApnsMessage::new(TOKEN, "t", &w, NOW).unwrap();
        assert_eq!(m.payload().options.apns_collapse_id.unwrap().value, c);
    }

    #[test]
    fn classification() {
        assert_eq!(classify(200, None, None), Ok(()));
        assert_eq!(
            classify(410, Some("Unregistered"), None),
            Err(PushError::Permanent("Unregistered".into()))
        );
        assert_eq!(
            classify(410, None, None),
            Err(PushError::Permanent("Unregistered".into()))
        );
        for r in ["BadDeviceToken", "DeviceTokenNotForTopic"] {
            assert_eq!(
                classify(400, Some(r), None),
                Err(PushError::Permanent(r.into()))
            );
        }
        assert_eq!(
            classify(429, Some("TooManyRequests"), None),
            Err(PushError::RetryAfter(DEFAULT_RETRY_AFTER))
        );
        assert_eq!(
            classify(429, None, Some(Duration::from_secs(2))),
            Err(PushError::RetryAfter(Duration::from_secs(2)))
        );
        assert!(matches!(
            classify(500, Some("InternalServerError"), None),
            Err(PushError::Transient(_))
        ));
        assert!(matches!(
            classify(503, Some("ServiceUnavailable"), None),
            Err(PushError::Transient(_))
        ));
        assert_eq!(
            classify(503, None, Some(Duration::from_secs(5))),
            Err(PushError::RetryAfter(Duration::from_secs(5)))
        );
        for (status, reason) in [
            (403, "InvalidProviderToken"),
            (403, "ExpiredProviderToken"),
            (403, "BadCertificate"),
            (400, "BadCollapseId"),
            (400, "MissingTopic"),
            (413, "PayloadTooLarge"),
            (404, "BadPath"),
        ] {
            assert!(
                matches!(
                    classify(status, Some(reason), None),
                    Err(PushError::Config(_))
                ),
                "{status} {reason}"
            );
        }
    }

    #[test]
    fn a2_results_are_classified_the_same_way() {
        let response = |code: u16, reason: Option<a2::ErrorReason>| {
            Err(a2::Error::ResponseError(a2::Response {
                error: reason.map(|reason| a2::ErrorBody {
                    reason,
                    timestamp: None,
                }),
                apns_id: None,
                code,
            }))
        };
        assert_eq!(
            classify_a2(response(410, Some(a2::ErrorReason::Unregistered))),
            Err(PushError::Permanent("Unregistered".into()))
        );
        assert_eq!(
            classify_a2(response(400, Some(a2::ErrorReason::BadDeviceToken))),
            Err(PushError::Permanent("BadDeviceToken".into()))
        );
        assert_eq!(
            classify_a2(response(429, Some(a2::ErrorReason::TooManyRequests))),
            Err(PushError::RetryAfter(DEFAULT_RETRY_AFTER))
        );
        assert!(matches!(
            classify_a2(response(403, Some(a2::ErrorReason::InvalidProviderToken))),
            Err(PushError::Config(_))
        ));
        assert!(matches!(
            classify_a2(response(500, None)),
            Err(PushError::Transient(_))
        ));
        assert!(matches!(
            classify_a2(Err(a2::Error::RequestTimeout(10))),
            Err(PushError::Transient(_))
        ));
        assert_eq!(
            classify_a2(Ok(a2::Response {
                error: None,
                apns_id: None,
                code: 200
            })),
            Ok(())
        );
    }

    /// A fresh `.p8` in a temp file, and the matching public key.
    pub(crate) fn p8_key(name: &str) -> (PathBuf, p256::ecdsa::VerifyingKey) {
        use p256::pkcs8::{EncodePrivateKey, LineEnding};
        let key = p256::ecdsa::SigningKey::random(&mut rand_core_06::OsRng);
        let path =
            std::env::temp_dir().join(format!("ssepush-apns-{name}-{}.p8", std::process::id()));
        std::fs::write(&path, key.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes()).unwrap();
        (path, *key.verifying_key())
    }

    fn verify(
        token: &str,
        key: &p256::ecdsa::VerifyingKey,
    ) -> (serde_json::Value, serde_json::Value) {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use p256::ecdsa::signature::Verifier;
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let sig =
            p256::ecdsa::Signature::from_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).unwrap();
        key.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .expect("ES256 signature verifies with the .p8's public key");
        let json = |s: &str| serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap();
        (json(parts[0]), json(parts[1]))
    }

    #[test]
    fn provider_token_is_es256_cached_and_refreshed() {
        let (path, public) = p8_key("token");
        let settings = ApnsSettings {
            key_path: path.clone(),
            key_id: "KEY1234567".into(),
            team_id: "TEAM123456".into(),
            ..ApnsSettings::default()
        };
        let token = ProviderToken::load(&settings).unwrap();
        std::fs::remove_file(&path).unwrap();
        let first = token.bearer(NOW).unwrap();
        let (header, claims) = verify(&first, &public);
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["kid"], "KEY1234567");
        assert_eq!(claims, json!({"iss": "TEAM123456", "iat": NOW}));
        // Reused within 50 minutes, replaced after.
        assert_eq!(token.bearer(NOW + 49 * 60).unwrap(), first);
        let second = token.bearer(NOW + 50 * 60).unwrap();
        assert_ne!(second, first);
        assert_eq!(verify(&second, &public).1["iat"], NOW + 50 * 60);
        // "Expired" from Apple drops a token old enough to replace, never a young one.
        token.expired(NOW + 55 * 60);
        assert_eq!(token.bearer(NOW + 56 * 60).unwrap(), second);
        token.expired(NOW + 71 * 60);
        assert_eq!(
            verify(&token.bearer(NOW + 72 * 60).unwrap(), &public).1["iat"],
            NOW + 72 * 60
        );
    }

    #[test]
    fn settings_errors_are_config() {
        let missing = ApnsSettings {
            key_path: "/nonexistent/AuthKey.p8".into(),
            key_id: "K".into(),
            team_id: "T".into(),
            endpoint: Some("http://127.0.0.1:1".into()),
            ..ApnsSettings::default()
        };
        assert!(matches!(
            ApnsProvider::new(&missing),
            Err(PushError::Config(_))
        ));
        let no_ids = ApnsSettings {
            endpoint: Some("http://127.0.0.1:1".into()),
            ..ApnsSettings::default()
        };
        assert!(matches!(
            ApnsProvider::new(&no_ids),
            Err(PushError::Config(_))
        ));
        let bad_env = ApnsSettings {
            environment: Some("staging".into()),
            ..missing.clone()
        };
        assert!(matches!(
            ApnsProvider::new(&bad_env),
            Err(PushError::Config(_))
        ));
        let s: ApnsSettings =
            serde_json::from_value(json!({"key_path": "k.p8", "key_id": "K", "team_id": "T"}))
                .unwrap();
        assert_eq!(s.timeout_secs, 10);
        assert!(serde_json::from_value::<ApnsSettings>(json!({"keyfile": "x"})).is_err());
    }

    #[tokio::test]
    async fn a2_transport_builds_for_apple_hosts() {
        let (path, _) = p8_key("a2");
        let settings = ApnsSettings {
            key_path: path.clone(),
            key_id: "KEY1234567".into(),
            team_id: "TEAM123456".into(),
            topic: "com.example.app".into(),
            ..ApnsSettings::default()
        };
        let provider = ApnsProvider::new(&settings).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(format!("{provider:?}").contains("a2 (Apple)"));
        // A target from another platform is our bug, not the phone's.
        let fcm = PushTarget::Fcm { token: "x".into() };
        assert!(matches!(
            provider.send(&fcm, &wake(WakeMode::Background)).await,
            Err(PushError::Config(_))
        ));
    }
}
