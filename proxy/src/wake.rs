//! The wake policy: *when* to push a phone. Plain code over an injected clock (`now` is always
//! a parameter), so every rule is unit-tested on values:
//!
//! * the handoff's CEL **wake filter** decides whether an event *owes* a wake (events failing it
//!   are still buffered; the caller passes the verdict in);
//! * **leading edge** (SPEC §5): the wake goes out at the first owed event, not after a window —
//!   a trailing window of 250 ms was most of the wake latency (issue 11: p99 408 ms);
//! * **one outstanding wake**: after a push is accepted, no other until the phone checks in,
//!   which is what coalesces a burst; `coalesce` only spaces wakes: the next one goes out no
//!   sooner than `coalesce` after the previous accepted wake (a phone that checks in and is
//!   owed again at once is not pushed twice within the window);
//! * a **per-device budget** of `max_per_hour` accepted wakes in any sliding hour; an owed wake
//!   over budget waits (the events stay buffered), it is not dropped;
//! * **retries**: `RetryAfter(d)` retries no sooner than `d`; transient errors back off
//!   exponentially with equal jitter (the product's one backoff, `ssepush_origin::backoff`); after `max_attempts` the wake is given up (the next owed event
//!   tries again); a **permanent** error ends the handoff as failed and nothing is sent again;
//! * a **provider-wide rate limit**: a token bucket per platform, shared by every handoff.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ssepush_origin::backoff::{Jitter, backoff};

use crate::push::PushError;

const HOUR: Duration = Duration::from_secs(3600);

/// The knobs of one handoff's policy.
#[derive(Debug, Clone)]
pub struct WakeConfig {
    pub coalesce: Duration,
    pub max_per_hour: u32,
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub retry_max: Duration,
}

/// What the scheduler should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing is owed (or a wake is outstanding / in flight, or the handoff failed).
    Idle,
    /// A wake is owed but not before this instant (coalescing, budget, Retry-After, backoff).
    WaitUntil(Instant),
    /// Send a wake now.
    Send,
}

/// What a send's result meant.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The service took it; the handoff is now woken.
    Accepted,
    /// Retry no sooner than this.
    Retry(Instant),
    /// Too many attempts: this wake is given up; the next owed event starts a new one.
    GaveUp(String),
    /// The push target is dead: the handoff fails with this reason.
    Failed(String),
}

/// [`WakeConfig`] as held by every live handoff: milliseconds in `u32`s (issue 11: a sleeping
/// handoff's memory), saturating at about 49 days.
#[derive(Debug, Clone, Copy)]
struct Knobs {
    coalesce_ms: u32,
    max_per_hour: u32,
    max_attempts: u32,
    retry_base_ms: u32,
    retry_max_ms: u32,
}

impl Knobs {
    fn of(cfg: &WakeConfig) -> Knobs {
        let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        Knobs {
            coalesce_ms: ms(cfg.coalesce),
            max_per_hour: cfg.max_per_hour,
            max_attempts: cfg.max_attempts,
            retry_base_ms: ms(cfg.retry_base),
            retry_max_ms: ms(cfg.retry_max),
        }
    }

    fn coalesce(&self) -> Duration {
        Duration::from_millis(self.coalesce_ms.into())
    }
}

/// When wakes were accepted, oldest first: a `VecDeque` boxed, and none until the first.
// Boxed on purpose: 8 bytes in every sleeping handoff rather than a `VecDeque`'s 32.
#[allow(clippy::box_collection)]
#[derive(Debug, Clone, Default)]
struct Sent(Option<Box<VecDeque<Instant>>>);

impl Sent {
    fn of(times: impl IntoIterator<Item = Instant>) -> Sent {
        let times: VecDeque<Instant> = times.into_iter().collect();
        Sent((!times.is_empty()).then(|| Box::new(times)))
    }

    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |t| t.len())
    }

    fn front(&self) -> Option<&Instant> {
        self.0.as_ref().and_then(|t| t.front())
    }

    fn back(&self) -> Option<&Instant> {
        self.0.as_ref().and_then(|t| t.back())
    }

    fn iter(&self) -> impl Iterator<Item = &Instant> {
        self.0.iter().flat_map(|t| t.iter())
    }

    fn push_back(&mut self, t: Instant) {
        self.0.get_or_insert_with(Box::default).push_back(t);
    }

    fn pop_front(&mut self) -> Option<Instant> {
        let t = self.0.as_mut()?.pop_front();
        if self.len() == 0 {
            self.0 = None;
        }
        t
    }
}

