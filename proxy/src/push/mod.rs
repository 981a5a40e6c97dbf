//! Push providers: how a wake reaches a phone. One small trait, [`PushProvider`]; one
//! implementation per platform (APNs, FCM HTTP v1, Web Push). The wake policy decides *when* to
//! push; a provider only knows *how*, and classifies what the service answered.

use std::time::Duration;

use async_trait::async_trait;
use ssepush_origin::EventId;

use crate::protocol::WakePayload;

pub mod apns;
pub mod endpoint;
pub mod fcm;
mod http;
mod providers;
pub mod webpush;

pub use apns::{ApnsProvider, ApnsSettings};
pub use endpoint::EndpointPolicy;
pub use fcm::{FcmProvider, FcmSettings};
pub use providers::{Providers, providers_all};
pub use webpush::{WebPushProvider, WebPushSettings};

// The push target and the wake mode are wire shapes: they live in the protocol.
pub use crate::protocol::{PushTarget, WakeMode, WebPushKeys, WebPushSubscription};

/// One wake: what every provider puts in its payload as the `ssepush` object.
#[derive(Debug, Clone, PartialEq)]
pub struct Wake {
    pub handoff_id: String,
    /// Events buffered for the phone since its cursor.
    pub pending: u64,
    pub latest_event_id: Option<EventId>,
    pub mode: WakeMode,
    /// A newer wake for the same handoff replaces an undelivered one (APNs collapse id, FCM
    /// collapse_key, Web Push Topic).
    pub collapse_id: String,
    /// How long the push service should keep trying to deliver.
    pub ttl: Duration,
    /// The sending node and its epoch for the handoff (the payload's `node` and `epoch`).
    pub node: Option<String>,
    pub epoch: Option<u64>,
}

impl Wake {
    /// The `ssepush` object of every provider's payload.
    pub fn payload(&self) -> WakePayload {
        WakePayload {
            handoff: self.handoff_id.clone(),
            pending: self.pending,
            latest_event_id: self.latest_event_id,
            node: self.node.clone(),
            epoch: self.epoch,
        }
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
