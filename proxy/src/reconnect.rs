//! The **reconnect policy** of an upstream SSE reader, as plain code (the jitter is passed in).
//!
//! After a clean end, wait the origin's `retry:` (default `upstream.reconnect_ms`); after a
//! network error, an idle timeout, a 5xx, 408 or 429, back off exponentially with jitter (never
//! sooner than `retry:`, nor than the `Retry-After` of a 503 or 429 — delta-seconds or an
//! HTTP-date — both capped at [`MAX_RETRY_HINT`]). A **refused** connection (nothing listens on
//! the origin's port: it is restarting) backs off the same way but never waits longer than
//! `upstream.refused_backoff_max_ms` (1 s by default, and `retry:` counts only up to half of it): a refusal costs the origin's host one RST and its process nothing, and a watcher
//! parked for 30 s after an outage of 4 s misses the wakes of that time (issue 11: 7 of 1,547
//! wakes). The equal jitter spreads the herd of reconnects over the second after its return.
//! Any other status than 200 **stops**, as the
//! SSE spec says to fail the connection — a 4xx, a 204 (the spec's "stop"), but also a 202 that
//! claims `text/event-stream` — and so do a 200 that is not `text/event-stream` and a refused
//! redirect; the handoffs fail with the reason (e.g. "upstream answered 401").

use std::time::Duration;

use ssepush_origin::backoff::{Jitter, backoff};

use crate::settings::UpstreamSettings;
/// How one connection attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnEnd {
    /// The stream ended cleanly after a 200.
    Ended,
    /// Nothing (not even a keep-alive) arrived within the idle timeout.
    Idle,
    /// Connect or read error.
    Network(String),
    /// The TCP connection was refused: nothing listens on the origin's port (it is down or
    /// restarting). Retried with a backoff capped at `upstream.refused_backoff_max_ms`.
    Refused(String),
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
    /// The upstream's TLS certificate was refused (untrusted issuer, expired, wrong name…); the
    /// sentence names the problem ([`ssepush_origin::service::tls::certificate_problem`]).
    Certificate(String),
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
    /// The ceiling for [`ConnEnd::Refused`] (also over `retry`).
    refused_max: Duration,
    failures: u32,
}

impl ReconnectPolicy {
    pub fn new(cfg: &UpstreamSettings) -> Self {
        ReconnectPolicy {
            retry: Duration::from_millis(cfg.reconnect_ms),
            base: Duration::from_millis(cfg.backoff_base_ms),
            max: Duration::from_millis(cfg.backoff_max_ms),
            refused_max: Duration::from_millis(cfg.refused_backoff_max_ms),
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
            ConnEnd::Idle | ConnEnd::Network(_) | ConnEnd::Refused(_) => true,
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
            ConnEnd::Certificate(problem) => {
                return Next::Stop(format!("upstream {problem}"));
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
        if let ConnEnd::Refused(_) = end {
            // Nobody is there to be spared: come back soon after it returns (see the module doc).
            let cap = self.max.min(self.refused_max);
            let wait = backoff(
                self.failures,
                self.base.min(cap),
                cap,
                Jitter::Equal,
                jitter,
            );
            return Next::ReconnectAfter(wait.max(self.retry.min(cap / 2)));
        }
        let wait =
            backoff(self.failures, self.base, self.max, Jitter::Equal, jitter).max(self.retry);
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
            refused_backoff_max_ms: 1000,
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
    fn refused_connections_back_off_at_most_the_refused_ceiling() {
        let refused = || ConnEnd::Refused("connect error: Connection refused".into());
        let mut p = ReconnectPolicy::new(&cfg());
        // The origin's `retry:` is longer than the ceiling: a refusal does not wait it out.
        p.on_retry_hint(Duration::from_secs(3));
        let waits: Vec<Duration> = (0..30)
            .map(|i| match p.after(&refused(), f64::from(i % 10) / 10.0) {
                Next::ReconnectAfter(d) => d,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(
            waits.iter().all(|w| *w <= Duration::from_millis(1000)),
            "{waits:?}"
        );
        // Equal jitter: at the ceiling, between half of it and all of it.
        assert!(
            waits[10..].iter().all(|w| *w >= Duration::from_millis(500)),
            "{waits:?}"
        );
        // Other network errors keep the long backoff (and `retry:`).
        assert_eq!(
            p.after(&ConnEnd::Network("reset".into()), 1.0),
            Next::ReconnectAfter(Duration::from_millis(10_000))
        );
        // A smaller backoff_max_ms is the ceiling for refusals too.
        let mut small = ReconnectPolicy::new(&UpstreamSettings {
            backoff_max_ms: 300,
            ..cfg()
        });
        for _ in 0..10 {
            assert!(matches!(small.after(&refused(), 1.0),
                Next::ReconnectAfter(d) if d <= Duration::from_millis(300)));
        }
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
}