/// One handoff's wake state.
#[derive(Debug, Clone)]
pub struct WakePolicy {
    cfg: Knobs,
    /// When the first event owing a wake (not yet covered by an accepted wake) arrived.
    owed_since: Option<Instant>,
    /// An accepted wake waits for the phone's check-in.
    outstanding: bool,
    in_flight: bool,
    /// The phone checked in while a send was in flight: its result does not make it outstanding.
    checked_in_in_flight: bool,
    /// Accepted wakes within the last hour (at most `max_per_hour`). Allocated with the first
    /// wake: most sleeping handoffs were never woken.
    sent: Sent,
    retry_at: Option<Instant>,
    attempts: u32,
    /// The push target is dead: nothing is sent again.
    failed: bool,
}

impl WakePolicy {
    pub fn new(cfg: WakeConfig) -> Self {
        WakePolicy {
            cfg: Knobs::of(&cfg),
            owed_since: None,
            outstanding: false,
            in_flight: false,
            checked_in_in_flight: false,
            sent: Sent::default(),
            retry_at: None,
            attempts: 0,
            failed: false,
        }
    }

    /// An event arrived upstream; `wakes` is the wake filter's verdict.
    pub fn on_event(&mut self, now: Instant, wakes: bool) {
        if wakes && self.owed_since.is_none() {
            self.owed_since = Some(now);
        }
    }

    /// The phone fetched its events (or handed back). `still_owed`: events owing a wake arrived
    /// after what it fetched.
    pub fn on_check_in(&mut self, now: Instant, still_owed: bool) {
        self.outstanding = false;
        self.checked_in_in_flight = self.in_flight;
        self.owed_since = still_owed.then_some(now);
        self.retry_at = None;
        self.attempts = 0;
    }

    /// When the first event of the current burst arrived (for the wake-latency histogram).
    pub fn owed_since(&self) -> Option<Instant> {
        self.owed_since
    }

    pub fn is_outstanding(&self) -> bool {
        self.outstanding
    }

