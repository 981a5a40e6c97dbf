//! The device client: the code a Rust app on a phone would use to stream from the origin and
//! hand the stream to the push proxy while it sleeps.
//!
//! The loop it supports (SPEC §1, §5):
//!
//! 1. **Stream**: [`DeviceClient::connect`] opens the origin's SSE stream with the last event id
//!    it holds (`Last-Event-ID`); every event goes through [`DeviceClient::accept`], which tracks
//!    that id and flags a replay (an id at or below the newest shown) so the app shows each
//!    event once, in order. An id-only block (the origin opens every fresh stream with its head
//!    that way) goes through [`DeviceClient::set_last_event_id`]: the position moves without an
//!    event, so a phone cut off before its first event still resumes or hands off exactly.
//! 2. **Hand off**: about to be suspended, the app drops its connection and calls
//!    [`DeviceClient::hand_off`] with its push target; the proxy watches the stream from the
//!    same id.
//! 3. **Wake**: the OS delivers a silent push; [`parse_wake`] reads its `ssepush` object
//!    (decrypting Web Push payloads with the subscription's keys).
//! 4. **Resume**: [`DeviceClient::catch_up`] reads what the proxy buffered after the app's id
//!    (a gap there means: ignore the buffer, the origin will replay), then
//!    [`DeviceClient::hand_back`] ends the handoff, and streaming continues at the origin from
//!    the app's own last id — the origin replays anything newer, so nothing falls between.
//!
//! The app's own last id is the single source of truth for the position: the proxy's cursor
//! is informative, never trusted over it.

use std::time::Duration;

use base64::Engine;
use futures::Stream;
use serde_json::{Value, json};
use ssepush_origin::Event;
use ssepush_origin::event::EventId;

use crate::client::{ClientError, Frame, OriginClient, Subscription};
use crate::gateway::faults::Provider;
use crate::gateway::record::{BodyEncoding, Delivery};
use crate::gateway::webpush_crypto::WebPushKeys;

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("cannot reach the proxy: {0}")]
    Http(#[from] reqwest::Error),
    #[error("proxy answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("unexpected answer from the proxy: {0}")]
    Decode(String),
    #[error(transparent)]
    Origin(#[from] ClientError),
}

/// Where the phone's wakes go.
#[derive(Clone, PartialEq)]
pub enum PushTarget {
    Apns {
        token: String,
        topic: Option<String>,
    },
    Fcm {
        token: String,
    },
    /// A W3C `PushSubscription`: endpoint and the browser's keys (base64url).
    WebPush {
        endpoint: String,
        p256dh: String,
        auth: String,
    },
}

impl std::fmt::Debug for PushTarget {
    // Push tokens and subscription keys are secrets: show the platform only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PushTarget({})", self.platform())
    }
}

impl PushTarget {
    pub fn platform(&self) -> &'static str {
        match self {
            PushTarget::Apns { .. } => "apns",
            PushTarget::Fcm { .. } => "fcm",
            PushTarget::WebPush { .. } => "webpush",
        }
    }

    /// The `push` object of `POST /v1/handoffs`.
    pub fn to_json(&self) -> Value {
        match self {
            PushTarget::Apns { token, topic } => {
                let mut v = json!({"platform": "apns", "token": token});
                if let Some(t) = topic {
                    v["topic"] = Value::String(t.clone());
                }
                v
            }
            PushTarget::Fcm { token } => json!({"platform": "fcm", "token": token}),
            PushTarget::WebPush {
                endpoint,
                p256dh,
                auth,
            } => json!({
                "platform": "webpush",
                "subscription": {"endpoint": endpoint, "expirationTime": null,
                                 "keys": {"p256dh": p256dh, "auth": auth}},
            }),
        }
    }
}

/// The `wake` object of a handoff.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WakeOptions {
    /// CEL over channel, type, id, data: only matching events wake the phone.
    pub filter: Option<String>,
    pub coalesce_ms: Option<u64>,
    pub max_per_hour: Option<u32>,
}

/// A live handoff as the phone keeps it.
#[derive(Clone, PartialEq)]
pub struct Handoff {
    pub id: String,
    /// The device's secret for the handoff's calls.
    pub token: String,
    /// The `lastEventId` it was created with.
    pub cursor: Option<EventId>,
}

