//! The in-memory event log: the default store, one process, nothing to install.
//!
//! One mutex guards everything, and no call holds it for more than a bounded amount of work: an
//! append touches what it changes, a history read examines at most [`READ_SCAN`] entries, a
//! gap check at most [`GAP_SCAN`] channels per hold. So one client replaying a wide history never
//! stalls publishers. The lock is never held across an `.await`.
//!
//! What it holds:
//! * per channel, its retained events in id order and the newest id retention dropped;
//! * `index`: every retained event by id, the global order a wildcard read walks instead of
//!   visiting every channel per batch;
//! * `drops`: `(newest dropped id, channel)` for each channel retention dropped from, in id order,
//!   so a gap check looks only at channels that lost something newer than the cursor;
//! * `feed`: the newest [`FEED_CAPACITY`] events (retained or not) for the hub. Waiters on it are
//!   woken through a `watch` channel carrying the newest id, which cannot miss a wake-up between
//!   check and wait;
//! * byte counts ([`super::event_bytes`]) per channel, of everything retained, and of the feed,
//!   so memory is bounded by bytes as well as counts: a channel over its `max_bytes` drops its
//!   oldest events, the log over `max_total_bytes` drops the oldest events of any channel (both
//!   recorded as retention drops, so readers get a reset), and the feed keeps at most
//!   `max_total_bytes` too.
//!
//! Its epoch is drawn at random when the log is made: a new process has a new history, so a
//! cursor from before a restart is recognised as such.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use super::{Appended, EventLog, Limits, LogError, Once, ReadResult, Reset, Retention};
use crate::channel::PatternSet;
use crate::clock::now_ms;
use crate::event::{EventId, NewEvent, SharedEvent, new_epoch};

/// Events the global feed keeps for the hub to catch up after a stall.
const FEED_CAPACITY: usize = 65_536;
/// Idempotency keys held at once; past it the oldest goes first (its retry is then stored
/// again, as without a key).
pub const ONCE_CAPACITY: usize = 100_000;
/// Index entries one wildcard read examines (under the lock) before it returns what it has.
pub const READ_SCAN: usize = 2048;
/// Channels with drops one gap check examines per lock hold.
pub const GAP_SCAN: usize = 1024;
/// Up to this many channels, a wildcard read merges the matching channels directly instead of
/// walking the index (cheaper when the log is small).
const SMALL_LOG: usize = 64;

struct ChannelLog {
    name: Arc<str>,
    events: VecDeque<SharedEvent>,
    /// Newest id retention dropped from this channel.
    max_deleted: Option<EventId>,
    /// Bytes of `events` ([`super::event_bytes`]).
    bytes: u64,
}

fn size_of(e: &SharedEvent) -> u64 {
    super::event_bytes(&e.channel, &e.kind, &e.data)
}

impl ChannelLog {
    /// Index of the first event with id > `after`.
    fn position_after(&self, after: EventId) -> usize {
        self.events.partition_point(|e| e.id <= after)
    }
}

struct Inner {
    last: EventId,
    channels: HashMap<Arc<str>, ChannelLog>,
    index: BTreeMap<EventId, SharedEvent>,
    drops: BTreeSet<(EventId, Arc<str>)>,
    feed: VecDeque<SharedEvent>,
    feed_dropped: EventId,
    /// Bytes of every retained event (the sum of the channels' `bytes`).
    bytes: u64,
    /// Bytes of `feed`.
    feed_bytes: u64,
    /// Idempotency keys → (fingerprint, answer ids, expiry in Unix ms).
    once: HashMap<String, (String, Vec<EventId>, u64)>,
    /// The keys of `once` in the order they expire (one TTL for all, so insertion order).
    once_order: VecDeque<(u64, String)>,
}

impl Inner {
    /// Forgets expired idempotency keys, and the oldest beyond [`ONCE_CAPACITY`].
    fn expire_once(&mut self, now: u64) {
        while let Some((at, _)) = self.once_order.front() {
            if *at > now && self.once_order.len() < ONCE_CAPACITY {
                break;
            }
            if let Some((at, key)) = self.once_order.pop_front()
                && self.once.get(&key).is_some_and(|e| e.2 == at)
            {
                self.once.remove(&key);
            }
        }
    }
}

