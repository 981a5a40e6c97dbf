//! A live handoff: the hot half of its record (state, cursor, buffer, wake policy) behind one
//! mutex, owned by the node that watches for it. It is what the upstream watcher calls
//! synchronously for every event (a [`Subscriber`]), what the API's check-in and handback
//! change, and what the scheduler ([`crate::scheduler`]) asks what to do; it never does I/O
//! itself. Whatever changes what it should do lists it in the node's [`Schedule`].
//!
//! Its position in the stream has one owner, the [`Cursor`] inside; the watcher reads it when
//! the handoff joins ([`Subscriber::cursor`]). Every log line of a handoff is in a span carrying
//! its id ([`LiveHandoff::span`], made when there is something to log: a sleeping handoff holds
//! none) — never its token, push token or upstream headers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use ssepush_origin::EventId;
use ssepush_origin::clock::now_ms;
use ssepush_origin::event::SharedEvent;

use crate::buffer::EventBuffer;
use crate::cursor::Cursor;
use crate::handoff::{HandoffSpec, Input, State, transition};
use crate::protocol::{CatchUp, LastWake};
use crate::push::{PushError, Wake};
use crate::schedule::{Schedule, Scheduled, Slot};
use crate::settings::Settings;
use crate::store::{Fence, HandoffRecord, Owned};
use crate::token::TokenHash;
use crate::upstream::{Subscriber, Verdicts};
use crate::wake::{Action, Outcome, WakeConfig, WakePolicy};

/// The node's schedule of live handoffs.
pub type Handoffs = Schedule<LiveHandoff>;

struct Inner {
    state: State,
    cursor: Cursor,
    buffer: EventBuffer,
    policy: WakePolicy,
    /// Allocated with the first of its fields: most sleeping handoffs were never woken, had
    /// no error and have not ended (issue 11).
    cold: Option<Box<Cold>>,
}

#[derive(Default)]
struct Cold {
    wakes_sent: u64,
    last_wake: Option<LastWake>,
    last_error: Option<String>,
    finished_at_ms: Option<u64>,
}

impl Inner {
    fn cold(&mut self) -> &mut Cold {
        self.cold.get_or_insert_with(Box::default)
    }

    fn set_last_error(&mut self, error: impl Into<String>) {
        self.cold().last_error = Some(error.into());
    }
}

/// One handoff this node watches for. See the module docs.
pub struct LiveHandoff {
    /// Shared with the node's map of live handoffs.
    pub id: Arc<str>,
    token: TokenHash,
    pub spec: HandoffSpec,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    /// When the ttl ends, on the monotonic clock.
    pub expires_at: Instant,
    inner: Mutex<Inner>,
    /// This node's right to act for it (`crate::store`, "Ownership and fencing").
    /// Shared by the handoffs this node created under its current id (all at epoch 1).
    pub fence: Arc<Fence>,
    /// This node no longer owns it (released, or fenced out): nothing more is done or written.
    released: AtomicBool,
    /// A digest of the durable part of the last record written (state, cursor, wake state,
    /// counters): unchanged records are not written again. 32 bits (it sits beside the flags;
    /// a change that hashed the same would be written with the next one).
    persisted: std::sync::atomic::AtomicU32,
    /// Set while a task acts for it (fences and sends a wake, writes it, tears it down) and
    /// while it is released: one at a time, so a release never overlaps a send (no wake of an
    /// old epoch lands after the next owner's) and its writes stay in order.
    acting: AtomicBool,
    /// It ended and was torn down ([`crate::node::Node::teardown`]).
    torn_down: AtomicBool,
    /// Its place in the node's schedule.
    slot: Slot,
    schedule: Arc<Handoffs>,
    me: Weak<LiveHandoff>,
}

impl std::fmt::Debug for LiveHandoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `spec` has redacting Debug impls for its headers and push target; the token is a hash.
        f.debug_struct("LiveHandoff")
            .field("id", &self.id)
            .field("spec", &self.spec)
            .field("state", &self.inner.lock().unwrap().state)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

impl Scheduled for LiveHandoff {
    fn slot(&self) -> &Slot {
        &self.slot
    }
}

fn state_gauge(state: &State, delta: f64) {
    metrics::gauge!("ssepush_proxy_handoffs", "state" => state.name()).increment(delta);
}