impl std::fmt::Debug for Handoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handoff")
            .field("id", &self.id)
            .field("token", &"***")
            .field("cursor", &self.cursor)
            .finish()
    }
}

/// What [`DeviceClient::accept`] made of a delivered event.
#[derive(Debug, Clone, PartialEq)]
pub enum Accepted {
    /// Newer than anything seen: show it.
    New,
    /// At or below the last id: a replay the app must not show again.
    Replay,
}

/// What the proxy's buffer gave back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CatchUp {
    /// Buffered events after the phone's id, in order (empty when there was a gap).
    pub events: Vec<Event>,
    /// The buffer could not vouch for completeness: the origin must replay instead.
    pub gap: bool,
}

/// The `ssepush` object of a wake push.
#[derive(Debug, Clone, PartialEq)]
pub struct WakePayload {
    pub handoff: String,
    pub pending: u64,
    pub latest_event_id: Option<EventId>,
}

/// The proxy's device-facing API (shareable: one HTTP client for many phones).
#[derive(Debug, Clone)]
pub struct ProxyClient {
    http: reqwest::Client,
    base: String,
}

impl ProxyClient {
    pub fn new(base: &str) -> ProxyClient {
        Self::with_http(reqwest::Client::new(), base)
    }

    pub fn with_http(http: reqwest::Client, base: &str) -> ProxyClient {
        ProxyClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }
}

async fn check(resp: reqwest::Response) -> Result<Value, DeviceError> {
    let status = resp.status();
    let body = resp.text().await?;
    if !status.is_success() {
        return Err(DeviceError::Status {
            status: status.as_u16(),
            body,
        });
    }
    serde_json::from_str(&body).map_err(|e| DeviceError::Decode(e.to_string()))
}

fn parse_id(v: &Value) -> Result<Option<EventId>, DeviceError> {
    match v.as_str() {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|e| DeviceError::Decode(format!("bad event id {s:?}: {e}"))),
    }
}

/// One phone's stream: subscription, position, and the two servers it talks to.
#[derive(Debug, Clone)]
pub struct DeviceClient {
    origin: OriginClient,
    proxy: ProxyClient,
    sub: Subscription,
    /// The stream's last event id: where a reconnect, a handoff or a catch-up resumes.
    last: Option<EventId>,
    /// The newest event shown: anything at or below it is a replay.
    seen: Option<EventId>,
}

impl DeviceClient {
    /// A client for `sub`, starting after `sub.last_event_id` (None: from whatever the origin
    /// says is now — its head, in the id-only block that opens the stream).
    pub fn new(origin: OriginClient, proxy: ProxyClient, sub: Subscription) -> DeviceClient {
        DeviceClient {
            last: sub.last_event_id,
            seen: sub.last_event_id,
            origin,
            proxy,
            sub,
        }
    }

    pub fn last_event_id(&self) -> Option<EventId> {
        self.last
    }

    /// The stream URL the proxy will watch: the same `GET /v1/sse` the phone reads, without the
    /// position (the handoff's `lastEventId` carries it).
    pub fn stream_url(&self) -> String {
        let mut parts: Vec<String> = self
            .sub
            .channels
            .iter()
            .map(|c| format!("channel={}", encode(c)))
            .collect();
        if let Some(f) = &self.sub.filter {
            parts.push(format!("filter={}", encode(f)));
        }
        format!("{}/v1/sse?{}", self.origin.base(), parts.join("&"))
    }

    /// Opens the origin's SSE stream after the last id this client holds.
    pub async fn connect(
        &self,
    ) -> Result<impl Stream<Item = Result<Frame, ClientError>> + Send + use<>, ClientError> {
        self.origin.connect(&self.sub, self.last).await
    }

    /// Tracks a delivered event: a replay (at or below the newest shown) is flagged and moves
    /// nothing; a new one becomes the position.
    pub fn accept(&mut self, event: &Event) -> Accepted {
        if self.seen.is_some_and(|l| event.id <= l) {
            return Accepted::Replay;
        }
        self.seen = Some(event.id);
        self.last = Some(event.id);
        Accepted::New
    }

