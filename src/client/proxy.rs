//! The push proxy's device-facing API: hand a stream off, catch up from the proxy's buffer,
//! hand the stream back (`docs/protocol.md`, "The handoff API").
//!
//! [`ProxyClient`] is stateless and shareable (one HTTP client for many phones); the position a
//! handoff starts from and the one a catch-up or handback acknowledges are the caller's — an
//! app keeps its own last event id ([`super::device::DeviceClient`] does that bookkeeping).
//!
//! ```no_run
//! use ssepush::client::proxy::{HandoffRequest, ProxyClient, PushTarget, WakeOptions};
//!
//! # async fn run() -> Result<(), ssepush::client::proxy::ProxyError> {
//! let proxy = ProxyClient::new("http://127.0.0.1:8090");
//! let handoff = proxy
//!     .hand_off(&HandoffRequest {
//!         stream_url: "http://127.0.0.1:8080/v1/sse?channel=chat.*".into(),
//!         last_event_id: Some("1795546555192-0.5f3e9a21".parse().unwrap()),
//!         push: PushTarget::Apns { token: "0a1b…".into(), topic: None },
//!         wake: WakeOptions::default(),
//!         ttl: None,
//!     })
//!     .await?;
//! // … asleep; a wake arrives …
//! let caught_up = proxy.catch_up(&handoff, handoff.cursor).await?;
//! let final_cursor = proxy.hand_back(&handoff, handoff.cursor).await?;
//! # let _ = (caught_up, final_cursor);
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use serde_json::{Value, json};
use ssepush_origin::Event;
use ssepush_origin::event::EventId;

/// Why a proxy call failed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot reach the proxy: {0}")]
    Http(#[from] reqwest::Error),
    /// Any non-2xx answer, with its body (the proxy's `{"error": {"code", "message"}}`).
    #[error("proxy answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("unexpected answer from the proxy: {0}")]
    Decode(String),
}

/// Where the phone's wakes go: the `push` object of `POST /v1/handoffs`.
#[derive(Clone, PartialEq)]
pub enum PushTarget {
    /// An APNs device token (hex) and, optionally, the app's bundle id as `apns-topic`.
    Apns {
        token: String,
        topic: Option<String>,
    },
    /// An FCM registration token.
    Fcm { token: String },
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
    /// `apns`, `fcm` or `webpush`: the request's `push.platform`.
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

/// The `wake` object of a handoff; `None` fields take the proxy's defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WakeOptions {
    /// CEL over `channel`, `type`, `id`, `data`: only matching events wake the phone.
    pub filter: Option<String>,
    /// Milliseconds a burst is collected into one wake.
    pub coalesce_ms: Option<u64>,
    /// The phone's hourly wake budget.
    pub max_per_hour: Option<u32>,
}

/// `POST /v1/handoffs`: what the phone hands over.
#[derive(Debug, Clone, PartialEq)]
pub struct HandoffRequest {
    /// The stream the proxy watches: the same URL the phone reads, without a position.
    pub stream_url: String,
    /// The phone's last event id: the proxy watches from there.
    pub last_event_id: Option<EventId>,
    pub push: PushTarget,
    pub wake: WakeOptions,
    /// How long the proxy keeps the handoff (whole seconds, at least 1); `None`: its default.
    pub ttl: Option<Duration>,
}

impl HandoffRequest {
    /// The request body.
    pub fn to_json(&self) -> Value {
        let mut wake = json!({});
        if let Some(f) = &self.wake.filter {
            wake["filter"] = Value::String(f.clone());
        }
        if let Some(c) = self.wake.coalesce_ms {
            wake["coalesceMs"] = c.into();
        }
        if let Some(m) = self.wake.max_per_hour {
            wake["maxPerHour"] = m.into();
        }
        let mut body = json!({
            "stream": {"url": self.stream_url,
                       "lastEventId": self.last_event_id.map(|l| l.to_string())},
            "push": self.push.to_json(),
            "wake": wake,
        });
        if let Some(t) = self.ttl {
            body["ttlSec"] = t.as_secs().max(1).into();
        }
        body
    }
}

/// A live handoff as the phone keeps it.
#[derive(Clone, PartialEq)]
pub struct Handoff {
    pub id: String,
    /// The device's secret for the handoff's calls (`Authorization: Bearer`).
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

/// What the proxy's buffer gave back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CatchUp {
    /// Buffered events after the phone's id, in order (empty when there was a gap).
    pub events: Vec<Event>,
    /// The buffer could not vouch for completeness: resume from the origin with the phone's own
    /// id instead (the origin replays, or resets when it cannot).
    pub gap: bool,
}

/// The proxy's device-facing API.
#[derive(Debug, Clone)]
pub struct ProxyClient {
    http: reqwest::Client,
    base: String,
}

