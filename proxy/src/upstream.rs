//! Watching origin streams: the **reconnect policy** (plain code), one connection attempt
//! (reqwest + the product's SSE parser, a thin shell), and **shared watchers**.
//!
//! * [`ReconnectPolicy`]: after a clean end, wait the origin's `retry:` (default
//!   `upstream.reconnect_ms`); after a network error, an idle timeout, a 5xx, 408 or 429, back
//!   off exponentially with jitter (never sooner than `retry:`, nor than the `Retry-After` of a
//!   503 or 429 — delta-seconds or an HTTP-date — both capped at [`MAX_RETRY_HINT`]). Any other
//!   status than 200 **stops**, as the SSE spec says to fail the connection — a 4xx, a 204 (the
//!   spec's "stop"), but also a 202 that claims `text/event-stream` — and so do a 200 that is not
//!   `text/event-stream` and a refused redirect; the handoff fails with the reason (e.g.
//!   "upstream answered 401").
//! * Redirects are never followed automatically: each hop's `Location` is checked against
//!   `allowed_origins` *before* any request goes there, and the handoff's headers (credentials)
//!   only go to the stream's own origin.
//! * Parsing: `ssepush_origin::sse::parse`, WHATWG's algorithm (BOM, CR/LF/CRLF, `retry:`,
//!   id-only blocks), bounded by `upstream.max_event_bytes`. An id-only block moves the
//!   watcher's cursor, so a reconnect resends it as `Last-Event-ID` even before any event came.
//!   An event over the limit is skipped, never re-downloaded: each handoff gets a gap through its
//!   id that wakes the phone (which reads it from the origin) and `lastError`, and a warning is
//!   logged; one without an id to resume past fails the handoffs with the reason.
//! * [`Upstreams`]: handoffs of the same stream (same URL, same headers — keyed by a SHA-256 of
//!   both) share **one connection per node**. A [`Watcher`] owns it and fans every event out to
//!   its subscribers. A handoff whose cursor is at or past the watcher's position joins at once
//!   (it ignores ids it already has); one whose cursor is behind reads the gap over a short-lived
//!   private connection while the watcher's live events for it are held, then joins: exact, no
//!   loss, no duplicates. Every event is decoded once and shared as an `Arc`; every CEL filter is
//!   evaluated once per event per distinct source ([`Verdicts`]).

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use futures::{Stream, StreamExt};
use rand::Rng;
use reqwest::Url;
use ssepush_origin::event::{EventId, SharedEvent};
use ssepush_origin::filter::{EventVars, Filter};
use ssepush_origin::sse::frames::Frame as OriginFrame;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::handoff::{OriginAllowList, StreamSpec, origin_of};
use crate::retry_after;
use crate::settings::UpstreamSettings;
use crate::wake::backoff;

// ---------------------------------------------------------------------------------------------
// Reconnect policy
// ---------------------------------------------------------------------------------------------

/// How one connection attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnEnd {
    /// The stream ended cleanly after a 200.
    Ended,
    /// Nothing (not even a keep-alive) arrived within the idle timeout.
    Idle,
    /// Connect or read error.
    Network(String),
    /// Any answer but 200 (after redirects), with its `Retry-After` when it had a valid one.
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// 200, but not `text/event-stream`.
    NotEventStream,
    /// A redirect to this origin is outside `allowed_origins`; no request was sent there.
    RedirectRefused(String),
    TooManyRedirects,
}

/// What to do after a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    ReconnectAfter(Duration),
    /// Give up for good, with the reason the handoffs fail with.
    Stop(String),
}

/// Longest `retry:` hint or `Retry-After` honoured: a hostile or broken origin cannot park a
/// watcher forever.
pub const MAX_RETRY_HINT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub struct ReconnectPolicy {
    retry: Duration,
    base: Duration,
    max: Duration,
    failures: u32,
}

impl ReconnectPolicy {
    pub fn new(cfg: &UpstreamSettings) -> Self {
        ReconnectPolicy {
            retry: Duration::from_millis(cfg.reconnect_ms),
            base: Duration::from_millis(cfg.backoff_base_ms),
            max: Duration::from_millis(cfg.backoff_max_ms),
            failures: 0,
        }
    }

    /// The origin sent `retry: <ms>`.
    pub fn on_retry_hint(&mut self, hint: Duration) {
        self.retry = hint.min(MAX_RETRY_HINT);
    }

    /// A connection was answered 200 with an event stream.
    pub fn on_open(&mut self) {
        self.failures = 0;
    }

