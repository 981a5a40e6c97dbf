//! The subscription engine every streaming transport shares (SSE, WebSocket, long-poll).
//!
//! A [`Subscriber`] registers with the hub, reads the log's head, reads history from the log,
//! then yields live frames, as [`Item`]s that each transport encodes its own way.
//!
//! **Exactness.** The live queue is registered **before** the head is read: the head becomes the
//! `watermark`, history covers `(cursor, watermark]`, and the live queue covers everything the
//! hub dispatches after registering, which is everything after some id `≤ watermark`. Live
//! frames with ids `≤ watermark` are skipped as already covered. Nothing falls in between;
//! nothing is sent twice.
//!
//! **The head is the cursor of a fresh subscription.** Without a cursor ([`Start::Now`]) the
//! subscription starts at the watermark, and [`Subscriber::position`] is that head from the
//! first moment: SSE writes it as an id-only block before anything else, WebSocket puts it in
//! the subscribe `ok`, long-poll answers it as `lastEventId`. A client that reconnects with it,
//! even before any event came, resumes exactly from the moment it subscribed.
//!
//! **Epochs and resets.** A cursor is turned into a place to read from by
//! [`resume_point`](crate::store::resume_point) against the watermark: `0-0` reads the current
//! epoch from its start; a cursor of another epoch (its history was lost) gets an
//! [`Item::Reset`] with cause `epoch` and the current epoch from its start; a cursor newer than
//! the head gets a reset with cause `ahead` and continues from the head; otherwise, when
//! retention dropped events after the cursor ([`EventLog::gap`], asked after the first history
//! read so a drop in between shows as a reset, never as a hole), a reset with cause `retention`
//! comes first. A reset always comes before any event, and carries the position the stream
//! continues from when that is not the client's cursor, for the client to adopt. A read that
//! finds the epoch changed mid-stream ends the subscription ([`End::Store`]); the client's
//! reconnect then gets its reset.
//!
//! **Bounded replay.** History is read in batches of at most [`HISTORY_BATCH`] events; each read
//! does bounded work in the store and says where the next one starts
//! ([`ReadResult::next`](crate::store::ReadResult::next)), so a wide replay never holds the
//! store, or publishers, for long.
//!
//! **Filters are judged here, on the subscriber's own task** (the hub queues every event on the
//! subscription's channels): a costly filter delays only its own subscriber, never the feed or
//! the registry (issue 12 §2). Each evaluation has a budget ([`crate::filter`]); a filter over
//! it ends the subscription with [`End::FilterBudget`], which each transport reports (an
//! `ssepush.error` block, a WebSocket close, a 422), counted in
//! `ssepush_origin_filter_over_budget_total`. Frames share verdicts by filter source
//! ([`Frame::judge`]), so many subscribers with one filter still evaluate it once per event.
//!
//! A live subscription's filter can change ([`FilterSwitch`]). The switch point is taken from
//! the hub between two dispatched batches: events with ids up to it are judged by the old
//! filter, later ones by the new. History still being replayed, and frames already queued,
//! follow the same rule, so a change is exact wherever the subscription is.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::state::AppState;
use crate::channel::PatternSet;
use crate::event::{EventId, ResetCause, SharedEvent};
use crate::filter::{Filter, Verdict};
use crate::hub::{self, Ended, Frame, Hub, Next, SwitchPoint};
use crate::store::{EventLog, LogError, ReadResult, Resume, resume_point};

/// Events read from the log per history step while catching up.
pub const HISTORY_BATCH: usize = 500;
/// Filter changes that may wait for history replay to reach them; beyond that a change is
/// refused until the subscription catches up (keeps the plan, and its per-event scan, small).
pub const MAX_PENDING_FILTERS: usize = 16;

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Events newer than the log's head now; [`Subscriber::position`] is that head from the
    /// start (a fresh SSE stream, a WebSocket subscription or a poll without a cursor).
    Now,
    /// Events after this cursor: history first, then live (resume), by the resume rule.
    After(EventId),
}