    /// An id-only block ([`Frame::LastEventId`]): WHATWG's EventSource sets its last event id to
    /// it without firing an event, and so does this client — the next connect, handoff or
    /// catch-up resumes from it (`None`: the server cleared it).
    pub fn set_last_event_id(&mut self, id: Option<EventId>) {
        self.last = id;
    }

    /// `POST /v1/handoffs` from the current position. Drop the origin connection first, so
    /// nothing is read after the id handed off.
    pub async fn hand_off(
        &self,
        push: &PushTarget,
        wake: &WakeOptions,
        ttl: Option<Duration>,
    ) -> Result<Handoff, DeviceError> {
        let mut wake_json = json!({});
        if let Some(f) = &wake.filter {
            wake_json["filter"] = Value::String(f.clone());
        }
        if let Some(c) = wake.coalesce_ms {
            wake_json["coalesceMs"] = c.into();
        }
        if let Some(m) = wake.max_per_hour {
            wake_json["maxPerHour"] = m.into();
        }
        let mut body = json!({
            "stream": {"url": self.stream_url(), "lastEventId": self.last.map(|l| l.to_string())},
            "push": push.to_json(),
            "wake": wake_json,
        });
        if let Some(t) = ttl {
            body["ttlSec"] = t.as_secs().max(1).into();
        }
        let resp = self
            .proxy
            .http
            .post(format!("{}/v1/handoffs", self.proxy.base))
            .json(&body)
            .send()
            .await?;
        let v = check(resp).await?;
        let field = |k: &str| {
            v[k].as_str()
                .map(str::to_owned)
                .ok_or_else(|| DeviceError::Decode(format!("no {k} in the handoff answer")))
        };
        Ok(Handoff {
            id: field("id")?,
            token: field("token")?,
            cursor: self.last,
        })
    }

    /// `GET /v1/handoffs/{id}/events` after this client's id: the buffered events the app has
    /// not seen (already passed through [`DeviceClient::accept`]'s bookkeeping by the caller).
    pub async fn catch_up(&self, h: &Handoff) -> Result<CatchUp, DeviceError> {
        let mut req = self
            .proxy
            .http
            .get(format!("{}/v1/handoffs/{}/events", self.proxy.base, h.id))
            .bearer_auth(&h.token);
        if let Some(l) = self.last {
            req = req.header("last-event-id", l.to_string());
        }
        let v = check(req.send().await?).await?;
        if !v["gap"].is_null() {
            return Ok(CatchUp {
                events: Vec::new(),
                gap: true,
            });
        }
        let events: Vec<Event> = serde_json::from_value(v["events"].clone())
            .map_err(|e| DeviceError::Decode(format!("events: {e}")))?;
        Ok(CatchUp { events, gap: false })
    }

    /// `DELETE /v1/handoffs/{id}`, acknowledging this client's id; returns the proxy's final
    /// cursor. Streaming then continues at the origin from [`DeviceClient::last_event_id`].
    pub async fn hand_back(&self, h: &Handoff) -> Result<Option<EventId>, DeviceError> {
        let mut req = self
            .proxy
            .http
            .delete(format!("{}/v1/handoffs/{}", self.proxy.base, h.id))
            .bearer_auth(&h.token);
        if let Some(l) = self.last {
            req = req.header("last-event-id", l.to_string());
        }
        let v = check(req.send().await?).await?;
        parse_id(&v["cursor"])
    }
}

