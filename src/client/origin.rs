//! The origin client: publish, and subscribe with exact resume (`docs/protocol.md`, "SSE").
//!
//! [`OriginClient::subscribe`] is a resuming SSE subscription, read with the product's WHATWG
//! parser (`ssepush_origin::sse::parse`). It keeps the stream's **last event id** — the newest
//! event's, or what an id-only block set (the origin opens every fresh stream with its head
//! that way) — and when the connection drops it reconnects with it as `Last-Event-ID` after the
//! server's `retry:` delay, so the caller sees every event exactly once, in order, even when the
//! connection broke before the first event. When and whether to reconnect is
//! [`ReconnectPolicy`], plain code. [`OriginClient::connect`] is one connection without
//! reconnects, for callers that keep the position themselves ([`super::device::DeviceClient`]).
//!
//! ```no_run
//! use futures::StreamExt;
//! use ssepush::client::origin::{Item, OriginClient, Subscription};
//!
//! # async fn run() -> Result<(), ssepush::client::origin::ClientError> {
//! let origin = OriginClient::new("http://127.0.0.1:8080");
//! let id = origin.publish_one("chat.a", None, serde_json::json!({"x": 1})).await?;
//! let mut events = Box::pin(origin.subscribe(Subscription {
//!     channels: vec!["chat.*".into()],
//!     filter: Some("data.x >= 1".into()),
//!     last_event_id: None,
//! }));
//! while let Some(item) = events.next().await {
//!     match item? {
//!         Item::Event(e) => println!("{} {}", e.id, e.data),
//!         Item::Reset { oldest } => println!("events were lost; oldest held: {oldest:?}"),
//!     }
//! }
//! # let _ = id;
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::{Stream, StreamExt};
use rand::Rng;
use serde_json::Value;
use ssepush_origin::Event;
use ssepush_origin::event::{EventId, PublishRequest};
use ssepush_origin::server::publish::Published;
use ssepush_origin::sse::frames::{Frame as SseFrame, frames};
use ssepush_proxy::reconnect::{ConnEnd, Next, ReconnectPolicy as SharedPolicy};
use ssepush_proxy::settings::UpstreamSettings;

/// Largest SSE line or event a client reads by default (an origin accepts 1 MiB bodies by
/// default; the envelope adds a little).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 4 << 20;

/// Why a call to the origin failed, or what went wrong on an open stream.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The request never got an answer (connection refused, DNS, TLS, timeout).
    #[error("cannot reach {url}: {source}")]
    Connect { url: String, source: reqwest::Error },
    /// Any answer but 200 to a stream request, or a failed request. `retry_after` is the
    /// answer's `Retry-After` (RFC 9110 §10.2.3), when it had a valid one.
    #[error("origin answered {status}: {body}")]
    Status {
        status: u16,
        body: String,
        retry_after: Option<Duration>,
    },
    /// A 200 that is not `text/event-stream` (SSE: fail the connection).
    #[error("origin answered 200 with content type {0:?}, not text/event-stream")]
    NotEventStream(String),
    /// An open stream (or an answer's body) broke off.
    #[error("stream broke: {0}")]
    Stream(String),
    /// An answer or a frame that is not the origin's shape (reading goes on after a frame).
    #[error("origin sent an event this client cannot read: {0}")]
    Decode(String),
    /// An event larger than the client's limit was skipped (never held). With its id the
    /// subscription resumes past it; without one it cannot, and ends.
    #[error("origin sent an event larger than {limit} bytes (id {}); skipped", .id.map_or("unknown".to_owned(), |i| i.to_string()))]
    EventTooLarge { id: Option<EventId>, limit: usize },
}

impl ClientError {
    /// How this failed attempt ended, in the terms of the shared reconnect policy.
    fn conn_end(&self) -> ConnEnd {
        match self {
            ClientError::Status {
                status,
                retry_after,
                ..
            } => ConnEnd::Status {
                status: *status,
                retry_after: *retry_after,
            },
            ClientError::NotEventStream(_) => ConnEnd::NotEventStream,
            // A refused certificate does not fix itself: the subscription stops with it.
            ClientError::Connect { source, .. } => {
                match ssepush_origin::service::tls::certificate_problem(source) {
                    Some(problem) => ConnEnd::Certificate(problem),
                    None => ConnEnd::Network(self.to_string()),
                }
            }
            other => ConnEnd::Network(other.to_string()),
        }
    }