/// What a subscription yields.
#[derive(Debug, Clone)]
pub enum Item {
    /// The origin cannot vouch for the cursor: the client must resync. Comes first, before any
    /// history.
    Reset {
        /// The cursor the client gave.
        requested: EventId,
        /// The oldest id still held on the subscription's channels, when known.
        oldest: Option<EventId>,
        cause: ResetCause,
        /// Where the stream continues, when that is not `requested`: the client's new cursor.
        resume_from: Option<EventId>,
    },
    /// An event, from history or live.
    Event(Frame),
    /// A keep-alive period passed with nothing to send; only for a subscriber that asked
    /// ([`Subscriber::keep_alive`]).
    KeepAlive,
}

/// Why a subscription ended.
#[derive(Debug)]
pub enum End {
    /// The server is draining.
    Shutdown,
    /// The hub cut this subscriber off as a slow consumer.
    Kicked,
    /// The hub dropped the subscription (it was removed).
    Closed,
    /// A history read failed after the first one (or found the log's epoch changed).
    Store(LogError),
    /// The subscription's filter went over its evaluation budget on an event.
    FilterBudget,
}

/// What a client is told when its filter went over budget.
pub const FILTER_BUDGET_MESSAGE: &str = "the filter exceeded its evaluation budget on an event \
     (too many macro iterations or too much time); the subscription was ended. Simplify the \
     filter, then resubscribe with lastEventId";

/// Filter versions by switch point: version `i` applies to ids in `(from_i, from_{i+1}]`.
#[derive(Debug)]
struct Plan {
    versions: Vec<(EventId, Option<Filter>)>,
    /// History is done: only queued live frames remain to be judged.
    live: bool,
    /// The newest live frame judged so far.
    judged: EventId,
}

impl Plan {
    fn new(filter: Option<Filter>) -> Self {
        Plan {
            versions: vec![(EventId::ZERO, filter)],
            live: false,
            judged: EventId::ZERO,
        }
    }

    /// The filter that judges the event with this id.
    fn filter_for(&self, id: EventId) -> Option<&Filter> {
        self.versions
            .iter()
            .rev()
            .find(|(from, _)| *from < id)
            .or(self.versions.first())
            .and_then(|(_, f)| f.as_ref())
    }

    /// Records a switch at `at.point`. False when too many switches wait for history, or the
    /// queue, to reach them.
    fn switch(&mut self, at: SwitchPoint, filter: Option<Filter>) -> bool {
        let point = at.point;
        if self.live {
            // Live, the frames still to judge are the queued ones: ids in
            // (judged, last_queued]. A version starting at or after `last_queued` can judge
            // none of them, and every later frame goes to the new version.
            if self.judged >= at.last_queued {
                self.versions = vec![(point, filter)];
                return true;
            }
            self.prune(self.judged);
            let keep = 1 + self
                .versions
                .iter()
                .skip(1)
                .take_while(|(from, _)| *from < at.last_queued)
                .count();
            self.versions.truncate(keep);
        }
        let last = self.versions.last().map_or(EventId::ZERO, |l| l.0);
        if last == point {
            // Two switches between the same two batches: the first one never applied.
            if let Some(l) = self.versions.last_mut() {
                l.1 = filter;
            }
        } else if self.versions.len() > MAX_PENDING_FILTERS {
            return false;
        } else {
            self.versions.push((point.max(last), filter));
        }
        true
    }

    /// Forgets versions that can no longer judge any id after `position`.
    fn prune(&mut self, position: EventId) {
        let stale = self
            .versions
            .iter()
            .skip(1)
            .take_while(|(from, _)| *from <= position)
            .count();
        self.versions.drain(..stale);
    }
}

fn lock(plan: &Mutex<Plan>) -> std::sync::MutexGuard<'_, Plan> {
    plan.lock().unwrap_or_else(|p| p.into_inner())
}

/// Changes a live subscription's filter; cheap to clone, usable from another task.
#[derive(Clone)]
pub struct FilterSwitch {
    hub: Arc<Hub>,
    id: u64,
    plan: Arc<Mutex<Plan>>,
}

/// Why a filter change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SwitchError {
    #[error("the subscription has ended")]
    Gone,
    #[error("too many filter changes while the subscription is still catching up; retry shortly")]
    Busy,
}