/// Reads the `ssepush` object of a push as the device received it: APNs JSON, an FCM v1
/// message (data values are strings, so the object travels as JSON text), or a Web Push
/// payload decrypted with the subscription's keys (RFC 8291).
pub fn parse_wake(d: &Delivery, keys: Option<&WebPushKeys>) -> Result<WakePayload, String> {
    let payload: Value = match (d.provider, d.body_encoding) {
        (Provider::Webpush, _) | (_, BodyEncoding::Base64url) => {
            let keys = keys.ok_or("a Web Push payload but no subscription keys")?;
            let cipher = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(d.body.trim_end_matches('='))
                .map_err(|e| format!("payload is not base64url: {e}"))?;
            let plain = keys
                .decrypt(&cipher)
                .map_err(|e| format!("cannot decrypt: {e}"))?;
            serde_json::from_slice(&plain).map_err(|e| format!("decrypted payload: {e}"))?
        }
        _ => serde_json::from_str(&d.body).map_err(|e| format!("payload: {e}"))?,
    };
    let obj = if payload["ssepush"].is_object() {
        payload["ssepush"].clone()
    } else {
        let text = payload["data"]["ssepush"]
            .as_str()
            .or_else(|| payload["message"]["data"]["ssepush"].as_str())
            .ok_or("no ssepush object in the payload")?;
        serde_json::from_str(text).map_err(|e| format!("ssepush data: {e}"))?
    };
    let handoff = obj["handoff"]
        .as_str()
        .ok_or("ssepush.handoff missing")?
        .to_owned();
    let pending = obj["pending"].as_u64().ok_or("ssepush.pending missing")?;
    let latest_event_id = match obj["latestEventId"].as_str() {
        Some(s) => Some(
            s.parse()
                .map_err(|e| format!("ssepush.latestEventId: {e}"))?,
        ),
        None => None,
    };
    Ok(WakePayload {
        handoff,
        pending,
        latest_event_id,
    })
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

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
    fn wakes_are_read_from_every_platform() {
        let obj = json!({"handoff": "h1", "pending": 2, "latestEventId": "5-1"});
        let apns = json!({"aps": {"content-available": 1}, "ssepush": obj}).to_string();
        let w = parse_wake(&delivery(Provider::Apns, apns, BodyEncoding::Text), None).unwrap();
        assert_eq!(w.handoff, "h1");
        assert_eq!(w.pending, 2);
        assert_eq!(w.latest_event_id, Some(EventId::new(5, 1)));

        let fcm = json!({"token": "t", "data": {"ssepush": obj.to_string()}}).to_string();
        let w = parse_wake(&delivery(Provider::Fcm, fcm, BodyEncoding::Text), None).unwrap();
        assert_eq!(w.handoff, "h1");

        let keys = WebPushKeys::generate();
        let plain = json!({"ssepush": obj}).to_string();
        let cipher = crate::gateway::webpush_crypto::encrypt(
            plain.as_bytes(),
            &keys.p256dh,
            &keys.auth,
            None,
            None,
        )
        .unwrap();
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(cipher);
        let d = delivery(Provider::Webpush, body, BodyEncoding::Base64url);
        assert_eq!(parse_wake(&d, Some(&keys)).unwrap().pending, 2);
        // Someone else's keys cannot read it.
        assert!(parse_wake(&d, Some(&WebPushKeys::generate())).is_err());
        assert!(
            parse_wake(
                &delivery(Provider::Apns, "{}".into(), BodyEncoding::Text),
                None
            )
            .is_err()
        );
    }

    #[test]
    fn replays_do_not_move_the_position() {
        let mut c = DeviceClient::new(
            OriginClient::new("http://127.0.0.1:1"),
            ProxyClient::new("http://127.0.0.1:2"),
            Subscription {
                channels: vec!["sim.1".into(), "sim.all".into()],
                filter: None,
                last_event_id: Some(EventId::new(1, 5)),
            },
        );
        let ev = |seq| Event {
            id: EventId::new(1, seq),
            channel: "sim.1".into(),
            kind: "message".into(),
            data: Value::Null,
            time: 1,
        };
        assert_eq!(c.accept(&ev(5)), Accepted::Replay);
        assert_eq!(c.accept(&ev(6)), Accepted::New);
        assert_eq!(c.accept(&ev(4)), Accepted::Replay);
        assert_eq!(c.last_event_id(), Some(EventId::new(1, 6)));
        // An id-only block moves the position without an event; shown events stay shown.
        c.set_last_event_id(Some(EventId::new(1, 9)));
        assert_eq!(c.last_event_id(), Some(EventId::new(1, 9)));
        assert_eq!(c.accept(&ev(6)), Accepted::Replay);
        assert_eq!(c.accept(&ev(10)), Accepted::New);
        assert_eq!(
            c.stream_url(),
            "http://127.0.0.1:1/v1/sse?channel=sim.1&channel=sim.all"
        );
        let t = PushTarget::Apns {
            token: "secret".into(),
            topic: None,
        };
        assert!(!format!("{t:?}").contains("secret"));
    }
}