impl ProxyClient {
    /// A client for the proxy at `base` (`http://host:port`).
    pub fn new(base: &str) -> ProxyClient {
        Self::with_http(reqwest::Client::new(), base)
    }

    /// The same over a given HTTP client (timeouts, connection pool, TLS roots).
    pub fn with_http(http: reqwest::Client, base: &str) -> ProxyClient {
        ProxyClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `POST /v1/handoffs` → the handoff's id and device token. Drop the origin connection
    /// first, so nothing is read after the id handed off. Errors: [`ProxyError::Status`] with
    /// the proxy's reason (e.g. 403 `origin_not_allowed`, 400 `bad_filter`).
    pub async fn hand_off(&self, req: &HandoffRequest) -> Result<Handoff, ProxyError> {
        let resp = self
            .http
            .post(format!("{}/v1/handoffs", self.base))
            .json(&req.to_json())
            .send()
            .await?;
        let v = check(resp).await?;
        let field = |k: &str| {
            v[k].as_str()
                .map(str::to_owned)
                .ok_or_else(|| ProxyError::Decode(format!("no {k} in the handoff answer")))
        };
        Ok(Handoff {
            id: field("id")?,
            token: field("token")?,
            cursor: req.last_event_id,
        })
    }

    /// `GET /v1/handoffs/{id}`: the handoff's status document.
    pub async fn status(&self, h: &Handoff) -> Result<Value, ProxyError> {
        let resp = self
            .http
            .get(format!("{}/v1/handoffs/{}", self.base, h.id))
            .bearer_auth(&h.token)
            .send()
            .await?;
        check(resp).await
    }

    /// `GET /v1/handoffs/{id}/events` after `after` (the phone's own last event id): the
    /// buffered events it has not seen, or a gap.
    pub async fn catch_up(
        &self,
        h: &Handoff,
        after: Option<EventId>,
    ) -> Result<CatchUp, ProxyError> {
        let mut req = self
            .http
            .get(format!("{}/v1/handoffs/{}/events", self.base, h.id))
            .bearer_auth(&h.token);
        if let Some(l) = after {
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
            .map_err(|e| ProxyError::Decode(format!("events: {e}")))?;
        Ok(CatchUp { events, gap: false })
    }

    /// `DELETE /v1/handoffs/{id}`, acknowledging `ack` (the phone's own last event id); returns
    /// the proxy's final cursor. The proxy stops watching; streaming continues at the origin
    /// from the phone's own id.
    pub async fn hand_back(
        &self,
        h: &Handoff,
        ack: Option<EventId>,
    ) -> Result<Option<EventId>, ProxyError> {
        let mut req = self
            .http
            .delete(format!("{}/v1/handoffs/{}", self.base, h.id))
            .bearer_auth(&h.token);
        if let Some(l) = ack {
            req = req.header("last-event-id", l.to_string());
        }
        let v = check(req.send().await?).await?;
        match v["cursor"].as_str() {
            None => Ok(None),
            Some(s) => s
                .parse()
                .map(Some)
                .map_err(|e| ProxyError::Decode(format!("bad event id {s:?}: {e}"))),
        }
    }
}

async fn check(resp: reqwest::Response) -> Result<Value, ProxyError> {
    let status = resp.status();
    let body = resp.text().await?;
    if !status.is_success() {
        return Err(ProxyError::Status {
            status: status.as_u16(),
            body,
        });
    }
    serde_json::from_str(&body).map_err(|e| ProxyError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_what_the_proxy_reads_and_debug_hides_secrets() {
        let req = HandoffRequest {
            stream_url: "http://o/v1/sse?channel=a".into(),
            last_event_id: Some(EventId::new(5, 1)),
            push: PushTarget::WebPush {
                endpoint: "https://push.example/secret".into(),
                p256dh: "p".into(),
                auth: "a".into(),
            },
            wake: WakeOptions {
                filter: Some("data.x > 1".into()),
                coalesce_ms: Some(50),
                max_per_hour: None,
            },
            ttl: Some(Duration::from_millis(10)),
        };
        assert_eq!(
            req.to_json(),
            json!({
                "stream": {"url": "http://o/v1/sse?channel=a", "lastEventId": "5-1"},
                "push": {"platform": "webpush", "subscription": {
                    "endpoint": "https://push.example/secret", "expirationTime": null,
                    "keys": {"p256dh": "p", "auth": "a"}}},
                "wake": {"filter": "data.x > 1", "coalesceMs": 50},
                "ttlSec": 1,
            })
        );
        assert!(!format!("{req:?}").contains("secret"));
        let h = Handoff {
            id: "h".into(),
            token: "secret".into(),
            cursor: None,
        };
        assert!(!format!("{h:?}").contains("secret"));
    }
}