    /// Whether retrying cannot help: the SSE spec fails the connection on any status but 200
    /// and on a wrong content type; only 5xx, 408 and 429 are worth a reconnect. The reconnect
    /// policy decides, so this never disagrees with it.
    pub fn is_permanent(&self) -> bool {
        ReconnectPolicy::default()
            .after_failure(self, 0.0)
            .is_none()
    }
}

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// An event, in id order, never one already yielded.
    Event(Event),
    /// `ssepush.reset`: the origin could not vouch for the cursor (retention dropped events
    /// after it, it is from a lost history, or newer than the log): resynchronise. `oldest` is
    /// the oldest id the origin still holds, when it said.
    Reset { oldest: Option<EventId> },
}

/// What to subscribe to.
#[derive(Debug, Clone, Default)]
pub struct Subscription {
    /// Channel patterns (`*` one token, `>` the rest), at least one, at most 64.
    pub channels: Vec<String>,
    /// A CEL filter over `channel`, `type`, `id` and `data`.
    pub filter: Option<String>,
    /// Resume after this id (`None`: from the origin's head when the stream opens).
    pub last_event_id: Option<EventId>,
}

/// A client for one origin (cheap to clone: one HTTP connection pool).
#[derive(Debug, Clone)]
pub struct OriginClient {
    http: reqwest::Client,
    base: String,
    max_event_bytes: usize,
}

impl OriginClient {
    /// A client for the origin at `base` (`http://host:port`).
    pub fn new(base: &str) -> Self {
        OriginClient {
            http: super::http::client(),
            base: base.trim_end_matches('/').to_owned(),
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
        }
    }

    /// The same client with another limit on one SSE line or event, in bytes (default
    /// [`DEFAULT_MAX_EVENT_BYTES`]). A larger event is skipped and reported as
    /// [`ClientError::EventTooLarge`].
    pub fn with_max_event_bytes(mut self, max: usize) -> Self {
        self.max_event_bytes = max;
        self
    }

    /// The origin's base URL, without a trailing `/`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `POST /v1/events` with one event or an array of them (all or nothing): a
    /// [`PublishRequest`], a slice of them, or JSON of that shape. Returns the ids in order.
    /// Errors: [`ClientError::Status`] with the origin's JSON error (e.g. 400
    /// `invalid_channel`, 401, 413), [`ClientError::Connect`], [`ClientError::Decode`].
    pub async fn publish<T: serde::Serialize + ?Sized>(
        &self,
        events: &T,
    ) -> Result<Vec<EventId>, ClientError> {
        let url = format!("{}/v1/events", self.base);
        let resp = self
            .http
            .post(&url)
            .json(events)
            .send()
            .await
            .map_err(|source| ClientError::Connect { url, source })?;
        let body = check(resp).await?;
        let published: Published =
            serde_json::from_str(&body).map_err(|e| ClientError::Decode(e.to_string()))?;
        Ok(published.ids)
    }

    /// Publishes one event on `channel` with type `kind` (default `message`); returns its id.
    pub async fn publish_one(
        &self,
        channel: &str,
        kind: Option<&str>,
        data: Value,
    ) -> Result<EventId, ClientError> {
        let event = PublishRequest {
            channel: channel.to_owned(),
            kind: kind.map(str::to_owned),
            data,
        };
        let ids = self.publish(std::slice::from_ref(&event)).await?;
        ids.into_iter()
            .next()
            .ok_or_else(|| ClientError::Decode("no id returned".into()))
    }

