//! The hub: fans the log's global feed out to live subscribers.
//!
//! One feed task per process reads the event log in id order ([`run_feed`]) and hands each batch
//! to [`Hub::dispatch`]. For every event the hub builds one shared [`Frame`] whose encodings (SSE
//! bytes, WebSocket/JSON bytes) are made **once**, by the first transport that needs them; it converts the event
//! for CEL **once**, evaluates each distinct filter **once**, and pushes a cheap [`Frame`] clone into
//! every matching subscriber's bounded queue with `try_send`. A full queue never blocks the feed:
//! that subscriber is removed, its connection is cut through its kick token, and
//! `ssepush_origin_slow_consumers_total` counts it. The client then resumes with `Last-Event-ID`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::channel::PatternSet;
use crate::event::{EventId, SharedEvent};
use crate::filter::{EventVars, Filter};
use crate::sse;
use crate::store::EventLog;

/// One event as delivered: the event and its encodings, shared by every subscriber.
///
/// Encodings are made lazily and at most once per frame: an event that only SSE clients receive
/// is never encoded as JSON, and vice versa, and the feed task never pays for either.
#[derive(Clone, Debug)]
pub struct Frame(Arc<FrameInner>);

#[derive(Debug)]
struct FrameInner {
    event: SharedEvent,
    sse: OnceLock<Bytes>,
    json: OnceLock<Bytes>,
}

impl Frame {
    pub fn new(event: SharedEvent) -> Self {
        Frame(Arc::new(FrameInner {
            event,
            sse: OnceLock::new(),
            json: OnceLock::new(),
        }))
    }

    pub fn id(&self) -> EventId {
        self.0.event.id
    }

    pub fn event(&self) -> &SharedEvent {
        &self.0.event
    }

    /// The SSE frame (`id:`, `event:`, `data:` envelope).
    pub fn sse(&self) -> &Bytes {
        self.0.sse.get_or_init(|| sse::encode_event(&self.0.event))
    }

    /// The event as a JSON object `{"id","channel","type","data","time"}` (WebSocket, poll).
    pub fn json(&self) -> &Bytes {
        self.0.json.get_or_init(|| {
            // Serialising a `serde_json::Value` tree cannot fail; `null` keeps the frame valid
            // JSON should that ever change.
            Bytes::from(serde_json::to_vec(&*self.0.event).unwrap_or_else(|_| b"null".to_vec()))
        })
    }
}

struct Sub {
    patterns: PatternSet,
    filter: Option<Filter>,
    tx: mpsc::Sender<Frame>,
    kick: CancellationToken,
}

#[derive(Default)]
struct Registry {
    subs: HashMap<u64, Sub>,
    /// Subscribers whose patterns are all literal, by channel: no pattern matching needed.
    exact: HashMap<String, Vec<u64>>,
    /// Subscribers with at least one wildcard pattern.
    wild: Vec<u64>,
    /// Filters by source, with their number of users: subscribers that give the same filter
    /// share one compiled program, so its verdict on an event is computed once.
    filters: HashMap<String, (Filter, usize)>,
}

impl Registry {
    fn intern(&mut self, filter: Filter) -> Filter {
        let entry = self
            .filters
            .entry(filter.source().to_owned())
            .or_insert((filter, 0));
        entry.1 += 1;
        entry.0.clone()
    }

    /// Drops one use of an interned filter.
    fn release(&mut self, f: &Filter) {
        if let Some(entry) = self.filters.get_mut(f.source()) {
            entry.1 -= 1;
            if entry.1 == 0 {
                self.filters.remove(f.source());
            }
        }
    }

    fn remove(&mut self, id: u64) -> Option<Sub> {
        let sub = self.subs.remove(&id)?;
        if let Some(f) = &sub.filter {
            self.release(f);
        }
        match sub.patterns.literals() {
            Some(names) => {
                for name in names {
                    if let Some(ids) = self.exact.get_mut(name) {
                        ids.retain(|x| *x != id);
                        if ids.is_empty() {
                            self.exact.remove(name);
                        }
                    }
                }
            }
            None => self.wild.retain(|x| *x != id),
        }
        Some(sub)
    }
}

