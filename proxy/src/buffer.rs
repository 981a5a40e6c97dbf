//! The per-handoff event buffer: what a woken phone reads from `GET /v1/handoffs/{id}/events`
//! when the origin may no longer hold it.
//!
//! Bounded: at `cap` events the oldest is dropped. Nothing is dropped silently: the buffer keeps a
//! **floor**, the newest id at or below which events may be missing (acknowledged by the phone,
//! or dropped on overflow). A read after a position below the floor starts with a [`Gap`], which
//! the API turns into an `ssepush.reset`-like marker: the phone then resumes from the origin with
//! its own cursor instead of trusting the buffer. A `ssepush.reset` from the origin itself (the
//! cursor was older than the origin's retention) is kept and reported the same way.
//!
//! Events are `Arc`s: handoffs sharing an upstream connection share one copy of each event.

use std::collections::VecDeque;

use ssepush_origin::EventId;
use ssepush_origin::event::SharedEvent;

use crate::protocol::{Gap, GapSource};

/// An `Option<EventId>` in 24 bytes rather than 32: whether there is one sits in the id's
/// padding (issue 11: a sleeping handoff holds four of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PackedId {
    ms: u64,
    seq: u64,
    epoch: u32,
    some: bool,
}

impl PackedId {
    pub fn new(id: Option<EventId>) -> PackedId {
        match id {
            None => PackedId::default(),
            Some(EventId { ms, seq, epoch }) => PackedId {
                ms,
                seq,
                epoch,
                some: true,
            },
        }
    }

    pub fn get(self) -> Option<EventId> {
        self.some.then_some(EventId {
            ms: self.ms,
            seq: self.seq,
            epoch: self.epoch,
        })
    }
}

/// One buffered event and whether it passed the wake filter.
#[derive(Debug, Clone)]
pub struct Buffered {
    pub event: SharedEvent,
    pub wakes: bool,
}

#[derive(Debug)]
pub struct EventBuffer {
    cap: u32,
    floor: PackedId,
    /// Allocated with the first event, loss or reset, and let go once the phone has
    /// acknowledged everything: a sleeping handoff's buffer is mostly empty, and then costs
    /// only its floor (issue 11).
    held: Option<Box<Held>>,
}

#[derive(Debug, Default)]
struct Held {
    events: VecDeque<Buffered>,
    /// `Some(oldest)` after the origin reset this stream, until the phone acknowledges past it.
    origin_reset: Option<Option<EventId>>,
    dropped: u64,
}

impl EventBuffer {
    /// A buffer for a phone whose cursor is `cursor`: nothing at or below it is owed. At most
    /// `cap` events are kept (at least 1, at most `u32::MAX`).
    pub fn new(cap: usize, cursor: Option<EventId>) -> Self {
        EventBuffer {
            cap: cap.clamp(1, u32::MAX as usize) as u32,
            floor: PackedId::new(cursor),
            held: None,
        }
    }

    fn raise_floor(&mut self, to: Option<EventId>) {
        self.floor = PackedId::new(self.floor.get().max(to));
    }

    fn held(&mut self) -> &mut Held {
        self.held.get_or_insert_with(Box::default)
    }

    fn events(&self) -> impl DoubleEndedIterator<Item = &Buffered> {
        self.held.iter().flat_map(|h| h.events.iter())
    }

    /// Appends an event (callers deliver ids in increasing order and drop duplicates). Returns
    /// true when the oldest event had to be dropped.
    pub fn push(&mut self, event: SharedEvent, wakes: bool) -> bool {
        let cap = self.cap as usize;
        let held = self.held();
        let mut dropped = None;
        if held.events.len() >= cap
            && let Some(old) = held.events.pop_front()
        {
            held.dropped += 1;
            dropped = Some(old.event.id);
        }
        held.events.push_back(Buffered { event, wakes });
        if dropped.is_some() {
            self.raise_floor(dropped);
        }
        dropped.is_some()
    }

    /// Events up to `through` were lost before reaching the buffer: reads from below it get a
    /// gap.
    pub fn lost(&mut self, through: EventId) {
        self.raise_floor(Some(through));
        self.held().dropped += 1;
    }

    /// The origin answered the watch with `ssepush.reset`.
    pub fn origin_reset(&mut self, oldest: Option<EventId>) {
        self.held().origin_reset = Some(oldest);
    }

    /// The phone has everything through `id`: drop it and raise the floor.
    pub fn ack(&mut self, id: EventId) {
        self.raise_floor(Some(id));
        let Some(held) = self.held.as_mut() else {
            return;
        };
        while held.events.front().is_some_and(|b| b.event.id <= id) {
            held.events.pop_front();
        }
        // Acknowledging the origin's oldest id (or anything, when it held nothing) means the
        // phone has seen the marker and resynced.
        if held.origin_reset.is_some_and(|o| o.is_none_or(|o| id >= o)) {
            held.origin_reset = None;
        }
        if held.events.is_empty() && held.origin_reset.is_none() && held.dropped == 0 {
            self.held = None;
        }
    }

    /// Events after `after`, with a gap marker first when the buffer cannot vouch for
    /// completeness.
    pub fn read(&self, after: Option<EventId>) -> (Option<Gap>, Vec<SharedEvent>) {
        let events: Vec<SharedEvent> = self
            .events()
            .filter(|b| after.is_none_or(|a| b.event.id > a))
            .map(|b| b.event.clone())
            .collect();
        let oldest = self.events().next().map(|b| b.event.id);
        let origin_reset = self.held.as_ref().and_then(|h| h.origin_reset);
        let gap = if let Some(origin_oldest) = origin_reset {
            Some(Gap::new(GapSource::Origin, after, None, origin_oldest))
        } else if self.floor.get().is_some() && after < self.floor.get() {
            Some(Gap::new(GapSource::Proxy, after, self.floor.get(), oldest))
        } else {
            None
        };
        (gap, events)
    }

