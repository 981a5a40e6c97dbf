//! Reading a wake: the `ssepush` object ([`WakePayload`]) the proxy puts in every push, from
//! what each platform hands the app. The shapes are the proxy's own
//! (`ssepush_proxy::protocol::wake`).
//!
//! | platform | what the app receives | where the object is |
//! |---|---|---|
//! | APNs (background or alert) | the notification payload (`userInfo`) | `ssepush`, a JSON object next to `aps` |
//! | FCM HTTP v1 | the data message's `data` map (string values) | `data["ssepush"]`, the object as JSON text |
//! | Web Push | the push message, decrypted (RFC 8291) | `ssepush`, a JSON object |
//!
//! The object is `{"handoff", "pending", "latestEventId"}` on every platform
//! (`docs/protocol.md`, "Wakes"). A wake only says *that* something is waiting: the app then
//! checks in from its own last event id, never from the wake's.
//!
//! ```
//! use ssepush::client::wake;
//!
//! let userinfo = br#"{"aps":{"content-available":1},
//!                     "ssepush":{"handoff":"h_1","pending":2,"latestEventId":null}}"#;
//! let w = wake::from_apns(userinfo)?;
//! assert_eq!((w.handoff.as_str(), w.pending), ("h_1", 2));
//! # Ok::<_, ssepush::client::wake::WakeError>(())
//! ```

pub use ssepush_proxy::protocol::{ApnsPayload, FcmData, WakePayload, WebPushMessage};

use super::webpush::{UserAgentKeys, WebPushError};

/// Why a push could not be read as a wake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WakeError {
    /// The payload is not the platform's shape (or carries no `ssepush` object: not a wake
    /// from the proxy), with the parser's words.
    #[error("the push is not an ssepush wake: {0}")]
    NotAWake(String),
    /// A Web Push body these keys cannot decrypt.
    #[error(transparent)]
    WebPush(#[from] WebPushError),
}

fn not_a_wake(e: impl std::fmt::Display) -> WakeError {
    WakeError::NotAWake(e.to_string())
}

/// From an APNs notification payload (`{"aps": {…}, "ssepush": {…}}`), background or alert.
pub fn from_apns(payload: &[u8]) -> Result<WakePayload, WakeError> {
    let p: ApnsPayload = serde_json::from_slice(payload).map_err(not_a_wake)?;
    Ok(p.ssepush)
}

/// From the `data` map of an FCM data message, as the app's `onMessageReceived` gets it:
/// values are strings, so the object travels as JSON text under `ssepush`.
pub fn from_fcm_data<'a>(
    data: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<WakePayload, WakeError> {
    let ssepush = data
        .into_iter()
        .find_map(|(k, v)| (k == "ssepush").then(|| v.to_owned()))
        .ok_or_else(|| not_a_wake("the data message has no ssepush key"))?;
    FcmData { ssepush }.wake().map_err(not_a_wake)
}

/// From a decrypted Web Push message (`{"ssepush": {…}, "notification"?: {…}}`).
pub fn from_webpush(plaintext: &[u8]) -> Result<WakePayload, WakeError> {
    let m: WebPushMessage = serde_json::from_slice(plaintext).map_err(not_a_wake)?;
    Ok(m.ssepush)
}

/// From a Web Push body as the push service delivered it (`aes128gcm`), decrypted with the
/// subscription's keys.
pub fn from_webpush_encrypted(body: &[u8], keys: &UserAgentKeys) -> Result<WakePayload, WakeError> {
    from_webpush(&keys.decrypt(body)?)
}

#[cfg(test)]
mod tests {
    use ssepush_proxy::protocol::{FcmRequest, WakeMode};

    use super::*;

    fn wake() -> WakePayload {
        WakePayload {
            handoff: "h_1".into(),
            pending: 2,
            latest_event_id: Some("5-1.000000e1".parse().unwrap()),
            node: None,
            epoch: None,
        }
    }

    /// What the proxy sends, as each platform hands it to the app, reads back as the wake.
    #[test]
    fn every_platform_carries_the_same_object() {
        for mode in [WakeMode::Background, WakeMode::Alert] {
            let apns = serde_json::to_vec(&ApnsPayload::new(wake(), mode)).unwrap();
            assert_eq!(from_apns(&apns).unwrap(), wake());

            let fcm = FcmRequest::new("t", &wake(), mode, "h_1", std::time::Duration::ZERO);
            let data = [("ssepush", fcm.message.data.ssepush.as_str())];
            assert_eq!(from_fcm_data(data).unwrap(), wake());

            let keys = UserAgentKeys::generate();
            let plain = serde_json::to_vec(&WebPushMessage::new(wake(), mode)).unwrap();
            let body = super::super::webpush::encrypt(&plain, &keys.p256dh, &keys.auth).unwrap();
            assert_eq!(from_webpush_encrypted(&body, &keys).unwrap(), wake());
            // Someone else's keys cannot read it.
            assert!(matches!(
                from_webpush_encrypted(&body, &UserAgentKeys::generate()),
                Err(WakeError::WebPush(_))
            ));
        }
    }

    #[test]
    fn what_is_not_a_wake_says_so() {
        for bad in [&b"{not json"[..], br#"{"aps":{"content-available":1}}"#] {
            assert!(matches!(from_apns(bad), Err(WakeError::NotAWake(_))));
        }
        assert!(from_fcm_data([("other", "x")]).is_err());
        assert!(from_fcm_data([("ssepush", r#"{"pending":1}"#)]).is_err());
        assert!(
            from_webpush(br#"{"ssepush":{"handoff":"h","pending":1,"latestEventId":"x"}}"#)
                .is_err()
        );
        // No latestEventId yet: a wake for a handoff made before any event.
        let w = from_webpush(br#"{"ssepush":{"handoff":"h","pending":0,"latestEventId":null}}"#)
            .unwrap();
        assert_eq!(w.latest_event_id, None);
    }
}
