//! **Shared watchers**: handoffs of the same stream (same URL, same headers — keyed by a
//! SHA-256 of both) share **one upstream connection per node**.
//!
//! A [`Watcher`] owns the connection (a [`crate::connector`] read loop) and fans every event
//! out to its subscribers. A handoff whose cursor is at or past the watcher's position joins at
//! once (it ignores ids it already has); one whose cursor is behind reads the gap over a
//! short-lived private connection while the watcher's live events for it are held, then joins:
//! exact, no loss, no duplicates. Every event is decoded once and shared as an `Arc`; every CEL
//! filter is evaluated once per event per distinct source ([`Verdicts`]). An id-only block
//! moves the watcher's position like an event does, so a handoff at the origin's head joins
//! live. An oversized event is a gap through its id for every subscriber.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};

use ssepush_origin::event::{EventId, SharedEvent};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::allow::origin_of;
use crate::connector::{Connector, Flow, Frame, oversized_reason, read_loop};
use crate::handoff::StreamSpec;
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

    /// Joins subscribers that share `cursor`: live when the watcher has not passed it, else
    /// through one private catch-up reader from it.
    fn join_group(
        &self,
        spec: &StreamSpec,
        cursor: Option<EventId>,
        subs: Vec<Arc<dyn Subscriber>>,
    ) {
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
        let mut ids = Vec::new();
        for sub in &subs {
            let id = sub.key();
            let mode = if live {
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
        if !live {
            self.spawn_catch_up(watcher.clone(), ids, cursor, subs);
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
            sub.id.as_str().into(),
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
}