    /// `GET /v1/sse` for `sub`: its channels and filter, without a position (a connection
    /// sends that as `Last-Event-ID`).
    pub fn sse_url(&self, sub: &Subscription) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for c in &sub.channels {
            query.append_pair("channel", c);
        }
        if let Some(f) = &sub.filter {
            query.append_pair("filter", f);
        }
        format!("{}/v1/sse?{}", self.base, query.finish())
    }

    /// One SSE connection, no reconnects: yields frames until the server ends the stream.
    ///
    /// Besides events and resets it yields the server's `retry:` hints and the cursor moves of
    /// id-only blocks, so a reconnect loop can honour both. Errors in the stream:
    /// [`ClientError::Stream`] (the connection broke; it ends), [`ClientError::Decode`] (a
    /// frame that is not an ssepush event; reading goes on), [`ClientError::EventTooLarge`].
    /// Opening fails with [`ClientError::Status`] on any status but 200 (SSE: only 200 is a
    /// stream) and [`ClientError::NotEventStream`] on a wrong content type.
    pub async fn connect(
        &self,
        sub: &Subscription,
        last_event_id: Option<EventId>,
    ) -> Result<impl Stream<Item = Result<Frame, ClientError>> + use<>, ClientError> {
        let url = self.sse_url(sub);
        let mut req = self
            .http
            .get(&url)
            .header("accept", "text/event-stream")
            .header("cache-control", "no-cache");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let resp = req
            .send()
            .await
            .map_err(|source| ClientError::Connect { url, source })?;
        if resp.status().as_u16() != 200 {
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| ssepush_proxy::retry_after::parse(v, SystemTime::now()));
            let body = resp.text().await.unwrap_or_default();
            return Err(ClientError::Status {
                status,
                body,
                retry_after,
            });
        }
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if !content_type
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("text/event-stream")
        {
            return Err(ClientError::NotEventStream(content_type));
        }
        let limit = self.max_event_bytes;
        Ok(frames(resp.bytes_stream(), limit).map(move |r| match r {
            Err(e) => Err(ClientError::Stream(e.to_string())),
            Ok(SseFrame::Event(e)) => Ok(Frame::Item(Item::Event(e))),
            Ok(SseFrame::Reset { oldest }) => Ok(Frame::Item(Item::Reset { oldest })),
            Ok(SseFrame::Retry(d)) => Ok(Frame::Retry(d)),
            Ok(SseFrame::LastEventId(id)) => Ok(Frame::LastEventId(id)),
            Ok(SseFrame::Oversized { id }) => Err(ClientError::EventTooLarge { id, limit }),
            Ok(SseFrame::Undecodable(why)) => Err(ClientError::Decode(why)),
        }))
    }

    /// A subscription that survives disconnects: reconnects with `Last-Event-ID` (the newest
    /// event's id, or what an id-only block set) after the server's `retry:` delay, backing off
    /// while the origin is unreachable or busy (honouring `Retry-After`), and stops for good on
    /// an answer retrying cannot fix ([`ClientError::is_permanent`]). Never yields an event
    /// twice. A frame it cannot read is yielded as an error and reading goes on; an oversized
    /// event likewise, unless it has no id to resume past — then the subscription ends.
    pub fn subscribe(
        &self,
        sub: Subscription,
    ) -> impl Stream<Item = Result<Item, ClientError>> + use<> {
        let client = self.clone();
        resuming(client, sub, None)
    }

    /// [`OriginClient::subscribe`], calling `on_retry` before each wait to reconnect with why
    /// (the failed attempt's error, or `None` when an open stream ended) and how long it will
    /// wait: what a command-line tool shows so that an unreachable origin is never silence.
    pub fn subscribe_reporting<F>(
        &self,
        sub: Subscription,
        on_retry: F,
    ) -> impl Stream<Item = Result<Item, ClientError>> + use<F>
    where
        F: Fn(Option<&ClientError>, Duration) + Send + Sync + 'static,
    {
        let client = self.clone();
        resuming(client, sub, Some(Arc::new(on_retry)))
    }
}

/// One open SSE connection, as the resuming subscriber holds it.
type Connection = std::pin::Pin<Box<dyn Stream<Item = Result<Frame, ClientError>> + Send>>;

/// A frame of one connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Item(Item),
    /// `retry:`: the server's reconnection time.
    Retry(Duration),
    /// An id-only block (WHATWG): the stream's last event id is now this, without an event —
    /// the origin opens every fresh stream with its head this way. `None`: the server cleared
    /// it. A reader keeps it as its cursor and resumes from it.
    LastEventId(Option<EventId>),
}

