//! One phone's stream: the code a Rust app on a phone uses to stream from the origin and hand
//! the stream to the push proxy while it sleeps — the position bookkeeping over
//! [`super::origin`] and [`super::proxy`].
//!
//! The loop (`docs/protocol.md`, "The handoff loop"):
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
//! 3. **Wake**: the OS delivers a silent push; [`super::wake`] reads its `ssepush` object.
//! 4. **Resume**: [`DeviceClient::catch_up`] reads what the proxy buffered after the app's id
//!    (a gap there means: ignore the buffer, the origin will replay), then
//!    [`DeviceClient::hand_back`] ends the handoff, and streaming continues at the origin from
//!    the app's own last id — the origin replays anything newer, so nothing falls between.
//!
//! The app's own last id is the single source of truth for the position: the proxy's cursor
//! is informative, never trusted over it.
//!
//! ```no_run
//! use futures::StreamExt;
//! use ssepush::client::device::{Accepted, DeviceClient};
//! use ssepush::client::origin::{Frame, Item, OriginClient, Subscription};
//! use ssepush::client::proxy::{ProxyClient, PushTarget, WakeOptions};
//!
//! # async fn run() -> anyhow::Result<()> {
//! let mut phone = DeviceClient::new(
//!     OriginClient::new("http://127.0.0.1:8080"),
//!     ProxyClient::new("http://127.0.0.1:8090"),
//!     Subscription { channels: vec!["chat.*".into()], ..Default::default() },
//! );
//! let mut stream = Box::pin(phone.connect().await?);
//! while let Some(frame) = stream.next().await {
//!     match frame? {
//!         Frame::Item(Item::Event(e)) if phone.accept(&e) == Accepted::New => println!("{e:?}"),
//!         Frame::LastEventId(id) => phone.set_last_event_id(id),
//!         _ => {}
//!     }
//!     # break;
//! }
//! drop(stream); // going to sleep: nothing is read after the id handed off
//! let target = PushTarget::Apns { token: "0a1b…".into(), topic: None, environment: None };
//! let handoff = phone.hand_off(&target, &WakeOptions::default(), None).await?;
//! // … a wake arrives …
//! let caught_up = phone.catch_up(&handoff).await?;
//! if caught_up.gap.is_none() {
//!     for e in &caught_up.events {
//!         phone.accept(e);
//!     }
//! } // else: the origin replays what the buffer could not vouch for
//! phone.hand_back(&handoff).await?;
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use futures::Stream;
use ssepush_origin::Event;
use ssepush_origin::event::EventId;

use super::origin::{ClientError, Frame, OriginClient, Subscription};
use super::proxy::{
    CatchUp, Handback, Handoff, HandoffRequest, ProxyClient, ProxyError, PushTarget, StreamRequest,
    WakeOptions,
};

/// What [`DeviceClient::accept`] made of a delivered event.
#[derive(Debug, Clone, PartialEq)]
pub enum Accepted {
    /// Newer than anything seen: show it.
    New,
    /// At or below the last id: a replay the app must not show again.
    Replay,
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

    /// The stream's last event id: what the next connect, handoff or catch-up resumes from.
    pub fn last_event_id(&self) -> Option<EventId> {
        self.last
    }

    /// The stream URL the proxy will watch: the same `GET /v1/sse` the phone reads, without the
    /// position (the handoff's `lastEventId` carries it).
    pub fn stream_url(&self) -> String {
        self.origin.sse_url(&self.sub)
    }

    /// Opens the origin's SSE stream after the last id this client holds (one connection; the
    /// caller reconnects, see [`OriginClient::connect`]).
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
    /// nothing is read after the id handed off. `ttl`: how long the proxy keeps the handoff.
    pub async fn hand_off(
        &self,
        push: &PushTarget,
        wake: &WakeOptions,
        ttl: Option<Duration>,
    ) -> Result<Handoff, ProxyError> {
        self.proxy
            .hand_off(&HandoffRequest {
                stream: StreamRequest {
                    url: self.stream_url(),
                    headers: Default::default(),
                    last_event_id: self.last.map(|l| l.to_string()),
                },
                push: push.clone(),
                wake: wake.clone(),
                ttl_sec: ttl.map(|t| t.as_secs().max(1)),
            })
            .await
    }

    /// `GET /v1/handoffs/{id}/events` after this client's id: the buffered events the app has
    /// not seen, or a gap (then the origin replays from this client's id). The caller passes
    /// each event through [`DeviceClient::accept`].
    pub async fn catch_up(&self, h: &Handoff) -> Result<CatchUp, ProxyError> {
        self.proxy.catch_up(h, self.last).await
    }

    /// `DELETE /v1/handoffs/{id}`, acknowledging this client's id; answers the proxy's final
    /// cursor. Streaming then continues at the origin from [`DeviceClient::last_event_id`].
    pub async fn hand_back(&self, h: &Handoff) -> Result<Handback, ProxyError> {
        self.proxy.hand_back(h, self.last).await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

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
    }
}
