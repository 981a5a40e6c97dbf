//! **Shared watchers**: handoffs of the same stream (same URL, same headers — keyed by a
//! SHA-256 of both) share **one upstream connection per node**.
//!
//! A [`Watcher`] owns the connection (a [`crate::connector`] read loop) and fans every event
//! out to its subscribers. A handoff joins in one of three ways, each exact (no loss, no
//! duplicates):
//!
//! * **live**, when its cursor is at or past the watcher's position (it ignores ids it already
//!   has);
//! * **from the replay ring** ([`crate::replay`]), when its cursor is behind the position but
//!   the ring holds every event after it: those are delivered at once, then it is live;
//! * through a **private catch-up reader** otherwise: a short-lived connection reads the gap
//!   while the watcher's live events for it are held, then it joins.
//!
//! Every event is decoded once and shared as an `Arc`; every CEL filter is evaluated once per
//! event per distinct source ([`Verdicts`]). An id-only block moves the watcher's position like
//! an event does, so a handoff at the origin's head joins live. An oversized event is a gap
//! through its id for every subscriber.
//!
//! **Linger.** When its last handoff leaves, a watcher keeps its connection (and its ring) for
//! `upstream.idle_linger_secs`, so a phone that sleeps again soon — the usual pattern — joins it
//! without a new connection. At most `upstream.max_idle_watchers` linger at once (beyond, the
//! connection closes with its last handoff, as with a linger of 0). A lingering watcher is open:
//! it counts in `ssepush_proxy_upstream_watchers`, its connection in
//! `ssepush_proxy_upstream_connections`, and it is also counted in
//! `ssepush_proxy_upstream_idle_watchers`. One reaper task per node closes those whose linger
//! is over; shutdown closes every watcher.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use ssepush_origin::event::{EventId, SharedEvent};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::allow::origin_of;
use crate::connector::{Connector, Flow, Frame, oversized_reason, read_loop};
use crate::handoff::StreamSpec;
use crate::replay::Replay;
pub use crate::verdicts::Verdicts;

/// A handoff, as a watcher sees it.
pub trait Subscriber: Send + Sync + 'static {
    fn id(&self) -> &str;
    /// Its id as the watcher's map holds it: a subscriber that holds its id in an `Arc` shares
    /// it instead of the map holding a copy per handoff.
    fn key(&self) -> Arc<str> {
        self.id().into()
    }
    /// Where the subscriber's stream position is (its owner's cursor): events after it are
    /// owed to it. Read once, when it joins.
    fn cursor(&self) -> Option<EventId>;
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
    /// The connection failed or ended (refused, a 5xx, the stream ended, …) and will be
    /// retried after a backoff: `reason` says what happened, for the handoff's `lastError`,
    /// at once rather than when the stream gives up.
    fn on_upstream_trouble(&self, _reason: &str) {}
}

enum Mode {
    Live,
    /// Reading the gap privately. Boxed: most subscribers are live, and each sleeping handoff
    /// has an entry (issue 11).
    CatchingUp(Box<CatchingUp>),
}

/// Live events are held until the private reader reaches `target` (the watcher's position
/// when the subscriber joined) or the first held event.
struct CatchingUp {
    target: Option<EventId>,
    held: VecDeque<SharedEvent>,
}

impl Mode {
    fn catching_up(target: Option<EventId>) -> Mode {
        Mode::CatchingUp(Box::new(CatchingUp {
            target,
            held: VecDeque::new(),
        }))
    }
}

struct Sub {
    sub: Arc<dyn Subscriber>,
    mode: Mode,
}

struct WatcherInner {
    subs: HashMap<Arc<str>, Sub>,
    /// The newest id this watcher has received (its `Last-Event-ID`).
    position: Option<EventId>,
    /// Its most recent events, for handoffs joining behind it.
    replay: Replay,
    /// Since when it has had no subscriber (lingering); `None` while it has some.
    idle_since: Option<Instant>,
    /// Whether the reaper has an entry for it (at most one at a time).
    queued: bool,
}

impl WatcherInner {
    /// Whether a subscriber at `cursor` can join the live feed as it is: exact when the
    /// watcher has not passed the cursor, since everything after it is still to come through
    /// the watcher (and the subscriber ignores what it has). With no position (a fresh
    /// watcher, or one whose origin just reset) only a subscriber with no cursor can.
    fn joins_live(&self, cursor: Option<EventId>) -> bool {
        match (cursor, self.position) {
            (None, _) => true,
            (Some(c), Some(p)) => c >= p,
            (Some(_), None) => false,
        }
    }
}

