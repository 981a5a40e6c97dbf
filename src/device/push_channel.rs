//! A simulated phone's push channel — what the OS does between the push service and the app:
//! the gateway's device stream (reopened when it breaks; the gateway queues pushes for the
//! device meanwhile), and from each delivery the payload the OS hands the app, read as a wake
//! with the same code an app uses ([`crate::client::wake`]).

use std::time::Duration;

use base64::Engine;
use futures::{Stream, StreamExt};
use ssepush_proxy::protocol::FcmRequest;

use crate::client::wake::{self, WakeError, WakePayload};
use crate::client::webpush::UserAgentKeys;
use crate::gateway::client::{GatewayClient, GatewayClientError};
use crate::gateway::{BodyEncoding, Delivery, Provider};

type Deliveries =
    std::pin::Pin<Box<dyn Stream<Item = Result<Delivery, GatewayClientError>> + Send>>;

/// The phone's push channel: the gateway's device stream for one token (or Web Push
/// subscription id).
pub struct PushChannel {
    gateway: GatewayClient,
    /// Device token or Web Push subscription id (a secret: never logged).
    token: String,
    stream: Option<Deliveries>,
}

impl PushChannel {
    /// A channel for `token`; nothing is opened until [`PushChannel::open`] or the first
    /// [`PushChannel::next`].
    pub fn new(gateway: GatewayClient, token: String) -> PushChannel {
        PushChannel {
            gateway,
            token,
            stream: None,
        }
    }

    /// Opens the device stream: once this returns, the gateway counts the device as listening
    /// (a TTL-0 push reaches it).
    pub async fn open(&mut self) -> Result<(), GatewayClientError> {
        let s = self.gateway.device_stream(&self.token).await?;
        self.stream = Some(Box::pin(s));
        Ok(())
    }

    /// The next push. Cancel-safe: a dropped call loses no push (the gateway keeps it queued
    /// until the stream hands it over).
    pub async fn next(&mut self) -> Delivery {
        loop {
            if self.stream.is_none() && self.open().await.is_err() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            match self.stream.as_mut().map(|s| s.next()) {
                Some(fut) => match fut.await {
                    Some(Ok(d)) => return d,
                    _ => self.stream = None,
                },
                None => continue,
            }
        }
    }
}

/// The wake in a delivery, as the app would read it from what its OS hands over: APNs' payload
/// as is, the `data` map of FCM's message, a Web Push body decrypted with the subscription's
/// `keys`.
pub fn wake_of(d: &Delivery, keys: Option<&UserAgentKeys>) -> Result<WakePayload, WakeError> {
    let not_a_wake = |what: &str| WakeError::NotAWake(what.to_owned());
    match (d.provider, d.body_encoding) {
        (Provider::Webpush, _) | (_, BodyEncoding::Base64url) => {
            let keys =
                keys.ok_or_else(|| not_a_wake("a Web Push body but no subscription keys"))?;
            let body = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(d.body.trim_end_matches('='))
                .map_err(|_| not_a_wake("the Web Push body is not base64url"))?;
            wake::from_webpush_encrypted(&body, keys)
        }
        (Provider::Apns, BodyEncoding::Text) => wake::from_apns(d.body.as_bytes()),
        (Provider::Fcm, BodyEncoding::Text) => {
            // The gateway records the whole v1 send request; the app gets `message.data`.
            let request: FcmRequest = serde_json::from_str(&d.body)
                .map_err(|e| WakeError::NotAWake(format!("not an FCM v1 wake request: {e}")))?;
            wake::from_fcm_data([("ssepush", request.message.data.ssepush.as_str())])
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::client::webpush::encrypt;

    fn delivery(provider: Provider, body: String, enc: BodyEncoding) -> Delivery {
        Delivery {
            seq: 1,
            time_ms: 0,
            provider,
            token: "t".into(),
            headers: BTreeMap::new(),
            body,
            body_encoding: enc,
            collapse_key: None,
        }
    }

    #[test]
    fn wakes_are_read_from_every_platforms_delivery() {
        let obj = json!({"handoff": "h1", "pending": 2, "latestEventId": "5-1"});
        let android = json!({"priority": "HIGH", "collapse_key": "h1", "ttl": "60s"});
        let apns = json!({"aps": {"content-available": 1}, "ssepush": obj}).to_string();
        let w = wake_of(&delivery(Provider::Apns, apns, BodyEncoding::Text), None).unwrap();
        assert_eq!((w.handoff.as_str(), w.pending), ("h1", 2));
        assert_eq!(w.latest_event_id, Some("5-1".parse().unwrap()));

        let fcm = json!({"message": {"token": "t", "data": {"ssepush": obj.to_string()},
                                     "android": android}})
        .to_string();
        let w = wake_of(&delivery(Provider::Fcm, fcm, BodyEncoding::Text), None).unwrap();
        assert_eq!(w.handoff, "h1");

        let keys = UserAgentKeys::generate();
        let plain = json!({"ssepush": obj}).to_string();
        let cipher = encrypt(plain.as_bytes(), &keys.p256dh, &keys.auth).unwrap();
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(cipher);
        let d = delivery(Provider::Webpush, body, BodyEncoding::Base64url);
        assert_eq!(wake_of(&d, Some(&keys)).unwrap().pending, 2);
        // Someone else's keys cannot read it; nobody's keys neither.
        assert!(wake_of(&d, Some(&UserAgentKeys::generate())).is_err());
        assert!(wake_of(&d, None).is_err());
        let not_a_wake = delivery(Provider::Apns, "{}".into(), BodyEncoding::Text);
        assert!(matches!(
            wake_of(&not_a_wake, None),
            Err(WakeError::NotAWake(_))
        ));
    }
}