/// A wake being sent.
#[derive(Debug, Clone, PartialEq)]
pub struct WakeSend {
    pub wake: Wake,
    /// When the first event this wake covers arrived (for the wake-latency histogram).
    pub owed_since: Option<Instant>,
}

/// Held while a task acts for a handoff ([`LiveHandoff::try_act`]); lets go when dropped.
#[derive(Debug)]
pub struct Acting(Arc<LiveHandoff>);

impl Acting {
    /// The handoff acted for.
    pub fn handoff(&self) -> &Arc<LiveHandoff> {
        &self.0
    }
}

impl Drop for Acting {
    fn drop(&mut self) {
        self.0.acting.store(false, Ordering::Release);
    }
}

impl LiveHandoff {
    /// A handoff of `spec` whose phone handed off at `cursor`, with the node's `[wake]` and
    /// buffer settings, scheduled in `schedule` (it is not asked anything until listed there,
    /// see [`crate::scheduler::start`]).
    pub fn new(
        id: Arc<str>,
        token: TokenHash,
        spec: HandoffSpec,
        cursor: Option<EventId>,
        settings: &Settings,
        fence: Arc<Fence>,
        schedule: &Arc<Handoffs>,
    ) -> Arc<LiveHandoff> {
        Arc::new_cyclic(|me| {
            Self::build(
                me.clone(),
                id,
                token,
                spec,
                cursor,
                settings,
                fence,
                schedule,
            )
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        me: Weak<LiveHandoff>,
        id: Arc<str>,
        token: TokenHash,
        spec: HandoffSpec,
        cursor: Option<EventId>,
        settings: &Settings,
        fence: Arc<Fence>,
        schedule: &Arc<Handoffs>,
    ) -> LiveHandoff {
        let w = &settings.wake;
        let cfg = WakeConfig {
            coalesce: Duration::from_millis(spec.wake.coalesce_ms),
            max_per_hour: spec.wake.max_per_hour,
            max_attempts: w.max_attempts,
            retry_base: Duration::from_millis(w.retry_base_ms),
            retry_max: Duration::from_millis(w.retry_max_ms),
        };
        let created = now_ms();
        let ttl = Duration::from_secs(spec.ttl_secs);
        state_gauge(&State::Watching, 1.0);
        LiveHandoff {
            token,
            created_at_ms: created,
            expires_at_ms: created + ttl.as_millis() as u64,
            expires_at: Instant::now() + ttl,
            inner: Mutex::new(Inner {
                state: State::Watching,
                cursor: Cursor::new(cursor),
                // Nothing at or below the phone's cursor is owed to it.
                buffer: EventBuffer::new(settings.buffer_events, cursor),
                policy: WakePolicy::new(cfg),
                cold: None,
            }),
            fence,
            released: AtomicBool::new(false),
            persisted: std::sync::atomic::AtomicU32::new(0),
            acting: AtomicBool::new(false),
            torn_down: AtomicBool::new(false),
            slot: schedule.slot(),
            schedule: schedule.clone(),
            me,
            spec,
            id,
        }
    }

    /// A handoff this node took over under `fence`, from its stored record: the device cursor
    /// (the stream is read again from there), the newest id, the wake state (an outstanding
    /// wake, the hour's budget), the counters. `None` when it has ended or its record no longer
    /// validates (e.g. the stream left `allowed_origins`), with the reason.
    pub fn restore(
        owned: &Owned,
        fence: Arc<Fence>,
        settings: &Settings,
        allow: &crate::allow::OriginAllowList,
        schedule: &Arc<Handoffs>,
        streams: &crate::handoff::SharedStreams,
    ) -> Result<Arc<LiveHandoff>, String> {
        let rec = &owned.rec;
        if rec.state.is_terminal() {
            return Err(format!("it has ended ({})", rec.state.as_str()));
        }
        let mut spec = crate::handoff::spec_of_record(rec, allow)?;
        spec.stream = streams.share(spec.stream);
        let token = TokenHash::from_hex(&rec.token_sha256).ok_or("unreadable token hash")?;
        let now_wall = now_ms();
        let now = Instant::now();
        let left = Duration::from_millis(rec.expires_at_ms.saturating_sub(now_wall));
        // SAFETY of the arithmetic: an instant in the past stays representable for an hour.
        let to_instant =
            |ms: u64| now.checked_sub(Duration::from_millis(now_wall.saturating_sub(ms)));
        Ok(Arc::new_cyclic(|me| {
            let mut h = Self::build(
                me.clone(),
                rec.id.as_str().into(),
                token,
                spec,
                rec.cursor,
                settings,
                fence,
                schedule,
            );
            h.created_at_ms = rec.created_at_ms;
            h.expires_at_ms = rec.expires_at_ms;
            h.expires_at = now + left;
            let i = h.inner.get_mut().unwrap();
            if rec.state == crate::protocol::HandoffState::Woken {
                i.state = State::Woken;
                state_gauge(&State::Watching, -1.0);
                state_gauge(&State::Woken, 1.0);
            }
            if let Some(newest) = rec.newest_id {
                i.cursor.skipped(newest);
            }
            i.policy.restore(
                rec.wake_outstanding,
                rec.wake_times_ms.iter().filter_map(|ms| to_instant(*ms)),
            );
            if rec.wakes_sent > 0 || rec.last_wake.is_some() || rec.last_error.is_some() {
                *i.cold() = Cold {
                    wakes_sent: rec.wakes_sent,
                    last_wake: rec.last_wake.clone(),
                    last_error: rec.last_error.clone(),
                    finished_at_ms: None,
                };
            }
            h
        }))
    }

    /// Something changed what should be done for it: the scheduler asks it again.
    pub fn touch(&self) {
        if let Some(me) = self.me.upgrade() {
            self.schedule.changed(me);
        }
    }

    /// The schedule it is in.
    pub fn schedule(&self) -> &Arc<Handoffs> {
        &self.schedule
    }

    /// Starts acting for it, unless a task already does: `None` then (that task lists it in
    /// the schedule again when it is done).
    pub fn try_act(self: &Arc<Self>) -> Option<Acting> {
        (!self.acting.swap(true, Ordering::AcqRel)).then(|| Acting(self.clone()))
    }

    /// Waits until no task acts for it, then acts (a release waits for a send in progress).
    pub async fn act(self: &Arc<Self>) -> Acting {
        loop {
            if let Some(a) = self.try_act() {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// This node gives the handoff up (released to a peer, or fenced out): the scheduler
    /// forgets it without a teardown and nothing is written for it again.
    /// Returns false when it had already been given up.
    pub fn release_locally(&self) -> bool {
        if self.released.swap(true, Ordering::SeqCst) {
            return false;
        }
        self.touch();
        true
    }

    /// Marks it torn down (its watcher left, its final record written): true the first time.
    pub fn begin_teardown(&self) -> bool {
        !self.torn_down.swap(true, Ordering::SeqCst)
    }

    /// Whether it was torn down: nothing more is done for it.
    pub fn is_torn_down(&self) -> bool {
        self.torn_down.load(Ordering::SeqCst)
    }

    /// Whether this node gave it up.
    pub fn is_released(&self) -> bool {
        self.released.load(Ordering::SeqCst)
    }

    pub fn verify_token(&self, presented: &str) -> bool {
        self.token.verify(presented)
    }

    /// The span its log lines go in: its id and platform (made on demand: a sleeping handoff
    /// holds no span).
    pub fn span(&self) -> tracing::Span {
        tracing::info_span!("handoff", id = %self.id, platform = self.spec.push.platform())
    }

    pub fn state(&self) -> State {
        self.inner.lock().unwrap().state.clone()
    }

    /// The device cursor.
    pub fn cursor(&self) -> Option<EventId> {
        self.inner.lock().unwrap().cursor.device()
    }

    /// Applies a state-machine input; returns true when the state changed.
    fn apply(&self, inner: &mut Inner, input: Input) -> bool {
        let next = transition(&inner.state, &input);
        if next == inner.state {
            return false;
        }
        state_gauge(&inner.state, -1.0);
        state_gauge(&next, 1.0);
        tracing::info!(parent: &self.span(), from = inner.state.name(), to = next.name(), "handoff state");
        if next.is_terminal() {
            inner.cold().finished_at_ms = Some(now_ms());
            if let State::Failed(reason) = &next {
                inner.set_last_error(reason.as_str());
            }
        }
        inner.state = next;
        self.touch();
        true
    }

    /// `GET /events`: a check-in. `after` (the device's own cursor, from `Last-Event-ID` or
    /// `?after=`) acknowledges everything up to it; the events after it (or after the device
    /// cursor) are returned and the device cursor moves to the newest of them.
    pub fn check_in(&self, after: Option<EventId>) -> CatchUp {
        let mut inner = self.inner.lock().unwrap();
        if let Some(a) = after {
            inner.buffer.ack(a);
            inner.cursor.advance_device(a);
        }
        let from = after.or(inner.cursor.device());
        let (gap, events) = inner.buffer.read(from);
        if let Some(last) = events.last() {
            inner.cursor.advance_device(last.id);
        }
        let owed = inner.buffer.wake_owed(inner.cursor.device());
        inner.policy.on_check_in(Instant::now(), owed);
        self.apply(&mut inner, Input::CheckIn);
        self.touch();
        CatchUp {
            gap,
            events,
            cursor: inner.cursor.device(),
        }
    }

    /// `DELETE`: the handback. Returns the final device cursor.
    pub fn close(&self, after: Option<EventId>) -> Option<EventId> {
        let mut inner = self.inner.lock().unwrap();
        if let Some(a) = after {
            inner.cursor.advance_device(a);
        }
        self.apply(&mut inner, Input::Close);
        inner.cursor.device()
    }

    /// A newer handoff for the same push target replaced this one: it ends as `closed`
    /// (`lastError` says why) and never wakes again.
    pub fn replaced(&self) {
        let mut inner = self.inner.lock().unwrap();
        if !inner.state.is_terminal() {
            inner.set_last_error("replaced by a newer handoff for the same push target");
        }
        self.apply(&mut inner, Input::Close);
    }

    /// Takes over the hourly budget of the handoff this one replaced (the budget belongs to
    /// the push target): the Unix ms of its wakes of the last hour.
    pub fn inherit_budget(&self, wake_times_ms: &[u64]) {
        let (now, wall) = (Instant::now(), now_ms());
        let mut inner = self.inner.lock().unwrap();
        let mut times: Vec<Instant> = inner.policy.sent_times().collect();
        times.extend(
            wake_times_ms
                .iter()
                .filter_map(|ms| now.checked_sub(Duration::from_millis(wall.saturating_sub(*ms)))),
        );
        times.sort();
        let outstanding = inner.policy.is_outstanding();
        inner.policy.restore(outstanding, times);
    }

    pub fn fail(&self, reason: &str) {
        let mut inner = self.inner.lock().unwrap();
        self.apply(&mut inner, Input::Fail(reason.to_owned()));
    }

    /// Expires the handoff when its ttl is over at `now`; true when that changed its state.
    pub fn expire_if_due(&self, now: Instant) -> bool {
        if now < self.expires_at {
            return false;
        }
        let mut inner = self.inner.lock().unwrap();
        self.apply(&mut inner, Input::Expire)
    }

    /// What the wake policy says to do at `now`; `None` once the handoff has ended.
    pub fn next_action(&self, now: Instant) -> Option<Action> {
        let mut inner = self.inner.lock().unwrap();
        if inner.state.is_terminal() || self.is_released() {
            return None;
        }
        Some(inner.policy.next(now))
    }

    /// Starts sending a wake (after [`next_action`](Self::next_action) said
    /// [`Action::Send`]): the wake to send, as of now; push services keep it for `push_ttl`
    /// (`wake.push_ttl_secs`).
    pub fn begin_wake(&self, push_ttl: Duration) -> WakeSend {
        let mut inner = self.inner.lock().unwrap();
        inner.policy.begin_send();
        let wake = Wake {
            handoff_id: self.id.to_string(),
            pending: inner.buffer.pending(inner.cursor.device()),
            latest_event_id: inner.cursor.newest(),
            mode: self.spec.wake.mode,
            collapse_id: self.id.to_string(),
            ttl: push_ttl,
            node: Some(self.fence.node.to_string()),
            epoch: Some(self.fence.epoch),
        };
        WakeSend {
            wake,
            owed_since: inner.policy.owed_since(),
        }
    }

    /// Applies what the provider answered to the `wake` from [`begin_wake`](Self::begin_wake),
    /// at `now`; `jitter` in `[0, 1)` spreads retries.
    pub fn wake_result(
        &self,
        wake: &Wake,
        result: &Result<(), PushError>,
        now: Instant,
        jitter: f64,
    ) -> Outcome {
        let mut inner = self.inner.lock().unwrap();
        let outcome = inner.policy.on_result(now, result, jitter);
        match &outcome {
            Outcome::Accepted => {
                let latest_event_id = inner.cursor.newest();
                let cold = inner.cold();
                cold.wakes_sent += 1;
                cold.last_wake = Some(LastWake {
                    at: SystemTime::now().into(),
                    pending: wake.pending,
                    latest_event_id,
                });
                if inner.policy.is_outstanding() {
                    self.apply(&mut inner, Input::WakeAccepted);
                }
                tracing::info!(parent: &self.span(), pending = wake.pending, "wake accepted");
            }
            Outcome::Retry(at) => {
                let msg = result
                    .as_ref()
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                tracing::info!(parent: &self.span(), error = %msg, retry_in = ?at.saturating_duration_since(now), "wake not accepted; will retry");
                inner.set_last_error(msg);
            }
            Outcome::GaveUp(msg) => {
                tracing::warn!(parent: &self.span(), error = %msg, "wake given up after repeated failures");
                inner.set_last_error(msg.as_str());
            }
            Outcome::Failed(reason) => {
                tracing::warn!(parent: &self.span(), %reason, "push target is dead; handoff failed");
                self.apply(&mut inner, Input::Fail(format!("push rejected: {reason}")));
            }
        }
        outcome
    }

    /// The record to write through when its durable part (what a node taking the handoff over
    /// needs: state, device cursor, wake state, counters, last error) changed since the last
    /// one; `force` writes it anyway.
    pub fn record_to_persist(&self, force: bool) -> Option<HandoffRecord> {
        use std::hash::{Hash, Hasher};
        let rec = self.record();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (
            rec.state.as_str(),
            rec.cursor.map(|c| c.to_string()),
            rec.wake_outstanding,
            rec.wakes_sent,
            &rec.last_error,
            rec.finished_at_ms,
        )
            .hash(&mut h);
        let digest = (h.finish() as u32) | 1;
        let before = self.persisted.swap(digest, Ordering::SeqCst);
        (force || before != digest).then_some(rec)
    }

    /// Forgets what was written (a write failed): the next one goes through.
    pub fn persist_failed(&self) {
        self.persisted.store(0, Ordering::SeqCst);
    }

    /// A snapshot for the store and the status endpoint.
    pub fn record(&self) -> HandoffRecord {
        let inner = self.inner.lock().unwrap();
        HandoffRecord {
            id: self.id.to_string(),
            token_sha256: self.token.hex(),
            stream_url: self.spec.stream.url.to_string(),
            stream_headers: self.spec.stream.headers.0.clone(),
            push: self.spec.push.0.clone(),
            wake_filter: self
                .spec
                .wake
                .filter
                .as_ref()
                .map(|f| f.source().to_owned()),
            coalesce_ms: self.spec.wake.coalesce_ms,
            max_per_hour: self.spec.wake.max_per_hour,
            mode: self.spec.wake.mode,
            state: inner.state.wire(),
            failed_reason: match &inner.state {
                State::Failed(r) => Some(r.clone()),
                _ => None,
            },
            cursor: inner.cursor.device(),
            newest_id: inner.cursor.newest(),
            pending: inner.buffer.pending(inner.cursor.device()),
            wakes_sent: inner.cold.as_ref().map_or(0, |c| c.wakes_sent),
            last_wake: inner.cold.as_ref().and_then(|c| c.last_wake.clone()),
            last_error: inner.cold.as_ref().and_then(|c| c.last_error.clone()),
            created_at_ms: self.created_at_ms,
            expires_at_ms: self.expires_at_ms,
            finished_at_ms: inner.cold.as_ref().and_then(|c| c.finished_at_ms),
            wake_outstanding: inner.policy.is_outstanding(),
            wake_times_ms: {
                let (now, wall) = (Instant::now(), now_ms());
                inner
                    .policy
                    .sent_times()
                    .map(|t| wall.saturating_sub(now.duration_since(t).as_millis() as u64))
                    .collect()
            },
        }
    }
}

impl Drop for LiveHandoff {
    fn drop(&mut self) {
        if let Ok(inner) = self.inner.get_mut() {
            state_gauge(&inner.state, -1.0);
        }
    }
}

impl Subscriber for LiveHandoff {
    fn id(&self) -> &str {
        &self.id
    }

    fn key(&self) -> Arc<str> {
        self.id.clone()
    }

    fn cursor(&self) -> Option<EventId> {
        self.inner.lock().unwrap().cursor.resume_from()
    }

    fn on_event(&self, event: &SharedEvent, verdicts: &mut Verdicts<'_>) {
        let mut inner = self.inner.lock().unwrap();
        if inner.state.is_terminal() || !inner.cursor.deliver(event.id) {
            return;
        }
        // Control events are passed on but never wake a phone by themselves.
        let wakes = !event.is_control()
            && self
                .spec
                .wake
                .filter
                .as_ref()
                .is_none_or(|f| verdicts.check(f));
        if inner.buffer.push(event.clone(), wakes) {
            metrics::counter!("ssepush_proxy_buffer_overflows_total").increment(1);
        }
        metrics::counter!("ssepush_proxy_events_buffered_total").increment(1);
        inner.policy.on_event(Instant::now(), wakes);
        if wakes {
            self.touch();
        }
    }

    fn on_reset(&self, oldest: Option<EventId>) {
        let mut inner = self.inner.lock().unwrap();
        inner.buffer.origin_reset(oldest);
        // The phone must learn of the reset: that alone owes a wake.
        inner.policy.on_event(Instant::now(), true);
        self.touch();
    }

    fn on_lost(&self, through: EventId) {
        let mut inner = self.inner.lock().unwrap();
        // Not delivered: older events of the gap read may still arrive and are kept.
        inner.buffer.lost(through);
        metrics::counter!("ssepush_proxy_buffer_overflows_total").increment(1);
    }

    fn on_skipped(&self, id: EventId, reason: &str) {
        let mut inner = self.inner.lock().unwrap();
        if inner.state.is_terminal() {
            return;
        }
        // Known, not delivered: older events of a gap read may still arrive.
        inner.buffer.lost(id);
        inner.cursor.skipped(id);
        inner.set_last_error(reason);
        // The phone must learn of the gap (it reads the event from the origin): a wake is owed
        // whatever the filter says, as for the origin's reset.
        inner.policy.on_event(Instant::now(), true);
        tracing::warn!(parent: &self.span(), event = %id, "{reason}");
        self.touch();
    }

    fn on_failed(&self, reason: &str) {
        self.fail(reason);
    }

    fn on_upstream_trouble(&self, reason: &str) {
        // Shown at once; kept as the latest problem after the stream resumes (`lastError`).
        let mut inner = self.inner.lock().unwrap();
        if !inner.state.is_terminal() {
            inner.set_last_error(reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allow::OriginAllowList;
    use crate::protocol::HandoffRequest;
    use crate::token::Token;

    fn settings() -> Settings {
        Settings {
            allowed_origins: vec!["http://127.0.0.1:8080".into()],
            ..Settings::default()
        }
    }

    fn handoff(settings: &Settings, token: &Token) -> Arc<LiveHandoff> {
        let req: HandoffRequest = serde_json::from_value(serde_json::json!({
            "stream": {"url": "http://127.0.0.1:8080/v1/sse?channel=a", "lastEventId": "1-0",
                       "headers": {"Authorization": "Bearer upstream-secret-777"}},
            "push": {"platform": "fcm", "token": "fcm-token-secret-888"},
            "wake": {"filter": "data.wake == true"},
        }))
        .unwrap();
        let allow = OriginAllowList::parse(&settings.allowed_origins, settings.listen).unwrap();
        let (spec, cursor) = crate::handoff::validate(req, settings, &allow, |_| true).unwrap();
        let fence = Arc::new(Fence {
            node: "n_test".into(),
            epoch: 1,
        });
        let schedule = Handoffs::new(Instant::now());
        LiveHandoff::new(
            "h_test".into(),
            token.hash(),
            spec,
            cursor,
            settings,
            fence,
            &schedule,
        )
    }

    /// What the scheduler would be handed now.
    fn listed(h: &LiveHandoff) -> usize {
        h.schedule().take(Instant::now()).0.len()
    }

    fn deliver(h: &LiveHandoff, seq: u64, wake: bool) {
        let ev: SharedEvent = Arc::new(ssepush_origin::Event {
            id: EventId::new(1, seq),
            channel: "a".into(),
            kind: "message".into(),
            data: serde_json::json!({"wake": wake}),
            time: 1,
        });
        let mut v = Verdicts::new(&ev);
        h.on_event(&ev, &mut v);
    }

    #[tokio::test]
    async fn events_buffer_dedupe_check_in_and_close() {
        let settings = settings();
        let token = Token::generate();
        let h = handoff(&settings, &token);
        assert!(h.verify_token(token.expose()));
        // The cursor's own event and duplicates are dropped; order is kept.
        for (seq, wake) in [(0, true), (1, false), (2, true), (2, true), (3, false)] {
            deliver(&h, seq, wake);
        }
        let rec = h.record();
        assert_eq!(rec.pending, 3);
        assert_eq!(rec.newest_id, Some(EventId::new(1, 3)));
        assert_eq!(rec.state, crate::protocol::HandoffState::Watching);
        let c = h.check_in(None);
        let ids: Vec<u64> = c.events.iter().map(|e| e.id.seq).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        assert_eq!(c.cursor, Some(EventId::new(1, 3)));
        assert_eq!(h.record().pending, 0);
        // Re-reading from the phone's own older cursor still works (nothing was acknowledged).
        let again = h.check_in(Some(EventId::new(1, 1)));
        assert_eq!(again.events.len(), 2);
        assert!(again.gap.is_none());
        listed(&h);
        assert_eq!(h.close(None), Some(EventId::new(1, 3)));
        assert_eq!(h.state(), State::Closed);
        // The handback lists it for the scheduler (which tears it down).
        assert_eq!(listed(&h), 1);
        assert_eq!(h.next_action(Instant::now()), None);
        // Closed handoffs take no more events.
        deliver(&h, 9, true);
        assert_eq!(h.record().newest_id, Some(EventId::new(1, 3)));
    }

    #[test]
    fn a_sleeping_handoff_fits_a_512_byte_allocation() {
        // With the `Arc`'s two counters, 512 bytes: a size class of the allocator (mimalloc's
        // next is 640). The budget of a sleeping handoff is 1 KiB in all (SPEC §8, issue 11).
        assert!(
            std::mem::size_of::<LiveHandoff>() <= 496,
            "{}",
            std::mem::size_of::<LiveHandoff>()
        );
    }

    #[tokio::test]
    async fn a_formatted_handoff_shows_no_secret() {
        let settings = settings();
        let token = Token::generate();
        let h = handoff(&settings, &token);
        let text = format!("{h:?} {:?}", h.record());
        assert!(text.contains("h_test"));
        for secret in [
            token.expose(),
            "upstream-secret-777",
            "fcm-token-secret-888",
        ] {
            assert!(!text.contains(secret), "{text}");
        }
    }

    #[tokio::test]
    async fn the_newest_id_never_goes_back_when_a_gap_read_delivers_older_events() {
        let settings = settings();
        let h = handoff(&settings, &Token::generate());
        // An oversized event 9 was skipped by the shared watcher while a private gap read
        // still delivers older events.
        h.on_skipped(EventId::new(1, 9), "too large");
        deliver(&h, 5, true);
        assert_eq!(h.record().newest_id, Some(EventId::new(1, 9)));
        // The skipped id is not delivered: the older event was still buffered.
        assert_eq!(h.check_in(None).events.len(), 1);
    }

    #[tokio::test]
    async fn upstream_failure_and_expiry_are_terminal() {
        let settings = settings();
        let h = handoff(&settings, &Token::generate());
        h.fail("upstream answered 401");
        assert_eq!(h.state(), State::Failed("upstream answered 401".into()));
        assert_eq!(
            h.record().last_error.as_deref(),
            Some("upstream answered 401")
        );
        assert!(!h.expire_if_due(Instant::now() + Duration::from_secs(10 * 86_400)));
        let h2 = handoff(&settings, &Token::generate());
        assert!(!h2.expire_if_due(Instant::now()));
        assert!(h2.expire_if_due(Instant::now() + Duration::from_secs(86_401)));
        assert_eq!(h2.state(), State::Expired);
    }
}
