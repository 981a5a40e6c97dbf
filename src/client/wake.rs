//! Reading a wake: the `ssepush` object the proxy puts in every push, from the payload each
//! platform hands the app.
//!
//! | platform | what the app receives | where the object is |
//! |---|---|---|
//! | APNs (background or alert) | the notification payload (`userInfo`) | `ssepush`, a JSON object next to `aps` |
//! | FCM HTTP v1 | the data message's `data` map (string values) | `data["ssepush"]`, the object as JSON text |
//! | Web Push | the push message, decrypted (RFC 8291) | `ssepush`, a JSON object |
//!
//! The object is `{"handoff", "pending", "latestEventId"}` on every platform (see
//! `docs/protocol.md`). A wake only says *that* something is waiting: the app then catches up
//! from its own last event id, never from the wake's.
//!
//! ```
//! use ssepush::client::wake::Wake;
//!
//! let apns = br#"{"aps":{"content-available":1},
//!                 "ssepush":{"handoff":"h1","pending":2,"latestEventId":null}}"#;
//! let wake = Wake::from_apns(apns)?;
//! assert_eq!((wake.handoff.as_str(), wake.pending), ("h1", 2));
//! # Ok::<_, ssepush::client::wake::WakeError>(())
//! ```

use serde::Deserialize;
use serde_json::Value;
use ssepush_origin::event::EventId;

use super::webpush::{UserAgentKeys, WebPushError};

/// The `ssepush` object of a wake push.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Wake {
    /// The handoff this wake is for (the `id` of its `201`).
    pub handoff: String,
    /// Events the proxy had buffered after the handoff's cursor when it sent the wake.
    pub pending: u64,
    /// The newest event id the proxy had seen, if any.
    #[serde(default)]
    pub latest_event_id: Option<EventId>,
}

/// Why a push could not be read as a wake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WakeError {
    /// The payload is not JSON (or not the platform's shape).
    #[error("the push payload is not {0}")]
    Payload(&'static str),
    /// The payload has no `ssepush` object: not a wake from the proxy.
    #[error("the push carries no ssepush object")]
    NotAWake,
    /// The `ssepush` object is there but not `{"handoff", "pending", "latestEventId"}`.
    #[error("the ssepush object is malformed: {0}")]
    Malformed(String),
    /// A Web Push body these keys cannot decrypt.
    #[error(transparent)]
    WebPush(#[from] WebPushError),
}

impl Wake {
    /// From an APNs notification payload (`{"aps": {…}, "ssepush": {…}}`), background or alert.
    pub fn from_apns(payload: &[u8]) -> Result<Wake, WakeError> {
        let v: Value =
            serde_json::from_slice(payload).map_err(|_| WakeError::Payload("APNs JSON"))?;
        Self::from_object(v.get("ssepush"))
    }

    /// From the `data` map of an FCM data message, as the app's `onMessageReceived` gets it:
    /// values are strings, so the object travels as JSON text under `ssepush`.
    pub fn from_fcm_data<'a>(
        data: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Wake, WakeError> {
        let text = data
            .into_iter()
            .find_map(|(k, v)| (k == "ssepush").then_some(v))
            .ok_or(WakeError::NotAWake)?;
        serde_json::from_str(text).map_err(|e| WakeError::Malformed(e.to_string()))
    }

    /// From a decrypted Web Push message (`{"ssepush": {…}, "notification"?: {…}}`).
    pub fn from_webpush(plaintext: &[u8]) -> Result<Wake, WakeError> {
        let v: Value =
            serde_json::from_slice(plaintext).map_err(|_| WakeError::Payload("Web Push JSON"))?;
        Self::from_object(v.get("ssepush"))
    }

    /// From a Web Push body as the push service delivered it (`aes128gcm`), decrypted with the
    /// subscription's keys.
    pub fn from_webpush_encrypted(body: &[u8], keys: &UserAgentKeys) -> Result<Wake, WakeError> {
        Self::from_webpush(&keys.decrypt(body)?)
    }

    fn from_object(obj: Option<&Value>) -> Result<Wake, WakeError> {
        let obj = obj.filter(|o| o.is_object()).ok_or(WakeError::NotAWake)?;
        Wake::deserialize(obj).map_err(|e| WakeError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object() -> Value {
        json!({"handoff": "h1", "pending": 2, "latestEventId": "5-1.e1"})
    }

    #[test]
    fn every_platform_carries_the_same_object() {
        let want = Wake {
            handoff: "h1".into(),
            pending: 2,
            latest_event_id: Some("5-1.e1".parse().unwrap()),
        };
        let apns = json!({"aps": {"content-available": 1}, "ssepush": object()}).to_string();
        assert_eq!(Wake::from_apns(apns.as_bytes()).unwrap(), want);
        let alert = json!({"aps": {"alert": {"title": "t", "body": "b"}, "content-available": 1},
                           "ssepush": object()});
        assert_eq!(Wake::from_apns(alert.to_string().as_bytes()).unwrap(), want);

        let text = object().to_string();
        assert_eq!(
            Wake::from_fcm_data([("ssepush", text.as_str())]).unwrap(),
            want
        );

        let keys = UserAgentKeys::generate();
        let plain = json!({"ssepush": object(), "notification": {"title": "t"}}).to_string();
        let body =
            super::super::webpush::encrypt(plain.as_bytes(), &keys.p256dh, &keys.auth).unwrap();
        assert_eq!(Wake::from_webpush_encrypted(&body, &keys).unwrap(), want);
        // Someone else's keys cannot read it.
        assert!(matches!(
            Wake::from_webpush_encrypted(&body, &UserAgentKeys::generate()),
            Err(WakeError::WebPush(_))
        ));
    }

    #[test]
    fn what_is_not_a_wake_says_why() {
        assert_eq!(
            Wake::from_apns(b"{not json"),
            Err(WakeError::Payload("APNs JSON"))
        );
        assert_eq!(Wake::from_apns(br#"{"aps":{}}"#), Err(WakeError::NotAWake));
        assert_eq!(
            Wake::from_fcm_data([("other", "x")]),
            Err(WakeError::NotAWake)
        );
        assert!(matches!(
            Wake::from_fcm_data([("ssepush", r#"{"pending":1}"#)]),
            Err(WakeError::Malformed(_))
        ));
        assert!(matches!(
            Wake::from_webpush(br#"{"ssepush":{"handoff":"h","pending":1,"latestEventId":"x"}}"#),
            Err(WakeError::Malformed(_))
        ));
        // No latestEventId: a wake for a handoff made before any event.
        let w = Wake::from_webpush(br#"{"ssepush":{"handoff":"h","pending":0}}"#).unwrap();
        assert_eq!(w.latest_event_id, None);
    }
}
