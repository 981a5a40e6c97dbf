//! Web Push: wakes a browser, PWA or UnifiedPush distributor by RFC 8030 delivery to the
//! subscription's endpoint.
//!
//! The body is the `ssepush` JSON encrypted per RFC 8291 (`aes128gcm`, RFC 8188) for the
//! subscription's `p256dh` and `auth` — by the `web-push-native` crate, whose builder also sets
//! `TTL` and `Content-Encoding`. We add VAPID (RFC 8292) ourselves, an ES256 JWT with
//! `aud` = the endpoint's origin, so the key stays in our own type (loaded from a file or
//! generated once and persisted), plus `Urgency: high` and a `Topic` derived from the collapse
//! id so a newer wake replaces an undelivered one.
//!
//! [`build_request`] and [`classify`] are plain functions; the provider only adds the transport.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use bytes::Bytes;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::endpoint::{EndpointPolicy, GlobalResolver, UNREACHABLE};
use super::http::{HttpClient, Versions, now_secs, retry_after};
use super::{PushError, PushProvider, PushTarget, Wake, WebPushSubscription};
use crate::protocol::WebPushMessage;

/// How long a VAPID token is valid. RFC 8292 allows at most 24 hours; push services differ in
/// how much clock skew they tolerate, so stay well under.
pub const VAPID_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// RFC 8030 §5.4: a `Topic` is at most 32 characters of the base64url alphabet.
pub const MAX_TOPIC: usize = 32;
/// After a 429 / 503 without `Retry-After`.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(10);

/// `[webpush]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebPushSettings {
    /// The VAPID P-256 private key: PKCS#8 PEM, SEC1 PEM (`EC PRIVATE KEY`), or the raw
    /// 32-byte scalar in base64url (as `web-push generate-vapid-keys` prints it). It must
    /// exist: a missing file stops start-up rather than minting a new key, which would break
    /// every browser subscription bound to the old one. Make one with
    /// `ssepush proxy gen-vapid-key PATH`.
    pub vapid_key_path: PathBuf,
    /// VAPID `sub`: `mailto:…` or `https://…`, how a push service reaches the operator.
    pub subject: String,
    /// An extra root CA (PEM) to trust, e.g. a test push service's self-signed certificate.
    pub ca_cert_path: Option<PathBuf>,
    /// Per-request timeout. Default 10 s.
    pub timeout_secs: u64,
}

impl Default for WebPushSettings {
    fn default() -> Self {
        WebPushSettings {
            vapid_key_path: PathBuf::new(),
            subject: String::new(),
            ca_cert_path: None,
            timeout_secs: 10,
        }
    }
}

/// The VAPID identity: the signing key and its public key as `k=` wants it.
#[derive(Clone)]
pub struct VapidKey {
    /// PKCS#8 DER, as jsonwebtoken signs with.
    der: Vec<u8>,
    /// Uncompressed P-256 point, base64url without padding: the application server key.
    public: String,
}

impl std::fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl VapidKey {
    pub fn from_secret(secret: &p256::SecretKey) -> Result<VapidKey, PushError> {
        let der = secret
            .to_pkcs8_der()
            .map_err(|e| PushError::Config(format!("VAPID key: {e}")))?;
        Ok(VapidKey {
            der: der.as_bytes().to_vec(),
            public: URL_SAFE_NO_PAD.encode(secret.public_key().to_encoded_point(false).as_bytes()),
        })
    }

    /// Parses any of the formats [`WebPushSettings::vapid_key_path`] accepts.
    pub fn parse(text: &str) -> Result<VapidKey, PushError> {
        let text = text.trim();
        let secret = if text.contains("-----BEGIN PRIVATE KEY-----") {
            p256::SecretKey::from_pkcs8_pem(text).map_err(|e| e.to_string())
        } else if text.contains("-----BEGIN EC PRIVATE KEY-----") {
            p256::SecretKey::from_sec1_pem(text).map_err(|e| e.to_string())
        } else {
            URL_SAFE_NO_PAD
                .decode(text.trim_end_matches('='))
                .map_err(|e| e.to_string())
                .and_then(|b| p256::SecretKey::from_slice(&b).map_err(|e| e.to_string()))
        }
        .map_err(|e| PushError::Config(format!("VAPID key: {e}")))?;
        VapidKey::from_secret(&secret)
    }

