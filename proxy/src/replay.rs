//! A watcher's **replay ring**: its most recent events, bounded by count and bytes
//! (`upstream.replay_events`, `upstream.replay_bytes`), so a handoff that joins *behind* the
//! watcher's position catches up from memory instead of opening a private connection.
//!
//! **Exactness rule.** Ids are totally ordered per stream. The ring keeps a *floor*: every event
//! of the stream after the floor, up to the watcher's position, is in the ring, in order. A
//! handoff whose cursor is at or past the floor joins from the ring exactly (the ring holds
//! every event after its cursor); one whose cursor is older, or a ring with no floor, falls back
//! to the private catch-up reader.
//!
//! How the watcher knows contiguity: the events its one connection delivers since it started
//! (from its first subscriber's cursor: the initial floor) are contiguous, across reconnects too
//! (each resumes from the connection's last event id, or the origin says reset). So:
//!
//! * a new event is appended; evicting the oldest raises the floor to its id;
//! * an id-only block moving the position on (the origin's head on a fresh stream, or where the
//!   stream continues after a reset) asserts nothing lies between: it gives a floor when there
//!   was none;
//! * the origin's **reset** (events lost between the cursor and its oldest), a **cleared**
//!   last event id (the next connection starts at the head) and an **oversized** event (skipped,
//!   a gap every subscriber must be told of) break contiguity: the ring is emptied, and the floor
//!   becomes unknown (reset, cleared: the first event or id-only block after it sets it) or the
//!   skipped id (oversized: only cursors at or past it join from the ring).
//!
//! Events are shared `Arc`s (the handoffs' buffers hold the same ones); the byte bound counts
//! each event's JSON envelope.

use std::collections::VecDeque;

use ssepush_origin::event::{EventId, SharedEvent};

/// See the module docs.
pub struct Replay {
    events: VecDeque<(SharedEvent, usize)>,
    bytes: usize,
    max_events: usize,
    max_bytes: usize,
    /// Every event after it (up to the watcher's position) is in `events`; `None`: unknown.
    floor: Option<EventId>,
}

impl Replay {
    /// A ring for a watcher that starts reading after `start` (its first subscriber's cursor),
    /// keeping at most `max_events` events and `max_bytes` bytes (`0` events: none kept).
    pub fn new(start: Option<EventId>, max_events: usize, max_bytes: usize) -> Replay {
        Replay {
            events: VecDeque::new(),
            bytes: 0,
            max_events,
            max_bytes,
            floor: start,
        }
    }

    /// A new event (past the watcher's position) arrived on the watcher's connection.
    pub fn push(&mut self, ev: &SharedEvent) {
        if self.floor.is_none() || self.max_events == 0 {
            // Nothing older is known to be complete: coverage starts here.
            self.floor = Some(ev.id);
            return;
        }
        let size = envelope_bytes(ev);
        self.events.push_back((ev.clone(), size));
        self.bytes += size;
        while self.events.len() > self.max_events || self.bytes > self.max_bytes {
            let Some((old, size)) = self.events.pop_front() else {
                break;
            };
            self.bytes -= size;
            self.floor = Some(old.id);
        }
    }

    /// An id-only block moved the watcher's position to `position` without an event.
    pub fn moved_to(&mut self, position: EventId) {
        if self.floor.is_none() {
            self.floor = Some(position);
        }
    }

    /// Contiguity is broken (see the module docs): the ring is emptied; `floor` is the new
    /// floor (`None`: unknown until the next event or id-only block).
    pub fn break_at(&mut self, floor: Option<EventId>) {
        self.events.clear();
        self.bytes = 0;
        self.floor = floor;
    }

    /// The events after `cursor` when the ring holds all of them (`cursor` at or past the
    /// floor), oldest first; `None` when it cannot vouch for them.
    pub fn after(&self, cursor: EventId) -> Option<impl Iterator<Item = &SharedEvent>> {
        if self.floor.is_none_or(|f| cursor < f) {
            return None;
        }
        // Ids are ordered: skip what the cursor already has.
        let start = self.events.partition_point(|(e, _)| e.id <= cursor);
        Some(self.events.range(start..).map(|(e, _)| e))
    }

