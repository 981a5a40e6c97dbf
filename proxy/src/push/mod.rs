//! Push providers: how a wake reaches a phone. One small trait, [`PushProvider`]; one
//! implementation per platform (APNs, FCM HTTP v1, Web Push). The wake policy decides *when* to
//! push; a provider only knows *how*, and classifies what the service answered.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub mod apns;
pub mod fcm;
mod http;
pub mod webpush;

pub use apns::{ApnsProvider, ApnsSettings};
pub use fcm::{FcmProvider, FcmSettings};
pub use webpush::{WebPushProvider, WebPushSettings};

/// Where a phone receives pushes, as handed over in `POST /v1/handoffs` (`push` object).
/// Its `Debug` names the platform only: tokens and subscriptions are secrets.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "platform", rename_all = "lowercase")]
pub enum PushTarget {
    Apns {
        token: String,
        #[serde(default)]
        topic: Option<String>,
        /// `production` or `sandbox`/`development`.
        #[serde(default)]
        environment: Option<String>,
    },
    Fcm {
        token: String,
    },
    Webpush {
        subscription: WebPushSubscription,
    },
}

/// Exactly the JSON of a W3C `PushSubscription`. The endpoint is a capability URL and the keys
/// decrypt the phone's pushes: `Debug` shows neither.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebPushSubscription {
    pub endpoint: String,
    #[serde(default)]
    pub expiration_time: Option<u64>,
    pub keys: WebPushKeys,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct WebPushKeys {
    /// The phone's P-256 public key, base64url.
    pub p256dh: String,
    /// The 16-byte auth secret, base64url.
    pub auth: String,
}

impl std::fmt::Debug for PushTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PushTarget::Apns {
                topic, environment, ..
            } => f
                .debug_struct("Apns")
                .field("token", &"<redacted>")
                .field("topic", topic)
                .field("environment", environment)
                .finish(),
            PushTarget::Fcm { .. } => f.debug_struct("Fcm").field("token", &"<redacted>").finish(),
            PushTarget::Webpush { subscription } => f
                .debug_struct("Webpush")
                .field("subscription", subscription)
                .finish(),
        }
    }
}

impl std::fmt::Debug for WebPushSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebPushSubscription")
            .field("endpoint", &"<redacted>")
            .field("expiration_time", &self.expiration_time)
            .field("keys", &self.keys)
            .finish()
    }
}

impl std::fmt::Debug for WebPushKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebPushKeys(<redacted>)")
    }
}

/// Whether the wake is silent (the default) or shows the user something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WakeMode {
    #[default]
    Background,
    Alert,
}

/// One wake: what every provider puts in its payload as the `ssepush` object.
#[derive(Debug, Clone, PartialEq)]
pub struct Wake {
    pub handoff_id: String,
    /// Events buffered for the phone since its cursor.
    pub pending: u64,
    pub latest_event_id: Option<String>,
    pub mode: WakeMode,
    /// A newer wake for the same handoff replaces an undelivered one (APNs collapse id, FCM
    /// collapse_key, Web Push Topic).
    pub collapse_id: String,
    /// How long the push service should keep trying to deliver.
    pub ttl: Duration,
}

impl Wake {
    /// The `ssepush` object of every provider's payload.
    pub fn payload(&self) -> serde_json::Value {
        serde_json::json!({
            "handoff": self.handoff_id,
            "pending": self.pending,
            "latestEventId": self.latest_event_id,
        })
    }
}

/// What went wrong delivering a push, classified for the wake policy.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PushError {
    /// The token or subscription is dead (APNs 410 / BadDeviceToken, FCM UNREGISTERED, Web Push
    /// 404/410): end the handoff as `failed` with this reason; never push to it again.
    #[error("permanent: {0}")]
    Permanent(String),
    /// The service asked us to slow down (429, or 503 with Retry-After).
    #[error("rate limited; retry after {0:?}")]
    RetryAfter(Duration),
    /// Network error or 5xx: retry with backoff.
    #[error("transient: {0}")]
    Transient(String),
    /// Our own configuration is wrong (bad credentials, missing topic): not the phone's fault.
    #[error("configuration: {0}")]
    Config(String),
}