    /// What to do after `end`. `jitter` in `[0, 1)`.
    pub fn after(&mut self, end: &ConnEnd, jitter: f64) -> Next {
        let retryable = match end {
            ConnEnd::Ended => return Next::ReconnectAfter(self.retry),
            ConnEnd::Idle | ConnEnd::Network(_) => true,
            ConnEnd::Status { status: s, .. } => *s >= 500 || *s == 408 || *s == 429,
            ConnEnd::NotEventStream => {
                return Next::Stop("upstream did not answer with text/event-stream".into());
            }
            ConnEnd::RedirectRefused(to) => {
                return Next::Stop(format!(
                    "upstream redirected to {to}, which is outside allowed_origins; not followed"
                ));
            }
            ConnEnd::TooManyRedirects => {
                return Next::Stop("upstream redirected too many times".into());
            }
        };
        if !retryable {
            let ConnEnd::Status { status, .. } = end else {
                unreachable!("only statuses are not retryable here")
            };
            return Next::Stop(match status {
                204 => "upstream answered 204 (the SSE signal to stop)".to_owned(),
                s @ 200..=299 => {
                    format!("upstream answered {s}, not 200: not an event stream (SSE fails it)")
                }
                s => format!("upstream answered {s}"),
            });
        }
        self.failures += 1;
        let wait = backoff(self.failures, self.base, self.max, jitter).max(self.retry);
        // RFC 9110 §10.2.3 / RFC 6585 §4: the server said when to come back.
        let asked = match end {
            ConnEnd::Status {
                status: 503 | 429,
                retry_after: Some(after),
            } => (*after).min(MAX_RETRY_HINT),
            _ => Duration::ZERO,
        };
        Next::ReconnectAfter(wait.max(asked))
    }
}

// ---------------------------------------------------------------------------------------------
// One connection
// ---------------------------------------------------------------------------------------------

/// What a connection yields: [`ssepush_origin::sse::frames::Frame`], with events shared.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Event(SharedEvent),
    /// The origin's `ssepush.reset`: the cursor was older than its retention.
    Reset(Option<EventId>),
    Retry(Duration),
    /// An id-only block: the stream's cursor is now this (`None`: cleared), without an event.
    LastEventId(Option<EventId>),
    /// An event larger than `limit` bytes was skipped; `id` is its id when it had one.
    Oversized {
        id: Option<EventId>,
        limit: usize,
    },
    /// A frame that is not an ssepush event (skipped, counted).
    Undecodable(String),
}

impl Frame {
    fn from_origin(f: OriginFrame, limit: usize) -> Frame {
        match f {
            OriginFrame::Event(e) => Frame::Event(Arc::new(e)),
            OriginFrame::Reset { oldest } => Frame::Reset(oldest),
            OriginFrame::Retry(d) => Frame::Retry(d),
            OriginFrame::LastEventId(id) => Frame::LastEventId(id),
            OriginFrame::Oversized { id } => Frame::Oversized { id, limit },
            OriginFrame::Undecodable(why) => Frame::Undecodable(why),
        }
    }
}

/// Why an oversized event was skipped, as handoffs report it in `lastError`.
pub fn oversized_reason(id: EventId, limit: usize) -> String {
    format!(
        "upstream event {id} is larger than upstream.max_event_bytes ({limit} bytes): skipped; \
         the phone reads it from the origin"
    )
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<Frame, String>> + Send>>;

/// What a connection needs: the HTTP client (no automatic redirects), the allow list, limits.
#[derive(Clone)]
pub struct Connector {
    pub http: reqwest::Client,
    pub allow: Arc<OriginAllowList>,
    pub cfg: UpstreamSettings,
}

impl Connector {
    pub fn new(allow: Arc<OriginAllowList>, cfg: UpstreamSettings) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_millis(cfg.connect_timeout_ms))
            .build()?;
        Ok(Connector { http, allow, cfg })
    }

    /// Opens the stream: follows allowed redirects by hand, checks the answer.
    pub async fn open(
        &self,
        spec: &StreamSpec,
        last: Option<EventId>,
    ) -> Result<FrameStream, ConnEnd> {
        let mut url: Url = spec.url.clone();
        let own_origin = spec.url.origin();
        for _ in 0..=self.cfg.max_redirects {
            let mut req = self
                .http
                .get(url.clone())
                .header("accept", "text/event-stream")
                .header("cache-control", "no-cache");
            // Credentials go to the stream's own origin only, never to where it redirects.
            if url.origin() == own_origin {
                for (k, v) in &spec.headers.0 {
                    req = req.header(k.as_str(), v.as_str());
                }
            }
            if let Some(id) = last {
                req = req.header("last-event-id", id.to_string());
            }
            let timeout = Duration::from_millis(self.cfg.connect_timeout_ms);
            let resp = match tokio::time::timeout(timeout, req.send()).await {
                Err(_) => {
                    return Err(ConnEnd::Network(
                        "timed out waiting for response headers".into(),
                    ));
                }
                Ok(Err(e)) => return Err(ConnEnd::Network(without_url(&e))),
                Ok(Ok(r)) => r,
            };
            let status = resp.status();
            if status.is_redirection() {
                let next = resp
                    .headers()
                    .get("location")
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| url.join(l).ok());
                let Some(next) = next else {
                    return Err(ConnEnd::Status {
                        status: status.as_u16(),
                        retry_after: None,
                    });
                };
                if !self.allow.allows(&next) {
                    return Err(ConnEnd::RedirectRefused(origin_of(&next)));
                }
                url = next;
                continue;
            }
            // SSE: "if res's status is not 200 … fail the connection". A 202 or 206 is no
            // stream, whatever its content type says.
            if status.as_u16() != 200 {
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| retry_after::parse(v, SystemTime::now()));
                return Err(ConnEnd::Status {
                    status: status.as_u16(),
                    retry_after,
                });
            }
            let is_sse = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| {
                    v.trim_start()
                        .to_ascii_lowercase()
                        .starts_with("text/event-stream")
                });
            if !is_sse {
                return Err(ConnEnd::NotEventStream);
            }
            return Ok(frames(resp.bytes_stream(), self.cfg.max_event_bytes));
        }
        Err(ConnEnd::TooManyRedirects)
    }
}

