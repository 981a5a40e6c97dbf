//! Watching origin streams: the **reconnect policy** (plain code), one connection attempt
//! (reqwest + the SSE parser, a thin shell), and **shared watchers**.
//!
//! * [`ReconnectPolicy`]: after a clean end, wait the origin's `retry:` (default
//!   `upstream.reconnect_ms`); after a network error, an idle timeout, a 5xx, 408 or 429, back
//!   off exponentially with jitter (never sooner than `retry:`); on any other 4xx, 204 (the SSE
//!   spec's "stop"), a non-`text/event-stream` answer or a refused redirect, **stop** and record
//!   the reason — the handoff fails with it (e.g. "upstream answered 401").
//! * Redirects are never followed automatically: each hop's `Location` is checked against
//!   `allowed_origins` *before* any request goes there, and the handoff's headers (credentials)
//!   only go to the stream's own origin.
//! * Parsing: [`SseParser`], WHATWG's algorithm as plain code (BOM, CR/LF/CRLF, `retry:`);
//!   eventsource-stream 0.2.3 panics on a BOM and drops `retry:` blocks, see its docs.
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
use std::time::Duration;

use futures::{Stream, StreamExt};
use rand::Rng;
use reqwest::Url;
use ssepush_origin::event::{EventId, RESET_TYPE, SharedEvent};
use ssepush_origin::filter::{EventVars, Filter};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::handoff::{OriginAllowList, StreamSpec, origin_of};
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
    /// A non-2xx answer (after redirects).
    Status(u16),
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

/// Longest `retry:` hint honoured: a hostile or broken origin cannot park a watcher forever.
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

    /// `jitter` in `[0, 1)`.
    pub fn after(&mut self, end: &ConnEnd, jitter: f64) -> Next {
        let retryable = match end {
            ConnEnd::Ended => return Next::ReconnectAfter(self.retry),
            ConnEnd::Idle | ConnEnd::Network(_) => true,
            ConnEnd::Status(s) => *s >= 500 || *s == 408 || *s == 429,
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
            let ConnEnd::Status(s) = end else {
                unreachable!("only statuses are not retryable here")
            };
            return Next::Stop(match s {
                204 => "upstream answered 204 (the SSE signal to stop)".to_owned(),
                s => format!("upstream answered {s}"),
            });
        }
        self.failures += 1;
        let wait = backoff(self.failures, self.base, self.max, jitter);
        Next::ReconnectAfter(wait.max(self.retry))
    }
}

// ---------------------------------------------------------------------------------------------
// One connection
// ---------------------------------------------------------------------------------------------

/// What a connection yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Event(SharedEvent),
    /// The origin's `ssepush.reset`: the cursor was older than its retention.
    Reset(Option<EventId>),
    Retry(Duration),
    /// A frame that is not an ssepush event (skipped, counted).
    Undecodable(String),
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
                    return Err(ConnEnd::Status(status.as_u16()));
                };
                if !self.allow.allows(&next) {
                    return Err(ConnEnd::RedirectRefused(origin_of(&next)));
                }
                url = next;
                continue;
            }
            if !status.is_success() {
                return Err(ConnEnd::Status(status.as_u16()));
            }
            if status.as_u16() == 204 {
                return Err(ConnEnd::Status(204));
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
            return Ok(frames(resp.bytes_stream()));
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

/// SSE bytes → frames. Generic over the byte stream so tests can feed it plain values.
pub fn frames<S, B, E>(bytes: S) -> FrameStream
where
    S: Stream<Item = Result<B, E>> + Send + 'static,
    B: AsRef<[u8]> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let state = (
        Box::pin(bytes),
        SseParser::default(),
        VecDeque::<Frame>::new(),
        false,
    );
    Box::pin(futures::stream::unfold(
        state,
        |(mut s, mut parser, mut ready, mut done)| async move {
            loop {
                if let Some(f) = ready.pop_front() {
                    return Some((Ok(f), (s, parser, ready, done)));
                }
                if done {
                    return None;
                }
                match s.next().await {
                    None => done = true,
                    Some(Err(e)) => {
                        done = true;
                        return Some((Err(e.to_string()), (s, parser, ready, done)));
                    }
                    Some(Ok(chunk)) => {
                        if let Err(e) = parser.feed(chunk.as_ref(), &mut ready) {
                            done = true;
                            return Some((Err(e), (s, parser, ready, done)));
                        }
                    }
                }
            }
        },
    ))
}