    /// Events after `after` still buffered.
    pub fn pending(&self, after: Option<EventId>) -> u64 {
        self.events()
            .rev()
            .take_while(|b| after.is_none_or(|a| b.event.id > a))
            .count() as u64
    }

    /// Whether an event after `after` passed the wake filter (a wake is owed).
    pub fn wake_owed(&self, after: Option<EventId>) -> bool {
        self.events()
            .rev()
            .take_while(|b| after.is_none_or(|a| b.event.id > a))
            .any(|b| b.wakes)
    }

    pub fn newest(&self) -> Option<EventId> {
        self.events().next_back().map(|b| b.event.id)
    }

    pub fn len(&self) -> usize {
        self.held.as_ref().map_or(0, |h| h.events.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events dropped on overflow over the buffer's life.
    pub fn dropped(&self) -> u64 {
        self.held.as_ref().map_or(0, |h| h.dropped)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ssepush_origin::Event;

    use super::*;

    fn ev(seq: u64) -> SharedEvent {
        Arc::new(Event {
            id: EventId::new(1, seq),
            channel: "a".into(),
            kind: "message".into(),
            data: serde_json::json!(seq),
            time: 1,
        })
    }

    fn ids(v: &[SharedEvent]) -> Vec<u64> {
        v.iter().map(|e| e.id.seq).collect()
    }

    #[test]
    fn reads_after_the_cursor_without_a_gap() {
        let mut b = EventBuffer::new(4, Some(EventId::new(1, 0)));
        for i in 1..=3 {
            b.push(ev(i), i == 2);
        }
        let (gap, events) = b.read(Some(EventId::new(1, 0)));
        assert_eq!(gap, None);
        assert_eq!(ids(&events), vec![1, 2, 3]);
        assert_eq!(b.pending(Some(EventId::new(1, 1))), 2);
        assert!(b.wake_owed(Some(EventId::new(1, 1))));
        assert!(!b.wake_owed(Some(EventId::new(1, 2))));
    }

    #[test]
    fn overflow_is_reported_as_a_gap_not_lost_silently() {
        let cursor = Some(EventId::new(1, 0));
        let mut b = EventBuffer::new(3, cursor);
        let overflowed: Vec<bool> = (1..=5).map(|i| b.push(ev(i), true)).collect();
        assert_eq!(overflowed, vec![false, false, false, true, true]);
        let (gap, events) = b.read(cursor);
        assert_eq!(ids(&events), vec![3, 4, 5]);
        let gap = gap.expect("a gap");
        assert_eq!(gap.source, GapSource::Proxy);
        assert_eq!(gap.through_id, Some(EventId::new(1, 2)));
        assert_eq!(gap.oldest_id, Some(EventId::new(1, 3)));
        assert_eq!(b.dropped(), 2);
        // A phone that already has event 2 sees no gap.
        assert_eq!(b.read(Some(EventId::new(1, 2))).0, None);
    }

    #[test]
    fn events_lost_upstream_of_the_buffer_are_a_gap_too() {
        let cursor = Some(EventId::new(1, 0));
        let mut b = EventBuffer::new(8, cursor);
        b.lost(EventId::new(1, 1));
        b.push(ev(2), true);
        let (gap, events) = b.read(cursor);
        assert_eq!(gap.unwrap().through_id, Some(EventId::new(1, 1)));
        assert_eq!(ids(&events), vec![2]);
    }

    #[test]
    fn ack_trims_and_raises_the_floor() {
        let mut b = EventBuffer::new(10, None);
        for i in 1..=4 {
            b.push(ev(i), false);
        }
        b.ack(EventId::new(1, 2));
        assert_eq!(ids(&b.read(Some(EventId::new(1, 2))).1), vec![3, 4]);
        assert_eq!(b.read(Some(EventId::new(1, 2))).0, None);
        // Asking for what was already acknowledged: the buffer says it no longer has it.
        assert!(b.read(Some(EventId::new(1, 1))).0.is_some());
    }

    #[test]
    fn a_packed_id_is_an_option_in_24_bytes() {
        assert_eq!(std::mem::size_of::<PackedId>(), 24);
        for id in [None, Some(EventId::ZERO), Some(EventId::new(7, 3))] {
            assert_eq!(PackedId::new(id).get(), id);
        }
    }

    #[test]
    fn an_empty_buffer_holds_no_allocation() {
        let mut b = EventBuffer::new(10, None);
        assert!(b.held.is_none());
        b.push(ev(1), true);
        b.push(ev(2), true);
        assert!(b.held.is_some());
        b.ack(EventId::new(1, 1));
        assert!(b.held.is_some());
        b.ack(EventId::new(1, 2));
        assert!(b.held.is_none(), "everything acknowledged: nothing held");
        let (gap, events) = b.read(Some(EventId::new(1, 2)));
        assert_eq!(gap, None);
        assert!(events.is_empty());
        assert!(b.read(Some(EventId::new(1, 1))).0.is_some());
    }

    #[test]
    fn origin_resets_are_reported_until_acknowledged_past() {
        let mut b = EventBuffer::new(10, Some(EventId::new(0, 1)));
        b.origin_reset(Some(EventId::new(1, 3)));
        b.push(ev(3), true);
        let gap = b.read(Some(EventId::new(0, 1))).0.unwrap();
        assert_eq!(gap.source, GapSource::Origin);
        assert_eq!(gap.oldest_id, Some(EventId::new(1, 3)));
        b.ack(EventId::new(1, 3));
        assert_eq!(b.read(Some(EventId::new(1, 3))).0, None);
    }
}
