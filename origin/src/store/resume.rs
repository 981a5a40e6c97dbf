//! The resume rule: where a subscription that resumes from a client's cursor starts reading,
//! or why it must start with a reset. Plain code on two ids, tested on values.

use crate::event::{EventId, ResetCause};

/// Where a subscription that resumes from a client's cursor starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Read the history after this id (the cursor, or the start of the current epoch for `0-0`).
    From(EventId),
    /// The log cannot vouch for the cursor: send `ssepush.reset` first, then continue from
    /// `from`, which the client should adopt as its cursor.
    Reset { cause: ResetCause, from: EventId },
}

/// The resume rule, given a client's `cursor` and the log's `head` (its newest id, read after the
/// subscriber registered for live events):
///
/// * `0-0` without an epoch means "from the start": the history of the current epoch;
/// * a cursor of another epoch (or of none) points into a history that was lost: reset, then the
///   current epoch from its start;
/// * a cursor newer than the head of its own epoch names events the log no longer has: reset,
///   then from the head;
/// * anything else resumes exactly after the cursor (retention gaps are found by
///   [`EventLog::gap`](super::EventLog::gap)).
pub fn resume_point(cursor: EventId, head: EventId) -> Resume {
    let start = EventId::epoch_start(head.epoch);
    if cursor == EventId::ZERO {
        Resume::From(start)
    } else if cursor.epoch != head.epoch {
        Resume::Reset {
            cause: ResetCause::Epoch,
            from: start,
        }
    } else if cursor > head {
        Resume::Reset {
            cause: ResetCause::Ahead,
            from: head,
        }
    } else {
        Resume::From(cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resume_rule() {
        let head = EventId::new(50, 2).in_epoch(7);
        let start = EventId::epoch_start(7);
        assert_eq!(resume_point(EventId::ZERO, head), Resume::From(start));
        assert_eq!(resume_point(start, head), Resume::From(start));
        let c = EventId::new(40, 0).in_epoch(7);
        assert_eq!(resume_point(c, head), Resume::From(c));
        assert_eq!(resume_point(head, head), Resume::From(head));
        let epoch = Resume::Reset {
            cause: ResetCause::Epoch,
            from: start,
        };
        assert_eq!(resume_point(EventId::new(40, 0).in_epoch(8), head), epoch);
        // An id that names no epoch cannot be vouched for (unless it is `0-0`).
        assert_eq!(resume_point(EventId::new(40, 0), head), epoch);
        assert_eq!(resume_point(EventId::epoch_start(8), head), epoch);
        assert_eq!(
            resume_point(head.next(), head),
            Resume::Reset {
                cause: ResetCause::Ahead,
                from: head
            }
        );
        // A log that holds nothing yet: everything in its epoch is ahead of it but the start.
        let empty = EventId::epoch_start(9);
        assert_eq!(resume_point(empty, empty), Resume::From(empty));
        assert!(matches!(
            resume_point(EventId::new(1, 0).in_epoch(9), empty),
            Resume::Reset {
                cause: ResetCause::Ahead,
                ..
            }
        ));
    }
}
