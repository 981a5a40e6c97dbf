//! The in-memory event log: the default store, one process, nothing to install.
//!
//! One mutex guards everything; every operation under it is a few pointer moves, and the lock
//! is never held across an `.await`. Waiters on the global feed are woken through a `watch`
//! channel carrying the newest id, which cannot miss a wake-up between check and wait.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use super::{EventLog, LogError, ReadResult, Reset, Retention, now_ms};
use crate::channel::PatternSet;
use crate::event::{EventId, NewEvent, SharedEvent};

/// Events the global feed keeps for the hub to catch up after a stall.
const FEED_CAPACITY: usize = 65_536;

#[derive(Default)]
struct ChannelLog {
    events: VecDeque<SharedEvent>,
    /// Newest id retention dropped from this channel.
    max_deleted: Option<EventId>,
}

impl ChannelLog {
    fn drop_front(&mut self) {
        if let Some(e) = self.events.pop_front() {
            self.max_deleted = Some(e.id);
        }
    }

    /// Index of the first event with id > `after`.
    fn position_after(&self, after: EventId) -> usize {
        self.events.partition_point(|e| e.id <= after)
    }
}

#[derive(Default)]
struct Inner {
    last: EventId,
    channels: HashMap<String, ChannelLog>,
    feed: VecDeque<SharedEvent>,
    feed_dropped: EventId,
}

pub struct MemoryLog {
    inner: Mutex<Inner>,
    retention: Retention,
    newest: watch::Sender<EventId>,
}

impl MemoryLog {
    pub fn new(retention: Retention) -> Self {
        MemoryLog {
            inner: Mutex::new(Inner::default()),
            retention,
            newest: watch::Sender::new(EventId::ZERO),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the log half-written (every mutation is
        // a push or pop), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn trim_channel(&self, name: &str, log: &mut ChannelLog, now: u64) {
        let limits = self.retention.for_channel(name);
        while log.events.len() as u64 > limits.max_events {
            log.drop_front();
        }
        if let Some(age) = limits.max_age {
            let cutoff = now.saturating_sub(age.as_millis() as u64);
            while log.events.front().is_some_and(|e| e.time < cutoff) {
                log.drop_front();
            }
        }
    }
}

#[async_trait]
impl EventLog for MemoryLog {
    async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<SharedEvent>, LogError> {
        let mut out = Vec::with_capacity(events.len());
        let newest = {
            let mut inner = self.lock();
            let now = now_ms();
            for new in events {
                let last = inner.last;
                let id = if now > last.ms {
                    EventId::new(now, 0)
                } else {
                    last.next()
                };
                inner.last = id;
                let event: SharedEvent = Arc::new(new.into_event(id));
                let name = event.channel.clone();
                let mut log = inner.channels.remove(&name).unwrap_or_default();
                log.events.push_back(event.clone());
                self.trim_channel(&name, &mut log, now);
                inner.channels.insert(name, log);
                if inner.feed.len() >= FEED_CAPACITY
                    && let Some(old) = inner.feed.pop_front()
                {
                    inner.feed_dropped = old.id;
                }
                inner.feed.push_back(event.clone());
                out.push(event);
            }
            inner.last
        };
        self.newest.send_replace(newest);
        Ok(out)
    }

    async fn read(
        &self,
        patterns: &PatternSet,
        after: EventId,
        upto: EventId,
        limit: usize,
    ) -> Result<ReadResult, LogError> {
        let inner = self.lock();
        let mut result = ReadResult::default();
        let mut visit = |log: &ChannelLog| {
            if log.max_deleted.is_some_and(|d| d > after) {
                let oldest = log.events.front().map(|e| e.id);
                let prev = result.reset.and_then(|r| r.oldest);
                result.reset = Some(Reset {
                    oldest: match (prev, oldest) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    },
                });
            }
            let start = log.position_after(after);
            result.events.extend(
                log.events
                    .range(start..)
                    .take_while(|e| e.id <= upto)
                    .take(limit)
                    .cloned(),
            );
        };
        match patterns.literals() {
            Some(names) => names
                .into_iter()
                .filter_map(|n| inner.channels.get(n))
                .for_each(&mut visit),
            None => inner
                .channels
                .iter()
                .filter(|(name, _)| patterns.matches(name))
                .for_each(|(_, log)| visit(log)),
        }
        result.events.sort_unstable_by_key(|e| e.id);
        result.events.truncate(limit);
        Ok(result)
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
        let mut inner = self.lock();
        let now = now_ms();
        for (name, log) in inner.channels.iter_mut() {
            self.trim_channel(name, log, now);
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
        assert!(r.reset.is_none());
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
            },
            overrides: vec![],
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
        assert_eq!(
            r.reset,
            Some(Reset {
                oldest: Some(stored[2].id)
            })
        );
        assert_eq!(r.events.len(), 3);
        // A cursor at the last dropped event lost nothing.
        let r = log
            .read(&pats(&["a"]), stored[1].id, last, 10)
            .await
            .unwrap();
        assert_eq!(r.reset, None);
        assert_eq!(r.events.len(), 3);
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
            },
            overrides: vec![(
                crate::Pattern::parse("keep.>").unwrap(),
                Limits {
                    max_events: 100,
                    max_age: None,
                },
            )],
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