impl FilterSwitch {
    /// Applies `filter` to every event after the returned id; events up to it keep the old one.
    pub fn set(&self, filter: Option<Filter>) -> Result<EventId, SwitchError> {
        // The plan's lock is held across the hub's swap so history replay cannot judge an event
        // past the switch point with the old filter in between.
        let mut plan = lock(&self.plan);
        let at = self.hub.switch_point(self.id).ok_or(SwitchError::Gone)?;
        if plan.switch(at, filter) {
            Ok(at.point)
        } else {
            Err(SwitchError::Busy)
        }
    }
}

struct History {
    batch: VecDeque<SharedEvent>,
    /// The log has given everything up to here: the next read starts after it.
    next: EventId,
}

impl History {
    fn new(read: ReadResult) -> Self {
        History {
            batch: read.events.into(),
            next: read.next,
        }
    }
}

/// One subscription: registered with the hub on [`open`](Subscriber::open), items from
/// [`next`](Subscriber::next). Dropping it unsubscribes.
pub struct Subscriber {
    sub: hub::Subscription,
    hub: Arc<Hub>,
    log: Arc<dyn EventLog>,
    patterns: PatternSet,
    plan: Arc<Mutex<Plan>>,
    /// Watched while reading history; live, the hub's queue says when the server drains.
    shutdown: CancellationToken,
    watermark: EventId,
    position: EventId,
    history: Option<History>,
    reset: Option<Item>,
}

impl Subscriber {
    /// Registers with the server's hub, reads the head and, for a resume, the first history
    /// batch, so a store failure surfaces here (as a 503 or an error frame) rather than as a
    /// silent end.
    pub async fn open(
        st: &AppState,
        patterns: PatternSet,
        filter: Option<Filter>,
        start: Start,
        kick: CancellationToken,
    ) -> Result<Self, LogError> {
        Self::open_with(
            st.log.clone(),
            &st.hub,
            st.shutdown.clone(),
            st.settings.subscriber_queue,
            patterns,
            filter,
            start,
            kick,
        )
        .await
    }

    /// [`open`](Self::open) on explicit parts.
    #[allow(clippy::too_many_arguments)]
    pub async fn open_with(
        log: Arc<dyn EventLog>,
        hub: &Arc<Hub>,
        shutdown: CancellationToken,
        queue: usize,
        patterns: PatternSet,
        filter: Option<Filter>,
        start: Start,
        kick: CancellationToken,
    ) -> Result<Self, LogError> {
        // Register FIRST: from here on the hub queues every matching event it dispatches.
        let sub = hub.subscribe(patterns.clone(), queue, kick);
        let watermark = log.last_id().await?;
        let mut s = Subscriber {
            sub,
            hub: hub.clone(),
            log,
            patterns,
            plan: Arc::new(Mutex::new(Plan::new(filter))),
            shutdown,
            watermark,
            position: watermark,
            history: None,
            reset: None,
        };
        let cursor = match start {
            Start::Now => {
                lock(&s.plan).live = true;
                return Ok(s);
            }
            Start::After(cursor) => cursor,
        };
        let (from, reset) = match resume_point(cursor, watermark) {
            Resume::From(from) => (from, None),
            Resume::Reset { cause, from } => (from, Some(cause)),
        };
        s.position = from;
        let first = s
            .log
            .read(&s.patterns, from, watermark, HISTORY_BATCH)
            .await?;
        s.reset = match reset {
            Some(cause) => Some(Item::Reset {
                requested: cursor,
                // From the start of an epoch, the first event is the oldest one held.
                oldest: match cause {
                    ResetCause::Epoch => first.events.first().map(|e| e.id),
                    _ => None,
                },
                cause,
                resume_from: Some(from),
            }),
            // Asked after the read: an event dropped in between is reported, never skipped.
            None => s.log.gap(&s.patterns, from).await?.map(|gap| Item::Reset {
                requested: cursor,
                oldest: gap.oldest,
                cause: ResetCause::Retention,
                resume_from: None,
            }),
        };
        s.history = Some(History::new(first));
        Ok(s)
    }

