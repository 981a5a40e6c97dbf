//! Push providers: how a wake reaches a phone. One small trait, [`PushProvider`]; one
//! implementation per platform (APNs, FCM HTTP v1, Web Push). The wake policy decides *when* to
//! push; a provider only knows *how*, and classifies what the service answered.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Where a phone receives pushes, as handed over in `POST /v1/handoffs` (`push` object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// Exactly the JSON of a W3C `PushSubscription`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebPushSubscription {
    pub endpoint: String,
    #[serde(default)]
    pub expiration_time: Option<u64>,
    pub keys: WebPushKeys,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebPushKeys {
    /// The phone's P-256 public key, base64url.
    pub p256dh: String,
    /// The 16-byte auth secret, base64url.
    pub auth: String,
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