pub struct MemoryLog {
    inner: Mutex<Inner>,
    retention: Retention,
    epoch: u32,
    newest: watch::Sender<EventId>,
}

/// Applies `limits` to one channel, keeping the index and the drop index in step; returns the
/// bytes it freed.
fn trim(
    limits: Limits,
    log: &mut ChannelLog,
    index: &mut BTreeMap<EventId, SharedEvent>,
    drops: &mut BTreeSet<(EventId, Arc<str>)>,
    now: u64,
) -> u64 {
    let before = log.max_deleted;
    let mut freed = 0;
    let mut drop_front = |log: &mut ChannelLog| {
        if let Some(e) = log.events.pop_front() {
            index.remove(&e.id);
            log.max_deleted = Some(e.id);
            let size = size_of(&e);
            log.bytes -= size;
            freed += size;
        }
    };
    while log.events.len() as u64 > limits.max_events {
        drop_front(log);
    }
    while log.bytes > limits.max_bytes && !log.events.is_empty() {
        drop_front(log);
    }
    if let Some(age) = limits.max_age {
        let cutoff = now.saturating_sub(age.as_millis() as u64);
        while log.events.front().is_some_and(|e| e.time < cutoff) {
            drop_front(log);
        }
    }
    note_drop(log, before, drops);
    freed
}

/// Keeps the drop index in step with a channel whose newest dropped id moved from `before`.
fn note_drop(log: &ChannelLog, before: Option<EventId>, drops: &mut BTreeSet<(EventId, Arc<str>)>) {
    if log.max_deleted != before {
        if let Some(b) = before {
            drops.remove(&(b, log.name.clone()));
        }
        if let Some(d) = log.max_deleted {
            drops.insert((d, log.name.clone()));
        }
    }
}

/// Widens a reset by one more channel that lost events and still holds `oldest` (if anything).
fn widen(reset: Option<Reset>, oldest: Option<EventId>) -> Reset {
    let prev = reset.and_then(|r| r.oldest);
    Reset {
        oldest: match (prev, oldest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        },
    }
}

/// Merges the history of a few channels in id order.
fn merge(logs: &[&ChannelLog], after: EventId, upto: EventId, limit: usize) -> ReadResult {
    let mut heap = BinaryHeap::with_capacity(logs.len());
    let push = |heap: &mut BinaryHeap<_>, i: usize, pos: usize| {
        if let Some(e) = logs[i].events.get(pos)
            && e.id <= upto
        {
            heap.push(Reverse((e.id, i, pos)));
        }
    };
    for (i, log) in logs.iter().enumerate() {
        push(&mut heap, i, log.position_after(after));
    }
    let mut events = Vec::new();
    while let Some(Reverse((id, i, pos))) = heap.pop() {
        events.push(logs[i].events[pos].clone());
        push(&mut heap, i, pos + 1);
        if events.len() >= limit && !heap.is_empty() {
            return ReadResult { events, next: id };
        }
    }
    ReadResult { events, next: upto }
}

/// Walks the global index from `after`, keeping what `patterns` match, for at most
/// [`READ_SCAN`] entries.
fn scan(
    index: &BTreeMap<EventId, SharedEvent>,
    patterns: &PatternSet,
    after: EventId,
    upto: EventId,
    limit: usize,
) -> ReadResult {
    let mut events = Vec::new();
    let mut last = after;
    for (n, (id, e)) in index
        .range((Bound::Excluded(after), Bound::Included(upto)))
        .enumerate()
    {
        if n == READ_SCAN {
            return ReadResult { events, next: last };
        }
        last = *id;
        if patterns.matches(&e.channel) {
            events.push(e.clone());
            if events.len() >= limit {
                return ReadResult { events, next: *id };
            }
        }
    }
    ReadResult { events, next: upto }
}

impl MemoryLog {
    /// An empty log with a fresh random epoch.
    pub fn new(retention: Retention) -> Self {
        Self::with_epoch(retention, new_epoch())
    }