/// When the origin client reconnects: the proxy's upstream reconnect policy
/// (`ssepush_proxy::reconnect`) with its default timings (`[upstream]` `reconnect_ms`,
/// `backoff_base_ms`, `backoff_max_ms`) — one policy for every SSE reader of the product, plain
/// code with the randomness passed in.
///
/// After a connection that was open ends, wait the server's `retry:` (default 1 s, at most
/// 300 s). After a failed attempt, back off exponentially with equal jitter (from 0.5 s,
/// doubling, at most 30 s), never sooner than `retry:`, nor than a 503's or 429's
/// `Retry-After` (capped like `retry:`). An answer retrying cannot fix stops.
#[derive(Debug, Clone)]
pub struct ReconnectPolicy {
    shared: SharedPolicy,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            shared: SharedPolicy::new(&UpstreamSettings::default()),
        }
    }
}

impl ReconnectPolicy {
    /// Longest `retry:` or `Retry-After` honoured: a broken server cannot park a client forever.
    pub const MAX_RETRY_HINT: Duration = ssepush_proxy::reconnect::MAX_RETRY_HINT;

    /// The server sent `retry: <ms>`.
    pub fn on_retry_hint(&mut self, hint: Duration) {
        self.shared.on_retry_hint(hint);
    }

    /// A connection was opened (200, an event stream).
    pub fn on_open(&mut self) {
        self.shared.on_open();
    }

    /// How long to wait after an open connection ended or broke.
    pub fn after_end(&mut self) -> Duration {
        match self.shared.after(&ConnEnd::Ended, 0.0) {
            Next::ReconnectAfter(d) => d,
            Next::Stop(_) => Self::MAX_RETRY_HINT,
        }
    }

    /// How long to wait after an attempt failed with `err`; `None`: stop for good. `random`
    /// is uniform in `[0, 1)`: where in the jitter window the wait falls.
    pub fn after_failure(&mut self, err: &ClientError, random: f64) -> Option<Duration> {
        match self.shared.after(&err.conn_end(), random) {
            Next::ReconnectAfter(d) => Some(d),
            Next::Stop(_) => None,
        }
    }
}

/// A uniform draw in `[0, 1)` for the reconnect jitter (its own statement, so no thread-local
/// generator is held across an await).
fn jitter() -> f64 {
    rand::rng().random::<f64>()
}

/// See [`OriginClient::subscribe_reporting`].
type OnRetry = Arc<dyn Fn(Option<&ClientError>, Duration) + Send + Sync>;

fn resuming(
    client: OriginClient,
    sub: Subscription,
    on_retry: Option<OnRetry>,
) -> impl Stream<Item = Result<Item, ClientError>> {
    struct State {
        on_retry: Option<OnRetry>,
        client: OriginClient,
        sub: Subscription,
        /// The stream's last event id: what a reconnect sends as `Last-Event-ID`.
        cursor: Option<EventId>,
        /// The newest event yielded: anything at or below it is a replay, not shown again.
        seen: Option<EventId>,
        policy: ReconnectPolicy,
        conn: Option<Connection>,
        done: bool,
    }
    let state = State {
        on_retry,
        cursor: sub.last_event_id,
        seen: sub.last_event_id,
        client,
        sub,
        policy: ReconnectPolicy::default(),
        conn: None,
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            if let Some(conn) = st.conn.as_mut() {
                match conn.next().await {
                    Some(Ok(Frame::Retry(d))) => st.policy.on_retry_hint(d),
                    // WHATWG: the last event id is whatever the server set last.
                    Some(Ok(Frame::LastEventId(id))) => st.cursor = id,
                    Some(Ok(Frame::Item(item))) => {
                        if let Item::Event(e) = &item {
                            if st.seen.is_some_and(|s| e.id <= s) {
                                continue;
                            }
                            st.seen = Some(e.id);
                            st.cursor = Some(e.id);
                        }
                        return Some((Ok(item), st));
                    }
                    Some(Err(ClientError::EventTooLarge {
                        id: Some(id),
                        limit,
                    })) => {
                        // Resume past it: it will not get smaller by reading it again.
                        st.cursor = Some(id);
                        st.seen = st.seen.max(Some(id));
                        let err = ClientError::EventTooLarge {
                            id: Some(id),
                            limit,
                        };
                        return Some((Err(err), st));
                    }
                    Some(Err(e @ ClientError::EventTooLarge { id: None, .. })) => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                    Some(Err(e @ ClientError::Decode(_))) => return Some((Err(e), st)),
                    Some(Err(_)) | None => {
                        st.conn = None;
                        let wait = st.policy.after_end();
                        if let Some(report) = &st.on_retry {
                            report(None, wait);
                        }
                        tokio::time::sleep(wait).await;
                    }
                }
                continue;
            }
            match st.client.connect(&st.sub, st.cursor).await {
                Ok(conn) => {
                    st.policy.on_open();
                    st.conn = Some(Box::pin(conn));
                }
                Err(e) => match st.policy.after_failure(&e, jitter()) {
                    None => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                    Some(wait) => {
                        if let Some(report) = &st.on_retry {
                            report(Some(&e), wait);
                        }
                        tokio::time::sleep(wait).await
                    }
                },
            }
        }
    })
}