    /// Reads the key file. A missing file is an error that says how to make one: a key is
    /// generated only on request ([`VapidKey::generate`]), never as a fallback.
    pub fn load(path: &Path) -> Result<VapidKey, PushError> {
        let config = |e: &dyn std::fmt::Display| {
            PushError::Config(format!("[webpush] vapid_key_path {}: {e}", path.display()))
        };
        match std::fs::read_to_string(path) {
            Ok(text) => VapidKey::parse(&text).map_err(|e| config(&e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(config(
                &"no such file (a new key would orphan every browser subscription made with \
                  the old one; create one on purpose with `ssepush proxy gen-vapid-key PATH`)",
            )),
            Err(e) => Err(config(&e)),
        }
    }

    /// Creates a new key at `path` (PKCS#8 PEM, mode 0600, its directory created), refusing
    /// to replace a file that is already there. What `ssepush proxy gen-vapid-key` runs.
    pub fn generate(path: &Path) -> Result<VapidKey, PushError> {
        let config = |e: &dyn std::fmt::Display| {
            PushError::Config(format!("VAPID key {}: {e}", path.display()))
        };
        let secret = p256::SecretKey::random(&mut rand_core_06::OsRng);
        let pem = secret
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| config(&e))?;
        write_private(path, pem.as_bytes()).map_err(|e| config(&e))?;
        tracing::info!(path = %path.display(), "generated a VAPID key");
        VapidKey::from_secret(&secret)
    }

    pub fn public_key(&self) -> &str {
        &self.public
    }

    /// `Authorization: vapid t=<JWT>, k=<public key>` for an endpoint of `origin`.
    pub fn authorization(
        &self,
        origin: &str,
        subject: &str,
        now: u64,
    ) -> Result<String, PushError> {
        /// RFC 8292 §2: the push service's origin, an expiry (Unix seconds) and a contact.
        #[derive(Serialize)]
        struct Claims<'a> {
            aud: &'a str,
            exp: u64,
            sub: &'a str,
        }
        let claims = Claims {
            aud: origin,
            exp: now + VAPID_LIFETIME.as_secs(),
            sub: subject,
        };
        let t = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
            &claims,
            &jsonwebtoken::EncodingKey::from_ec_der(&self.der),
        )
        .map_err(|e| PushError::Config(format!("signing the VAPID token: {e}")))?;
        Ok(format!("vapid t={t}, k={}", self.public))
    }
}

/// Writes a new private file (mode 0600) via a temporary name, so a reader never sees half a
/// key and a second proxy starting at once does not overwrite the first one's key.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    // hard_link fails if the key appeared meanwhile: keep the one already there.
    let linked = std::fs::hard_link(&tmp, path);
    std::fs::remove_file(&tmp)?;
    linked
}

/// The origin (`scheme://host[:port]`) of an endpoint: the VAPID `aud`. Default ports are
/// left out, as browsers serialise origins.
pub fn origin(endpoint: &http::Uri) -> Option<String> {
    let scheme = endpoint.scheme_str()?;
    let host = endpoint.host()?;
    Some(match (scheme, endpoint.port_u16()) {
        ("https", Some(443)) | ("http", Some(80)) | (_, None) => format!("{scheme}://{host}"),
        (_, Some(port)) => format!("{scheme}://{host}:{port}"),
    })
}