    /// The hub's id for this subscriber (for logs).
    pub fn id(&self) -> u64 {
        self.sub.id()
    }

    /// A handle that changes this subscription's filter from another task.
    pub fn filter_switch(&self) -> FilterSwitch {
        FilterSwitch {
            hub: self.hub.clone(),
            id: self.sub.id(),
            plan: self.plan.clone(),
        }
    }

    /// From now on [`next`](Self::next) also yields [`Item::KeepAlive`] when a keep-alive
    /// period passed while live with nothing to send (the hub's one clock,
    /// [`hub::run_keep_alive`]).
    pub fn keep_alive(&mut self) {
        self.sub.rx.want_pings();
    }

    /// History is done (or there was none): what comes now is live.
    pub fn is_live(&self) -> bool {
        self.history.is_none() && self.reset.is_none()
    }

    /// Every event of this subscription with an id up to here has been yielded; events after it
    /// have not. From the first moment this is a cursor the client can resume from: the head for
    /// [`Start::Now`], the cursor (or where a reset continues) for [`Start::After`].
    pub fn position(&self) -> EventId {
        self.position
    }

    /// The next item. Cancel-safe: dropping the future loses nothing, so it can sit in a
    /// `select!` or under a timeout.
    pub async fn next(&mut self) -> Result<Item, End> {
        if !self.is_live() && self.shutdown.is_cancelled() {
            return Err(End::Shutdown);
        }
        if let Some(reset) = self.reset.take() {
            return Ok(reset);
        }
        while let Some(h) = &mut self.history {
            while let Some(event) = h.batch.pop_front() {
                self.position = event.id;
                let filter = lock(&self.plan).filter_for(event.id).cloned();
                let frame = Frame::new(event);
                if judge(filter.as_ref(), &frame)? {
                    return Ok(Item::Event(frame));
                }
            }
            // The batch is out: the log vouched for everything up to `next`.
            self.position = self.position.max(h.next);
            if h.next >= self.watermark {
                self.history = None;
                self.position = self.position.max(self.watermark);
                let mut plan = lock(&self.plan);
                plan.prune(self.position);
                plan.live = true;
                break;
            }
            // State changes only once the read is back, so a dropped future re-reads.
            let read = self
                .log
                .read(&self.patterns, h.next, self.watermark, HISTORY_BATCH);
            let batch = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Err(End::Shutdown),
                r = read => r.map_err(End::Store)?,
            };
            if batch.next <= h.next && batch.events.is_empty() {
                // A store that makes no progress would spin here; end so the client resumes.
                return Err(End::Store(LogError::Corrupt(format!(
                    "history read after {} made no progress",
                    h.next
                ))));
            }
            *h = History::new(batch);
        }
        // Live: the queue alone is waited on; it also says when the hub kicked this subscriber
        // or the server began to drain (`Hub::shutdown`), so no cancellation future is
        // registered per wait (at saturation, several waits per delivery).
        loop {
            let frame = std::future::poll_fn(|cx| self.sub.rx.poll_next(cx)).await;
            let f = match frame {
                Ok(Next::Frame(f)) => f,
                Ok(Next::Ping) => return Ok(Item::KeepAlive),
                Err(Ended::Kicked) => return Err(End::Kicked),
                Err(Ended::Shutdown) => return Err(End::Shutdown),
                Err(Ended::Removed) => return Err(End::Closed),
            };
            if f.id() <= self.watermark {
                // Already covered by history.
                continue;
            }
            self.position = f.id();
            let filter = {
                let mut plan = lock(&self.plan);
                if plan.versions.len() == 1 && plan.versions[0].1.is_none() {
                    // No filter, and no change pending: nothing to judge or prune.
                    plan.judged = f.id();
                    return Ok(Item::Event(f));
                }
                let filter = plan.filter_for(f.id()).cloned();
                plan.judged = f.id();
                plan.prune(f.id());
                filter
            };
            if judge(filter.as_ref(), &f)? {
                return Ok(Item::Event(f));
            }
        }
    }
}