/// reqwest errors print the URL, whose query may carry a token: keep only the kind.
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "connect error"
    } else if e.is_timeout() {
        "timeout"
    } else if e.is_body() || e.is_decode() {
        "body error"
    } else {
        "request error"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

/// SSE bytes → frames, holding at most `max_event_bytes` of any line or event. Generic over the
/// byte stream so tests can feed it plain values.
pub fn frames<S, B, E>(bytes: S, max_event_bytes: usize) -> FrameStream
where
    S: Stream<Item = Result<B, E>> + Send + 'static,
    B: AsRef<[u8]> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    Box::pin(
        ssepush_origin::sse::frames::frames(bytes, max_event_bytes).map(move |r| {
            r.map(|f| Frame::from_origin(f, max_event_bytes))
                .map_err(|e| e.to_string())
        }),
    )
}

/// Counts open upstream connections in `ssepush_proxy_upstream_connections`.
struct ConnGauge;

impl ConnGauge {
    fn new() -> Self {
        metrics::gauge!("ssepush_proxy_upstream_connections").increment(1.0);
        ConnGauge
    }
}

impl Drop for ConnGauge {
    fn drop(&mut self) {
        metrics::gauge!("ssepush_proxy_upstream_connections").decrement(1.0);
    }
}

/// What a reader does with a frame.
enum Flow {
    Continue,
    /// Done (caught up, or nobody listens any more).
    Done,
}