/// Longest line (and event) accepted from an origin: bounds what one connection can make the
/// proxy hold.
pub const MAX_SSE_LINE: usize = 1 << 20;

/// The SSE parser of WHATWG HTML §9.2.6, as plain code.
///
/// Not eventsource-stream's: its 0.2.3 panics on a leading BOM (it slices inside the 3-byte
/// character) and never reports a `retry:` that comes in a block without `data:` — which is how
/// origins send it — so the proxy could neither survive an odd origin nor honour `retry:`.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended in CR: a following LF belongs to it.
    after_cr: bool,
    started: bool,
    data: String,
    kind: String,
    last_id: String,
}

impl SseParser {
    /// Feeds bytes; complete frames are appended to `out`.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut VecDeque<Frame>) -> Result<(), String> {
        if !self.started {
            // The BOM may be split across chunks: hold bytes until it is decided.
            const BOM: &[u8] = b"\xEF\xBB\xBF";
            self.line.extend_from_slice(chunk);
            if self.line.len() < BOM.len() && BOM.starts_with(&self.line) {
                return Ok(());
            }
            self.started = true;
            let held = std::mem::take(&mut self.line);
            let rest = held.strip_prefix(BOM).unwrap_or(&held).to_vec();
            return self.feed(&rest, out);
        }
        if self.after_cr && chunk.first() == Some(&b'\n') {
            chunk = &chunk[1..];
        }
        self.after_cr = false;
        let mut start = 0;
        let mut i = 0;
        while i < chunk.len() {
            let b = chunk[i];
            if b == b'\n' || b == b'\r' {
                self.line.extend_from_slice(&chunk[start..i]);
                let line = std::mem::take(&mut self.line);
                self.line_done(&line, out);
                if b == b'\r' {
                    if i + 1 == chunk.len() {
                        self.after_cr = true;
                    } else if chunk[i + 1] == b'\n' {
                        i += 1;
                    }
                }
                start = i + 1;
            }
            i += 1;
        }
        self.line
            .extend_from_slice(&chunk[start.min(chunk.len())..]);
        if self.line.len() > MAX_SSE_LINE || self.data.len() > MAX_SSE_LINE {
            return Err(format!(
                "an SSE line or event is longer than {MAX_SSE_LINE} bytes"
            ));
        }
        Ok(())
    }

    fn line_done(&mut self, line: &[u8], out: &mut VecDeque<Frame>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*line, ""),
        };
        match field {
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "event" => self.kind = value.to_owned(),
            "id" if !value.contains('\0') => self.last_id = value.to_owned(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse::<u64>() {
                    out.push_back(Frame::Retry(Duration::from_millis(ms)));
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut VecDeque<Frame>) {
        let kind = std::mem::take(&mut self.kind);
        if self.data.is_empty() {
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop();
        out.push_back(decode(&self.last_id, &kind, &data));
    }
}

fn decode(id: &str, kind: &str, data: &str) -> Frame {
    if kind == RESET_TYPE {
        let v: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
        return Frame::Reset(v["oldestId"].as_str().and_then(|s| s.parse().ok()));
    }
    match ssepush_origin::sse::decode_event(id, kind, data) {
        Ok(e) => Frame::Event(Arc::new(e)),
        Err(e) => Frame::Undecodable(e.to_string()),
    }
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

/// The reconnect loop around [`Connector::open`]: reads from `start`, resends the newest id as
/// `Last-Event-ID` on every reconnect, and hands frames to `on_frame`. Returns `Err(reason)`
/// when the policy says stop, `Ok` when `on_frame` is done or `cancel` fires.
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
            Frame::Retry(_) | Frame::Undecodable(_) => {}
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
        match frame {
            Frame::Event(ev) => {
                let mut verdicts = Verdicts::new(ev);
                sub.sub.on_event(ev, &mut verdicts);
                let caught_up = target.is_some_and(|t| ev.id >= t)
                    || held.front().is_some_and(|h| ev.id >= h.id);
                if caught_up {
                    for h in held.drain(..) {
                        let mut verdicts = Verdicts::new(&h);
                        sub.sub.on_event(&h, &mut verdicts);
                    }
                    sub.mode = Mode::Live;
                    return Flow::Done;
                }
            }
            Frame::Reset(oldest) => sub.sub.on_reset(*oldest),
            Frame::Retry(_) | Frame::Undecodable(_) => {}
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
            p.after(&ConnEnd::Status(503), 0.0),
            Next::ReconnectAfter(Duration::from_millis(800))
        );
        p.on_open();
        assert_eq!(
            p.after(&ConnEnd::Idle, 1.0),
            Next::ReconnectAfter(Duration::from_millis(100))
        );
        assert!(matches!(
            p.after(&ConnEnd::Status(429), 1.0),
            Next::ReconnectAfter(_)
        ));
    }

    #[test]
    fn client_errors_and_refused_redirects_stop() {
        let mut p = ReconnectPolicy::new(&cfg());
        assert_eq!(
            p.after(&ConnEnd::Status(401), 0.5),
            Next::Stop("upstream answered 401".into())
        );
        assert_eq!(
            p.after(&ConnEnd::Status(404), 0.5),
            Next::Stop("upstream answered 404".into())
        );
        assert!(matches!(p.after(&ConnEnd::Status(204), 0.5), Next::Stop(r) if r.contains("204")));
        assert!(matches!(
            p.after(&ConnEnd::NotEventStream, 0.5),
            Next::Stop(_)
        ));
        match p.after(&ConnEnd::RedirectRefused("http://evil:1".into()), 0.5) {
            Next::Stop(r) => assert!(r.contains("http://evil:1") && r.contains("allowed_origins")),
            other => panic!("{other:?}"),
        }
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

    async fn decode_all(raw: &'static [u8]) -> Vec<Frame> {
        // Split in awkward places (the BOM itself too): the parser must not care about chunking.
        let mut chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(raw[..1].to_vec())];
        chunks.extend(raw[1..].chunks(7).map(|c| Ok(c.to_vec())));
        frames(futures::stream::iter(chunks))
            .map(|r| r.unwrap())
            .collect()
            .await
    }

    #[tokio::test]
    async fn frames_decode_events_resets_retries_and_strip_a_bom() {
        let raw = "\u{feff}retry: 250\n\nid: 5-1\nevent: message\ndata: {\"channel\":\"a\",\"data\":1,\"time\":5}\n\n\
                   event: ssepush.reset\ndata: {\"oldestId\":\"6-0\"}\n\n: keep-alive\n\n\
                   id: 7-0\ndata: not json\n\n";
        let out = decode_all(raw.as_bytes()).await;
        assert_eq!(out[0], Frame::Retry(Duration::from_millis(250)));
        match &out[1] {
            Frame::Event(e) => {
                assert_eq!(e.id, EventId::new(5, 1));
                assert_eq!(e.channel, "a");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(out[2], Frame::Reset(Some(EventId::new(6, 0))));
        assert!(matches!(out[3], Frame::Undecodable(_)));
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn the_parser_takes_any_line_ending_and_keeps_the_last_id() {
        let mut p = SseParser::default();
        let mut out = VecDeque::new();
        let raw = b"id: 1-0\r\ndata: {\"channel\":\"a\",\"data\":1,\"time\":1}\r\r: c\ndata: {\"channel\":\"b\",\"data\":2,\"time\":1}\r";
        for b in raw.chunks(1) {
            p.feed(b, &mut out).unwrap();
        }
        p.feed(b"\n\n", &mut out).unwrap();
        let ids: Vec<(EventId, String)> = out
            .iter()
            .map(|f| match f {
                Frame::Event(e) => (e.id, e.channel.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            ids,
            vec![
                (EventId::new(1, 0), "a".into()),
                (EventId::new(1, 0), "b".into())
            ]
        );
        let mut p = SseParser::default();
        let long = vec![b'x'; MAX_SSE_LINE + 1];
        assert!(p.feed(&long, &mut out).is_err());
    }

    #[tokio::test]
    async fn without_the_bom_stripped_the_first_field_would_be_lost() {
        // The proof that the BOM matters: the first line is `id:` and must still be read.
        let out = decode_all(
            "\u{feff}id: 1-0\ndata: {\"channel\":\"a\",\"data\":null,\"time\":1}\n\n".as_bytes(),
        )
        .await;
        assert!(matches!(&out[0], Frame::Event(e) if e.id == EventId::new(1, 0)));
    }
}