/// The `Topic` for a collapse id: itself when it is already ≤ 32 base64url characters, else
/// the first 32 characters of its SHA-256 in base64url.
pub fn topic(collapse_id: &str) -> String {
    let url_safe = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    if !collapse_id.is_empty()
        && collapse_id.len() <= MAX_TOPIC
        && collapse_id.bytes().all(url_safe)
    {
        collapse_id.to_owned()
    } else {
        let mut t = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(collapse_id.as_bytes()));
        t.truncate(MAX_TOPIC);
        t
    }
}

/// The plaintext every Web Push wake carries ([`WebPushMessage`]): `{"ssepush": {…}}`, plus a
/// `notification` the service worker can show in alert mode.
pub fn plaintext(wake: &Wake) -> Vec<u8> {
    // A struct of strings and integers always serialises.
    serde_json::to_vec(&WebPushMessage::new(wake.payload(), wake.mode)).unwrap_or_default()
}

/// Subscription keys are base64url; some senders pad them or use the standard alphabet.
fn decode_key(s: &str) -> Option<Vec<u8>> {
    let s = s.trim().trim_end_matches('=');
    URL_SAFE_NO_PAD
        .decode(s)
        .ok()
        .or_else(|| {
            URL_SAFE
                .decode(format!("{s}{}", "=".repeat((4 - s.len() % 4) % 4)))
                .ok()
        })
        .or_else(|| {
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(s)
                .ok()
        })
}

/// The complete push request for a wake to a subscription. A subscription we cannot use
/// (bad endpoint or keys) is [`PushError::Permanent`]: it will never work.
pub fn build_request(
    subscription: &WebPushSubscription,
    wake: &Wake,
    vapid: &VapidKey,
    subject: &str,
    now: u64,
) -> Result<http::Request<Bytes>, PushError> {
    let bad = |what: &str| PushError::Permanent(format!("invalid subscription: {what}"));
    let endpoint: http::Uri = subscription
        .endpoint
        .parse()
        .map_err(|_| bad("endpoint is not a URL"))?;
    if !matches!(endpoint.scheme_str(), Some("https" | "http")) {
        return Err(bad("endpoint is not http(s)"));
    }
    let aud = origin(&endpoint).ok_or_else(|| bad("endpoint has no host"))?;
    let ua_public = decode_key(&subscription.keys.p256dh)
        .and_then(|b| p256::PublicKey::from_sec1_bytes(&b).ok())
        .ok_or_else(|| bad("p256dh is not a P-256 public key"))?;
    let auth: [u8; 16] = decode_key(&subscription.keys.auth)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("auth is not 16 bytes"))?;
    let request = web_push_native::WebPushBuilder::new(
        endpoint,
        ua_public,
        web_push_native::Auth::from(auth),
    )
    .with_valid_duration(wake.ttl)
    .build(plaintext(wake))
    .map_err(|e| PushError::Config(format!("Web Push encryption: {e}")))?;
    let (mut parts, body) = request.into_parts();
    let header = |v: String| {
        http::HeaderValue::try_from(v).map_err(|e| PushError::Config(format!("header: {e}")))
    };
    parts.headers.insert(
        http::header::AUTHORIZATION,
        header(vapid.authorization(&aud, subject, now)?)?,
    );
    parts
        .headers
        .insert("urgency", http::HeaderValue::from_static("high"));
    parts
        .headers
        .insert("topic", header(topic(&wake.collapse_id))?);
    Ok(http::Request::from_parts(parts, Bytes::from(body)))
}

/// The push service's answer as a [`PushError`] (RFC 8030 §5, RFC 8292 §5).
pub fn classify(status: u16, retry_after: Option<Duration>) -> Result<(), PushError> {
    match status {
        200..=202 => Ok(()),
        404 | 410 => Err(PushError::Permanent("subscription expired".into())),
        413 => Err(PushError::Config(
            "payload too large for the push service".into(),
        )),
        429 => Err(PushError::RetryAfter(
            retry_after.unwrap_or(DEFAULT_RETRY_AFTER),
        )),
        500..=599 => match retry_after {
            Some(d) => Err(PushError::RetryAfter(d)),
            None => Err(PushError::Transient(format!(
                "push service answered {status}"
            ))),
        },
        // 400 (malformed), 401/403 (VAPID refused, or not the key the subscription was made
        // with): our side.
        _ => Err(PushError::Config(format!(
            "push service refused the request ({status})"
        ))),
    }
}