    /// When the wakes of the last hour were accepted (oldest first), for the stored record.
    pub fn sent_times(&self) -> impl Iterator<Item = Instant> + '_ {
        self.sent.iter().copied()
    }

    /// Takes over a handoff's stored wake state: an outstanding wake, and the wakes accepted
    /// within the budget's hour (oldest first).
    pub fn restore(&mut self, outstanding: bool, sent: impl IntoIterator<Item = Instant>) {
        self.outstanding = outstanding;
        self.sent = Sent::of(sent);
        while self.sent.len() > self.cfg.max_per_hour as usize {
            self.sent.pop_front();
        }
    }

    pub fn next(&mut self, now: Instant) -> Action {
        if self.failed || self.outstanding || self.in_flight {
            return Action::Idle;
        }
        let Some(since) = self.owed_since else {
            return Action::Idle;
        };
        while self
            .sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= HOUR)
        {
            self.sent.pop_front();
        }
        // Leading edge: due at the first owed event, spaced `coalesce` after the last wake.
        let mut at = since;
        if let Some(last) = self.sent.back() {
            at = at.max(*last + self.cfg.coalesce());
        }
        if let Some(r) = self.retry_at {
            at = at.max(r);
        }
        if self.sent.len() >= self.cfg.max_per_hour as usize
            && let Some(oldest) = self.sent.front()
        {
            at = at.max(*oldest + HOUR);
        }
        if at <= now {
            Action::Send
        } else {
            Action::WaitUntil(at)
        }
    }

    /// The scheduler is sending (call after [`next`](Self::next) said [`Action::Send`]).
    pub fn begin_send(&mut self) {
        self.in_flight = true;
        self.checked_in_in_flight = false;
    }

    /// What the provider answered. `jitter` in `[0, 1)` spreads retries.
    pub fn on_result(
        &mut self,
        now: Instant,
        result: &Result<(), PushError>,
        jitter: f64,
    ) -> Outcome {
        self.in_flight = false;
        let err = match result {
            Ok(()) => {
                self.sent.push_back(now);
                while self.sent.len() > self.cfg.max_per_hour as usize {
                    self.sent.pop_front();
                }
                self.attempts = 0;
                self.retry_at = None;
                if !self.checked_in_in_flight {
                    // The wake covers everything owed so far: the phone will fetch it all.
                    self.outstanding = true;
                    self.owed_since = None;
                }
                return Outcome::Accepted;
            }
            Err(e) => e,
        };
        if let PushError::Permanent(reason) = err {
            self.failed = true;
            self.owed_since = None;
            return Outcome::Failed(reason.clone());
        }
        self.attempts += 1;
        if self.attempts >= self.cfg.max_attempts {
            self.attempts = 0;
            self.retry_at = None;
            self.owed_since = None;
            return Outcome::GaveUp(err.to_string());
        }
        let backoff = backoff(
            self.attempts,
            Duration::from_millis(self.cfg.retry_base_ms.into()),
            Duration::from_millis(self.cfg.retry_max_ms.into()),
            Jitter::Equal,
            jitter,
        );
        let delay = match err.retry_after() {
            // The service said when: never sooner than that.
            Some(after) => after,
            None => backoff,
        };
        let at = now + delay;
        self.retry_at = Some(at);
        Outcome::Retry(at)
    }
}

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: u32, now: Instant) -> Self {
        TokenBucket {
            rate: rate.max(f64::MIN_POSITIVE),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: now,
        }
    }

    /// Takes a token, or says how long until one is there.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now.max(self.last);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> WakeConfig {
        WakeConfig {
            coalesce: Duration::from_millis(100),
            max_per_hour: 3,
            max_attempts: 4,
            retry_base: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Sends when due and returns the send time.
    fn send_ok(p: &mut WakePolicy, now: Instant) {
        assert_eq!(p.next(now), Action::Send);
        p.begin_send();
        assert_eq!(p.on_result(now, &Ok(()), 0.5), Outcome::Accepted);
    }

    #[test]
    fn a_burst_of_three_is_one_wake() {
        let t0 = Instant::now();
        let mut p = WakePolicy::new(cfg());
        assert_eq!(p.next(t0), Action::Idle);
        p.on_event(t0, true);
        // Leading edge: the first owed event wakes at once.
        assert_eq!(p.next(t0), Action::Send);
        p.begin_send();
        // Events while the wake is in flight or outstanding are covered by it.
        p.on_event(t0 + ms(10), true);
        p.on_event(t0 + ms(20), true);
        assert_eq!(p.next(t0 + ms(50)), Action::Idle);
        assert_eq!(p.on_result(t0 + ms(60), &Ok(()), 0.5), Outcome::Accepted);
        // More events while woken: no second wake until the phone checks in.
        p.on_event(t0 + ms(200), true);
        assert_eq!(p.next(t0 + ms(10_000)), Action::Idle);
        assert!(p.is_outstanding());
    }

    #[test]
    fn filtered_events_do_not_wake() {
        let t0 = Instant::now();
        let mut p = WakePolicy::new(cfg());
        p.on_event(t0, false);
        p.on_event(t0 + ms(1), false);
        assert_eq!(p.next(t0 + ms(1000)), Action::Idle);
    }

    #[test]
    fn check_in_reopens_and_wakes_again_for_what_came_after() {
        let t0 = Instant::now();
        let mut p = WakePolicy::new(cfg());
        p.on_event(t0, true);
        send_ok(&mut p, t0 + ms(100));
        p.on_check_in(t0 + ms(500), false);
        assert_eq!(p.next(t0 + ms(600)), Action::Idle);
        p.on_event(t0 + ms(700), true);
        assert_eq!(p.next(t0 + ms(700)), Action::Send);
        // Owed again right after a wake: spaced `coalesce` (100 ms) after it.
        let mut r = WakePolicy::new(cfg());
        r.on_event(t0, true);
        send_ok(&mut r, t0);
        r.on_check_in(t0 + ms(20), true);
        assert_eq!(r.next(t0 + ms(20)), Action::WaitUntil(t0 + ms(100)));
        assert_eq!(r.next(t0 + ms(100)), Action::Send);
        // Checking in with events still unread: a wake is owed at once.
        let mut q = WakePolicy::new(cfg());
        q.on_check_in(t0, true);
        assert_eq!(q.next(t0), Action::Send);
    }

    #[test]
    fn the_hourly_budget_defers_instead_of_dropping() {
        let t0 = Instant::now();
        let mut p = WakePolicy::new(cfg());
        for i in 0..3u64 {
            let t = t0 + ms(i * 1000);
            p.on_event(t, true);
            send_ok(&mut p, t + ms(100));
            p.on_check_in(t + ms(200), false);
        }
        p.on_event(t0 + ms(5000), true);
        // The first wake went out at t0+100ms: the fourth waits until an hour after it.
        assert_eq!(
            p.next(t0 + ms(5100)),
            Action::WaitUntil(t0 + ms(100) + HOUR)
        );
        assert_eq!(p.next(t0 + ms(100) + HOUR), Action::Send);
    }

    #[test]
    fn retry_after_is_honoured() {
        let t0 = Instant::now();
        let mut p = WakePolicy::new(cfg());
        p.on_event(t0, true);
        assert_eq!(p.next(t0 + ms(100)), Action::Send);
        p.begin_send();
        let now = t0 + ms(100);
        let out = p.on_result(
            now,
            &Err(PushError::RetryAfter(Duration::from_secs(2))),
            0.0,
        );
        assert_eq!(out, Outcome::Retry(now + Duration::from_secs(2)));
        assert_eq!(
            p.next(now + ms(1999)),
            Action::WaitUntil(now + Duration::from_secs(2))
        );
        assert_eq!(p.next(now + Duration::from_secs(2)), Action::Send);
    }

    #[test]
    fn transient_errors_back_off_then_give_up() {
        let t0 = Instant::now();
        let mut p = WakePolicy::new(cfg());
        p.on_event(t0, true);
        let mut now = t0 + ms(100);
        let mut delays = Vec::new();
        loop {
            let at = match p.next(now) {
                Action::Send => now,
                Action::WaitUntil(at) => at,
                Action::Idle => break,
            };
            now = at;
            p.begin_send();
            match p.on_result(now, &Err(PushError::Transient("503".into())), 1.0) {
                Outcome::Retry(at) => delays.push(at - now),
                Outcome::GaveUp(_) => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(delays, vec![ms(500), ms(1000), ms(2000)]);
        assert_eq!(p.next(now), Action::Idle);
        // The next owed event starts over.
        p.on_event(now, true);
        assert_eq!(p.next(now), Action::Send);
    }

    #[test]
    fn permanent_errors_fail_and_never_send_again() {
        let t0 = Instant::now();
        let mut p = WakePolicy::new(cfg());
        p.on_event(t0, true);
        assert_eq!(p.next(t0 + ms(100)), Action::Send);
        p.begin_send();
        let out = p.on_result(
            t0,
            &Err(PushError::Permanent("410 Unregistered".into())),
            0.5,
        );
        assert_eq!(out, Outcome::Failed("410 Unregistered".into()));
        p.on_event(t0 + ms(200), true);
        p.on_check_in(t0 + ms(300), true);
        assert_eq!(p.next(t0 + HOUR), Action::Idle);
    }

    #[test]
    fn a_check_in_during_a_send_is_not_overridden() {
        let t0 = Instant::now();
        let mut p = WakePolicy::new(cfg());
        p.on_event(t0, true);
        assert_eq!(p.next(t0 + ms(100)), Action::Send);
        p.begin_send();
        p.on_check_in(t0 + ms(110), false);
        assert_eq!(p.on_result(t0 + ms(120), &Ok(()), 0.5), Outcome::Accepted);
        assert!(!p.is_outstanding());
    }

    #[test]
    fn token_bucket_limits_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 2, t0);
        assert!(b.try_take(t0).is_ok());
        assert!(b.try_take(t0).is_ok());
        let wait = b.try_take(t0).unwrap_err();
        assert!(wait > ms(90) && wait <= ms(100), "{wait:?}");
        assert!(b.try_take(t0 + ms(100)).is_ok());
        assert!(b.try_take(t0 + ms(100)).is_err());
    }
}