    /// An empty log with the given epoch (not `0`), for tests that need to know it.
    pub fn with_epoch(retention: Retention, epoch: u32) -> Self {
        let epoch = epoch.max(1);
        let start = EventId::epoch_start(epoch);
        MemoryLog {
            inner: Mutex::new(Inner {
                last: start,
                channels: HashMap::new(),
                index: BTreeMap::new(),
                drops: BTreeSet::new(),
                feed: VecDeque::new(),
                feed_dropped: start,
                bytes: 0,
                feed_bytes: 0,
                once: HashMap::new(),
                once_order: VecDeque::new(),
            }),
            retention,
            epoch,
            newest: watch::Sender::new(start),
        }
    }

    /// This log's epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the log half-written in a way that matters
        // (every mutation is a push, pop or map update), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `id` in this log's epoch; an id of another epoch is an error.
    fn own(&self, id: EventId) -> Result<EventId, LogError> {
        match id.epoch {
            0 => Ok(id.in_epoch(self.epoch)),
            e if e == self.epoch => Ok(id),
            e => Err(LogError::EpochChanged {
                expected: e,
                current: self.epoch,
            }),
        }
    }
}

impl MemoryLog {
    /// Stores a batch under the lock the caller holds.
    ///
    /// # Errors
    /// [`super::check_budgets`]: an event or batch that cannot fit, before anything is stored.
    fn append_locked(
        &self,
        inner: &mut Inner,
        events: Vec<NewEvent>,
    ) -> Result<Vec<SharedEvent>, LogError> {
        let sizes = super::check_budgets(&self.retention, &events)?;
        let mut out = Vec::with_capacity(events.len());
        {
            let now = now_ms();
            for (new, size) in events.into_iter().zip(sizes) {
                let last = inner.last;
                let id = if now > last.ms {
                    EventId::new(now, 0).in_epoch(self.epoch)
                } else {
                    last.next()
                };
                inner.last = id;
                let event: SharedEvent = Arc::new(new.into_event(id));
                if !inner.channels.contains_key(event.channel.as_str()) {
                    let name: Arc<str> = Arc::from(event.channel.as_str());
                    inner.channels.insert(
                        name.clone(),
                        ChannelLog {
                            name,
                            events: VecDeque::new(),
                            max_deleted: None,
                            bytes: 0,
                        },
                    );
                }
                inner.index.insert(id, event.clone());
                inner.bytes += size;
                if let Some(log) = inner.channels.get_mut(event.channel.as_str()) {
                    log.events.push_back(event.clone());
                    log.bytes += size;
                    let limits = self.retention.for_channel(&event.channel);
                    inner.bytes -= trim(limits, log, &mut inner.index, &mut inner.drops, now);
                }
                while inner.bytes > self.retention.max_total_bytes && self.drop_oldest(inner) {}
                inner.feed_bytes += size;
                inner.feed.push_back(event.clone());
                while inner.feed.len() > FEED_CAPACITY
                    || (inner.feed_bytes > self.retention.max_total_bytes && inner.feed.len() > 1)
                {
                    let Some(old) = inner.feed.pop_front() else {
                        break;
                    };
                    inner.feed_bytes -= size_of(&old);
                    inner.feed_dropped = old.id;
                }
                out.push(event);
            }
        }
        Ok(out)
    }

    /// Drops the oldest retained event of the whole log (the total byte budget's retention);
    /// false when nothing is retained.
    fn drop_oldest(&self, inner: &mut Inner) -> bool {
        let Some((_, oldest)) = inner.index.pop_first() else {
            return false;
        };
        if let Some(log) = inner.channels.get_mut(oldest.channel.as_str()) {
            // The index holds retained events only, and a channel's are in id order: the
            // log's oldest is its channel's front.
            let before = log.max_deleted;
            if log.events.front().is_some_and(|e| e.id == oldest.id) {
                log.events.pop_front();
            }
            let size = size_of(&oldest);
            log.bytes -= size;
            inner.bytes -= size;
            log.max_deleted = Some(oldest.id);
            note_drop(log, before, &mut inner.drops);
        }
        true
    }
}