impl PushError {
    pub fn is_permanent(&self) -> bool {
        matches!(self, PushError::Permanent(_))
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            PushError::RetryAfter(d) => Some(*d),
            _ => None,
        }
    }

    /// The label used in metrics (`wakes_total{outcome=…}`).
    pub fn outcome(&self) -> &'static str {
        match self {
            PushError::Permanent(_) => "permanent",
            PushError::RetryAfter(_) => "rate_limited",
            PushError::Transient(_) => "transient",
            PushError::Config(_) => "config",
        }
    }
}

/// A push service. Implementations must never log the target's token or keys.
#[async_trait]
pub trait PushProvider: Send + Sync + 'static {
    /// Sends one wake; `Ok` means the service accepted it.
    async fn send(&self, target: &PushTarget, wake: &Wake) -> Result<(), PushError>;
}

/// The configured providers, one per platform; a platform without settings has none, and its
/// handoffs should be refused up front ([`Providers::supports`]).
#[derive(Clone, Default)]
pub struct Providers {
    pub apns: Option<Arc<dyn PushProvider>>,
    pub fcm: Option<Arc<dyn PushProvider>>,
    pub webpush: Option<Arc<dyn PushProvider>>,
    /// The VAPID application server key (base64url, uncompressed P-256) that browsers must
    /// subscribe with, when Web Push is configured. Public: serve it to apps.
    pub vapid_public_key: Option<String>,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Providers")
            .field("apns", &self.apns.is_some())
            .field("fcm", &self.fcm.is_some())
            .field("webpush", &self.webpush.is_some())
            .finish()
    }
}

impl Providers {
    /// Builds a provider for every platform that has settings. Reads key files (and may create
    /// the VAPID key), so call it once at startup; errors are [`PushError::Config`].
    pub fn from_settings(
        apns: Option<&ApnsSettings>,
        fcm: Option<&FcmSettings>,
        webpush: Option<&WebPushSettings>,
    ) -> Result<Providers, PushError> {
        let mut providers = Providers::default();
        if let Some(s) = apns {
            providers.apns = Some(Arc::new(ApnsProvider::new(s)?));
        }
        if let Some(s) = fcm {
            providers.fcm = Some(Arc::new(FcmProvider::new(s)?));
        }
        if let Some(s) = webpush {
            let p = WebPushProvider::new(s)?;
            providers.vapid_public_key = Some(p.public_key().to_owned());
            providers.webpush = Some(Arc::new(p));
        }
        Ok(providers)
    }

    /// The provider for `target`'s platform, if configured.
    pub fn get(&self, target: &PushTarget) -> Option<&Arc<dyn PushProvider>> {
        match target {
            PushTarget::Apns { .. } => self.apns.as_ref(),
            PushTarget::Fcm { .. } => self.fcm.as_ref(),
            PushTarget::Webpush { .. } => self.webpush.as_ref(),
        }
    }

    pub fn supports(&self, target: &PushTarget) -> bool {
        self.get(target).is_some()
    }
}

#[async_trait]
impl PushProvider for Providers {
    async fn send(&self, target: &PushTarget, wake: &Wake) -> Result<(), PushError> {
        match self.get(target) {
            Some(p) => p.send(target, wake).await,
            None => Err(PushError::Config(
                "no push provider is configured for this platform".into(),
            )),
        }
    }
}

/// What an alert-mode wake shows: every provider uses the same words.
pub(crate) fn alert_text(wake: &Wake) -> (String, String) {
    let body = match wake.pending {
        1 => "1 new event".to_owned(),
        n => format!("{n} new events"),
    };
    ("New activity".to_owned(), body)
}

#[cfg(test)]
mod redaction_tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_tokens_or_keys() {
        let targets = [
            PushTarget::Apns {
                token: "a1b2c3secret".into(),
                topic: Some("com.example".into()),
                environment: None,
            },
            PushTarget::Fcm {
                token: "fcmsecret".into(),
            },
            PushTarget::Webpush {
                subscription: WebPushSubscription {
                    endpoint: "https://push.example/capabilitysecret".into(),
                    expiration_time: None,
                    keys: WebPushKeys {
                        p256dh: "p256secret".into(),
                        auth: "authsecret".into(),
                    },
                },
            },
        ];
        for t in &targets {
            let shown = format!("{t:?} {t:#?}");
            assert!(!shown.contains("secret"), "{shown}");
        }
    }
}