/// The Web Push [`PushProvider`]. Endpoints are client-chosen: every send is held to the
/// [`EndpointPolicy`] (the URL before sending, every resolved address when connecting), and a
/// network failure is reported only as [`UNREACHABLE`].
pub struct WebPushProvider {
    vapid: VapidKey,
    subject: String,
    policy: EndpointPolicy,
    http: HttpClient,
}

impl std::fmt::Debug for WebPushProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebPushProvider")
            .field("vapid", &self.vapid)
            .field("subject", &self.subject)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl WebPushProvider {
    /// Loads (or creates) the VAPID key; `policy` says where wakes may go (`[push]`, see
    /// [`crate::settings::Settings::push_endpoint_policy`]).
    pub fn new(
        settings: &WebPushSettings,
        policy: EndpointPolicy,
    ) -> Result<WebPushProvider, PushError> {
        if !(settings.subject.starts_with("mailto:") || settings.subject.starts_with("https:")) {
            return Err(PushError::Config(
                "[webpush] subject must be a mailto: or https: URI".into(),
            ));
        }
        if settings.vapid_key_path.as_os_str().is_empty() {
            return Err(PushError::Config(
                "[webpush] vapid_key_path is required".into(),
            ));
        }
        Ok(WebPushProvider {
            vapid: VapidKey::load(&settings.vapid_key_path)?,
            subject: settings.subject.clone(),
            http: HttpClient::with_resolver(
                settings.ca_cert_path.as_deref(),
                Versions::Any,
                Duration::from_secs(settings.timeout_secs.max(1)),
                GlobalResolver {
                    allow_private: policy.allow_private,
                },
            )?,
            policy,
        })
    }

    /// The application server key browsers subscribe with (base64url).
    pub fn public_key(&self) -> &str {
        self.vapid.public_key()
    }
}

