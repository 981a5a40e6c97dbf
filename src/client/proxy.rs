//! The push proxy's device-facing API: hand a stream off, check in (catch up from the proxy's
//! buffer), hand the stream back (`docs/protocol.md`, "The handoff API"). The request and
//! answer shapes are the proxy's own (`ssepush_proxy::protocol`), re-exported here.
//!
//! [`ProxyClient`] is stateless and shareable (one HTTP client for many phones); the position a
//! handoff starts from and the one a check-in or handback acknowledges are the caller's — an
//! app keeps its own last event id ([`super::device::DeviceClient`] does that bookkeeping).
//!
//! ```no_run
//! use ssepush::client::proxy::{HandoffRequest, ProxyClient, PushTarget, StreamRequest};
//! use ssepush::origin::EventId;
//!
//! # async fn run() -> Result<(), ssepush::client::proxy::ProxyError> {
//! let proxy = ProxyClient::new("http://127.0.0.1:8090");
//! // The last event id the app saw on its stream:
//! let cursor: EventId = "1795546555192-0.5f3e9a21".parse().expect("an id the origin sent");
//! let handoff = proxy
//!     .hand_off(&HandoffRequest {
//!         stream: StreamRequest {
//!             url: "http://127.0.0.1:8080/v1/sse?channel=chat.*".into(),
//!             headers: Default::default(),
//!             last_event_id: Some(cursor.to_string()),
//!         },
//!         push: PushTarget::Apns { token: "0a1b…".into(), topic: None, environment: None },
//!         wake: Default::default(),
//!         ttl_sec: None,
//!     })
//!     .await?;
//! // … asleep; a wake arrives (see `client::wake`) …
//! let caught_up = proxy.catch_up(&handoff, Some(cursor)).await?;
//! if caught_up.gap.is_some() {
//!     // The buffer cannot vouch for completeness: resume at the origin from `cursor`.
//! }
//! let handback = proxy.hand_back(&handoff, caught_up.cursor).await?;
//! # let _ = handback;
//! # Ok(())
//! # }
//! ```

use serde::de::DeserializeOwned;
use ssepush_origin::event::EventId;

pub use ssepush_proxy::protocol::{
    CatchUp, Gap, GapSource, Handback, HandoffCreated, HandoffRequest, HandoffState, HandoffStatus,
    PushTarget, StreamRequest, WakeMode, WakeOptions, WebPushKeys, WebPushSubscription,
};

/// `Last-Event-ID`: the position a check-in or handback acknowledges.
const LAST_EVENT_ID: &str = "last-event-id";

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

/// A live handoff as the phone keeps it: the proxy's `201` and the position it handed off at.
#[derive(Clone, PartialEq)]
pub struct Handoff {
    /// The handoff's id (`h_…`).
    pub id: String,
    /// The device's secret for the handoff's calls (`Authorization: Bearer`).
    pub token: String,
    /// The `stream.lastEventId` it was created with.
    pub cursor: Option<EventId>,
}

impl std::fmt::Debug for Handoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handoff")
            .field("id", &self.id)
            .field("token", &"<redacted>")
            .field("cursor", &self.cursor)
            .finish()
    }
}

/// The proxy's device-facing API — of one proxy, or of a fleet's nodes: any node answers for
/// any handoff, so a call that cannot reach a node (or finds its handoff changing nodes, 503)
/// goes to the next one, for up to [`FAILOVER_WITHIN`].
#[derive(Debug, Clone)]
pub struct ProxyClient {
    http: reqwest::Client,
    base: String,
    /// Every node, the preferred one first.
    bases: Vec<String>,
}

/// How long a call keeps trying a fleet's nodes (a dead node's handoffs move within its
/// lease).
pub const FAILOVER_WITHIN: std::time::Duration = std::time::Duration::from_secs(20);

impl ProxyClient {
    /// A client for the proxy at `base` (`http://host:port`).
    pub fn new(base: &str) -> ProxyClient {
        Self::with_http(super::http::client(), base)
    }

    /// The same over a given HTTP client (timeouts, connection pool, TLS roots). `base` may
    /// list a fleet's nodes, comma-separated.
    pub fn with_http(http: reqwest::Client, base: &str) -> ProxyClient {
        let bases: Vec<String> = base
            .split(',')
            .map(|b| b.trim().trim_end_matches('/').to_owned())
            .filter(|b| !b.is_empty())
            .collect();
        ProxyClient {
            http,
            base: bases.first().cloned().unwrap_or_default(),
            bases,
        }
    }