#[async_trait]
impl EventLog for MemoryLog {
    async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<SharedEvent>, LogError> {
        let (out, newest) = {
            let mut guard = self.lock();
            let out = self.append_locked(&mut guard, events)?;
            (out, guard.last)
        };
        self.newest.send_replace(newest);
        Ok(out)
    }

    async fn append_once(
        &self,
        events: Vec<NewEvent>,
        once: Once<'_>,
    ) -> Result<Appended, LogError> {
        let (out, newest) = {
            let mut guard = self.lock();
            let now = now_ms();
            guard.expire_once(now);
            if let Some((fingerprint, ids, _)) = guard.once.get(once.key) {
                return Ok(Appended::Replayed {
                    fingerprint: fingerprint.clone(),
                    ids: ids.clone(),
                });
            }
            let out = self.append_locked(&mut guard, events)?;
            let ids = out
                .iter()
                .zip(once.answer)
                .filter_map(|(e, keep)| keep.then_some(e.id))
                .collect();
            let at = now.saturating_add(once.ttl.as_millis() as u64);
            guard
                .once
                .insert(once.key.to_owned(), (once.fingerprint.to_owned(), ids, at));
            guard.once_order.push_back((at, once.key.to_owned()));
            (out, guard.last)
        };
        self.newest.send_replace(newest);
        Ok(Appended::Stored(out))
    }

    async fn read(
        &self,
        patterns: &PatternSet,
        after: EventId,
        upto: EventId,
        limit: usize,
    ) -> Result<ReadResult, LogError> {
        let (after, upto) = (self.own(after)?, self.own(upto)?);
        if limit == 0 || after >= upto {
            return Ok(ReadResult {
                events: Vec::new(),
                next: after,
            });
        }
        let inner = self.lock();
        let logs: Option<Vec<&ChannelLog>> = match patterns.literals() {
            Some(mut names) => {
                names.sort_unstable();
                names.dedup();
                Some(
                    names
                        .into_iter()
                        .filter_map(|n| inner.channels.get(n))
                        .collect(),
                )
            }
            None if inner.channels.len() <= SMALL_LOG => Some(
                inner
                    .channels
                    .values()
                    .filter(|l| patterns.matches(&l.name))
                    .collect(),
            ),
            None => None,
        };
        Ok(match logs {
            Some(logs) => merge(&logs, after, upto, limit),
            None => scan(&inner.index, patterns, after, upto, limit),
        })
    }

    async fn gap(&self, patterns: &PatternSet, after: EventId) -> Result<Option<Reset>, LogError> {
        let after = self.own(after)?;
        let oldest = |log: &ChannelLog| log.events.front().map(|e| e.id);
        if let Some(names) = patterns.literals() {
            let inner = self.lock();
            let mut reset = None;
            for log in names.into_iter().filter_map(|n| inner.channels.get(n)) {
                if log.max_deleted.is_some_and(|d| d > after) {
                    reset = Some(widen(reset, oldest(log)));
                }
            }
            return Ok(reset);
        }
        // Only channels that dropped something newer than `after` can matter; walk them in
        // chunks, releasing the lock in between. Entries only ever move to larger ids, so a
        // channel that changes while we walk is seen again, never missed.
        let mut from = Bound::Included((after.next(), Arc::<str>::from("")));
        let mut reset = None;
        loop {
            let inner = self.lock();
            let mut last = None;
            let mut more = false;
            for (n, (id, name)) in inner
                .drops
                .range((from.clone(), Bound::Unbounded))
                .enumerate()
            {
                if n == GAP_SCAN {
                    more = true;
                    break;
                }
                if patterns.matches(name)
                    && let Some(log) = inner.channels.get(&**name)
                {
                    reset = Some(widen(reset, oldest(log)));
                }
                last = Some((*id, name.clone()));
            }
            drop(inner);
            match last {
                Some(key) if more => from = Bound::Excluded(key),
                _ => return Ok(reset),
            }
        }
    }