/// One upstream connection shared by the handoffs of one stream.
pub struct Watcher {
    key: [u8; 32],
    /// Tells this watcher from an older one of the same stream (the reaper's entries).
    serial: u64,
    spec: StreamSpec,
    inner: Mutex<WatcherInner>,
    cancel: CancellationToken,
    /// Held live events per catching-up subscriber (bounds memory while a gap is read).
    hold_cap: usize,
}

/// How big a watcher's replay ring may grow.
#[derive(Debug, Clone, Copy)]
struct RingLimits {
    events: usize,
    bytes: usize,
}

impl Watcher {
    fn new(
        spec: &StreamSpec,
        serial: u64,
        start: Option<EventId>,
        cancel: CancellationToken,
        hold_cap: usize,
        ring: RingLimits,
    ) -> Watcher {
        Watcher {
            key: spec.key(),
            serial,
            spec: spec.clone(),
            inner: Mutex::new(WatcherInner {
                subs: HashMap::new(),
                position: start,
                replay: Replay::new(start, ring.events, ring.bytes),
                idle_since: None,
                queued: false,
            }),
            cancel,
            hold_cap,
        }
    }

    fn dispatch(&self, frame: &Frame) -> Flow {
        let mut inner = self.inner.lock().unwrap();
        let inner = &mut *inner;
        match frame {
            Frame::Event(ev) => {
                if inner.position.is_some_and(|p| ev.id <= p) {
                    return Flow::Continue;
                }
                inner.position = Some(ev.id);
                inner.replay.push(ev);
                let mut verdicts = Verdicts::new(ev);
                for sub in inner.subs.values_mut() {
                    match &mut sub.mode {
                        Mode::Live => sub.sub.on_event(ev, &mut verdicts),
                        Mode::CatchingUp(c) => {
                            let held = &mut c.held;
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
                // Events between the position and what the origin still has are lost: the
                // ring can no longer vouch for anything before what comes next, and neither
                // can the position — a handoff joining now with a cursor at the old position
                // must hear of the loss from the origin (a private reader), not join live and
                // miss it silently. The next event or id-only block sets it again.
                inner.replay.break_at(None);
                inner.position = None;
                for sub in inner.subs.values() {
                    sub.sub.on_reset(*oldest);
                }
            }
            // The stream's cursor moved without an event (e.g. the origin's head on a fresh
            // stream): handoffs at or past it can join live.
            Frame::LastEventId(Some(id)) => {
                inner.position = inner.position.max(Some(*id));
                if let Some(p) = inner.position {
                    inner.replay.moved_to(p);
                }
            }
            // The next connection starts at the origin's head: whatever lies between is
            // unknown.
            Frame::LastEventId(None) => inner.replay.break_at(None),
            Frame::Oversized {
                id: Some(id),
                limit,
            } => {
                if inner.position.is_some_and(|p| *id <= p) {
                    return Flow::Continue;
                }
                inner.position = Some(*id);
                // A gap every subscriber must hear of: only cursors past it join from the ring.
                inner.replay.break_at(Some(*id));
                // Catching-up subscribers too: their private reader may stop before this id.
                let reason = oversized_reason(*id, *limit);
                for sub in inner.subs.values() {
                    sub.sub.on_skipped(*id, &reason);
                }
            }
            Frame::Oversized { id: None, .. } | Frame::Retry(_) | Frame::Undecodable(_) => {}
        }
        // A watcher without subscribers lingers (or is being closed): its cancel token ends it.
        Flow::Continue
    }

    /// A frame of a subscriber's private gap reader. Returns `Done` once it has caught up.
    fn catch_up(&self, id: &str, frame: &Frame) -> Flow {
        let mut inner = self.inner.lock().unwrap();
        let Some(sub) = inner.subs.get_mut(id) else {
            return Flow::Done;
        };
        let Mode::CatchingUp(c) = &mut sub.mode else {
            return Flow::Done;
        };
        let CatchingUp { target, held } = &mut **c;
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

    /// The shared connection failed or ended and will be retried: every subscriber hears it.
    fn trouble(&self, reason: &str) {
        let subs: Vec<Arc<dyn Subscriber>> = {
            let inner = self.inner.lock().unwrap();
            inner.subs.values().map(|s| s.sub.clone()).collect()
        };
        for s in subs {
            s.on_upstream_trouble(reason);
        }
    }

    fn subscribers(&self) -> usize {
        self.inner.lock().unwrap().subs.len()
    }
}

/// The watchers of a node, and the lingering ones' deadlines.
struct Registry {
    watchers: HashMap<[u8; 32], Arc<Watcher>>,
    /// Watchers in `watchers` without a subscriber (lingering).
    idle: usize,
    /// When each lingering watcher's linger may be over, soonest first: `(deadline, serial,
    /// key)`, at most one entry per watcher.
    reap: BinaryHeap<Reverse<(Instant, u64, [u8; 32])>>,
}

impl Registry {
    fn gauges(&self) {
        metrics::gauge!("ssepush_proxy_upstream_watchers").set(self.watchers.len() as f64);
        metrics::gauge!("ssepush_proxy_upstream_idle_watchers").set(self.idle as f64);
    }

    /// Forgets `w` if it is the stream's current watcher (and counted it idle).
    fn remove(&mut self, w: &Arc<Watcher>, inner: &WatcherInner) {
        if self.watchers.get(&w.key).is_some_and(|x| Arc::ptr_eq(x, w)) {
            self.watchers.remove(&w.key);
            if inner.idle_since.is_some() {
                self.idle -= 1;
            }
            self.gauges();
        }
    }
}

/// Every watcher of this node, keyed by stream.
pub struct Upstreams {
    connector: Connector,
    registry: Mutex<Registry>,
    shutdown: CancellationToken,
    hold_cap: usize,
    ring: RingLimits,
    linger: Duration,
    max_idle: usize,
    next_serial: AtomicU64,
    /// Wakes the reaper when its first entry arrives.
    reaper_wake: Notify,
    reaper_started: AtomicBool,
    me: Weak<Upstreams>,
}

impl Upstreams {
    /// The node's watchers: connections through `connector` (whose `[upstream]` settings also
    /// give the linger and the replay ring's bounds), `hold_cap` live events held per handoff
    /// while a private reader catches it up; every watcher stops at `shutdown`.
    pub fn new(connector: Connector, hold_cap: usize, shutdown: CancellationToken) -> Arc<Self> {
        let cfg = connector.cfg.clone();
        Arc::new_cyclic(|me| Upstreams {
            connector,
            registry: Mutex::new(Registry {
                watchers: HashMap::new(),
                idle: 0,
                reap: BinaryHeap::new(),
            }),
            shutdown,
            hold_cap: hold_cap.max(1),
            ring: RingLimits {
                events: cfg.replay_events,
                bytes: cfg.replay_bytes,
            },
            linger: Duration::from_secs(cfg.idle_linger_secs),
            max_idle: cfg.max_idle_watchers,
            next_serial: AtomicU64::new(1),
            reaper_wake: Notify::new(),
            reaper_started: AtomicBool::new(false),
            me: me.clone(),
        })
    }

    /// Starts watching `spec` for `sub` from its cursor, sharing a connection when possible.
    pub fn join(&self, spec: &StreamSpec, sub: Arc<dyn Subscriber>) {
        let cursor = sub.cursor();
        self.join_group(spec, cursor, vec![sub]);
    }

    /// Starts watching `spec` for many subscribers at once (a node taking handoffs over):
    /// those with the same cursor behind the watcher share one catch-up reader instead of
    /// opening one each.
    pub fn join_many(&self, spec: &StreamSpec, subs: Vec<Arc<dyn Subscriber>>) {
        let mut groups: std::collections::BTreeMap<Option<EventId>, Vec<Arc<dyn Subscriber>>> =
            std::collections::BTreeMap::new();
        for sub in subs {
            groups.entry(sub.cursor()).or_default().push(sub);
        }
        for (cursor, group) in groups {
            self.join_group(spec, cursor, group);
        }
    }

    /// Joins subscribers that share `cursor`: live when the watcher has not passed it, from
    /// the replay ring when it holds every event after it, else through one private catch-up
    /// reader from it.
    fn join_group(
        &self,
        spec: &StreamSpec,
        cursor: Option<EventId>,
        subs: Vec<Arc<dyn Subscriber>>,
    ) {
        let key = spec.key();
        let mut reg = self.registry.lock().unwrap();
        let existing = reg
            .watchers
            .get(&key)
            .filter(|w| !w.cancel.is_cancelled())
            .cloned();
        let watcher = match existing {
            Some(w) => w,
            None => {
                let serial = self.next_serial.fetch_add(1, Ordering::Relaxed);
                let w = Arc::new(Watcher::new(
                    spec,
                    serial,
                    cursor,
                    self.shutdown.child_token(),
                    self.hold_cap,
                    self.ring,
                ));
                // A cancelled watcher still in the map (shutdown) is replaced.
                if let Some(old) = reg.watchers.insert(key, w.clone())
                    && old.inner.lock().unwrap().idle_since.is_some()
                {
                    reg.idle -= 1;
                }
                reg.gauges();
                self.spawn_watcher(w.clone(), cursor);
                w
            }
        };
        let mut inner = watcher.inner.lock().unwrap();
        if inner.idle_since.take().is_some() {
            reg.idle -= 1;
            metrics::gauge!("ssepush_proxy_upstream_idle_watchers").set(reg.idle as f64);
        }
        drop(reg);
        let position = inner.position;
        let live = inner.joins_live(cursor);
        let replayed = !live && cursor.is_some_and(|c| inner.replay.after(c).is_some());
        if replayed && let Some(c) = cursor {
            // The ring holds every event after the cursor: delivered now, under the watcher's
            // lock, so no live event can come between.
            for ev in inner.replay.after(c).into_iter().flatten() {
                let mut verdicts = Verdicts::new(ev);
                for sub in &subs {
                    sub.on_event(ev, &mut verdicts);
                }
            }
            metrics::counter!("ssepush_proxy_upstream_replays_total").increment(1);
        }
        let mut ids = Vec::new();
        for sub in &subs {
            let id = sub.key();
            let mode = if live || replayed {
                Mode::Live
            } else {
                Mode::catching_up(position)
            };
            ids.push(id.to_string());
            inner.subs.insert(
                id,
                Sub {
                    sub: sub.clone(),
                    mode,
                },
            );
        }
        drop(inner);
        if !live && !replayed {
            self.spawn_catch_up(watcher, ids, cursor, subs);
        }
    }

    /// Stops watching for `id`. The connection lingers after its last subscriber (see the
    /// module docs), or closes at once when lingering is off or enough watchers linger.
    pub fn leave(&self, spec: &StreamSpec, id: &str) {
        let key = spec.key();
        let mut reg = self.registry.lock().unwrap();
        let Some(w) = reg.watchers.get(&key).cloned() else {
            return;
        };
        let mut inner = w.inner.lock().unwrap();
        if inner.subs.remove(id).is_none() || !inner.subs.is_empty() {
            return;
        }
        if self.linger.is_zero() || reg.idle >= self.max_idle || w.cancel.is_cancelled() {
            w.cancel.cancel();
            reg.remove(&w, &inner);
            return;
        }
        let now = Instant::now();
        inner.idle_since = Some(now);
        reg.idle += 1;
        if !inner.queued {
            inner.queued = true;
            reg.reap.push(Reverse((now + self.linger, w.serial, key)));
            if reg.reap.len() == 1 {
                self.reaper_wake.notify_one();
            }
        }
        drop(inner);
        metrics::gauge!("ssepush_proxy_upstream_idle_watchers").set(reg.idle as f64);
        drop(reg);
        self.start_reaper();
    }

    /// Watchers (distinct streams) open on this node, lingering ones included.
    pub fn watcher_count(&self) -> usize {
        self.registry.lock().unwrap().watchers.len()
    }

    /// Watchers lingering without a handoff.
    pub fn idle_count(&self) -> usize {
        self.registry.lock().unwrap().idle
    }

    /// Handoffs attached to the watcher of `spec`.
    pub fn subscribers(&self, spec: &StreamSpec) -> usize {
        let key = spec.key();
        let w = self.registry.lock().unwrap().watchers.get(&key).cloned();
        w.map_or(0, |w| w.subscribers())
    }

    /// Starts the reaper task once (from the first lingering watcher: a node that never
    /// lingers runs none).
    fn start_reaper(&self) {
        if self.reaper_started.swap(true, Ordering::SeqCst) {
            return;
        }
        let (me, shutdown) = (self.me.clone(), self.shutdown.clone());
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.reaper_started.store(false, Ordering::SeqCst);
            return;
        };
        rt.spawn(async move {
            loop {
                let Some(up) = me.upgrade() else { return };
                let next = up.registry.lock().unwrap().reap.peek().map(|r| r.0.0);
                let wait = async {
                    match next {
                        Some(at) => tokio::time::sleep_until(at.into()).await,
                        None => up.reaper_wake.notified().await,
                    }
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = wait => {}
                }
                up.reap(Instant::now());
            }
        });
    }

    /// Closes the lingering watchers whose linger is over at `now`; re-queues those that were
    /// busy in between and are idle again (from when they last became idle).
    fn reap(&self, now: Instant) {
        let mut reg = self.registry.lock().unwrap();
        while let Some(Reverse((at, serial, key))) = reg.reap.peek().copied() {
            if at > now {
                break;
            }
            reg.reap.pop();
            let Some(w) = reg
                .watchers
                .get(&key)
                .filter(|w| w.serial == serial)
                .cloned()
            else {
                continue;
            };
            let mut inner = w.inner.lock().unwrap();
            match inner.idle_since {
                // Busy again: queued anew when it next becomes idle.
                None => inner.queued = false,
                Some(since) if since + self.linger > now => {
                    reg.reap.push(Reverse((since + self.linger, serial, key)));
                }
                Some(_) => {
                    tracing::debug!(origin = %origin_of(&w.spec.url), "idle watcher closed");
                    w.cancel.cancel();
                    reg.remove(&w, &inner);
                }
            }
        }
    }

    fn spawn_watcher(&self, w: Arc<Watcher>, start: Option<EventId>) {
        let conn = self.connector.clone();
        let me = self.me.clone();
        let span = tracing::info_span!("watcher", origin = %origin_of(&w.spec.url));
        tokio::spawn(
            async move {
                tracing::debug!("watching");
                let result = read_loop(
                    &conn,
                    &w.spec,
                    start,
                    &w.cancel,
                    |f| w.dispatch(f),
                    |reason| w.trouble(reason),
                )
                .await;
                if let Err(reason) = result {
                    tracing::warn!(%reason, "upstream stream stopped");
                    // Remove it first, so handoffs created from now on try afresh.
                    if let Some(me) = me.upgrade() {
                        let mut reg = me.registry.lock().unwrap();
                        let inner = w.inner.lock().unwrap();
                        reg.remove(&w, &inner);
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
        ids: Vec<String>,
        from: Option<EventId>,
        subs: Vec<Arc<dyn Subscriber>>,
    ) {
        let conn = self.connector.clone();
        let span = tracing::info_span!("catch_up", handoffs = ids.len(), first = %ids[0]);
        tokio::spawn(
            async move {
                metrics::counter!("ssepush_proxy_upstream_catch_ups_total").increment(1);
                let cancel = w.cancel.child_token();
                // Each subscriber leaves the group once it has caught up; the reader ends
                // with the last.
                let mut pending = ids;
                let result = read_loop(
                    &conn,
                    &w.spec,
                    from,
                    &cancel,
                    |f| {
                        pending.retain(|id| matches!(w.catch_up(id, f), Flow::Continue));
                        if pending.is_empty() {
                            Flow::Done
                        } else {
                            Flow::Continue
                        }
                    },
                    |reason| {
                        for sub in &subs {
                            sub.on_upstream_trouble(reason);
                        }
                    },
                )
                .await;
                if let Err(reason) = result {
                    for sub in subs
                        .iter()
                        .filter(|s| pending.iter().any(|id| id == s.id()))
                    {
                        sub.on_failed(&reason);
                    }
                }
            }
            .instrument(span),
        );
    }
}

#[cfg(test)]
mod tests {
    use reqwest::Url;

    use super::*;

    const NO_RING: RingLimits = RingLimits {
        events: 0,
        bytes: 0,
    };

    /// A subscriber that records what it is given.
    struct Rec {
        id: String,
        got: Mutex<Vec<u64>>,
    }

    impl Subscriber for Rec {
        fn id(&self) -> &str {
            &self.id
        }
        fn cursor(&self) -> Option<EventId> {
            None
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
        let w = Watcher::new(
            &spec,
            1,
            Some(EventId::new(1, 5)),
            CancellationToken::new(),
            2,
            NO_RING,
        );
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
                    mode: Mode::catching_up(target),
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
        let w = Watcher::new(
            &spec,
            1,
            Some(EventId::new(1, 5)),
            CancellationToken::new(),
            2,
            NO_RING,
        );
        w.inner.lock().unwrap().subs.insert(
            "b".into(),
            Sub {
                sub: b.clone(),
                mode: Mode::catching_up(Some(EventId::new(1, 5))),
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

    fn watcher_with(sub: Arc<Rec>, position: Option<EventId>) -> Watcher {
        let spec = StreamSpec {
            url: Url::parse("http://127.0.0.1:1/v1/sse").unwrap(),
            headers: Default::default(),
        };
        let w = Watcher::new(&spec, 1, position, CancellationToken::new(), 4, NO_RING);
        w.inner.lock().unwrap().subs.insert(
            sub.id.as_str().into(),
            Sub {
                sub,
                mode: Mode::Live,
            },
        );
        w
    }

    #[test]
    fn after_a_reset_a_cursor_at_the_old_position_no_longer_joins_live() {
        let a = Arc::new(Rec {
            id: "a".into(),
            got: Mutex::new(Vec::new()),
        });
        let w = watcher_with(a.clone(), Some(EventId::new(1, 2)));
        w.dispatch(&ev(3));
        let at_position = Some(EventId::new(1, 3));
        assert!(w.inner.lock().unwrap().joins_live(at_position));
        // The origin could not resume the watcher: what lay between is gone, and a handoff
        // at the old position must learn it from the origin rather than join live.
        w.dispatch(&Frame::Reset(Some(EventId::new(1, 9))));
        assert!(!w.inner.lock().unwrap().joins_live(at_position));
        assert!(w.inner.lock().unwrap().joins_live(None));
        // The next event sets the position again.
        w.dispatch(&ev(9));
        assert!(w.inner.lock().unwrap().joins_live(Some(EventId::new(1, 9))));
        assert!(!w.inner.lock().unwrap().joins_live(at_position));
        assert_eq!(*a.got.lock().unwrap(), vec![3, 9]);
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
        w.inner.lock().unwrap().subs.get_mut("b").unwrap().mode =
            Mode::catching_up(Some(EventId::new(1, 5)));
        w.dispatch(&ev(6));
        let big = Frame::Oversized {
            id: Some(EventId::new(1, 5)),
            limit: 10,
        };
        assert!(matches!(w.catch_up("b", &ev(4)), Flow::Continue));
        assert!(matches!(w.catch_up("b", &big), Flow::Done));
        assert_eq!(*b.got.lock().unwrap(), vec![4, 2005, 6]);
    }

    #[tokio::test]
    async fn a_lingering_watcher_closes_a_linger_after_it_last_became_idle() {
        let cfg = crate::settings::UpstreamSettings {
            idle_linger_secs: 10,
            max_idle_watchers: 1,
            ..Default::default()
        };
        let listen = "127.0.0.1:8090".parse().unwrap();
        let allow = Arc::new(crate::allow::OriginAllowList::parse(&[], listen).unwrap());
        let shutdown = CancellationToken::new();
        let ups = Upstreams::new(
            Connector::new(allow, cfg, None).unwrap(),
            4,
            shutdown.clone(),
        );
        let spec = |port: u16| StreamSpec {
            url: Url::parse(&format!("http://127.0.0.1:{port}/v1/sse")).unwrap(),
            headers: Default::default(),
        };
        let rec = |id: &str| {
            Arc::new(Rec {
                id: id.into(),
                got: Mutex::new(Vec::new()),
            })
        };
        let t0 = Instant::now();
        ups.join(&spec(1), rec("a"));
        ups.leave(&spec(1), "a");
        // A second leave of the same handoff changes nothing.
        ups.leave(&spec(1), "a");
        assert_eq!((ups.watcher_count(), ups.idle_count()), (1, 1));
        // Only one may linger: the next stream's watcher closes with its handoff.
        ups.join(&spec(2), rec("x"));
        ups.leave(&spec(2), "x");
        assert_eq!((ups.watcher_count(), ups.idle_count()), (1, 1));
        ups.reap(t0 + Duration::from_secs(5));
        assert_eq!(ups.watcher_count(), 1);
        // Busy again, then idle again later: its linger starts over.
        tokio::time::sleep(Duration::from_millis(200)).await;
        ups.join(&spec(1), rec("b"));
        assert_eq!(ups.idle_count(), 0);
        ups.leave(&spec(1), "b");
        ups.reap(t0 + Duration::from_millis(10_100));
        assert_eq!((ups.watcher_count(), ups.idle_count()), (1, 1));
        ups.reap(t0 + Duration::from_millis(10_300));
        assert_eq!((ups.watcher_count(), ups.idle_count()), (0, 0));
        // A reaper entry of a closed watcher is gone with it.
        assert!(ups.registry.lock().unwrap().reap.is_empty());
        shutdown.cancel();
    }
}