async fn check(resp: reqwest::Response) -> Result<String, ClientError> {
    let status = resp.status();
    let body = resp
        .text()
        .await
        .map_err(|e| ClientError::Stream(e.to_string()))?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(ClientError::Status {
            status: status.as_u16(),
            body,
            retry_after: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, retry_after: Option<u64>) -> ClientError {
        ClientError::Status {
            status,
            body: String::new(),
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn reconnects_wait_the_servers_retry_capped() {
        let mut p = ReconnectPolicy::default();
        assert_eq!(p.after_end(), Duration::from_secs(1));
        p.on_retry_hint(Duration::from_millis(250));
        assert_eq!(p.after_end(), Duration::from_millis(250));
        p.on_retry_hint(Duration::from_secs(86_400));
        assert_eq!(p.after_end(), ReconnectPolicy::MAX_RETRY_HINT);
    }

    /// The proxy's schedule, jitter included: equal jitter under a ceiling doubling from the
    /// proxy's `backoff_base_ms` to its `backoff_max_ms`, never below `retry:`.
    #[test]
    fn failures_back_off_as_the_proxy_does_and_reset_on_open() {
        let upstream = UpstreamSettings::default();
        let mut ours = ReconnectPolicy::default();
        let mut proxys = SharedPolicy::new(&upstream);
        ours.on_retry_hint(Duration::from_millis(100));
        proxys.on_retry_hint(Duration::from_millis(100));
        for (n, random) in [0.0, 0.3, 1.0, 0.5, 0.9, 0.1, 1.0, 1.0, 1.0]
            .into_iter()
            .enumerate()
        {
            let wait = ours.after_failure(&status(502, None), random).unwrap();
            assert_eq!(
                Next::ReconnectAfter(wait),
                proxys.after(
                    &ConnEnd::Status {
                        status: 502,
                        retry_after: None
                    },
                    random
                ),
                "failure {n}"
            );
        }
        let max = Duration::from_millis(upstream.backoff_max_ms);
        assert_eq!(ours.after_failure(&status(502, None), 1.0), Some(max));
        assert_eq!(ours.after_failure(&status(502, None), 0.0), Some(max / 2));
        ours.on_open();
        let base = Duration::from_millis(upstream.backoff_base_ms);
        assert_eq!(
            ours.after_failure(&ClientError::Stream("reset".into()), 1.0),
            Some(base)
        );
        // A long `retry:` is never cut short by the backoff.
        ours.on_retry_hint(Duration::from_secs(120));
        assert_eq!(
            ours.after_failure(&status(500, None), 1.0),
            Some(Duration::from_secs(120))
        );
    }

    #[test]
    fn retry_after_of_503_and_429_is_honoured_and_capped() {
        let mut p = ReconnectPolicy::default();
        assert_eq!(
            p.after_failure(&status(503, Some(20)), 0.5),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            p.after_failure(&status(429, Some(86_400)), 0.5),
            Some(ReconnectPolicy::MAX_RETRY_HINT)
        );
        p.on_open();
        // Only a 503's or 429's Retry-After counts.
        assert!(p.after_failure(&status(500, Some(20)), 1.0).unwrap() < Duration::from_secs(20));
    }

    #[test]
    fn only_5xx_408_and_429_are_retried() {
        let mut p = ReconnectPolicy::default();
        for s in [200, 202, 204, 301, 400, 401, 404] {
            assert_eq!(p.after_failure(&status(s, None), 0.5), None, "{s}");
            assert!(status(s, None).is_permanent());
        }
        assert!(ClientError::NotEventStream("text/html".into()).is_permanent());
        for s in [408, 429, 500, 503] {
            assert!(p.after_failure(&status(s, None), 0.5).is_some(), "{s}");
            assert!(!status(s, None).is_permanent());
        }
    }
}
