//! A handoff's position in its stream — the **one owner** of its cursor.
//!
//! Three ids describe where a handoff is, and only this type moves them:
//!
//! * the **device cursor**: what the phone handed off with, acknowledged (`Last-Event-ID` /
//!   `?after=` on a check-in or handback), or was served by a catch-up. It only moves forward;
//!   the status shows it as `cursor` and the handback returns it.
//! * the **delivered** id: the newest event handed to the handoff's buffer. Events at or below
//!   it are duplicates (a shared watcher and a private gap reader may both see them) and are
//!   dropped. It starts at the device cursor, and it is where a watcher must start reading for
//!   this handoff.
//! * the **newest** id: the newest id the proxy learned of for this handoff, an event's or one
//!   skipped as oversized (`newestId`, a wake's `latestEventId`). A skipped id does not move
//!   the delivered id: older events of a gap read may still arrive and are kept.
//!
//! The shared watcher and each connection keep their own positions in the *stream* (what the
//! connection resends as `Last-Event-ID`); they never hold a handoff's cursor.

use ssepush_origin::EventId;

use crate::buffer::PackedId;

/// See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    device: PackedId,
    delivered: PackedId,
    newest: PackedId,
}

impl Cursor {
    /// A handoff whose phone handed off at `handed_off` (its last event id, if it had one).
    pub fn new(handed_off: Option<EventId>) -> Cursor {
        Cursor {
            device: PackedId::new(handed_off),
            delivered: PackedId::new(handed_off),
            newest: PackedId::default(),
        }
    }

    /// The device cursor.
    pub fn device(&self) -> Option<EventId> {
        self.device.get()
    }

    /// Where reading must resume for this handoff: everything after it is owed.
    pub fn resume_from(&self) -> Option<EventId> {
        self.delivered.get()
    }

    /// The newest id known for this handoff.
    pub fn newest(&self) -> Option<EventId> {
        self.newest.get()
    }

    /// An event `id` arrived: true when it is new to this handoff (then it is delivered and the
    /// newest), false for a duplicate.
    pub fn deliver(&mut self, id: EventId) -> bool {
        if self.delivered.get().is_some_and(|d| id <= d) {
            return false;
        }
        self.delivered = PackedId::new(Some(id));
        self.newest = PackedId::new(self.newest().max(Some(id)));
        true
    }

    /// The event `id` was skipped (too large to read): it is known, not delivered.
    pub fn skipped(&mut self, id: EventId) {
        self.newest = PackedId::new(self.newest().max(Some(id)));
    }

    /// The phone has (acknowledged, or was served) everything through `id`.
    pub fn advance_device(&mut self, id: EventId) {
        self.device = PackedId::new(self.device().max(Some(id)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(seq: u64) -> EventId {
        EventId::new(1, seq)
    }

    #[test]
    fn deliveries_drop_duplicates_and_only_move_forward() {
        let mut c = Cursor::new(Some(id(2)));
        assert_eq!(
            (c.device(), c.resume_from(), c.newest()),
            (Some(id(2)), Some(id(2)), None)
        );
        // The handed-off event itself and older ones are duplicates.
        assert!(!c.deliver(id(2)));
        assert!(!c.deliver(id(1)));
        assert!(c.deliver(id(3)));
        assert!(!c.deliver(id(3)));
        assert_eq!((c.resume_from(), c.newest()), (Some(id(3)), Some(id(3))));
        // Delivery is not the device's progress.
        assert_eq!(c.device(), Some(id(2)));
    }

    #[test]
    fn a_skipped_id_is_known_but_older_gap_events_still_arrive() {
        let mut c = Cursor::new(Some(id(2)));
        c.skipped(id(9));
        assert_eq!(c.newest(), Some(id(9)));
        assert_eq!(c.resume_from(), Some(id(2)));
        assert!(c.deliver(id(5)));
        // The newest id never goes back.
        assert_eq!(c.newest(), Some(id(9)));
        assert!(c.deliver(id(10)));
        assert_eq!(c.newest(), Some(id(10)));
    }

    #[test]
    fn the_device_cursor_only_moves_forward() {
        let mut c = Cursor::new(None);
        c.advance_device(id(4));
        c.advance_device(id(3));
        assert_eq!(c.device(), Some(id(4)));
        // A fresh handoff takes whatever comes first.
        assert_eq!(c.resume_from(), None);
        assert!(c.deliver(id(1)));
    }
}