#[async_trait]
impl PushProvider for WebPushProvider {
    async fn send(&self, target: &PushTarget, wake: &Wake) -> Result<(), PushError> {
        let PushTarget::Webpush { subscription } = target else {
            return Err(PushError::Config("not a Web Push target".into()));
        };
        // IP literals never reach the connecting resolver: the URL is checked here, each time
        // (a record from before a policy change is held to the current one).
        let url = reqwest::Url::parse(&subscription.endpoint).map_err(|_| {
            PushError::Permanent("invalid subscription: endpoint is not a URL".into())
        })?;
        self.policy
            .check_url(&url)
            .map_err(|e| PushError::Permanent(format!("push endpoint not allowed: {e}")))?;
        let request = build_request(subscription, wake, &self.vapid, &self.subject, now_secs())?;
        let response = self.http.send(request).await.map_err(|e| match e {
            // Refused, unresolvable, reset, timed out or a TLS failure all read the same in
            // `lastError`, so it never tells open ports from closed ones; the log has the cause.
            PushError::Transient(detail) => {
                tracing::debug!(%detail, "Web Push endpoint unreachable");
                PushError::Transient(UNREACHABLE.into())
            }
            other => other,
        })?;
        classify(response.status, retry_after(&response.headers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::{WakeMode, WebPushKeys};
    use ssepush_origin::EventId;

    const NOW: u64 = 1_800_000_000;

    fn wake(mode: WakeMode) -> Wake {
        Wake {
            handoff_id: "h1".into(),
            pending: 4,
            latest_event_id: Some(EventId::new(7, 0)),
            mode,
            collapse_id: "handoff-h1".into(),
            ttl: Duration::from_secs(600),
            node: None,
            epoch: None,
        }
    }

    /// A phone's side: a fresh subscription keypair and auth secret.
    fn phone(endpoint: &str) -> (p256::SecretKey, [u8; 16], WebPushSubscription) {
        let secret = p256::SecretKey::random(&mut rand_core_06::OsRng);
        let mut auth = [0u8; 16];
        rand_core_06::RngCore::fill_bytes(&mut rand_core_06::OsRng, &mut auth);
        let sub = WebPushSubscription {
            endpoint: endpoint.into(),
            expiration_time: None,
            keys: WebPushKeys {
                p256dh: URL_SAFE_NO_PAD
                    .encode(secret.public_key().to_encoded_point(false).as_bytes()),
                auth: URL_SAFE_NO_PAD.encode(auth),
            },
        };
        (secret, auth, sub)
    }

    fn vapid() -> VapidKey {
        VapidKey::from_secret(&p256::SecretKey::random(&mut rand_core_06::OsRng)).unwrap()
    }

    #[test]
    fn encrypted_wake_decrypts_with_the_subscription_keys() {
        let (secret, auth, sub) = phone("https://push.example.net/wpush/v2/abc");
        let req = build_request(
            &sub,
            &wake(WakeMode::Background),
            &vapid(),
            "mailto:ops@example.com",
            NOW,
        )
        .unwrap();
        let plain = web_push_native::decrypt(
            req.body().to_vec(),
            &secret,
            &web_push_native::Auth::from(auth),
        )
        .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&plain).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"ssepush": {"handoff": "h1", "pending": 4, "latestEventId": "7-0"}})
        );
        // Another phone's keys cannot read it.
        let (other, other_auth, _) = phone("https://x");
        assert!(
            web_push_native::decrypt(
                req.body().to_vec(),
                &other,
                &web_push_native::Auth::from(other_auth)
            )
            .is_err()
        );
    }

    #[test]
    fn request_headers() {
        let (_, _, sub) = phone("https://push.example.net:8443/wpush/v2/abc");
        let key = vapid();
        let req = build_request(
            &sub,
            &wake(WakeMode::Alert),
            &key,
            "mailto:ops@example.com",
            NOW,
        )
        .unwrap();
        assert_eq!(req.method(), http::Method::POST);
        assert_eq!(req.uri(), "https://push.example.net:8443/wpush/v2/abc");
        let h = |name: &str| {
            req.headers()
                .get(name)
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(h("ttl"), "600");
        assert_eq!(h("urgency"), "high");
        assert_eq!(h("topic"), "handoff-h1");
        assert_eq!(h("content-encoding"), "aes128gcm");
        let auth = h("authorization");
        let (t, k) = auth
            .strip_prefix("vapid t=")
            .and_then(|rest| rest.split_once(", k="))
            .unwrap();
        assert_eq!(k, key.public_key());
        // The JWT verifies with k and carries the endpoint's origin.
        let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&URL_SAFE_NO_PAD.decode(k).unwrap())
            .unwrap();
        let parts: Vec<&str> = t.split('.').collect();
        let sig =
            p256::ecdsa::Signature::from_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).unwrap();
        p256::ecdsa::signature::Verifier::verify(
            &vk,
            format!("{}.{}", parts[0], parts[1]).as_bytes(),
            &sig,
        )
        .unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            claims,
            serde_json::json!({"aud": "https://push.example.net:8443", "exp": NOW + 12 * 3600,
                               "sub": "mailto:ops@example.com"})
        );
    }

    #[test]
    fn topics_and_origins() {
        assert_eq!(topic("handoff-h1"), "handoff-h1");
        let long = topic(&"x".repeat(40));
        assert_eq!(long.len(), 32);
        assert!(
            long.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(topic("a:b"), "a:b");
        assert_eq!(topic("a:b").len(), 32);
        let o = |s: &str| origin(&s.parse().unwrap()).unwrap();
        assert_eq!(
            o("https://fcm.googleapis.com/fcm/send/x"),
            "https://fcm.googleapis.com"
        );
        assert_eq!(o("https://h:443/x"), "https://h");
        assert_eq!(o("http://127.0.0.1:8070/wp/1"), "http://127.0.0.1:8070");
    }

    #[test]
    fn unusable_subscriptions_are_permanent() {
        let (_, _, good) = phone("https://push.example.net/x");
        let w = wake(WakeMode::Background);
        let mut bad_endpoint = good.clone();
        bad_endpoint.endpoint = "ftp://push.example.net/x".into();
        let mut bad_key = good.clone();
        bad_key.keys.p256dh = "AAAA".into();
        let mut bad_auth = good.clone();
        bad_auth.keys.auth = URL_SAFE_NO_PAD.encode([0u8; 8]);
        for sub in [bad_endpoint, bad_key, bad_auth] {
            assert!(
                build_request(&sub, &w, &vapid(), "mailto:a@b", NOW)
                    .unwrap_err()
                    .is_permanent()
            );
        }
        // Padded keys are fine.
        let mut padded = good;
        padded.keys.auth.push_str("==");
        assert!(build_request(&padded, &w, &vapid(), "mailto:a@b", NOW).is_ok());
    }

    #[test]
    fn classification() {
        for ok in [200, 201, 202] {
            assert_eq!(classify(ok, None), Ok(()));
        }
        for gone in [404, 410] {
            assert_eq!(
                classify(gone, None),
                Err(PushError::Permanent("subscription expired".into()))
            );
        }
        assert!(matches!(classify(413, None), Err(PushError::Config(_))));
        assert!(matches!(classify(401, None), Err(PushError::Config(_))));
        assert!(matches!(classify(403, None), Err(PushError::Config(_))));
        assert_eq!(
            classify(429, Some(Duration::from_secs(2))),
            Err(PushError::RetryAfter(Duration::from_secs(2)))
        );
        assert_eq!(
            classify(429, None),
            Err(PushError::RetryAfter(DEFAULT_RETRY_AFTER))
        );
        assert!(matches!(classify(500, None), Err(PushError::Transient(_))));
        assert!(matches!(classify(502, None), Err(PushError::Transient(_))));
    }

    #[test]
    fn vapid_key_is_generated_only_on_request_and_reloaded() {
        let dir = std::env::temp_dir().join(format!("ssepush-vapid-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("vapid.pem");
        let err = VapidKey::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("vapid_key_path") && err.contains("gen-vapid-key"),
            "{err}"
        );
        assert!(!dir.exists(), "loading a missing key created its directory");
        let a = VapidKey::generate(&path).unwrap();
        assert!(VapidKey::generate(&path).is_err(), "a key was overwritten");
        let b = VapidKey::load(&path).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(!format!("{a:?}").contains("der"));
        // The raw base64url scalar and SEC1 PEM formats load too.
        let secret = p256::SecretKey::random(&mut rand_core_06::OsRng);
        let raw = URL_SAFE_NO_PAD.encode(secret.to_bytes());
        let sec1 = secret.to_sec1_pem(LineEnding::LF).unwrap();
        assert_eq!(
            VapidKey::parse(&raw).unwrap().public_key(),
            VapidKey::parse(&sec1).unwrap().public_key()
        );
        assert!(VapidKey::parse("garbage").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn settings() {
        let bad_subject = WebPushSettings {
            vapid_key_path: "/tmp/x.pem".into(),
            subject: "ops@example.com".into(),
            ..WebPushSettings::default()
        };
        assert!(matches!(
            WebPushProvider::new(&bad_subject, EndpointPolicy::permissive()),
            Err(PushError::Config(_))
        ));
        let s: WebPushSettings = serde_json::from_value(
            serde_json::json!({"vapid_key_path": "v.pem", "subject": "mailto:a@b"}),
        )
        .unwrap();
        assert_eq!(s.timeout_secs, 10);
    }
}