/// Whether `frame` passes `filter` (evaluated outside every lock, on the caller's task).
fn judge(filter: Option<&Filter>, frame: &Frame) -> Result<bool, End> {
    let Some(filter) = filter else {
        return Ok(true);
    };
    match frame.judge(filter) {
        Verdict::Match => Ok(true),
        Verdict::NoMatch => Ok(false),
        Verdict::OverBudget => {
            metrics::counter!("ssepush_origin_filter_over_budget_total", "site" => "subscription")
                .increment(1);
            tracing::info!(filter = filter.source(), event = %frame.id(), "filter over its evaluation budget; ending the subscription");
            Err(End::FilterBudget)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::NewEvent;
    use crate::store::Retention;
    use crate::store::memory::MemoryLog;
    use futures::FutureExt;

    fn f(src: &str) -> Option<Filter> {
        Some(Filter::compile(src).unwrap())
    }

    fn id(seq: u64) -> EventId {
        EventId::new(1, seq)
    }

    fn at(seq: u64) -> SwitchPoint {
        SwitchPoint {
            point: id(seq),
            last_queued: id(seq),
        }
    }

    #[test]
    fn the_plan_judges_each_id_by_the_filter_in_force() {
        let mut plan = Plan::new(f("data.n == 1"));
        assert!(plan.switch(at(5), f("data.n == 2")));
        assert!(plan.switch(at(9), None));
        let src = |p: &Plan, i| p.filter_for(id(i)).map(|f| f.source().to_owned());
        assert_eq!(src(&plan, 1).as_deref(), Some("data.n == 1"));
        assert_eq!(
            src(&plan, 5).as_deref(),
            Some("data.n == 1"),
            "the switch point keeps the old filter"
        );
        assert_eq!(src(&plan, 6).as_deref(), Some("data.n == 2"));
        assert_eq!(src(&plan, 10), None);
        // Two switches at one point: only the second counts.
        assert!(plan.switch(at(9), f("true")));
        assert_eq!(src(&plan, 10).as_deref(), Some("true"));
        plan.prune(id(5));
        assert_eq!(
            plan.versions.len(),
            2,
            "the first version judged ids up to 5 only"
        );
        plan.prune(id(100));
        assert_eq!(plan.versions.len(), 1);
        assert_eq!(src(&plan, 1000).as_deref(), Some("true"));
    }

    #[test]
    fn pending_switches_are_bounded_until_live() {
        let mut plan = Plan::new(None);
        for i in 0..MAX_PENDING_FILTERS as u64 {
            assert!(plan.switch(at(i + 1), None));
        }
        assert!(!plan.switch(at(1000), None));
        plan.live = true;
        // Live with nothing queued: no frame can need an older version.
        let quiet = SwitchPoint {
            point: id(1001),
            last_queued: EventId::ZERO,
        };
        assert!(plan.switch(quiet, f("true")));
        assert_eq!(plan.versions.len(), 1);
    }

    #[test]
    fn live_switches_keep_the_versions_queued_frames_need() {
        let mut plan = Plan::new(f("data.n == 1"));
        plan.live = true;
        // Frames 1..=3 are queued, none judged yet; then 4 and 5.
        assert!(plan.switch(at(3), f("data.n == 2")));
        assert!(plan.switch(at(5), f("data.n == 3")));
        let src = |p: &Plan, i| p.filter_for(id(i)).map(|f| f.source().to_owned());
        assert_eq!(src(&plan, 2).as_deref(), Some("data.n == 1"));
        assert_eq!(src(&plan, 4).as_deref(), Some("data.n == 2"));
        assert_eq!(src(&plan, 6).as_deref(), Some("data.n == 3"));
        // Everything queued is judged: the next switch needs no history.
        plan.judged = id(5);
        let quiet = |p| SwitchPoint {
            point: id(p),
            last_queued: id(5),
        };
        assert!(plan.switch(quiet(7), f("data.n == 4")));
        assert_eq!(plan.versions.len(), 1);
        // A quiet subscriber on a busy node may switch as often as it likes.
        for p in 8..100 {
            assert!(plan.switch(quiet(p), None));
        }
        assert_eq!(plan.versions.len(), 1);
        // Frame 6 queued, not judged: its version stays until it is.
        let busy = SwitchPoint {
            point: id(100),
            last_queued: id(101),
        };
        assert!(plan.switch(busy, f("true")));
        assert_eq!(src(&plan, 101).as_deref(), Some("true"));
        assert_eq!(src(&plan, 100), None);
    }

    async fn publish(log: &MemoryLog, hub: &Hub, n: std::ops::Range<i64>) -> Vec<SharedEvent> {
        let events = n
            .map(|i| NewEvent::new("a", None, serde_json::json!({ "n": i })).unwrap())
            .collect();
        let stored = log.append(events).await.unwrap();
        hub.dispatch(&stored);
        stored
    }

    fn ready(s: &mut Subscriber) -> Vec<i64> {
        let mut out = vec![];
        while let Some(Ok(Item::Event(fr))) = s.next().now_or_never() {
            out.push(fr.event().data["n"].as_i64().unwrap());
        }
        out
    }

    #[tokio::test]
    async fn history_then_live_with_a_filter_switch_in_the_middle_of_history() {
        let log = Arc::new(MemoryLog::new(Retention::default()));
        let hub = Hub::new();
        let early = publish(&log, &hub, 0..10).await;
        let mut s = Subscriber::open_with(
            log.clone(),
            &hub,
            CancellationToken::new(),
            64,
            PatternSet::parse_all(["a"]).unwrap(),
            f("data.n % 2 == 0"),
            Start::After(early[1].id),
            CancellationToken::new(),
        )
        .await
        .unwrap();
        // Not yet caught up: 2 and 4 come from history with the first filter.
        let first: Vec<i64> = (0..2)
            .map(|_| match s.next().now_or_never() {
                Some(Ok(Item::Event(fr))) => fr.event().data["n"].as_i64().unwrap(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(first, vec![2, 4]);
        assert_eq!(s.position(), early[4].id);
        // The hub dispatched up to n=9 already, so the switch applies after it: the rest of
        // history (5..=9) still uses the old filter, live events the new one.
        let point = s.filter_switch().set(f("data.n % 2 == 1")).unwrap();
        assert_eq!(point, early[9].id);
        publish(&log, &hub, 10..14).await;
        assert_eq!(ready(&mut s), vec![6, 8, 11, 13]);
        assert!(s.is_live());
    }

    #[tokio::test]
    async fn a_switch_before_the_hub_saw_history_applies_to_that_history() {
        let log = Arc::new(MemoryLog::new(Retention::default()));
        let hub = Hub::new();
        // Stored but not yet dispatched: the hub's switch point stays at ZERO.
        let events = (0..6)
            .map(|i| NewEvent::new("a", None, serde_json::json!({ "n": i })).unwrap())
            .collect();
        let stored = log.append(events).await.unwrap();
        let mut s = Subscriber::open_with(
            log.clone(),
            &hub,
            CancellationToken::new(),
            64,
            PatternSet::parse_all(["a"]).unwrap(),
            None,
            Start::After(EventId::ZERO),
            CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(
            s.filter_switch().set(f("data.n >= 4")).unwrap(),
            EventId::ZERO
        );
        hub.dispatch(&stored);
        assert_eq!(
            ready(&mut s),
            vec![4, 5],
            "live duplicates of history are skipped"
        );
        assert_eq!(s.position(), stored[5].id);
    }

    #[tokio::test]
    async fn position_starts_at_now_and_follows_live_events() {
        let log = Arc::new(MemoryLog::new(Retention::default()));
        let hub = Hub::new();
        let old = publish(&log, &hub, 0..3).await;
        let mut s = Subscriber::open_with(
            log.clone(),
            &hub,
            CancellationToken::new(),
            64,
            PatternSet::parse_all(["a"]).unwrap(),
            f("data.n > 4"),
            Start::Now,
            CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(s.position(), old[2].id);
        let new = publish(&log, &hub, 3..6).await;
        assert_eq!(ready(&mut s), vec![5]);
        assert_eq!(s.position(), new[2].id);
    }

    async fn open(log: &Arc<MemoryLog>, hub: &Arc<Hub>, start: Start) -> Subscriber {
        Subscriber::open_with(
            log.clone(),
            hub,
            CancellationToken::new(),
            64,
            PatternSet::parse_all(["a"]).unwrap(),
            None,
            start,
            CancellationToken::new(),
        )
        .await
        .unwrap()
    }

    fn reset_of(s: &mut Subscriber) -> (EventId, Option<EventId>, ResetCause, Option<EventId>) {
        match s.next().now_or_never() {
            Some(Ok(Item::Reset {
                requested,
                oldest,
                cause,
                resume_from,
            })) => (requested, oldest, cause, resume_from),
            other => panic!("expected a reset, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_fresh_subscription_holds_the_head_before_any_event() {
        let log = Arc::new(MemoryLog::with_epoch(Retention::default(), 3));
        let hub = Hub::new();
        let s = open(&log, &hub, Start::Now).await;
        assert_eq!(s.position(), EventId::epoch_start(3), "an empty log's head");
        let old = publish(&log, &hub, 0..2).await;
        let mut s = open(&log, &hub, Start::Now).await;
        assert_eq!(s.position(), old[1].id);
        // Resuming from that position later gets exactly what came after it.
        let new = publish(&log, &hub, 2..3).await;
        drop(s);
        s = open(&log, &hub, Start::After(old[1].id)).await;
        assert_eq!(ready(&mut s), vec![2]);
        assert_eq!(s.position(), new[0].id);
    }

    #[tokio::test]
    async fn a_cursor_of_another_epoch_gets_a_reset_then_this_epoch_from_its_start() {
        let before = MemoryLog::with_epoch(Retention::default(), 1);
        let gone = before
            .append(vec![
                NewEvent::new("a", None, serde_json::json!({"n": 0})).unwrap(),
            ])
            .await
            .unwrap();
        let log = Arc::new(MemoryLog::with_epoch(Retention::default(), 2));
        let hub = Hub::new();
        let now = publish(&log, &hub, 1..3).await;
        for cursor in [gone[0].id, EventId::new(5, 0)] {
            let mut s = open(&log, &hub, Start::After(cursor)).await;
            assert_eq!(s.position(), EventId::epoch_start(2));
            assert_eq!(
                reset_of(&mut s),
                (
                    cursor,
                    Some(now[0].id),
                    ResetCause::Epoch,
                    Some(EventId::epoch_start(2))
                )
            );
            assert_eq!(ready(&mut s), vec![1, 2]);
        }
        // `0-0` is "from the start", not a foreign cursor.
        let mut s = open(&log, &hub, Start::After(EventId::ZERO)).await;
        assert_eq!(ready(&mut s), vec![1, 2]);
    }

    #[tokio::test]
    async fn a_cursor_ahead_of_the_head_gets_a_reset_and_continues_from_the_head() {
        let log = Arc::new(MemoryLog::with_epoch(Retention::default(), 4));
        let hub = Hub::new();
        let old = publish(&log, &hub, 0..2).await;
        let ahead = EventId::new(old[1].id.ms + 1000, 0).in_epoch(4);
        let mut s = open(&log, &hub, Start::After(ahead)).await;
        assert_eq!(
            reset_of(&mut s),
            (ahead, None, ResetCause::Ahead, Some(old[1].id))
        );
        assert_eq!(s.position(), old[1].id);
        publish(&log, &hub, 2..3).await;
        assert_eq!(ready(&mut s), vec![2]);
    }

    #[tokio::test]
    async fn a_cursor_behind_retention_gets_a_reset_and_keeps_its_place() {
        let log = Arc::new(MemoryLog::new(Retention {
            default: crate::store::Limits {
                max_events: 2,
                max_age: None,
                max_bytes: u64::MAX,
            },
            overrides: vec![],
            max_total_bytes: u64::MAX,
        }));
        let hub = Hub::new();
        let old = publish(&log, &hub, 0..5).await;
        let mut s = open(&log, &hub, Start::After(old[0].id)).await;
        assert_eq!(
            reset_of(&mut s),
            (old[0].id, Some(old[3].id), ResetCause::Retention, None)
        );
        assert_eq!(ready(&mut s), vec![3, 4]);
    }
}
