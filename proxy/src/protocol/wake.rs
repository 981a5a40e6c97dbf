//! What a wake carries to the phone, per platform. Every platform carries the same
//! [`WakePayload`] (the `ssepush` object); around it:
//!
//! * **APNs** — the notification body [`ApnsPayload`]:
//!   `{"aps": {"content-available": 1}, "ssepush": {…}}`, plus `aps.alert` in alert mode. (The
//!   `apns-*` headers are not part of the body: see `push::apns`.)
//! * **FCM HTTP v1** — the `messages:send` body [`FcmRequest`]: a data message whose
//!   `data.ssepush` is the payload's JSON *text* (FCM data values are strings), Android priority
//!   `HIGH`, the collapse key and TTL, plus a `notification` in alert mode. The phone receives
//!   the `data` map ([`FcmData`]).
//! * **Web Push** — the plaintext [`WebPushMessage`] the browser decrypts (RFC 8291):
//!   `{"ssepush": {…}}`, plus a `notification` in alert mode for the service worker to show.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use ssepush_origin::EventId;

use super::handoff::WakeMode;

/// The `ssepush` object of every wake.
///
/// ```json
/// {"handoff": "h_5f…", "pending": 3, "latestEventId": "1795546555192-0.5f3e9a21"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct WakePayload {
    /// The handoff's id: check in at `GET /v1/handoffs/{handoff}/events`.
    pub handoff: String,
    /// Events buffered for the phone after its cursor when the wake was sent.
    pub pending: u64,
    /// The newest id the proxy had received (`null` when none yet, e.g. a wake for a gap).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub latest_event_id: Option<EventId>,
    /// The proxy node that sent the wake (diagnostics: which fleet member acted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// That node's ownership epoch of the handoff: it grows each time the handoff changes
    /// hands, so wakes of one handoff never carry one epoch from two nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

/// What an alert-mode wake shows (APNs `aps.alert`, FCM `notification`, the Web Push
/// `notification` a service worker passes to `showNotification`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Notification {
    pub title: String,
    pub body: String,
}

impl Notification {
    /// The words every provider uses: "New activity", "1 new event" / "N new events".
    pub fn new_events(pending: u64) -> Notification {
        let body = match pending {
            1 => "1 new event".to_owned(),
            n => format!("{n} new events"),
        };
        Notification {
            title: "New activity".to_owned(),
            body,
        }
    }

    fn for_mode(mode: WakeMode, pending: u64) -> Option<Notification> {
        (mode == WakeMode::Alert).then(|| Notification::new_events(pending))
    }
}

/// The APNs notification body (Apple: "Generating a remote notification").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApnsPayload {
    pub aps: Aps,
    pub ssepush: WakePayload,
}

/// The `aps` dictionary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Aps {
    /// Alert mode only: what the user sees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<Notification>,
    /// Always 1: the app is woken in the background to catch up (alert mode too).
    #[serde(rename = "content-available")]
    pub content_available: u8,
}

impl ApnsPayload {
    /// The body for a wake in `mode`.
    pub fn new(wake: WakePayload, mode: WakeMode) -> ApnsPayload {
        ApnsPayload {
            aps: Aps {
                alert: Notification::for_mode(mode, wake.pending),
                content_available: 1,
            },
            ssepush: wake,
        }
    }
}

/// The FCM HTTP v1 `messages:send` body: `{"message": {…}}`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FcmRequest {
    pub message: FcmMessage,
}

impl std::fmt::Debug for FcmRequest {
    // The registration token is a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FcmRequest")
            .field("data", &self.message.data)
            .field("android", &self.message.android)
            .field("notification", &self.message.notification)
            .finish_non_exhaustive()
    }
}

/// FCM's `Message` resource, with the fields a wake sets.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FcmMessage {
    /// The registration token.
    pub token: String,
    pub data: FcmData,
    pub android: AndroidConfig,
    /// Alert mode only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<Notification>,
}

/// The data map the phone receives: `ssepush` is the [`WakePayload`] as JSON text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FcmData {
    pub ssepush: String,
}

impl FcmData {
    pub fn new(wake: &WakePayload) -> FcmData {
        FcmData {
            // Serialising a struct of strings and integers cannot fail.
            ssepush: serde_json::to_string(wake).unwrap_or_default(),
        }
    }

