//! Delivery policy as plain values: what a webhook's state becomes after a success, a failure,
//! a retention gap or a re-enable, and how long to wait before the next attempt.
//!
//! Nothing here touches a socket or a clock: times come in as Unix milliseconds and the jitter
//! as a number in `[0, 1)`, so every rule is unit-tested exactly.
//!
//! * **Backoff** is exponential with *full jitter* (the AWS architecture blog's scheme): after the
//!   n-th consecutive failure the wait is uniform in `[0, min(cap, base · 2^(n-1)))`. Full jitter
//!   spreads the retries of many webhooks that failed together (one receiver outage) instead of
//!   having them stampede back in lockstep.
//! * **Disable** happens after `max_failures` consecutive failures, or once a webhook has been
//!   failing without a single success for `failure_window` (when set). A disabled webhook keeps
//!   its cursor; re-enabling it resumes from there.
//! * The **cursor** only ever moves forward, and only on a 2xx for that event.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backoff::Jitter;
use crate::event::EventId;

/// Longest `last_error` kept, in bytes: error text comes from the network and must stay bounded.
pub const MAX_ERROR_LEN: usize = 512;

/// The tunables, from `[webhooks]` in the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// Consecutive failures that disable a webhook (at least 1).
    pub max_failures: u32,
    /// Failing this long without a success also disables; `None`: only the count matters.
    pub failure_window: Option<Duration>,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Try the same event again after this long.
    Retry(Duration),
    /// Stop delivering until someone re-enables the webhook.
    Disable,
}

/// A retention gap the worker went through: events after `cursor` were dropped before they could
/// be delivered; delivery continued from the oldest retained event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GapRecord {
    /// When the gap was detected, Unix ms.
    pub at: u64,
    /// The cursor that fell behind retention.
    pub cursor: EventId,
    /// The oldest event still retained on the webhook's channels, if any.
    pub oldest: Option<EventId>,
}

/// The delivery state of one webhook, as stored and (mostly) as shown by the status endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryState {
    pub enabled: bool,
    /// The newest event delivered with a 2xx; delivery continues after it.
    pub cursor: EventId,
    pub consecutive_failures: u32,
    /// Start of the current run of failures, Unix ms.
    pub failing_since: Option<u64>,
    pub last_error: Option<String>,
    pub last_attempt_at: Option<u64>,
    pub last_success_at: Option<u64>,
    pub disabled_at: Option<u64>,
    /// Events delivered with a 2xx, ever.
    pub delivered: u64,
    /// The most recent retention gap, if any.
    pub last_gap: Option<GapRecord>,
}

impl DeliveryState {
    /// A new, active webhook delivering the events after `cursor`.
    pub fn new(cursor: EventId) -> Self {
        DeliveryState {
            enabled: true,
            cursor,
            consecutive_failures: 0,
            failing_since: None,
            last_error: None,
            last_attempt_at: None,
            last_success_at: None,
            disabled_at: None,
            delivered: 0,
            last_gap: None,
        }
    }

    /// Event `id` was acknowledged with a 2xx at `now`.
    pub fn record_success(&mut self, id: EventId, now: u64) {
        // Monotonic: a late acknowledgement of an older event never moves the cursor back.
        self.cursor = self.cursor.max(id);
        self.consecutive_failures = 0;
        self.failing_since = None;
        self.last_attempt_at = Some(now);
        self.last_success_at = Some(now);
        self.delivered += 1;
    }

    /// An attempt failed at `now` with `error`; returns what to do next. `jitter` is uniform in
    /// `[0, 1)`.
    pub fn record_failure(
        &mut self,
        policy: &Policy,
        error: &str,
        now: u64,
        jitter: f64,
    ) -> Decision {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let since = *self.failing_since.get_or_insert(now);
        self.last_attempt_at = Some(now);
        self.last_error = Some(truncate(error));
        let window_over = policy
            .failure_window
            .is_some_and(|w| now.saturating_sub(since) >= w.as_millis() as u64);
        if self.consecutive_failures >= policy.max_failures.max(1) || window_over {
            self.disable(now);
            Decision::Disable
        } else {
            Decision::Retry(policy.backoff(self.consecutive_failures, jitter))
        }
    }

    pub fn disable(&mut self, now: u64) {
        if self.enabled {
            self.enabled = false;
            self.disabled_at = Some(now);
        }
    }

    /// Re-enabled by the operator: resume from the cursor with a clean failure count. The last
    /// error stays visible as history.
    pub fn enable(&mut self) {
        self.enabled = true;
        self.disabled_at = None;
        self.consecutive_failures = 0;
        self.failing_since = None;
    }

    /// The history the cursor pointed into is gone (the log's epoch changed, or the log lost its
    /// newest events): delivery restarts at `from`, the start of what the log holds now, and the
    /// gap is recorded.
    pub fn restart_at(&mut self, from: EventId, now: u64) {
        self.last_gap = Some(GapRecord {
            at: now,
            cursor: self.cursor,
            oldest: None,
        });
        self.cursor = from;
    }

    /// A read found that retention dropped events after the cursor. Returns whether this is news
    /// (so the caller writes it once per gap, not once per read).
    pub fn record_gap(&mut self, oldest: Option<EventId>, now: u64) -> bool {
        let same = self
            .last_gap
            .is_some_and(|g| g.cursor == self.cursor && g.oldest == oldest);
        if !same {
            self.last_gap = Some(GapRecord {
                at: now,
                cursor: self.cursor,
                oldest,
            });
        }
        !same
    }
}