    async fn latest(&self, channel: &str, n: usize) -> Result<Vec<SharedEvent>, LogError> {
        let inner = self.lock();
        Ok(inner.channels.get(channel).map_or_else(Vec::new, |log| {
            let skip = log.events.len().saturating_sub(n);
            log.events.iter().skip(skip).cloned().collect()
        }))
    }

    async fn last_id(&self) -> Result<EventId, LogError> {
        Ok(self.lock().last)
    }

    async fn tail(
        &self,
        after: EventId,
        limit: usize,
        wait: Duration,
    ) -> Result<Option<Vec<SharedEvent>>, LogError> {
        let Ok(after) = self.own(after) else {
            return Ok(None);
        };
        let mut newest = self.newest.subscribe();
        if *newest.borrow_and_update() <= after {
            // Nothing new yet: wait for the next append (or give up after `wait`).
            let _ = tokio::time::timeout(wait, newest.changed()).await;
        }
        let inner = self.lock();
        if after < inner.feed_dropped {
            return Ok(None);
        }
        let start = inner.feed.partition_point(|e| e.id <= after);
        Ok(Some(
            inner.feed.range(start..).take(limit).cloned().collect(),
        ))
    }

    async fn trim_expired(&self) -> Result<(), LogError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let now = now_ms();
        for log in inner.channels.values_mut() {
            let limits = self.retention.for_channel(&log.name);
            inner.bytes -= trim(limits, log, &mut inner.index, &mut inner.drops, now);
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), LogError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Limits;

    fn new(ch: &str, n: i64) -> NewEvent {
        NewEvent::new(ch, None, serde_json::json!(n)).unwrap()
    }

    fn pats(p: &[&str]) -> PatternSet {
        PatternSet::parse_all(p.iter().copied()).unwrap()
    }

    #[tokio::test]
    async fn ids_are_ordered_across_channels_and_reads_merge_them() {
        let log = MemoryLog::new(Retention::default());
        let stored = log
            .append(vec![
                new("a.x", 1),
                new("b.y", 2),
                new("a.z", 3),
                new("c", 4),
            ])
            .await
            .unwrap();
        assert!(stored.windows(2).all(|w| w[0].id < w[1].id));
        let last = log.last_id().await.unwrap();
        let r = log
            .read(&pats(&["a.*", "b.>"]), EventId::ZERO, last, 100)
            .await
            .unwrap();
        let data: Vec<_> = r.events.iter().map(|e| e.data.clone()).collect();
        assert_eq!(
            data,
            vec![
                serde_json::json!(1),
                serde_json::json!(2),
                serde_json::json!(3)
            ]
        );
        assert_eq!(r.next, last);
        // Exclusive cursor, inclusive upper bound, limit.
        let r = log
            .read(&pats(&[">"]), stored[0].id, stored[2].id, 100)
            .await
            .unwrap();
        assert_eq!(r.events.len(), 2);
        let r = log
            .read(&pats(&[">"]), EventId::ZERO, last, 3)
            .await
            .unwrap();
        assert_eq!(r.events.last().unwrap().id, stored[2].id);
    }

