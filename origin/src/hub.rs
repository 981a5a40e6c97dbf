//! The hub: fans the log's global feed out to live subscribers.
//!
//! One feed task per process reads the event log in id order ([`run_feed`]) and hands each batch
//! to [`Hub::dispatch`]. For every event the hub builds one shared [`Frame`] whose encodings (SSE
//! bytes, WebSocket/JSON bytes) are made **once**, by the first transport that needs them, and
//! pushes a cheap [`Frame`] clone into the bounded queue of every subscriber whose channel
//! patterns match, with `try_send`.
//!
//! **Filters are not the hub's business.** A client's CEL filter can cost milliseconds (within
//! its budget, see [`crate::filter`]); judged here it would run on the one feed task, under the
//! registry lock, and delay every other subscriber and every subscribe (issue 12 §2). Each
//! subscriber judges the frames it receives on its own task
//! ([`subscribe`](crate::server::subscribe)); the frame carries the event converted for CEL
//! (made **once**) and the verdicts given so far by filter source, so a filter shared by many
//! subscribers still runs once per event. A full queue never blocks the feed:
//! that subscriber is removed, its connection is cut through its kick token, and
//! `ssepush_origin_slow_consumers_total` counts it. The client then resumes with `Last-Event-ID`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use bytes::Bytes;
use indexmap::IndexSet;
use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};
use tokio_util::sync::CancellationToken;

use crate::channel::PatternSet;
use crate::event::{EventId, SharedEvent};
use crate::filter::{EventVars, Filter, Verdict};
use crate::sse;
use crate::store::EventLog;

/// One event as delivered: the event and its encodings, shared by every subscriber.
///
/// Encodings are made lazily and at most once per frame: an event that only SSE clients receive
/// is never encoded as JSON, and vice versa, and the feed task never pays for either.
#[derive(Clone, Debug)]
pub struct Frame(Arc<FrameInner>);

struct FrameInner {
    event: SharedEvent,
    sse: OnceLock<Bytes>,
    json: OnceLock<Bytes>,
    /// The event as CEL values, made by the first subscriber with a filter.
    vars: OnceLock<EventVars>,
    /// Verdicts by filter source: subscribers giving the same filter share one evaluation.
    /// Empty (no allocation) for frames nobody filters.
    verdicts: Mutex<HashMap<Arc<str>, Verdict>>,
}

impl std::fmt::Debug for FrameInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame").field("event", &self.event).finish()
    }
}

impl Frame {
    pub fn new(event: SharedEvent) -> Self {
        Frame(Arc::new(FrameInner {
            event,
            sse: OnceLock::new(),
            json: OnceLock::new(),
            vars: OnceLock::new(),
            verdicts: Mutex::new(HashMap::new()),
        }))
    }