    /// Events held, and their bytes.
    pub fn len(&self) -> (usize, usize) {
        (self.events.len(), self.bytes)
    }
}

/// The size of an event's JSON envelope (what the origin sent), counted without allocating.
fn envelope_bytes(ev: &SharedEvent) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // An id, a channel and a type besides the data.
    let _ = serde_json::to_writer(&mut c, &ev.data);
    c.0 + ev.channel.len() + ev.kind.len() + 64
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn ev(seq: u64, data: serde_json::Value) -> SharedEvent {
        Arc::new(ssepush_origin::Event {
            id: EventId::new(1, seq),
            channel: "a".into(),
            kind: "message".into(),
            data,
            time: 1,
        })
    }

    fn after(r: &Replay, seq: u64) -> Option<Vec<u64>> {
        r.after(EventId::new(1, seq))
            .map(|it| it.map(|e| e.id.seq).collect())
    }

    #[test]
    fn cursors_at_or_past_the_floor_get_exactly_the_events_after_them() {
        let mut r = Replay::new(Some(EventId::new(1, 10)), 3, 1 << 20);
        for seq in [12, 15, 17] {
            r.push(&ev(seq, serde_json::json!(seq)));
        }
        assert_eq!(after(&r, 10), Some(vec![12, 15, 17]));
        assert_eq!(after(&r, 13), Some(vec![15, 17]));
        assert_eq!(after(&r, 17), Some(vec![]));
        // Older than the floor: the ring cannot vouch for (9, 10].
        assert_eq!(after(&r, 9), None);
        // A fourth event evicts 12: the floor rises to it.
        r.push(&ev(20, serde_json::json!(20)));
        assert_eq!(after(&r, 11), None);
        assert_eq!(after(&r, 12), Some(vec![15, 17, 20]));
        assert_eq!(r.len().0, 3);
    }

    #[test]
    fn the_byte_bound_evicts_and_an_event_over_it_is_not_kept() {
        let big = serde_json::json!("x".repeat(500));
        let mut r = Replay::new(Some(EventId::new(1, 0)), 100, 1200);
        r.push(&ev(1, big.clone()));
        r.push(&ev(2, big.clone()));
        assert_eq!(after(&r, 0), Some(vec![1, 2]));
        r.push(&ev(3, big));
        assert_eq!(after(&r, 0), None);
        assert_eq!(after(&r, 1), Some(vec![2, 3]));
        assert!(r.len().1 <= 1200);
        r.push(&ev(4, serde_json::json!("y".repeat(5000))));
        assert_eq!(r.len().0, 0);
        assert_eq!(after(&r, 4), Some(vec![]));
        assert_eq!(after(&r, 3), None);
    }

    #[test]
    fn a_reset_empties_the_ring_until_an_event_or_id_only_block_gives_a_floor() {
        let mut r = Replay::new(Some(EventId::new(1, 0)), 10, 1 << 20);
        r.push(&ev(1, serde_json::json!(1)));
        r.break_at(None);
        assert_eq!(after(&r, 0), None);
        assert_eq!(after(&r, 1), None);
        // The stream continues from 5 (the origin's id-only block after its reset).
        r.moved_to(EventId::new(1, 5));
        assert_eq!(after(&r, 4), None);
        r.push(&ev(6, serde_json::json!(6)));
        assert_eq!(after(&r, 5), Some(vec![6]));
        // Without an id-only block, the first event after the break is the floor.
        r.break_at(None);
        r.push(&ev(8, serde_json::json!(8)));
        r.push(&ev(9, serde_json::json!(9)));
        assert_eq!(after(&r, 7), None);
        assert_eq!(after(&r, 8), Some(vec![9]));
        // An id-only block with a floor known changes nothing.
        r.moved_to(EventId::new(1, 12));
        assert_eq!(after(&r, 8), Some(vec![9]));
    }

    #[test]
    fn a_disabled_ring_keeps_nothing_but_vouches_for_its_position() {
        let mut r = Replay::new(None, 0, 0);
        assert_eq!(after(&r, 1), None);
        r.push(&ev(3, serde_json::json!(3)));
        assert_eq!(after(&r, 2), None);
        assert_eq!(after(&r, 3), Some(vec![]));
        assert_eq!(r.len(), (0, 0));
    }
}