    /// The wake inside, as the phone reads it.
    pub fn wake(&self) -> Result<WakePayload, serde_json::Error> {
        serde_json::from_str(&self.ssepush)
    }
}

/// FCM's `AndroidConfig`, with the fields a wake sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AndroidConfig {
    /// `HIGH`, so a dozing phone wakes.
    pub priority: AndroidPriority,
    /// A newer wake for the same handoff replaces an undelivered one.
    pub collapse_key: String,
    /// How long FCM keeps an undelivered wake: a protobuf `Duration` in JSON (`"3600s"`).
    pub ttl: String,
}

/// FCM's `AndroidMessagePriority`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "UPPERCASE")]
pub enum AndroidPriority {
    Normal,
    High,
}

impl FcmRequest {
    /// The message for a wake in `mode` to the registration `token`.
    pub fn new(
        token: &str,
        wake: &WakePayload,
        mode: WakeMode,
        collapse_key: &str,
        ttl: Duration,
    ) -> FcmRequest {
        FcmRequest {
            message: FcmMessage {
                token: token.to_owned(),
                data: FcmData::new(wake),
                android: AndroidConfig {
                    priority: AndroidPriority::High,
                    collapse_key: collapse_key.to_owned(),
                    ttl: format!("{}s", ttl.as_secs()),
                },
                notification: Notification::for_mode(mode, wake.pending),
            },
        }
    }
}

/// The Web Push plaintext (before RFC 8291 encryption; what the service worker's
/// `event.data.json()` returns).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebPushMessage {
    pub ssepush: WakePayload,
    /// Alert mode only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<Notification>,
}

impl WebPushMessage {
    pub fn new(wake: WakePayload, mode: WakeMode) -> WebPushMessage {
        WebPushMessage {
            notification: Notification::for_mode(mode, wake.pending),
            ssepush: wake,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn wake() -> WakePayload {
        WakePayload {
            handoff: "h1".into(),
            pending: 2,
            latest_event_id: Some(EventId::new(9, 1)),
            node: None,
            epoch: None,
        }
    }

    #[test]
    fn apns_bodies() {
        assert_eq!(
            serde_json::to_value(ApnsPayload::new(wake(), WakeMode::Background)).unwrap(),
            json!({"aps": {"content-available": 1},
                   "ssepush": {"handoff": "h1", "pending": 2, "latestEventId": "9-1"}})
        );
        let alert = ApnsPayload::new(wake(), WakeMode::Alert);
        let v = serde_json::to_value(&alert).unwrap();
        assert_eq!(
            v["aps"],
            json!({"alert": {"title": "New activity", "body": "2 new events"}, "content-available": 1})
        );
        assert_eq!(serde_json::from_value::<ApnsPayload>(v).unwrap(), alert);
    }

    #[test]
    fn fcm_messages_carry_the_wake_as_text() {
        let r = FcmRequest::new(
            "tok",
            &wake(),
            WakeMode::Background,
            "h1",
            Duration::from_secs(3600),
        );
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            json!({"message": {
                "token": "tok",
                "data": {"ssepush": "{\"handoff\":\"h1\",\"pending\":2,\"latestEventId\":\"9-1\"}"},
                "android": {"priority": "HIGH", "collapse_key": "h1", "ttl": "3600s"},
            }})
        );
        assert_eq!(r.message.data.wake().unwrap(), wake());
        assert!(!format!("{r:?}").contains("tok\""));
        let alert = FcmRequest::new("t", &wake(), WakeMode::Alert, "h1", Duration::ZERO);
        assert_eq!(
            alert.message.notification,
            Some(Notification::new_events(2))
        );
    }

    #[test]
    fn web_push_plaintext() {
        assert_eq!(
            serde_json::to_value(WebPushMessage::new(wake(), WakeMode::Background)).unwrap(),
            json!({"ssepush": {"handoff": "h1", "pending": 2, "latestEventId": "9-1"}})
        );
        let mut one = wake();
        one.pending = 1;
        one.latest_event_id = None;
        assert_eq!(
            serde_json::to_value(WebPushMessage::new(one, WakeMode::Alert)).unwrap(),
            json!({"ssepush": {"handoff": "h1", "pending": 1, "latestEventId": null},
                   "notification": {"title": "New activity", "body": "1 new event"}})
        );
    }
}