/// The live-subscriber registry of one origin process.
#[derive(Default)]
pub struct Hub {
    registry: RwLock<Registry>,
    next_id: AtomicU64,
    /// Id of the newest event dispatched. Written at the end of each batch while the registry's
    /// read lock is held, so a holder of the write lock sees a batch boundary: every event up to
    /// it was routed with the registry as it was, every later one will see the change.
    dispatched: Mutex<EventId>,
}

/// A live subscription. Receives frames in id order; dropping it unsubscribes.
pub struct Subscription {
    id: u64,
    hub: Arc<Hub>,
    pub rx: mpsc::Receiver<Frame>,
    kick: CancellationToken,
}

impl Subscription {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Cancelled when the hub cut this subscriber off as a slow consumer.
    pub fn kicked(&self) -> &CancellationToken {
        &self.kick
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(self.id);
    }
}

impl Hub {
    pub fn new() -> Arc<Hub> {
        Arc::new(Hub::default())
    }

    /// Registers a subscriber with a queue of `capacity` frames. `kick` is cancelled if the
    /// subscriber falls behind, so whoever owns its connection can close it.
    pub fn subscribe(
        self: &Arc<Self>,
        patterns: PatternSet,
        filter: Option<Filter>,
        capacity: usize,
        kick: CancellationToken,
    ) -> Subscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let mut reg = self.write();
        let filter = filter.map(|f| reg.intern(f));
        match patterns.literals() {
            Some(names) => {
                for name in names {
                    reg.exact.entry(name.to_owned()).or_default().push(id);
                }
            }
            None => reg.wild.push(id),
        }
        reg.subs.insert(
            id,
            Sub {
                patterns,
                filter,
                tx,
                kick: kick.clone(),
            },
        );
        metrics::gauge!("ssepush_origin_subscribers").set(reg.subs.len() as f64);
        Subscription {
            id,
            hub: self.clone(),
            rx,
            kick,
        }
    }

    /// Replaces a live subscription's filter, atomically between two dispatched batches: events
    /// with ids up to the returned id were routed with the old filter, every later one is routed
    /// with the new one, so nothing falls between the two. `None` when the subscription is gone
    /// (dropped, or cut off as a slow consumer).
    pub fn set_filter(&self, id: u64, filter: Option<Filter>) -> Option<EventId> {
        let mut reg = self.write();
        if !reg.subs.contains_key(&id) {
            return None;
        }
        let filter = filter.map(|f| reg.intern(f));
        let old = reg
            .subs
            .get_mut(&id)
            .and_then(|sub| std::mem::replace(&mut sub.filter, filter));
        if let Some(old) = old {
            reg.release(&old);
        }
        let point = *self.dispatched.lock().unwrap_or_else(|p| p.into_inner());
        Some(point)
    }

    /// The newest event id dispatched so far (`EventId::ZERO` before the first).
    pub fn dispatched(&self) -> EventId {
        *self.dispatched.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unsubscribe(&self, id: u64) {
        let mut reg = self.write();
        reg.remove(id);
        metrics::gauge!("ssepush_origin_subscribers").set(reg.subs.len() as f64);
    }

    pub fn len(&self) -> usize {
        self.read().subs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.registry.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Delivers a batch, in order, to every matching subscriber without ever waiting on one.
    pub fn dispatch(&self, events: &[SharedEvent]) {
        let mut slow: Vec<u64> = Vec::new();
        let mut gone: Vec<u64> = Vec::new();
        let mut delivered = 0u64;
        // Publish → delivery, per event that reached a subscriber: its publish time (the id's
        // milliseconds) to now, when it sits in every matching subscriber's queue.
        let latency = metrics::histogram!("ssepush_origin_delivery_latency_seconds");
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        {
            let reg = self.read();
            for event in events {
                let delivered_before = delivered;
                let frame = Frame::new(event.clone());
                let mut vars: Option<EventVars> = None;
                // Verdicts by filter source: a filter shared by many subscribers runs once.
                let mut verdicts: Vec<(*const str, bool)> = Vec::new();
                let exact = reg.exact.get(event.channel.as_str()).map(Vec::as_slice);
                let candidates = exact.unwrap_or(&[]).iter().chain(reg.wild.iter());
                for id in candidates {
                    let Some(sub) = reg.subs.get(id) else {
                        continue;
                    };
                    if slow.contains(id) || gone.contains(id) {
                        continue;
                    }
                    if sub.patterns.literals().is_none() && !sub.patterns.matches(&event.channel) {
                        continue;
                    }
                    if let Some(filter) = &sub.filter {
                        let key: *const str = filter.source();
                        let verdict =
                            match verdicts.iter().find(|(k, _)| std::ptr::addr_eq(*k, key)) {
                                Some((_, v)) => *v,
                                None => {
                                    let vars = vars.get_or_insert_with(|| EventVars::new(event));
                                    let v = filter.matches(vars);
                                    verdicts.push((key, v));
                                    v
                                }
                            };
                        if !verdict {
                            continue;
                        }
                    }
                    match sub.tx.try_send(frame.clone()) {
                        Ok(()) => delivered += 1,
                        Err(mpsc::error::TrySendError::Full(_)) => slow.push(*id),
                        Err(mpsc::error::TrySendError::Closed(_)) => gone.push(*id),
                    }
                }
                if delivered > delivered_before {
                    latency.record(now_ms.saturating_sub(event.time) as f64 / 1000.0);
                }
            }
            if let Some(last) = events.last() {
                let mut d = self.dispatched.lock().unwrap_or_else(|p| p.into_inner());
                *d = (*d).max(last.id);
            }
        }
        metrics::counter!("ssepush_origin_deliveries_total").increment(delivered);
        if slow.is_empty() && gone.is_empty() {
            return;
        }
        let mut reg = self.write();
        for id in slow {
            if let Some(sub) = reg.remove(id) {
                tracing::info!(subscriber = id, "slow consumer: queue full, disconnecting");
                metrics::counter!("ssepush_origin_slow_consumers_total").increment(1);
                sub.kick.cancel();
            }
        }
        for id in gone {
            reg.remove(id);
        }
        metrics::gauge!("ssepush_origin_subscribers").set(reg.subs.len() as f64);
    }

    /// Cuts every subscriber off (they resume from the log with `Last-Event-ID`). Used when the
    /// feed lost its place, so nobody silently misses an event.
    pub fn kick_all(&self) {
        let mut reg = self.write();
        for (_, sub) in reg.subs.drain() {
            sub.kick.cancel();
        }
        reg.exact.clear();
        reg.wild.clear();
        reg.filters.clear();
    }
}

/// Reads the log's global feed and dispatches it until `shutdown`. Starts at the newest id:
/// subscribers read anything older from the log themselves.
pub async fn run_feed(log: Arc<dyn EventLog>, hub: Arc<Hub>, shutdown: CancellationToken) {
    const BATCH: usize = 512;
    const WAIT: Duration = Duration::from_secs(1);
    let mut cursor: Option<EventId> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let step = async {
            let after = match cursor {
                Some(c) => c,
                None => log.last_id().await?,
            };
            cursor = Some(after);
            log.tail(after, BATCH, WAIT).await
        };
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = step => r,
        };
        match result {
            Ok(Some(events)) => {
                backoff = Duration::from_millis(100);
                if let Some(last) = events.last() {
                    cursor = Some(last.id);
                    hub.dispatch(&events);
                }
            }
            Ok(None) => {
                // The head is read *before* the kick: whoever subscribes after the kick reads a
                // watermark at or past it, so the feed, continuing from it, misses nobody's
                // events. (Read after the kick, a subscriber in between could fall in the gap.)
                let head = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = log.last_id() => r,
                };
                match head {
                    Ok(head) => {
                        tracing::error!(
                            %head,
                            "hub lost its place in the store's feed (fell behind, or the log's \
                             history was lost); disconnecting subscribers so they resume"
                        );
                        metrics::counter!("ssepush_origin_feed_gaps_total").increment(1);
                        hub.kick_all();
                        cursor = Some(head);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "feed lost its place and the head read failed; retrying");
                        cursor = None;
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "feed read failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    fn ev(seq: u64, channel: &str, data: serde_json::Value) -> SharedEvent {
        Arc::new(Event {
            id: EventId::new(1, seq),
            channel: channel.into(),
            kind: "message".into(),
            data,
            time: 1,
        })
    }

    fn pats(p: &[&str]) -> PatternSet {
        PatternSet::parse_all(p.iter().copied()).unwrap()
    }

    #[test]
    fn routes_by_pattern_and_filter_and_shares_the_encoding() {
        let hub = Hub::new();
        let mut exact = hub.subscribe(pats(&["a.x"]), None, 8, CancellationToken::new());
        let mut wild = hub.subscribe(pats(&["a.*", "a.x"]), None, 8, CancellationToken::new());
        let filter = || Some(Filter::compile("data.n > 1").unwrap());
        let mut filtered = hub.subscribe(pats(&[">"]), filter(), 8, CancellationToken::new());
        let _twin = hub.subscribe(pats(&["b"]), filter(), 8, CancellationToken::new());
        assert_eq!(hub.read().filters.len(), 1, "equal filters are interned");
        hub.dispatch(&[
            ev(1, "a.x", serde_json::json!({"n": 1})),
            ev(2, "a.y", serde_json::json!({"n": 2})),
            ev(3, "b", serde_json::json!({"n": 3})),
        ]);
        let ids = |s: &mut Subscription| {
            let mut v = vec![];
            while let Ok(f) = s.rx.try_recv() {
                v.push(f.id().seq);
            }
            v
        };
        let first = exact.rx.try_recv().unwrap();
        assert_eq!(first.id().seq, 1);
        assert_eq!(ids(&mut exact), Vec::<u64>::new());
        // A subscriber whose patterns overlap still gets each event once.
        let w1 = wild.rx.try_recv().unwrap();
        assert!(
            Arc::ptr_eq(&w1.0, &first.0),
            "frames are shared, not re-encoded"
        );
        assert_eq!(ids(&mut wild), vec![2]);
        assert_eq!(ids(&mut filtered), vec![2, 3]);
    }

    #[test]
    fn a_filter_change_applies_from_the_next_batch_and_is_interned() {
        let hub = Hub::new();
        let f = |src: &str| Some(Filter::compile(src).unwrap());
        let mut sub = hub.subscribe(pats(&["a"]), f("data.n < 2"), 16, CancellationToken::new());
        let _other = hub.subscribe(pats(&["a"]), f("data.n >= 2"), 16, CancellationToken::new());
        hub.dispatch(&[
            ev(1, "a", serde_json::json!({"n": 1})),
            ev(2, "a", serde_json::json!({"n": 2})),
        ]);
        let point = hub.set_filter(sub.id(), f("data.n >= 2")).unwrap();
        assert_eq!(
            point,
            EventId::new(1, 2),
            "the switch point is the last dispatched id"
        );
        assert_eq!(
            hub.read().filters.len(),
            1,
            "the old filter was released, the new one shared"
        );
        assert_eq!(hub.read().filters["data.n >= 2"].1, 2);
        hub.dispatch(&[
            ev(3, "a", serde_json::json!({"n": 1})),
            ev(4, "a", serde_json::json!({"n": 3})),
        ]);
        let mut got = vec![];
        while let Ok(fr) = sub.rx.try_recv() {
            got.push(fr.id().seq);
        }
        assert_eq!(got, vec![1, 4]);
        assert_eq!(hub.set_filter(sub.id(), None), Some(EventId::new(1, 4)));
        assert_eq!(hub.read().filters["data.n >= 2"].1, 1);
        assert_eq!(
            hub.set_filter(9999, None),
            None,
            "unknown subscriptions are reported"
        );
        let json: serde_json::Value =
            serde_json::from_slice(Frame::new(ev(5, "a", serde_json::json!({"n": 1}))).json())
                .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"id": "1-5", "channel": "a", "type": "message", "data": {"n": 1}, "time": 1})
        );
    }

    #[test]
    fn a_full_queue_kicks_only_that_subscriber() {
        let hub = Hub::new();
        let slow_kick = CancellationToken::new();
        let slow = hub.subscribe(pats(&["a"]), None, 2, slow_kick.clone());
        let mut fast = hub.subscribe(pats(&["a"]), None, 100, CancellationToken::new());
        for seq in 0..10 {
            hub.dispatch(&[ev(seq, "a", serde_json::Value::Null)]);
            while fast.rx.try_recv().is_ok() {}
        }
        assert!(slow_kick.is_cancelled());
        assert_eq!(hub.len(), 1);
        drop(slow);
        drop(fast);
        assert!(hub.is_empty());
    }
}