    /// This filter's verdict on this frame's event, evaluated (within the filter's budget) by
    /// the first subscriber that asks and remembered for the others giving the same source.
    /// Called on the subscriber's own task, never the feed's, and under no shared lock: the
    /// verdict map is only locked to look up and to record.
    pub fn judge(&self, filter: &Filter) -> Verdict {
        let verdicts = || self.0.verdicts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = verdicts().get(filter.source()) {
            return *v;
        }
        let vars = self.0.vars.get_or_init(|| EventVars::new(&self.0.event));
        let v = filter.evaluate(vars);
        verdicts().insert(filter.source_arc(), v);
        v
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

/// A subscriber's bounded frame queue, the hub on one end and the subscriber on the other.
///
/// One small allocation (≈100 bytes, and the frames while any are queued) instead of a tokio
/// `mpsc` channel, whose cache-padded halves and first block, allocated up front, came to about
/// 1 KiB per subscriber: most of an idle SSE connection's memory after hyper's buffers (issue
/// 11). A lock, not lock-free: the feed and one subscriber are the only parties, and each holds
/// it for a push or a pop.
struct QueueShared {
    state: Mutex<QueueState>,
}

struct QueueState {
    frames: VecDeque<Frame>,
    capacity: usize,
    waker: Option<Waker>,
    /// Set when the hub dropped its end, with why.
    ended: Option<Ended>,
    /// The subscriber wants keep-alive pings ([`Queue::want_pings`]).
    pings: bool,
    /// A keep-alive period passed ([`Hub::ping`]) since the subscriber last took a ping.
    ping_due: bool,
    /// The subscriber dropped its end.
    receiver_gone: bool,
    /// Id of the newest frame put in this queue (`EventId::ZERO` before the first): kept here,
    /// under the lock the push takes anyway, rather than in the registry entry (smaller entries
    /// make a smaller registry table, which at 15,000 subscribers is ~2 buckets each).
    last_queued: EventId,
}

fn queue(capacity: usize) -> (QueueTx, Queue) {
    let shared = Arc::new(QueueShared {
        state: Mutex::new(QueueState {
            frames: VecDeque::new(),
            capacity,
            waker: None,
            ended: None,
            pings: false,
            ping_due: false,
            receiver_gone: false,
            last_queued: EventId::ZERO,
        }),
    });
    (QueueTx(shared.clone()), Queue(shared))
}

impl QueueShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Why a frame could not be queued.
enum SendError {
    Full,
    Closed,
}

/// The hub's end of a subscriber's queue.
struct QueueTx(Arc<QueueShared>);

impl QueueTx {
    fn try_send(&self, frame: Frame) -> Result<(), SendError> {
        let waker = {
            let mut st = self.0.lock();
            if st.receiver_gone {
                return Err(SendError::Closed);
            }
            if st.frames.len() >= st.capacity {
                return Err(SendError::Full);
            }
            st.last_queued = frame.id();
            st.frames.push_back(frame);
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }
}

impl QueueTx {
    /// Marks a keep-alive period on a queue that wants pings, waking its subscriber.
    fn ping(&self) {
        let waker = {
            let mut st = self.0.lock();
            if !st.pings || st.ping_due {
                return;
            }
            st.ping_due = true;
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Ends the queue for `why` (the subscriber sees it at once: queued frames are dropped).
    fn end(self, why: Ended) {
        self.0.lock().ended = Some(why);
    }
}

impl Drop for QueueTx {
    fn drop(&mut self) {
        let waker = {
            let mut st = self.0.lock();
            st.ended.get_or_insert(Ended::Removed);
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// What a subscriber's queue gives ([`Queue::poll_next`]).
#[derive(Debug, Clone)]
pub enum Next {
    Frame(Frame),
    /// A keep-alive period passed with nothing queued (only for a queue that
    /// [wants pings](Queue::want_pings)).
    Ping,
}

/// Why a subscriber's queue ended ([`Queue::poll_next`]).
///
/// The queue itself says why, so a subscriber waiting for frames needs no other watch (a
/// cancellation future each for the server's shutdown and its kick, registered and dropped on
/// every wait: two locks each, one of them on the token every subscriber shares).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The hub removed the subscriber; every frame queued before was taken first.
    Removed,
    /// Cut off as a slow consumer (or because the feed lost its place): at once.
    Kicked,
    /// The server is draining ([`Hub::shutdown`]): at once.
    Shutdown,
}

/// The queue had nothing to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Empty;

/// A subscriber's end of its queue: frames in id order; `None` from [`recv`](Queue::recv) once
/// the hub removed the subscriber and every queued frame was taken.
pub struct Queue(Arc<QueueShared>);

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("len", &self.0.lock().frames.len())
            .finish()
    }
}

impl Queue {
    /// The next frame, waiting for one; `None` once the queue ended ([`Queue::poll_next`]).
    /// Cancel-safe: a frame is only taken when returned.
    pub async fn recv(&mut self) -> Option<Frame> {
        std::future::poll_fn(|cx| {
            loop {
                return match self.poll_next(cx) {
                    Poll::Ready(Ok(Next::Frame(f))) => Poll::Ready(Some(f)),
                    Poll::Ready(Ok(Next::Ping)) => continue,
                    Poll::Ready(Err(_)) => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                };
            }
        })
        .await
    }

    /// From now on, [`poll_next`](Queue::poll_next) also gives a [`Next::Ping`] when a
    /// keep-alive period ([`Hub::ping`]) passed and no frame is queued: the stream's keep-alive,
    /// without a timer or a waiter of its own.
    pub fn want_pings(&mut self) {
        self.0.lock().pings = true;
    }

    /// The next frame if one is queued.
    pub fn try_recv(&mut self) -> Result<Frame, Empty> {
        let mut st = self.0.lock();
        Self::pop(&mut st).ok_or(Empty)
    }

    /// The next frame (or a due ping), or why the queue ended: a kick or a shutdown at once,
    /// a removal once the frames queued before it were taken.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Next, Ended>> {
        let mut st = self.0.lock();
        if let Some(why @ (Ended::Kicked | Ended::Shutdown)) = st.ended {
            return Poll::Ready(Err(why));
        }
        if let Some(frame) = Self::pop(&mut st) {
            // A frame is traffic enough for this period.
            st.ping_due = false;
            return Poll::Ready(Ok(Next::Frame(frame)));
        }
        if let Some(why) = st.ended {
            return Poll::Ready(Err(why));
        }
        if st.ping_due {
            st.ping_due = false;
            return Poll::Ready(Ok(Next::Ping));
        }
        match &st.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => st.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    fn pop(st: &mut QueueState) -> Option<Frame> {
        let frame = st.frames.pop_front()?;
        // A burst grew the buffer: give it back once drained, so an idle subscriber holds none.
        if st.frames.is_empty() && st.frames.capacity() > 16 {
            st.frames = VecDeque::new();
        }
        Some(frame)
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.receiver_gone = true;
        st.frames.clear();
    }
}

/// A registry entry: kept small (three words and a fat pointer), as the registry's table holds
/// about two buckets of it per subscriber.
struct Sub {
    patterns: PatternSet,
    tx: QueueTx,
    kick: CancellationToken,
}

#[derive(Default)]
struct Registry {
    /// [`Hub::shutdown`] was called: new subscribers get an ended queue.
    shut_down: bool,
    subs: HashMap<u64, Sub>,
    /// Subscribers whose patterns are all literal, by channel: no pattern matching needed.
    /// Sets, not lists: a subscriber leaves in O(1) (with a list, closing N subscribers of one
    /// channel scanned it N times under the write lock), and they iterate like a list.
    exact: HashMap<String, IndexSet<u64>>,
    /// Subscribers with at least one wildcard pattern.
    wild: IndexSet<u64>,
}

impl Registry {
    fn remove(&mut self, id: u64) -> Option<Sub> {
        let sub = self.subs.remove(&id)?;
        match sub.patterns.literals() {
            Some(names) => {
                for name in names {
                    if let Some(ids) = self.exact.get_mut(name) {
                        ids.swap_remove(&id);
                        if ids.is_empty() {
                            self.exact.remove(name);
                        }
                    }
                }
            }
            None => {
                self.wild.swap_remove(&id);
            }
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

/// Where a filter change falls in a subscriber's stream ([`Hub::switch_point`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwitchPoint {
    /// The newest event dispatched: every later event is judged by the new filter.
    pub point: EventId,
    /// The newest frame already in the subscriber's queue: no frame still to be judged is newer.
    pub last_queued: EventId,
}

/// A live subscription. Receives frames in id order (every event on its channels: the
/// subscriber judges its filter itself, with [`Frame::judge`]); dropping it unsubscribes.
pub struct Subscription {
    id: u64,
    hub: Arc<Hub>,
    pub rx: Queue,
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
        capacity: usize,
        kick: CancellationToken,
    ) -> Subscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = queue(capacity.max(1));
        let mut reg = self.write();
        if reg.shut_down {
            tx.end(Ended::Shutdown);
            return Subscription {
                id,
                hub: self.clone(),
                rx,
                kick,
            };
        }
        match patterns.literals() {
            Some(names) => {
                for name in names {
                    reg.exact.entry(name.to_owned()).or_default().insert(id);
                }
            }
            None => {
                reg.wild.insert(id);
            }
        }
        reg.subs.insert(
            id,
            Sub {
                patterns,
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

    /// Where a filter change made now falls, taken between two dispatched batches: events with
    /// ids up to `point` were dispatched already, every later one is not yet. `None` when the
    /// subscription is gone (dropped, or cut off as a slow consumer).
    pub fn switch_point(&self, id: u64) -> Option<SwitchPoint> {
        let reg = self.write();
        let sub = reg.subs.get(&id)?;
        // Written by the feed under the registry's read lock: under the write lock, stable.
        let last_queued = sub.tx.0.lock().last_queued;
        let point = *self.dispatched.lock().unwrap_or_else(|p| p.into_inner());
        Some(SwitchPoint { point, last_queued })
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
                let exact = reg.exact.get(event.channel.as_str());
                // Literal subscribers are listed under the channel itself: no matching needed
                // (and none of `literals()`'s allocation per delivery).
                let candidates = exact
                    .into_iter()
                    .flatten()
                    .map(|id| (id, false))
                    .chain(reg.wild.iter().map(|id| (id, true)));
                for (id, wild) in candidates {
                    let Some(sub) = reg.subs.get(id) else {
                        continue;
                    };
                    if wild && !sub.patterns.matches(&event.channel) {
                        continue;
                    }
                    if (!slow.is_empty() || !gone.is_empty())
                        && (slow.contains(id) || gone.contains(id))
                    {
                        continue;
                    }
                    match sub.tx.try_send(frame.clone()) {
                        Ok(()) => delivered += 1,
                        Err(SendError::Full) => slow.push(*id),
                        Err(SendError::Closed) => gone.push(*id),
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
                sub.tx.end(Ended::Kicked);
            }
        }
        for id in gone {
            reg.remove(id);
        }
        metrics::gauge!("ssepush_origin_subscribers").set(reg.subs.len() as f64);
    }

    /// A keep-alive period passed for slice `slice` of `slices` (subscribers by id modulo
    /// `slices`): each of their queues that wants pings gives one when next empty.
    pub fn ping(&self, slice: u64, slices: u64) {
        let slices = slices.max(1);
        let reg = self.read();
        for (id, sub) in &reg.subs {
            if id % slices == slice % slices {
                sub.tx.ping();
            }
        }
    }

    /// Cuts every subscriber off (they resume from the log with `Last-Event-ID`). Used when the
    /// feed lost its place, so nobody silently misses an event.
    pub fn kick_all(&self) {
        self.end_all(Ended::Kicked);
    }

    /// Ends every subscription with [`Ended::Shutdown`], and every later one at once: the
    /// server is draining. Their connections stay open (each stream ends in its own way).
    pub fn shutdown(&self) {
        self.end_all(Ended::Shutdown);
    }

    fn end_all(&self, why: Ended) {
        let mut reg = self.write();
        if why == Ended::Shutdown {
            reg.shut_down = true;
        }
        for (_, sub) in reg.subs.drain() {
            if why == Ended::Kicked {
                sub.kick.cancel();
            }
            sub.tx.end(why);
        }
        reg.exact.clear();
        reg.wild.clear();
        metrics::gauge!("ssepush_origin_subscribers").set(0.0);
    }
}

/// Slices of subscribers [`run_keep_alive`] pings in turn.
const PING_SLICES: u64 = 16;

/// Pings every subscriber that wants it ([`Hub::ping`]) once per `period` until `shutdown`:
/// one timer for the process instead of one per stream (a boxed timer entry and an interval
/// in every idle SSE connection's state, issue 11). The subscribers are pinged a sixteenth at
/// a time, every sixteenth of the period: all at once, 5,000 streams' keep-alive writes (and
/// their readers' wake-ups) came in one burst that delayed the events around it (p99
/// publish→receive 133–157 ms against 65 ms without keep-alives, 5,000 × 40/s).
pub async fn run_keep_alive(hub: Arc<Hub>, period: Duration, shutdown: CancellationToken) {
    let step = (period / PING_SLICES as u32).max(Duration::from_millis(1));
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + step, step);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut slice = 0u64;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {
                hub.ping(slice, PING_SLICES);
                slice = (slice + 1) % PING_SLICES;
            }
        }
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
    fn routes_by_pattern_and_shares_the_encoding_and_the_verdicts() {
        let hub = Hub::new();
        let mut exact = hub.subscribe(pats(&["a.x"]), 8, CancellationToken::new());
        let mut wild = hub.subscribe(pats(&["a.*", "a.x"]), 8, CancellationToken::new());
        let mut all = hub.subscribe(pats(&[">"]), 8, CancellationToken::new());
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
        // The hub does not filter: the subscriber judges each frame, and verdicts are shared.
        let mut frames = vec![];
        while let Ok(f) = all.rx.try_recv() {
            frames.push(f);
        }
        assert_eq!(frames.len(), 3);
        let f1 = Filter::compile("data.n > 1").unwrap();
        let f2 = Filter::compile("data.n > 1").unwrap();
        let got: Vec<Verdict> = frames.iter().map(|f| f.judge(&f1)).collect();
        assert_eq!(got, [Verdict::NoMatch, Verdict::Match, Verdict::Match]);
        assert_eq!(frames[1].judge(&f2), Verdict::Match);
        assert_eq!(
            frames[1].0.verdicts.lock().unwrap().len(),
            1,
            "equal sources share one evaluation"
        );
    }

    #[test]
    fn the_switch_point_is_a_batch_boundary_and_knows_the_queue() {
        let hub = Hub::new();
        let mut sub = hub.subscribe(pats(&["a"]), 16, CancellationToken::new());
        let _other = hub.subscribe(pats(&["b"]), 16, CancellationToken::new());
        assert_eq!(
            hub.switch_point(sub.id()),
            Some(SwitchPoint {
                point: EventId::ZERO,
                last_queued: EventId::ZERO
            })
        );
        hub.dispatch(&[
            ev(1, "a", serde_json::json!({"n": 1})),
            ev(2, "b", serde_json::json!({"n": 2})),
        ]);
        assert_eq!(
            hub.switch_point(sub.id()),
            Some(SwitchPoint {
                point: EventId::new(1, 2),
                last_queued: EventId::new(1, 1)
            })
        );
        assert_eq!(sub.rx.try_recv().unwrap().id().seq, 1);
        assert_eq!(
            hub.switch_point(9999),
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

    fn poll(sub: &mut Subscription) -> Poll<Result<u64, Ended>> {
        let mut cx = Context::from_waker(Waker::noop());
        sub.rx.poll_next(&mut cx).map_ok(|n| match n {
            Next::Frame(f) => f.id().seq,
            Next::Ping => 0,
        })
    }

    #[test]
    fn pings_go_to_idle_queues_that_want_them() {
        let hub = Hub::new();
        let mut pinged = hub.subscribe(pats(&["a"]), 8, CancellationToken::new());
        pinged.rx.want_pings();
        let mut plain = hub.subscribe(pats(&["a"]), 8, CancellationToken::new());
        assert_eq!(pinged.id() % 2, 0, "ids start at 0");
        hub.ping(1, 2);
        assert_eq!(poll(&mut pinged), Poll::Pending, "another slice");
        hub.ping(0, 2);
        hub.ping(0, 2);
        assert_eq!(poll(&mut pinged), Poll::Ready(Ok(0)), "a ping");
        assert_eq!(poll(&mut pinged), Poll::Pending, "one per period");
        assert_eq!(poll(&mut plain), Poll::Pending, "not asked for");
        // Frames come before a ping, and stand for it.
        hub.ping(0, 1);
        hub.dispatch(&[ev(1, "a", serde_json::Value::Null)]);
        assert_eq!(poll(&mut pinged), Poll::Ready(Ok(1)));
        assert_eq!(poll(&mut pinged), Poll::Pending);
        assert_eq!(poll(&mut plain), Poll::Ready(Ok(1)));
    }

    #[test]
    fn the_queue_says_why_it_ended() {
        let hub = Hub::new();
        let kick = CancellationToken::new();
        let mut slow = hub.subscribe(pats(&["a"]), 1, kick.clone());
        let mut other = hub.subscribe(pats(&["a"]), 8, CancellationToken::new());
        hub.dispatch(&[ev(1, "a", serde_json::Value::Null)]);
        hub.dispatch(&[ev(2, "a", serde_json::Value::Null)]);
        // A kick ends the queue at once, queued frame or not, and cancels the token.
        assert!(kick.is_cancelled());
        assert_eq!(poll(&mut slow), Poll::Ready(Err(Ended::Kicked)));
        assert_eq!(poll(&mut other), Poll::Ready(Ok(1)));
        assert_eq!(poll(&mut other), Poll::Ready(Ok(2)));
        assert_eq!(poll(&mut other), Poll::Pending);
        // Shutdown ends every queue at once, and every later one.
        hub.dispatch(&[ev(3, "a", serde_json::Value::Null)]);
        hub.shutdown();
        assert_eq!(poll(&mut other), Poll::Ready(Err(Ended::Shutdown)));
        let mut late = hub.subscribe(pats(&["a"]), 8, CancellationToken::new());
        assert_eq!(poll(&mut late), Poll::Ready(Err(Ended::Shutdown)));
        assert!(hub.is_empty());
    }

    #[test]
    fn a_removed_queue_gives_its_frames_first() {
        let hub = Hub::new();
        let mut sub = hub.subscribe(pats(&["a"]), 8, CancellationToken::new());
        hub.dispatch(&[ev(1, "a", serde_json::Value::Null)]);
        // What the hub does when it removes a subscriber: its end of the queue goes.
        hub.write().remove(sub.id());
        assert_eq!(poll(&mut sub), Poll::Ready(Ok(1)));
        assert_eq!(poll(&mut sub), Poll::Ready(Err(Ended::Removed)));
    }

    #[test]
    fn a_full_queue_kicks_only_that_subscriber() {
        let hub = Hub::new();
        let slow_kick = CancellationToken::new();
        let slow = hub.subscribe(pats(&["a"]), 2, slow_kick.clone());
        let mut fast = hub.subscribe(pats(&["a"]), 100, CancellationToken::new());
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