    /// The same client preferring the `n`-th node (phones spread over a fleet).
    pub fn rotated(&self, n: usize) -> ProxyClient {
        let mut bases = self.bases.clone();
        if !bases.is_empty() {
            let k = n % bases.len();
            bases.rotate_left(k);
        }
        ProxyClient {
            http: self.http.clone(),
            base: bases.first().cloned().unwrap_or_default(),
            bases,
        }
    }

    /// Sends the request `build` makes for a node's base URL: with one node, once; with a
    /// fleet, node after node while they cannot be reached or answer 503.
    async fn send(
        &self,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ProxyError> {
        if self.bases.len() <= 1 {
            return Ok(build(&self.base).send().await?);
        }
        let started = std::time::Instant::now();
        let mut i = 0usize;
        loop {
            let base = &self.bases[i % self.bases.len()];
            i += 1;
            let result = build(base).send().await;
            let retry = match &result {
                Ok(r) => r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE,
                Err(e) => e.is_connect() || e.is_timeout() || e.is_request(),
            };
            if !retry || started.elapsed() > FAILOVER_WITHIN {
                return Ok(result?);
            }
            if i.is_multiple_of(self.bases.len()) {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }

    /// The proxy's base URL, without a trailing `/`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `POST /v1/handoffs` → the handoff's id and device token. Drop the origin connection
    /// first, so nothing is read after the id handed off. Errors: [`ProxyError::Status`] with
    /// the proxy's reason (e.g. 403 `origin_not_allowed`, 400 `invalid_filter`), or
    /// [`ProxyError::Decode`] when `stream.lastEventId` is not an event id.
    pub async fn hand_off(&self, req: &HandoffRequest) -> Result<Handoff, ProxyError> {
        let cursor = match req.stream.last_event_id.as_deref() {
            None | Some("") => None,
            Some(id) => Some(
                id.parse()
                    .map_err(|e| ProxyError::Decode(format!("stream.lastEventId: {e}")))?,
            ),
        };
        let resp = self
            .send(|base| self.http.post(format!("{base}/v1/handoffs")).json(req))
            .await?;
        let created: HandoffCreated = answer(resp).await?;
        Ok(Handoff {
            id: created.id,
            token: created.token,
            cursor,
        })
    }

    /// `GET /v1/handoffs/{id}`: the handoff's state, cursor, pending events and wakes.
    pub async fn status(&self, h: &Handoff) -> Result<HandoffStatus, ProxyError> {
        let resp = self
            .send(|base| {
                self.http
                    .get(format!("{base}/v1/handoffs/{}", h.id))
                    .bearer_auth(&h.token)
            })
            .await?;
        answer(resp).await
    }

    /// `GET /v1/handoffs/{id}/events` after `after` (the phone's own last event id): the
    /// buffered events it has not seen, and a gap marker when the buffer cannot vouch that
    /// they are all there (then resume at the origin from `after` instead).
    pub async fn catch_up(
        &self,
        h: &Handoff,
        after: Option<EventId>,
    ) -> Result<CatchUp, ProxyError> {
        let resp = self
            .send(|base| {
                let req = self
                    .http
                    .get(format!("{base}/v1/handoffs/{}/events", h.id))
                    .bearer_auth(&h.token);
                match after {
                    Some(l) => req.header(LAST_EVENT_ID, l.to_string()),
                    None => req,
                }
            })
            .await?;
        answer(resp).await
    }

    /// `DELETE /v1/handoffs/{id}`, acknowledging `ack` (the phone's own last event id): the
    /// proxy stops watching and answers its final cursor. Streaming continues at the origin
    /// from the phone's own id.
    pub async fn hand_back(
        &self,
        h: &Handoff,
        ack: Option<EventId>,
    ) -> Result<Handback, ProxyError> {
        let resp = self
            .send(|base| {
                let req = self
                    .http
                    .delete(format!("{base}/v1/handoffs/{}", h.id))
                    .bearer_auth(&h.token);
                match ack {
                    Some(l) => req.header(LAST_EVENT_ID, l.to_string()),
                    None => req,
                }
            })
            .await?;
        answer(resp).await
    }
}

/// A 2xx answer's body as `T`; anything else as [`ProxyError::Status`].
async fn answer<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, ProxyError> {
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
    fn a_handoff_never_shows_its_token() {
        let h = Handoff {
            id: "h_1".into(),
            token: "secret".into(),
            cursor: None,
        };
        assert!(!format!("{h:?}").contains("secret"));
    }
}