/// The reconnect loop around [`Connector::open`]: reads from `start`, resends the stream's last
/// event id (the newest event's, or what an id-only block set) as `Last-Event-ID` on every
/// reconnect, and hands frames to `on_frame`. Returns `Err(reason)` when the policy says stop or
/// an oversized event cannot be skipped, `Ok` when `on_frame` is done or `cancel` fires.
async fn read_loop(
    conn: &Connector,
    spec: &StreamSpec,
    start: Option<EventId>,
    cancel: &CancellationToken,
    mut on_frame: impl FnMut(&Frame) -> Flow,
) -> Result<(), String> {
    let mut policy = ReconnectPolicy::new(&conn.cfg);
    let mut last = start;
    let idle = Duration::from_millis(conn.cfg.idle_timeout_ms);
    loop {
        let opened = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = conn.open(spec, last) => r,
        };
        let end = match opened {
            Err(end) => end,
            Ok(mut stream) => {
                policy.on_open();
                let _gauge = ConnGauge::new();
                loop {
                    let item = tokio::select! {
                        _ = cancel.cancelled() => return Ok(()),
                        r = tokio::time::timeout(idle, stream.next()) => r,
                    };
                    match item {
                        Err(_) => break ConnEnd::Idle,
                        Ok(None) => break ConnEnd::Ended,
                        Ok(Some(Err(e))) => break ConnEnd::Network(e),
                        Ok(Some(Ok(frame))) => {
                            match &frame {
                                Frame::Retry(d) => policy.on_retry_hint(*d),
                                Frame::Event(e) => last = last.max(Some(e.id)),
                                // WHATWG: the last event ID is what the server set last.
                                Frame::LastEventId(id) => last = *id,
                                Frame::Oversized { id: None, limit } => {
                                    metrics::counter!(
                                        "ssepush_proxy_upstream_oversized_events_total"
                                    )
                                    .increment(1);
                                    // A reconnect would read the same event again, forever.
                                    return Err(format!(
                                        "upstream sent an event larger than upstream.max_event_bytes \
                                         ({limit} bytes) with no id to resume past it"
                                    ));
                                }
                                Frame::Oversized {
                                    id: Some(id),
                                    limit,
                                } => {
                                    metrics::counter!(
                                        "ssepush_proxy_upstream_oversized_events_total"
                                    )
                                    .increment(1);
                                    tracing::warn!(event = %id, limit, "skipped an upstream event larger than upstream.max_event_bytes; handoffs report a gap");
                                    last = last.max(Some(*id));
                                }
                                Frame::Undecodable(why) => {
                                    metrics::counter!("ssepush_proxy_upstream_bad_frames_total")
                                        .increment(1);
                                    tracing::debug!(error = %why, "skipped a frame that is not an ssepush event");
                                }
                                Frame::Reset(_) => {}
                            }
                            if let Flow::Done = on_frame(&frame) {
                                return Ok(());
                            }
                        }
                    }
                }
            }
        };
        metrics::counter!("ssepush_proxy_upstream_disconnects_total").increment(1);
        let jitter = rand::rng().random::<f64>();
        match policy.after(&end, jitter) {
            Next::Stop(reason) => return Err(reason),
            Next::ReconnectAfter(wait) => {
                tracing::debug!(?end, ?wait, "upstream connection ended; reconnecting");
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shared watchers
// ---------------------------------------------------------------------------------------------

/// Per-event filter verdicts: the event is converted to CEL values once, and each distinct
/// filter source is evaluated once, whatever the number of handoffs using it.
pub struct Verdicts<'a> {
    event: &'a ssepush_origin::Event,
    vars: Option<EventVars>,
    seen: HashMap<String, bool>,
}

impl<'a> Verdicts<'a> {
    pub fn new(event: &'a ssepush_origin::Event) -> Self {
        Verdicts {
            event,
            vars: None,
            seen: HashMap::new(),
        }
    }

    pub fn check(&mut self, filter: &Filter) -> bool {
        if let Some(v) = self.seen.get(filter.source()) {
            return *v;
        }
        let vars = self.vars.get_or_insert_with(|| EventVars::new(self.event));
        let v = filter.matches(vars);
        self.seen.insert(filter.source().to_owned(), v);
        v
    }
}

/// A handoff, as a watcher sees it.
pub trait Subscriber: Send + Sync + 'static {
    fn id(&self) -> &str;
    /// A new event (the subscriber drops ids it already has).
    fn on_event(&self, event: &SharedEvent, verdicts: &mut Verdicts<'_>);
    /// The origin could not resume from the cursor.
    fn on_reset(&self, oldest: Option<EventId>);
    /// Events up to `through` could not be kept for this subscriber (bounded memory).
    fn on_lost(&self, through: EventId);
    /// The event `id` was too large to read and was skipped (`reason` says so): a gap through
    /// it that the phone must fill from the origin, so it owes a wake.
    fn on_skipped(&self, id: EventId, reason: &str);
    /// The stream stopped for good (4xx, refused redirect…).
    fn on_failed(&self, reason: &str);
}

enum Mode {
    Live,
    /// Reading the gap privately; live events are held until the private reader reaches
    /// `target` (the watcher's position when the subscriber joined) or the first held event.
    CatchingUp {
        target: Option<EventId>,
        held: VecDeque<SharedEvent>,
    },
}

struct Sub {
    sub: Arc<dyn Subscriber>,
    mode: Mode,
}

struct WatcherInner {
    subs: HashMap<String, Sub>,
    /// The newest id this watcher has received (its `Last-Event-ID`).
    position: Option<EventId>,
}

/// One upstream connection shared by the handoffs of one stream.
pub struct Watcher {
    key: [u8; 32],
    spec: StreamSpec,
    inner: Mutex<WatcherInner>,
    cancel: CancellationToken,
    /// Held live events per catching-up subscriber (bounds memory while a gap is read).
    hold_cap: usize,
}

impl Watcher {
    fn dispatch(&self, frame: &Frame) -> Flow {
        let mut inner = self.inner.lock().unwrap();
        match frame {
            Frame::Event(ev) => {
                if inner.position.is_some_and(|p| ev.id <= p) {
                    return Flow::Continue;
                }
                inner.position = Some(ev.id);
                let mut verdicts = Verdicts::new(ev);
                for sub in inner.subs.values_mut() {
                    match &mut sub.mode {
                        Mode::Live => sub.sub.on_event(ev, &mut verdicts),
                        Mode::CatchingUp { held, .. } => {
                            if held.len() >= self.hold_cap
                                && let Some(lost) = held.pop_front()
                            {
                                // The gap read is too slow: the oldest held event is lost to
                                // this subscriber, and its buffer will report the gap.
                                sub.sub.on_lost(lost.id);
                            }
                            held.push_back(ev.clone());
                        }
                    }
                }
            }
            Frame::Reset(oldest) => {
                for sub in inner.subs.values() {
                    sub.sub.on_reset(*oldest);
                }
            }
            // The stream's cursor moved without an event (e.g. the origin's head on a fresh
            // stream): handoffs at or past it can join live.
            Frame::LastEventId(Some(id)) => inner.position = inner.position.max(Some(*id)),
            Frame::Oversized {
                id: Some(id),
                limit,
            } => {
                if inner.position.is_some_and(|p| *id <= p) {
                    return Flow::Continue;
                }
                inner.position = Some(*id);
                // Catching-up subscribers too: their private reader may stop before this id.
                let reason = oversized_reason(*id, *limit);
                for sub in inner.subs.values() {
                    sub.sub.on_skipped(*id, &reason);
                }
            }
            Frame::LastEventId(None)
            | Frame::Oversized { id: None, .. }
            | Frame::Retry(_)
            | Frame::Undecodable(_) => {}
        }
        if inner.subs.is_empty() {
            Flow::Done
        } else {
            Flow::Continue
        }
    }

    /// A frame of a subscriber's private gap reader. Returns `Done` once it has caught up.
    fn catch_up(&self, id: &str, frame: &Frame) -> Flow {
        let mut inner = self.inner.lock().unwrap();
        let Some(sub) = inner.subs.get_mut(id) else {
            return Flow::Done;
        };
        let Mode::CatchingUp { target, held } = &mut sub.mode else {
            return Flow::Done;
        };
        // The position this frame brings the private reader to, if any.
        let at = match frame {
            Frame::Event(ev) => {
                let mut verdicts = Verdicts::new(ev);
                sub.sub.on_event(ev, &mut verdicts);
                ev.id
            }
            Frame::Oversized {
                id: Some(id),
                limit,
            } => {
                sub.sub.on_skipped(*id, &oversized_reason(*id, *limit));
                *id
            }
            Frame::Reset(oldest) => {
                sub.sub.on_reset(*oldest);
                return Flow::Continue;
            }
            Frame::LastEventId(_)
            | Frame::Oversized { id: None, .. }
            | Frame::Retry(_)
            | Frame::Undecodable(_) => return Flow::Continue,
        };
        let caught_up = target.is_some_and(|t| at >= t) || held.front().is_some_and(|h| at >= h.id);
        if caught_up {
            for h in held.drain(..) {
                let mut verdicts = Verdicts::new(&h);
                sub.sub.on_event(&h, &mut verdicts);
            }
            sub.mode = Mode::Live;
            return Flow::Done;
        }
        Flow::Continue
    }

    fn subscribers(&self) -> usize {
        self.inner.lock().unwrap().subs.len()
    }
}

/// Every watcher of this node, keyed by stream.
pub struct Upstreams {
    connector: Connector,
    watchers: Mutex<HashMap<[u8; 32], Arc<Watcher>>>,
    shutdown: CancellationToken,
    hold_cap: usize,
    me: Weak<Upstreams>,
}

impl Upstreams {
    pub fn new(connector: Connector, hold_cap: usize, shutdown: CancellationToken) -> Arc<Self> {
        Arc::new_cyclic(|me| Upstreams {
            connector,
            watchers: Mutex::new(HashMap::new()),
            shutdown,
            hold_cap: hold_cap.max(1),
            me: me.clone(),
        })
    }

    /// Starts watching `spec` for `sub` from `cursor`, sharing a connection when possible.
    pub fn join(&self, spec: &StreamSpec, cursor: Option<EventId>, sub: Arc<dyn Subscriber>) {
        let key = spec.key();
        let mut watchers = self.watchers.lock().unwrap();
        let existing = watchers
            .get(&key)
            .filter(|w| !w.cancel.is_cancelled())
            .cloned();
        let watcher = match existing {
            Some(w) => w,
            None => {
                let w = Arc::new(Watcher {
                    key,
                    spec: spec.clone(),
                    inner: Mutex::new(WatcherInner {
                        subs: HashMap::new(),
                        position: cursor,
                    }),
                    cancel: self.shutdown.child_token(),
                    hold_cap: self.hold_cap,
                });
                watchers.insert(key, w.clone());
                metrics::gauge!("ssepush_proxy_upstream_watchers").set(watchers.len() as f64);
                self.spawn_watcher(w.clone(), cursor);
                w
            }
        };
        let mut inner = watcher.inner.lock().unwrap();
        let position = inner.position;
        // Joining live is exact when the watcher has not passed the cursor: everything after
        // the cursor is still to come through it (and the subscriber ignores what it has).
        let live = match (cursor, position) {
            (None, _) => true,
            (Some(c), Some(p)) => c >= p,
            (Some(_), None) => false,
        };
        let id = sub.id().to_owned();
        if live {
            inner.subs.insert(
                id,
                Sub {
                    sub,
                    mode: Mode::Live,
                },
            );
        } else {
            inner.subs.insert(
                id.clone(),
                Sub {
                    sub: sub.clone(),
                    mode: Mode::CatchingUp {
                        target: position,
                        held: VecDeque::new(),
                    },
                },
            );
            self.spawn_catch_up(watcher.clone(), id, cursor, sub);
        }
    }

    /// Stops watching for `id`; the connection closes with its last subscriber.
    pub fn leave(&self, spec: &StreamSpec, id: &str) {
        let key = spec.key();
        let mut watchers = self.watchers.lock().unwrap();
        let Some(w) = watchers.get(&key).cloned() else {
            return;
        };
        let mut inner = w.inner.lock().unwrap();
        inner.subs.remove(id);
        if inner.subs.is_empty() {
            w.cancel.cancel();
            watchers.remove(&key);
            metrics::gauge!("ssepush_proxy_upstream_watchers").set(watchers.len() as f64);
        }
    }

    /// Watchers (distinct streams) open on this node.
    pub fn watcher_count(&self) -> usize {
        self.watchers.lock().unwrap().len()
    }

    /// Handoffs attached to the watcher of `spec`.
    pub fn subscribers(&self, spec: &StreamSpec) -> usize {
        let key = spec.key();
        let w = self.watchers.lock().unwrap().get(&key).cloned();
        w.map_or(0, |w| w.subscribers())
    }

    fn spawn_watcher(&self, w: Arc<Watcher>, start: Option<EventId>) {
        let conn = self.connector.clone();
        let me = self.me.clone();
        let span = tracing::info_span!("watcher", origin = %origin_of(&w.spec.url));
        tokio::spawn(
            async move {
                tracing::debug!("watching");
                let result = read_loop(&conn, &w.spec, start, &w.cancel, |f| w.dispatch(f)).await;
                if let Err(reason) = result {
                    tracing::warn!(%reason, "upstream stream stopped");
                    // Remove it first, so handoffs created from now on try afresh.
                    if let Some(me) = me.upgrade() {
                        let mut watchers = me.watchers.lock().unwrap();
                        if watchers.get(&w.key).is_some_and(|x| Arc::ptr_eq(x, &w)) {
                            watchers.remove(&w.key);
                        }
                    }
                    w.cancel.cancel();
                    let subs: Vec<Arc<dyn Subscriber>> = {
                        let mut inner = w.inner.lock().unwrap();
                        inner.subs.drain().map(|(_, s)| s.sub).collect()
                    };
                    for s in subs {
                        s.on_failed(&reason);
                    }
                }
            }
            .instrument(span),
        );
    }

    fn spawn_catch_up(
        &self,
        w: Arc<Watcher>,
        id: String,
        from: Option<EventId>,
        sub: Arc<dyn Subscriber>,
    ) {
        let conn = self.connector.clone();
        let span = tracing::info_span!("catch_up", handoff = %id);
        tokio::spawn(
            async move {
                metrics::counter!("ssepush_proxy_upstream_catch_ups_total").increment(1);
                let cancel = w.cancel.child_token();
                let result = read_loop(&conn, &w.spec, from, &cancel, |f| w.catch_up(&id, f)).await;
                if let Err(reason) = result {
                    sub.on_failed(&reason);
                }
            }
            .instrument(span),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16) -> ConnEnd {
        ConnEnd::Status {
            status,
            retry_after: None,
        }
    }

    fn cfg() -> UpstreamSettings {
        UpstreamSettings {
            reconnect_ms: 1000,
            backoff_base_ms: 100,
            backoff_max_ms: 10_000,
            ..UpstreamSettings::default()
        }
    }

    #[test]
    fn clean_ends_wait_the_retry_hint() {
        let mut p = ReconnectPolicy::new(&cfg());
        assert_eq!(
            p.after(&ConnEnd::Ended, 0.3),
            Next::ReconnectAfter(Duration::from_millis(1000))
        );
        p.on_retry_hint(Duration::from_millis(250));
        assert_eq!(
            p.after(&ConnEnd::Ended, 0.3),
            Next::ReconnectAfter(Duration::from_millis(250))
        );
        p.on_retry_hint(Duration::from_secs(86_400));
        assert_eq!(
            p.after(&ConnEnd::Ended, 0.3),
            Next::ReconnectAfter(MAX_RETRY_HINT)
        );
    }

    #[test]
    fn failures_back_off_with_jitter_and_reset_on_open() {
        let mut p = ReconnectPolicy::new(&cfg());
        p.on_retry_hint(Duration::from_millis(10));
        let waits: Vec<Duration> = (0..4)
            .map(
                |_| match p.after(&ConnEnd::Network("refused".into()), 1.0) {
                    Next::ReconnectAfter(d) => d,
                    other => panic!("{other:?}"),
                },
            )
            .collect();
        assert_eq!(waits, [100, 200, 400, 800].map(Duration::from_millis));
        assert_eq!(
            p.after(&status(503), 0.0),
            Next::ReconnectAfter(Duration::from_millis(800))
        );
        p.on_open();
        assert_eq!(
            p.after(&ConnEnd::Idle, 1.0),
            Next::ReconnectAfter(Duration::from_millis(100))
        );
        assert!(matches!(
            p.after(&status(429), 1.0),
            Next::ReconnectAfter(_)
        ));
    }

    #[test]
    fn client_errors_and_refused_redirects_stop() {
        let mut p = ReconnectPolicy::new(&cfg());
        assert_eq!(
            p.after(&status(401), 0.5),
            Next::Stop("upstream answered 401".into())
        );
        assert_eq!(
            p.after(&status(404), 0.5),
            Next::Stop("upstream answered 404".into())
        );
        assert!(matches!(p.after(&status(204), 0.5), Next::Stop(r) if r.contains("204")));
        // Any status but 200 fails the connection: a 202 is no stream, whatever it claims.
        assert!(matches!(p.after(&status(202), 0.5), Next::Stop(r) if r.contains("202")));
        assert!(matches!(p.after(&status(206), 0.5), Next::Stop(_)));
        assert!(matches!(
            p.after(&ConnEnd::NotEventStream, 0.5),
            Next::Stop(_)
        ));
        match p.after(&ConnEnd::RedirectRefused("http://evil:1".into()), 0.5) {
            Next::Stop(r) => assert!(r.contains("http://evil:1") && r.contains("allowed_origins")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn retry_after_on_503_and_429_is_honoured_and_capped() {
        let mut p = ReconnectPolicy::new(&cfg());
        let with = |status, secs| ConnEnd::Status {
            status,
            retry_after: Some(Duration::from_secs(secs)),
        };
        assert_eq!(
            p.after(&with(503, 20), 0.5),
            Next::ReconnectAfter(Duration::from_secs(20))
        );
        assert_eq!(
            p.after(&with(429, 7), 0.5),
            Next::ReconnectAfter(Duration::from_secs(7))
        );
        // Capped like `retry:`.
        assert_eq!(
            p.after(&with(503, 86_400), 0.5),
            Next::ReconnectAfter(MAX_RETRY_HINT)
        );
        // Never sooner than the backoff: a `Retry-After: 0` does not make a tight loop.
        p.on_open();
        assert_eq!(
            p.after(&with(503, 0), 1.0),
            Next::ReconnectAfter(Duration::from_millis(1000))
        );
        // Only 503 and 429 give it that meaning (RFC 9110 §10.2.3, RFC 6585 §4).
        p.on_open();
        p.on_retry_hint(Duration::from_millis(10));
        assert_eq!(
            p.after(&with(500, 20), 1.0),
            Next::ReconnectAfter(Duration::from_millis(100))
        );
    }

    /// A subscriber that records what it is given.
    struct Rec {
        id: String,
        got: Mutex<Vec<u64>>,
    }

    impl Subscriber for Rec {
        fn id(&self) -> &str {
            &self.id
        }
        fn on_event(&self, event: &SharedEvent, _: &mut Verdicts<'_>) {
            self.got.lock().unwrap().push(event.id.seq);
        }
        fn on_reset(&self, _: Option<EventId>) {}
        fn on_lost(&self, through: EventId) {
            self.got.lock().unwrap().push(1000 + through.seq);
        }
        fn on_skipped(&self, id: EventId, reason: &str) {
            assert!(reason.contains(&id.to_string()) && reason.contains("max_event_bytes"));
            self.got.lock().unwrap().push(2000 + id.seq);
        }
        fn on_failed(&self, _: &str) {}
    }

    fn ev(seq: u64) -> Frame {
        Frame::Event(Arc::new(ssepush_origin::Event {
            id: EventId::new(1, seq),
            channel: "a".into(),
            kind: "message".into(),
            data: serde_json::Value::Null,
            time: 1,
        }))
    }

    #[test]
    fn a_late_joiner_catches_up_privately_then_shares_the_live_feed() {
        let spec = StreamSpec {
            url: Url::parse("http://127.0.0.1:1/v1/sse").unwrap(),
            headers: Default::default(),
        };
        let rec = |id: &str| {
            Arc::new(Rec {
                id: id.into(),
                got: Mutex::new(Vec::new()),
            })
        };
        let (a, b) = (rec("a"), rec("b"));
        let w = Watcher {
            key: spec.key(),
            spec,
            inner: Mutex::new(WatcherInner {
                subs: HashMap::new(),
                position: Some(EventId::new(1, 5)),
            }),
            cancel: CancellationToken::new(),
            hold_cap: 2,
        };
        {
            let mut inner = w.inner.lock().unwrap();
            inner.subs.insert(
                "a".into(),
                Sub {
                    sub: a.clone(),
                    mode: Mode::Live,
                },
            );
            let target = inner.position;
            inner.subs.insert(
                "b".into(),
                Sub {
                    sub: b.clone(),
                    mode: Mode::CatchingUp {
                        target,
                        held: VecDeque::new(),
                    },
                },
            );
        }
        // Live events: `a` gets them, `b` has them held. Old ids are ignored by the watcher.
        assert!(matches!(w.dispatch(&ev(5)), Flow::Continue));
        assert!(matches!(w.dispatch(&ev(6)), Flow::Continue));
        assert_eq!(*a.got.lock().unwrap(), vec![6]);
        assert!(b.got.lock().unwrap().is_empty());
        // `b`'s private reader delivers the gap; reaching the watcher's position ends it and
        // releases what was held, in order.
        assert!(matches!(w.catch_up("b", &ev(4)), Flow::Continue));
        assert!(matches!(w.catch_up("b", &ev(5)), Flow::Done));
        assert_eq!(*b.got.lock().unwrap(), vec![4, 5, 6]);
        w.dispatch(&ev(7));
        assert_eq!(*a.got.lock().unwrap(), vec![6, 7]);
        assert_eq!(*b.got.lock().unwrap(), vec![4, 5, 6, 7]);
        // A reader for a subscriber that left is told to stop.
        assert!(matches!(w.catch_up("gone", &ev(8)), Flow::Done));
    }

    #[test]
    fn a_slow_catch_up_loses_held_events_visibly_not_silently() {
        let spec = StreamSpec {
            url: Url::parse("http://127.0.0.1:1/v1/sse").unwrap(),
            headers: Default::default(),
        };
        let b = Arc::new(Rec {
            id: "b".into(),
            got: Mutex::new(Vec::new()),
        });
        let w = Watcher {
            key: spec.key(),
            spec,
            inner: Mutex::new(WatcherInner {
                subs: HashMap::new(),
                position: Some(EventId::new(1, 5)),
            }),
            cancel: CancellationToken::new(),
            hold_cap: 2,
        };
        w.inner.lock().unwrap().subs.insert(
            "b".into(),
            Sub {
                sub: b.clone(),
                mode: Mode::CatchingUp {
                    target: Some(EventId::new(1, 5)),
                    held: VecDeque::new(),
                },
            },
        );
        for i in 6..=8 {
            w.dispatch(&ev(i));
        }
        // Held 6 and 7; 8 pushed 6 out, which was reported as lost.
        assert_eq!(*b.got.lock().unwrap(), vec![1006]);
        w.catch_up("b", &ev(5));
        assert_eq!(*b.got.lock().unwrap(), vec![1006, 5, 7, 8]);
    }

    #[tokio::test]
    async fn frames_share_events_and_carry_cursors_and_oversized_events() {
        let (a, b) = (EventId::new(5, 1), EventId::new(6, 0));
        let raw = format!(
            "\u{feff}retry: 250\r\rid: {a}\r\rid: {a}\rdata: {{\"channel\":\"a\",\"data\":1,\"time\":5}}\r\r\
             id: {b}\rdata: {}\r\r",
            "x".repeat(300)
        );
        // One byte at a time: nothing depends on chunking.
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            raw.as_bytes().chunks(1).map(|c| Ok(c.to_vec())).collect();
        let out: Vec<Frame> = frames(futures::stream::iter(chunks), 256)
            .map(|r| r.unwrap())
            .collect()
            .await;
        assert_eq!(out.len(), 4, "{out:?}");
        assert_eq!(out[0], Frame::Retry(Duration::from_millis(250)));
        assert_eq!(out[1], Frame::LastEventId(Some(a)));
        assert!(matches!(&out[2], Frame::Event(e) if e.id == a && e.channel == "a"));
        assert_eq!(
            out[3],
            Frame::Oversized {
                id: Some(b),
                limit: 256
            }
        );
    }

    fn watcher_with(sub: Arc<Rec>, position: Option<EventId>) -> Watcher {
        let spec = StreamSpec {
            url: Url::parse("http://127.0.0.1:1/v1/sse").unwrap(),
            headers: Default::default(),
        };
        let w = Watcher {
            key: spec.key(),
            spec,
            inner: Mutex::new(WatcherInner {
                subs: HashMap::new(),
                position,
            }),
            cancel: CancellationToken::new(),
            hold_cap: 4,
        };
        w.inner.lock().unwrap().subs.insert(
            sub.id.clone(),
            Sub {
                sub,
                mode: Mode::Live,
            },
        );
        w
    }

    #[test]
    fn an_oversized_event_is_a_gap_once_and_id_only_blocks_move_the_position() {
        let a = Arc::new(Rec {
            id: "a".into(),
            got: Mutex::new(Vec::new()),
        });
        let w = watcher_with(a.clone(), Some(EventId::new(1, 2)));
        // The origin's head, before any event: the watcher's position (its Last-Event-ID).
        w.dispatch(&Frame::LastEventId(Some(EventId::new(1, 4))));
        assert_eq!(w.inner.lock().unwrap().position, Some(EventId::new(1, 4)));
        let big = |seq| Frame::Oversized {
            id: Some(EventId::new(1, seq)),
            limit: 10,
        };
        w.dispatch(&big(5));
        // Seen again after a reconnect: not reported twice.
        w.dispatch(&big(5));
        w.dispatch(&ev(6));
        assert_eq!(*a.got.lock().unwrap(), vec![2005, 6]);
        assert_eq!(w.inner.lock().unwrap().position, Some(EventId::new(1, 6)));
    }

    #[test]
    fn a_private_reader_that_skips_past_its_target_has_caught_up() {
        let b = Arc::new(Rec {
            id: "b".into(),
            got: Mutex::new(Vec::new()),
        });
        let w = watcher_with(b.clone(), Some(EventId::new(1, 5)));
        w.inner.lock().unwrap().subs.get_mut("b").unwrap().mode = Mode::CatchingUp {
            target: Some(EventId::new(1, 5)),
            held: VecDeque::new(),
        };
        w.dispatch(&ev(6));
        let big = Frame::Oversized {
            id: Some(EventId::new(1, 5)),
            limit: 10,
        };
        assert!(matches!(w.catch_up("b", &ev(4)), Flow::Continue));
        assert!(matches!(w.catch_up("b", &big), Flow::Done));
        assert_eq!(*b.got.lock().unwrap(), vec![4, 2005, 6]);
    }
}