impl Policy {
    /// The wait after the `failures`-th consecutive failure (1-based): the product's one
    /// backoff ([`crate::backoff`]) with full jitter; `jitter` is uniform in `[0, 1)`.
    pub fn backoff(&self, failures: u32, jitter: f64) -> Duration {
        crate::backoff::backoff(
            failures,
            self.backoff_base,
            self.backoff_cap,
            Jitter::Full,
            jitter,
        )
    }
}

fn truncate(s: &str) -> String {
    if s.len() <= MAX_ERROR_LEN {
        return s.to_owned();
    }
    let mut end = MAX_ERROR_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(300),
            max_failures: 3,
            failure_window: None,
        }
    }

    #[test]
    fn backoff_is_full_jitter_under_the_capped_exponential() {
        let p = policy();
        assert_eq!(p.backoff(2, 0.0), Duration::ZERO);
        assert_eq!(p.backoff(2, 0.5), Duration::from_millis(500));
        assert!(p.backoff(2, 0.999_999) < Duration::from_millis(1000));
        assert_eq!(p.backoff(20, 1.0), Duration::from_secs(300));
    }

    #[test]
    fn consecutive_failures_disable_and_a_success_resets_them() {
        let p = policy();
        let mut s = DeliveryState::new(EventId::new(5, 0));
        assert_eq!(
            s.record_failure(&p, "HTTP 500", 1000, 0.5),
            Decision::Retry(Duration::from_millis(250))
        );
        assert_eq!(s.failing_since, Some(1000));
        assert!(matches!(
            s.record_failure(&p, "HTTP 500", 2000, 0.5),
            Decision::Retry(_)
        ));
        s.record_success(EventId::new(6, 0), 3000);
        assert_eq!(s.consecutive_failures, 0);
        assert_eq!(s.failing_since, None);
        assert_eq!(s.cursor, EventId::new(6, 0));
        assert_eq!(
            s.last_error.as_deref(),
            Some("HTTP 500"),
            "last error stays as history"
        );
        for t in 0..2 {
            assert!(matches!(
                s.record_failure(&p, "timeout", 4000 + t, 0.1),
                Decision::Retry(_)
            ));
        }
        assert_eq!(
            s.record_failure(&p, "timeout", 5000, 0.1),
            Decision::Disable
        );
        assert!(!s.enabled);
        assert_eq!(s.disabled_at, Some(5000));
        assert_eq!(
            s.cursor,
            EventId::new(6, 0),
            "the cursor survives disabling"
        );
    }

    #[test]
    fn the_failure_window_disables_a_slowly_failing_webhook() {
        let p = Policy {
            max_failures: 100,
            failure_window: Some(Duration::from_secs(60)),
            ..policy()
        };
        let mut s = DeliveryState::new(EventId::ZERO);
        assert!(matches!(
            s.record_failure(&p, "x", 0, 0.0),
            Decision::Retry(_)
        ));
        assert!(matches!(
            s.record_failure(&p, "x", 59_999, 0.0),
            Decision::Retry(_)
        ));
        assert_eq!(s.record_failure(&p, "x", 60_000, 0.0), Decision::Disable);
    }

    #[test]
    fn enabling_resumes_from_the_cursor_with_a_clean_count() {
        let p = policy();
        let mut s = DeliveryState::new(EventId::new(9, 1));
        for t in 0..3 {
            s.record_failure(&p, "refused", t, 0.0);
        }
        assert!(!s.enabled);
        s.enable();
        assert!(s.enabled);
        assert_eq!(s.consecutive_failures, 0);
        assert_eq!(s.disabled_at, None);
        assert_eq!(s.cursor, EventId::new(9, 1));
        assert!(matches!(
            s.record_failure(&p, "refused", 10, 0.0),
            Decision::Retry(_)
        ));
    }

    #[test]
    fn the_cursor_never_moves_back() {
        let mut s = DeliveryState::new(EventId::new(10, 0));
        s.record_success(EventId::new(3, 0), 1);
        assert_eq!(s.cursor, EventId::new(10, 0));
    }

    #[test]
    fn gaps_are_recorded_once_per_cursor() {
        let mut s = DeliveryState::new(EventId::new(1, 0).in_epoch(4));
        s.restart_at(EventId::epoch_start(5), 90);
        assert_eq!(s.cursor, EventId::epoch_start(5));
        assert_eq!(
            s.last_gap.map(|g| (g.cursor, g.oldest)),
            Some((EventId::new(1, 0).in_epoch(4), None))
        );
        let mut s = DeliveryState::new(EventId::new(1, 0));
        assert!(s.record_gap(Some(EventId::new(50, 0)), 100));
        assert!(!s.record_gap(Some(EventId::new(50, 0)), 200));
        assert_eq!(s.last_gap.unwrap().at, 100);
        s.record_success(EventId::new(50, 0), 300);
        assert!(s.record_gap(Some(EventId::new(70, 0)), 400));
        assert_eq!(s.last_gap.unwrap().cursor, EventId::new(50, 0));
    }

    #[test]
    fn long_errors_are_truncated_on_a_char_boundary() {
        let mut s = DeliveryState::new(EventId::ZERO);
        let long = "é".repeat(MAX_ERROR_LEN);
        s.record_failure(&policy(), &long, 0, 0.0);
        let kept = s.last_error.unwrap();
        assert!(kept.len() <= MAX_ERROR_LEN + '…'.len_utf8());
    }
}
