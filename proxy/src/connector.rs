//! One upstream connection attempt and the read loop around it: reqwest plus the product's SSE
//! parser, a thin shell over [`crate::reconnect`]'s policy.
//!
//! * Redirects are never followed automatically: each hop's `Location` is checked against
//!   `allowed_origins` *before* any request goes there, and the handoff's headers (credentials)
//!   only go to the stream's own origin.
//! * Parsing: `ssepush_origin::sse::parse`, WHATWG's algorithm (BOM, CR/LF/CRLF, `retry:`,
//!   id-only blocks), bounded by `upstream.max_event_bytes`.
//! * The read loop keeps the **connection's** last event ID exactly as WHATWG's `EventSource`
//!   would (the newest event's, or what an id-only block set) and resends it as `Last-Event-ID`
//!   on every reconnect, so a cut before the first event loses nothing. It is the reader's
//!   position in the stream, not a handoff's cursor (each handoff owns its own, see
//!   [`crate::cursor`]).
//! * An event over the limit is skipped, never re-downloaded: the reader moves past its id and
//!   hands an [`Frame::Oversized`] on (each handoff then reports a gap through it); one without
//!   an id to resume past stops the reader with the reason.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::{Stream, StreamExt};
use rand::Rng;
use reqwest::Url;
use ssepush_origin::event::{EventId, SharedEvent};
use ssepush_origin::service::tls;
use ssepush_origin::sse::frames::Frame as OriginFrame;
use tokio_util::sync::CancellationToken;

use crate::allow::{OriginAllowList, origin_of};
use crate::handoff::StreamSpec;
use crate::reconnect::{ConnEnd, Next, ReconnectPolicy};
use crate::retry_after;
use crate::settings::UpstreamSettings;

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
    /// Builds the HTTP client: the product's TLS ([`ssepush_origin::service::tls`]: ring,
    /// Mozilla's roots plus `extra_ca`), no automatic redirects, the connect timeout.
    ///
    /// Errors: a bad extra CA file, or reqwest refusing the configuration.
    pub fn new(
        allow: Arc<OriginAllowList>,
        cfg: UpstreamSettings,
        extra_ca: Option<&std::path::Path>,
    ) -> Result<Self, String> {
        let http = tls::reqwest_builder(extra_ca)
            .map_err(|e| e.to_string())?
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_millis(cfg.connect_timeout_ms))
            .build()
            .map_err(|e| tls::describe_error(&e))?;
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
                // A certificate the proxy cannot trust will not fix itself on a retry: the
                // handoffs fail at once, with the problem named.
                Ok(Err(e)) => match tls::certificate_problem(&e) {
                    Some(problem) => return Err(ConnEnd::Certificate(problem)),
                    None if is_refused(&e) => return Err(ConnEnd::Refused(without_url(&e))),
                    None => return Err(ConnEnd::Network(without_url(&e))),
                },
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

/// The connection was refused (an RST to the SYN: nothing listens there).
fn is_refused(e: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        source = s.source();
    }
    false
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
pub(crate) enum Flow {
    Continue,
    /// Done (caught up, or nobody listens any more).
    Done,
}

/// What handoffs report in `lastError` when a connection ended and the reader will try again:
/// what went wrong and when the next attempt is (no URL: its query may carry a token).
pub fn trouble_reason(end: &ConnEnd, wait: Duration) -> String {
    let what = match end {
        ConnEnd::Ended => "upstream stream ended".to_owned(),
        ConnEnd::Idle => {
            "upstream stream was silent for longer than upstream.idle_timeout_ms".to_owned()
        }
        ConnEnd::Network(e) | ConnEnd::Refused(e) => format!("upstream unreachable ({e})"),
        ConnEnd::Status { status, .. } => format!("upstream answered {status}"),
        ConnEnd::NotEventStream => "upstream did not answer with text/event-stream".to_owned(),
        ConnEnd::RedirectRefused(to) => format!("upstream redirected to {to}"),
        ConnEnd::TooManyRedirects => "upstream redirected too many times".to_owned(),
        ConnEnd::Certificate(problem) => format!("upstream {problem}"),
    };
    format!("{what}; reconnecting in {} ms", wait.as_millis())
}

/// The reconnect loop around [`Connector::open`]: reads from `start`, resends the stream's last
/// event id (the newest event's, or what an id-only block set) as `Last-Event-ID` on every
/// reconnect, and hands frames to `on_frame`. Each time a connection fails or ends and the
/// policy will reconnect, `on_trouble` gets [`trouble_reason`] at once (the handoffs' status
/// shows it while the reader backs off). Returns `Err(reason)` when the policy says stop or an
/// oversized event cannot be skipped, `Ok` when `on_frame` is done or `cancel` fires.
pub(crate) async fn read_loop(
    conn: &Connector,
    spec: &StreamSpec,
    start: Option<EventId>,
    cancel: &CancellationToken,
    mut on_frame: impl FnMut(&Frame) -> Flow,
    mut on_trouble: impl FnMut(&str),
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
                on_trouble(&trouble_reason(&end, wait));
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trouble_says_what_happened_and_when_the_next_attempt_is() {
        let wait = Duration::from_millis(1500);
        let refused = ConnEnd::Network("connect error: Connection refused (os error 111)".into());
        assert_eq!(
            trouble_reason(&refused, wait),
            "upstream unreachable (connect error: Connection refused (os error 111)); \
             reconnecting in 1500 ms"
        );
        let unavailable = ConnEnd::Status {
            status: 503,
            retry_after: None,
        };
        assert!(trouble_reason(&unavailable, wait).starts_with("upstream answered 503; "));
        assert!(trouble_reason(&ConnEnd::Ended, wait).starts_with("upstream stream ended; "));
        assert!(trouble_reason(&ConnEnd::Idle, wait).contains("upstream.idle_timeout_ms"));
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
}