    #[tokio::test]
    async fn count_retention_reports_a_reset_for_stale_cursors_only() {
        let retention = Retention {
            default: Limits {
                max_events: 3,
                max_age: None,
                max_bytes: u64::MAX,
            },
            overrides: vec![],
            max_total_bytes: u64::MAX,
        };
        let log = MemoryLog::new(retention);
        let stored = log
            .append((0..5).map(|i| new("a", i)).collect())
            .await
            .unwrap();
        let last = log.last_id().await.unwrap();
        let r = log
            .read(&pats(&["a"]), stored[0].id, last, 10)
            .await
            .unwrap();
        assert_eq!(r.events.len(), 3);
        for p in [pats(&["a"]), pats(&["*"])] {
            assert_eq!(
                log.gap(&p, stored[0].id).await.unwrap(),
                Some(Reset {
                    oldest: Some(stored[2].id)
                })
            );
            // A cursor at the last dropped event lost nothing.
            assert_eq!(log.gap(&p, stored[1].id).await.unwrap(), None);
        }
        assert_eq!(log.gap(&pats(&["b.*"]), EventId::ZERO).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_wide_read_walks_the_global_order_in_bounded_steps() {
        let log = MemoryLog::new(Retention::default());
        // More channels than the small-log shortcut, interleaved, plus a channel nobody asks for.
        let mut all = Vec::new();
        for round in 0..30 {
            let batch = (0..(SMALL_LOG as i64 + 6))
                .map(|c| new(&format!("w.{c}"), round))
                .chain((0..100).map(|i| new("other", i)))
                .collect();
            all.extend(log.append(batch).await.unwrap());
        }
        let last = log.last_id().await.unwrap();
        let want: Vec<EventId> = all
            .iter()
            .filter(|e| e.channel.starts_with("w."))
            .map(|e| e.id)
            .collect();
        let mut got = Vec::new();
        let mut after = EventId::ZERO;
        let mut reads = 0;
        while after < last {
            let r = log.read(&pats(&["w.*"]), after, last, 500).await.unwrap();
            assert!(r.next > after, "every read makes progress");
            assert!(r.events.len() <= 500);
            got.extend(r.events.iter().map(|e| e.id));
            after = r.next;
            reads += 1;
        }
        assert_eq!(got, want);
        assert!(reads > want.len() / 500, "the scan is bounded per call");
    }

    #[tokio::test]
    async fn one_read_examines_a_bounded_stretch_of_the_index() {
        let log = MemoryLog::new(Retention::default());
        let noise: Vec<NewEvent> = (0..(READ_SCAN as i64 * 2))
            .map(|i| new(&format!("noise.{}", i % (SMALL_LOG as i64 * 2)), i))
            .collect();
        let stored = log.append(noise).await.unwrap();
        let rare = log.append(vec![new("rare.x", 0)]).await.unwrap();
        let last = log.last_id().await.unwrap();
        // A narrow wildcard in a busy log: the first read gives up after READ_SCAN entries and
        // says where it stopped, instead of walking the whole log under the lock.
        let r = log
            .read(&pats(&["rare.*"]), EventId::ZERO, last, 500)
            .await
            .unwrap();
        assert!(r.events.is_empty());
        assert_eq!(r.next, stored[READ_SCAN - 1].id);
        let r = log
            .read(&pats(&["rare.*"]), r.next, last, 500)
            .await
            .unwrap();
        assert_eq!(r.next, stored[2 * READ_SCAN - 1].id);
        let r = log
            .read(&pats(&["rare.*"]), r.next, last, 500)
            .await
            .unwrap();
        assert_eq!((r.events, r.next), (rare, last));
    }

    #[tokio::test]
    async fn byte_budgets_bound_channels_the_log_and_the_feed() {
        let big = |ch: &str| NewEvent::new(ch, None, serde_json::json!("x".repeat(1000))).unwrap();
        let size = super::super::event_bytes("a", "message", &serde_json::json!("x".repeat(1000)));
        let log = MemoryLog::new(Retention {
            default: Limits {
                max_events: 1000,
                max_age: None,
                max_bytes: size * 3,
            },
            overrides: vec![],
            max_total_bytes: size * 5,
        });
        let first = log.append(vec![big("a")]).await.unwrap();
        for _ in 0..9 {
            log.append(vec![big("a")]).await.unwrap();
        }
        // The channel keeps three events' worth of bytes, and reports what it dropped.
        assert_eq!(log.latest("a", 100).await.unwrap().len(), 3);
        let gap = log.gap(&pats(&["a"]), first[0].id).await.unwrap();
        assert!(gap.is_some());
        // The log keeps five events' worth across channels: the oldest go first.
        for ch in ["b", "c", "d"] {
            log.append(vec![big(ch)]).await.unwrap();
        }
        let mut held = 0;
        for c in ["a", "b", "c", "d"] {
            held += log.latest(c, 100).await.unwrap().len();
        }
        assert_eq!(held, 5);
        assert_eq!(log.latest("a", 100).await.unwrap().len(), 2);
        {
            let inner = log.lock();
            assert_eq!(inner.bytes, 5 * size);
            assert!(inner.feed_bytes <= 5 * size);
        }
        // One event over its channel's budget, or a batch over the total, is refused whole.
        let huge = NewEvent::new("a", None, serde_json::json!("x".repeat(5000))).unwrap();
        assert!(matches!(
            log.append(vec![huge]).await,
            Err(LogError::TooLarge(_))
        ));
        let batch: Vec<NewEvent> = ["e", "f", "g", "h", "i", "j"]
            .iter()
            .map(|c| big(c))
            .collect();
        assert!(matches!(log.append(batch).await, Err(LogError::Full(_))));
        assert!(log.latest("e", 1).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_idempotency_key_answers_once() {
        let log = MemoryLog::new(Retention::default());
        let once = |key| Once {
            key,
            fingerprint: "f1",
            ttl: Duration::from_secs(60),
            answer: &[true, false],
        };
        let Appended::Stored(first) = log
            .append_once(vec![new("a", 1), new("b", 2)], once("k"))
            .await
            .unwrap()
        else {
            panic!("stored")
        };
        let again = log
            .append_once(vec![new("a", 1), new("b", 2)], once("k"))
            .await
            .unwrap();
        match again {
            Appended::Replayed { fingerprint, ids } => {
                assert_eq!(fingerprint, "f1");
                assert_eq!(ids, vec![first[0].id]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(log.latest("a", 10).await.unwrap().len(), 1);
        assert!(matches!(
            log.append_once(vec![new("a", 1), new("b", 2)], once("other"))
                .await
                .unwrap(),
            Appended::Stored(_)
        ));
    }

    #[tokio::test]
    async fn ids_of_another_epoch_are_refused() {
        let log = MemoryLog::with_epoch(Retention::default(), 7);
        assert_eq!(log.last_id().await.unwrap(), EventId::epoch_start(7));
        let stored = log.append(vec![new("a", 1)]).await.unwrap();
        assert_eq!(stored[0].id.epoch, 7);
        let other = stored[0].id.in_epoch(8);
        assert!(matches!(
            log.read(&pats(&["a"]), EventId::ZERO, other, 10).await,
            Err(LogError::EpochChanged {
                expected: 8,
                current: 7
            })
        ));
        assert!(log.gap(&pats(&["a"]), other).await.is_err());
        assert_eq!(
            log.tail(other, 10, Duration::ZERO)
                .await
                .unwrap()
                .map(|v| v.len()),
            None,
            "the feed cannot continue a cursor of another epoch"
        );
        // Ids without an epoch are taken as this log's.
        let r = log
            .read(&pats(&["a"]), EventId::ZERO, EventId::new(u64::MAX, 0), 10)
            .await
            .unwrap();
        assert_eq!(r.events.len(), 1);
        assert_ne!(MemoryLog::new(Retention::default()).epoch(), 0);
    }

    #[tokio::test]
    async fn tail_waits_for_the_next_event() {
        let log = Arc::new(MemoryLog::new(Retention::default()));
        let empty = log
            .tail(EventId::ZERO, 10, Duration::from_millis(20))
            .await
            .unwrap();
        assert_eq!(empty.map(|v| v.len()), Some(0));
        let waiter = {
            let log = log.clone();
            tokio::spawn(async move { log.tail(EventId::ZERO, 10, Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        log.append(vec![new("a", 1)]).await.unwrap();
        let got = waiter.await.unwrap().unwrap().unwrap();
        assert_eq!(got.len(), 1);
    }

    #[tokio::test]
    async fn age_retention_trims_old_events() {
        let retention = Retention {
            default: Limits {
                max_events: 100,
                max_age: Some(Duration::from_millis(30)),
                max_bytes: u64::MAX,
            },
            overrides: vec![(
                crate::Pattern::parse("keep.>").unwrap(),
                Limits {
                    max_events: 100,
                    max_age: None,
                    max_bytes: u64::MAX,
                },
            )],
            max_total_bytes: u64::MAX,
        };
        let log = MemoryLog::new(retention);
        log.append(vec![new("a", 1), new("keep.x", 2)])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        log.trim_expired().await.unwrap();
        assert!(log.latest("a", 10).await.unwrap().is_empty());
        assert_eq!(log.latest("keep.x", 10).await.unwrap().len(), 1);
    }
}
